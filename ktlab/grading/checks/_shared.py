"""Helpers shared by several notebooks' checks (not a notebook: ``load_all`` skips it)."""
from __future__ import annotations

from typing import Optional

import torch

from ktlab.grading.registry import Checker


def own_rng():
    """A context in which seeding and module initialisation leave the global RNG as it was."""
    return torch.random.fork_rng(devices=[])


def tiny_bert(layers: int, seed: int, kind: str = "sequence", hidden: int = 16,
              num_labels: int = 2):
    """A seeded tiny BERT (``kind``: "sequence" or "token" classifier, or the bare "base"
    encoder), built without touching the global RNG the student's code may rely on."""
    from transformers import (BertConfig, BertForSequenceClassification,
                              BertForTokenClassification, BertModel)
    cls = {"sequence": BertForSequenceClassification, "token": BertForTokenClassification,
           "base": BertModel}[kind]
    with own_rng():
        torch.manual_seed(seed)
        return cls(BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=layers,
                              num_attention_heads=2, intermediate_size=2 * hidden,
                              max_position_embeddings=32, num_labels=num_labels))


def scalar(value, t: Checker, what: str = "loss") -> float:
    """A 0-d tensor or a number as a float, or a failed case that says what was returned."""
    if value is None:
        t.fail("your function returned None; did you forget `return`?")
    value = torch.as_tensor(value)
    if value.numel() != 1:
        t.fail(f"the {what} must be a single number, got a tensor of shape {tuple(value.shape)}.")
    return float(value.detach())


def t2_factor_case(t: Checker, loss_at) -> None:
    """The core case of the KD losses: the T**2 factor, isolated from everything else.

    Doubling both logits *and* T leaves the softened distributions unchanged, so the loss of a
    correct implementation grows by exactly (2T)**2 / T**2 = 4, whatever the reduction; without
    the factor it does not change. ``loss_at(scale, T)`` returns (student's loss, reference's)
    on the logits multiplied by ``scale``.
    """
    for temp in (2.0, 0.5):
        got_1, want_1 = loss_at(1.0, temp)
        got_2, want_2 = loss_at(2.0, 2 * temp)
        got_1, got_2 = scalar(got_1, t), scalar(got_2, t)
        want = float(want_2) / float(want_1)                       # = 4
        t.is_true(abs(got_1) > 1e-8, f"your loss is 0 for different logits at T={temp}.")
        ratio = got_2 / got_1
        if abs(ratio - 1.0) < 1e-3:
            t.fail(f"doubling the logits and T (T={temp} -> {2 * temp}) left your loss "
                   "unchanged; it must grow 4x: multiply the KL by temperature ** 2, or the soft "
                   "targets' gradients shrink like 1/T**2 and vanish at high temperature.")
        if abs(ratio - 2.0) < 1e-3:
            t.fail("doubling the logits and T doubled your loss instead of multiplying it by 4: "
                   "scale by temperature ** 2, not temperature.")
        t.is_true(abs(ratio - want) < 1e-3 * want,
                  f"doubling the logits and T (T={temp} -> {2 * temp}) multiplied your loss by "
                  f"{ratio:.4g}, expected {want:.4g}: soften both logits by T and multiply the "
                  "KL by temperature ** 2.")


def paired_predictions(t: Checker, n: int, seed: int, counts: Optional[tuple] = None,
                       shares: tuple = (0.78, 0.07, 0.05)) -> tuple:
    """Seeded ``(pred_a, pred_b, labels)`` of two binary classifiers scored on the same ``n``
    examples: the share (or, with ``counts``, the number) of examples both get right, only A
    gets right and only B gets right; the rest both get wrong. Lists of ints, shuffled."""
    if counts is None:
        counts = tuple(int(round(s * n)) for s in shares)
    both, a_only, b_only = counts
    kinds = [0] * both + [1] * a_only + [2] * b_only + [3] * (n - both - a_only - b_only)
    order = torch.randperm(n, generator=t.generator(seed)).tolist()
    labels = t.randint(0, 2, n, seed=seed + 1).tolist()
    pred_a, pred_b = [0] * n, [0] * n
    for i, kind in zip(order, kinds):
        y = labels[i]
        pred_a[i] = y if kind in (0, 1) else 1 - y
        pred_b[i] = y if kind in (0, 2) else 1 - y
    return pred_a, pred_b, labels


def bench_pairs(pairs) -> list:
    """``(name_a, name_b, pred_a, pred_b, labels)`` for model pairs of the committed sentiment
    bench; empty when ``results/sentiment-bench`` is not there (the check then skips them)."""
    from ktlab.grading import fixtures
    if not fixtures.has_bench("sentiment-bench"):
        return []
    bench = fixtures.sentiment_bench()
    preds = bench["predictions"]
    return [(a, b, preds[a], preds[b], bench["labels"]) for a, b in pairs
            if a in preds and b in preds]


def result_dict(got, keys, t: Checker, what: str = "result") -> dict:
    """``got`` as a dict holding ``keys``, or a failed case that says what is missing."""
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    t.is_true(isinstance(got, dict), f"return a dict with the keys {list(keys)}, got a "
              f"{type(got).__name__}.")
    missing = [k for k in keys if k not in got]
    t.is_true(not missing, f"the {what} lacks the key(s) {missing}; return a dict with "
              f"{list(keys)}.")
    return got


def close(t: Checker, got, want: float, what: str, *, atol: float = 1e-6, hint: str = "") -> None:
    """One number compared with the reference, with a sentence (and a hint) when it is off."""
    try:
        value = float(got)
    except (TypeError, ValueError):
        t.fail(f"the {what} must be a number, got {type(got).__name__}.")
    t.is_true(abs(value - want) <= atol + 1e-6 * abs(want),
              f"the {what} is {value:.6g}, expected {want:.6g}." + (f" Hint: {hint}" if hint else ""))
