"""The batch grader end to end: solutions get full marks, exercises zero, hostile notebooks a reason.

Kernel starts cost several seconds each, so every group of submissions is graded in one
``ktlab grade`` call (two at a time) and the tests assert on the one report.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ktlab.cli import main as ktlab_main
from ktlab.grading import tasks_for

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = sorted((REPO / "solutions").glob("[0-9][0-9]_*.ipynb"))
EXERCISES = sorted((REPO / "exercises").glob("[0-9][0-9]_*.ipynb"))

GOOD_SOFTMAX = '''def softmax_with_temperature(logits, temperature=1.0):
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    z = logits / temperature
    e = torch.exp(z - z.max(dim=-1, keepdim=True).values)
    return e / e.sum(dim=-1, keepdim=True)
check("00.softmax", softmax_with_temperature)'''
GOOD_POOL = '''def masked_mean_pool(hidden, mask):
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
check("00.mean_pool", masked_mean_pool)'''
SETUP = "import torch\nfrom ktlab.grading import check"


def _nb(*sources: str) -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# a submission")] + [new_code_cell(s) for s in sources]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                              "display_name": "Python 3"}})


def _grade(paths, tmp_path: Path, *extra: str, jobs: int = 2) -> dict:
    """Run ``ktlab grade`` over ``paths`` (``jobs`` at a time); the JSON report by file name."""
    out = tmp_path / "grades.json"
    rc = ktlab_main(["grade", *map(str, paths), "--out", str(out), "--jobs", str(jobs), *extra])
    assert rc == 0
    reports = json.loads(out.read_text())
    assert [r["submission"] for r in reports] == [str(p) for p in paths]
    return {Path(r["submission"]).name: r for r in reports}


def _task(report: dict, task_id: str) -> dict:
    return next(t for t in report["tasks"] if t["task"] == task_id)


@pytest.mark.slow
def test_solutions_full_marks_and_exercises_zero_with_reasons(tmp_path):
    assert SOLUTIONS, "no solution notebooks found"
    # (that exercises/ matches solutions/ is test_grading.py's stale test)
    start = time.perf_counter()
    # the same cell timeout as nbval in `make test`; names repeat, so split the report in two
    both = _grade(SOLUTIONS + EXERCISES, tmp_path, "--timeout", "600", "--cell-timeout", "300")
    reports = json.loads((tmp_path / "grades.json").read_text())
    sol = {Path(r["submission"]).name: r for r in reports[:len(SOLUTIONS)]}
    ex = {Path(r["submission"]).name: r for r in reports[len(SOLUTIONS):]}
    assert both
    print(f"graded {len(SOLUTIONS)} solutions + {len(EXERCISES)} exercises in "
          f"{time.perf_counter() - start:.1f} s:",
          {name: r["seconds"] for name, r in {**sol, **ex}.items()})
    for path in SOLUTIONS:
        r = sol[path.name]
        assert r["tasks"], f"{path.name}: no registered tasks"
        assert {t["task"] for t in r["tasks"]} == {t.task_id for t in tasks_for(path.name[:2])}
        assert r["points"] == r["max_points"] > 0, (path.name, r)
        assert r["status"] == "completed", (path.name, r["notes"])
    for path in EXERCISES:
        r = ex[path.name]
        assert r["points"] == 0 and r["max_points"] > 0, (path.name, r)
        for t in r["tasks"]:
            assert t["status"] == "not attempted", (path.name, t)
            assert any("not attempted yet" in why for why in t["reasons"]), (path.name, t)


def _hostile(tmp: Path) -> dict[str, Path]:
    """One notebook per way a submission can go wrong; each is written under ``tmp``."""
    kinds = {  # the slow ones first, so that two at a time finish sooner
        "00_ignores_interrupt": _nb(SETUP, GOOD_SOFTMAX, "import signal, time\nsignal.signal("
                                    "signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)",
                                    *["pass"] * 8, GOOD_POOL),  # each waits a cell timeout
        "00_infinite_loop": _nb(SETUP, GOOD_SOFTMAX, "while True:\n    pass", GOOD_POOL),
        "00_syntax_error": _nb(SETUP, GOOD_SOFTMAX, "def masked_mean_pool(hidden, mask)\n    return hidden"
                               "\ncheck('00.mean_pool', masked_mean_pool)"),
        "00_early_exceptions": _nb(SETUP, "1 / 0", "import socket\n"
                                   "socket.create_connection(('1.1.1.1', 80), timeout=5)",
                                   "import urllib.request\nurllib.request.urlopen("
                                   "'https://huggingface.co', timeout=5)", GOOD_SOFTMAX, GOOD_POOL),
        "00_kernel_dies": _nb(SETUP, GOOD_SOFTMAX, "import os\nos._exit(1)", GOOD_POOL),
        "00_prints_10mb": _nb(SETUP, "print('x' * 10_000_000)\nfor i in range(20000):\n"
                              "    print(i, 'y' * 100)", GOOD_SOFTMAX, GOOD_POOL),
        "00_deletes_files": _nb(SETUP, GOOD_SOFTMAX, "import os, shutil, pathlib\n"
                                "for p in pathlib.Path('.').iterdir():\n"
                                "    shutil.rmtree(p) if p.is_dir() else p.unlink()\n"
                                "pathlib.Path('data.txt').write_text('overwritten')\n"
                                "open(os.environ['KTLAB_GRADING_RESULTS'], 'w').close()", GOOD_POOL),
        "00_wrong": _nb(SETUP, GOOD_SOFTMAX.replace("z = logits / temperature", "z = logits"),
                        GOOD_POOL.replace(".clamp(min=1.0)", "")),
    }
    paths = {}
    for name, nb in kinds.items():
        paths[name] = tmp / "sub" / f"{name}.ipynb"
        paths[name].parent.mkdir(exist_ok=True)
        nbformat.write(nb, paths[name])
    (tmp / "sub" / "data.txt").write_text("original")
    paths["00_missing"] = tmp / "sub" / "00_missing.ipynb"
    paths["00_not_json"] = tmp / "sub" / "00_not_json.ipynb"
    paths["00_not_json"].write_text("{this is not a notebook")
    return paths


@pytest.mark.slow
def test_hostile_submissions_are_graded_within_their_timeouts(tmp_path):
    paths = _hostile(tmp_path)
    before = {p.name: p.read_bytes() for p in (tmp_path / "sub").iterdir()}
    start = time.perf_counter()
    timeout = 45  # a cell timeout that tolerates `import torch` on a busy 2-core machine
    r = _grade(list(paths.values()), tmp_path, "--timeout", str(timeout), "--cell-timeout", "15",
               "--executed", str(tmp_path / "executed"), jobs=3)  # mostly waiting on timeouts
    wall = time.perf_counter() - start
    print(f"graded {len(paths)} hostile submissions in {wall:.1f} s:",
          {k: v["seconds"] for k, v in r.items()})
    # the originals are untouched whatever the notebooks did to their working copy
    assert {p.name: p.read_bytes() for p in (tmp_path / "sub").iterdir()} == before
    # captured output is capped: the executed copy of the 10 MB printer stays small
    (printed,) = (tmp_path / "executed").glob("*_00_prints_10mb.ipynb")
    assert printed.stat().st_size < 1_000_000 and "truncated by ktlab grade" in printed.read_text()
    for name, rep in r.items():
        assert rep["seconds"] <= timeout + 15, (name, rep["seconds"])
        assert rep["max_points"] == 4, (name, rep)

    def pts(name):
        rep = r[f"{name}.ipynb"]
        return _task(rep, "00.softmax")["points"], _task(rep, "00.mean_pool")["points"], rep

    s, m, rep = pts("00_syntax_error")
    assert (s, m) == (2, 0) and "SyntaxError" in _task(rep, "00.mean_pool")["reasons"][0]
    s, m, rep = pts("00_early_exceptions")
    assert (s, m) == (2, 2) and any("ZeroDivisionError" in n for n in rep["notes"])
    assert sum("network access is disabled" in n for n in rep["notes"]) == 2, rep["notes"]
    s, m, rep = pts("00_infinite_loop")
    assert (s, m) == (2, 2) and any("CellTimeout" in n for n in rep["notes"])
    s, m, rep = pts("00_ignores_interrupt")
    assert (s, m) == (2, 0) and rep["status"] == "timeout"
    assert "not reached" in _task(rep, "00.mean_pool")["reasons"][0]
    s, m, rep = pts("00_kernel_dies")
    assert (s, m) == (2, 0) and rep["status"] == "kernel died"
    assert "kernel died" in _task(rep, "00.mean_pool")["reasons"][0]
    s, m, rep = pts("00_prints_10mb")
    assert (s, m) == (2, 2) and rep["status"] == "completed"
    s, m, rep = pts("00_deletes_files")
    assert (s, m) == (2, 2)  # the results of earlier checks survive a truncated results file
    s, m, rep = pts("00_wrong")
    assert (s, m) == (0.66, pytest.approx(1.6))  # T ignored: core case fails, capped at 1/3
    assert any("wrong values" in why for why in _task(rep, "00.softmax")["reasons"])
    assert any("NaN" in why for why in _task(rep, "00.mean_pool")["reasons"])
    for name in ("00_missing", "00_not_json"):
        rep = r[f"{name}.ipynb"]
        assert rep["points"] == 0 and rep["status"] in ("missing", "unreadable")
        assert all(t["reasons"] for t in rep["tasks"])
