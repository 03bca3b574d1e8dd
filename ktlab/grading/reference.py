"""Reference implementations for the warm-up exercises (notebook 00).

Checks compare against ktlab's own code: the softmax with temperature is the one distillation
uses, :func:`ktlab.transfer.distill.soften`. Masked mean-pooling has no other home in the
package yet, so it lives here.
"""
from __future__ import annotations

import torch

from ktlab.transfer.distill import soften as softmax_with_temperature

__all__ = ["softmax_with_temperature", "masked_mean_pool"]


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average ``hidden`` (batch, seq, dim) over the positions where ``mask`` (batch, seq) is 1.

    Padding must not count; a row with no real token gives zeros instead of NaN. This is how
    sentence-transformers turns all-MiniLM-L6-v2 token states into one sentence vector.
    """
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
