"""Moving knowledge across structure differences: layer maps, shallower students, width projections.

A *layer map* says which teacher layer feeds which student layer (layers counted from 0):

* :func:`uniform_map` - every k-th teacher layer (DistilBERT took every second of BERT's 12);
* :func:`last_k_map` - the top k teacher layers;
* :func:`custom_map` - any dict, validated.

:func:`init_student_from_teacher` copies the embeddings and the mapped layers into a shallower
student of the same width (DistilBERT's initialisation). :func:`layer_mapping` turns a layer map into
parameter-name pairs for :func:`ktlab.transfer.interpolate.interpolate`. When widths differ,
:class:`WidthProjection` is the learned linear map used by hidden-state distillation.
"""
from __future__ import annotations

import re
from typing import Mapping, Optional

import torch
from torch import nn

_LAYER = re.compile(r"^(?P<pre>.*?\blayer\.)(?P<idx>\d+)\.(?P<rest>.+)$")


def _check_counts(n_teacher: int, n_student: int) -> None:
    if n_teacher < 1 or n_student < 1:
        raise ValueError(f"layer counts must be >= 1, got teacher {n_teacher}, student {n_student}")
    if n_student > n_teacher:
        raise ValueError(f"the student has more layers ({n_student}) than the teacher "
                         f"({n_teacher}); give a custom_map that reuses teacher layers")


def uniform_map(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student layer i <- teacher layer ``(i + 1) * k - 1`` with ``k = n_teacher / n_student``:
    evenly spaced, ending at the top layer (6 -> 3 gives {0: 1, 1: 3, 2: 5})."""
    _check_counts(n_teacher, n_student)
    step = n_teacher / n_student
    return {i: int(round((i + 1) * step)) - 1 for i in range(n_student)}


def last_k_map(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student layer i <- teacher layer ``n_teacher - n_student + i`` (the top layers)."""
    _check_counts(n_teacher, n_student)
    return {i: n_teacher - n_student + i for i in range(n_student)}


def first_k_map(n_teacher: int, n_student: int) -> dict[int, int]:
    """Student layer i <- teacher layer i (the bottom layers; closest to the embeddings)."""
    _check_counts(n_teacher, n_student)
    return {i: i for i in range(n_student)}


def custom_map(mapping: Mapping[int, int], n_teacher: int, n_student: int) -> dict[int, int]:
    """Validate a hand-written ``{student_layer: teacher_layer}`` dict."""
    if not mapping:
        raise ValueError("the layer map is empty: give {student_layer: teacher_layer} pairs")
    bad = {s: t for s, t in mapping.items()
           if not (0 <= int(s) < n_student and 0 <= int(t) < n_teacher)}
    if bad:
        raise IndexError(f"layer map {bad} is out of range: student layers 0..{n_student - 1}, "
                         f"teacher layers 0..{n_teacher - 1}")
    return {int(s): int(t) for s, t in mapping.items()}


LAYER_MAPS = {"uniform": uniform_map, "last": last_k_map, "first": first_k_map}


def make_layer_map(strategy: str | Mapping[int, int], n_teacher: int,
                   n_student: int) -> dict[int, int]:
    """``"uniform"``, ``"last"``, ``"first"`` or a dict (validated)."""
    if isinstance(strategy, Mapping):
        return custom_map(strategy, n_teacher, n_student)
    if strategy not in LAYER_MAPS:
        raise ValueError(f"unknown layer-map strategy {strategy!r}; choose one of "
                         f"{sorted(LAYER_MAPS)} or pass a dict")
    return LAYER_MAPS[strategy](n_teacher, n_student)


def num_layers(model: nn.Module) -> int:
    """Transformer layers of a HF-style model (from its parameter names)."""
    indices = {int(m["idx"]) for n, _ in model.named_parameters() if (m := _LAYER.match(n))}
    if not indices:
        raise ValueError(f"{type(model).__name__} has no parameters named '...layer.<i>...'; "
                         "layer maps need a BERT-style encoder")
    return max(indices) + 1


def _base_state(model: nn.Module) -> dict[str, str]:
    """Relative name (inside the base model, e.g. ``encoder.layer.0...``) -> full name."""
    prefix = getattr(model, "base_model_prefix", "")
    out = {}
    for name in model.state_dict():
        rel = name[len(prefix) + 1:] if prefix and name.startswith(prefix + ".") else name
        out[rel] = name
    return out


def layer_mapping(student: nn.Module, teacher: nn.Module, layer_map: Mapping[int, int],
                  include_embeddings: bool = True) -> dict[str, str]:
    """Student parameter name -> teacher parameter name for the embeddings and mapped layers
    (heads are never mapped; task heads belong to the student). Works across model classes
    (``BertModel`` teacher, ``BertForSequenceClassification`` student)."""
    if not layer_map:
        raise ValueError("the layer map is empty: give {student_layer: teacher_layer} pairs")
    s_names, t_names = _base_state(student), _base_state(teacher)
    n_s, n_t = num_layers(student), num_layers(teacher)
    custom_map(layer_map, n_t, n_s)
    pairs: dict[str, str] = {}
    for rel, full in s_names.items():
        m = _LAYER.match(rel)
        if m:
            s_idx = int(m["idx"])
            if s_idx not in layer_map:
                continue
            t_rel = f"{m['pre']}{layer_map[s_idx]}.{m['rest']}"
        elif include_embeddings and rel.startswith("embeddings."):
            t_rel = rel
        else:
            continue
        if t_rel not in t_names:
            raise KeyError(f"the teacher has no parameter {t_rel!r} for student {full!r}; are "
                           "both BERT-style models?")
        pairs[full] = t_names[t_rel]
    return pairs


@torch.no_grad()
def init_student_from_teacher(student: nn.Module, teacher: nn.Module,
                              layer_map: str | Mapping[int, int] = "uniform",
                              include_embeddings: bool = True) -> dict[int, int]:
    """Copy the teacher's embeddings and chosen layers into a shallower student of the same
    width (Sanh et al. 2019 initialised DistilBERT from every other BERT layer). Returns the
    layer map used. Width mismatches raise: use distillation with :class:`WidthProjection`."""
    n_s, n_t = num_layers(student), num_layers(teacher)
    layer_map = make_layer_map(layer_map, n_t, n_s)
    pairs = layer_mapping(student, teacher, layer_map, include_embeddings)
    s_state, t_state = student.state_dict(), teacher.state_dict()
    wrong = [(s, tuple(s_state[s].shape), tuple(t_state[t].shape)) for s, t in pairs.items()
             if s_state[s].shape != t_state[t].shape]
    if wrong:
        name, s_shape, t_shape = wrong[0]
        raise ValueError(f"{len(wrong)} parameters differ in shape, e.g. {name}: student "
                         f"{s_shape} vs teacher {t_shape}. Copying needs equal widths; for a "
                         "narrower student distil through WidthProjection instead")
    for s_name, t_name in pairs.items():
        s_state[s_name].copy_(t_state[t_name])
    return layer_map


class WidthProjection(nn.Module):
    """A learned linear map from the student's hidden width to the teacher's (TinyBERT's W_h),
    so ``hidden_mse(proj(h_S), h_T)`` is defined when ``d_S != d_T``."""

    def __init__(self, student_dim: int, teacher_dim: int, bias: bool = True,
                 init_identity: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(student_dim, teacher_dim, bias=bias)
        if init_identity:
            with torch.no_grad():
                self.linear.weight.zero_()
                n = min(student_dim, teacher_dim)
                self.linear.weight[:n, :n] = torch.eye(n)
                if bias:
                    self.linear.bias.zero_()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.linear(hidden)


def projections_for(student_dim: int, teacher_dim: int, n: int) -> Optional[nn.ModuleList]:
    """``n`` projections (one per matched layer), or ``None`` when the widths agree."""
    if student_dim == teacher_dim:
        return None
    return nn.ModuleList(WidthProjection(student_dim, teacher_dim) for _ in range(n))
