"""LIME (Ribeiro et al. 2016) beside integrated gradients on one sentence.

LIME deletes random subsets of *words*, asks the model, and fits a weighted linear model to
the answers: a black-box explanation that needs only ``predict_proba``. IG works on sub-word
tokens, so :func:`word_level` sums each word's pieces to put the two side by side."""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ktlab.explain._inputs import encode, pad_id, probabilities
from ktlab.explain.gradients import TokenAttribution


def predict_proba_fn(model: torch.nn.Module, tokenizer: Any, max_length: int = 64,
                     batch_size: int = 64) -> Callable[[Sequence[str]], np.ndarray]:
    """``texts -> (n, classes)`` probabilities, the interface LIME expects."""
    def predict_proba(texts: Sequence[str]) -> np.ndarray:
        rows = encode(tokenizer, list(texts), max_length)
        return probabilities(model, rows, pad_id(tokenizer), batch_size).numpy()
    return predict_proba


def lime_explanation(predict_proba: Callable[[Sequence[str]], np.ndarray], sentence: str,
                     label: int, num_features: int = 10, num_samples: int = 1000,
                     seed: int = 0) -> list[tuple[str, float]]:
    """LIME's ``(word, weight)`` towards ``label``, largest |weight| first."""
    from lime.lime_text import LimeTextExplainer
    explainer = LimeTextExplainer(split_expression=r"\s+", bow=False, random_state=seed)
    exp = explainer.explain_instance(sentence, predict_proba, labels=(label,),
                                     num_features=num_features, num_samples=num_samples)
    return [(str(w), float(s)) for w, s in exp.as_list(label=label)]


def word_level(attr: TokenAttribution) -> list[tuple[str, float]]:
    """Merge WordPiece continuations (``##``) into words, summing their scores."""
    words: list[tuple[str, float]] = []
    for token, score in zip(attr.tokens, attr.scores):
        if token in ("[CLS]", "[SEP]", "[PAD]"):
            continue
        if token.startswith("##") and words:
            word, total = words[-1]
            words[-1] = (word + token[2:], total + score)
        else:
            words.append((token, score))
    return words
