"""Tokenisation and batching: dynamic padding, and word <-> sub-word label alignment for tagging.

WordPiece splits a word such as ``"Hawaii"`` into ``["hawaii"]`` but ``"Kuala"`` into
``["ku", "##ala"]``. Word-level NER labels must therefore be *aligned*: by default the first
sub-token of each word carries the word's label and the others get ``-100`` (ignored by the loss).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import torch

IGNORE_INDEX = -100


@dataclasses.dataclass
class TruncationReport:
    """How many inputs did not fit in ``max_length`` (they are cut, never a crash)."""

    total: int = 0
    truncated: int = 0

    def __str__(self) -> str:
        share = 100 * self.truncated / max(self.total, 1)
        return f"{self.truncated} of {self.total} inputs truncated ({share:.1f}%)"


def encode_sentences(tokenizer: Any, sentences: Sequence[str], max_length: int = 128,
                     report: Optional[TruncationReport] = None) -> list[dict]:
    """Tokenise sentences without padding (the collator pads per batch)."""
    if not sentences:  # fast tokenizers raise IndexError on an empty batch
        return []
    enc = tokenizer(list(sentences), truncation=False, add_special_tokens=True)
    out = []
    for ids, types in zip(enc["input_ids"], enc.get("token_type_ids", enc["input_ids"])):
        cut = len(ids) > max_length
        if cut:  # keep [CLS] ... and the final [SEP]
            ids = ids[: max_length - 1] + ids[-1:]
            types = types[: max_length - 1] + types[-1:]
        if report is not None:
            report.total += 1
            report.truncated += int(cut)
        out.append({"input_ids": list(ids), "token_type_ids": [0] * len(ids) if types is ids
                    else list(types)})
    return out


@dataclasses.dataclass
class PadCollator:
    """Pads ``input_ids``/``token_type_ids`` to the longest item in the batch and builds
    ``attention_mask``; ``labels`` are stacked (scalars) or padded with -100 (sequences).
    Dynamic padding keeps CPU batches short: most SST-2 sentences are under 30 tokens."""

    pad_token_id: int = 0

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(it["input_ids"]) for it in items)
        batch: dict[str, list] = {"input_ids": [], "token_type_ids": [], "attention_mask": []}
        for it in items:
            n = len(it["input_ids"])
            pad = length - n
            batch["input_ids"].append(list(it["input_ids"]) + [self.pad_token_id] * pad)
            batch["token_type_ids"].append(list(it.get("token_type_ids") or [0] * n) + [0] * pad)
            batch["attention_mask"].append([1] * n + [0] * pad)
        out = {k: torch.tensor(v, dtype=torch.long) for k, v in batch.items()}
        if "labels" in items[0]:
            first = items[0]["labels"]
            if isinstance(first, (list, tuple)):
                out["labels"] = torch.tensor(
                    [list(it["labels"]) + [IGNORE_INDEX] * (length - len(it["labels"]))
                     for it in items], dtype=torch.long)
            else:
                out["labels"] = torch.tensor([it["labels"] for it in items])
        for key in items[0]:
            if key not in out and key not in ("input_ids", "token_type_ids", "attention_mask"):
                values = [it[key] for it in items]
                if all(isinstance(v, (int, float)) for v in values):
                    out[key] = torch.tensor(values)
                elif all(isinstance(v, torch.Tensor) for v in values):
                    out[key] = torch.stack(values)
        return out


def align_labels(word_ids: Sequence[Optional[int]], word_labels: Sequence[int],
                 label_all_subtokens: bool = False) -> list[int]:
    """Sub-token labels from word labels.

    ``word_ids[i]`` is the word index of sub-token ``i`` (``None`` for ``[CLS]``/``[SEP]``/pad).
    The first sub-token of each word gets the word's label; the rest get -100, or the same
    label when ``label_all_subtokens`` is true.
    """
    labels = []
    previous = None
    for wid in word_ids:
        if wid is None:
            labels.append(IGNORE_INDEX)
        elif wid != previous:
            labels.append(int(word_labels[wid]))
        else:
            labels.append(int(word_labels[wid]) if label_all_subtokens else IGNORE_INDEX)
        previous = wid
    return labels


def labels_to_words(word_ids: Sequence[Optional[int]], token_predictions: Sequence[Any],
                    num_words: Optional[int] = None, fill: Any = None) -> list[Any]:
    """The inverse of :func:`align_labels`: one prediction per word, read from its first
    sub-token. Words lost to truncation get ``fill`` (so the output always has ``num_words``)."""
    if num_words is None:
        num_words = 1 + max((w for w in word_ids if w is not None), default=-1)
    words = [fill] * num_words
    seen = set()
    for wid, pred in zip(word_ids, token_predictions):
        if wid is not None and wid not in seen:
            words[wid] = pred
            seen.add(wid)
    return words


def encode_tagged(tokenizer: Any, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[int]],
                  max_length: int = 128, label_all_subtokens: bool = False,
                  report: Optional[TruncationReport] = None) -> list[dict]:
    """Tokenise pre-split words and align their integer labels; keeps ``word_ids`` for decoding."""
    enc = tokenizer([list(t) for t in tokens], is_split_into_words=True, truncation=True,
                    max_length=max_length)
    out = []
    for i, word_labels in enumerate(tags):
        word_ids = enc.word_ids(i)
        kept_words = len({w for w in word_ids if w is not None})
        if report is not None:
            report.total += 1
            report.truncated += int(kept_words < len(word_labels))
        out.append({"input_ids": enc["input_ids"][i],
                    "token_type_ids": enc["token_type_ids"][i] if "token_type_ids" in enc
                    else [0] * len(enc["input_ids"][i]),
                    "labels": align_labels(word_ids, word_labels, label_all_subtokens),
                    "word_ids": word_ids})
    return out
