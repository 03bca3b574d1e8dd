"""ktlab.metrics: accuracy, calibration, parameter counts, latency and throughput."""
from __future__ import annotations

import math

import pytest
import torch

from ktlab.metrics import (accuracy, classification_metrics, expected_calibration_error,
                           measure_latency, measure_throughput, model_size_mb, parameter_counts,
                           reliability_curve)
from tiny_models import batch_of, tiny_bert, toy_sequence_data


def test_accuracy_sequence_and_token_level():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    tok = torch.zeros(2, 3, 4)
    tok[..., 2] = 1.0
    labels = torch.tensor([[2, 2, -100], [1, -100, -100]])
    assert accuracy(tok, labels) == pytest.approx(2 / 3)  # -100 ignored
    with pytest.raises(ValueError, match="do not match"):
        accuracy(logits, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="no labelled"):
        accuracy(tok, torch.full((2, 3), -100))


def test_ece_zero_when_calibrated_and_high_when_overconfident():
    # confidence 0.75 and exactly 75% right -> ECE 0
    p = torch.tensor([[0.75, 0.25]] * 4)
    labels = torch.tensor([0, 0, 0, 1])
    assert expected_calibration_error(p.log(), labels) == pytest.approx(0.0, abs=1e-6)
    confident = torch.tensor([[10.0, 0.0]] * 4)  # ~100% sure, 50% right
    assert expected_calibration_error(confident, torch.tensor([0, 1, 0, 1])) == pytest.approx(
        0.5, abs=1e-3)
    curve = reliability_curve(confident, torch.tensor([0, 1, 0, 1]), n_bins=4)
    assert sum(curve["count"]) == 4 and curve["accuracy"][-1] == pytest.approx(0.5)
    assert math.isnan(curve["accuracy"][0])
    m = classification_metrics(p.log(), labels)
    assert m["accuracy"] == 0.75 and m["nll"] > 0


def test_parameter_counts_and_size():
    model = tiny_bert()
    counts = parameter_counts(model)
    assert counts["total"] == sum(p.numel() for p in model.parameters())
    model.bert.embeddings.requires_grad_(False)
    frozen = parameter_counts(model)
    assert frozen["trainable"] < counts["trainable"] and 0 < frozen["trainable_share"] < 1
    assert model_size_mb(model) == pytest.approx(
        (counts["total"] * 4 + sum(b.numel() * b.element_size() for b in model.buffers())) / 2**20)


def test_latency_and_throughput():
    calls = []
    stats = measure_latency(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(calls) == 7 and stats["min_s"] <= stats["median_s"] <= stats["max_s"]
    with pytest.raises(ValueError):
        measure_latency(lambda: None, repeats=0)
    model = tiny_bert()
    batches = [batch_of(toy_sequence_data(8)), batch_of(toy_sequence_data(4, seed=1))]
    batches = [{k: v for k, v in b.items() if k != "labels"} for b in batches]
    out = measure_throughput(model, batches)
    assert out["examples"] == 12 and out["examples_per_s"] > 0
    with pytest.raises(ValueError):
        measure_throughput(model, [])


def test_accuracy_interval_is_the_exact_clopper_pearson_interval():
    from scipy.stats import binomtest
    from ktlab.metrics import accuracy_interval
    ci = accuracy_interval([1] * 740 + [0] * 132)
    ref = binomtest(740, 872).proportion_ci(0.95, method="exact")
    assert ci["accuracy"] == pytest.approx(740 / 872)
    assert (ci["low"], ci["high"]) == (pytest.approx(ref.low), pytest.approx(ref.high))
    assert accuracy_interval([1, 1, 1])["high"] == 1.0
    with pytest.raises(ValueError):
        accuracy_interval([])


def test_mcnemar_counts_only_discordant_pairs_and_verdict_needs_significance():
    from ktlab.metrics import mcnemar_test, verdict
    labels = [1] * 100
    a = [1] * 100
    b = [1] * 80 + [0] * 20            # A right on 20 sentences B gets wrong, never the reverse
    test = mcnemar_test(a, b, labels)
    assert (test["a_only"], test["b_only"]) == (20, 0)
    assert test["p_value"] == pytest.approx(2 * 0.5 ** 20)
    assert verdict(test) == "better" and verdict(mcnemar_test(b, a, labels)) == "worse"
    close = mcnemar_test([1] * 99 + [0], [0] + [1] * 99, labels)  # one discordant pair each way
    assert close["p_value"] == 1.0 and verdict(close) == "no measurable difference"
    with pytest.raises(ValueError, match="length"):
        mcnemar_test([1], [1, 0], [1])


def test_paired_difference_interval_uses_only_the_discordant_examples():
    from ktlab.metrics import paired_difference_interval
    labels = [1] * 872
    a = [1] * 760 + [0] * 112                       # 87.2%
    b = [1] * 730 + [0] * 30 + [1] * 12 + [0] * 100  # 85.1%: 30 only A right, 12 only B right
    ci = paired_difference_interval(a, b, labels)
    d, se = 18 / 872, math.sqrt(42 - 18 ** 2 / 872) / 872
    assert (ci["a_only"], ci["b_only"], ci["n"]) == (30, 12, 872)
    assert ci["difference"] == pytest.approx(d)
    assert (ci["low"], ci["high"]) == (pytest.approx(d - 1.959964 * se), pytest.approx(d + 1.959964 * se))
    assert ci["significant"]
    # treated as two independent accuracies the interval would be ~2.2x wider and include 0
    unpaired = 1.96 * math.sqrt(0.872 * 0.128 / 872 + 0.851 * 0.149 / 872)
    assert d - unpaired < 0 < ci["low"]
    same = paired_difference_interval(a, a, labels)
    assert (same["low"], same["high"], same["significant"]) == (0.0, 0.0, False)
    assert paired_difference_interval(b, a, labels)["high"] == pytest.approx(-ci["low"])
    with pytest.raises(ValueError):
        paired_difference_interval([], [], [])


def test_seed_difference_interval_needs_the_t_interval_to_exclude_zero():
    from scipy.stats import t
    from ktlab.metrics import seed_difference_interval
    out = seed_difference_interval([1.0, 2.0, 3.0])
    half = t.ppf(0.975, 2) * 1.0 / math.sqrt(3)
    assert (out["mean"], out["std"], out["n"]) == (2.0, 1.0, 3)
    assert (out["low"], out["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert out["verdict"] == "no measurable difference"       # positive mean, interval holds 0
    assert seed_difference_interval([1.8, 2.0, 2.2])["verdict"] == "helped"
    assert seed_difference_interval([-2.1, -2.9, -3.5])["verdict"] == "hurt"
    assert seed_difference_interval([5.0])["verdict"] == "no measurable difference"
    with pytest.raises(ValueError):
        seed_difference_interval([])


# --- entity-F1 bootstrap on real CoNLL-2003 test sentences ------------------------------------

@pytest.fixture(scope="module")
def conll_gold(data_dir):
    from ktlab.data import load_conll
    return [list(t) for t in load_conll("test", data_dir)["ner_tags"][:600]]


def _perturb(gold, rate, seed):
    """A tagger that errs on ``rate`` of the entity words (drops, wrong types, broken
    boundaries, which can leave invalid IOB2 for the repair) and adds a few spurious entities."""
    import random
    rng = random.Random(seed)
    types = ("PER", "LOC", "ORG", "MISC")
    out = []
    for tags in gold:
        new = list(tags)
        for i, tag in enumerate(tags):
            if tag != "O" and rng.random() < rate:
                u = rng.random()
                new[i] = ("O" if u < 0.4 else tag[:2] + rng.choice(types) if u < 0.8
                          else "I-" + tag[2:])
            elif tag == "O" and rng.random() < rate / 20:
                new[i] = "B-" + rng.choice(types)
        out.append(new)
    return out


def test_count_based_f1_equals_seqeval(conll_gold):
    from ktlab.metrics import bootstrap_f1_interval
    from ktlab.tagging import ner_scores, sentence_entity_counts
    for rate in (0.0, 0.05, 0.3):
        pred = _perturb(conll_gold, rate, seed=1)
        ref = ner_scores(conll_gold, pred)
        ci = bootstrap_f1_interval(conll_gold, pred, n_boot=200)
        assert ci["f1"] == pytest.approx(ref["f1"], abs=1e-9)
        assert ci["low"] <= ci["f1"] <= ci["high"] and ci["n"] == len(conll_gold)
        for kind, row in ref["per_type"].items():
            assert bootstrap_f1_interval(conll_gold, pred, n_boot=10, entity_type=kind)["f1"] == \
                pytest.approx(row["f1"], abs=1e-9)
    counts = sentence_entity_counts(conll_gold, conll_gold)
    assert all(tp == p == g for tp, p, g in counts) and sum(g for *_, g in counts) > 500
    perfect = bootstrap_f1_interval(conll_gold, conll_gold, n_boot=50)
    assert (perfect["f1"], perfect["low"], perfect["high"]) == (100.0, 100.0, 100.0)
    with pytest.raises(ValueError, match="at least one sentence"):
        bootstrap_f1_interval([], [])
    with pytest.raises(ValueError, match="sentence lengths differ"):
        bootstrap_f1_interval([["O", "B-PER"]], [["O"]])


def test_paired_bootstrap_f1_verdicts(conll_gold):
    from ktlab.metrics import paired_bootstrap_f1
    good, bad = _perturb(conll_gold, 0.02, seed=2), _perturb(conll_gold, 0.3, seed=3)
    same = paired_bootstrap_f1(conll_gold, good, good)
    assert (same["difference"], same["low"], same["high"], same["p_value"]) == (0.0, 0.0, 0.0, 1.0)
    assert same["verdict"] == "no measurable difference" and not same["significant"]
    worse = paired_bootstrap_f1(conll_gold, bad, good)
    assert worse["verdict"] == "worse" and worse["high"] < 0 < -worse["difference"]
    assert worse["low"] <= worse["difference"] <= worse["high"]
    assert worse["p_value"] == pytest.approx(2 / 1001)      # no resample reverses the sign
    assert paired_bootstrap_f1(conll_gold, good, bad)["verdict"] == "better"
    # one sentence tagged differently: far inside the noise
    nudged = [list(t) for t in good]
    i = next(i for i, t in enumerate(nudged) if "B-PER" in t)
    nudged[i] = ["O"] * len(nudged[i])
    close = paired_bootstrap_f1(conll_gold, nudged, good)
    assert close["difference"] < 0 and close["verdict"] == "no measurable difference"
    assert close["p_value"] > 0.05
    with pytest.raises(ValueError, match="599 predicted ones"):
        paired_bootstrap_f1(conll_gold, good, good[:-1])


def test_entity_f1_bootstrap_is_seeded(conll_gold):
    from ktlab.metrics import bootstrap_f1_interval, paired_bootstrap_f1
    a, b = _perturb(conll_gold, 0.1, seed=4), _perturb(conll_gold, 0.12, seed=5)
    assert paired_bootstrap_f1(conll_gold, a, b, seed=7) == \
        paired_bootstrap_f1(conll_gold, a, b, seed=7)
    one = bootstrap_f1_interval(conll_gold, a, seed=7)
    other = bootstrap_f1_interval(conll_gold, a, seed=8)
    assert one == bootstrap_f1_interval(conll_gold, a, seed=7)
    assert (one["low"], one["high"]) != (other["low"], other["high"]) and one["f1"] == other["f1"]
    # wider with fewer sentences
    small = bootstrap_f1_interval(conll_gold[:100], a[:100], seed=7)
    assert small["high"] - small["low"] > one["high"] - one["low"]
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_f1_interval(conll_gold, a, n_boot=0)
    with pytest.raises(ValueError, match="level"):
        paired_bootstrap_f1(conll_gold, a, b, level=1.5)
