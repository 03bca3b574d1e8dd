"""Visualisation: attention heatmaps (matplotlib) and offline bertviz views.

``ktlab.viz.attention``: :func:`attentions_for`, :func:`plot_attention`, :func:`plot_heads`.
``ktlab.viz.bertviz``: :func:`head_view`, :func:`model_view` (and ``*_html``) that need no CDN.
"""
from ktlab.viz.attention import (SentenceAttention, attention_entropy, attentions_for,
                                 plot_attention, plot_heads)
from ktlab.viz.bertviz import head_view, head_view_html, model_view, model_view_html, save_html

__all__ = ["SentenceAttention", "attention_entropy", "attentions_for", "plot_attention",
           "plot_heads", "head_view", "head_view_html", "model_view", "model_view_html",
           "save_html"]
