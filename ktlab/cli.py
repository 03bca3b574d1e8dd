"""The ``ktlab`` command: ``env``, ``data download|verify``, ``run``, ``exercises``, ``grade``.

Each subsystem registers its own sub-commands (``register(subparsers)`` in its ``cli`` module),
so the code for a command lives next to the code it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: Modules that add sub-commands; a module that does not exist yet is skipped.
COMMAND_MODULES = ("ktlab.envcheck", "ktlab.data.cli", "ktlab.experiments.cli", "ktlab.deploy.cli",
                   "ktlab.grading.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ktlab", description="ktlab: transfer knowledge from "
                                     "BERT into other neural networks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name and (name == err.name or name.startswith(err.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from ktlab.config import DeviceError
    from ktlab.data.mirror import DataCorruptError, DataUnavailableError
    from ktlab.models import MissingHeadError, TeacherNotFoundError

    try:
        return int(args.func(args) or 0)
    except (DataCorruptError, DataUnavailableError, DeviceError, MissingHeadError,
            TeacherNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
