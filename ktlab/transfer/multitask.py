"""Multi-task transfer: one shared encoder, one small head per task.

Sharing an encoder across tasks (Caruana 1997; MT-DNN, Liu et al. 2019) moves knowledge *between*
tasks: CoNLL-2003's POS and chunk tags teach syntax that NER can use. It can also hurt
(*negative transfer*) when tasks pull the shared weights in different directions, or when one big
task drowns the others. Three knobs decide that, and each lives here:

* **which task each step trains** - :func:`task_probabilities` and :class:`TaskSampler`:
  proportional to data size, temperature-scaled ``p_i ∝ n_i^(1/T)`` (T=1 proportional,
  T→∞ uniform), or uniform round-robin;
* **how per-task losses combine** - :class:`StaticWeights`, or :class:`UncertaintyWeighting`
  (Kendall et al. 2018), which learns one log-variance ``s_i`` per task:
  ``L = Σ_i exp(-s_i) L_i + s_i``;
* **evaluation of every task in one call** - :func:`evaluate_tasks`.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ktlab.train import linear_warmup_decay, parameter_groups

TASK_KINDS = ("sequence", "token")
STRATEGIES = ("proportional", "temperature", "uniform", "round_robin")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """A task: ``sequence`` (one label per input, read from [CLS]) or ``token`` (one per token)."""

    name: str
    kind: str
    num_labels: int

    def __post_init__(self) -> None:
        if self.kind not in TASK_KINDS:
            raise ValueError(f"task {self.name!r}: kind must be one of {TASK_KINDS}, "
                             f"got {self.kind!r}")
        if self.num_labels < 2:
            raise ValueError(f"task {self.name!r}: num_labels must be >= 2, got {self.num_labels}")


class MultiTaskModel(nn.Module):
    """A shared encoder (any module returning ``last_hidden_state``, e.g. a HF ``BertModel``)
    with one linear head per task. ``forward(task=..., **batch)`` returns ``{"loss", "logits"}``."""

    def __init__(self, encoder: nn.Module, tasks: Sequence[TaskSpec], dropout: float = 0.1) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("MultiTaskModel needs at least one TaskSpec")
        names = [t.name for t in tasks]
        if len(set(names)) != len(names):
            raise ValueError(f"task names must be unique, got {names}")
        self.encoder = encoder
        self.tasks = {t.name: t for t in tasks}
        hidden = encoder.config.hidden_size
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({t.name: nn.Linear(hidden, t.num_labels) for t in tasks})

    def forward(self, task: str, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                token_type_ids: Optional[torch.Tensor] = None,
                labels: Optional[torch.Tensor] = None) -> dict:
        if task not in self.tasks:
            raise KeyError(f"unknown task {task!r}; this model has {sorted(self.tasks)}")
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).last_hidden_state
        spec = self.tasks[task]
        features = hidden[:, 0] if spec.kind == "sequence" else hidden
        logits = self.heads[task](self.dropout(features))
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits.reshape(-1, spec.num_labels),
                                                      labels.reshape(-1), ignore_index=-100)
        return out


def task_probabilities(sizes: Mapping[str, int], strategy: str = "temperature",
                       temperature: float = 2.0) -> dict[str, float]:
    """How often each task is drawn. ``proportional`` = ``n_i / Σn``; ``temperature`` =
    ``n_i^(1/T) / Σ n_j^(1/T)``; ``uniform`` and ``round_robin`` = ``1 / K``."""
    if not sizes:
        raise ValueError("no tasks given")
    if any(n <= 0 for n in sizes.values()):
        raise ValueError(f"every task needs a positive size, got {dict(sizes)}")
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    n = np.array(list(sizes.values()), dtype=float)
    if strategy == "proportional":
        p = n
    elif strategy == "temperature":
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        p = n ** (1.0 / temperature)
    else:
        p = np.ones_like(n)
    p = p / p.sum()
    return dict(zip(sizes, p.tolist()))


class TaskSampler:
    """An endless, seeded stream of task names following :func:`task_probabilities`
    (``round_robin`` cycles the tasks in order instead of drawing)."""

    def __init__(self, sizes: Mapping[str, int], strategy: str = "temperature",
                 temperature: float = 2.0, seed: int = 0) -> None:
        self.probabilities = task_probabilities(sizes, strategy, temperature)
        self.strategy = strategy
        self.rng = np.random.default_rng(seed)
        self.names = list(self.probabilities)

    def __iter__(self) -> Iterator[str]:
        if self.strategy == "round_robin":
            yield from itertools.cycle(self.names)
        p = list(self.probabilities.values())
        while True:
            yield self.names[self.rng.choice(len(self.names), p=p)]

    def draw(self, steps: int) -> list[str]:
        return list(itertools.islice(iter(self), steps))


class StaticWeights(nn.Module):
    """``L = Σ_i w_i L_i`` with fixed weights (default 1 for every task)."""

    def __init__(self, tasks: Sequence[str], weights: Optional[Mapping[str, float]] = None) -> None:
        super().__init__()
        weights = dict(weights or {})
        unknown = set(weights) - set(tasks)
        if unknown:
            raise KeyError(f"weights for unknown tasks {sorted(unknown)}; tasks are {list(tasks)}")
        self.weights = {t: float(weights.get(t, 1.0)) for t in tasks}

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return self.weights[task] * loss


class UncertaintyWeighting(nn.Module):
    """Kendall, Gal & Cipolla (2018): a learned log-variance ``s_i`` per task and
    ``L_i' = exp(-s_i) L_i + s_i``. A noisy task (high loss it cannot lower) gets a larger ``s_i``
    and so a smaller weight; the ``+ s_i`` term stops all weights going to zero.
    Its parameters must be given to the optimiser together with the model's."""

    def __init__(self, tasks: Sequence[str]) -> None:
        super().__init__()
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in tasks})

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        s = self.log_vars[task]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        return {t: torch.exp(-s).item() for t, s in self.log_vars.items()}


def _cycle(loader: Any) -> Iterator[dict]:
    while True:
        yield from loader


def train_multitask(model: MultiTaskModel, loaders: Mapping[str, Any], sampler: TaskSampler,
                    steps: int, lr: float = 5e-5, weight_decay: float = 0.01,
                    warmup_ratio: float = 0.1, weighting: Optional[nn.Module] = None,
                    max_grad_norm: float = 1.0,
                    loss_fn: Optional[Callable[[MultiTaskModel, str, dict], torch.Tensor]] = None,
                    progress: bool = True) -> dict[str, list]:
    """Train for ``steps`` optimiser steps; each step draws a task from ``sampler`` and one batch
    from that task's loader. Returns a history of ``task``, ``loss`` (weighted) and ``raw_loss``.

    ``loss_fn(model, task, batch)`` replaces the default ``model(task, **batch)["loss"]`` (e.g.
    for multi-task distillation from per-task teachers).
    """
    from tqdm.auto import tqdm

    missing = set(sampler.names) - set(loaders)
    if missing:
        raise KeyError(f"no data loader for tasks {sorted(missing)}")
    weighting = weighting or StaticWeights(list(loaders))
    groups = parameter_groups(model, weight_decay)
    extra = [p for p in weighting.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = linear_warmup_decay(optimizer, int(warmup_ratio * steps), steps)
    streams = {task: _cycle(loader) for task, loader in loaders.items()}
    device = next(model.parameters()).device
    history: dict[str, list] = {"task": [], "loss": [], "raw_loss": []}
    model.train()
    for task in tqdm(sampler.draw(steps), disable=not progress, desc="multi-task"):
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                 for k, v in next(streams[task]).items()}
        if loss_fn is None:
            inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids",
                                            "labels") if k in batch}
            raw = model(task, **inputs)["loss"]
        else:
            raw = loss_fn(model, task, batch)
        loss = weighting(task, raw)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        scheduler.step()
        history["task"].append(task)
        history["loss"].append(loss.item())
        history["raw_loss"].append(raw.item())
    return history


@torch.no_grad()
def evaluate_tasks(model: MultiTaskModel, loaders: Mapping[str, Any],
                   metric_fns: Mapping[str, Callable[[torch.Tensor, torch.Tensor], dict]]
                   ) -> dict[str, dict]:
    """Every task's metrics in one call: ``{task: metric_fn(logits, labels)}``. Token tasks'
    logits are padded to a common length with labels -100 so metrics can ignore padding."""
    from ktlab.train import pad_cat

    model.eval()
    device = next(model.parameters()).device
    results = {}
    for task, loader in loaders.items():
        if task not in metric_fns:
            raise KeyError(f"no metric function for task {task!r}")
        logits, labels = [], []
        for batch in loader:
            inputs = {k: batch[k].to(device) for k in ("input_ids", "attention_mask",
                                                       "token_type_ids") if k in batch}
            logits.append(model(task, **inputs)["logits"].float().cpu())
            labels.append(batch["labels"])
        if model.tasks[task].kind == "token":
            all_logits, all_labels = pad_cat(logits), pad_cat(labels, pad_value=-100)
        else:
            all_logits, all_labels = torch.cat(logits), torch.cat(labels)
        results[task] = metric_fns[task](all_logits, all_labels)
    model.train()
    return results
