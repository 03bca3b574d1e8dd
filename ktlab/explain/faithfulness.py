"""Is an attribution faithful? The deletion test (comprehensiveness, DeYoung et al. 2020).

If the tokens an attribution ranks highest are what the model uses, deleting them should hurt
the prediction more than deleting as many random tokens. For each ``k``: delete the ``k``
top-scored word tokens of each sentence (or ``k`` random ones), run the model again, and read

- ``accuracy``: against the gold labels, after the deletion;
- ``prob_drop``: mean ``p_c(x) - p_c(x without the k tokens)``, ``c`` the class predicted on the
  *full* sentence (positive: the deleted tokens supported the prediction);
- ``flip_rate``: how often the prediction changes.

Tokens are *removed* (the sentence gets ``k`` tokens shorter, the rest keep their order), not
replaced by [PAD]; [CLS] and [SEP] are never deleted. The same rules as notebook 09's graded
``deletion_drop`` exercise. The scores should explain the predicted class (``targets=None`` in
:func:`~ktlab.explain.integrated_gradients`): high = supports it.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from torch import nn

from ktlab.explain import _inputs


def top_positions(attr: Any, k: int) -> list[int]:
    """The positions of the ``k`` highest-scored tokens that are not [CLS]/[SEP]."""
    special = attr.special or [False] * len(attr.ids)
    words = [i for i in range(len(attr.ids)) if not special[i]]
    return sorted(words, key=lambda i: -attr.scores[i])[:k]


def random_positions(attr: Any, k: int, rng: np.random.Generator) -> list[int]:
    """``k`` random positions that are not [CLS]/[SEP] (all of them when fewer)."""
    special = attr.special or [False] * len(attr.ids)
    words = [i for i in range(len(attr.ids)) if not special[i]]
    return [int(i) for i in rng.permutation(words)[:k]]


def delete_tokens(ids: Sequence[int], positions: Sequence[int]) -> list[int]:
    """``ids`` without the tokens at ``positions``, the others in their order."""
    drop = set(positions)
    return [t for i, t in enumerate(ids) if i not in drop]


def deletion_test(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                  labels: Sequence[int], attributions: Sequence[Any],
                  ks: Sequence[int] = (1, 2, 3), seed: int = 0, max_length: int = 64,
                  batch_size: int = 64) -> dict:
    """Accuracy, probability drop and flip rate after deleting the top-``k`` attributed tokens
    vs ``k`` random ones, for each ``k`` in ``ks``. The attributions' own token ids are edited
    (they are the sentences as the model read them, ``max_length`` included)."""
    if not len(sentences) == len(labels) == len(attributions):
        raise ValueError(f"{len(sentences)} sentences, {len(labels)} labels and "
                         f"{len(attributions)} attributions: give one of each per sentence")
    pad = _inputs.pad_id(tokenizer)
    y = np.asarray(labels)
    full = _inputs.probabilities(model, [a.ids for a in attributions], pad, batch_size).numpy()
    predicted = full.argmax(-1)
    rows = np.arange(len(y))
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"k": {}, "n": len(y),
                           "original_accuracy": round(float((predicted == y).mean()), 4)}
    for k in ks:
        edited = {"top": [delete_tokens(a.ids, top_positions(a, k)) for a in attributions],
                  "random": [delete_tokens(a.ids, random_positions(a, k, rng))
                             for a in attributions]}
        out["k"][k] = {}
        for kind, id_lists in edited.items():
            after = _inputs.probabilities(model, id_lists, pad, batch_size).numpy()
            out["k"][k][kind] = {
                "accuracy": round(float((after.argmax(-1) == y).mean()), 4),
                "prob_drop": round(float((full[rows, predicted] - after[rows, predicted]).mean()),
                                   4),
                "flip_rate": round(float((after.argmax(-1) != predicted).mean()), 4)}
    return out
