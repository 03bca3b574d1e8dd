"""The course's notebook conventions (COURSE_GUIDE section 3), checked on every committed notebook:
the setup cell, the closing sections, committed outputs, and no control characters in the
prose (a LaTeX ``\\theta`` written through a Python string becomes a TAB + ``heta``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COURSE = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
ALL = COURSE + sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "exercises").glob("*.ipynb"))
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_the_course_has_notebooks_00_to_06():
    assert [p.name[:2] for p in COURSE] == [f"{i:02d}" for i in range(7)]


@pytest.mark.parametrize("path", ALL, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_control_characters(path):
    for i, cell in enumerate(_cells(path)):
        src = "".join(cell["source"])
        bad = CONTROL.findall(src) + (re.findall("\t", src) if cell["cell_type"] == "markdown" else [])
        assert not bad, (f"cell {i} holds control character(s) {sorted(set(map(repr, bad)))}: a "
                         "backslash sequence (\\t, \\b, \\a, \\f, \\v) was written through a Python "
                         "string; use a raw string")


@pytest.mark.parametrize("path", COURSE, ids=lambda p: p.name)
def test_course_notebook_structure(path):
    cells = _cells(path)
    assert cells[0]["cell_type"] == "markdown" and "**What you will learn**" in "".join(cells[0]["source"])
    setup = "".join(cells[1]["source"])
    assert "import ktlab" in setup and "ktlab.config.load(" in setup
    headings = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    assert any(h.startswith("## What we measured") for h in headings)
    assert any(h.startswith("## Try this") for h in headings)
    code = [c for c in cells if c["cell_type"] == "code"]
    assert any(c.get("outputs") for c in code), "commit notebooks with their quick-profile outputs"
