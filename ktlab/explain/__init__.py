"""Looking inside the teacher and its students (notebook 09, ``ktlab run explain``).

- :mod:`.gradients`: integrated gradients on the word embeddings (captum, and a plain-torch
  right Riemann sum to check it), :class:`TokenAttribution`;
- :mod:`.compare`: do two models rank the same tokens highest? (Spearman, top-k overlap);
- :mod:`.attention`: the attention each token receives, against integrated gradients;
- :mod:`.faithfulness`: the deletion test (top-k attributed vs k random tokens);
- :mod:`.lime_text`: LIME's word weights, and integrated gradients summed to words;
- :mod:`.html`: token scores as coloured HTML.

The experiment that strings them together is :mod:`ktlab.experiments.explain`.
"""
from ktlab.explain.attention import (TokenScores, attention_scores, attention_vs_gradients,
                                     eager_attention)
from ktlab.explain.compare import (aligned, content_scores, mean_rank_correlation,
                                   rank_correlation, spearman, top_k, top_k_overlap)
from ktlab.explain.faithfulness import (delete_tokens, deletion_test, random_positions,
                                        top_positions)
from ktlab.explain.gradients import (BASELINES, TokenAttribution, baseline_ids, embedding_layer,
                                     integrated_gradients, riemann_integrated_gradients)
from ktlab.explain.html import attribution_html, side_by_side_html
from ktlab.explain.lime_text import lime_explanation, predict_proba_fn, word_level

__all__ = [
    "BASELINES", "TokenAttribution", "TokenScores", "aligned", "attention_scores",
    "attention_vs_gradients", "attribution_html", "baseline_ids", "content_scores",
    "delete_tokens", "deletion_test", "eager_attention", "embedding_layer",
    "integrated_gradients", "lime_explanation", "mean_rank_correlation", "predict_proba_fn",
    "random_positions", "rank_correlation", "riemann_integrated_gradients",
    "side_by_side_html", "spearman", "top_k", "top_k_overlap", "top_positions", "word_level",
]
