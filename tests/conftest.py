"""Shared fixtures: the data mirror and the offline switches every test runs under."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


def _mirror() -> Path | None:
    env = os.environ.get("KTLAB_DATA_DIR")
    if env and Path(env, "sst2", "train.tsv").is_file():
        return Path(env)
    shared = REPO.parent / "shared" / "data"
    return shared if (shared / "sst2" / "train.tsv").is_file() else None


MIRROR = _mirror()
if MIRROR is not None:
    os.environ["KTLAB_DATA_DIR"] = str(MIRROR)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real data mirror; the course's tests need it (CI has ../shared/data)."""
    if MIRROR is None:
        pytest.fail("no data mirror: set KTLAB_DATA_DIR to the folder with sst2/ and conll2003/ "
                    "(../shared/data in the classroom layout)")
    return MIRROR


@pytest.fixture(scope="session")
def tokenizer():
    from ktlab.models import load_tokenizer
    return load_tokenizer("minilm")
