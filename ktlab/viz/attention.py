"""Attention maps in matplotlib (static PNGs that survive nbval and any notebook viewer).

:func:`attentions_for` runs a ktlab or ``transformers`` BERT on one sentence (or a pair) and
returns each layer's ``(heads, T, T)`` probabilities with the WordPiece tokens;
:func:`plot_attention` draws one head as a heatmap (rows = queries, columns = keys) and
:func:`plot_heads` a grid of heads of one layer.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np
import torch


@dataclasses.dataclass
class SentenceAttention:
    tokens: list[str]
    #: one (heads, T, T) tensor per layer
    attentions: list[torch.Tensor]
    sentence_b_start: Optional[int] = None

    @property
    def num_layers(self) -> int:
        return len(self.attentions)

    @property
    def num_heads(self) -> int:
        return int(self.attentions[0].shape[0])


@torch.no_grad()
def attentions_for(model: Any, tokenizer: Any, text: str,
                   text_b: Optional[str] = None) -> SentenceAttention:
    """Attention probabilities of every layer for one input, without padding.

    ``model`` is a :class:`ktlab.nn.BertModel` (explicit attention path) or a ``transformers``
    BERT loaded with ``attn_implementation="eager"``."""
    enc = tokenizer(text, text_b, return_tensors="pt")
    was_training = model.training
    model.eval()
    try:
        out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                    token_type_ids=enc["token_type_ids"], output_attentions=True)
    finally:
        model.train(was_training)
    atts = getattr(out, "attentions", None)
    if not atts or atts[0] is None:
        raise ValueError("the model returned no attention probabilities; load a transformers "
                         "model with attn_implementation='eager' (sdpa returns none)")
    tokens = tokenizer.convert_ids_to_tokens(enc["input_ids"][0])
    b_start = None
    if text_b is not None:
        b_start = int(enc["token_type_ids"][0].tolist().index(1))
    return SentenceAttention(tokens, [a[0].float().cpu() for a in atts], b_start)


def plot_attention(probs: Any, tokens: Sequence[str], ax: Any = None, title: Optional[str] = None,
                   key_tokens: Optional[Sequence[str]] = None, colorbar: bool = True) -> Any:
    """One head's ``(T_query, T_key)`` attention as a heatmap; returns the Axes."""
    import matplotlib.pyplot as plt
    probs = np.asarray(torch.as_tensor(probs).detach().cpu())
    key_tokens = list(tokens if key_tokens is None else key_tokens)
    if probs.shape != (len(tokens), len(key_tokens)):
        raise ValueError(f"attention of shape {probs.shape} does not match {len(tokens)} query "
                         f"and {len(key_tokens)} key tokens")
    if ax is None:
        size = max(3.0, 0.32 * len(tokens) + 1.5)
        _, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(probs, cmap="viridis", vmin=0.0, vmax=max(float(probs.max()), 1e-6))
    ax.set_xticks(range(len(key_tokens)), key_tokens, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tokens)), list(tokens), fontsize=8)
    ax.set_xlabel("key (attended-to token)")
    ax.set_ylabel("query token")
    ax.set_title(title or "attention probabilities")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="probability")
    return ax


def plot_heads(sa: SentenceAttention, layer: int, heads: Optional[Sequence[int]] = None,
               cols: int = 4, title: Optional[str] = None) -> Any:
    """A grid of heads of one layer; returns the Figure."""
    import matplotlib.pyplot as plt
    if not 0 <= layer < sa.num_layers:
        raise ValueError(f"layer must be in 0..{sa.num_layers - 1}, got {layer}")
    heads = list(range(sa.num_heads) if heads is None else heads)
    rows = (len(heads) + cols - 1) // cols
    size = max(2.2, 0.16 * len(sa.tokens) + 1.2)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * size), squeeze=False)
    for ax, h in zip(axes.flat, heads):
        ax.imshow(sa.attentions[layer][h].numpy(), cmap="viridis", vmin=0.0)
        ax.set_title(f"head {h}", fontsize=9)
        ax.set_xticks(range(len(sa.tokens)), sa.tokens, rotation=90, fontsize=6)
        ax.set_yticks(range(len(sa.tokens)), sa.tokens, fontsize=6)
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    fig.supxlabel("key (attended-to token)")
    fig.supylabel("query token")
    fig.suptitle(title or f"layer {layer}: attention of each head")
    fig.tight_layout()
    return fig


def attention_entropy(sa: SentenceAttention) -> np.ndarray:
    """Mean entropy (nats) of each head's attention rows, ``(layers, heads)``: low = focused
    heads (e.g. previous-token or [SEP] heads), high = broad averaging."""
    out = np.zeros((sa.num_layers, sa.num_heads))
    for layer, a in enumerate(sa.attentions):
        out[layer] = (-(a * a.clamp_min(1e-12).log()).sum(-1)).mean(-1).numpy()
    return out
