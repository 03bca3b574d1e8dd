"""Checks for ``solutions/05_ner_transfer.ipynb``: label alignment, entity decoding, the
token-level distillation loss, Viterbi decoding.

References are ktlab's own code: :func:`ktlab.data.collate.align_labels`,
:func:`ktlab.tagging.decode_entities`, :func:`ktlab.transfer.distill.kd_loss` and
:meth:`ktlab.nn.crf.CRF.decode`. Inputs are seeded and random, of several shapes. Core cases (a
failure caps the task at 1/3): only a word's first sub-token is labelled; B- and a type change
start a new entity; positions labelled -100 left out and the T**2 factor; the transitions
matter in Viterbi.
"""
from __future__ import annotations

import random

import torch

from ktlab.grading.checks._shared import t2_factor_case
from ktlab.grading.registry import Checker, task

_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]


def _random_word_ids(rng: random.Random, n_words: int) -> list:
    """[None, 0, 0, 1, 2, 2, 2, ..., None]: each word split into 1-3 sub-tokens."""
    ids: list = [None]
    for w in range(n_words):
        ids += [w] * rng.choice([1, 1, 1, 2, 3])
    return ids + [None]


@task("05.align_labels", points=2, title="align word labels to sub-tokens",
      hint="Walk over word_ids remembering the previous one: None -> -100; a new word id -> "
           "that word's label; the same id as before (a continuation piece) -> -100.")
def check_align_labels(fn, t: Checker) -> None:
    from ktlab.data.collate import align_labels
    t.callable(fn, "your align_labels function")
    for seed, n_words in enumerate([1, 5, 12, 30]):
        with t.case(f"{n_words} words, random sub-word splits"):
            rng = random.Random(seed)
            word_ids = _random_word_ids(rng, n_words)
            labels = [rng.randrange(9) for _ in range(n_words)]
            got = fn(list(word_ids), list(labels))
            want = align_labels(word_ids, labels)
            t.is_true(got is not None, "your function returned None; did you forget `return`?")
            got = list(got)
            t.is_true(len(got) == len(want), f"expected one label per sub-token ({len(want)}), "
                      f"got {len(got)}.")
            t.is_true([int(x) for x in got] == want,
                      f"for word_ids {word_ids} and word labels {labels} expected {want}, got "
                      f"{got}.")
    with t.case("only the first sub-token of a word carries its label", core=True):
        word_ids = [None, 0, 0, 0, 1, 2, 2, None]
        word_labels = [5, 1, 3]
        want = align_labels(word_ids, word_labels)
        got = fn(list(word_ids), list(word_labels))
        t.is_true(got is not None, "your function returned None; did you forget `return`?")
        got = [int(x) for x in got]
        t.is_true(got == want, f"for word_ids {word_ids} and word labels {word_labels} expected "
                  f"{want}, got {got}: the continuation pieces of a word get -100, so each word "
                  "is scored once, on its first sub-token.")
    with t.case("padding (None) inside a batch row"):
        word_ids = [None, 0, 1, 1, None, None, None]
        want = align_labels(word_ids, [3, 4])
        t.is_true([int(x) for x in fn(word_ids, [3, 4])] == want,
                  f"positions with word id None (special tokens, padding) must get -100: "
                  f"expected {want}.")


@task("05.decode_entities", points=2, title="decode entity spans from IOB2 tags",
      hint="Scan the tags plus a final 'O': close the open entity unless the tag is I- of the "
           "same type; open a new one at every B-X (and at an I-X that continues nothing).")
def check_decode_entities(fn, t: Checker) -> None:
    from ktlab.tagging import decode_entities, repair_iob2
    t.callable(fn, "your decode_entities function")
    fixed = [
        ("one entity at the end", ["O", "O", "B-LOC", "I-LOC"]),
        ("two adjacent entities of the same type", ["B-PER", "B-PER", "I-PER", "O"]),
        ("a one-word sentence", ["B-ORG"]),
        ("no entities", ["O", "O", "O"]),
        ("type change inside a run", ["B-ORG", "I-ORG", "B-LOC", "I-LOC", "I-LOC", "O", "B-MISC"]),
    ]
    core = {"two adjacent entities of the same type", "type change inside a run"}
    for name, tags in fixed:
        with t.case(name, core=name in core):
            want = decode_entities(tags)
            got = fn(list(tags))
            t.is_true(got is not None, "your function returned None; did you forget `return`?")
            got = [tuple(s) for s in got]
            t.is_true(sorted(got) == sorted(want), f"for {tags} expected spans {want} "
                      f"(type, start, end exclusive), got {got}.")
    for seed in range(3):
        with t.case(f"random valid IOB2 sentence (seed {seed})"):
            rng = random.Random(100 + seed)
            tags = repair_iob2([rng.choice(_TAGS) for _ in range(rng.randint(5, 25))])[0]
            want = decode_entities(tags)
            got = [tuple(s) for s in fn(list(tags))]
            t.is_true(sorted(got) == sorted(want), f"for {tags} expected {want}, got {got}.")


@task("05.token_kd_loss", points=3, title="token-level distillation loss",
      hint="Keep the positions whose label is not -100 (boolean mask), soften both logits with "
           "T, take KL(teacher || student) averaged over the kept positions, multiply by T**2.")
def check_token_kd_loss(fn, t: Checker) -> None:
    from ktlab.transfer.distill import kd_loss
    t.callable(fn, "your token_kd_loss function")
    for seed, (b, n, c, T) in enumerate([(2, 6, 9, 1.0), (4, 11, 9, 2.0), (3, 5, 5, 4.0)]):
        with t.case(f"logits {(b, n, c)}, T={T}, random -100 positions"):
            s = t.randn(b, n, c, seed=seed, scale=2.0)
            te = t.randn(b, n, c, seed=50 + seed, scale=3.0)
            labels = t.randint(0, c, b, n, seed=90 + seed)
            drop = t.randint(0, 3, b, n, seed=120 + seed) == 0
            labels[drop] = -100
            labels[:, 0] = -100                      # [CLS]
            want = kd_loss(s, te, T, labels=labels)
            got = fn(s.clone(), te.clone(), labels.clone(), T)
            t.allclose(got, want, atol=1e-5, what="loss",
                       hint="average over kept positions only (not over all b*n), times T**2.")
    with t.case("padding values must not matter", core=True):
        s = t.randn(2, 7, 4, seed=7)
        te = t.randn(2, 7, 4, seed=8)
        labels = torch.tensor([[-100, 1, 2, -100, -100, -100, -100],
                               [-100, 0, 3, 1, 2, -100, -100]])
        base = fn(s.clone(), te.clone(), labels, 2.0)
        s2, te2 = s.clone(), te.clone()
        s2[labels == -100] = 1e3
        te2[labels == -100] = -1e3
        t.allclose(fn(s2, te2, labels, 2.0), base, atol=1e-5, what="loss",
                   hint="positions labelled -100 ([CLS], continuation pieces, padding) must be "
                        "left out before the softmax, not after.")
    with t.case("gradient flows to the student only"):
        s = t.randn(2, 4, 3, seed=9).requires_grad_(True)
        te = t.randn(2, 4, 3, seed=10).requires_grad_(True)
        labels = torch.tensor([[0, 1, -100, 2], [-100, 1, 1, -100]])
        fn(s, te, labels, 2.0).backward()
        t.is_true(s.grad is not None and s.grad.abs().sum() > 0,
                  "the loss must depend on the student logits (no .detach() on them).")
        t.is_true(te.grad is None or te.grad.abs().sum() == 0,
                  "the teacher is a constant: detach the teacher logits.")
    with t.case("the T**2 factor: doubling the logits and T multiplies the loss by 4",
                core=True):
        s, te = t.randn(3, 6, 5, seed=11, scale=2.0), t.randn(3, 6, 5, seed=12, scale=2.0)
        labels = t.randint(0, 5, 3, 6, seed=13)
        labels[:, 0] = -100
        labels[1, 4:] = -100
        t2_factor_case(t, lambda k, temp: (fn(k * s, k * te, labels.clone(), temp),
                                           kd_loss(k * s, k * te, temp, labels=labels)))


@task("05.viterbi", points=3, title="Viterbi decoding for a linear-chain CRF",
      hint="delta = start + e[0]; for each t: scores = delta[:, None] + transitions, keep the "
           "max and argmax over the previous tag, add e[t]; add end; follow the back-pointers.")
def check_viterbi(fn, t: Checker) -> None:
    from ktlab.nn.crf import CRF
    t.callable(fn, "your viterbi function")
    for seed, (n, c) in enumerate([(1, 3), (4, 3), (7, 5), (20, 9)]):
        with t.case(f"{n} words, {c} tags"):
            crf = CRF(c)
            with torch.no_grad():
                crf.transitions.copy_(t.randn(c, c, seed=seed, scale=2.0))
                crf.start.copy_(t.randn(c, seed=30 + seed))
                crf.end.copy_(t.randn(c, seed=60 + seed))
            e = t.randn(n, c, seed=90 + seed, scale=2.0)
            want = crf.decode(e[None])[0]
            got = fn(e.clone(), crf.transitions.detach().clone(), crf.start.detach().clone(),
                     crf.end.detach().clone())
            t.is_true(got is not None, "your function returned None; did you forget `return`?")
            got = [int(x) for x in got]
            t.is_true(len(got) == n, f"expected one tag per word ({n}), got {len(got)}.")
            t.is_true(got == want, f"expected the best path {want}, got {got}. Check that the "
                      "end scores are added before the final argmax and that back-pointers are "
                      "followed from the last word to the first.")
    with t.case("transitions matter (not just argmax of emissions)", core=True):
        e = torch.tensor([[2.0, 0.0], [0.0, 1.0], [2.0, 0.0]])
        trans = torch.tensor([[0.0, -10.0], [-10.0, 0.0]])   # switching tags is very costly
        got = [int(x) for x in fn(e, trans, torch.zeros(2), torch.zeros(2))]
        t.is_true(got == [0, 0, 0], f"with costly switches the best path is [0, 0, 0], got {got}"
                  " (the per-word argmax [0, 1, 0] ignores the transitions).")
