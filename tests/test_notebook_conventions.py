"""The course's notebook conventions (COURSE_GUIDE section 3), checked on every committed notebook:
the setup cell, the closing sections, committed outputs, and no control characters in the
prose (a LaTeX ``\\theta`` written through a Python string becomes a TAB + ``heta``)."""
from __future__ import annotations

import ast
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


def test_the_course_has_notebooks_00_to_09():
    assert [p.name[:2] for p in COURSE] == [f"{i:02d}" for i in range(10)]


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


# --- "What we measured" prints what was measured, not what someone typed in -------------------

MEASURED_SOURCES = COURSE + sorted((ROOT / "solutions").glob("*.ipynb"))
SHOW_CALLS = {"print", "display", "Markdown"}
#: a number as a measurement reads: with a unit (%, s, ms, points, x), a decimal, or 1e-5 notation.
#: "95% CI" names an interval, not a result, and {...} format fields are not text.
TYPED_NUMBER = re.compile(
    r"\d+(?:\.\d+)?\s?(?:%(?!\s?CI\b)|ms\b|s\b|sec\b|seconds?\b|min\b|points?\b|pp\b|[x×](?!\w))"
    r"|\d*\.\d+|\d(?:\.\d+)?e[-+]?\d+", re.IGNORECASE)
#: a bare verdict typed into the table instead of computed ("yes", "passed", ...)
TYPED_VERDICT = re.compile(r"^\s*(?:yes|no|ok|true|false|pass(?:ed)?|fail(?:ed)?)\b", re.IGNORECASE)
FORMAT_FIELD = re.compile(r"\{[^{}]*\}")


def _measured_cells(path: Path) -> list[tuple[int, str]]:
    """The code cells between the "## What we measured" heading and the next markdown cell."""
    cells, out, inside = _cells(path), [], False
    for i, cell in enumerate(cells):
        src = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            inside = src.lstrip().startswith("## What we measured")
        elif inside:
            out.append((i, src))
    return out


def _source_code(src: str) -> str:
    # IPython magics and shell escapes are not Python; blank them so ast can parse the rest
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in src.splitlines())


def _computed(node: ast.AST) -> bool:
    """True if ``node`` holds a value computed at run time (a name, attribute, subscript, call,
    or an f-string field whose expression is one of those)."""
    return any(isinstance(n, (ast.Name, ast.Attribute, ast.Subscript, ast.Call)) for n in ast.walk(node))


def _string_constants(node: ast.AST):
    """Every string constant in ``node``, skipping f-string format specs (``:.3f`` is no number)."""
    if isinstance(node, ast.FormattedValue):
        yield from _string_constants(node.value)
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
        return
    for child in ast.iter_child_nodes(node):
        yield from _string_constants(child)


def _call_name(call: ast.Call) -> str:
    f = call.func
    return f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else ""


def _typed_in(src: str) -> list[str]:
    """What a "What we measured" cell shows without computing it: show-calls whose arguments are
    all literals, and string constants holding a typed-in number or verdict."""
    tree = ast.parse(_source_code(src))
    found = [f"{_call_name(node)}({ast.unparse(arg)[:80]}) shows only literals"
             for node in ast.walk(tree) if isinstance(node, ast.Call) and _call_name(node) in SHOW_CALLS
             for arg in node.args if not _computed(arg)]
    for text in _string_constants(tree):
        plain = FORMAT_FIELD.sub("", text)
        typed = TYPED_NUMBER.search(plain) or TYPED_VERDICT.match(plain)
        if typed:
            found.append(f"the string {text!r} types in a measured value ({typed.group(0)!r})")
    return found


def test_measured_finder_catches_typed_in_results():
    """The checker itself: typed-in values fail, computed ones pass."""
    assert _typed_in('print("accuracy 81.8%")') and _typed_in('print(f"{\'quantity\':<40} value")')
    assert _typed_in('rows = [("match", "yes (1e-5)")]\nfor k, v in rows: print(f"{k} {v}")')
    assert _typed_in('print(f"speed {x:.1f}x, was 8.3x")') and _typed_in('print("took 12 s")')
    assert not _typed_in('print(f"accuracy {acc:.1%} (95% CI {lo:.1%}-{hi:.1%}), {n} of {m} in {t:.0f} s")')
    assert not _typed_in('print(table.to_string())\ndisplay(Markdown("\\n".join(rows)))')
    assert not _typed_in('print("{:.3f}".format(x), f"{steps} steps x {batch}")')


@pytest.mark.parametrize("path", MEASURED_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_what_we_measured_prints_variables_not_literals(path):
    """COURSE_GUIDE section 3: "What we measured" is a table produced by code. Every value it
    shows must come from a variable computed in the notebook; a number or verdict typed into a
    string goes stale the first time the notebook is re-run."""
    cells = _measured_cells(path)
    if not cells:
        pytest.skip("no 'What we measured' section")
    problems = [f"cell {i}: {problem}" for i, src in cells for problem in _typed_in(src)]
    assert not problems, ("; ".join(problems) + ": compute the value in the notebook and format "
                          "the variable instead")


# --- printed compute times agree with results/notebook_times.json ------------------------------

COMPUTE_TIME = re.compile(r"notebook compute time:\s*([0-9]+(?:\.[0-9]+)?)\s*s\b")
TIMES_FILE = ROOT / "results" / "notebook_times.json"


def _printed_compute_times(path: Path) -> list[float]:
    found = []
    for cell in _cells(path):
        for out in cell.get("outputs", []):
            texts = [out.get("text", "")] + [out.get("data", {}).get(k, "") for k in ("text/plain", "text/markdown")]
            for text in texts:
                found += [float(m) for m in COMPUTE_TIME.findall("".join(text))]
    return found


@pytest.mark.parametrize("path", MEASURED_SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_printed_compute_time_matches_notebook_times(path):
    """A notebook that prints its own compute time must agree, within a factor of 2, with the
    time `benchmarks/notebook_times.py` recorded for it: otherwise its outputs come from another
    run (or another machine load) than the README's course map quotes."""
    printed = _printed_compute_times(path)
    if not printed:
        pytest.skip("prints no notebook compute time")
    key = f"{path.parent.name}/{path.name}"
    recorded = json.loads(TIMES_FILE.read_text())["seconds_in_cells"].get(key)
    assert recorded, (f"{key} prints its compute time but {TIMES_FILE.name} has no entry: run "
                      "`make test`, then `python benchmarks/notebook_times.py runs/pytest-report.xml "
                      "--json results/notebook_times.json`")
    for seconds in printed:
        assert recorded / 2 <= seconds <= 2 * recorded, (
            f"{key} prints 'notebook compute time: {seconds:.0f} s' but {TIMES_FILE.name} records "
            f"{recorded:.1f} s: re-execute the notebook on an idle machine (or regenerate the times "
            "from the same run)")
