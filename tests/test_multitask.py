"""Multi-task transfer: samplers, loss weighting, the shared-encoder model and its training loop."""
import collections

import pytest
import torch
from transformers import BertConfig, BertModel

from ktlab.metrics import accuracy
from ktlab.transfer.multitask import (MultiTaskModel, StaticWeights, TaskSampler, TaskSpec,
                                      UncertaintyWeighting, evaluate_tasks, task_probabilities,
                                      train_multitask)

SIZES = {"sst2": 67349, "ner": 14041, "pos": 14041}


def test_probabilities_follow_the_formulas():
    prop = task_probabilities(SIZES, "proportional")
    assert prop["sst2"] == pytest.approx(67349 / 95431)
    temp = task_probabilities(SIZES, "temperature", temperature=2.0)
    norm = sum(n ** 0.5 for n in SIZES.values())
    assert temp["ner"] == pytest.approx(14041 ** 0.5 / norm)
    assert task_probabilities(SIZES, "temperature", 1.0) == pytest.approx(prop)
    huge_t = task_probabilities(SIZES, "temperature", 1e6)
    assert all(p == pytest.approx(1 / 3, abs=1e-4) for p in huge_t.values())
    assert task_probabilities(SIZES, "uniform")["pos"] == pytest.approx(1 / 3)


def test_bad_sampler_input():
    with pytest.raises(ValueError, match="unknown strategy"):
        task_probabilities(SIZES, "annealed")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        task_probabilities(SIZES, "temperature", 0)
    with pytest.raises(ValueError, match="positive size"):
        task_probabilities({"a": 0, "b": 3})
    with pytest.raises(ValueError, match="no tasks"):
        task_probabilities({})


def test_sampler_is_seeded_and_matches_probabilities():
    a = TaskSampler(SIZES, "temperature", 2.0, seed=1).draw(6000)
    assert a == TaskSampler(SIZES, "temperature", 2.0, seed=1).draw(6000)
    counts = collections.Counter(a)
    for task, p in task_probabilities(SIZES, "temperature", 2.0).items():
        assert counts[task] / 6000 == pytest.approx(p, abs=0.03)
    assert TaskSampler(SIZES, "round_robin").draw(5) == ["sst2", "ner", "pos", "sst2", "ner"]


def test_uncertainty_weighting_formula_and_static_weights():
    w = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        w.log_vars["a"].fill_(1.0)
    loss = torch.tensor(2.0)
    assert w("a", loss).item() == pytest.approx(2.0 * torch.exp(torch.tensor(-1.0)).item() + 1.0)
    assert w("b", loss).item() == pytest.approx(2.0)
    s = StaticWeights(["a", "b"], {"b": 0.5})
    assert float(s("b", loss)) == 1.0 and float(s("a", loss)) == 2.0
    with pytest.raises(KeyError, match="unknown tasks"):
        StaticWeights(["a"], {"c": 1.0})


def _tiny_encoder():
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64), add_pooling_layer=False)


def _loader(kind, n=32, length=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 50, (n, length), generator=g)
    if kind == "sequence":   # label: is token 7 present? learnable from the input
        labels = (ids == 7).any(1).long() | (ids[:, 0] < 25).long()
    else:                    # label per token: is the id even?
        labels = (ids % 2 == 0).long()
    return [{"input_ids": ids[i:i + 8], "attention_mask": torch.ones_like(ids[i:i + 8]),
             "labels": labels[i:i + 8]} for i in range(0, n, 8)]


def test_model_heads_shapes_and_errors():
    model = MultiTaskModel(_tiny_encoder(), [TaskSpec("cls", "sequence", 2),
                                             TaskSpec("tag", "token", 3)])
    batch = _loader("token")[0]
    assert model("cls", batch["input_ids"])["logits"].shape == (8, 2)
    assert model("tag", batch["input_ids"])["logits"].shape == (8, 6, 3)
    with pytest.raises(KeyError, match="unknown task 'ner'"):
        model("ner", batch["input_ids"])
    with pytest.raises(ValueError, match="kind must be one of"):
        TaskSpec("x", "span", 2)
    with pytest.raises(ValueError, match="unique"):
        MultiTaskModel(_tiny_encoder(), [TaskSpec("a", "token", 2), TaskSpec("a", "token", 2)])


def test_training_lowers_both_task_losses_and_evaluates_in_one_call():
    model = MultiTaskModel(_tiny_encoder(), [TaskSpec("cls", "sequence", 2),
                                             TaskSpec("tag", "token", 2)], dropout=0.0)
    loaders = {"cls": _loader("sequence"), "tag": _loader("token")}
    metric = {"cls": lambda lo, la: {"accuracy": accuracy(lo, la)},
              "tag": lambda lo, la: {"accuracy": accuracy(lo, la)}}
    before = evaluate_tasks(model, loaders, metric)
    weighting = UncertaintyWeighting(["cls", "tag"])
    hist = train_multitask(model, loaders, TaskSampler({"cls": 32, "tag": 32}, "round_robin"),
                           steps=120, lr=3e-3, weighting=weighting, progress=False)
    after = evaluate_tasks(model, loaders, metric)
    assert hist["task"][:2] == ["cls", "tag"]
    for task in ("cls", "tag"):
        first = [l for t, l in zip(hist["task"], hist["raw_loss"]) if t == task][:5]
        last = [l for t, l in zip(hist["task"], hist["raw_loss"]) if t == task][-5:]
        assert sum(last) < sum(first)
        assert after[task]["accuracy"] > before[task]["accuracy"]
    assert weighting.weights()["cls"] != 1.0     # the log-variances were trained
    with pytest.raises(KeyError, match="no data loader"):
        train_multitask(model, {"cls": loaders["cls"]}, TaskSampler({"cls": 1, "tag": 1}), 1)
