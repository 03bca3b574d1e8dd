"""Reference implementations for the warm-up exercises (notebook 00).

Later notebooks' checks compare against the real ktlab modules (``ktlab.nn.attention``,
``ktlab.transfer.distill``, ...); the warm-up functions are small enough to live here.
"""
from __future__ import annotations

import torch


def softmax_with_temperature(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``softmax(logits / T)`` over the last dimension, computed stably (max subtracted).

    A temperature above 1 flattens the distribution (the "dark knowledge" of soft targets in
    distillation), below 1 sharpens it. ``T <= 0`` is meaningless, so it is refused.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = logits / temperature
    z = z - z.max(dim=-1, keepdim=True).values
    e = torch.exp(z)
    return e / e.sum(dim=-1, keepdim=True)


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average ``hidden`` (batch, seq, dim) over the positions where ``mask`` (batch, seq) is 1.

    Padding must not count; a row with no real token gives zeros instead of NaN. This is how
    sentence-transformers turns all-MiniLM-L6-v2 token states into one sentence vector.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
