"""LIME (Ribeiro et al. 2016) beside integrated gradients.

LIME treats the model as a black box: it removes random subsets of the sentence's *words*,
reads the model's probabilities on those copies, and fits a sparse linear model whose weights
are the explanation. It needs only ``predict_proba(list of strings) -> probabilities``
(:func:`predict_proba_fn`). Its features are words (split on non-word characters, a word's every
occurrence removed together), while integrated gradients score WordPiece tokens, so
:func:`word_level` sums the pieces of each word (``un ##believ ##able`` -> ``unbelievable``) to
put the two side by side.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Sequence

import numpy as np
from torch import nn

from ktlab.explain import _inputs


def predict_proba_fn(model: nn.Module, tokenizer: Any, max_length: int = 64,
                     batch_size: int = 64) -> Callable[[Sequence[str]], np.ndarray]:
    """``f(sentences) -> (n, classes)`` probabilities, the black box LIME queries."""
    pad = _inputs.pad_id(tokenizer)

    def predict_proba(sentences: Sequence[str]) -> np.ndarray:
        ids = _inputs.encode(tokenizer, list(sentences), max_length)
        return _inputs.probabilities(model, ids, pad, batch_size).double().numpy()

    return predict_proba


def lime_explanation(predict_proba: Callable[[Sequence[str]], np.ndarray], sentence: str,
                     label: int, num_features: int = 10, num_samples: int = 1000,
                     seed: int = 0) -> list[tuple[str, float]]:
    """LIME's ``(word, weight)`` pairs for class ``label``, largest |weight| first (seeded:
    the same sentence gives the same explanation)."""
    from lime.lime_text import LimeTextExplainer
    explainer = LimeTextExplainer(random_state=seed)
    explanation = explainer.explain_instance(sentence, predict_proba, labels=(label,),
                                             num_features=num_features, num_samples=num_samples)
    return [(str(word), float(weight)) for word, weight in explanation.as_list(label=label)]


def word_level(attr: Any, punctuation: bool = False) -> list[tuple[str, float]]:
    """``(word, score)`` per word: WordPiece continuations (``##...``) summed into the word
    they continue (completeness carries over: a word's score is its pieces' total).
    [CLS]/[SEP] are left out, and punctuation too unless ``punctuation=True``, since LIME
    splits it away and would give it no weight."""
    special = attr.special or [False] * len(attr.tokens)
    words: list[list] = []
    for token, score, skip in zip(attr.tokens, attr.scores, special):
        if skip:
            continue
        if token.startswith("##") and words:
            words[-1][0] += token[2:]
            words[-1][1] += score
        else:
            words.append([token, float(score)])
    return [(w, s) for w, s in words if punctuation or re.search(r"\w", w)]
