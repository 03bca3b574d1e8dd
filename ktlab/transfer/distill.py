"""Knowledge distillation: losses that make a student imitate a teacher.

* :func:`kd_loss` - Hinton et al. 2015: KL between teacher and student distributions softened by
  a temperature T, multiplied by T**2 so its gradients keep their size as T grows.
* :func:`logit_mse` - Tang et al. 2019 ("Distilling task-specific knowledge from BERT into simple
  neural networks"): mean squared error between raw logits.
* :func:`hard_soft_loss` - the usual mix of the label loss and the distillation loss.
* :func:`hidden_mse`, :func:`attention_kl`, :func:`cosine_embedding` - intermediate-layer losses
  (TinyBERT, MiniLM, DistilBERT).
* :class:`TeacherCache` - run the teacher once per example, not once per student epoch.
* :class:`Distiller` - a loss configured by a list of matches
  ``{teacher_layer, student_layer, feature, loss, weight}`` (the TextBrewer idea).

Every logit loss accepts sequence-level logits ``[B, C]`` and token-level logits ``[B, L, C]``;
for the latter pass ``labels`` ``[B, L]`` (positions labelled -100 are ignored) or a boolean
``mask`` ``[B, L]``.
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------- logit losses

def _check_pair(student: torch.Tensor, teacher: torch.Tensor, what: str = "logits") -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"student {what} {tuple(student.shape)} and teacher {what} "
                         f"{tuple(teacher.shape)} differ in shape; both models must predict the "
                         "same label set over the same (padded) positions")


def _select(student: torch.Tensor, teacher: torch.Tensor, labels: Optional[torch.Tensor],
            mask: Optional[torch.Tensor], ignore_index: int
            ) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Flatten to ``[N, C]`` rows and keep the rows that count (labels != ignore_index & mask)."""
    _check_pair(student, teacher)
    lead = student.shape[:-1]
    keep = torch.ones(lead, dtype=torch.bool, device=student.device)
    if labels is not None:
        if labels.shape != lead:
            raise ValueError(f"labels {tuple(labels.shape)} do not match logits "
                             f"{tuple(student.shape)}: expected labels of shape {tuple(lead)}")
        keep &= labels != ignore_index
    if mask is not None:
        if mask.shape != lead:
            raise ValueError(f"mask {tuple(mask.shape)} does not match logits {tuple(lead)}")
        keep &= mask.bool()
    flat_labels = labels.reshape(-1)[keep.reshape(-1)] if labels is not None else None
    c = student.shape[-1]
    return (student.reshape(-1, c)[keep.reshape(-1)], teacher.reshape(-1, c)[keep.reshape(-1)],
            flat_labels)


def soften(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """softmax(z / T): T > 1 spreads probability over the 'dark knowledge' of wrong classes."""
    _check_temperature(temperature)
    return F.softmax(logits / temperature, dim=-1)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
            temperature: float = 2.0, *, labels: Optional[torch.Tensor] = None,
            mask: Optional[torch.Tensor] = None, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""Soft-target distillation loss :math:`T^2\,\mathrm{KL}(p_T^{(T)} \,\|\, p_S^{(T)})`.

    Averaged over examples (or over the kept token positions). Why ``T**2``: the gradient of the
    softened KL w.r.t. the student logits is ``(p_S - p_T) / T`` and for large T that difference
    itself shrinks like ``1/T``, so without the factor the soft term would vanish as T grows
    (Hinton et al. 2015, section 2). ``labels``/``mask`` only select positions; the labels'
    values are not used here. The teacher is treated as a constant (no gradient flows to it).
    """
    _check_temperature(temperature)
    s, t, _ = _select(student_logits, teacher_logits, labels, mask, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_p_s = F.log_softmax(s.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(t.detach().float() / temperature, dim=-1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature ** 2


def logit_mse(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *,
              labels: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None,
              ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean squared error between raw logits (Tang et al. 2019), averaged over kept positions
    and classes. Matching logits rather than probabilities keeps the teacher's scale."""
    s, t, _ = _select(student_logits, teacher_logits, labels, mask, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.mse_loss(s.float(), t.detach().float())


def hard_soft_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor, alpha: float = 0.5, temperature: float = 2.0, *,
                   soft: str = "kl", ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    r"""``alpha * soft + (1 - alpha) * hard``.

    ``alpha`` is the weight of the *soft* (teacher) term: ``alpha=1`` is pure distillation,
    ``alpha=0`` ordinary training on the labels. ``soft="kl"`` uses :func:`kd_loss` at
    ``temperature``; ``soft="mse"`` uses :func:`logit_mse` (temperature unused). The hard term is
    cross-entropy with ``ignore_index`` (token-level labels -100 are skipped by both terms).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if soft not in ("kl", "mse"):
        raise ValueError(f"soft must be 'kl' or 'mse', got {soft!r}")
    s, t, flat_labels = _select(student_logits, teacher_logits, labels, None, ignore_index)
    if s.shape[0] == 0:
        return student_logits.sum() * 0.0
    hard = F.cross_entropy(s.float(), flat_labels.long())
    soft_term = kd_loss(s, t, temperature) if soft == "kl" else logit_mse(s, t)
    return alpha * soft_term + (1.0 - alpha) * hard
