"""Checks for ``solutions/02_bert_pretraining.ipynb``: BERT's MLM masking and NSP pairing.

Masking is random, so its checks are statistical: on a large seeded batch the shares of chosen
tokens (15%) and of [MASK] / random / unchanged among them (80/10/10) must fall within five
standard deviations of BERT's numbers, and the hard rules (no special token or padding chosen,
labels -100 elsewhere, input untouched) must hold exactly. NSP pairs are audited one by one
against the documents. The reference rules are those of :mod:`ktlab.pretraining`. Core cases
(a failure caps the task at 1/3): the 15% choice and the 80/10/10 split; IsNext pairs that are
consecutive, NotNext pairs from another document, about half of each.
"""
from __future__ import annotations

import math

import torch

from ktlab.grading.registry import Checker, task

MASK_ID, VOCAB = 4, 1000
SPECIAL = (0, 1, 2, 3, 4)  # [PAD], [UNK], [CLS], [SEP], [MASK] in this synthetic vocabulary


def _within(count: int, n: int, p: float, what: str, t: Checker) -> None:
    sd = math.sqrt(n * p * (1 - p))
    t.is_true(abs(count - n * p) <= 5 * sd + 1,
              f"{what}: {count} of {n} ({count / max(n, 1):.1%}), expected about {p:.0%}.")


def _batch(t: Checker, rows: int, length: int, seed: int):
    ids = t.randint(5, VOCAB, rows, length, seed=seed)
    mask = t.padding_mask(rows, length, seed=seed + 1, full_first=True)
    ids[:, 0] = 2  # [CLS]
    lengths = mask.sum(1)
    ids[torch.arange(rows), lengths - 1] = 3  # [SEP] closes each sentence
    ids = torch.where(mask.bool(), ids, torch.zeros_like(ids))
    special = torch.isin(ids, torch.tensor(SPECIAL))
    return ids, mask, special


@task("02.mlm_mask", points=3, title="BERT's MLM masking (15%; 80/10/10)",
      hint="chosen = (rand < 0.15) & ~special_mask; labels = where(chosen, ids, -100); "
           "r = rand; r < 0.8 -> mask_token_id, 0.8 <= r < 0.9 -> randint(vocab_size), else keep.")
def check_mlm_mask(fn, t: Checker) -> None:
    t.callable(fn, "your mask_tokens function")
    ids, mask, special = _batch(t, 300, 40, seed=1)
    original = ids.clone()
    result = {}
    with t.case("returns (corrupted_ids, labels) of the input's shape"):
        out = fn(ids, special, MASK_ID, VOCAB, t.generator(0))
        t.is_true(isinstance(out, (tuple, list)) and len(out) == 2,
                  "return the pair (corrupted_ids, labels).")
        corrupted, labels = (torch.as_tensor(x) for x in out)
        t.is_true(corrupted.shape == ids.shape and labels.shape == ids.shape,
                  f"both outputs must have shape {tuple(ids.shape)}.")
        t.is_true(torch.equal(ids, original), "your function changed input_ids in place; work "
                  "on a copy (input_ids.clone()).")
        result.update(corrupted=corrupted, labels=labels)
    if not result:
        return
    corrupted, labels = result["corrupted"], result["labels"]
    chosen = labels != -100
    candidates = ~special
    with t.case("special tokens and padding are never chosen"):
        t.is_true(not bool((chosen & special).any()),
                  "a special token ([CLS]/[SEP]/[PAD]) was chosen; exclude special_mask.")
    with t.case("labels: the original id where chosen, -100 elsewhere"):
        t.is_true(bool(torch.equal(labels[chosen], ids[chosen])),
                  "at chosen positions the label must be the *original* token id.")
        t.is_true(bool((labels[~chosen] == -100).all()), "every other label must be -100.")
    with t.case("about 15% of the candidate tokens are chosen", core=True):
        _within(int(chosen.sum()), int(candidates.sum()), 0.15, "chosen tokens", t)
    with t.case("of the chosen: 80% [MASK], 10% random, 10% unchanged", core=True):
        n = int(chosen.sum())
        is_mask = corrupted[chosen] == MASK_ID
        same = corrupted[chosen] == ids[chosen]
        t.is_true(n == 0 or not bool(is_mask.all()),
                  "every chosen token became [MASK]: BERT replaces only 80% of them with [MASK], "
                  "10% with a random token and leaves 10% unchanged; otherwise the model only "
                  "learns to predict at [MASK], a token it never sees when fine-tuned.")
        _within(int(is_mask.sum()), n, 0.8, "[MASK] among chosen", t)
        _within(int(same.sum()), n, 0.1, "unchanged among chosen", t)
        _within(int((~is_mask & ~same).sum()), n, 0.1, "random among chosen", t)
    with t.case("positions not chosen are untouched"):
        t.is_true(bool(torch.equal(corrupted[~chosen], ids[~chosen])),
                  "only chosen positions may change.")
    with t.case("a different generator seed gives a different mask"):
        _, labels2 = fn(ids, special, MASK_ID, VOCAB, t.generator(1))
        t.is_true(not torch.equal(torch.as_tensor(labels2), labels),
                  "draw all random numbers from the `generator` argument.")


@task("02.nsp_pairs", points=2, title="NSP pairs: 50% IsNext, 50% NotNext from another document",
      hint="for each document d and each i < len(d) - 1: with probability 0.5 append "
           "(d[i], d[i + 1], 0), else (d[i], a sentence of another document, 1).")
def check_nsp_pairs(fn, t: Checker) -> None:
    t.callable(fn, "your make_nsp_pairs function")
    gen = t.randint(3, 9, 60, seed=5).tolist()
    docs = [[f"doc{d} sentence{i}" for i in range(n)] for d, n in enumerate(gen)]
    where = {s: (d, i) for d, doc in enumerate(docs) for i, s in enumerate(doc)}
    pairs = []
    with t.case("one pair per consecutive sentence pair"):
        pairs = list(fn(docs, 0))
        t.is_true(len(pairs) == sum(n - 1 for n in gen),
                  f"expected {sum(n - 1 for n in gen)} pairs (len(doc) - 1 per document), got "
                  f"{len(pairs)}.")
    if not pairs:
        return
    with t.case("each pair is (sentence_a, sentence_b, label) with label 0 or 1"):
        t.is_true(all(len(p) == 3 and p[2] in (0, 1) for p in pairs),
                  "each pair must be a tuple (a, b, label) with label 0 (IsNext) or 1 (NotNext).")
    with t.case("IsNext pairs are consecutive sentences of one document", core=True):
        bad = [p for p in pairs if p[2] == 0 and not (
            where[p[0]][0] == where[p[1]][0] and where[p[1]][1] == where[p[0]][1] + 1)]
        t.is_true(not bad, f"{len(bad)} IsNext pair(s) are not consecutive, e.g. {bad[:1]}.")
    with t.case("NotNext pairs take sentence b from another document", core=True):
        bad = [p for p in pairs if p[2] == 1 and where[p[0]][0] == where[p[1]][0]]
        t.is_true(not bad, f"{len(bad)} NotNext pair(s) stay in the same document, e.g. "
                  f"{bad[:1]}.")
    with t.case("about half are IsNext", core=True):
        _within(sum(p[2] == 0 for p in pairs), len(pairs), 0.5, "IsNext pairs", t)
    with t.case("the same seed gives the same pairs"):
        t.is_true(list(fn(docs, 0)) == pairs, "use random.Random(seed), not the global RNG.")
