"""The batch grader behind ``ktlab grade``: run each submission in a fresh kernel, collect points.

For each submission it

1. reads the notebook (a missing or unreadable file scores 0 with that reason);
2. copies the submission's folder into a temporary directory, so whatever the notebook deletes or
   overwrites, the originals stay as they were;
3. starts :mod:`ktlab.grading.runner` in its own session: a fresh kernel (nbclient) with a
   per-cell timeout, capped output, the Hugging Face offline switches, and network access
   refused (``ktlab/grading/sandbox/sitecustomize.py``);
4. kills everything when the per-notebook timeout expires;
5. reads the results every ``check()`` call appended to ``$KTLAB_GRADING_RESULTS`` and the
   runner's event log, and gives every registered task of the notebook its points or a reason:
   not attempted, which check failed, "cell 7 raised NameError ...", "not reached: the kernel
   died in cell 4", "not reached: time limit".

It never raises for a broken submission; each report says what happened. The checks run in the
student's process, so this is a grader for an honest classroom, not a sandbox against cheating.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from ktlab.grading.registry import RESULTS_ENV, tasks_for

SANDBOX = Path(__file__).resolve().parent / "sandbox"
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: Folders never copied with a submission; above ``COPY_CAP_BYTES`` only the notebook is copied.
COPY_IGNORE = (".git", ".venv", "venv", "__pycache__", ".ipynb_checkpoints", "node_modules")
COPY_CAP_BYTES = 200 * 1024 * 1024


@dataclasses.dataclass
class TaskGrade:
    task: str
    points: float
    max_points: float
    status: str  # passed | failed | not attempted | error | not run
    reasons: List[str]


@dataclasses.dataclass
class SubmissionReport:
    submission: str
    notebook: Optional[str]
    status: str  # completed | errors in cells | timeout | kernel died | missing | unreadable | failed
    tasks: List[TaskGrade]
    notes: List[str]
    seconds: float

    @property
    def points(self) -> float:
        return round(sum(t.points for t in self.tasks), 2)

    @property
    def max_points(self) -> float:
        return round(sum(t.max_points for t in self.tasks), 2)

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(points=self.points, max_points=self.max_points)
        return d


# ----------------------------------------------------------------------------- helpers
def notebook_id(path: Path, nb: Any = None) -> Optional[str]:
    """``"00"`` for ``00_warmup.ipynb``; else from metadata or the first ``check("NN.`` call."""
    m = re.match(r"(\d\d)(?:[_\-. ]|$)", path.name)
    if m:
        return m.group(1)
    if nb is not None:
        meta = nb.get("metadata", {}).get("ktlab", {})
        if isinstance(meta, dict) and re.fullmatch(r"\d\d", str(meta.get("notebook", ""))):
            return str(meta["notebook"])
        for cell in nb.get("cells", []):
            m = re.search(r"check\(\s*[\"'](\d\d)\.", cell.get("source", ""))
            if m:
                return m.group(1)
    return None


def _cell_of(nb: Any, task_id: str) -> Optional[int]:
    pat = re.compile(r"check\(\s*[\"']" + re.escape(task_id) + r"[\"']")
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") == "code" and pat.search(cell.get("source", "")):
            return i
    return None


def _describe_cell(nb: Any, index: int) -> str:
    try:
        first = next((ln.strip() for ln in nb["cells"][index]["source"].splitlines()
                      if ln.strip()), "")
    except (IndexError, KeyError):
        first = ""
    if len(first) > 40:
        first = first[:37] + "..."
    return f"cell {index + 1}" + (f" ({first!r})" if first else "")


def _copy_folder(src: Path, dst: Path, notebook: Path) -> Optional[str]:
    total = 0
    for root, dirs, files in os.walk(src):
        dirs[:] = [d for d in dirs if d not in COPY_IGNORE]
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
        if total > COPY_CAP_BYTES:
            break
    if total > COPY_CAP_BYTES:
        dst.mkdir(parents=True)
        shutil.copy2(notebook, dst / notebook.name)
        return (f"the folder {src} is over {COPY_CAP_BYTES >> 20} MB; only the notebook was "
                "copied for grading")
    shutil.copytree(src, dst, symlinks=True, ignore=shutil.ignore_patterns(*COPY_IGNORE))
    return None


def _kill_group(pid: Optional[int]) -> None:
    if not pid:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass


def _read_jsonl(path: Path) -> List[Dict[str, Any]]:
    out = []
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict):
                    out.append(item)
    except OSError:
        pass
    return out


def _grading_env(results: Path) -> Dict[str, str]:
    env = dict(os.environ)
    env.pop("JPY_PARENT_PID", None)
    env.update({
        RESULTS_ENV: str(results),
        "KTLAB_GRADING_NO_NETWORK": "1",
        "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "TRANSFORMERS_VERBOSITY": "error", "TOKENIZERS_PARALLELISM": "false",
        "MPLBACKEND": "Agg", "PYDEVD_DISABLE_FILE_VALIDATION": "1", "JUPYTER_PLATFORM_DIRS": "1",
        # kernels graded side by side must not busy-wait for each other's cores (OpenMP spin)
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": os.pathsep.join([str(SANDBOX), str(PACKAGE_ROOT)]
                                      + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])),
    })
    return env


# ----------------------------------------------------------------------------- one submission
def grade_notebook(path: str | Path, *, timeout: float = 600, cell_timeout: Optional[float] = None,
                   executed: Optional[Path] = None) -> SubmissionReport:
    """Grade one submission; never raises for anything the submission does."""
    start = time.perf_counter()
    path = Path(path)
    label = str(path)
    cell_timeout = int(max(1, min(cell_timeout or 120, timeout)))

    def finish(status, nb_id, tasks, notes):
        return SubmissionReport(label, nb_id, status, tasks, notes,
                                round(time.perf_counter() - start, 2))

    if not path.is_file():
        nb_id = notebook_id(path)
        why = f"submission not found: {path}"
        return finish("missing", nb_id, [TaskGrade(t.task_id, 0.0, t.points, "not run", [why])
                                          for t in (tasks_for(nb_id) if nb_id else [])], [why])
    try:
        import nbformat

        raw = path.read_bytes()
        nb = nbformat.reads(raw.decode("utf-8"), as_version=4)
        if not isinstance(nb.get("cells"), list):
            raise ValueError("no cells")
    except Exception as err:
        nb_id = notebook_id(path)
        why = f"not a readable notebook ({type(err).__name__}: {str(err)[:120]})"
        return finish("unreadable", nb_id, [TaskGrade(t.task_id, 0.0, t.points, "not run", [why])
                                             for t in (tasks_for(nb_id) if nb_id else [])], [why])
    nb_id = notebook_id(path, nb)
    tasks = tasks_for(nb_id) if nb_id else []
    notes: List[str] = []
    if not tasks:
        notes.append(f"no graded tasks registered for notebook {nb_id!r}" if nb_id else
                     "cannot tell which notebook this is: name it NN_topic.ipynb")

    with tempfile.TemporaryDirectory(prefix="ktlab-grade-") as tmp:
        tmp_path = Path(tmp)
        work, results, status = tmp_path / "work", tmp_path / "results.jsonl", tmp_path / "status.jsonl"
        note = _copy_folder(path.resolve().parent, work, path.resolve())
        if note:
            notes.append(note)
        (work / path.name).write_bytes(raw)  # the bytes we read, even if the file changed since
        results.touch()
        cmd = [sys.executable, "-m", "ktlab.grading.runner", str(work / path.name), str(status),
               "--cell-timeout", str(cell_timeout),
               "--startup-timeout", str(int(max(10, min(60, timeout))))]
        if executed is not None:
            cmd += ["--executed", str(executed)]
        timed_out = False
        with open(tmp_path / "runner.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=work, env=_grading_env(results), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
            events = _read_jsonl(status)
            kernel_pids = [e.get("pid") for e in events if e.get("event") == "kernel"]
            for pid in kernel_pids:  # the kernel runs in its own session; take its children too
                _kill_group(pid if isinstance(pid, int) else None)
            _kill_group(proc.pid)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        events = _read_jsonl(status)
        found: Dict[Any, Dict[str, Any]] = {}  # task -> its latest result, from either channel
        sent = [e["result"] for e in events if e.get("event") == "result"
                and isinstance(e.get("result"), dict)]
        for r in _read_jsonl(results) + sent:
            old = found.get(r.get("task_id"))
            if old is None or _time(r) >= _time(old):
                found[r.get("task_id")] = r
        runner_tail = ""
        if not events:
            try:
                runner_tail = (tmp_path / "runner.log").read_text(errors="replace")[-300:]
            except OSError:
                pass

    end = next((e for e in reversed(events) if e.get("event") in ("done", "dead", "fail")), None)
    started = [e["index"] for e in events if e.get("event") == "cell" and isinstance(e.get("index"), int)]
    last = started[-1] if started else None
    errors = {e["index"]: e for e in events if e.get("event") == "error"}
    if timed_out:
        run_status = "timeout"
        where = f" while running {_describe_cell(nb, last)}" if last is not None else ""
        stop = f"the notebook hit its {timeout:g} s time limit{where}"
    elif end is None or end.get("event") == "fail":
        run_status = "failed"
        msg = (end or {}).get("message") or runner_tail.strip().splitlines()[-1:] or ["no log"]
        stop = f"the notebook could not be run ({msg if isinstance(msg, str) else msg[0]})"
    elif end.get("event") == "dead":
        run_status = "kernel died"
        where = f" while running {_describe_cell(nb, last)}" if last is not None else ""
        stop = f"the kernel died{where} (os._exit, a crash, or out of memory?)"
    else:
        run_status = "errors in cells" if errors else "completed"
        stop = ""
    if stop:
        notes.append(stop)
    for index, err in sorted(errors.items()):
        notes.append(f"{_describe_cell(nb, index)} raised {err.get('ename')}: "
                     f"{str(err.get('evalue', ''))[:150]}")

    grades = []
    for spec in tasks:
        r = found.get(spec.task_id)
        if r is not None:
            grades.append(_grade_from_result(spec, r))
            continue
        cell = _cell_of(nb, spec.task_id)
        if cell is None:
            why = (f"no check(\"{spec.task_id}\", ...) call in the notebook; keep the last line of "
                   "the task cell")
        elif cell in errors and errors[cell].get("ename") == "NotImplementedError":
            grades.append(TaskGrade(spec.task_id, 0.0, spec.points, "not attempted", [
                f"not attempted yet: {_describe_cell(nb, cell)} still raises NotImplementedError"]))
            continue
        elif cell in errors:
            err = errors[cell]
            why = (f"{_describe_cell(nb, cell)} raised {err.get('ename')}: "
                   f"{str(err.get('evalue', ''))[:150]} before check() ran")
        elif stop and (last is None or cell >= last):
            why = f"not reached: {stop}"
        else:
            why = f"check(\"{spec.task_id}\", ...) recorded no result ({_describe_cell(nb, cell)} ran)"
        grades.append(TaskGrade(spec.task_id, 0.0, spec.points, "not run", [why]))
    return finish(run_status, nb_id, grades, notes)


def _time(r: Dict[str, Any]) -> float:
    try:
        return float(r.get("time", 0.0))
    except (TypeError, ValueError):
        return 0.0


def _grade_from_result(spec: Any, r: Dict[str, Any]) -> TaskGrade:
    try:
        points = min(max(float(r.get("points", 0.0)), 0.0), spec.points)
    except (TypeError, ValueError):
        points = 0.0
    status = str(r.get("status", "error"))
    lines = r.get("lines") if isinstance(r.get("lines"), list) else []
    reasons = []
    for line in lines:
        if isinstance(line, dict) and not line.get("passed"):
            name, msg = str(line.get("name", "")), str(line.get("message", ""))
            reasons.append(msg if status in ("not attempted", "error") or not name
                           else f"{name}: {msg}")
    if points < spec.points and not reasons:
        reasons = [status]
    return TaskGrade(spec.task_id, round(points, 2), spec.points, status, reasons)


# ----------------------------------------------------------------------------- many submissions
def grade(paths: Sequence[str | Path], *, timeout: float = 600, cell_timeout: Optional[float] = None,
          jobs: int = 1, executed_dir: Optional[Path] = None) -> List[SubmissionReport]:
    """Grade every submission (``jobs`` at a time); the reports keep the order of ``paths``."""
    from ktlab.grading.checks import load_all

    load_all()  # once, before the threads start
    if executed_dir is not None:
        executed_dir.mkdir(parents=True, exist_ok=True)

    def one(item):
        i, p = item
        out = executed_dir / f"{i:03d}_{Path(p).name}" if executed_dir is not None else None
        try:
            return grade_notebook(p, timeout=timeout, cell_timeout=cell_timeout, executed=out)
        except Exception as err:  # a bug of ours: report it, keep grading the others
            return SubmissionReport(str(p), None, "failed", [], [f"grader error: "
                                    f"{type(err).__name__}: {err}"], 0.0)

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, enumerate(paths)))


def write_report(reports: Sequence[SubmissionReport], out: Path) -> None:
    """``.json``: a list of submissions with tasks; ``.csv``: one row per task plus a TOTAL row."""
    out = Path(out)
    if out.suffix == ".json":
        out.write_text(json.dumps([r.to_json() for r in reports], indent=2) + "\n")
        return
    if out.suffix != ".csv":
        raise ValueError(f"--out must end in .csv or .json, got {out.name!r}")
    with open(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["submission", "notebook", "task", "points", "max_points", "status", "reasons",
                    "seconds"])
        for r in reports:
            for t in r.tasks:
                w.writerow([r.submission, r.notebook or "", t.task, t.points, t.max_points,
                            t.status, " | ".join(t.reasons), ""])
            w.writerow([r.submission, r.notebook or "", "TOTAL", r.points, r.max_points, r.status,
                        " | ".join(r.notes), r.seconds])


def format_report(reports: Sequence[SubmissionReport]) -> str:
    """The console summary: one block per submission, one line per task, reasons indented."""
    out = []
    for r in reports:
        out.append(f"{r.submission}: {r.points:g}/{r.max_points:g} points  [{r.status}, "
                   f"{r.seconds:.1f} s]")
        for t in r.tasks:
            out.append(f"  {t.task:<24} {t.points:g}/{t.max_points:g}  {t.status}")
            for why in t.reasons:
                out.append(f"      - {why}")
        for note in r.notes:
            out.append(f"  note: {note}")
    return "\n".join(out)
