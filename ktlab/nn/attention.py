"""Attention, one readable step at a time: masks, scaled dot products, heads, positions.

Everything BERT does with a sequence happens in :func:`scaled_dot_product_attention`::

    scores  = Q K^T / sqrt(d_head)            # (batch, heads, T_query, T_key)
    scores += mask                            # 0 where a key may be seen, a huge negative at padding
    probs   = softmax(scores, dim=-1)         # each query's weights over the keys sum to 1
    out     = probs V                         # (batch, heads, T_query, d_head)

:class:`MultiHeadSelfAttention` projects the hidden states to queries, keys and values, *splits*
the hidden dimension into ``num_heads`` independent heads (:func:`split_heads`), attends, and
*merges* them back (:func:`merge_heads`). When nobody asks for the attention probabilities it
calls PyTorch's fused ``F.scaled_dot_product_attention`` instead of the explicit path: same maths,
less memory traffic. The module's parameter names (``query``, ``key``, ``value``) are those of
``transformers``' ``BertSelfAttention`` so checkpoints load one to one.

Positions: self-attention is blind to order, so BERT adds a *learned* position embedding
(:class:`LearnedPositionEmbedding`); the original Transformer used fixed sinusoids
(:func:`sinusoidal_positions`), which need no training and extrapolate to any length.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "padding_mask", "scaled_dot_product_attention", "split_heads", "merge_heads",
    "MultiHeadSelfAttention", "sinusoidal_positions", "SinusoidalPositionEmbedding",
    "LearnedPositionEmbedding",
]


def padding_mask(attention_mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turn a ``(batch, T)`` 1/0 padding mask into an additive ``(batch, 1, 1, T)`` bias.

    Real tokens get 0 and padding gets the most negative finite number of ``dtype``: after the
    softmax a padded key receives exactly zero weight. A finite value (not ``-inf``) keeps a row
    of all-padding from turning into NaN. The two singleton axes broadcast over heads and queries:
    padding hides *keys*; padded *queries* still produce (ignored) outputs.
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq_len) with 1 for tokens and 0 for "
                         f"padding; got shape {tuple(attention_mask.shape)}")
    pad = attention_mask[:, None, None, :] == 0
    bias = torch.zeros(pad.shape, dtype=dtype, device=pad.device)
    return bias.masked_fill(pad, torch.finfo(dtype).min)


def scaled_dot_product_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                 mask: Optional[torch.Tensor] = None, *, dropout_p: float = 0.0,
                                 temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit attention path; returns ``(output, probabilities)``.

    ``query``: ``(..., T_q, d)``, ``key``/``value``: ``(..., T_k, d)``. ``mask`` is either additive
    (float, broadcastable to ``(..., T_q, T_k)``, e.g. from :func:`padding_mask`) or boolean with
    ``True`` = may attend. ``temperature`` divides the scores as well: above 1 flattens the
    distribution, below 1 sharpens it (BERT uses 1; notebook 01 plots the effect).
    Dividing by ``sqrt(d)`` keeps the scores' variance near 1 whatever the head size, so the
    softmax does not saturate at initialisation.
    """
    if query.shape[-1] != key.shape[-1]:
        raise ValueError(f"query and key must share their last dimension (head size); got "
                         f"{query.shape[-1]} and {key.shape[-1]}")
    if key.shape[-2] != value.shape[-2]:
        raise ValueError(f"key and value must have the same number of positions; got "
                         f"{key.shape[-2]} and {value.shape[-2]}")
    scale = 1.0 / (math.sqrt(query.shape[-1]) * temperature)
    scores = torch.matmul(query, key.transpose(-2, -1)) * scale
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + mask
    probs = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p, training=True)
    return torch.matmul(probs, value), probs


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """``(batch, T, hidden)`` -> ``(batch, heads, T, hidden // heads)``.

    Each head sees its own ``d_head``-wide slice of the projected vectors: the view cuts the
    hidden axis into ``(heads, d_head)`` and the transpose brings heads next to batch so that one
    batched matmul serves every head at once."""
    batch, length, hidden = x.shape
    if hidden % num_heads:
        raise ValueError(f"hidden size {hidden} is not divisible by num_heads={num_heads}")
    return x.view(batch, length, num_heads, hidden // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``(batch, heads, T, d_head)`` -> ``(batch, T, heads * d_head)``: the inverse of
    :func:`split_heads` (the heads' outputs are concatenated side by side)."""
    batch, heads, length, d_head = x.shape
    return x.transpose(1, 2).reshape(batch, length, heads * d_head)


class MultiHeadSelfAttention(nn.Module):
    """BERT's self-attention (``BertSelfAttention`` in ``transformers``), minus the output
    projection, which BERT keeps in ``attention.output.dense`` next to its residual + LayerNorm."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size={hidden_size} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden: torch.Tensor, mask: Optional[torch.Tensor] = None,
                need_weights: bool = False) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """``hidden``: ``(batch, T, hidden)``; ``mask``: additive ``(batch, 1, 1, T)`` or ``None``.

        Returns ``(context, probs)``; ``probs`` is ``None`` unless ``need_weights`` (then the
        explicit path runs, because the fused kernel never materialises the probabilities)."""
        q = split_heads(self.query(hidden), self.num_heads)
        k = split_heads(self.key(hidden), self.num_heads)
        v = split_heads(self.value(hidden), self.num_heads)
        p = self.dropout.p if self.training else 0.0
        if need_weights:
            out, probs = scaled_dot_product_attention(q, k, v, mask, dropout_p=p)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
            probs = None
        return merge_heads(out), probs


def sinusoidal_positions(max_len: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed encodings of Vaswani et al. (2017), shape ``(max_len, dim)``::

        PE[pos, 2i]   = sin(pos / base^(2i/dim))
        PE[pos, 2i+1] = cos(pos / base^(2i/dim))

    Each pair of columns is a clock of a different period (2*pi up to 2*pi*base), so a fixed
    offset between positions is a rotation, which attention can pick up with a linear map."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dimension, got dim={dim}")
    if max_len < 1:
        raise ValueError(f"max_len must be positive, got {max_len}")
    pos = torch.arange(max_len, dtype=torch.float32)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    pe = torch.zeros(max_len, dim)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe


class SinusoidalPositionEmbedding(nn.Module):
    """Fixed sinusoidal positions as a (non-trainable, non-saved) buffer: ``position_ids`` ->
    ``(..., dim)``. A drop-in replacement for :class:`LearnedPositionEmbedding`."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("table", sinusoidal_positions(max_len, dim), persistent=False)

    def forward(self, position_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(position_ids, self.table)


class LearnedPositionEmbedding(nn.Embedding):
    """BERT's choice: one trained vector per position (so at most ``max_len`` positions, 512 in
    BERT). Stored as ``weight`` - in BERT at ``embeddings.position_embeddings.weight``."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__(max_len, dim)
