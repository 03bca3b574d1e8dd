"""Parameter-efficient fine-tuning, written by hand so every line can be read.

* **LoRA** (Hu et al. 2021): keep ``W`` frozen and learn a low-rank update
  ``W + (alpha / r) * B @ A`` with ``A: r x in``, ``B: out x r`` (B starts at 0, so training starts
  from the pretrained function). ``merge()`` folds ``B @ A`` into ``W`` for inference at no extra
  cost; ``unmerge()`` takes it out again.
* **Houlsby adapters** (Houlsby et al. 2019): a bottleneck ``x + up(gelu(down(x)))`` after the
  attention output and the feed-forward output of every layer.
* **BitFit** (Ben Zaken et al. 2022): train only the biases.

Each ``apply_*`` freezes the rest of the model (the task head stays trainable) and returns the
names of what it changed; :func:`ktlab.transfer.freeze.trainable_report` counts the result.
"""
from __future__ import annotations

import math
import re
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ktlab.transfer.freeze import TASK_HEAD, is_head


class LoRALinear(nn.Module):
    """``y = x W^T + b + (alpha / r) * dropout(x) A^T B^T`` around a frozen ``nn.Linear``."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps nn.Linear, got {type(base).__name__}")
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        if r > min(base.in_features, base.out_features):
            raise ValueError(f"rank {r} exceeds min(in, out) = "
                             f"{min(base.in_features, base.out_features)}: no parameters saved")
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear (and peft)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        for p in base.parameters():
            p.requires_grad_(False)

    @property
    def weight(self) -> torch.Tensor:
        return self.base.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.base.bias

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:
            return out
        return out + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into ``W``: inference then costs exactly the original layer."""
        if not self.merged:
            self.base.weight += self.delta_weight().to(self.base.weight)
            self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        if self.merged:
            self.base.weight -= self.delta_weight().to(self.base.weight)
            self.merged = False

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _matches(name: str, targets: Sequence[str]) -> bool:
    return any(name == t or name.endswith("." + t) for t in targets)


def _freeze_all_but_head(model: nn.Module) -> None:
    for name, p in model.named_parameters():
        p.requires_grad_(is_head(name, TASK_HEAD))


def apply_lora(model: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0,
               target_modules: Sequence[str] = ("query", "value")) -> list[str]:
    """Wrap every ``nn.Linear`` whose name ends with one of ``target_modules`` (BERT:
    ``query``, ``key``, ``value``, ``attention.output.dense``, ``intermediate.dense``...)
    in :class:`LoRALinear`; freeze everything else except the task head."""
    if not target_modules:
        raise ValueError("target_modules is empty: name the Linear layers, e.g. ('query', 'value')")
    _freeze_all_but_head(model)
    replaced = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and _matches(full, target_modules) \
                    and not is_head(full):
                setattr(module, child_name, LoRALinear(child, r, alpha, dropout))
                replaced.append(full)
    if not replaced:
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                        if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear matches target_modules={tuple(target_modules)}; Linear "
                         f"names in this model end with: {names}")
    return replaced


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> int:
    layers = lora_layers(model)
    for m in layers:
        m.merge()
    return len(layers)


def unmerge_lora(model: nn.Module) -> int:
    layers = lora_layers(model)
    for m in layers:
        m.unmerge()
    return len(layers)


class Adapter(nn.Module):
    """Houlsby bottleneck: ``h + up(act(down(h)))``; ``up`` starts at 0 (identity at init)."""

    def __init__(self, dim: int, bottleneck: int = 64) -> None:
        super().__init__()
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be >= 1, got {bottleneck}")
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.normal_(self.down.weight, std=1e-3)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(h)))


class WithAdapter(nn.Module):
    """A sub-layer's output projection followed by an adapter (inserted before BERT's
    dropout + residual + LayerNorm, as in Houlsby et al. Figure 2)."""

    def __init__(self, dense: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        self.dense, self.adapter = dense, Adapter(dense.out_features, bottleneck)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.dense(x))


_ADAPTER_SITES = re.compile(r"layer\.\d+\.(attention\.output|output)\.dense$")


def apply_adapters(model: nn.Module, bottleneck: int = 64, train_layernorm: bool = True
                   ) -> list[str]:
    """Insert adapters after both sub-layers of every BERT layer; freeze the rest except the
    head (and the LayerNorms, which Houlsby et al. also train)."""
    _freeze_all_but_head(model)
    placed = []
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and _ADAPTER_SITES.search(full):
                setattr(module, child_name, WithAdapter(child, bottleneck))
                placed.append(full)
    if not placed:
        raise ValueError("no BERT-style '...layer.<i>.(attention.)output.dense' layers found")
    for name, p in model.named_parameters():
        if ".adapter." in name or (train_layernorm and "LayerNorm" in name):
            p.requires_grad_(True)
    return placed


def apply_bitfit(model: nn.Module) -> list[str]:
    """Train only the biases (and the head): about 0.1% of BERT's parameters."""
    _freeze_all_but_head(model)
    names = []
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            p.requires_grad_(True)
            names.append(name)
    if not names:
        raise ValueError("the model has no bias parameters to train")
    return names
