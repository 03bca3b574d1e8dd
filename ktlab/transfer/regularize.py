"""Staying close to the source while fine-tuning: L2-SP, Mixout and WiSE-FT.

* :func:`l2sp_penalty` - Li et al. 2018: ``alpha/2 ||w - w0||^2`` on the transferred weights
  (pulls them toward the pretrained *starting point*, not toward 0 like weight decay) plus
  ``beta/2 ||w||^2`` on the new head.
* :class:`MixoutLinear`, :func:`apply_mixout` - Lee et al. 2020: during training each weight is
  replaced by its pretrained value with probability p (rescaled so the expectation is unchanged).
* :func:`wise_ft`, :func:`wise_ft_sweep` - Wortsman et al. 2022: average pretrained and fine-tuned
  weights, ``W = beta W_ft + (1 - beta) W_pre``, and pick beta on dev data.
"""
from __future__ import annotations

from typing import Callable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ktlab.transfer.freeze import is_head
from ktlab.transfer.interpolate import check_beta, interpolate


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the parameters: the ``w0`` that L2-SP and Mixout pull toward."""
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def l2sp_penalty(model: nn.Module, reference: Mapping[str, torch.Tensor], alpha: float = 0.01,
                 beta: float = 0.01) -> torch.Tensor:
    """``alpha/2 * sum ||w - w0||^2`` over parameters present in ``reference`` (with equal
    shape) + ``beta/2 * sum ||w||^2`` over the others (the new head). Add it to the loss and
    set the optimiser's weight decay to 0 for the same effect as the paper."""
    if alpha < 0 or beta < 0:
        raise ValueError(f"alpha and beta must be >= 0, got {alpha}, {beta}")
    if not reference:
        raise ValueError("reference is empty: pass snapshot(model) taken before fine-tuning")
    to_source, to_zero = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        ref = reference.get(name)
        if ref is not None and ref.shape == p.shape:
            to_source.append((p - ref.to(p)).pow(2).sum())
        else:
            to_zero.append(p.pow(2).sum())
    zero = next(model.parameters()).new_zeros(())
    return (alpha / 2 * (sum(to_source) if to_source else zero)
            + beta / 2 * (sum(to_zero) if to_zero else zero))


def with_l2sp(loss_fn: Callable, reference: Mapping[str, torch.Tensor], alpha: float = 0.01,
              beta: float = 0.01) -> Callable:
    """Wrap a Trainer ``loss_fn(model, batch)`` so that it adds the L2-SP penalty."""
    def wrapped(model: nn.Module, batch: dict) -> torch.Tensor:
        inner = getattr(model, "module", model)
        return loss_fn(model, batch) + l2sp_penalty(inner, reference, alpha, beta)
    return wrapped


def mixout(weight: torch.Tensor, target: torch.Tensor, p: float, training: bool = True
           ) -> torch.Tensor:
    """``(1/(1-p)) * ((1-M) * w + M * u - p * u)`` with ``M ~ Bernoulli(p)``: E[result] = w.
    With ``target = 0`` this is exactly (inverted) dropout on the weights."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"mixout probability must lie in [0, 1), got {p}")
    if weight.shape != target.shape:
        raise ValueError(f"weight {tuple(weight.shape)} and target {tuple(target.shape)} differ")
    if not training or p == 0.0:
        return weight
    mask = torch.empty_like(weight).bernoulli_(p)
    return ((1 - mask) * weight + mask * target - p * target) / (1 - p)


class MixoutLinear(nn.Module):
    """A Linear layer whose weight is mixed with its pretrained value during training."""

    def __init__(self, linear: nn.Linear, p: float) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"mixout probability must lie in [0, 1), got {p}")
        self.linear, self.p = linear, p
        self.register_buffer("target", linear.weight.detach().clone(), persistent=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.linear.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, mixout(self.linear.weight, self.target, self.p, self.training),
                        self.linear.bias)


def apply_mixout(model: nn.Module, p: float = 0.1, skip_head: bool = True) -> list[str]:
    """Replace every ``nn.Linear`` (except the task head) with :class:`MixoutLinear` toward its
    current (pretrained) weights. Returns the replaced module names. State-dict keys gain a
    ``.linear`` level."""
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and not (skip_head and is_head(full)):
                setattr(module, child_name, MixoutLinear(child, p))
                replaced.append(full)
    if not replaced:
        raise ValueError("no nn.Linear modules to wrap with mixout")
    return replaced


def _with_head(pretrained: Mapping[str, torch.Tensor], finetuned: Mapping[str, torch.Tensor]
               ) -> dict[str, torch.Tensor]:
    """Pretrained weights, completed with the fine-tuned values for what the pretrained
    checkpoint lacks (the new head): WiSE-FT then blends only the transferred weights."""
    out = {k: v for k, v in finetuned.items()}
    for k, v in pretrained.items():
        if k in out and out[k].shape == v.shape:
            out[k] = v
    return out


@torch.no_grad()
def wise_ft(model: nn.Module, pretrained: Mapping[str, torch.Tensor],
            finetuned: Mapping[str, torch.Tensor], beta: float) -> nn.Module:
    """Load ``beta * finetuned + (1 - beta) * pretrained`` into ``model`` (the head, which the
    pretrained checkpoint lacks, is taken from the fine-tuned weights)."""
    beta = check_beta(beta)
    start = _with_head(pretrained, finetuned)
    model.load_state_dict(start, strict=False)
    interpolate(model, finetuned, beta, initial=start)
    return model


def wise_ft_sweep(model: nn.Module, pretrained: Mapping[str, torch.Tensor],
                  finetuned: Mapping[str, torch.Tensor], betas: Sequence[float],
                  evaluate: Callable[[nn.Module], dict]) -> list[dict]:
    """Evaluate ``model`` at each beta; returns ``[{"beta": b, **metrics}, ...]`` and leaves the
    model at the fine-tuned weights (beta = 1) afterwards."""
    if not betas:
        raise ValueError("betas is empty: give e.g. [0, 0.25, 0.5, 0.75, 1]")
    rows = []
    for beta in betas:
        wise_ft(model, pretrained, finetuned, beta)
        rows.append({"beta": float(beta), **evaluate(model)})
    wise_ft(model, pretrained, finetuned, 1.0)
    return rows


def state_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of the full state dict (for WiSE-FT endpoints)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


