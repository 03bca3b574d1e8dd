r"""β-interpolation: :math:`W_T = \beta W_S + (1-\beta) W_T^0` for every mapped parameter.

The source article (§4.2) writes the target's new weights as a blend of the source's weights
``W_S`` and the target's own initial weights ``W_T^0``, and calls a ``model.replace_weights(beta)``
that no library has. This module makes it real:

* :func:`interpolate` blends ``source`` into ``target`` in place and returns a report of what was
  blended, what was projected and what could not be matched;
* :func:`add_replace_weights` gives any model a ``replace_weights(beta=...)`` method.

β = 1 copies the source exactly, β = 0 leaves the target untouched. A parameter whose shapes
differ is never silently skipped: pass a projection for it or it is listed in the report (and
``strict=True`` turns that into an error).
"""
from __future__ import annotations

import dataclasses
import types
from typing import Callable, Mapping, Optional

import torch
from torch import nn

Projection = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclasses.dataclass
class InterpolationReport:
    """What :func:`interpolate` did, parameter by parameter."""

    beta: float
    blended: list[str] = dataclasses.field(default_factory=list)
    projected: list[str] = dataclasses.field(default_factory=list)
    shape_mismatch: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)
    missing_in_source: list[str] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"beta={self.beta}: blended {len(self.blended)}, projected "
                 f"{len(self.projected)}, shape mismatch {len(self.shape_mismatch)}, "
                 f"no source {len(self.missing_in_source)}"]
        for name, t_shape, s_shape in self.shape_mismatch:
            lines.append(f"  shape mismatch: {name} target {t_shape} vs source {s_shape} "
                         "(pass projections={name: fn} or map it elsewhere)")
        return "\n".join(lines)


def check_beta(beta: float) -> float:
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1] (1 = copy the source, 0 = keep the target), "
                         f"got {beta}")
    return beta


def _state(obj: nn.Module | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


@torch.no_grad()
def interpolate(target: nn.Module, source: nn.Module | Mapping[str, torch.Tensor], beta: float,
                mapping: Optional[Mapping[str, str]] = None, *,
                initial: Optional[Mapping[str, torch.Tensor]] = None,
                projections: Optional[Mapping[str, Projection]] = None,
                strict: bool = False) -> InterpolationReport:
    r"""Set ``W_T = beta * W_S + (1 - beta) * W_T0`` in ``target`` (in place).

    ``mapping``: target parameter name -> source parameter name. By default every target
    parameter is matched to the source parameter of the same name, so a ``BertForSequenceClassification``
    blends its encoder with a fine-tuned or pretrained encoder and its new head stays its own.
    ``initial``: ``W_T0`` (default: the target's current weights); pass it to sweep β from one
    fixed starting point. ``projections``: name -> ``fn(source_tensor, target_tensor)`` that
    returns a tensor of the target's shape (e.g. slicing or a learned linear map).
    ``strict``: raise instead of reporting shape mismatches and unmatched names.
    """
    beta = check_beta(beta)
    src = _state(source)
    tgt = target.state_dict()
    init = initial if initial is not None else {k: v.clone() for k, v in tgt.items()}
    projections = dict(projections or {})
    if mapping is not None:
        if not mapping:
            raise ValueError("mapping is empty: give target_name -> source_name pairs, or None to "
                             "match equal names")
        unknown_t = [k for k in mapping if k not in tgt]
        unknown_s = [v for v in mapping.values() if v not in src]
        if unknown_t or unknown_s:
            raise KeyError(f"unknown parameter names in mapping: target {unknown_t[:3]}, "
                           f"source {unknown_s[:3]}; list names with model.state_dict().keys()")
        pairs = dict(mapping)
    else:
        pairs = {k: k for k in tgt if k in src}
        if not pairs:
            raise KeyError("no parameter names in common between target and source; pass "
                           "mapping={target_name: source_name} (see ktlab.transfer.layers)")
    unknown_p = [k for k in projections if k not in pairs]
    if unknown_p:
        raise KeyError(f"projections name parameters that are not mapped: {unknown_p[:3]}")
    report = InterpolationReport(beta=beta)
    report.missing_in_source = [k for k in tgt if k not in pairs and _is_float(tgt[k])]
    for t_name, s_name in pairs.items():
        w_t, w_s, w_0 = tgt[t_name], src[s_name], init[t_name]
        if not _is_float(w_t):
            continue  # integer buffers such as position_ids
        if t_name in projections:
            w_s = projections[t_name](w_s, w_t)
            if w_s.shape != w_t.shape:
                raise ValueError(f"the projection for {t_name} returned {tuple(w_s.shape)}, "
                                 f"the target needs {tuple(w_t.shape)}")
            report.projected.append(t_name)
        elif w_s.shape != w_t.shape:
            report.shape_mismatch.append((t_name, tuple(w_t.shape), tuple(w_s.shape)))
            continue
        w_t.copy_(beta * w_s.to(w_t) + (1.0 - beta) * w_0.to(w_t))
        report.blended.append(t_name)
    if strict and (report.shape_mismatch or (mapping is None and report.missing_in_source)):
        raise ValueError(f"strict interpolation could not match every parameter:\n{report}")
    return report


def _is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t)


def add_replace_weights(model: nn.Module, source: nn.Module | Mapping[str, torch.Tensor],
                        mapping: Optional[Mapping[str, str]] = None,
                        projections: Optional[Mapping[str, Projection]] = None) -> nn.Module:
    """Give ``model`` the article's ``replace_weights(beta)``.

    The model's weights at this moment become ``W_T0``; each call
    ``model.replace_weights(beta=b)`` sets ``W_T = b * W_S + (1 - b) * W_T0`` (always from the
    same ``W_T0``, so calls do not compound) and returns the :class:`InterpolationReport`.
    """
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    src = {k: v.detach().clone() for k, v in _state(source).items()}

    def replace_weights(self: nn.Module, beta: float = 0.5) -> InterpolationReport:
        return interpolate(self, src, beta, mapping, initial=initial, projections=projections)

    model.replace_weights = types.MethodType(replace_weights, model)
    return model


def slice_projection(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """A simple projection for a narrower target: keep the leading rows/columns of the source
    (as when a student's width is a prefix of the teacher's)."""
    if any(s < t for s, t in zip(source.shape, target.shape)) or source.ndim != target.ndim:
        raise ValueError(f"cannot slice {tuple(source.shape)} down to {tuple(target.shape)}")
    return source[tuple(slice(0, n) for n in target.shape)]
