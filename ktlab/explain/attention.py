"""Attention weights vs gradient attributions: is "where the model looks" why it decides?

Jain & Wallace (2019) found attention weights often disagree with gradient-based importance;
we measure it on our teacher: the attention each token *receives* in a layer (mean over heads
and over the non-padded query positions) against |integrated gradient|.

transformers 5 computes attention with sdpa, which returns no weights, so we switch the
encoder to the eager implementation for the call and switch it back."""
from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ktlab.explain._inputs import encode, eval_mode, pad, pad_id
from ktlab.explain.gradients import TokenAttribution


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    encoder = getattr(model, "bert", model)
    config = getattr(encoder, "config", None)
    before = getattr(config, "_attn_implementation", None)
    switch = hasattr(encoder, "set_attn_implementation") and before not in (None, "eager")
    if switch:
        encoder.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            encoder.set_attn_implementation(before)


@torch.no_grad()
def attention_scores(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                     layer: int = -1, max_length: int = 64) -> list[list[float]]:
    """Per sentence, the attention each token receives in ``layer`` (one sentence at a time,
    so every query is a real token)."""
    out = []
    with eval_mode(model), eager_attention(model):
        for row in encode(tokenizer, sentences, max_length):
            ids, mask = pad([row], pad_id(tokenizer))
            result = model(input_ids=ids, attention_mask=mask, output_attentions=True)
            att = result.attentions[layer][0]            # (heads, queries, keys)
            out.append(att.mean(0).mean(0).tolist())
    return out


def attention_vs_gradients(attention: Sequence[Sequence[float]],
                           attributions: Sequence[TokenAttribution], k: int = 3) -> dict:
    """Spearman ρ between attention received and |IG| per sentence ([CLS]/[SEP] left out), and
    how often the top-k tokens coincide."""
    from scipy.stats import spearmanr
    rhos, overlaps = [], []
    for att, attr in zip(attention, attributions):
        keep = [i for i, t in enumerate(attr.tokens) if t not in ("[CLS]", "[SEP]")]
        a = np.array([att[i] for i in keep])
        g = np.abs(np.array([attr.scores[i] for i in keep]))
        if len(keep) >= 3 and np.ptp(a) > 0 and np.ptp(g) > 0:
            rhos.append(float(spearmanr(a, g).statistic))
        kk = min(k, len(keep))
        if kk:
            overlaps.append(len(set(np.argsort(-a)[:kk]) & set(np.argsort(-g)[:kk])) / kk)
    return {"mean_spearman": round(float(np.mean(rhos)), 4) if rhos else math.nan,
            "median_spearman": round(float(np.median(rhos)), 4) if rhos else math.nan,
            f"top{k}_overlap": round(float(np.mean(overlaps)), 4) if overlaps else math.nan,
            "sentences": len(rhos)}
