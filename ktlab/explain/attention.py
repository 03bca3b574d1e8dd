"""Attention as an explanation? The attention each token receives, against integrated gradients.

Attention weights are often drawn as explanations (Jain & Wallace 2019 asked whether they are
one). Here a token's attention score is what it *receives* in one layer: the attention
probabilities averaged over heads and over the (real) query positions, or the [CLS] row only
(``query="cls"``). Over a sentence's tokens the scores sum to 1, like each row of attention.

PyTorch's fused ``sdpa`` attention returns no weights, so a Hugging Face model is switched to
``eager`` attention for the call and switched back afterwards.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from ktlab.explain import _inputs
from ktlab.explain.compare import aligned, spearman, top_k


@dataclasses.dataclass
class TokenScores:
    """One score per token of a sentence (no padding); ``special`` marks [CLS]/[SEP]."""

    tokens: list[str]
    ids: list[int]
    scores: list[float]
    special: list[bool] = dataclasses.field(default_factory=list)


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[nn.Module]:
    """Every HF config inside ``model`` on ``eager`` attention while active, then restored.
    ktlab's from-scratch BERT needs no switch: it returns its weights when asked."""
    configs = {id(m.config): m.config for m in model.modules()
               if hasattr(getattr(m, "config", None), "_attn_implementation")}
    before = {key: cfg._attn_implementation for key, cfg in configs.items()}
    try:
        for cfg in configs.values():
            cfg._attn_implementation = "eager"
        yield model
    finally:
        for key, cfg in configs.items():
            cfg._attn_implementation = before[key]


def attention_scores(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                     layer: int = -1, max_length: int = 64, query: str = "mean",
                     batch_size: int = 32) -> list[TokenScores]:
    """Per sentence, the attention each token receives in ``layer`` (default: the last),
    averaged over heads and over the query positions (``query="mean"``) or read on the [CLS]
    query (``"cls"``). Needs a Transformer: BiLSTM students have no attention."""
    if query not in ("mean", "cls"):
        raise ValueError(f"unknown query {query!r}; use 'mean' or 'cls'")
    encoded = _inputs.encode(tokenizer, sentences, max_length)
    specials = _inputs.special_ids(tokenizer)
    out: list[TokenScores] = []
    with _inputs.eval_mode(model), eager_attention(model), torch.no_grad():
        for start in range(0, len(encoded), batch_size):
            ids, mask = _inputs.pad(encoded[start:start + batch_size], _inputs.pad_id(tokenizer),
                                    _inputs.device_of(model))
            probs = _layer_attention(model, ids, mask, layer).float().mean(1)  # (B, Tq, Tk)
            m = mask.to(probs.dtype)
            if query == "cls":
                received = probs[:, 0]
            else:  # mean over the real queries: padded rows are not part of the sentence
                received = (probs * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)
            for row in range(ids.shape[0]):
                n = int(mask[row].sum())
                row_ids = ids[row, :n].tolist()
                out.append(TokenScores(tokenizer.convert_ids_to_tokens(row_ids), row_ids,
                                       received[row, :n].cpu().double().tolist(),
                                       [i in specials for i in row_ids]))
    return out


def _layer_attention(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor,
                     layer: int) -> torch.Tensor:
    """``(batch, heads, T, T)`` attention probabilities of one layer."""
    output = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    if isinstance(output, torch.Tensor):  # bare logits: ktlab's BiLSTM and CNN students
        raise TypeError(f"{type(model).__name__} has no attention to read (a BiLSTM or CNN "
                        "student?): attention_scores needs a Transformer")
    attentions = getattr(output, "attentions", None)
    if not attentions:
        raise ValueError(f"{type(model).__name__} returned no attention weights even with "
                         "eager attention; load it with attn_implementation='eager'")
    return attentions[layer]


def attention_vs_gradients(attention: Sequence[Any], gradients: Sequence[Any],
                           k: int = 3) -> dict:
    """Per sentence, Spearman's rho between the attention a word token receives and the
    magnitude ``|IG|`` of its integrated gradient (attention has no sign), and the overlap of
    their top-``k`` tokens; means over sentences ([CLS]/[SEP] skipped: [SEP] soaks up attention
    and has IG 0 by construction)."""
    if len(attention) != len(gradients):
        raise ValueError(f"{len(attention)} attention rows vs {len(gradients)} attributions")
    rho, overlap = [], []
    for att, ig in zip(attention, gradients):
        a, g = aligned(att, ig)
        g = np.abs(g)
        rho.append(spearman(a, g))
        n = min(k, len(a))
        overlap.append(len(top_k(a, n) & top_k(g, n)) / n if n else float("nan"))
    rho_arr = np.array(rho, dtype=float)
    return {
        "mean_spearman": _rounded(np.mean, rho_arr),
        "median_spearman": _rounded(np.median, rho_arr),
        f"top{k}_overlap": _rounded(np.mean, np.array(overlap, dtype=float)),
        "sentences": int((~np.isnan(rho_arr)).sum()),
        "per_sentence_spearman": [round(r, 4) for r in rho],
    }


def _rounded(statistic: Any, values: np.ndarray) -> float:
    """``statistic`` of the non-nan values, to 4 places; ``nan`` when there are none."""
    values = values[~np.isnan(values)]
    return round(float(statistic(values)), 4) if len(values) else float("nan")
