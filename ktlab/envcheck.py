"""``ktlab env``: versions, device, profile, teacher and data availability, and what is wrong."""
from __future__ import annotations

import argparse
import platform
from typing import Any

from ktlab import config
from ktlab.data import mirror


def check_environment(cfg: config.Config | None = None) -> tuple[list[tuple[str, str]], list[str]]:
    """Return ``(facts, problems)``: lines to print, and a list of problems with their fixes."""
    import datasets
    import torch
    import transformers

    cfg = cfg or config.load(verbose=False)
    facts = [("python", platform.python_version()), ("torch", torch.__version__),
             ("transformers", transformers.__version__), ("datasets", datasets.__version__),
             ("device", cfg.device), ("profile", cfg.profile), ("seed", str(cfg.seed)),
             ("threads", str(torch.get_num_threads()))]
    problems: list[str] = []

    from ktlab import models
    try:
        resolved = models.resolve_teacher(cfg.teacher)
        facts.append(("teacher", f"{cfg.teacher} -> {resolved}"))
        if cfg.teacher in models.OFFLINE_TEACHERS:
            facts.append(("teacher MLM head", "no (sentence encoder; see ktlab.pretraining)"))
    except models.TeacherNotFoundError as err:
        facts.append(("teacher", f"{cfg.teacher} -> UNAVAILABLE"))
        problems.append(str(err))

    root = cfg.data_dir
    facts.append(("data dir", str(root) if root else "(KTLAB_DATA_DIR not set)"))
    for dataset, splits in mirror.EXPECTED_COUNTS.items():
        for split in splits:
            if mirror.mirror_has(root, dataset, split):
                try:
                    mirror.verified_mirror_file(root, dataset, split)
                    facts.append((f"{dataset}/{split}", "mirror, sha256 ok"))
                except mirror.DataCorruptError as err:
                    facts.append((f"{dataset}/{split}", "mirror, CORRUPT"))
                    problems.append(str(err))
            else:
                reason = mirror.hub_offline_reason()
                if reason:
                    facts.append((f"{dataset}/{split}", "UNAVAILABLE"))
                    problems.append(str(mirror.no_data_error(dataset, root, reason)))
                    break
                facts.append((f"{dataset}/{split}", "hub"))
    return facts, problems


def run_env(args: argparse.Namespace) -> int:
    facts, problems = check_environment(config.load(args.profile, verbose=False))
    width = max(len(k) for k, _ in facts)
    for key, value in facts:
        print(f"{key:<{width}}  {value}")
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for i, problem in enumerate(problems, 1):
            print(f"  {i}. {problem}")
        return 1
    print("\nall good")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser("env", help="check versions, device, teacher and data")
    p.add_argument("--profile", choices=config.PROFILES, default=None)
    p.set_defaults(func=run_env)
