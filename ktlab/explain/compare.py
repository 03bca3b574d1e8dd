"""Do two models attribute alike? Rank correlation and top-k overlap of token scores.

The teacher and its BiLSTM students read the *same* WordPiece ids (the students were built on
the teacher's tokenizer), so two attributions of one sentence line up token by token and are
compared position by position; attributions of different tokenisations are refused (sum them to
words with :func:`ktlab.explain.word_level` first). [CLS] and [SEP] are skipped: the baseline
keeps them, so their integrated gradient is 0 in every model and would only add ties.

Spearman's rho compares the *order* of the tokens, not the scores' sizes, which differ between a
MiniLM teacher and a BiLSTM. A sentence whose scores are all equal has no order: ``nan``.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def content_scores(attr: Any) -> np.ndarray:
    """The scores of the word tokens ([CLS]/[SEP] left out); plain sequences pass through."""
    scores = np.asarray(getattr(attr, "scores", attr), dtype=float)
    special = getattr(attr, "special", None)
    if special:
        scores = scores[~np.asarray(special, dtype=bool)]
    return scores


def aligned(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both attributions' word-token scores, checked to be of the same tokens."""
    ids_a, ids_b = getattr(a, "ids", None), getattr(b, "ids", None)
    if ids_a is not None and ids_b is not None and list(ids_a) != list(ids_b):
        raise ValueError("the two attributions are of different tokens (another tokenizer or "
                         "max_length?); compare word_level(a) with word_level(b) instead")
    x, y = content_scores(a), content_scores(b)
    if len(x) != len(y):
        raise ValueError(f"{len(x)} scores vs {len(y)}: the attributions do not line up")
    return x, y


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho of two score vectors; ``nan`` when either is constant or too short."""
    from scipy.stats import spearmanr
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def rank_correlation(a: Any, b: Any) -> float:
    """Spearman's rho between two attributions of the same sentence, over its word tokens."""
    return spearman(*aligned(a, b))


def mean_rank_correlation(list_a: Sequence[Any], list_b: Sequence[Any]) -> float:
    """The mean of :func:`rank_correlation` over sentence pairs, ``nan`` ones left out."""
    if len(list_a) != len(list_b):
        raise ValueError(f"{len(list_a)} vs {len(list_b)} attributions: pair them by sentence")
    rho = np.array([rank_correlation(a, b) for a, b in zip(list_a, list_b)])
    return float(np.mean(rho[~np.isnan(rho)])) if (~np.isnan(rho)).any() else float("nan")


def top_k(scores: Sequence[float], k: int) -> set[int]:
    """Positions of the ``k`` highest scores (ties: the earlier position first)."""
    order = np.argsort(-np.asarray(scores, dtype=float), kind="stable")
    return {int(i) for i in order[:k]}


def top_k_overlap(a: Any, b: Any, k: int) -> float:
    """The share of ``a``'s ``k`` top-scored word tokens that are also among ``b``'s ``k``
    (1: the same most important words; for sentences shorter than ``k``, of all their words)."""
    x, y = aligned(a, b)
    k = min(k, len(x))
    if k == 0:
        return float("nan")
    return len(top_k(x, k) & top_k(y, k)) / k
