"""The deletion test: if the top-attributed tokens are the reasons, deleting them should hurt
much more than deleting as many random tokens (DeYoung et al. 2020, "comprehensiveness").

For each sentence and k: delete the k tokens with the highest attribution towards the
prediction, or k random tokens ([CLS]/[SEP] are never deleted), run the model again and report
accuracy, the mean drop of the originally predicted class's probability, and the share of
predictions that flipped."""
from __future__ import annotations

import random
from typing import Any, Sequence

import torch

from ktlab.explain._inputs import encode, pad_id, probabilities, special_ids
from ktlab.explain.gradients import TokenAttribution


def _delete(ids: Sequence[int], positions: set[int]) -> list[int]:
    return [t for i, t in enumerate(ids) if i not in positions]


def deletion_test(model: torch.nn.Module, tokenizer: Any, sentences: Sequence[str],
                  labels: Sequence[int], attributions: Sequence[TokenAttribution],
                  ks: Sequence[int] = (1, 2, 3), seed: int = 0, max_length: int = 64,
                  batch_size: int = 64) -> dict:
    """Top-k vs random-k deletion; see the module docstring."""
    rows = encode(tokenizer, sentences, max_length)
    if len(rows) != len(attributions) or len(rows) != len(labels):
        raise ValueError(f"{len(rows)} sentences, {len(labels)} labels and "
                         f"{len(attributions)} attributions: pass one of each per sentence")
    special, pad = special_ids(tokenizer), pad_id(tokenizer)
    base = probabilities(model, rows, pad, batch_size)
    predicted = base.argmax(-1)
    labels_t = torch.as_tensor(list(labels))
    rng = random.Random(seed)
    out: dict = {"k": {}, "n": len(rows),
                 "original_accuracy": float((predicted == labels_t).float().mean())}
    for k in ks:
        top, rand = [], []
        for ids, attr in zip(rows, attributions):
            if attr.ids != ids:
                raise ValueError("an attribution was computed on other token ids; use the same "
                                 "tokenizer and max_length")
            words = [i for i, t in enumerate(ids) if t not in special]
            kk = min(k, max(len(words) - 1, 0))        # keep at least one word
            ranked = sorted(words, key=lambda i: -attr.scores[i])
            top.append(_delete(ids, set(ranked[:kk])))
            rand.append(_delete(ids, set(rng.sample(words, kk))))
        out["k"][k] = {}
        for name, edited in (("top", top), ("random", rand)):
            probs = probabilities(model, edited, pad, batch_size)
            new = probs.argmax(-1)
            drop = base.gather(1, predicted[:, None]) - probs.gather(1, predicted[:, None])
            out["k"][k][name] = {"accuracy": float((new == labels_t).float().mean()),
                                 "prob_drop": float(drop.mean()),
                                 "flip_rate": float((new != predicted).float().mean())}
    return out
