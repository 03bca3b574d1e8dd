"""Checks for ``solutions/04_sentiment_transfer.ipynb``: the BiLSTM student's forward pass, one
distillation step, n-gram sampling for the transfer set; and two result tasks on the bench's SST-2
dev predictions: McNemar's exact p-value with its verdict, and an accuracy's exact 95% interval.

References are ktlab's own code (:class:`ktlab.nn.students.BiLSTMClassifier`,
:func:`ktlab.transfer.distill.logit_mse`), run on seeded random models and batches of several
shapes, so a hard-coded answer cannot pass. Core cases (a failure caps the task at 1/3): packing
(a padded sentence gives the same logits as the sentence alone); the distillation term of the
step (alpha=0); contiguous n-grams of a length drawn from n_min..n_max; the verdict decided by
p < 0.05 on the discordant pairs (not by the size of the difference); the exact interval at the
edges, where the normal approximation leaves [0, 1].

The result tasks are checked on seeded predictions and on the committed bench predictions the
notebook itself uses (:mod:`ktlab.grading.fixtures`), against :func:`ktlab.metrics.mcnemar_test`,
:func:`ktlab.metrics.verdict` and :func:`ktlab.metrics.accuracy_interval`.
"""
from __future__ import annotations

import copy
import random

import torch
import torch.nn.functional as F

from ktlab.grading.checks._shared import bench_pairs, close, paired_predictions, result_dict
from ktlab.grading.registry import Checker, task


def _padded_batch(t: Checker, batch: int, length: int, vocab: int, seed: int):
    ids = t.randint(1, vocab, batch, length, seed=seed)
    lengths = t.randint(1, length + 1, batch, seed=seed + 100)
    lengths[0] = length  # at least one full row, as the collator guarantees
    mask = (torch.arange(length)[None, :] < lengths[:, None]).long()
    return ids * mask, mask


def _no_call(*_, **__):
    raise RuntimeError("call the model's parts (model.embedding, model.lstm, model.mlp), "
                       "not model(...) itself")


@task("04.bilstm_forward", points=3, title="the BiLSTM student's forward pass",
      hint="Embed, pack with the lengths from attention_mask, run model.lstm, unpack to the "
           "full length, set padded positions to -inf, max over time, then model.mlp.")
def check_bilstm_forward(fn, t: Checker) -> None:
    from ktlab.nn.students import BiLSTMClassifier
    t.callable(fn, "your bilstm_forward function")
    shapes = [(2, 5, 30, 8, 6), (4, 9, 50, 16, 10), (3, 1, 20, 4, 3), (5, 12, 40, 12, 7)]
    for seed, (b, n, vocab, emb, hid) in enumerate(shapes):
        with t.case(f"batch {b}, length {n}, embed {emb}, hidden {hid}, random padding"):
            torch.manual_seed(seed)
            model = BiLSTMClassifier(vocab, num_labels=3, embed_dim=emb, hidden_size=hid,
                                     mlp_size=5, pooling="max").eval()
            ids, mask = _padded_batch(t, b, n, vocab, seed)
            with torch.no_grad():
                expected = model(ids, mask)
            model.forward = _no_call  # type: ignore[method-assign]
            with torch.no_grad():
                got = fn(model, ids.clone(), mask.clone())
            t.allclose(got, expected, atol=1e-5,
                       hint="the backward LSTM must start at each sentence's last real token: "
                            "pack the sequence (pack_padded_sequence) and keep padding out of "
                            "the max.")
    with t.case("packing: padding does not change a sentence's logits", core=True):
        torch.manual_seed(10)
        model = BiLSTMClassifier(40, num_labels=3, embed_dim=8, hidden_size=6, mlp_size=5,
                                 pooling="max").eval()
        ids, mask = _padded_batch(t, 4, 10, 40, seed=11)
        lengths = [int(x) for x in mask.sum(1)]
        with torch.no_grad():
            expected = model(ids, mask)
        model.forward = _no_call  # type: ignore[method-assign]
        with torch.no_grad():
            got = fn(model, ids.clone(), mask.clone())
            alone = [fn(model, ids[i:i + 1, :n].clone(), mask[i:i + 1, :n].clone())
                     for i, n in enumerate(lengths)]
        if isinstance(got, torch.Tensor) and got.shape == expected.shape:
            for i, n in enumerate(lengths):
                t.allclose(got[i:i + 1], alone[i], atol=1e-5,
                           what=f"logits of sentence {i} padded to {ids.shape[1]} tokens "
                                f"(expected: its logits alone, {n} tokens)",
                           hint="padded, a sentence must give the same logits as alone: without "
                                "packing the backward LSTM reads the padding before the last "
                                "real token. Pack it with pack_padded_sequence.")
        t.allclose(got, expected, atol=1e-5, what="logits of the padded batch",
                   hint="pack the sequence (pack_padded_sequence with the lengths from "
                        "attention_mask) and keep padding out of the max.")


@task("04.distill_step", points=3, title="one distillation training step",
      hint="zero the gradients, compute the student's logits, loss = alpha * cross-entropy + "
           "(1 - alpha) * logit MSE with the teacher, backward, optimizer.step(), return the "
           "loss as a float.")
def check_distill_step(fn, t: Checker) -> None:
    from ktlab.nn.students import BiLSTMClassifier
    from ktlab.transfer.distill import logit_mse
    t.callable(fn, "your distill_step function")
    for seed, alpha in enumerate((0.0, 0.5, 1.0)):
        with t.case(f"alpha={alpha}: returned loss and updated weights"
                    + (" (distillation only)" if alpha == 0 else ""), core=alpha == 0):
            torch.manual_seed(seed)
            model = BiLSTMClassifier(30, embed_dim=6, hidden_size=5, mlp_size=4, dropout=0.0)
            ref = copy.deepcopy(model)
            ids, mask = _padded_batch(t, 4, 7, 30, seed)
            batch = {"input_ids": ids, "attention_mask": mask,
                     "labels": t.randint(0, 2, 4, seed=seed + 7),
                     "teacher_logits": t.randn(4, 2, seed=seed + 9, scale=3.0)}
            opt = torch.optim.SGD(model.parameters(), lr=0.5)
            ref_opt = torch.optim.SGD(ref.parameters(), lr=0.5)
            # a stale gradient: a correct step zeroes it first
            for p, q in zip(model.parameters(), ref.parameters()):
                p.grad, q.grad = torch.ones_like(p), torch.ones_like(q)
            got = fn(model, opt, {k: v.clone() for k, v in batch.items()}, alpha)
            ref_opt.zero_grad()
            logits = ref(batch["input_ids"], batch["attention_mask"])
            loss = (alpha * F.cross_entropy(logits, batch["labels"])
                    + (1 - alpha) * logit_mse(logits, batch["teacher_logits"]))
            loss.backward()
            ref_opt.step()
            t.is_true(isinstance(got, float), f"return the loss as a Python float "
                      f"(loss.item()), got {type(got).__name__}.")
            t.is_true(abs(got - loss.item()) < 1e-4 * max(1.0, abs(loss.item())),
                      f"the returned loss {got:.5f} differs from the expected {loss.item():.5f}; "
                      "check the weighting alpha * CE + (1 - alpha) * MSE.")
            for (name, p), q in zip(model.named_parameters(), ref.parameters()):
                t.allclose(p.detach(), q.detach(), atol=1e-5, what=f"updated {name}",
                           hint="call optimizer.zero_grad() before backward and "
                                "optimizer.step() after it, exactly once.")


@task("04.ngram", points=2, title="n-gram sampling for the transfer set",
      hint="n = min(rng.randint(n_min, n_max), len(words)); start = rng.randint(0, len(words) "
           "- n); return words[start:start + n] (and [] for no words).")
def check_ngram(fn, t: Checker) -> None:
    t.callable(fn, "your sample_ngram function")
    words = [f"w{i}" for i in range(9)]
    with t.case("every result is a contiguous n-gram with n_min <= n <= n_max", core=True):
        rng = random.Random(0)
        sizes = set()
        for _ in range(300):
            gram = fn(list(words), rng, 2, 4)
            t.is_true(isinstance(gram, list), f"return a list of words, got {type(gram).__name__}.")
            t.is_true(2 <= len(gram) <= 4, f"got an n-gram of length {len(gram)}, outside 2..4.")
            start = words.index(gram[0]) if gram and gram[0] in words else -1
            t.is_true(start >= 0 and words[start:start + len(gram)] == gram,
                      f"{gram} is not a contiguous piece of the sentence.")
            sizes.add(len(gram))
        t.is_true(sizes == {2, 3, 4}, f"over 300 draws only lengths {sorted(sizes)} appeared; n "
                  "should be drawn uniformly from n_min..n_max.")
    with t.case("start positions cover the whole sentence"):
        rng = random.Random(1)
        starts = {words.index(fn(list(words), rng, 1, 1)[0]) for _ in range(400)}
        t.is_true(starts == set(range(9)), f"unigrams only started at {sorted(starts)}; every "
                  "position should be possible.")
    with t.case("short sentences and empty input"):
        rng = random.Random(2)
        t.is_true(fn(["only", "two"], rng, 3, 5) == ["only", "two"],
                  "when n exceeds the sentence length, return the whole sentence.")
        t.is_true(fn([], rng, 1, 5) == [], "an empty sentence gives an empty list.")
    with t.case("the input list is not modified and the rng makes it reproducible"):
        original = list(words)
        a = [fn(words, random.Random(5), 1, 5) for _ in range(3)]
        t.is_true(words == original, "do not modify the input list.")
        t.is_true(a[0] == a[1] == a[2], "the same seed must give the same n-gram; draw only "
                  "from the rng you are given.")


# ----------------------------------------------------------------------------- result tasks
def _mcnemar_case(fn, t: Checker, pred_a, pred_b, labels) -> None:
    from ktlab.metrics import mcnemar_test, verdict
    test = mcnemar_test(pred_a, pred_b, labels)
    got = result_dict(fn(list(pred_a), list(pred_b), list(labels)), ("p_value", "verdict"), t)
    b, c = test["a_only"], test["b_only"]
    close(t, got["p_value"], test["p_value"], f"p-value (b={b} only A right, c={c} only B right)",
          atol=1e-9, hint="the two-sided exact binomial test of b out of b + c with p = 1/2 "
                          "(scipy.stats.binomtest(b, b + c, 0.5).pvalue); p = 1 when b + c = 0.")
    t.is_true(got["verdict"] == verdict(test),
              f"the verdict should be {verdict(test)!r} (p = {test['p_value']:.4g}, A - B = "
              f"{100 * test['difference']:+.1f} points), got {got['verdict']!r}: 'better' or "
              "'worse' only where p < 0.05, else 'no measurable difference'.")


@task("04.mcnemar", points=2, title="McNemar's exact test and its verdict (a result)",
      hint="b = #(A right, B wrong), c = #(A wrong, B right); p = binomtest(b, b + c, 0.5).pvalue "
           "(1 if b + c == 0); verdict: 'better'/'worse' by the sign of b - c if p < 0.05, else "
           "'no measurable difference'.")
def check_mcnemar(fn, t: Checker) -> None:
    t.callable(fn, "your mcnemar_verdict function")
    for seed, (n, shares) in enumerate([(872, (0.80, 0.06, 0.03)), (500, (0.70, 0.05, 0.09)),
                                        (300, (0.75, 0.05, 0.05))]):
        with t.case(f"{n} seeded examples"):
            _mcnemar_case(fn, t, *paired_predictions(t, n, 80 + seed, shares=shares))
    with t.case("identical predictions: p = 1, no measurable difference"):
        a, _, labels = paired_predictions(t, 100, 90)
        _mcnemar_case(fn, t, a, list(a), labels)
    with t.case("the verdict comes from p < 0.05, not from the size of the difference",
                core=True):
        # 5 points apart but p = 0.099: no measurable difference; 3 vs 12: B is better (p = 0.035)
        _mcnemar_case(fn, t, *paired_predictions(t, 200, 91, counts=(150, 20, 10)))
        _mcnemar_case(fn, t, *paired_predictions(t, 200, 92, counts=(150, 3, 12)))
    for a, b, pred_a, pred_b, labels in bench_pairs([("bilstm/kd+aug", "bilstm/hard"),
                                                     ("bilstm/kd+aug+pca", "bilstm/hard")]):
        with t.case(f"the notebook's comparison: {a} vs {b} on the 872 SST-2 dev sentences"):
            _mcnemar_case(fn, t, pred_a, pred_b, labels)


def _accuracy_case(fn, t: Checker, pred, labels, level: float = 0.95) -> None:
    from ktlab.metrics import accuracy_interval
    want = accuracy_interval([int(p) == int(y) for p, y in zip(pred, labels)], level)
    got = result_dict(fn(list(pred), list(labels), level), ("accuracy", "low", "high"), t)
    k, n = round(want["accuracy"] * want["n"]), want["n"]
    close(t, got["accuracy"], want["accuracy"], "accuracy", hint="a fraction, not percent.")
    for end in ("low", "high"):
        close(t, got[end], want[end], f"{'lower' if end == 'low' else 'upper'} end of the exact "
              f"{level:.0%} interval ({k} of {n} right)",
              hint="Clopper-Pearson: low = beta.ppf(alpha / 2, k, n - k + 1) (0 when k = 0), "
                   "high = beta.ppf(1 - alpha / 2, k + 1, n - k) (1 when k = n), alpha = 1 - level;"
                   " the normal approximation p -+ 1.96 sqrt(p(1-p)/n) is not exact.")


@task("04.accuracy_interval", points=2, title="an accuracy's exact 95% interval (a result)",
      hint="k = number right, alpha = 1 - level; low = scipy.stats.beta.ppf(alpha / 2, k, n - k + "
           "1) (0 if k == 0), high = beta.ppf(1 - alpha / 2, k + 1, n - k) (1 if k == n).")
def check_accuracy_interval(fn, t: Checker) -> None:
    t.callable(fn, "your accuracy_with_interval function")
    for seed, (n, level) in enumerate([(872, 0.95), (150, 0.95), (1000, 0.90), (60, 0.99)]):
        with t.case(f"{n} seeded predictions, level {level}"):
            pred, _, labels = paired_predictions(t, n, 100 + seed, shares=(0.8, 0.05, 0.05))
            _accuracy_case(fn, t, pred, labels, level)
    with t.case("the edges: 19 of 20, 20 of 20 and 0 of 20 right stay inside [0, 1]", core=True):
        for right in (19, 20, 0):
            labels = [1] * 20
            _accuracy_case(fn, t, [1] * right + [0] * (20 - right), labels)
    from ktlab.grading import fixtures
    if fixtures.has_bench("sentiment-bench"):
        bench = fixtures.sentiment_bench()
        for name in ("teacher", "bilstm/hard+pca"):
            with t.case(f"the notebook's model: {name} on the 872 SST-2 dev sentences"):
                _accuracy_case(fn, t, bench["predictions"][name], bench["labels"])
