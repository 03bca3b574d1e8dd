"""Checks, the registry and the exercise builder, in-process (no kernel): fast."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ktlab.cli import main as ktlab_main
from ktlab.grading import TASKS, check, run_check, task, tasks_for
from ktlab.grading import reference as ref
from ktlab.grading.exercises import (ExerciseError, build, make_exercise, release, stale,
                                     strip_regions)

REPO = Path(__file__).resolve().parent.parent


def _softmax_no_temperature(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    return torch.softmax(x, dim=-1)


def _softmax_unstable(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    e = torch.exp(x / t)
    return e / e.sum(-1, keepdim=True)


def _softmax_wrong_dim(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    return torch.softmax(x / t, dim=0)


def _softmax_accepts_zero(x, t=1.0):
    return torch.softmax(x / t if t else x, dim=-1)


_MEMO = ref.softmax_with_temperature(torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
                                     * 3.0, 1.0)


def _softmax_hard_coded(x, t=1.0):
    """Returns the answer to the first case only: the other shapes must catch it."""
    if t <= 0:
        raise ValueError("bad T")
    return _MEMO


def _pool_plain_mean(h, m):
    return h.mean(dim=1)


def _pool_no_clamp(h, m):
    m = m.float().unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)


def _pool_keepdim(h, m):
    return ref.masked_mean_pool(h, m).unsqueeze(1)


def _pool_no_return(h, m):
    ref.masked_mean_pool(h, m)


def _pool_int_only(h, m):
    return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)


def _pool_crashes(h, m):
    return h[m]  # boolean indexing with an int mask: IndexError


def _not_attempted(*args):
    raise NotImplementedError("00.softmax: replace this line with your code")


# (task, student, expected points, text that must appear in the failure reasons)
WRONG = [
    ("00.softmax", _softmax_no_temperature, 1.0, "wrong values: max abs error"),
    ("00.softmax", _softmax_unstable, 5 / 3, "NaN/inf"),
    ("00.softmax", _softmax_wrong_dim, 2 / 3, "wrong values"),
    ("00.softmax", _softmax_accepts_zero, 5 / 3, "expected ValueError, nothing was raised"),
    ("00.softmax", _softmax_hard_coded, 2 / 3, "wrong output shape: expected (3, 10), got (4, 5)"),
    ("00.softmax", torch.softmax, 0.0, "your code raised TypeError"),
    ("00.softmax", _not_attempted, 0.0, "not attempted yet"),
    ("00.softmax", 0.5, 0.0, "expected your softmax function, got a float"),
    ("00.mean_pool", _pool_plain_mean, 0.0, "wrong values"),
    ("00.mean_pool", _pool_no_clamp, 1.6, "Hint: clamp the token count"),
    ("00.mean_pool", _pool_keepdim, 0.0, "wrong output shape: expected (2, 4), got (2, 1, 4)"),
    ("00.mean_pool", _pool_no_return, 0.0, "returned None; did you forget `return`"),
    ("00.mean_pool", _pool_int_only, 2.0, ""),  # integer arithmetic still gives the right floats
    ("00.mean_pool", _pool_crashes, 0.0, "your code raised IndexError"),
    ("00.mean_pool", None, 0.0, "you passed None"),
]


@pytest.mark.parametrize("task_id,student,points,reason", WRONG,
                         ids=[f"{t}-{getattr(s, '__name__', repr(s))}" for t, s, _, _ in WRONG])
def test_wrong_implementations_lose_the_right_points(task_id, student, points, reason):
    r = run_check(task_id, student)
    assert r.points == pytest.approx(points, abs=0.01), r.report()
    assert r.max_points == TASKS[task_id].points
    if points < r.max_points:
        assert any(reason in why for why in r.reasons()), r.report()
        assert "Traceback" not in r.report()
    else:
        assert r.status == "passed"


def test_reference_passes_and_check_prints_one_line_per_case(capsys):
    r = check("00.softmax", ref.softmax_with_temperature)
    out = capsys.readouterr().out
    assert r.points == r.max_points == 2 and r.status == "passed"
    assert out.count("[PASS]") == len(r.lines) >= 5 and "[FAIL]" not in out
    assert repr(r) == "<TaskResult 00.softmax: 2/2 points>"
    assert check("00.mean_pool", ref.masked_mean_pool, quiet=True).passed


def test_check_records_results_for_the_grader(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv("KTLAB_GRADING_RESULTS", str(path))
    check("00.softmax", _softmax_no_temperature, quiet=True)
    check("00.mean_pool", ref.masked_mean_pool, quiet=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["task_id"], r["points"], r["status"]) for r in rows] == [
        ("00.softmax", 1.0, "failed"), ("00.mean_pool", 2.0, "passed")]


def test_checks_do_not_touch_the_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check("00.softmax", ref.softmax_with_temperature)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_task_and_bad_registrations_explain_themselves():
    r = run_check("00.nope", ref.softmax_with_temperature)
    assert r.status == "error" and "unknown task '00.nope'" in r.reasons()[0]
    with pytest.raises(ValueError, match="must look like 'NN.name'"):
        task("softmax")
    with pytest.raises(ValueError, match="registered twice"):
        task("00.softmax")(lambda fn, t: None)
    assert [t.task_id for t in tasks_for("00")] == ["00.softmax", "00.mean_pool"]


def test_a_bug_in_a_check_is_reported_not_raised():
    @task("99.buggy", points=1)
    def _buggy(fn, t):
        raise KeyError("oops")

    try:
        r = run_check("99.buggy", ref.softmax_with_temperature)
        assert r.status == "error" and r.points == 0 and "tell your instructor" in r.reasons()[0]
    finally:
        TASKS.pop("99.buggy")


# ----------------------------------------------------------------------------- exercises
SOLUTION_CELL = '''def f(x):
    """Doc stays."""
    ### BEGIN SOLUTION
    # HINT: square it.
    y = x * x
    return y
    ### END SOLUTION

check("00.softmax", f)'''


def test_strip_regions_keeps_indentation_and_uses_the_region_hint():
    out, n = strip_regions(SOLUTION_CELL)
    assert n == 1
    assert out == '''def f(x):
    """Doc stays."""
    # HINT: square it.
    raise NotImplementedError("00.softmax: replace this line with your code")

check("00.softmax", f)'''


def test_strip_regions_falls_back_to_the_registered_hint_and_rejects_bad_markers():
    out, _ = strip_regions(SOLUTION_CELL.replace("    # HINT: square it.\n", ""))
    assert f"# HINT: {TASKS['00.softmax'].hint}" in out
    with pytest.raises(ExerciseError, match="never closed"):
        strip_regions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ExerciseError, match="without a"):
        strip_regions("x = 1\n### END SOLUTION")
    with pytest.raises(ExerciseError, match="inside another region"):
        strip_regions("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION")


def _solution_nb() -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# T\n### BEGIN SOLUTION\nthe answer\n### END SOLUTION"),
             new_code_cell(SOLUTION_CELL, execution_count=3,
                           outputs=[nbformat.v4.new_output("stream", text="hi\n")],
                           metadata={"tags": ["keep"],
                                     "execution": {"shell.execute_reply": "2026-01-01T00:00:00Z"}})]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                              "display_name": "Python 3"}})


def test_make_exercise_clears_outputs_and_keeps_everything_else():
    sol = _solution_nb()
    ex = make_exercise(sol)
    assert ex.cells[0].source == "# T\n*Write your answer here.*"
    code = ex.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata == {"tags": ["keep"]} and code.id == sol.cells[1].id
    assert ex.metadata == sol.metadata
    assert sol.cells[1].outputs, "the solution notebook itself must not change"
    with pytest.raises(ExerciseError, match="no '### BEGIN SOLUTION'"):
        make_exercise(new_notebook(cells=[new_code_cell("x = 1")]), "00_x.ipynb")


def test_build_stale_and_release_round_trip(tmp_path, capsys):
    sol, ex, bundle = tmp_path / "solutions", tmp_path / "exercises", tmp_path / "bundle"
    sol.mkdir()
    nbformat.write(_solution_nb(), sol / "00_demo.ipynb")
    assert stale(sol, ex) == [f"{ex / '00_demo.ipynb'} is missing"]
    assert ktlab_main(["exercises", "check", "--solutions", str(sol)]) == 1
    assert ktlab_main(["exercises", "build", "--solutions", str(sol)]) == 0
    assert stale(sol, ex) == [] and build(sol, ex) == []  # second build writes nothing
    assert ktlab_main(["exercises", "check", "--solutions", str(sol)]) == 0
    # a solution edit makes exercises/ stale, and release refuses until it is rebuilt
    nb = nbformat.read(sol / "00_demo.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("Doc stays.", "Doc changed.")
    nbformat.write(nb, sol / "00_demo.ipynb")
    assert "differs from" in stale(sol, ex)[0]
    with pytest.raises(ExerciseError, match="out of date"):
        release(sol, ex, bundle)
    build(sol, ex)
    (ex / "01_orphan.ipynb").write_text("{}")
    assert "has no solution notebook" in stale(sol, ex)[0]
    build(sol, ex)
    assert not (ex / "01_orphan.ipynb").exists()
    assert ktlab_main(["exercises", "release", "--solutions", str(sol), "--to", str(bundle)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == ["00_demo.ipynb", "README.md"]
    text = (bundle / "00_demo.ipynb").read_text()
    assert "BEGIN SOLUTION" not in text and "y = x * x" not in text and "the answer" not in text
    assert ktlab_main(["exercises", "release", "--solutions", str(sol), "--to", str(bundle)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_committed_exercises_are_up_to_date_with_solutions():
    problems = stale(REPO / "solutions", REPO / "exercises")
    assert problems == [], "exercises/ is stale: run `ktlab exercises build` and commit\n" + \
        "\n".join(problems)


def test_grade_rejects_a_bad_report_name_and_an_empty_folder(tmp_path, capsys):
    assert ktlab_main(["grade", str(tmp_path / "x.ipynb"), "--out", str(tmp_path / "g.txt")]) == 2
    assert "--out must end in .csv or .json" in capsys.readouterr().err
    assert ktlab_main(["grade", str(tmp_path)]) == 2
    assert "no .ipynb files in" in capsys.readouterr().err


def test_missing_and_unreadable_submissions_get_reasons_in_csv(tmp_path, capsys):
    """No kernel is started for these, so this runs in a second."""
    (tmp_path / "00_broken.ipynb").write_text('{"cells": 3}')
    out = tmp_path / "grades.csv"
    assert ktlab_main(["grade", str(tmp_path), str(tmp_path / "00_gone.ipynb"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(Path(r["submission"]).name, r["task"], r["points"], r["status"]) for r in rows] == [
        ("00_broken.ipynb", "00.softmax", "0.0", "not run"),
        ("00_broken.ipynb", "00.mean_pool", "0.0", "not run"),
        ("00_broken.ipynb", "TOTAL", "0.0", "unreadable"),
        ("00_gone.ipynb", "00.softmax", "0.0", "not run"),
        ("00_gone.ipynb", "00.mean_pool", "0.0", "not run"),
        ("00_gone.ipynb", "TOTAL", "0.0", "missing")]
    assert all(r["reasons"] for r in rows)
    assert "submission not found" in rows[-1]["reasons"]


def test_network_guard_refuses_remote_connections_but_not_loopback():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
            "except OSError as e:\n    print('refused', e)\n"
            "try:\n    socket.getaddrinfo('example.com', 80)\n"
            "except OSError as e:\n    print('unresolved', e)\n"
            "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
            "socket.create_connection(srv.getsockname(), timeout=2).close(); print('loopback ok')\n")
    from ktlab.grading.grader import _grading_env

    out = subprocess.run([sys.executable, "-c", code], env=_grading_env(Path("/dev/null")),
                         capture_output=True, text=True, timeout=60).stdout
    assert "refused [Errno 101] network access is disabled" in out
    assert "unresolved" in out and "loopback ok" in out
