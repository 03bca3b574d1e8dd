"""Checks for ``solutions/06_multitask_transfer.ipynb``: the temperature sampler, combining
per-task losses with uncertainty weighting, a multi-head forward pass; and two result tasks: how
many steps each task gets from a seeded temperature sampler on the real training-set sizes, and
the paired mean ± std over seeds of a multi-task model against single-task training, with its
verdict. References come from :mod:`ktlab.transfer.multitask` and
:func:`ktlab.metrics.seed_difference_interval`. Core cases (a failure caps the task at 1/3): sizes
raised to the power 1/T; exp(-s) weighting each loss plus the s term; sequence tasks reading
[CLS]; the sampler's temperature applied; differences paired by seed, and "helped"/"hurt" only
where the t interval excludes 0."""
from __future__ import annotations

import torch
from torch import nn

from ktlab.grading.checks._shared import close, result_dict
from ktlab.grading.registry import Checker, task
from ktlab.transfer.multitask import TaskSampler, UncertaintyWeighting, task_probabilities


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


# ----------------------------------------------------------------------------- result tasks
def _draws(sizes: dict, temperature: float, steps: int, seed: int) -> dict:
    drawn = TaskSampler(sizes, "temperature", temperature, seed).draw(steps)
    return {name: drawn.count(name) for name in sizes}


def _draws_case(fn, t: Checker, sizes: dict, temperature: float, steps: int, seed: int) -> None:
    want = _draws(sizes, temperature, steps, seed)
    got = result_dict(fn(dict(sizes), temperature, steps, seed), list(sizes), t, "count dict")
    got = {k: got[k] for k in sizes}
    if got == want:
        return
    if sum(int(v) for v in got.values()) != steps:
        t.fail(f"your counts {got} add up to {sum(int(v) for v in got.values())}, not the "
               f"{steps} steps drawn.")
    for strategy in ("proportional", "uniform"):
        drawn = TaskSampler(sizes, strategy, temperature, seed).draw(steps)
        if got == {k: drawn.count(k) for k in sizes}:
            t.fail(f"your counts {got} are those of a {strategy} sampler: the temperature T="
                   f"{temperature} is ignored. Use TaskSampler(sizes, 'temperature', "
                   "temperature, seed).")
    t.fail(f"expected {want} (TaskSampler(sizes, 'temperature', {temperature}, seed={seed})"
           f".draw({steps})), got {got}. Hint: draw from ktlab's seeded sampler, count every "
           "task (0 for one never drawn), and do not draw anything else from it first.")


@task("06.sampler_draws", points=2, title="steps per task from a seeded sampler (a result)",
      hint="drawn = TaskSampler(sizes, 'temperature', temperature, seed).draw(steps); return "
           "{task: drawn.count(task) for task in sizes}.")
def check_sampler_draws(fn, t: Checker) -> None:
    from ktlab.grading import fixtures
    t.callable(fn, "your draws_per_task function")
    for seed, (sizes, temperature, steps) in enumerate([
            ({"a": 10, "b": 1000, "c": 50}, 2.0, 200), ({"x": 7, "y": 7000}, 1.0, 150),
            ({"sst2": 2000, "ner": 1500, "pos": 1500, "chunk": 1500}, 5.0, 400)]):
        with t.case(f"{len(sizes)} tasks, T={temperature}, {steps} steps, seed {seed}"):
            _draws_case(fn, t, sizes, temperature, steps, seed)
    with t.case("the temperature is applied: T=3 on sizes 8000 / 1000 / 27", core=True):
        _draws_case(fn, t, {"big": 8000, "mid": 1000, "small": 27}, 3.0, 300, 7)
    real = fixtures.training_set_sizes()
    for temperature, steps, seed in ((2.0, 300, 0), (1.0, 1000, 3)):
        with t.case(f"the notebook's sampler: the real training-set sizes, T={temperature}, "
                    f"{steps} steps, seed {seed}"):
            _draws_case(fn, t, real, temperature, steps, seed)


def _paired(runs: list, model: str, task: str, baseline: str) -> list:
    def by_seed(name):
        return {r["seed"]: r["score"] for r in runs if r["model"] == name and r["task"] == task}
    mine, base = by_seed(model), by_seed(baseline)
    return [mine[s] - base[s] for s in sorted(mine) if s in base]


def _delta_case(fn, t: Checker, runs: list, model: str, task: str,
                baseline: str = "single-task") -> None:
    from ktlab.metrics import seed_difference_interval
    want = seed_difference_interval(_paired(runs, model, task, baseline))
    got = result_dict(fn([dict(r) for r in runs], model, task), ("mean", "std", "verdict"), t)
    close(t, got["mean"], want["mean"], f"mean paired difference ({model} - {baseline}, {task})",
          atol=1e-6, hint="subtract the single-task score of the *same seed*, then average.")
    close(t, got["std"], want["std"], "standard deviation of the paired differences", atol=1e-6,
          hint="the sample standard deviation (n - 1) of the per-seed differences, not of the "
               "model's scores.")
    t.is_true(got["verdict"] == want["verdict"],
              f"the verdict should be {want['verdict']!r} (mean {want['mean']:+.2f}, "
              f"{want['level']:.0%} interval [{want['low']:+.2f}, {want['high']:+.2f}] over "
              f"{want['n']} seeds), got {got['verdict']!r}: 'helped' / 'hurt' only where the t "
              "interval mean -+ t(0.975, n - 1) * std / sqrt(n) lies above / below 0.")


def _synthetic_runs(seed: int, seeds: list, delta: float, spread: float,
                    model: str = "multi-task") -> list:
    gen = torch.Generator().manual_seed(seed)
    runs = []
    for s in seeds:
        base = 70 + 10 * float(torch.rand((), generator=gen))
        noise = spread * float(torch.randn((), generator=gen))
        runs.append({"model": "single-task", "task": "ner", "seed": s, "score": base})
        runs.append({"model": model, "task": "ner", "seed": s, "score": base + delta + noise})
        runs.append({"model": model, "task": "pos", "seed": s, "score": 90.0})
    order = torch.randperm(len(runs), generator=gen).tolist()
    return [runs[i] for i in order]


@task("06.seed_delta", points=2, title="paired mean ± std over seeds, and the verdict (a result)",
      hint="Pair by seed: d_s = score(model, s) - score(single-task, s); mean, statistics.stdev; "
           "half = scipy.stats.t.ppf(0.975, n - 1) * std / sqrt(n); 'helped' if mean - half > 0, "
           "'hurt' if mean + half < 0, else 'no measurable difference'.")
def check_seed_delta(fn, t: Checker) -> None:
    from ktlab.grading import fixtures
    t.callable(fn, "your seed_delta function")
    for seed, (seeds, delta, spread) in enumerate([([0, 1, 2], 2.0, 0.3), ([0, 1, 2, 3, 4], -1.5,
                                                                              0.5),
                                                   ([3, 5, 8], 0.4, 1.0)]):
        with t.case(f"{len(seeds)} seeds, shuffled runs (seed {seed})"):
            _delta_case(fn, t, _synthetic_runs(10 + seed, seeds, delta, spread), "multi-task",
                        "ner")
    with t.case("differences are paired by seed, and a positive mean is not enough", core=True):
        # the baseline's seeds are listed in another order; mean +0.9 but spread 1.5: no verdict
        runs = [{"model": "single-task", "task": "ner", "seed": s, "score": v}
                for s, v in ((2, 80.0), (0, 70.0), (1, 75.0))]
        runs += [{"model": "multi-task", "task": "ner", "seed": s, "score": v}
                 for s, v in ((0, 72.5), (1, 74.8), (2, 80.4))]
        _delta_case(fn, t, runs, "multi-task", "ner")
        _delta_case(fn, t, _synthetic_runs(30, [0, 1, 2], 0.9, 1.5), "multi-task", "ner")
    with t.case("a seed the baseline lacks is left out"):
        runs = _synthetic_runs(40, [0, 1, 2, 3], 1.0, 0.2)
        runs = [r for r in runs if not (r["model"] == "single-task" and r["seed"] == 3)]
        _delta_case(fn, t, runs, "multi-task", "ner")
    if fixtures.has_bench("multitask-bench"):
        runs = fixtures.multitask_bench()["runs"]
        for model, task_name in (("multi-task (temperature)", "chunk"),
                                 ("multi-task KD (temperature)", "ner"),
                                 ("multi-task (proportional)", "sst2")):
            with t.case(f"the notebook's bench: {model}, {task_name} (3 seeds)"):
                _delta_case(fn, t, runs, model, task_name)
