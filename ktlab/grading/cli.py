"""``ktlab exercises build|check|release`` and ``ktlab grade``: the instructor's commands."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("exercises", help="generate exercises/ from solutions/, check it, release it")
    ex_sub = ex.add_subparsers(dest="exercises_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--solutions", type=Path, default=None,
                        help="solution notebooks (default: ./solutions or the checkout's)")
    common.add_argument("--exercises", type=Path, default=None,
                        help="exercise notebooks (default: next to solutions/)")
    b = ex_sub.add_parser("build", parents=[common], help="write exercises/NN_*.ipynb from solutions/")
    b.set_defaults(func=_build)
    c = ex_sub.add_parser("check", parents=[common],
                          help="exit 1 if exercises/ is out of date with solutions/")
    c.set_defaults(func=_check)
    r = ex_sub.add_parser("release", parents=[common],
                          help="write a student bundle (exercises only, no solutions) to --to DIR")
    r.add_argument("--to", type=Path, required=True, help="new folder for the bundle")
    r.add_argument("--force", action="store_true", help="allow a non-empty --to folder")
    r.set_defaults(func=_release)

    g = sub.add_parser("grade", help="grade submitted notebooks, each in a fresh kernel")
    g.add_argument("submissions", nargs="+",
                   help="the .ipynb files to grade (a folder: every notebook in it)")
    g.add_argument("--out", type=Path, default=None, help="write the report: grades.csv or grades.json")
    g.add_argument("--timeout", type=float, default=600,
                   help="seconds per notebook, kernel start included (default 600)")
    g.add_argument("--cell-timeout", type=float, default=None,
                   help="seconds per cell before it is interrupted (default min(120, --timeout))")
    g.add_argument("--jobs", "-j", type=int, default=1, help="submissions graded at once")
    g.add_argument("--executed", type=Path, default=None,
                   help="keep the executed notebooks (output capped) in this folder")
    g.set_defaults(func=_grade)


def _dirs(args) -> tuple[Path, Path]:
    from ktlab.grading.exercises import repo_root

    solutions = args.solutions or repo_root() / "solutions"
    exercises = args.exercises or solutions.parent / "exercises"
    return solutions, exercises


def _build(args) -> int:
    from ktlab.grading.exercises import ExerciseError, build

    solutions, exercises = _dirs(args)
    try:
        written = build(solutions, exercises)
    except (ExerciseError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for p in written:
        print(f"{'wrote' if p.exists() else 'removed'} {p}")
    print(f"exercises up to date in {exercises} ({len(written)} file(s) changed)")
    return 0


def _check(args) -> int:
    from ktlab.grading.exercises import stale

    solutions, exercises = _dirs(args)
    problems = stale(solutions, exercises)
    for p in problems:
        print(p)
    if problems:
        print("exercises/ is out of date: run `ktlab exercises build`", file=sys.stderr)
        return 1
    print(f"{exercises} is up to date with {solutions}")
    return 0


def _release(args) -> int:
    from ktlab.grading.exercises import ExerciseError, release

    solutions, exercises = _dirs(args)
    try:
        written = release(solutions, exercises, args.to, force=args.force)
    except ExerciseError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"student bundle: {len(written)} file(s) in {args.to}")
    return 0


def _grade(args) -> int:
    from ktlab.grading.grader import format_report, grade, write_report

    if args.out is not None and args.out.suffix not in (".csv", ".json"):
        print(f"error: --out must end in .csv or .json, got {args.out.name!r}", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    submissions = []
    for item in args.submissions:  # a folder means every notebook in it
        path = Path(item)
        submissions += sorted(map(str, path.glob("*.ipynb"))) if path.is_dir() else [item]
    if not submissions:
        print("error: no .ipynb files in " + ", ".join(args.submissions), file=sys.stderr)
        return 2
    reports = grade(submissions, timeout=args.timeout, cell_timeout=args.cell_timeout,
                    jobs=args.jobs, executed_dir=args.executed)
    print(format_report(reports))
    if args.out is not None:
        write_report(reports, args.out)
        print(f"report written to {args.out}")
    return 0
