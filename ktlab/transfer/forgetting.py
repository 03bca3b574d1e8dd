"""Forgetting: how far a transferred model has drifted from its source.

Two views of the same question:

* **Representations** - linear CKA (Kornblith et al. 2019) between the hidden states of the
  fine-tuned model and of the pretrained encoder on the same inputs, layer by layer. 1 means
  the same representation up to rotation and scale; lower means the layer has changed. Fine-tuned
  BERTs typically keep their lower layers and rewrite the top ones.
* **Weights** - the relative L2 distance ``||W - W0|| / ||W0||`` per block.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional, Sequence

import torch
from torch import nn


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two sets of features for the same n examples (``[n, d1]``, ``[n, d2]``):
    ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` after centring. Widths may differ."""
    if x.ndim != 2 or y.ndim != 2:
        raise ValueError(f"linear_cka needs 2-D [examples, features], got {tuple(x.shape)} and "
                         f"{tuple(y.shape)}")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"both inputs need the same examples: {x.shape[0]} vs {y.shape[0]} rows")
    if x.shape[0] < 2:
        raise ValueError("linear_cka needs at least 2 examples")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    denom = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if denom == 0:
        raise ValueError("a feature matrix is constant: CKA is undefined")
    return float(cross / denom)


@torch.no_grad()
def token_features(model: nn.Module, batches: Sequence[dict], layers: Optional[Sequence[int]] = None
                   ) -> list[torch.Tensor]:
    """Hidden states of every real (non-padding) token, per layer: ``[n_tokens, hidden]``.
    Layer 0 is the embedding output. ``model`` may be a task model or a bare encoder."""
    if not batches:
        raise ValueError("token_features needs at least one batch")
    model.eval()
    device = next(model.parameters()).device
    feats: Optional[list[list[torch.Tensor]]] = None
    for batch in batches:
        inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask",
                                                   "token_type_ids") if k in batch}
        out = model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states
        keep = inputs.get("attention_mask", torch.ones_like(inputs["input_ids"])).bool()
        chosen = range(len(hidden)) if layers is None else layers
        if feats is None:
            feats = [[] for _ in chosen]
        for slot, layer in enumerate(chosen):
            feats[slot].append(hidden[layer][keep].float().cpu())
    return [torch.cat(f) for f in feats]


def cka_by_layer(model: nn.Module, reference: nn.Module, batches: Sequence[dict]) -> list[float]:
    """Linear CKA between ``model`` and ``reference`` at every hidden-state layer (same inputs)."""
    a, b = token_features(model, batches), token_features(reference, batches)
    if len(a) != len(b):
        raise ValueError(f"the models have different depths ({len(a) - 1} vs {len(b) - 1} "
                         "layers); compare chosen layers with token_features + linear_cka")
    return [linear_cka(x, y) for x, y in zip(a, b)]


_BLOCK = re.compile(r"\blayer\.(\d+)\.")


def weight_distance(model: nn.Module | Mapping[str, torch.Tensor],
                    reference: nn.Module | Mapping[str, torch.Tensor],
                    by_block: bool = True) -> dict[str, float]:
    """Relative L2 distance ``||W - W0|| / ||W0||`` over the parameters both share (same name
    and shape), per block (embeddings, layer i, other) and ``"total"``."""
    cur = model.state_dict() if isinstance(model, nn.Module) else model
    ref = reference.state_dict() if isinstance(reference, nn.Module) else reference
    num: dict[str, float] = {}
    den: dict[str, float] = {}
    shared = 0
    for name, w0 in ref.items():
        w = cur.get(name)
        if w is None or w.shape != w0.shape or not torch.is_floating_point(w0):
            continue
        shared += 1
        m = _BLOCK.search(name)
        block = f"layer {m.group(1)}" if m else ("embeddings" if "embeddings." in name
                                                   else "other")
        for key in ([block] if by_block else []) + ["total"]:
            num[key] = num.get(key, 0.0) + float((w.float() - w0.float()).pow(2).sum())
            den[key] = den.get(key, 0.0) + float(w0.float().pow(2).sum())
    if not shared:
        raise ValueError("the two models share no parameter names/shapes; compare the encoder "
                         "(model.base_model) with the pretrained encoder")
    return {k: (num[k] ** 0.5) / (den[k] ** 0.5 if den[k] else 1.0) for k in num}


def strip_prefix(state: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``bert.encoder...`` -> ``encoder...``: compare a task model with a bare ``BertModel``."""
    p = prefix.rstrip(".") + "."
    return {k[len(p):]: v for k, v in state.items() if k.startswith(p)}
