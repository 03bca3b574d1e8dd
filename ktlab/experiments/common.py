"""Pieces every experiment pipeline needs in the same form: timing a model on the CPU, turning
a training :class:`ktlab.train.History` into JSON, and writing / reading a results folder
(``results.json``, ``table.md``, PNG plots) with a schema check.

They live here so that the sentiment, NER and multi-task pipelines share one definition.
"""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np
import torch


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


def capped(value: Optional[int], limit: Optional[int]) -> Optional[int]:
    """``value`` cut to at most ``limit``; ``None`` means unbounded on either side (a size of
    ``None`` is a whole split, a limit of ``None`` is no cap). For ``--max-examples`` and
    ``--max-steps``, which shrink a profile's sizes without touching anything else."""
    if limit is None:
        return value
    return limit if value is None else min(value, limit)


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
