"""Checks for ``solutions/06_multitask_transfer.ipynb``: the temperature sampler, combining
per-task losses with uncertainty weighting, and a multi-head forward pass. References come from
:mod:`ktlab.transfer.multitask`. Core cases (a failure caps the task at 1/3): sizes raised to the
power 1/T; exp(-s) weighting each loss plus the s term; sequence tasks reading [CLS]."""
from __future__ import annotations

import torch
from torch import nn

from ktlab.grading.registry import Checker, task
from ktlab.transfer.multitask import UncertaintyWeighting, task_probabilities


@task("06.temperature_sampler", points=2, title="temperature-scaled task probabilities",
      hint="Raise each task size to the power 1/T, then divide by the sum so the values add to 1.")
def check_temperature(fn, t: Checker) -> None:
    t.callable(fn, "your task_probabilities function")
    cases = [({"sst2": 67349, "ner": 14041}, 1.0), ({"a": 10, "b": 1000, "c": 50}, 2.0),
             ({"sst2": 2000, "ner": 1500, "pos": 1500, "chunk": 1500}, 5.0),
             ({"x": 7, "y": 7000}, 0.5)]
    for sizes, temperature in cases:
        with t.case(f"{len(sizes)} tasks, T={temperature}"):
            got = fn(dict(sizes), temperature)
            t.is_true(isinstance(got, dict) and set(got) == set(sizes),
                      f"return a dict with one probability per task {sorted(sizes)}")
            want = task_probabilities(sizes, "temperature", temperature)
            t.allclose(torch.tensor([float(got[k]) for k in sizes]),
                       torch.tensor([want[k] for k in sizes]), atol=1e-6)
    with t.case("the temperature flattens: p proportional to n ** (1 / T), T=3", core=True):
        sizes = {"big": 8000, "mid": 1000, "small": 27}
        got = fn(dict(sizes), 3.0)
        t.is_true(isinstance(got, dict) and set(got) == set(sizes),
                  f"return a dict with one probability per task {sorted(sizes)}")
        got_p = torch.tensor([float(got[k]) for k in sizes], dtype=torch.float64)
        n = torch.tensor([float(v) for v in sizes.values()], dtype=torch.float64)
        for wrong, how in ((n / n.sum(), "proportional to the sizes: the temperature is ignored"),
                           (n ** 3 / (n ** 3).sum(), "raised to the power T instead of 1 / T"),
                           (torch.full_like(n, 1 / 3), "uniform: the sizes are ignored")):
            if got_p.shape == wrong.shape and torch.allclose(got_p, wrong, atol=1e-6):
                t.fail(f"your probabilities are {how}. With T=3 they must be proportional to "
                       "n ** (1 / 3): a higher T moves them towards uniform, so small tasks are "
                       "drawn more often than their size alone would give.")
        want = task_probabilities(sizes, "temperature", 3.0)
        t.allclose(got_p, torch.tensor([want[k] for k in sizes], dtype=torch.float64),
                   atol=1e-6, what="probabilities")


@task("06.combine_losses", points=2, title="uncertainty-weighted sum of task losses",
      hint="For each task add exp(-s) * loss + s, where s is that task's log-variance.")
def check_combine(fn, t: Checker) -> None:
    t.callable(fn, "your combine_losses function")
    for seed, n_tasks in enumerate([1, 2, 4]):
        with t.case(f"{n_tasks} task(s)"):
            names = [f"task{i}" for i in range(n_tasks)]
            losses = {n: t.randn(1, seed=seed * 10 + i)[0].abs() + 0.1 for i, n in enumerate(names)}
            log_vars = {n: t.randn(1, seed=seed * 10 + 5 + i)[0] for i, n in enumerate(names)}
            weighting = UncertaintyWeighting(names)
            with torch.no_grad():
                for n in names:
                    weighting.log_vars[n].copy_(log_vars[n])
            want = sum(weighting(n, losses[n]) for n in names).detach()
            t.allclose(torch.as_tensor(fn(losses, log_vars)).detach(), want, atol=1e-5)
    with t.case("each loss is weighted by exp(-s) and s is added", core=True):
        losses = {"a": torch.tensor(2.0), "b": torch.tensor(0.5)}
        log_vars = {"a": torch.tensor(0.6931), "b": torch.tensor(-1.0)}
        weighting = UncertaintyWeighting(["a", "b"])
        with torch.no_grad():
            for n in losses:
                weighting.log_vars[n].copy_(log_vars[n])
            want = sum(weighting(n, losses[n]) for n in losses)
        got = torch.as_tensor(fn(dict(losses), dict(log_vars))).detach()
        no_reg = sum(torch.exp(-log_vars[n]) * losses[n] for n in losses)
        if got.shape == want.shape and torch.allclose(got, no_reg, atol=1e-4):
            t.fail("you left out the + s term: without it the model can shrink every loss to 0 "
                   "by making all log-variances s large. Add s for each task.")
        t.allclose(got, want, atol=1e-4, what="combined loss",
                   hint="exp(-s) * loss + s per task: a noisy task (large s) gets a small "
                        "weight, and + s keeps s from growing without bound.")


def _reference_heads(hidden: torch.Tensor, heads: nn.ModuleDict, kinds: dict, task_name: str):
    features = hidden[:, 0] if kinds[task_name] == "sequence" else hidden
    return heads[task_name](features)


@task("06.multi_head_forward", points=2, title="one encoder output, one head per task",
      hint="Sequence tasks read the [CLS] vector hidden[:, 0]; token tasks use every position. "
           "Then apply that task's linear head.")
def check_multi_head(fn, t: Checker) -> None:
    t.callable(fn, "your multi_head_forward function")
    for seed, (b, length, h) in enumerate([(2, 5, 8), (3, 7, 16)]):
        gen = torch.Generator().manual_seed(seed)
        heads = nn.ModuleDict({"sst2": nn.Linear(h, 2), "ner": nn.Linear(h, 9)})
        with torch.no_grad():
            for p in heads.parameters():
                p.copy_(torch.randn(p.shape, generator=gen))
        kinds = {"sst2": "sequence", "ner": "token"}
        hidden = t.randn(b, length, h, seed=40 + seed)
        for name in ("sst2", "ner"):
            with t.case(f"{name} ({kinds[name]}), hidden {(b, length, h)}",
                        core=kinds[name] == "sequence"):
                with torch.no_grad():
                    t.allclose(fn(hidden.clone(), heads, kinds, name),
                               _reference_heads(hidden, heads, kinds, name), atol=1e-5)
    with t.case("unknown task is refused"):
        t.raises(KeyError, lambda: fn(t.randn(1, 2, 8, seed=50), heads, kinds, "pos"),
                 "task 'pos' (not in heads)")
