"""GLUE SST-2 (binary sentiment) in one schema: ``idx: int, sentence: str, label: int``.

The test split has no public labels; its ``label`` is ``-1``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import datasets

from ktlab.data import mirror

LABELS = ["negative", "positive"]
SPLITS = ("train", "dev", "test")
HUB_ID, HUB_CONFIG = "nyu-mll/glue", "sst2"
_HUB_SPLIT = {"train": "train", "dev": "validation", "test": "test"}

FEATURES = datasets.Features({
    "idx": datasets.Value("int32"),
    "sentence": datasets.Value("string"),
    "label": datasets.Value("int64"),
})


def read_tsv(path: Path, split: str) -> datasets.Dataset:
    """Parse a GLUE SST-2 TSV file (``sentence\\tlabel``, or ``index\\tsentence`` for test).

    A bad line is a :class:`~ktlab.data.mirror.DataCorruptError` naming ``FILE:LINE`` (the
    header is line 1) and the fix."""
    lines = path.read_text(encoding="utf-8").splitlines()
    if not lines:
        raise mirror.DataCorruptError(f"{path} is empty; restore it from the mirror source "
                                      "(re-copy it, or `ktlab data download --to DIR`)")
    header = lines[0].rstrip("\r").split("\t")
    if header not in (["index", "sentence"], ["sentence", "label"]):
        raise mirror.DataCorruptError(f"{path}:1: unknown header {header!r}; expected "
                                      "'sentence<TAB>label' or 'index<TAB>sentence'")
    labelled = header == ["sentence", "label"]
    restore = "or restore the original file (`ktlab data verify` checks a mirror)"
    rows = {"idx": [], "sentence": [], "label": []}
    for number, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        cols = line.split("\t")
        if len(cols) != 2:
            raise mirror.DataCorruptError(
                f"{path}:{number}: expected 2 tab-separated columns like the header "
                f"{'<TAB>'.join(header)!r}, got {len(cols)}; a stray tab in the sentence? "
                f"replace it with a space, {restore}")
        sentence, number_col = (cols[0], cols[1]) if labelled else (cols[1], cols[0])
        try:
            value = int(number_col)
        except ValueError:
            raise mirror.DataCorruptError(
                f"{path}:{number}: {header[1] if labelled else header[0]} {number_col!r} is "
                f"not an integer; fix that line, {restore}") from None
        idx, label = (len(rows["idx"]), value) if labelled else (value, -1)
        rows["idx"].append(idx)
        rows["sentence"].append(sentence.strip())
        rows["label"].append(label)
    return datasets.Dataset.from_dict(rows, features=FEATURES, split=split)


def _from_hub(split: str) -> datasets.Dataset:
    return from_hub_schema(datasets.load_dataset(HUB_ID, HUB_CONFIG, split=_HUB_SPLIT[split]))


def from_hub_schema(raw: datasets.Dataset) -> datasets.Dataset:
    """Map ``nyu-mll/glue`` sst2 rows (sentence, ClassLabel label, idx) to ktlab's schema."""
    return raw.map(lambda ex: {"idx": ex["idx"], "sentence": ex["sentence"].strip(),
                               "label": int(ex["label"])},
                   remove_columns=raw.column_names, features=FEATURES)


def load_sst2(split: Optional[str] = None, data_dir: Optional[str | Path] = None
              ) -> datasets.Dataset | datasets.DatasetDict:
    """Load SST-2: from the mirror (``data_dir`` or ``KTLAB_DATA_DIR``), else from the hub.

    ``split`` is ``train``, ``dev`` (alias ``validation``) or ``test``; ``None`` gives all three.
    """
    if split is None:
        return datasets.DatasetDict({s: load_sst2(s, data_dir) for s in SPLITS})
    if split == "validation":
        split = "dev"
    if split not in SPLITS:
        raise ValueError(f"unknown SST-2 split {split!r}; choose one of {SPLITS}")
    root = mirror.mirror_root(data_dir)
    if mirror.mirror_has(root, "sst2", split):
        return read_tsv(mirror.verified_mirror_file(root, "sst2", split), split)
    reason = mirror.hub_offline_reason()
    if reason:
        raise mirror.no_data_error("SST-2", root, reason)
    return _from_hub(split)
