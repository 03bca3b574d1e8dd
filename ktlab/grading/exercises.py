"""Generate ``exercises/`` from ``solutions/``, check that it is up to date, release a student bundle.

One source of truth: ``solutions/NN_topic.ipynb`` holds the full code. In an exercise every
region between a ``### BEGIN SOLUTION`` and a ``### END SOLUTION`` line becomes a hint and
``raise NotImplementedError(...)`` (same indentation, so a function body stays a function
body); outputs, execution counts and execution timings are cleared; everything else (cell ids,
markdown, metadata, the ``check(...)`` lines) stays identical. The hint is the region's
``# HINT: ...`` line if it has one, else the registered hint of the task the cell checks.
In a markdown cell the region becomes "*Write your answer here.*".
"""
from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import nbformat

BEGIN, END, HINT = "### BEGIN SOLUTION", "### END SOLUTION", "# HINT:"
MARKDOWN_PLACEHOLDER = "*Write your answer here.*"
_CHECK = re.compile(r"check\(\s*[\"'](\d\d\.[\w.\-]+)[\"']")


class ExerciseError(ValueError):
    """A solution notebook whose regions cannot be turned into an exercise."""


def repo_root() -> Path:
    """The folder holding ``solutions/``: the current directory if it has one, else the checkout."""
    cwd = Path.cwd()
    if (cwd / "solutions").is_dir():
        return cwd
    return Path(__file__).resolve().parents[2]


def _task_hint(source: str) -> Tuple[Optional[str], str]:
    m = _CHECK.search(source)
    if not m:
        return None, ""
    from ktlab.grading.registry import TASKS
    from ktlab.grading.checks import load_all

    load_all()
    spec = TASKS.get(m.group(1))
    return m.group(1), spec.hint if spec else ""


def strip_regions(source: str, *, markdown: bool = False, where: str = "") -> Tuple[str, int]:
    """``source`` with every solution region replaced; returns (new source, number of regions)."""
    task_id, task_hint = (None, "") if markdown else _task_hint(source)
    out: List[str] = []
    region: Optional[Dict[str, Any]] = None
    count = 0
    for lineno, line in enumerate(source.split("\n"), 1):
        s = line.strip()
        if s == BEGIN:
            if region is not None:
                raise ExerciseError(f"{where} line {lineno}: '{BEGIN}' inside another region; "
                                    f"close the first one with '{END}'")
            region = {"indent": line[: len(line) - len(line.lstrip())], "hint": None}
        elif s == END:
            if region is None:
                raise ExerciseError(f"{where} line {lineno}: '{END}' without a '{BEGIN}' above it")
            count += 1
            ind = region["indent"]
            if markdown:
                out.append(ind + MARKDOWN_PLACEHOLDER)
            else:
                hint = region["hint"] or task_hint
                if hint:
                    out.append(f"{ind}{HINT} {hint}")
                label = f"{task_id}: " if task_id else ""
                out.append(f'{ind}raise NotImplementedError("{label}replace this line with your code")')
            region = None
        elif region is not None:
            if s.startswith(HINT) and region["hint"] is None:
                region["hint"] = s[len(HINT):].strip()
        else:
            out.append(line)
    if region is not None:
        raise ExerciseError(f"{where}: '{BEGIN}' is never closed; add a '{END}' line")
    return "\n".join(out), count


def make_exercise(nb: Any, name: str = "notebook") -> Any:
    """The exercise version of solution notebook ``nb`` (a new object)."""
    ex = copy.deepcopy(nb)
    ex.metadata.pop("widgets", None)
    total = 0
    for i, cell in enumerate(ex.cells):
        where = f"{name} cell {i + 1}"
        if cell.cell_type == "code":
            cell.source, n = strip_regions(cell.source, where=where)
            cell.outputs = []
            cell.execution_count = None
        elif cell.cell_type == "markdown":
            cell.source, n = strip_regions(cell.source, markdown=True, where=where)
        else:
            n = 0
        cell.metadata.pop("execution", None)
        total += n
    if total == 0:
        raise ExerciseError(f"{name} has no '{BEGIN}' ... '{END}' region; a solution notebook "
                            "needs at least one")
    return ex


def render(nb: Any) -> str:
    text = nbformat.writes(nb)
    return text if text.endswith("\n") else text + "\n"


def expected_exercises(solutions: Path) -> Dict[str, str]:
    """File name -> the exercise notebook text that ``solutions`` should generate."""
    out = {}
    for path in sorted(solutions.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        out[path.name] = render(make_exercise(nb, path.name))
    return out


def build(solutions: Path, exercises: Path) -> List[Path]:
    """Write ``exercises/NN_topic.ipynb`` for every solution notebook; return the written paths.

    Exercise notebooks without a solution any more are removed (they are generated files)."""
    if not solutions.is_dir():
        raise FileNotFoundError(f"no solutions folder at {solutions}; run from the repository root "
                                "or pass --solutions")
    wanted = expected_exercises(solutions)
    exercises.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in wanted.items():
        target = exercises / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            written.append(target)
    for old in exercises.glob("[0-9][0-9]_*.ipynb"):
        if old.name not in wanted:
            old.unlink()
            written.append(old)
    return written


def stale(solutions: Path, exercises: Path) -> List[str]:
    """What is out of date in ``exercises`` (empty when it matches ``solutions``)."""
    wanted = expected_exercises(solutions)
    problems = []
    for name, text in wanted.items():
        target = exercises / name
        if not target.exists():
            problems.append(f"{target} is missing")
        elif target.read_text(encoding="utf-8") != text:
            problems.append(f"{target} differs from what {solutions / name} generates")
    for old in sorted(exercises.glob("[0-9][0-9]_*.ipynb")):
        if old.name not in wanted:
            problems.append(f"{old} has no solution notebook")
    return problems


STUDENT_README = """# ktlab exercises

Open each notebook in Jupyter, fill in every place that says `raise NotImplementedError`, and run
the cell. Its last line, `check("NN.task", your_function)`, tests your code against ktlab's
reference on several random inputs and prints one line per check, e.g.

    00.softmax: 2/2 points (all checks passed)
      [PASS] shape (4, 5), temperature 1.0

A failed check says what went wrong (wrong shape, the largest error and where, an exception
from your code). "not attempted yet" means the `raise NotImplementedError` line is still there.
Your instructor grades the notebook you hand in by running it from top to bottom in a fresh
kernel, so make sure Kernel -> Restart & Run All works. The course needs the `ktlab` package
installed (`pip install -e .` in the course repository) and the offline data mirror
(`KTLAB_DATA_DIR`).
"""


def release(solutions: Path, exercises: Path, to: Path, *, force: bool = False) -> List[Path]:
    """Copy the (up-to-date) exercise notebooks and a README into ``to``; never any solution."""
    problems = stale(solutions, exercises)
    if problems:
        raise ExerciseError("exercises/ is out of date (" + "; ".join(problems[:3]) +
                            "); run `ktlab exercises build` first")
    to = Path(to)
    if to.resolve() in (solutions.resolve(), exercises.resolve()):
        raise ExerciseError(f"--to {to} is the solutions or exercises folder; pick a new folder")
    if to.exists() and any(to.iterdir()) and not force:
        raise ExerciseError(f"{to} exists and is not empty; pick a new folder or pass --force")
    to.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(exercises.glob("[0-9][0-9]_*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        if any(ln.strip() in (BEGIN, END) for c in nb.cells for ln in c.source.split("\n")):
            raise ExerciseError(f"{path} still contains a solution marker; refusing to release")
        shutil.copyfile(path, to / path.name)
        written.append(to / path.name)
    (to / "README.md").write_text(STUDENT_README, encoding="utf-8")
    written.append(to / "README.md")
    return written
