"""Freezing: which of the teacher's parameters a fine-tuning run may change.

Freezing trades accuracy for speed and protection against forgetting (the article's §9 FAQ):
lower layers hold general features (the embeddings, syntax), upper layers task-specific ones.

* :func:`freeze_embeddings`, :func:`freeze_bottom_k`, :func:`freeze_all_but_head`, :func:`unfreeze_all`
* :class:`GradualUnfreezing` - ULMFiT's schedule: unfreeze one more layer from the top per epoch
* :func:`layerwise_lr_groups` - layer-wise learning-rate decay (lower layers learn slower)
* :func:`trainable_report` - what is trainable, per block
"""
from __future__ import annotations

import re
from typing import Iterable, Optional, Sequence

from torch import nn

_LAYER_IDX = re.compile(r"\blayer\.(\d+)\.")
#: The new task head (what a linear probe or PEFT method trains besides its own parameters).
TASK_HEAD = ("classifier", "cls.", "qa_outputs", "score")
#: Blocks that sit above the encoder layers (the pooler feeds BERT's sequence classifier), for
#: depth-based schedules (gradual unfreezing, layer-wise LR decay).
HEAD_PATTERNS = TASK_HEAD + ("pooler",)


def _layer_of(name: str) -> Optional[int]:
    m = _LAYER_IDX.search(name)
    return int(m.group(1)) if m else None


def _n_layers(model: nn.Module) -> int:
    idx = {i for n, _ in model.named_parameters() if (i := _layer_of(n)) is not None}
    if not idx:
        raise ValueError(f"{type(model).__name__} has no '...layer.<i>...' parameters; "
                         "layer freezing needs a BERT-style encoder")
    return max(idx) + 1


def _set(model: nn.Module, names: Iterable[str], flag: bool) -> int:
    names = set(names)
    n = 0
    for name, p in model.named_parameters():
        if name in names:
            p.requires_grad_(flag)
            n += p.numel()
    return n


def is_head(name: str, head_patterns: Sequence[str] = HEAD_PATTERNS) -> bool:
    return any(name.startswith(h) or f".{h}" in name for h in head_patterns)


def unfreeze_all(model: nn.Module) -> nn.Module:
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def freeze_embeddings(model: nn.Module) -> int:
    """Freeze the token/position/type embeddings (and their LayerNorm). Returns #params frozen."""
    names = [n for n, _ in model.named_parameters() if "embeddings." in n]
    if not names:
        raise ValueError(f"{type(model).__name__} has no parameters named '...embeddings...'")
    return _set(model, names, False)


def freeze_bottom_k(model: nn.Module, k: int, include_embeddings: bool = True) -> int:
    """Freeze encoder layers ``0 .. k-1`` (and the embeddings, which sit below them).
    ``k = 0`` freezes only the embeddings (if asked); ``k`` may not exceed the layer count."""
    n_layers = _n_layers(model)
    if not 0 <= k <= n_layers:
        raise ValueError(f"k={k} is out of range: the model has {n_layers} layers (0..{n_layers})")
    names = [n for n, _ in model.named_parameters()
             if ((i := _layer_of(n)) is not None and i < k and not is_head(n))
             or (include_embeddings and "embeddings." in n)]
    return _set(model, names, False)


def freeze_all_but_head(model: nn.Module, head_patterns: Sequence[str] = TASK_HEAD) -> int:
    """Freeze everything except the task head: a linear probe of the teacher's features."""
    head = [n for n, _ in model.named_parameters() if is_head(n, head_patterns)]
    if not head:
        raise ValueError(f"no head parameters matching {head_patterns} in "
                         f"{type(model).__name__}; pass head_patterns=")
    body = [n for n, _ in model.named_parameters() if n not in set(head)]
    _set(model, head, True)
    return _set(model, body, False)


class GradualUnfreezing:
    """ULMFiT (Howard & Ruder 2018): start with only the head trainable, then unfreeze one more
    layer from the top each epoch (embeddings last).

    ``schedule.apply(epoch)`` sets ``requires_grad`` for that epoch and returns the unfrozen
    layer indices. Build the optimiser over *all* parameters (frozen ones get no gradient, and
    AdamW skips parameters whose ``.grad`` is None)."""

    def __init__(self, model: nn.Module, layers_per_epoch: int = 1) -> None:
        if layers_per_epoch < 1:
            raise ValueError(f"layers_per_epoch must be >= 1, got {layers_per_epoch}")
        self.model, self.step = model, layers_per_epoch
        self.n_layers = _n_layers(model)

    def unfrozen_layers(self, epoch: int) -> list[int]:
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        k = min(epoch * self.step, self.n_layers)
        return list(range(self.n_layers - k, self.n_layers))

    def apply(self, epoch: int) -> list[int]:
        layers = set(self.unfrozen_layers(epoch))
        all_open = len(layers) == self.n_layers and epoch * self.step > self.n_layers
        for name, p in self.model.named_parameters():
            i = _layer_of(name)
            if is_head(name):
                p.requires_grad_(True)
            elif i is not None:
                p.requires_grad_(i in layers)
            else:  # embeddings: unfrozen one epoch after the bottom layer
                p.requires_grad_(all_open)
        return sorted(layers)


def layerwise_lr_groups(model: nn.Module, lr: float, decay: float = 0.9,
                        weight_decay: float = 0.01) -> list[dict]:
    """Parameter groups with ``lr * decay**(depth from the top)``: the head gets ``lr``, the top
    layer ``lr * decay``, ..., the embeddings the smallest rate (Clark et al. 2020, ELECTRA).
    Biases and LayerNorm weights get no weight decay. Frozen parameters are left out."""
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay must lie in (0, 1], got {decay}")
    n_layers = _n_layers(model)
    groups: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        i = _layer_of(name)
        if is_head(name):
            depth = 0
        elif i is not None:
            depth = n_layers - i
        else:  # embeddings
            depth = n_layers + 1
        wd = 0.0 if (p.ndim == 1 or "LayerNorm" in name or name.endswith("bias")) else weight_decay
        groups.setdefault((lr * decay ** depth, wd), []).append(p)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd}
            for (g_lr, wd), ps in sorted(groups.items(), key=lambda kv: -kv[0][0])]


def trainable_report(model: nn.Module) -> list[dict]:
    """One row per block (embeddings, layer i, head, other) with total/trainable counts; the
    last row is the total. Print it with ``pandas.DataFrame(rows)``."""
    blocks: dict[str, dict] = {}
    for name, p in model.named_parameters():
        i = _layer_of(name)
        block = ("head" if is_head(name) else f"layer {i}" if i is not None
                 else "embeddings" if "embeddings." in name else "other")
        row = blocks.setdefault(block, {"block": block, "total": 0, "trainable": 0})
        row["total"] += p.numel()
        row["trainable"] += p.numel() if p.requires_grad else 0
    rows = list(blocks.values())
    total = {"block": "TOTAL", "total": sum(r["total"] for r in rows),
             "trainable": sum(r["trainable"] for r in rows)}
    rows.append(total)
    for r in rows:
        r["trainable_%"] = round(100 * r["trainable"] / r["total"], 2) if r["total"] else 0.0
    return rows
