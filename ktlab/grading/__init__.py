"""Graded exercises: instant checks in the notebook, and the batch grader behind ``ktlab grade``.

For students::

    from ktlab.grading import check
    check("00.softmax", softmax_with_temperature)   # one line per sub-check, returns points

For authors of a notebook's exercises (copy this into ``ktlab/grading/checks/nbNN.py``; every
``nbNN.py`` in that folder is imported automatically)::

    from ktlab.grading.registry import Checker, task
    from ktlab.transfer.distill import kd_loss          # the reference: ktlab's own code

    @task("03.kd_loss", points=3,
          hint="Soften both distributions with T, take the KL divergence, scale by T**2.")
    def check_kd_loss(fn, t: Checker) -> None:
        t.callable(fn, "your kd_loss function")
        for seed, (batch, classes, T) in enumerate([(4, 2, 1.0), (8, 5, 2.0), (3, 7, 4.0)]):
            with t.case(f"batch {batch}, {classes} classes, T={T}"):      # one sub-check
                s, te = t.randn(batch, classes, seed=seed), t.randn(batch, classes, seed=99 + seed)
                t.allclose(fn(s, te, T), kd_loss(s, te, T), atol=1e-5)

Inside ``with t.case(name, weight=1):`` anything that goes wrong fails that case only, with a
short message: :meth:`Checker.allclose` reports type, shape (expected vs got), NaN/inf, and the
max abs error and where; :meth:`Checker.is_true`, :meth:`Checker.raises`, :meth:`Checker.fail`
take your own sentence; an exception from the student's code becomes "your code raised X: ...
(line N)"; ``NotImplementedError`` ends the task as "not attempted yet". Points are shared among
the cases by weight. :meth:`Checker.randn` / :meth:`Checker.randint` draw seeded inputs without
touching the global RNG; :meth:`Checker.padding_mask` gives a random ``attention_mask``.

In the solution notebook the task cell holds the student's part between ``### BEGIN SOLUTION``
and ``### END SOLUTION`` lines (optionally with a ``# HINT: ...`` line inside, else the task's
``hint`` is used) and ends with ``check("NN.task", obj)``; ``ktlab exercises build`` writes the
exercise notebook. See README.md, "For instructors and graders".
"""
from ktlab.grading.registry import (TASKS, CheckFailed, Checker, CheckLine, Task, TaskResult,
                                    check, get_task, run_check, task, tasks_for)

__all__ = ["check", "run_check", "task", "Checker", "CheckFailed", "CheckLine", "Task",
           "TaskResult", "TASKS", "get_task", "tasks_for"]
