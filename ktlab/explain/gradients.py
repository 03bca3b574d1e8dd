"""Integrated gradients (Sundararajan et al. 2017) on the word embeddings.

For input embeddings ``x`` and a baseline ``x'`` (here: the embeddings of ``[PAD]`` in every
word position, ``[CLS]``/``[SEP]`` kept), token ``i``'s attribution towards class ``c`` is

    IG_i = (x_i - x'_i) · ∫₀¹ ∂f_c(x' + α(x - x')) / ∂x_i dα        (summed over the embedding)

approximated with ``n_steps`` points (captum: Gauss-Legendre; :func:`riemann_integrated_gradients`:
the right Riemann sum, the textbook version). *Completeness*: the attributions add up to
``f_c(x) - f_c(x')``; ``delta`` is how far the approximation misses it.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import torch
from torch import nn

from ktlab.explain._inputs import encode, eval_mode, logits, pad, pad_id, special_ids


@dataclasses.dataclass
class TokenAttribution:
    """One sentence's attributions: a score per (sub-)token, towards class ``target``."""

    tokens: list[str]
    ids: list[int]
    scores: list[float]
    target: int
    predicted: int
    prob: float          #: the model's probability of ``predicted``
    delta: float         #: completeness gap: sum(scores) - (f(x) - f(baseline))


def embedding_layer(model: nn.Module) -> nn.Module:
    """The word-embedding module (only word vectors are attributed, not positions)."""
    from ktlab.robustness import word_embedding_module
    return word_embedding_module(model)


def _baseline(ids: torch.Tensor, tokenizer: Any, baseline: str) -> torch.Tensor:
    if baseline not in ("pad", "mask"):
        raise ValueError(f"baseline must be 'pad' or 'mask', got {baseline!r}")
    fill = pad_id(tokenizer) if baseline == "pad" else tokenizer.mask_token_id
    keep = torch.zeros_like(ids, dtype=torch.bool)
    for s in special_ids(tokenizer):
        keep |= ids == s
    return torch.where(keep, ids, torch.full_like(ids, fill))


def integrated_gradients(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                         targets: Optional[Sequence[int]] = None, n_steps: int = 50,
                         baseline: str = "pad", max_length: int = 64,
                         internal_batch_size: int = 64) -> list[TokenAttribution]:
    """IG of each sentence towards ``targets`` (default: the model's own prediction), with
    captum's ``LayerIntegratedGradients`` on :func:`embedding_layer`. One sentence at a time,
    so no padding enters the integral."""
    from captum.attr import LayerIntegratedGradients
    out = []
    with eval_mode(model):
        for i, row in enumerate(encode(tokenizer, sentences, max_length)):
            ids, mask = pad([row], pad_id(tokenizer))
            base = _baseline(ids, tokenizer, baseline)
            with torch.no_grad():
                probs = torch.softmax(logits(model, ids, mask).float(), -1)[0]
            predicted = int(probs.argmax())
            target = predicted if targets is None else int(targets[i])

            def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
                return logits(model, input_ids, attention_mask)
            lig = LayerIntegratedGradients(forward, embedding_layer(model))
            attr, delta = lig.attribute(ids, baselines=base, target=target,
                                        additional_forward_args=(mask,), n_steps=n_steps,
                                        internal_batch_size=internal_batch_size,
                                        return_convergence_delta=True)
            scores = attr.sum(-1)[0].detach()
            out.append(TokenAttribution(tokenizer.convert_ids_to_tokens(row), list(row),
                                        scores.tolist(), target, predicted,
                                        float(probs[predicted]), float(delta.abs().max())))
    return out


def riemann_integrated_gradients(model: nn.Module, tokenizer: Any, sentence: str,
                                 target: Optional[int] = None, n_steps: int = 50,
                                 baseline: str = "pad", max_length: int = 64) -> TokenAttribution:
    """The same attribution in plain torch, as a right Riemann sum over α = k/n, k = 1..n: the
    formula of the module docstring, step by step (exercise ``09.ig_riemann`` checks yours)."""
    layer = embedding_layer(model)
    with eval_mode(model):
        row = encode(tokenizer, [sentence], max_length)[0]
        ids, mask = pad([row], pad_id(tokenizer))
        with torch.no_grad():
            x = layer(ids)
            x0 = layer(_baseline(ids, tokenizer, baseline))
            probs = torch.softmax(logits(model, ids, mask).float(), -1)[0]
        predicted = int(probs.argmax())
        target = predicted if target is None else target
        alphas = torch.arange(1, n_steps + 1, dtype=x.dtype) / n_steps
        path = (x0 + alphas[:, None, None] * (x - x0)).requires_grad_(True)   # (n, T, E)
        state = {"path": path}
        handle = layer.register_forward_hook(lambda _m, _i, _o: state["path"])
        try:
            f = logits(model, ids.expand(n_steps, -1), mask.expand(n_steps, -1))[:, target]
        finally:
            handle.remove()
        (grads,) = torch.autograd.grad(f.sum(), path)
        scores = ((x - x0)[0] * grads.mean(0)).sum(-1)
        with torch.no_grad():
            handle = layer.register_forward_hook(lambda _m, _i, _o: x0)
            try:
                f0 = logits(model, ids, mask)[0, target]
            finally:
                handle.remove()
            f1 = logits(model, ids, mask)[0, target]
    return TokenAttribution(tokenizer.convert_ids_to_tokens(row), list(row), scores.tolist(),
                            target, predicted, float(probs[predicted]),
                            float(scores.sum() - (f1 - f0)))
