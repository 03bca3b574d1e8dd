"""Deterministic, seeded subsets for the quick profile (stratified where labels exist)."""
from __future__ import annotations

from typing import Optional

import datasets
import numpy as np


def subset(ds: datasets.Dataset, n: Optional[int], seed: int = 0,
           stratify_by: Optional[str] = None) -> datasets.Dataset:
    """``n`` examples of ``ds`` chosen with ``seed``; the same call always gives the same rows.

    With ``stratify_by`` (e.g. ``"label"``) every class keeps its share of the split (largest
    remainders decide the rounding). ``n=None`` or ``n >= len(ds)`` returns ``ds`` unchanged.
    Chosen rows keep their original order, so documents stay contiguous.
    """
    if n is None or n >= len(ds):
        return ds
    if n <= 0:
        raise ValueError(f"subset size must be positive, got {n}")
    rng = np.random.default_rng(seed)
    if stratify_by is None:
        chosen = rng.choice(len(ds), size=n, replace=False)
        return ds.select(np.sort(chosen))
    labels = np.asarray(ds[stratify_by])
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / counts.sum() * n
    take = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - take))[: n - take.sum()]:
        take[i] += 1
    chosen = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False)
              for c, k in zip(classes, take)]
    return ds.select(np.sort(np.concatenate(chosen)))
