"""Multi-task transfer: one shared encoder for SST-2 sentiment and CoNLL-2003 NER, POS and chunking.

One pipeline for ``ktlab run multitask`` and notebook 06:

1. **single-task baselines** - one encoder per task, each trained for ``steps_per_task`` steps;
   optionally (``single_task_equal_updates``, on in bench) the **equal-updates control**: one
   more encoder per task trained for ``steps_per_task x n_tasks`` steps on its own task, as many
   encoder updates as a multi-task model gets;
2. **multi-task models** - one shared encoder trained for ``steps_per_task x n_tasks`` steps
   (the same compute budget as all baselines together) with each task sampler
   (:mod:`ktlab.transfer.multitask`);
3. **negative-transfer report** - per task, multi-task score minus single-task score of the
   same seed (and minus the equal-updates control's), with the t interval over seeds and the
   helped / hurt / no measurable difference verdict of
   :func:`ktlab.metrics.seed_difference_interval` (always "no measurable difference" with one
   seed);
4. **multi-task distillation** (MT-DNN-KD, Liu et al. 2019) - the single-task models are the
   teachers; their logits are cached once, and a fresh multi-task student learns from
   ``alpha * KD + (1 - alpha) * CE``; compared with the same student trained without teachers.

The encoder is the teacher's BERT, cut to ``encoder_layers`` layers copied from it with
:func:`ktlab.transfer.layers.init_student_from_teacher` (2 of MiniLM's 6 in quick, so the whole
run fits in minutes on 2 CPU cores; all layers of a hub BERT in full).
Scores are in points: accuracy for SST-2 and POS, entity F1 (strict IOB2) for NER and chunking.
"""
from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ktlab import config as kconfig
from ktlab.experiments import common
from ktlab.experiments.common import caps_record, describe_machine

#: ``/2``: per-task deltas carry the t interval over seeds and a verdict; the equal-updates
#: control. :func:`load_results` reads ``/1`` files too (the summary is recomputed from the runs).
SCHEMA = "ktlab.multitask/2"
OLD_SCHEMAS = ("ktlab.multitask/1",)
#: the single-task baseline (``steps_per_task`` steps) and the equal-updates control
#: (``steps_per_task x n_tasks`` steps on one task): the two rows every delta is taken against
BASELINE = "single-task"
EQUAL_UPDATES = "single-task (equal updates)"
TASKS = ("sst2", "ner", "pos", "chunk")
SAMPLERS = ("proportional", "temperature", "round_robin")


class ConfigError(ValueError):
    """A bad option for the multi-task experiment (unknown task or sampler, ...)."""


@dataclasses.dataclass(frozen=True)
class MultitaskSizes:
    """How big one run is. ``None`` means the whole split."""

    sst2_train: Optional[int]
    conll_train: Optional[int]      #: CoNLL sentences (shared by NER, POS and chunking)
    eval_per_task: Optional[int]
    encoder_layers: Optional[int]   #: teacher layers kept in the shared encoder (None = all)
    steps_per_task: int             #: single-task budget; multi-task gets this x n_tasks
    seeds: tuple[int, ...]
    batch_size: int = 16
    max_length: int = 64
    lr: float = 1e-4
    temperature: float = 2.0        #: sampler temperature
    kd_alpha: float = 0.5           #: weight of the distillation term
    kd_temperature: float = 2.0
    freeze_embeddings: bool = False  #: keep the teacher's embedding table fixed (cheaper steps)
    #: also train the equal-updates control: per task, a single-task model with as many encoder
    #: updates as a multi-task model (``steps_per_task x n_tasks``). It costs 4 x the single-task
    #: baselines' steps: off in quick (+480 steps on the 600 a quick seed trains), on in bench
    single_task_equal_updates: bool = False


PROFILE_SIZES = {
    # frozen embeddings: AdamW then skips MiniLM's 11.7M-parameter embedding table every step
    "quick": MultitaskSizes(sst2_train=2000, conll_train=1500, eval_per_task=300,
                            encoder_layers=2, steps_per_task=30, seeds=(0,), max_length=48, lr=4e-4,
                            freeze_embeddings=True),
    "full": MultitaskSizes(sst2_train=None, conll_train=None, eval_per_task=None,
                           encoder_layers=None, steps_per_task=3000, seeds=(0, 1, 2),
                           batch_size=32, max_length=128, lr=3e-5),
    # CPU, 2 shared cores: SST-2 subsampled to 20,000 sentences, CoNLL train complete; 300
    # steps x 16 sentences per task (each model sees 4,800 sentences per task); 1,000 evaluation
    # sentences per task; 3 seeds (see README). 97 min without the equal-updates control; the
    # control (4 x 1,200 more steps per seed) adds ~56 min (4 x their single-task time)
    "bench": MultitaskSizes(sst2_train=20000, conll_train=None, eval_per_task=1000,
                            encoder_layers=2, steps_per_task=300, seeds=(0, 1, 2), lr=2e-4,
                            freeze_embeddings=True, single_task_equal_updates=True),
}


def cap_sizes(sizes: MultitaskSizes, max_examples: Optional[int] = None,
              max_steps: Optional[int] = None) -> MultitaskSizes:
    """``sizes`` with every split (SST-2 and CoNLL training sets, which the distillation cache
    reuses, and each task's evaluation set) cut to at most ``max_examples`` sentences and
    ``steps_per_task`` to at most ``max_steps``; ``None`` leaves a size alone.

    A single-task model trains ``steps_per_task`` steps, so at most ``max_steps``; a multi-task
    model keeps its budget of ``steps_per_task x n_tasks`` (all its single-task baselines
    together), the comparison the experiment is about. For smoke runs of a profile on a small
    machine (``ktlab run multitask --profile full --max-examples 24 --max-steps 2``)."""
    common.check_caps(max_examples, max_steps, ConfigError)
    return common.cap_fields(sizes, max_examples, max_steps,
                             ("sst2_train", "conll_train", "eval_per_task"), ("steps_per_task",))


# ----------------------------------------------------------------------------- data

def task_specs() -> list:
    """One :class:`ktlab.transfer.multitask.TaskSpec` per task of :data:`TASKS`."""
    from ktlab.data import CHUNK_LABELS, NER_LABELS, POS_LABELS
    from ktlab.transfer.multitask import TaskSpec
    return [TaskSpec("sst2", "sequence", 2), TaskSpec("ner", "token", len(NER_LABELS)),
            TaskSpec("pos", "token", len(POS_LABELS)), TaskSpec("chunk", "token", len(CHUNK_LABELS))]


def load_task_data(tokenizer: Any, sizes: MultitaskSizes, seed: int,
                   tasks: Sequence[str] = TASKS) -> dict[str, dict[str, list]]:
    """``{task: {"train": items, "eval": items}}`` of encoded examples (real SST-2 and CoNLL)."""
    from ktlab.data import (LABEL_LISTS, encode_sentences, encode_tagged, load_conll, load_sst2,
                            subset)

    data: dict[str, dict[str, list]] = {}
    if "sst2" in tasks:
        splits = {"train": subset(load_sst2("train"), sizes.sst2_train, seed, "label"),
                  "eval": subset(load_sst2("dev"), sizes.eval_per_task, seed, "label")}
        data["sst2"] = {}
        for name, ds in splits.items():
            items = encode_sentences(tokenizer, list(ds["sentence"]), sizes.max_length)
            for item, label in zip(items, ds["label"]):
                item["labels"] = int(label)
            data["sst2"][name] = items
    token_tasks = [t for t in tasks if t != "sst2"]
    if token_tasks:
        conll = {"train": subset(load_conll("train"), sizes.conll_train, seed),
                 "eval": subset(load_conll("valid"), sizes.eval_per_task, seed)}
        column = {"ner": "ner_tags", "pos": "pos_tags", "chunk": "chunk_tags"}
        for task in token_tasks:
            index = {tag: i for i, tag in enumerate(LABEL_LISTS[task])}
            data[task] = {}
            for name, ds in conll.items():
                tags = [[index[t] for t in sent] for sent in ds[column[task]]]
                items = encode_tagged(tokenizer, list(ds["tokens"]), tags, sizes.max_length)
                for item in items:
                    item.pop("word_ids")
                data[task][name] = items
    return data


def make_loader(items: list, batch_size: int, shuffle: bool, seed: int = 0,
                pad_token_id: int = 0) -> torch.utils.data.DataLoader:
    """A seeded loader that pads ids and any cached ``teacher_logits``."""
    from ktlab.data import PadCollator
    from ktlab.transfer.distill import PadTeacherCollator

    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=shuffle,
                                       generator=generator,
                                       collate_fn=PadTeacherCollator(PadCollator(pad_token_id)))


# ----------------------------------------------------------------------------- metrics

def task_metric(task: str):
    """``metric(logits, labels) -> {"score": points}``: accuracy (SST-2, POS) or strict entity F1
    (NER, chunking) over words (the first sub-token of each word carries its label)."""
    from ktlab.data import LABEL_LISTS
    from ktlab.metrics import accuracy
    from ktlab.tagging import ner_scores

    if task in ("sst2", "pos"):
        return lambda logits, labels: {"score": 100 * accuracy(logits, labels)}
    names = LABEL_LISTS[task]

    def f1(logits: torch.Tensor, labels: torch.Tensor) -> dict:
        pred = logits.argmax(-1)
        gold_tags, pred_tags = [], []
        for p_row, g_row in zip(pred, labels):
            keep = g_row != -100
            gold_tags.append([names[i] for i in g_row[keep].tolist()])
            pred_tags.append([names[i] for i in p_row[keep].tolist()])
        return {"score": ner_scores(gold_tags, pred_tags)["f1"]}

    return f1


# ----------------------------------------------------------------------------- models

def build_encoder(teacher: nn.Module, layers: Optional[int]) -> nn.Module:
    """A fresh copy of the teacher's encoder, or a shallower one initialised from its layers."""
    import copy

    from ktlab.transfer.layers import init_student_from_teacher

    if layers is None or layers >= teacher.config.num_hidden_layers:
        return copy.deepcopy(teacher)
    cfg = teacher.config.__class__.from_dict({**teacher.config.to_dict(),
                                              "num_hidden_layers": layers})
    student = teacher.__class__(cfg, add_pooling_layer=False)
    init_student_from_teacher(student, teacher, "uniform")
    return student


class TaskView(nn.Module):
    """One task of a multi-task model seen as an ordinary classifier (``forward(**batch)``
    returns ``logits``), so the distillation cache can run it as a teacher."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model, self.task = model, task

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_: Any):
        from types import SimpleNamespace
        return SimpleNamespace(logits=self.model(self.task, input_ids, attention_mask,
                                                 token_type_ids)["logits"])


def kd_multitask_loss(alpha: float, temperature: float):
    """``loss_fn(model, task, batch)`` for multi-task distillation from cached teacher logits."""
    from ktlab.transfer.distill import hard_soft_loss

    def loss_fn(model: nn.Module, task: str, batch: dict) -> torch.Tensor:
        logits = model(task, batch["input_ids"], batch["attention_mask"],
                       batch.get("token_type_ids"))["logits"]
        return hard_soft_loss(logits, batch["teacher_logits"], batch["labels"], alpha=alpha,
                              temperature=temperature)

    return loss_fn


# ----------------------------------------------------------------------------- the pipeline

def check_choices(tasks: Sequence[str], samplers: Sequence[str]) -> list[str]:
    """``tasks`` as a list; tasks and samplers checked against :data:`TASKS` / :data:`SAMPLERS`."""
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise ConfigError(f"unknown tasks {unknown}; choose from {','.join(TASKS)}")
    bad = [s for s in samplers if s not in SAMPLERS]
    if bad or not samplers:
        raise ConfigError(f"unknown samplers {bad}; choose from {','.join(SAMPLERS)}")
    return tasks


@dataclasses.dataclass
class Context:
    """What every model of a run shares, and the scores they leave behind (``runs``)."""

    cfg: Any
    sizes: MultitaskSizes
    tokenizer: Any
    source: nn.Module     #: the teacher's encoder, loaded once and copied for every model
    metrics: dict         #: ``{task: metric(logits, labels)}``
    progress: bool = False
    runs: list = dataclasses.field(default_factory=list)   #: one row per (model, seed, task)

    @property
    def pad(self) -> int:
        """The tokenizer's padding id."""
        return self.tokenizer.pad_token_id


def prepare(cfg: Any, sizes: MultitaskSizes, tasks: Sequence[str],
            progress: bool = False) -> Context:
    """The tokenizer, the source encoder and each task's metric."""
    from ktlab.models import load_teacher, load_tokenizer
    return Context(cfg, sizes, load_tokenizer(cfg.teacher), load_teacher(cfg.teacher, task="base"),
                   {t: task_metric(t) for t in tasks}, progress)


def train_and_score(ctx: Context, name: str, seed: int, data: dict, specs: list, sampler: Any,
                    steps: int, loss_fn: Any = None, items_key: str = "train") -> nn.Module:
    """Train one model on ``specs`` for ``steps`` steps; its per-task scores go to ``ctx.runs``."""
    from ktlab.transfer.freeze import freeze_embeddings
    from ktlab.transfer.multitask import MultiTaskModel, evaluate_tasks, train_multitask
    sizes = ctx.sizes
    kconfig.seed_everything(seed)   # the heads' initial weights
    encoder = build_encoder(ctx.source, sizes.encoder_layers)
    model = MultiTaskModel(encoder, specs).to(ctx.cfg.device)
    if sizes.freeze_embeddings:
        freeze_embeddings(model.encoder)
    loaders = {s.name: make_loader(data[s.name][items_key], sizes.batch_size, True, seed, ctx.pad)
               for s in specs}
    t0 = time.perf_counter()
    history = train_multitask(model, loaders, sampler, steps, lr=sizes.lr, loss_fn=loss_fn,
                              progress=ctx.progress)
    seconds = time.perf_counter() - t0
    evals = {s.name: make_loader(data[s.name]["eval"], 64, False, pad_token_id=ctx.pad)
             for s in specs}
    scores = evaluate_tasks(model, evals, {s.name: ctx.metrics[s.name] for s in specs})
    draws = {s.name: history["task"].count(s.name) for s in specs}
    for task, result in scores.items():
        ctx.runs.append({"model": name, "seed": seed, "task": task, "score": result["score"],
                         "steps": draws[task], "train_seconds": seconds})
    if ctx.progress:
        print(f"{name} seed={seed}: " + ", ".join(f"{t}={r['score']:.1f}"
                                                  for t, r in scores.items()))
    return model


def train_single_task(ctx: Context, seed: int, data: dict, specs: list) -> dict[str, nn.Module]:
    """1. One baseline per task (``steps_per_task`` steps), 1b. the equal-updates control."""
    from ktlab.transfer.multitask import TaskSampler
    singles = {spec.name: train_and_score(ctx, BASELINE, seed, data, [spec],
                                          TaskSampler({spec.name: 1}, "uniform", seed=seed),
                                          ctx.sizes.steps_per_task) for spec in specs}
    if ctx.sizes.single_task_equal_updates:   # as many encoder updates as multi-task
        for spec in specs:
            train_and_score(ctx, EQUAL_UPDATES, seed, data, [spec],
                            TaskSampler({spec.name: 1}, "uniform", seed=seed),
                            ctx.sizes.steps_per_task * len(specs))
    return singles


def train_multi_task(ctx: Context, seed: int, data: dict, specs: list,
                     samplers: Sequence[str], train_sizes: dict) -> None:
    """2. One shared-encoder model per sampler, ``steps_per_task x n_tasks`` steps each."""
    from ktlab.transfer.multitask import TaskSampler
    for strategy in samplers:
        train_and_score(ctx, f"multi-task ({strategy})", seed, data, specs,
                        TaskSampler(train_sizes, strategy, ctx.sizes.temperature, seed),
                        ctx.sizes.steps_per_task * len(specs))


def distill_multi_task(ctx: Context, seed: int, data: dict, specs: list, singles: dict,
                       train_sizes: dict) -> None:
    """4. MT-DNN-KD: the single-task models' logits cached once, then one multi-task student."""
    from ktlab.data import PadCollator
    from ktlab.transfer.distill import cache_teacher_logits
    from ktlab.transfer.multitask import TaskSampler
    for spec in specs:
        data[spec.name]["kd"] = cache_teacher_logits(
            TaskView(singles[spec.name], spec.name).eval(), data[spec.name]["train"],
            PadCollator(ctx.pad))
    sizes = ctx.sizes
    train_and_score(ctx, "multi-task KD (temperature)", seed, data, specs,
                    TaskSampler(train_sizes, "temperature", sizes.temperature, seed),
                    sizes.steps_per_task * len(specs),
                    kd_multitask_loss(sizes.kd_alpha, sizes.kd_temperature), items_key="kd")


def run_seed(ctx: Context, seed: int, tasks: Sequence[str], samplers: Sequence[str],
             distill: bool = True) -> dict[str, int]:
    """Every model of one seed (steps 1, 2 and 4); returns the training-set size per task."""
    specs = [s for s in task_specs() if s.name in tasks]
    kconfig.seed_everything(seed)
    data = load_task_data(ctx.tokenizer, ctx.sizes, seed, tasks)
    train_sizes = {t: len(data[t]["train"]) for t in tasks}
    singles = train_single_task(ctx, seed, data, specs)
    train_multi_task(ctx, seed, data, specs, samplers, train_sizes)
    if distill:
        distill_multi_task(ctx, seed, data, specs, singles, train_sizes)
    return train_sizes


def assemble_results(ctx: Context, tasks: Sequence[str], samplers: Sequence[str],
                     seeds: Sequence[int], train_sizes: dict, started: float,
                     capped: Optional[dict]) -> dict:
    """The results dict (schema :data:`SCHEMA`) with its summary (step 3)."""
    from ktlab.transfer.multitask import task_probabilities
    sizes = ctx.sizes
    results = {
        "schema": SCHEMA, "profile": ctx.cfg.profile, "teacher": ctx.cfg.teacher,
        "sizes": dataclasses.asdict(sizes), "capped": capped,
        "tasks": list(tasks), "samplers": list(samplers),
        "seeds": list(seeds), "train_sizes": train_sizes,
        "sampling_probabilities": {s: task_probabilities(train_sizes, s, sizes.temperature)
                                   for s in samplers},
        "machine": describe_machine(), "runs": ctx.runs,
        "seconds": time.perf_counter() - started,
    }
    results["summary"] = summarise(results)
    return results


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        tasks: Sequence[str] = TASKS, samplers: Sequence[str] = SAMPLERS,
        out_dir: Optional[str | Path] = None, seeds: Optional[Sequence[int]] = None,
        sizes: Optional[MultitaskSizes] = None, distill: bool = True,
        progress: bool = False, max_examples: Optional[int] = None,
        max_steps: Optional[int] = None, equal_updates: Optional[bool] = None) -> dict:
    """Run the whole experiment and return the results dict (also written to ``out_dir``):
    :func:`prepare`, :func:`run_seed` per seed, :func:`assemble_results`, :func:`write_results`.

    ``sizes`` overrides the profile's :class:`MultitaskSizes`; ``max_examples`` and ``max_steps``
    cap them (:func:`cap_sizes`; ``results["capped"]`` records the caps). ``equal_updates``
    (``--equal-updates``) overrides ``sizes.single_task_equal_updates``: also train the
    equal-updates control."""
    cfg, sizes = common.resolve(profile, teacher, None, PROFILE_SIZES, sizes, cap_sizes,
                                max_examples, max_steps)
    if equal_updates is not None:
        sizes = dataclasses.replace(sizes, single_task_equal_updates=bool(equal_updates))
    tasks = check_choices(tasks, samplers)
    seeds = tuple(seeds) if seeds is not None else sizes.seeds
    ctx = prepare(cfg, sizes, tasks, progress)
    started = time.perf_counter()
    for seed in seeds:
        train_sizes = run_seed(ctx, seed, tasks, samplers, distill)
    results = assemble_results(ctx, tasks, samplers, seeds, train_sizes, started,
                               caps_record(max_examples, max_steps))
    if out_dir is not None:
        write_results(results, Path(out_dir))
    return results


# ----------------------------------------------------------------------------- reporting

def paired_delta(results: dict, model: str, baseline: str, task: str) -> dict:
    """``model``'s score minus ``baseline``'s on ``task``, paired by seed: the per-seed deltas
    (``per_seed``), their mean and std, the t interval over seeds and the verdict of
    :func:`ktlab.metrics.seed_difference_interval`. With one seed ``low``/``high`` are ``None``
    (no interval) and the verdict is "no measurable difference"; with none, ``mean`` is NaN."""
    return _delta_record(_per_seed(results, model, baseline, [task]))


def _per_seed(results: dict, model: str, baseline: str, tasks: Sequence[str]) -> list[float]:
    """Per seed (where both models have every task): mean over ``tasks`` of model - baseline."""
    def score(name: str, task: str, seed: int) -> Optional[float]:
        return next((r["score"] for r in results["runs"] if r["model"] == name
                     and r["task"] == task and r["seed"] == seed), None)

    out = []
    for seed in results["seeds"]:
        pairs = [(score(model, t, seed), score(baseline, t, seed)) for t in tasks]
        if pairs and all(a is not None and b is not None for a, b in pairs):
            out.append(statistics.fmean(a - b for a, b in pairs))
    return out


def _delta_record(per_seed: list[float]) -> dict:
    import math

    from ktlab.metrics import seed_difference_interval
    if not per_seed:
        return {"mean": float("nan"), "std": 0.0, "n": 0, "low": None, "high": None,
                "verdict": "no measurable difference", "per_seed": []}
    ci = seed_difference_interval(per_seed)
    finite = lambda x: x if math.isfinite(x) else None   # noqa: E731 (JSON has no infinity)
    return {"mean": ci["mean"], "std": ci["std"], "n": ci["n"], "low": finite(ci["low"]),
            "high": finite(ci["high"]), "level": ci["level"], "verdict": ci["verdict"],
            "per_seed": per_seed}


def summarise(results: dict) -> dict:
    """Per model and task: mean and standard deviation over seeds. Per model other than the
    single-task baseline: the delta against it (``deltas``; negative transfer where below 0)
    and, when the equal-updates control was trained, per multi-task model the delta against
    the control (``deltas_vs_equal_updates``), each paired by seed with its t interval and
    verdict (:func:`paired_delta`); the same for the task average (``average_deltas``,
    ``average_deltas_vs_equal_updates``); the task averages; the goal check per multi-task
    model (on the means: average >= single-task, no task more than 1 point worse)."""
    tasks = results["tasks"]
    table: dict[str, dict[str, dict]] = {}
    for model in dict.fromkeys(r["model"] for r in results["runs"]):
        table[model] = {}
        for task in tasks:
            scores = [r["score"] for r in results["runs"] if r["model"] == model and r["task"] == task]
            if scores:
                table[model][task] = {"mean": statistics.fmean(scores),
                                      "std": statistics.stdev(scores) if len(scores) > 1 else 0.0,
                                      "n": len(scores)}
    multi = [m for m in table if m not in (BASELINE, EQUAL_UPDATES)]
    summary: dict[str, Any] = {"scores": table}
    for key, baseline, models in (("", BASELINE, [m for m in table if m != BASELINE]),
                                  ("_vs_equal_updates", EQUAL_UPDATES, multi)):
        if baseline not in table:
            continue
        summary["deltas" + key] = {m: {t: paired_delta(results, m, baseline, t)
                                       for t in table[m]} for m in models}
        summary["average_deltas" + key] = {m: _delta_record(_per_seed(results, m, baseline,
                                                                      list(table[m])))
                                           for m in models}
    summary.setdefault("deltas", {})
    averages = {model: statistics.fmean(s["mean"] for s in per_task.values())
                for model, per_task in table.items() if per_task}
    goal = {}
    for model in multi:
        per_task = summary["deltas"].get(model)
        if per_task:
            worst = min(d["mean"] for d in per_task.values())
            goal[model] = {"average_vs_single": averages[model] - averages[BASELINE],
                           "worst_task_delta": worst,
                           "met": averages[model] >= averages[BASELINE] and worst >= -1.0}
    summary.update(averages=averages, goal=goal)
    return summary


def format_delta(d: dict) -> str:
    """A paired delta as a table cell: ``+1.5 [+0.2, +2.8] helped`` (``+0.6 (1 seed) no
    measurable difference`` without an interval)."""
    if d["low"] is None:
        return f"{d['mean']:+.1f} ({d['n']} seed{'s' if d['n'] != 1 else ''}) {d['verdict']}"
    return f"{d['mean']:+.1f} [{d['low']:+.1f}, {d['high']:+.1f}] {d['verdict']}"


def markdown_table(results: dict) -> str:
    """Mean ± std (over seeds) per model and task with the task average; then, per baseline
    (single-task; the equal-updates control when it was trained), every other model's paired
    delta per task and on average with its 95% t interval over seeds and verdict."""
    summary = results["summary"]
    tasks = results["tasks"]
    n_seeds = len(results["seeds"])
    head = ["| model | " + " | ".join(tasks) + " | average |", "|---" * (len(tasks) + 2) + "|"]
    lines = [f"Scores (points), mean ± std over {n_seeds} seed{'s' if n_seeds != 1 else ''}:",
             ""] + head
    for model, per_task in summary["scores"].items():
        cells = [f"{per_task[t]['mean']:.1f} ± {per_task[t]['std']:.1f}" if t in per_task
                 else "—" for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + f" | {summary['averages'][model]:.1f} |")
    steps = results["sizes"]["steps_per_task"]
    titles = {"": f"Δ vs {BASELINE} ({steps} steps per task)",
              "_vs_equal_updates": f"Δ vs {EQUAL_UPDATES} ({steps * len(tasks)} steps per "
                                   "task, as many encoder updates as a multi-task model)"}
    for key, title in titles.items():
        deltas = summary.get("deltas" + key)
        if not deltas:
            continue
        lines += ["", f"{title}: model − baseline of the same seed, mean [95% t interval over "
                      "seeds] and verdict:", ""] + head
        for model, per_task in deltas.items():
            cells = [format_delta(per_task[t]) if t in per_task else "—" for t in tasks]
            lines.append(f"| {model} | " + " | ".join(cells) + " | "
                         f"{format_delta(summary['average_deltas' + key][model])} |")
    if n_seeds < 2:
        lines += ["", f"With {n_seeds} seed there is no spread to estimate, so no interval: every "
                      "verdict is \"no measurable difference\" whatever the sign of the delta "
                      "(the bench profile runs 3 seeds)."]
    return "\n".join(lines)


def write_results(results: dict, out: Path, plots: bool = True) -> None:
    """``results.json``, ``table.md`` and ``deltas.png`` into ``out``."""
    from ktlab.experiments import common
    common.write_results(results, out, markdown_table(results), {"deltas": plot_deltas}, plots)


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (a file or its folder) and check its schema; a
    ``ktlab.multitask/1`` file is upgraded in memory (:func:`migrate_results`)."""
    from ktlab.experiments import common
    return migrate_results(common.load_results(path, (SCHEMA, *OLD_SCHEMAS), "multitask"))


def migrate_results(results: dict) -> dict:
    """A ``ktlab.multitask/1`` results dict as ``/2``: the summary (intervals and verdicts)
    recomputed from its runs, no retraining; a ``/2`` dict is returned unchanged."""
    if results.get("schema") in OLD_SCHEMAS:
        results["schema"] = SCHEMA
        results["summary"] = summarise(results)
    return results


def upgrade_results_dir(path: str | Path) -> dict:
    """Rewrite a results folder written under an older schema (``results.json``, ``table.md``,
    ``deltas.png``): ``multitask.upgrade_results_dir("results/multitask-bench")``."""
    out = Path(path)
    results = load_results(out)
    write_results(results, out)
    return results


def plot_deltas(results: dict) -> Any:
    """Per-task difference to single-task training, one bar group per model (the equal-updates
    control included: what more encoder updates alone do), with error bars = the 95% t interval
    over seeds (none with one seed). Below zero is negative transfer."""
    import matplotlib.pyplot as plt

    deltas = results["summary"]["deltas"]
    tasks = results["tasks"]
    models = list(deltas)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    x = np.arange(len(tasks))
    for i, model in enumerate(models):
        cells = [deltas[model].get(t) for t in tasks]
        means = [d["mean"] if d else np.nan for d in cells]
        half = [d["high"] - d["mean"] if d and d["high"] is not None else 0.0 for d in cells]
        ax.bar(x + i * width, means, width, yerr=half, capsize=3, label=model)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x + width * (len(models) - 1) / 2, tasks)
    ax.set_ylabel("score − single-task (points)")
    n = len(results["seeds"])
    bars = "error bars: 95% t interval" if n > 1 else "1 seed: no interval"
    ax.set_title(f"Multi-task vs single-task ({results['profile']} profile, {n} seed(s); {bars})",
                 fontsize=10)
    ax.legend(fontsize=7)
    return fig
