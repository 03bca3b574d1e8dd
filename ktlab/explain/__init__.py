"""Interpretability (notebook 09): why does a model decide, and does a student decide for the
teacher's reasons?

* :mod:`~ktlab.explain.gradients` - integrated gradients on the word embeddings (captum), and the
  same integral as a plain right Riemann sum;
* :mod:`~ktlab.explain.html` - attributions as coloured, offline HTML;
* :mod:`~ktlab.explain.compare` - rank correlation / top-k overlap between two models;
* :mod:`~ktlab.explain.attention` - attention weights against gradient attributions;
* :mod:`~ktlab.explain.faithfulness` - the deletion test (top-k vs random-k tokens);
* :mod:`~ktlab.explain.lime_text` - LIME beside IG, word by word.
"""
from ktlab.explain.attention import attention_scores, attention_vs_gradients, eager_attention
from ktlab.explain.compare import mean_rank_correlation, rank_correlation, top_k_overlap
from ktlab.explain.faithfulness import deletion_test
from ktlab.explain.gradients import (TokenAttribution, embedding_layer, integrated_gradients,
                                     riemann_integrated_gradients)
from ktlab.explain.html import attribution_html, side_by_side_html
from ktlab.explain.lime_text import lime_explanation, predict_proba_fn, word_level

__all__ = ["TokenAttribution", "attention_scores", "attention_vs_gradients", "attribution_html",
           "deletion_test", "eager_attention", "embedding_layer", "integrated_gradients",
           "lime_explanation", "mean_rank_correlation", "predict_proba_fn", "rank_correlation",
           "riemann_integrated_gradients", "side_by_side_html", "top_k_overlap", "word_level"]
