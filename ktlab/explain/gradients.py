"""Integrated gradients (Sundararajan et al. 2017) on the word embeddings of a teacher or student.

For a model ``F`` (the logit of the class being explained) and the word embeddings ``x`` of a
sentence, with a baseline ``x'`` that carries no information,

    IG_i(x) = (x_i - x'_i) * integral_0^1 dF(x' + a (x - x')) / dx_i  da
            ~ (x_i - x'_i) * 1/m * sum_{k=1..m} dF(x' + k/m (x - x')) / dx_i   (right Riemann)

and a token's score is the sum over its embedding coordinates. The scores are *complete*: they
add up to ``F(x) - F(x')``; the gap (captum's convergence ``delta``) says whether ``m`` was enough.

Choices, and why:

- **Only the word embeddings move along the path.** Position and token-type embeddings are the
  same in ``x`` and ``x'``, so they get no attribution: we explain *which words* mattered.
- **The baseline is the sentence with every word replaced by [PAD]** (``baseline="pad"``, or
  ``"mask"`` for [MASK]), **keeping [CLS] and [SEP]** and the attention mask: the baseline is a
  sentence of the same length with no words in it, not an input the model never saw the shape of.
  [CLS]/[SEP] are therefore identical in ``x`` and ``x'`` and score exactly 0.
- **The target is the model's own prediction** unless ``targets`` are given, so each model is
  explained on the decision it actually made.

:func:`integrated_gradients` uses captum's ``LayerIntegratedGradients`` (right Riemann rule, to
match the formula); :func:`riemann_integrated_gradients` is the same computation in plain torch,
to read and to check captum against.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings
from typing import Any, Iterator, Optional, Sequence

import torch
from torch import nn

from ktlab.explain import _inputs

BASELINES = ("pad", "mask")


@dataclasses.dataclass
class TokenAttribution:
    """One sentence explained: a score per token (no padding) for the class ``target``."""

    tokens: list[str]
    ids: list[int]
    scores: list[float]
    target: int          #: the class whose logit is explained
    predicted: int       #: the model's prediction on the full sentence
    prob: float          #: the model's probability of ``predicted``
    delta: float         #: completeness gap: sum(scores) - (F(x) - F(baseline))
    #: True for [CLS]/[SEP]: kept in the baseline, never deleted, skipped by the comparisons
    special: list[bool] = dataclasses.field(default_factory=list)


def embedding_layer(model: nn.Module) -> nn.Module:
    """The token (word) embedding module of a teacher or a student.

    Not the whole ``BertEmbeddings`` block: that adds position and type embeddings, which would
    then be attributed too. HF models expose it as ``get_input_embeddings()``; ktlab's from-scratch
    BERT as ``embeddings.word_embeddings``; the BiLSTM/CNN students as ``embedding``."""
    for path in ("embedding", "embeddings.word_embeddings", "bert.embeddings.word_embeddings"):
        module: Any = model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.Module):
            return module
    getter = getattr(model, "get_input_embeddings", None)
    if getter is not None:
        return getter()
    raise TypeError(f"cannot find the word embeddings of a {type(model).__name__}: expected "
                    "get_input_embeddings(), .embedding or .embeddings.word_embeddings")


def baseline_ids(input_ids: torch.Tensor, tokenizer: Any, baseline: str = "pad") -> torch.Tensor:
    """The baseline sentence: every word replaced by [PAD] (or [MASK]), [CLS]/[SEP] and the
    padding kept, so it has the input's length and structure but no words."""
    if baseline not in BASELINES:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {BASELINES}")
    fill = _inputs.pad_id(tokenizer) if baseline == "pad" else tokenizer.mask_token_id
    keep = torch.zeros_like(input_ids, dtype=torch.bool)
    for special in _inputs.special_ids(tokenizer) | {_inputs.pad_id(tokenizer)}:
        keep |= input_ids == special
    return torch.where(keep, input_ids, torch.full_like(input_ids, fill))


def integrated_gradients(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                         targets: Optional[Sequence[int]] = None, n_steps: int = 50,
                         baseline: str = "pad", max_length: int = 64,
                         internal_batch_size: int = 64, batch_size: int = 8,
                         method: str = "riemann_right") -> list[TokenAttribution]:
    """Integrated gradients of every sentence with captum, towards ``targets`` (default: the
    model's own predictions). ``batch_size`` sentences are attributed together; captum runs
    their ``batch_size * n_steps`` path points ``internal_batch_size`` at a time."""
    from captum.attr import LayerIntegratedGradients

    def forward(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return _inputs.logits(model, input_ids, attention_mask)

    lig = LayerIntegratedGradients(forward, embedding_layer(model))
    out: list[TokenAttribution] = []
    with _inputs.eval_mode(model), _no_cudnn():
        for start, ids, mask, base, chosen, pred, prob in _batches(
                model, tokenizer, sentences, targets, baseline, max_length, batch_size):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # captum's notes on internal batching
                attr, delta = lig.attribute(ids, baselines=base, target=chosen.tolist(),
                                            additional_forward_args=(mask,), n_steps=n_steps,
                                            method=method, internal_batch_size=internal_batch_size,
                                            return_convergence_delta=True)
            out += _records(tokenizer, ids, mask, attr.sum(-1), chosen, pred, prob, delta)
    return out


def riemann_integrated_gradients(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
                                 targets: Optional[Sequence[int]] = None, n_steps: int = 50,
                                 baseline: str = "pad", max_length: int = 64
                                 ) -> list[TokenAttribution]:
    """The same attributions without captum: the right Riemann sum, one sentence at a time.

    All ``n_steps`` path points ``x' + k/m (x - x')`` go through the model as one batch; a hook
    on the embedding layer swaps its output for them, so the rest of the model (positions,
    attention, LSTM...) runs unchanged. Their gradients, averaged and multiplied by ``x - x'``,
    are the attributions."""
    layer = embedding_layer(model)
    alphas = torch.arange(1, n_steps + 1, dtype=torch.float32) / n_steps      # k/m, k = 1..m
    out: list[TokenAttribution] = []
    with _inputs.eval_mode(model), _no_cudnn():
        for i, ids, mask, base, chosen, pred, prob in _batches(
                model, tokenizer, sentences, targets, baseline, max_length, batch_size=1):
            with torch.no_grad():
                x, x0 = layer(ids), layer(base)                              # (1, T, E)
                f_x = _inputs.logits(model, ids, mask)[0, chosen[0]]
                f_x0 = _inputs.logits(model, base, mask)[0, chosen[0]]
            a = alphas.to(x.device).view(-1, 1, 1)
            points = (x0 + a * (x - x0)).requires_grad_(True)                # (m, T, E)
            with _replaced_output(layer, points):
                scores = _inputs.logits(model, ids.expand(n_steps, -1),
                                        mask.expand(n_steps, -1))[:, chosen[0]]
            (grads,) = torch.autograd.grad(scores.sum(), points)
            attr = (x - x0) * grads.mean(0, keepdim=True)                    # (1, T, E)
            delta = attr.sum() - (f_x - f_x0)
            out += _records(tokenizer, ids, mask, attr.sum(-1), chosen, pred, prob,
                            delta.detach().view(1))
    return out


# ----------------------------------------------------------------------------- helpers

def _batches(model: nn.Module, tokenizer: Any, sentences: Sequence[str],
             targets: Optional[Sequence[int]], baseline: str, max_length: int,
             batch_size: int) -> Iterator[tuple]:
    """Per batch of sentences: start index, ids, mask, baseline ids, the explained classes, the
    predictions and the probability of each prediction."""
    if targets is not None and len(targets) != len(sentences):
        raise ValueError(f"{len(targets)} targets for {len(sentences)} sentences")
    encoded = _inputs.encode(tokenizer, sentences, max_length)
    device = _inputs.device_of(model)
    for start in range(0, len(encoded), batch_size):
        ids, mask = _inputs.pad(encoded[start:start + batch_size], _inputs.pad_id(tokenizer),
                                device)
        with torch.no_grad():
            probs = torch.softmax(_inputs.logits(model, ids, mask).float(), dim=-1)
        prob, pred = probs.max(-1)
        chosen = pred if targets is None else torch.as_tensor(
            list(targets[start:start + batch_size]), device=device)
        yield start, ids, mask, baseline_ids(ids, tokenizer, baseline), chosen, pred, prob


def _records(tokenizer: Any, ids: torch.Tensor, mask: torch.Tensor, scores: torch.Tensor,
             chosen: torch.Tensor, pred: torch.Tensor, prob: torch.Tensor,
             delta: torch.Tensor) -> list[TokenAttribution]:
    """One :class:`TokenAttribution` per row, padding cut off."""
    specials = _inputs.special_ids(tokenizer)
    out = []
    for row in range(ids.shape[0]):
        n = int(mask[row].sum())
        row_ids = ids[row, :n].tolist()
        out.append(TokenAttribution(
            tokens=tokenizer.convert_ids_to_tokens(row_ids), ids=row_ids,
            scores=scores[row, :n].detach().double().cpu().tolist(),
            target=int(chosen[row]), predicted=int(pred[row]), prob=float(prob[row]),
            delta=float(delta[row]), special=[i in specials for i in row_ids]))
    return out


@contextlib.contextmanager
def _replaced_output(layer: nn.Module, value: torch.Tensor) -> Iterator[None]:
    """While active, ``layer`` returns ``value`` (a forward hook's return replaces the output)."""
    handle = layer.register_forward_hook(lambda module, inputs, output: value)
    try:
        yield
    finally:
        handle.remove()


def _no_cudnn() -> Any:
    """cuDNN's LSTM has no backward in eval mode; the plain kernels do (a no-op on CPU)."""
    return torch.backends.cudnn.flags(enabled=False)
