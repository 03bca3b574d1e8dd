"""How long each notebook takes under nbval, read from the JUnit report of a `make test` run.

`make test` writes `runs/pytest-report.xml`; nbval reports one test per code cell with its
duration. This script sums them per notebook (kernel start-up, ~5 s, is not in the cells) and
writes a JSON with the machine it ran on, which the README's course map quotes.

    python benchmarks/notebook_times.py runs/pytest-report.xml --json results/notebook_times.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import xml.etree.ElementTree as ET
from collections import defaultdict


def notebook_seconds(report: str) -> dict[str, float]:
    """``{"notebooks/05_ner_transfer.ipynb": 171.3, ...}``: summed cell durations per notebook."""
    totals: dict[str, float] = defaultdict(float)
    for case in ET.parse(report).getroot().iter("testcase"):
        cls = case.get("classname", "")
        if ".ipynb" not in cls:
            continue
        folder, _, name = cls.partition(".")
        totals[f"{folder}/{name}"] += float(case.get("time", 0))
    if not totals:
        raise SystemExit(f"{report}: no notebook cells in this report; run `make test` (it writes "
                         "runs/pytest-report.xml) first")
    return dict(sorted(totals.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", help="JUnit XML written by pytest --junitxml")
    parser.add_argument("--json", default=None, help="also write the times here")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.report):
        print(f"error: {args.report} not found; run `make test` first", file=sys.stderr)
        return 2
    times = notebook_seconds(args.report)
    for path, seconds in times.items():
        print(f"{seconds:7.1f} s  {path}")
    if args.json:
        from ktlab.experiments.common import describe_machine
        load = os.getloadavg() if hasattr(os, "getloadavg") else None
        with open(args.json, "w") as fh:
            json.dump({"seconds_in_cells": {k: round(v, 1) for k, v in times.items()},
                       "note": "sum of nbval cell durations; kernel start-up (~5 s) excluded",
                       "machine": describe_machine(), "load_average_after": load}, fh, indent=2)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
