"""The stages every experiment pipeline shares, defined once (classify, NER, multi-task, PEFT).

==================================  ======================================================
shared stage                        function
==================================  ======================================================
names and conditions                :func:`parse_names`, :func:`condition_table`
sizes per profile, with caps        :func:`resolve`, :func:`cap_fields`, :func:`check_caps`
settings-keyed caches               :func:`cache_key`, :func:`cache_batches` (teacher outputs)
one (teacher or student) training   :func:`train_resumable` (train-or-load, checkpoints)
speed and size                      :func:`time_calls`, :func:`retime_side_by_side`,
                                    :func:`count_params`, :func:`model_record`
the results                         :func:`run_clock`, :func:`caps_record`,
                                    :func:`history_dict`, :func:`write_results`,
                                    :func:`load_results`, :func:`describe_machine`
shared plot                         :func:`teacher_curve_axes`
==================================  ======================================================

Each experiment module keeps only what is its own: its data, models, losses, metrics and report.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import torch


#: ``cb(stage, step)`` after every optimiser step / every cached batch (tests interrupt with it).
StageCallback = Callable[[str, int], None]


class ConfigError(ValueError):
    """A bad experiment argument (student name, condition, ...); the message says the fix."""


# ----------------------------------------------------------------------------- names, sizes

def parse_names(spec: str | Sequence[str], valid: Sequence[str], what: str, option: str,
                example: str, error: type = ConfigError) -> list[str]:
    """``"a,b"`` -> ``["a", "b"]`` (lower-cased, de-duplicated), rejecting names not in
    ``valid`` with a message that lists them and shows ``option example``."""
    parts = spec.split(",") if isinstance(spec, str) else spec
    names = list(dict.fromkeys(p.strip().lower() for p in parts if p.strip()))
    bad = ", ".join(repr(n) for n in names if n not in valid)
    if bad or not names:
        raise error(f"unknown {what}(s) {bad or '(none given)'}; {option} takes a "
                    f"comma-separated list of {', '.join(valid)} (e.g. {option} {example})")
    return names


def condition_table(defaults: Mapping[str, Sequence[str]],
                    profile_table: Mapping[str, Sequence[str]],
                    override: Optional[Mapping[str, Sequence[str]]],
                    check: Optional[Iterable[str]], allowed: Callable[[str], Sequence[str]],
                    error: type = ConfigError) -> dict[str, tuple]:
    """Conditions per student: ``defaults``, then the profile's, then ``override``; every
    student in ``check`` (``None``: every one in the table) must use conditions from
    ``allowed(student)``."""
    table = {k: tuple(v) for k, v in {**defaults, **profile_table, **(override or {})}.items()}
    for student in table if check is None else check:
        unknown = sorted(set(table[student]) - set(allowed(student)))
        if unknown:
            raise error(f"unknown condition(s) {unknown} for {student!r}; choose from "
                        f"{allowed(student)}")
    return table


def check_caps(max_examples: Optional[int], max_steps: Optional[int],
               error: type = ConfigError) -> None:
    """Refuse a cap below 1 (``--max-examples 0`` would leave nothing to train on)."""
    for name, value in (("max_examples", max_examples), ("max_steps", max_steps)):
        if value is not None and value < 1:
            raise error(f"{name} must be >= 1, got {value}")


def capped(value: Optional[int], limit: Optional[int]) -> Optional[int]:
    """``value`` cut to at most ``limit``; ``None`` means unbounded on either side (a size of
    ``None`` is a whole split, a limit of ``None`` is no cap). For ``--max-examples`` and
    ``--max-steps``, which shrink a profile's sizes without touching anything else."""
    if limit is None:
        return value
    return limit if value is None else min(value, limit)


def cap_fields(sizes: Any, max_examples: Optional[int], max_steps: Optional[int],
               examples: Sequence[str], steps: Sequence[str]) -> Any:
    """The sizes dataclass with the ``examples`` fields cut to ``max_examples`` and the
    ``steps`` fields to ``max_steps`` (:func:`capped`); unchanged when both are ``None``."""
    if max_examples is None and max_steps is None:
        return sizes
    cut = {f: capped(getattr(sizes, f), max_examples) for f in examples}
    cut.update({f: capped(getattr(sizes, f), max_steps) for f in steps})
    return dataclasses.replace(sizes, **cut)


def resolve(profile: Optional[str], teacher: Optional[str], seed: Optional[int],
            table: Mapping[str, Any], sizes: Any, cap: Callable[..., Any],
            max_examples: Optional[int], max_steps: Optional[int]) -> tuple[Any, Any]:
    """The run's :class:`ktlab.config.Config` and sizes (``sizes`` or the profile's row of
    ``table``, cut by ``cap(sizes, max_examples, max_steps)``)."""
    from ktlab import config as kconfig
    cfg = kconfig.load(profile, teacher=teacher, seed=seed, verbose=False)
    return cfg, cap(sizes or table[cfg.profile], max_examples, max_steps)


def cache_key(**parts: Any) -> str:
    """16 hex digits of the settings' SHA-256: a changed setting is never read from a cache."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- caches, training

def cache_batches(file: Path, batches: Sequence[Any], compute: Callable[[Any], Any],
                  finish: Callable[[list], Any], save_every: Optional[int] = None,
                  callbacks: Iterable[StageCallback] = (), stage: str = "logits") -> Any:
    """``finish([compute(b) for b in batches])``, computed once and kept in ``file``.

    Resumable: every ``save_every`` batches the finished chunks go atomically to
    ``file.partial``, and an interrupted run continues from there."""
    from ktlab.train import atomic_save
    if file.is_file():
        return torch.load(file, map_location="cpu", weights_only=False)
    partial = file.with_name(file.name + ".partial")
    done: list = []
    if partial.is_file():
        done = torch.load(partial, map_location="cpu", weights_only=False)["chunks"]
    with torch.no_grad():
        for b in range(len(done), len(batches)):
            done.append(compute(batches[b]))
            if save_every and (b + 1) % save_every == 0 and b + 1 < len(batches):
                atomic_save({"chunks": done}, partial)
            for cb in callbacks:
                cb(stage, b + 1)
    value = finish(done)
    atomic_save(value, file)
    partial.unlink(missing_ok=True)
    return value


def accuracy_metric(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Share of argmax predictions equal to the labels (the Trainer's dev metric)."""
    return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}


def planned_steps(n_items: int, batch_size: int, epochs: int, max_steps: Optional[int]) -> int:
    """Optimiser steps of a run: whole batches per epoch times epochs, cut to ``max_steps``."""
    steps = max(1, n_items // batch_size) * epochs
    return min(steps, max_steps) if max_steps else steps


def train_resumable(model: torch.nn.Module, items: list, dev_items: Optional[list],
                    work_dir: Optional[Path], stage: str,
                    callbacks: Iterable[StageCallback] = (), *, lr: float, epochs: int,
                    batch_size: int, seed: int, loss_fn: Optional[Callable], pad_id: int,
                    weight_decay: float, warmup_ratio: float, max_steps: Optional[int],
                    save_every: Optional[int] = None, eval_every: Optional[int] = None,
                    progress: bool = False, optimizer: Any = None, final: Optional[Path] = None,
                    collate_fn: Optional[Callable] = None, metric_fn: Callable = accuracy_metric,
                    metric_name: str = "accuracy", history_scale: float = 1.0,
                    length_bucketing: bool = True) -> dict:
    """Train with ``ktlab.train.Trainer``, or load the finished run; returns the history dict.

    ``final`` (default ``work_dir/model.pt``) holds the finished weights and history: a run that
    finds it loads it instead of training. ``work_dir`` (``None``: nothing on disk) receives a
    checkpoint every ``save_every`` steps, resumed from on the next call and removed at the end."""
    from ktlab.data.collate import PadCollator
    from ktlab.train import TrainConfig, Trainer, atomic_save
    final = final or (work_dir / "model.pt" if work_dir is not None else None)
    if final is not None and final.is_file():
        blob = torch.load(final, map_location="cpu", weights_only=False)
        model.load_state_dict(blob["state"])
        return blob["history"]
    cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                      warmup_ratio=warmup_ratio, seed=seed, max_steps=max_steps,
                      eval_every=eval_every, progress=progress, eval_batch_size=64,
                      output_dir=None if work_dir is None else str(work_dir),
                      save_every=save_every, length_bucketing=length_bucketing,
                      metric_name=metric_name)
    hooks = [lambda trainer, step, cb=cb: cb(stage, step) for cb in callbacks]
    trainer = Trainer(model, cfg, train_dataset=items, eval_dataset=dev_items,
                      collate_fn=collate_fn or PadCollator(pad_id), loss_fn=loss_fn,
                      metric_fn=metric_fn, optimizer=optimizer, callbacks=hooks)
    resume = "latest" if work_dir is not None and (work_dir / "checkpoint.pt").is_file() else None
    history = history_dict(trainer.fit(resume_from=resume), metric_name, history_scale)
    if final is not None:
        atomic_save({"state": trainer.accelerator.unwrap_model(trainer.model).state_dict(),
                     "history": history}, final)
    for name in ("checkpoint.pt", "best.pt") if work_dir is not None else ():
        (work_dir / name).unlink(missing_ok=True)
    return history


# ----------------------------------------------------------------------------- measuring

def time_calls(fn: Callable[[Any], Any], batches: Sequence[Any], singles: Sequence[Any],
               sentences: int) -> dict:
    """Throughput over ``batches`` (``sentences`` in all) and batch-1 latency over ``singles``.

    One warm-up call before each measurement (first calls allocate). Latency is the median and
    the 90th percentile: on a shared machine the mean says more about the neighbours."""
    if not batches or not singles:
        raise ValueError("time_calls needs at least one batch and one single-sentence input")
    fn(batches[0])
    start = time.perf_counter()
    for batch in batches:
        fn(batch)
    seconds = time.perf_counter() - start
    fn(singles[0])
    times = []
    for single in singles:
        start = time.perf_counter()
        fn(single)
        times.append(time.perf_counter() - start)
    return {"throughput_sps": sentences / seconds,
            "latency_ms": 1000 * float(np.median(times)),
            "latency_p90_ms": 1000 * float(np.percentile(times, 90))}


def retime_side_by_side(entries: Mapping[str, tuple[Any, dict]],
                        measure: Callable[[Any], dict], rounds: int = 2) -> None:
    """Re-time every ``(model, record)`` of ``entries`` back to back, in rounds, once all
    training is done: speeds measured minutes apart on a shared machine are not comparable.
    Each record keeps the median of its rounds (the first figure under ``speed_at_train``)."""
    runs: dict[str, list[dict]] = {name: [] for name in entries}
    for _ in range(rounds):
        for name, (model, _) in entries.items():
            runs[name].append(measure(model))
    for name, (_, rec) in entries.items():
        rec["speed_at_train"] = {k: rec[k] for k in ("throughput_sps", "latency_ms",
                                                     "latency_p90_ms")}
        for key in rec["speed_at_train"]:
            rec[key] = round(float(np.median([r[key] for r in runs[name]])), 3)


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    """All parameters and the trainable ones."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_record(name: str, student: str, condition: str, model: torch.nn.Module,
                 speed: Mapping[str, float], **scores: Any) -> dict:
    """One result row: who it is, its ``scores``, parameter counts and CPU speed (rounded)."""
    total, trainable = count_params(model)
    return {"name": name, "student": student, "condition": condition, **scores,
            "params": total, "trainable_params": trainable,
            **{k: round(v, 3) for k, v in speed.items()}}


# ----------------------------------------------------------------------------- results

def run_clock(started: float, cpu_started: Optional[float] = None,
              timings: Optional[Mapping[str, float]] = None) -> dict:
    """When the run started and how long it took (wall, CPU, per stage) for ``results.json``."""
    out: dict[str, Any] = {
        "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1)}
    if cpu_started is not None:
        out["cpu_seconds"] = round(time.process_time() - cpu_started, 1)
    if timings is not None:
        out["timings_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    return out


def caps_record(max_examples: Optional[int], max_steps: Optional[int]) -> Optional[dict]:
    """What ``results.json`` says under ``"capped"``: ``None`` for a run at the profile's sizes,
    else the caps, so a smoke run can never pass for a real one."""
    if max_examples is None and max_steps is None:
        return None
    return {"max_examples": max_examples, "max_steps": max_steps}


def history_dict(history: Any, metric: str, scale: float = 1.0) -> dict:
    """The parts of a ``History`` the plots and tables read, rounded for a readable JSON;
    the eval metric is stored as ``eval_<metric>`` (times ``scale``, e.g. 100 for percent)."""
    return {"step": history.step, "loss": [round(x, 5) for x in history.loss],
            "eval_step": history.eval_step,
            f"eval_{metric}": [round(scale * m[metric], 5) for m in history.eval_metrics],
            "best_step": history.best_step, "train_seconds": round(history.train_seconds, 2),
            "examples_seen": history.examples_seen}


def write_results(results: dict, out: Path, table: str,
                  figures: Mapping[str, Callable[[dict], Any]], plots: bool = True) -> None:
    """``results.json`` (written atomically: a crash never leaves half a file), ``table.md`` and
    one PNG per entry of ``figures`` (name -> function of the results returning a figure)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1))
    os.replace(tmp, out / "results.json")
    (out / "table.md").write_text(table + "\n")
    if plots:
        import matplotlib.pyplot as plt  # no backend switch: inline plots must survive in notebooks
        for name, fn in figures.items():
            fig = fn(results)
            fig.savefig(out / f"{name}.png", dpi=100, bbox_inches="tight")
            plt.close(fig)


def load_results(path: str | Path, schema: str | Sequence[str], experiment: str) -> dict:
    """Read a ``results.json`` (the file or its folder) and check that it has ``schema`` (or one
    of several: the current one first, then older ones the caller knows how to upgrade)."""
    accepted = (schema,) if isinstance(schema, str) else tuple(schema)
    path = Path(path)
    if path.is_dir():
        path = path / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"no results at {path}; run `ktlab run {experiment} --out "
                                f"{path.parent}` first")
    results = json.loads(path.read_text())
    if results.get("schema") not in accepted:
        older = f" (or {', '.join(map(repr, accepted[1:]))})" if len(accepted) > 1 else ""
        raise ValueError(f"{path} has schema {results.get('schema')!r}, expected "
                         f"{accepted[0]!r}{older}")
    return results


def describe_machine() -> dict:
    """What the numbers were measured on (throughput depends on it)."""
    import transformers
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version(), "device": "cpu"}
    try:
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return info


# ----------------------------------------------------------------------------- plots

def teacher_curve_axes(results: dict, eval_values: Sequence[float], eval_label: str,
                       eval_axis: str) -> tuple[Any, Any, Any]:
    """The teacher's fine-tuning curve: training loss per step (left axis) and the dev metric
    at each evaluation (right axis); returns ``(fig, ax, ax2)`` for the caller's title."""
    import matplotlib.pyplot as plt
    h = results["teacher"]["history"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(h["step"], h["loss"], color="tab:blue", alpha=0.7, label="train loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy loss")
    ax2 = ax.twinx()
    ax2.plot(h["eval_step"], eval_values, "o-", color="tab:red", label=eval_label)
    ax2.set_ylabel(eval_axis)
    return fig, ax, ax2
