"""Do two models rely on the same tokens? Rank correlation and top-k overlap of attributions.

Teacher and BiLSTM students read the same WordPiece ids (the students use the teacher's
tokenizer), so attributions align token by token; ``[CLS]``/``[SEP]`` are left out."""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ktlab.explain.gradients import TokenAttribution

_SPECIAL = ("[CLS]", "[SEP]", "[PAD]")


def _scores(attr: TokenAttribution) -> np.ndarray:
    return np.array([s for t, s in zip(attr.tokens, attr.scores) if t not in _SPECIAL])


def rank_correlation(a: TokenAttribution, b: TokenAttribution) -> float:
    """Spearman's ρ between two attributions of the same sentence (nan if either is constant
    or the sentence has fewer than 3 tokens)."""
    from scipy.stats import spearmanr
    if a.ids != b.ids:
        raise ValueError("the two attributions are of different token sequences; explain the "
                         "same sentence with the same tokenizer")
    x, y = _scores(a), _scores(b)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(spearmanr(x, y).statistic)


def mean_rank_correlation(a: Sequence[TokenAttribution], b: Sequence[TokenAttribution]) -> float:
    """The mean ρ over sentences (nan ones skipped)."""
    values = [rank_correlation(x, y) for x, y in zip(a, b)]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def top_k_overlap(a: TokenAttribution, b: TokenAttribution, k: int = 3) -> float:
    """Share of the top-k tokens (by signed score, towards the prediction) the two agree on."""
    x, y = _scores(a), _scores(b)
    k = min(k, len(x))
    if k == 0:
        return math.nan
    return len(set(np.argsort(-x)[:k]) & set(np.argsort(-y)[:k])) / k
