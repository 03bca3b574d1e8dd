"""The task registry, the :class:`Checker` a check function writes to, and :func:`check`.

A *task* is one graded exercise, e.g. ``"00.softmax"`` (notebook number, dot, short name). Its
check function is registered with :func:`task` in ``ktlab/grading/checks/nbNN.py``; the points
are declared there, next to the checks, so the instructor reads them in one place.

A check function receives the student's object and a :class:`Checker` ``t``. Each sub-check is a
``with t.case("...")`` block: whatever goes wrong inside the block (a wrong shape, wrong values,
an exception raised by the student's code) fails that case only, with a one- or two-sentence
message, and the next case still runs. ``NotImplementedError`` anywhere stops the task with
"not attempted yet". The task's points are shared among its cases by weight.

Each task marks its *core* cases, ``with t.case("...", core=True)``: the ones that test the
concept the task is about (the 80/10/10 split of MLM masking, the T**2 factor of the KD loss, the
mask applied before the softmax). Failing any core case caps the task at a third of its points
(:data:`CORE_CAP`), whatever else passes: code that misses the point of a task must not keep most
of its points because its shapes and edge cases are right. The result then says so, in an extra
line ``core case failed: '<case>' ... score capped at 1/3``.

Why this shape: students get one line per sub-check and a useful sentence instead of a
traceback, and a hard-coded answer cannot pass because the cases use several seeded random
inputs of different shapes, compared with ktlab's own reference implementation.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional

#: Environment variable the batch grader sets: each :func:`check` call appends its result
#: there as one JSON line, so the results survive even if the kernel dies later.
RESULTS_ENV = "KTLAB_GRADING_RESULTS"
#: The same result is also published as a display message of this MIME type (only under the
#: grader); the runner picks it out of the kernel's output, so deleting the results file from
#: inside the notebook cannot erase points already earned.
RESULT_MIME = "application/vnd.ktlab.check-result+json"

CheckFunction = Callable[[Any, "Checker"], None]

#: A task with a failed core case earns at most this share of its points.
CORE_CAP = 1 / 3
#: Name of the extra result line that says a core case failed and the score was capped. It has
#: weight 0 and ``passed=False``, so the batch grader lists it among the reasons, unchanged.
CORE_CAP_LINE = "core case failed"


@dataclasses.dataclass(frozen=True)
class Task:
    """A registered task: id ``"NN.name"``, points, the hint shown in exercises, the check."""

    task_id: str
    func: CheckFunction
    points: float
    hint: str
    title: str

    @property
    def notebook(self) -> str:
        return self.task_id.split(".", 1)[0]


TASKS: Dict[str, Task] = {}


def task(task_id: str, *, points: float = 1, hint: str = "", title: str = "") -> Callable:
    """Register a check function for ``task_id`` (``"NN.name"``, NN = the notebook's number).

    ``points`` is what the task is worth; ``hint`` is the one-line hint that ``ktlab exercises
    build`` writes into the exercise when the solution region has no ``# HINT:`` line.
    """
    nb, dot, name = task_id.partition(".")
    if not (dot and nb.isdigit() and len(nb) == 2 and name):
        raise ValueError(f"task id {task_id!r} must look like 'NN.name' (two digits = notebook "
                         "number, e.g. '03.kd_loss')")
    if points <= 0:
        raise ValueError(f"task {task_id!r}: points must be positive, got {points}")

    def decorate(func: CheckFunction) -> CheckFunction:
        if task_id in TASKS and TASKS[task_id].func.__qualname__ != func.__qualname__:
            raise ValueError(f"task {task_id!r} is registered twice ({TASKS[task_id].func.__module__}"
                             f" and {func.__module__}); task ids must be unique")
        TASKS[task_id] = Task(task_id, func, float(points), hint.strip(),
                              title or (func.__doc__ or "").strip().split("\n")[0])
        return func

    return decorate


def get_task(task_id: str) -> Task:
    """The registered task, loading ``ktlab/grading/checks/`` first."""
    from ktlab.grading.checks import load_all

    load_all()
    try:
        return TASKS[task_id]
    except KeyError:
        known = ", ".join(sorted(TASKS)) or "none"
        raise KeyError(f"unknown task {task_id!r}; registered tasks: {known}") from None


def tasks_for(notebook: str) -> List[Task]:
    """All tasks of notebook ``"NN"``, in registration order."""
    from ktlab.grading.checks import load_all

    load_all()
    return [t for t in TASKS.values() if t.notebook == notebook]


# ----------------------------------------------------------------------------- results
@dataclasses.dataclass
class CheckLine:
    """One sub-check: its name, whether it passed, and the helpful sentence when it did not."""

    name: str
    passed: bool
    message: str = ""
    weight: float = 1.0
    core: bool = False  #: a core case: failing it caps the task at CORE_CAP of its points


@dataclasses.dataclass
class TaskResult:
    """What :func:`check` returns: points earned, the points possible, one line per sub-check.

    ``status`` is ``"passed"``, ``"failed"``, ``"not attempted"`` or ``"error"`` (the check
    itself could not run: unknown task id, a bug in a check). ``core_failed`` names the failed
    core cases; when it is not empty ``points`` is capped at a third of ``max_points`` and the
    last line is the :data:`CORE_CAP_LINE` note.
    """

    task_id: str
    points: float
    max_points: float
    status: str
    lines: List[CheckLine]
    seconds: float = 0.0
    core_failed: List[str] = dataclasses.field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    @property
    def capped(self) -> bool:
        """True when a failed core case capped the score."""
        return bool(self.core_failed)

    def reasons(self) -> List[str]:
        """One sentence per lost point, for the grade report."""
        if self.status in ("not attempted", "error"):
            return [line.message for line in self.lines if not line.passed] or [self.status]
        return [f"{line.name}: {line.message}" for line in self.lines if not line.passed]

    def report(self) -> str:
        out = []
        for line in self.lines:
            if _is_cap_note(line):
                out.append(f"  {line.name}: {line.message}")
                continue
            mark = "PASS" if line.passed else "FAIL"
            out.append(f"  [{mark}] {line.name}" + (" (core)" if line.core else "")
                       + (f" - {line.message}" if line.message else ""))
        head = {"passed": "all checks passed", "failed": "some checks failed",
                "not attempted": "not attempted yet", "error": "could not be checked"}[self.status]
        if self.capped:
            head += "; core case failed, score capped at 1/3"
        return "\n".join([f"{self.task_id}: {_fmt(self.points)}/{_fmt(self.max_points)} points "
                          f"({head})"] + out)

    def to_json(self) -> Dict[str, Any]:
        d = dataclasses.asdict(self)
        d["lines"] = [dataclasses.asdict(line) for line in self.lines]
        return d

    def __repr__(self) -> str:
        return f"<TaskResult {self.task_id}: {_fmt(self.points)}/{_fmt(self.max_points)} points>"


def _fmt(x: float) -> str:
    return f"{x:g}" if x == round(x, 2) else f"{x:.2f}"


def _is_cap_note(line: CheckLine) -> bool:
    return line.name == CORE_CAP_LINE and line.weight == 0 and not line.passed


def core_cap(points: float) -> float:
    """The most a task of ``points`` earns with a failed core case: a third, rounded *down* to
    the cent so the reported score never exceeds it (2 points -> 0.66, 4 -> 1.33)."""
    return math.floor(points * CORE_CAP * 100 + 1e-9) / 100


# ----------------------------------------------------------------------------- checker
class CheckFailed(AssertionError):
    """Raised inside a case by the ``Checker`` assertions; its message is shown to the student."""


class _NotAttempted(Exception):
    pass


def _student_location(tb) -> str:
    """' (line N of your code)' for the innermost frame that lives in a notebook cell."""
    where = ""
    for frame, lineno in traceback.walk_tb(tb):
        fname = frame.f_code.co_filename
        if fname.startswith("<ipython-input") or "ipykernel_" in fname or fname.startswith("<cell"):
            where = f" (in {frame.f_code.co_name}, line {lineno} of its cell)"
    return where


class Checker:
    """Collects the sub-check results of one task; check functions receive it as ``t``."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        self.lines: List[CheckLine] = []

    # -- structure
    @contextlib.contextmanager
    def case(self, name: str, weight: float = 1.0, *, core: bool = False) -> Iterator[None]:
        """One sub-check. Failures and exceptions inside the block fail this case only.

        ``core=True`` marks a case that tests the concept the task is about: if it fails, the
        task earns at most a third of its points, however many other cases pass.
        """
        try:
            yield
        except NotImplementedError as err:
            raise _NotAttempted(str(err)) from None
        except CheckFailed as err:
            self.lines.append(CheckLine(name, False, str(err), weight, core))
        except Exception as err:  # the student's code raised: one sentence, no traceback
            msg = str(err).strip().split("\n")[0]
            if len(msg) > 200:
                msg = msg[:200] + "..."
            self.lines.append(CheckLine(
                name, False, f"your code raised {type(err).__name__}: {msg}"
                f"{_student_location(err.__traceback__)}.", weight, core))
        else:
            self.lines.append(CheckLine(name, True, "", weight, core))

    # -- inputs
    @staticmethod
    def generator(seed: int):
        import torch

        return torch.Generator().manual_seed(seed)

    def randn(self, *shape: int, seed: int = 0, scale: float = 1.0):
        """Seeded normal noise; does not touch the global RNG the student's code may rely on."""
        import torch

        return torch.randn(*shape, generator=self.generator(seed)) * scale

    def randint(self, low: int, high: int, *shape: int, seed: int = 0):
        import torch

        return torch.randint(low, high, shape, generator=self.generator(seed))

    def padding_mask(self, batch: int, length: int, *, seed: int = 0, full_first: bool = False):
        """A (batch, length) 0/1 long mask of random lengths in 1..length, like a collator's
        ``attention_mask``; ``full_first`` makes row 0 unpadded (a padded batch always has one)."""
        import torch

        lengths = self.randint(1, length + 1, batch, seed=seed)
        if full_first:
            lengths[0] = length
        return (torch.arange(length)[None, :] < lengths[:, None]).long()

    # -- assertions (raise CheckFailed with a sentence that helps)
    @staticmethod
    def fail(message: str) -> None:
        raise CheckFailed(message)

    def is_true(self, condition: bool, message: str) -> None:
        if not condition:
            raise CheckFailed(message)

    def callable(self, obj: Any, what: str = "a function") -> None:
        if obj is None:
            raise CheckFailed(f"you passed None; pass {what} (the name, without calling it).")
        if not callable(obj):
            raise CheckFailed(f"expected {what}, got a {type(obj).__name__}; pass the function "
                              "itself, without calling it.")

    def raises(self, exc_type: type, func: Callable[[], Any], message: str) -> None:
        """``func()`` must raise ``exc_type``; ``message`` says what input should have caused it."""
        try:
            func()
        except exc_type:
            return
        except NotImplementedError:
            raise
        except Exception as err:
            raise CheckFailed(f"{message}: expected {exc_type.__name__}, your code raised "
                              f"{type(err).__name__}.") from None
        raise CheckFailed(f"{message}: expected {exc_type.__name__}, nothing was raised.")

    def allclose(self, got: Any, expected: Any, *, atol: float = 1e-5, rtol: float = 1e-4,
                 what: str = "output", hint: str = "") -> None:
        """Type, shape, finiteness and values of a tensor, each with its own message.

        ``hint`` (one sentence) is appended to a values or NaN failure, e.g. "subtract the max".
        """
        try:
            self._allclose(got, expected, atol=atol, rtol=rtol, what=what)
        except CheckFailed as err:
            if hint and not str(err).startswith(("wrong " + what + " shape", "expected the")):
                raise CheckFailed(f"{err} Hint: {hint}") from None
            raise

    def _allclose(self, got: Any, expected: Any, *, atol: float, rtol: float, what: str) -> None:
        import numpy as np
        import torch

        if got is None:
            raise CheckFailed(f"your function returned None; did you forget `return`?")
        if isinstance(got, np.ndarray):
            got = torch.from_numpy(got)
        if not isinstance(got, torch.Tensor):
            raise CheckFailed(f"expected the {what} to be a torch.Tensor, got "
                              f"{type(got).__name__}.")
        expected = torch.as_tensor(expected)
        if tuple(got.shape) != tuple(expected.shape):
            raise CheckFailed(f"wrong {what} shape: expected {tuple(expected.shape)}, got "
                              f"{tuple(got.shape)}.")
        g = got.detach().to("cpu", torch.float64)
        e = expected.detach().to("cpu", torch.float64)
        bad = ~torch.isfinite(g) & torch.isfinite(e)
        if bad.any():
            idx = tuple(int(i) for i in bad.nonzero()[0])
            raise CheckFailed(f"the {what} has {int(bad.sum())} NaN/inf value(s), the first at "
                              f"index {idx}, where {float(e[idx]):.4g} was expected.")
        err = (g - e).abs()
        tol = atol + rtol * e.abs()
        if (err > tol).any():
            flat = int(torch.argmax(torch.where(err > tol, err, torch.zeros_like(err))))
            idx = tuple(int(i) for i in np.unravel_index(flat, tuple(g.shape))) if g.dim() else ()
            raise CheckFailed(f"wrong values: max abs error {float(err.max()):.3g} (tolerance "
                              f"{atol:g}); e.g. at index {idx} expected {float(e[idx]):.6g}, "
                              f"got {float(g[idx]):.6g}.")


# ----------------------------------------------------------------------------- check()
def run_check(task_id: str, obj: Any) -> TaskResult:
    """Run the checks of ``task_id`` on ``obj`` and return the result (prints nothing)."""
    start = time.perf_counter()
    try:
        spec = get_task(task_id)
    except KeyError as err:
        return TaskResult(task_id, 0.0, 0.0, "error", [CheckLine("task id", False, err.args[0])])
    t = Checker(task_id)
    status = None
    try:
        spec.func(obj, t)
    except CheckFailed as err:  # outside any case: nothing else can be checked (e.g. not callable)
        status = "failed"
        t.lines = [CheckLine("what you passed", False, str(err))]
    except _NotAttempted:
        status = "not attempted"
        t.lines = [CheckLine("not attempted yet", False,
                             "not attempted yet: your code still raises NotImplementedError; "
                             "replace the `raise NotImplementedError` line with your code.")]
    except Exception as err:  # a bug in the check itself, or the student broke something global
        status = "error"
        t.lines.append(CheckLine("checker", False, f"the check could not finish "
                                 f"({type(err).__name__}: {err}); tell your instructor."))
    seconds = time.perf_counter() - start
    total_w = sum(line.weight for line in t.lines)
    if status is None:
        if not t.lines:
            status = "error"
            t.lines.append(CheckLine("checker", False, "the check ran no cases; tell your "
                                     "instructor."))
        else:
            status = "passed" if all(line.passed for line in t.lines) else "failed"
    earned = 0.0
    if status in ("passed", "failed") and total_w > 0:
        earned = round(spec.points * sum(line.weight for line in t.lines if line.passed)
                       / total_w, 2)
    core_failed = [line.name for line in t.lines if line.core and not line.passed] \
        if status == "failed" else []
    if core_failed:
        cap = core_cap(spec.points)
        earned = min(earned, cap)
        names = "; ".join(f"'{name}'" for name in core_failed)
        t.lines.append(CheckLine(
            CORE_CAP_LINE, False,
            f"{names} — score capped at 1/3 of the points ({_fmt(cap)}/{_fmt(spec.points)} at "
            "most, whatever else passes).", 0.0))
    return TaskResult(task_id, earned, spec.points, status, t.lines, round(seconds, 3),
                      core_failed)


def check(task_id: str, obj: Any, *, quiet: bool = False) -> TaskResult:
    """Check the student's ``obj`` for task ``task_id``; print one line per sub-check.

    Under ``ktlab grade`` (``KTLAB_GRADING_RESULTS`` set) the result is also appended to that
    file as one JSON line. Never raises for a wrong or unfinished answer.
    """
    result = run_check(task_id, obj)
    if not quiet:
        print(result.report())
    path = os.environ.get(RESULTS_ENV)
    if path:
        payload = {**result.to_json(), "time": time.time()}
        try:
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(payload) + "\n")
                fh.flush()
        except OSError as err:
            print(f"(could not record the result for the grader: {err})", file=sys.stderr)
        try:
            from IPython.display import display

            display({RESULT_MIME: payload}, raw=True)
        except Exception:  # not in a kernel: the file is enough
            pass
    return result
