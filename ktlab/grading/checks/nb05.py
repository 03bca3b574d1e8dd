"""Checks for ``solutions/05_ner_transfer.ipynb``: label alignment, entity decoding, the
token-level distillation loss, Viterbi decoding; and two result tasks on real CoNLL-2003 tags:
the entity-level F1 of a tagger, and how its errors split into boundary and type errors.

References are ktlab's own code: :func:`ktlab.data.collate.align_labels`,
:func:`ktlab.tagging.decode_entities`, :func:`ktlab.transfer.distill.kd_loss` and
:meth:`ktlab.nn.crf.CRF.decode`. Inputs are seeded and random, of several shapes. Core cases (a
failure caps the task at 1/3): only a word's first sub-token is labelled; B- and a type change
start a new entity; positions labelled -100 left out and the T**2 factor; the transitions
matter in Viterbi; an entity scored only when its type and both boundaries match; a right span
with the wrong type is a type error, a right type with other boundaries a boundary error.

The result tasks are checked on seeded corruptions of real gold tags (CoNLL-2003 validation, data
mirror) and on the committed bench's real predictions (:mod:`ktlab.grading.fixtures`), against
:func:`ktlab.tagging.ner_scores` and :func:`ktlab.tagging.error_breakdown`.
"""
from __future__ import annotations

import random

import torch

from ktlab.grading.checks._shared import close, t2_factor_case
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


# ----------------------------------------------------------------------------- result tasks
_TYPES = ("PER", "ORG", "LOC", "MISC")


def corrupt_tags(gold, seed: int, rate: float = 0.3) -> list:
    """A seeded imperfect tagger: each gold entity is kept, shifted by a word at one end, given
    another type, both, or dropped, and sometimes started with I- instead of B-; some O words
    become entities."""
    from ktlab.tagging import decode_entities
    rng = random.Random(seed)
    out = []
    for tags in gold:
        pred = ["O"] * len(tags)
        for kind, s, e in decode_entities(tags):
            roll = rng.random()
            if roll < rate * 0.65 and not rate * 0.25 <= roll < rate * 0.5:   # boundary (+type)
                e = min(len(tags), e + 1) if rng.random() < 0.5 or e - s == 1 else e - 1
            if rate * 0.25 <= roll < rate * 0.65:                             # type (+boundary)
                kind = rng.choice([k for k in _TYPES if k != kind])
            if rate * 0.65 <= roll < rate * 0.8:                              # missed
                continue
            pred[s:e] = [f"I-{kind}"] * (e - s)
            if rng.random() > rate * 0.2:                # else: starts with I- (invalid IOB2)
                pred[s] = f"B-{kind}"
        for i, tag in enumerate(pred):
            if tag == "O" and tags[i] == "O" and rng.random() < rate * 0.03:
                pred[i] = f"B-{rng.choice(_TYPES)}"      # spurious
        out.append(pred)
    return out


def _random_gold(seed: int, n: int) -> list:
    from ktlab.tagging import repair_iob2
    rng = random.Random(seed)
    weights = [8, 1, 1, 1, 1, 1, 1, 1, 1]
    return [repair_iob2(rng.choices(_TAGS, weights, k=rng.randint(3, 20)))[0] for _ in range(n)]


def _tag_sets(seed: int) -> list:
    """(name, gold, pred) for the check: random gold, real CoNLL validation gold (both with a
    seeded imperfect tagger), and the committed bench's real test-set predictions."""
    from ktlab.grading import fixtures
    sets = [(f"random IOB2 gold, seeded tagger (seed {seed})", _random_gold(seed, 80),
             None), (f"random IOB2 gold, seeded tagger (seed {seed + 1})",
                     _random_gold(seed + 1, 40), None)]
    sets = [(name, gold, corrupt_tags(gold, seed + i)) for i, (name, gold, _) in enumerate(sets)]
    gold = fixtures.conll_gold("valid", 400)
    sets.append(("CoNLL-2003 validation gold (400 sentences), seeded tagger", gold,
                 corrupt_tags(gold, seed + 7)))
    if fixtures.has_bench("ner-bench"):
        bench = fixtures.ner_bench()
        for name in ("bilstm/kd+crf+pca", "tiny/kd"):
            sets.append((f"the notebook's tagger: {name} on the 3,453 CoNLL-2003 test sentences",
                         bench["gold"], bench["predictions"][name]))
    return sets


def _copy(rows) -> list:
    return [list(r) for r in rows]


@task("05.entity_f1", points=2, title="entity-level F1 of a real tagger (a result)",
      hint="Decode spans per sentence (an I-X that continues nothing starts an entity), count "
           "the predicted spans equal to a gold span (type, start, end) over all sentences; "
           "P = tp / #pred, R = tp / #gold, F1 = 2PR / (P + R) in percent (0 if tp = 0).")
def check_entity_f1(fn, t: Checker) -> None:
    from ktlab.tagging import ner_scores
    t.callable(fn, "your entity_f1 function")
    for name, gold, pred in _tag_sets(200):
        with t.case(name):
            want = ner_scores(gold, pred)["f1"]
            close(t, fn(_copy(gold), _copy(pred)), want, "entity F1 (percent)", atol=1e-4,
                  hint="micro-average over all sentences (sum tp, #pred, #gold first), in percent; "
                       "a span counts only if type, start and end all match.")
    with t.case("an entity counts only with its type and both boundaries", core=True):
        gold = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "I-ORG", "I-ORG"]]
        pred = [["B-PER", "O", "O", "B-ORG", "O"], ["B-ORG", "I-ORG", "I-ORG"]]
        got = fn(_copy(gold), _copy(pred))
        close(t, got, ner_scores(gold, pred)["f1"], "entity F1 (percent)", atol=1e-4,
              hint="of the 3 predicted entities only ORG in sentence 2 matches a gold entity "
                   "exactly (PER is one word short, LOC has the wrong type): P = R = 1/3, F1 = "
                   "33.3; tags that merely overlap earn nothing.")
    with t.case("a predicted I-X that continues nothing starts an entity; no entities give 0"):
        gold = [["B-MISC", "I-MISC", "O"], ["O", "O"]]
        pred = [["I-MISC", "I-MISC", "O"], ["O", "O"]]
        close(t, fn(_copy(gold), _copy(pred)), 100.0, "entity F1 (percent)", atol=1e-4,
              hint="repair I-MISC I-MISC to B-MISC I-MISC (ktlab.tagging.repair_iob2) before "
                   "decoding: it is the MISC entity of words 0-1.")
        close(t, fn([["B-PER"]], [["O"]]), 0.0, "entity F1 with no predicted entity", atol=1e-4,
              hint="with tp = 0 the F1 is 0 (not a ZeroDivisionError).")


_KINDS = ("type", "boundary", "type+boundary", "spurious", "missed")


def _breakdown_case(fn, t: Checker, gold, pred) -> None:
    from ktlab.tagging import error_breakdown
    want = error_breakdown(gold, pred)
    got = fn(_copy(gold), _copy(pred))
    t.is_true(isinstance(got, dict), f"return a dict with the counts {list(_KINDS)}, got "
              f"{type(got).__name__}.")
    got = {k: got.get(k, 0) for k in _KINDS}          # a Counter may leave out the zeros
    wrong = [k for k in _KINDS if got[k] != want[k]]
    t.is_true(not wrong, "wrong counts: " + ", ".join(f"{k} {got[k]} (expected {want[k]})"
                                                      for k in wrong) +
              ". Hint: for each predicted span not in gold: no overlap -> spurious; the same "
              "(start, end) -> type; overlaps a gold entity of its type -> boundary; else "
              "type+boundary. Gold spans no prediction overlaps -> missed.")


@task("05.error_breakdown", points=2, title="boundary errors vs type errors (a result)",
      hint="Per sentence compare span sets: a wrong predicted span is 'spurious' (overlaps no "
           "gold span), 'type' (same start and end), 'boundary' (overlaps a gold span of its "
           "type) or 'type+boundary'; gold spans nothing overlaps are 'missed'.")
def check_error_breakdown(fn, t: Checker) -> None:
    t.callable(fn, "your error_counts function")
    for name, gold, pred in _tag_sets(300):
        with t.case(name):
            _breakdown_case(fn, t, gold, pred)
    with t.case("a right span with the wrong type is a type error, a right type with other "
                "boundaries a boundary error", core=True):
        gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "I-ORG", "O", "O"]]
        pred = [["B-PER", "O", "O", "B-ORG", "O", "B-LOC", "I-LOC", "I-LOC", "B-MISC"]]
        # PER one word short: boundary; LOC -> ORG on the same word: type; ORG -> LOC one word
        # longer: type+boundary; MISC on an O word: spurious
        _breakdown_case(fn, t, gold, pred)
        _breakdown_case(fn, t, [["B-PER", "I-PER", "O", "B-LOC"]], [["O", "O", "O", "I-LOC"]])
