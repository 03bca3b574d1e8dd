"""``ktlab data download --to DIR`` (write an offline mirror from the hub) and
``ktlab data verify [DIR]`` (check files, digests and row counts)."""
from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Optional

from ktlab.data import mirror


def write_sst2_tsv(ds: Any, path: Path, split: str) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        if split == "test":
            out.write("index\tsentence\n")
            for row in ds:
                out.write(f"{row['idx']}\t{row['sentence']} \n")
        else:
            out.write("sentence\tlabel\n")
            for row in ds:
                out.write(f"{row['sentence']} \t{row['label']}\n")


def write_conll_txt(ds: Any, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as out:
        out.write("-DOCSTART- -X- -X- O\n\n")
        for row in ds:
            for cols in zip(row["tokens"], row["pos_tags"], row["chunk_tags"], row["ner_tags"]):
                out.write(" ".join(cols) + "\n")
            out.write("\n")


def download(to: Path) -> Path:
    """Write a complete mirror from the hub to ``to`` plus its ``manifest.json``.

    Files are written to a temporary name and renamed, so an interrupted download never leaves a
    half-written file that looks complete.
    """
    from ktlab.data import conll, sst2

    reason = mirror.hub_offline_reason()
    if reason:
        raise mirror.DataUnavailableError(
            f"`ktlab data download` needs the Hugging Face hub, which is unavailable ({reason}). "
            "Run it on a machine with internet and copy the folder here (KTLAB_DATA_DIR).")
    manifest: dict[str, dict] = {}
    for dataset, splits in mirror.EXPECTED_COUNTS.items():
        folder = to / dataset
        folder.mkdir(parents=True, exist_ok=True)
        for split in splits:
            relpath = f"{dataset}/{mirror.SPLIT_FILES[dataset][split]}"
            final = to / relpath
            fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".tmp-")
            os.close(fd)
            tmp = Path(tmp_name)
            if dataset == "sst2":
                ds = sst2._from_hub(split)
                write_sst2_tsv(ds, tmp, split)
            else:
                ds = conll._from_hub(split)
                write_conll_txt(ds, tmp)
            os.replace(tmp, final)
            manifest[relpath] = {"sha256": mirror.sha256_file(final), "rows": len(ds)}
            print(f"wrote {final} ({len(ds)} rows)")
    (to / mirror.MANIFEST).write_text(json.dumps({"source": "huggingface hub", "files": manifest},
                                                 indent=2))
    return to


def verify(root: Path) -> list[str]:
    """Check every mirror file: present, digest, row count. Returns the problems found."""
    from ktlab.data import conll, sst2

    problems = []
    for dataset, splits in mirror.EXPECTED_COUNTS.items():
        for split, expected in splits.items():
            relpath = f"{dataset}/{mirror.SPLIT_FILES[dataset][split]}"
            if not (root / relpath).is_file():
                problems.append(f"{root / relpath}: missing")
                print(f"{relpath:<22} MISSING")
                continue
            try:
                path = mirror.verified_mirror_file(root, dataset, split)
                ds = sst2.read_tsv(path, split) if dataset == "sst2" else conll.read_conll(path, split)
            except (mirror.DataCorruptError, ValueError) as err:
                problems.append(str(err))
                print(f"{relpath:<22} CORRUPT")
                continue
            status = "ok" if len(ds) == expected else f"COUNT {len(ds)} != {expected}"
            if len(ds) != expected:
                problems.append(f"{root / relpath}: {len(ds)} rows, expected {expected}")
            print(f"{relpath:<22} sha256 ok  rows {len(ds):>6,}  {status}")
    return problems


def _run_download(args: argparse.Namespace) -> int:
    download(Path(args.to).expanduser().resolve())
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    root: Optional[Path] = mirror.mirror_root(args.dir)
    if root is None:
        print("no mirror to verify: give a folder or set KTLAB_DATA_DIR")
        return 2
    problems = verify(root)
    if problems:
        print(f"\n{len(problems)} problem(s):\n  " + "\n  ".join(problems))
        print("Fix: restore the files, or rewrite the mirror with `ktlab data download --to DIR`.")
        return 1
    print(f"\n{root}: all files present, digests and counts match")
    return 0


def register(sub: Any) -> None:
    data = sub.add_parser("data", help="offline data mirror: download or verify")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    d = dsub.add_parser("download", help="write an offline mirror from the hub")
    d.add_argument("--to", required=True, help="folder to write (becomes KTLAB_DATA_DIR)")
    d.set_defaults(func=_run_download)
    v = dsub.add_parser("verify", help="check files, sha256 and row counts")
    v.add_argument("dir", nargs="?", default=None, help="mirror folder (default KTLAB_DATA_DIR)")
    v.set_defaults(func=_run_verify)
