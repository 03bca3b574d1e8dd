"""Where the data comes from: an offline mirror folder (sha256-checked) or the Hugging Face hub.

The mirror layout is exactly ``../shared/data``::

    DIR/sst2/{train,dev,test}.tsv          GLUE SST-2 TSV files
    DIR/conll2003/{train,valid,test}.txt   CoNLL-2003, one ``word POS chunk NER`` per line

Files are checked against the sha256 digests of the canonical copies (recorded below), or
against ``DIR/manifest.json`` when the mirror was written by ``ktlab data download``.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path
from typing import Optional

from ktlab.config import default_data_dir

#: sha256 of the canonical files (see ../shared/data/SOURCES.md for provenance).
CANONICAL_SHA256 = {
    "sst2/train.tsv": "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1",
    "sst2/dev.tsv": "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0",
    "sst2/test.tsv": "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13",
    "conll2003/train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
    "conll2003/valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
    "conll2003/test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b",
}

#: Rows per split, the numbers ``ktlab data verify`` checks.
EXPECTED_COUNTS = {
    "sst2": {"train": 67349, "dev": 872, "test": 1821},
    "conll2003": {"train": 14041, "valid": 3250, "test": 3453},
}

SPLIT_FILES = {
    "sst2": {"train": "train.tsv", "dev": "dev.tsv", "validation": "dev.tsv", "test": "test.tsv"},
    "conll2003": {"train": "train.txt", "valid": "valid.txt", "validation": "valid.txt",
                  "test": "test.txt"},
}

MANIFEST = "manifest.json"
HUB_HOST = "huggingface.co"


class DataUnavailableError(RuntimeError):
    """The data set can be read neither from the mirror nor from the hub."""


class DataCorruptError(RuntimeError):
    """A mirror file exists but its bytes are not the expected ones."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def expected_digest(root: Path, relpath: str) -> Optional[str]:
    """The digest a mirror file must have: its manifest's, else the canonical one."""
    manifest = root / MANIFEST
    if manifest.is_file():
        try:
            files = json.loads(manifest.read_text())["files"]
        except (ValueError, KeyError) as err:
            raise DataCorruptError(f"{manifest} is not a valid ktlab manifest ({err}); "
                                   "rewrite the mirror with `ktlab data download --to DIR`") from None
        if relpath in files:
            return files[relpath]["sha256"]
    return CANONICAL_SHA256.get(relpath)


_VERIFIED: dict[tuple[str, int, int], str] = {}


def verified_mirror_file(root: Path, dataset: str, split: str) -> Path:
    """Path of one mirror file after checking its digest (checked once per process)."""
    relpath = f"{dataset}/{SPLIT_FILES[dataset][split]}"
    path = root / relpath
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        want = expected_digest(root, relpath)
        got = sha256_file(path)
        if want is not None and got != want:
            raise DataCorruptError(
                f"{path} is corrupt or truncated ({stat.st_size:,} bytes, sha256 {got[:12]}... "
                f"!= expected {want[:12]}...). Fix: "
                f"re-copy this file from the original mirror (e.g. ../shared/data/{relpath}), "
                f"or rewrite the mirror with `ktlab data download --to {root}` on a machine "
                f"with internet, then check it with `ktlab data verify {root}`")
        _VERIFIED[key] = got
    return path


def mirror_root(data_dir: Optional[str | Path] = None) -> Optional[Path]:
    """The mirror folder to use, or ``None`` when there is none."""
    if data_dir is not None:
        return Path(data_dir).expanduser().resolve()
    return default_data_dir()


def hub_offline_reason(timeout: float = 2.0) -> Optional[str]:
    """Why the hub cannot be reached, or ``None`` if it seems reachable.

    Checks the HF offline switches first, then one TCP connect with a short timeout, so an
    offline machine gets its answer in seconds instead of sitting through the hub's retries.
    """
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var} is set"
    result: list[Optional[str]] = ["timed out after %.0f s" % timeout]

    def probe() -> None:  # DNS lookups ignore socket timeouts, so probe in a thread
        try:
            with socket.create_connection((HUB_HOST, 443), timeout=timeout):
                result[0] = None
        except OSError as err:
            result[0] = f"{err.__class__.__name__}: {err}"

    worker = threading.Thread(target=probe, daemon=True)
    worker.start()
    worker.join(timeout + 0.5)
    return None if result[0] is None else f"cannot reach {HUB_HOST} ({result[0]})"


def no_data_error(dataset: str, root: Optional[Path], reason: str) -> DataUnavailableError:
    where = (f"the mirror folder {root} has no {dataset} files" if root
             else "KTLAB_DATA_DIR is not set")
    return DataUnavailableError(
        f"cannot load {dataset}: {where}, and the Hugging Face hub is unavailable ({reason}). "
        f"Fix: set KTLAB_DATA_DIR to a mirror folder (e.g. ../shared/data), or on a machine with "
        f"internet run `ktlab data download --to DIR` and copy DIR here.")


def mirror_has(root: Optional[Path], dataset: str, split: str) -> bool:
    return root is not None and (root / dataset / SPLIT_FILES[dataset][split]).is_file()
