"""Measuring a served model honestly: warm-up excluded, percentiles, what the clock includes.

Three mistakes make "the small model is not faster in practice" reports:

1. **timing the first calls**: the first forward passes allocate memory, pick kernels and fill
   caches; they can take 10-100× longer. We run ``warmup`` untimed calls first.
2. **reporting a mean**: latency has a long tail; users feel the p95. We report p50 and p95.
3. **leaving out tokenisation** (or only timing it): at batch 1 a BiLSTM's forward pass takes
   a fraction of a millisecond, about what tokenising the text costs. We time both: the model
   alone (``latency_model``) and text-to-label (``latency_end_to_end``).

Each variant runs in a fresh process (:func:`run_isolated`, ``python -m ktlab.deploy.measure``
with a JSON spec on stdin): peak memory is a property of a process, and one that
already loaded the teacher cannot say what the student alone needs (see :func:`peak_rss_mb`).
"""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np


def percentiles(samples_ms: Sequence[float]) -> dict:
    """p50, p95 (linear interpolation, ``np.percentile``), mean and count of ``samples_ms``."""
    if len(samples_ms) == 0:
        raise ValueError("no latency samples: time at least one call")
    a = np.asarray(samples_ms, dtype=float)
    return {"p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "mean_ms": float(a.mean()), "n": int(a.size)}


def time_latency(call: Callable[[Any], Any], inputs: Sequence[Any], warmup: int = 10) -> dict:
    """Call ``call(x)`` once per input, one at a time, after ``warmup`` untimed calls (on the
    first inputs); the percentiles of the timed calls in milliseconds."""
    if not inputs:
        raise ValueError("time_latency needs at least one input")
    for i in range(warmup):
        call(inputs[i % len(inputs)])
    samples = []
    for x in inputs:
        t0 = time.perf_counter()
        call(x)
        samples.append(1000 * (time.perf_counter() - t0))
    return percentiles(samples)


def time_throughput(call: Callable[[Sequence[Any]], Any], items: Sequence[Any],
                    batch_size: int = 32) -> tuple[float, list]:
    """Items per second through ``call(batch)`` over all ``items`` (one untimed batch first),
    and the concatenated outputs."""
    if not items:
        raise ValueError("time_throughput needs at least one item")
    call(items[:batch_size])
    outputs: list = []
    t0 = time.perf_counter()
    for i in range(0, len(items), batch_size):
        outputs.extend(call(items[i:i + batch_size]))
    return len(items) / (time.perf_counter() - t0), outputs


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, not ``getrusage``'s ``ru_maxrss``:
    Linux carries ``ru_maxrss`` over from the parent through fork + exec, so a child started by
    a process holding the teacher would report the teacher's memory. Elsewhere ``ru_maxrss``
    (KiB on Linux, bytes on macOS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024          # kB -> MB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


# ----------------------------------------------------------------------------- one variant

def _torch_logits_fn(path: str, threads: int) -> Callable:
    import torch
    torch.set_num_threads(threads)
    model = torch.load(path, weights_only=False).eval()

    def logits(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        return (out if isinstance(out, torch.Tensor) else out.logits).float().numpy()
    return logits


def measure_variant(spec: dict) -> dict:
    """Load one variant and measure it (see the module docstring). ``spec``: ``kind`` ("torch":
    a pickled module at ``path``; "onnx": a bundle folder), ``tokenizer`` (tokenizer.json),
    ``max_length``, ``texts``, ``labels``, ``reference`` (fp32 predictions or None),
    ``threads``, ``latency_n``, ``batch_size``, ``warmup``."""
    from ktlab.deploy.runtime import Predictor, encode_texts, load_tokenizer
    threads = int(spec.get("threads") or 1)
    t0 = time.perf_counter()
    if spec["kind"] == "torch":
        tokenizer = load_tokenizer(spec["tokenizer"])
        pad_id = tokenizer.token_to_id("[PAD]") or 0
        max_length = int(spec["max_length"])
        logits_fn = _torch_logits_fn(spec["path"], threads)

        def encode(texts: Sequence[str]) -> tuple:
            return encode_texts(tokenizer, texts, max_length, pad_id)[:2]
        file_bytes = Path(spec["path"]).stat().st_size
    elif spec["kind"] == "onnx":
        predictor = Predictor.load(spec["path"], threads=threads)
        logits_fn = predictor.logits

        def encode(texts: Sequence[str]) -> tuple:
            return predictor.encode(texts)[:2]
        file_bytes = (Path(spec["path"]) / predictor.manifest["model"]["file"]).stat().st_size
    else:
        raise ValueError(f"unknown variant kind {spec['kind']!r}; use 'torch' or 'onnx'")
    load_seconds = time.perf_counter() - t0

    texts, labels = list(spec["texts"]), list(spec["labels"])

    def label_batch(batch: Sequence[str]) -> list[int]:
        return logits_fn(*encode(batch)).argmax(-1).tolist()

    throughput, predictions = time_throughput(label_batch, texts, int(spec.get("batch_size", 32)))
    n = int(spec.get("latency_n", 100))
    timed = [texts[i % len(texts)] for i in range(n)]
    encoded = [encode([t]) for t in timed]
    warmup = int(spec.get("warmup", 10))
    latency_model = time_latency(lambda e: logits_fn(*e), encoded, warmup)
    latency_end_to_end = time_latency(lambda t: label_batch([t]), timed, warmup)
    reference = spec.get("reference")
    return {
        "accuracy": float(np.mean([p == y for p, y in zip(predictions, labels)])),
        "agreement": (float(np.mean([p == r for p, r in zip(predictions, reference)]))
                      if reference is not None else None),
        "predictions": predictions, "latency_model": latency_model,
        "latency_end_to_end": latency_end_to_end, "throughput_sps": throughput,
        "peak_rss_mb": peak_rss_mb(), "load_seconds": load_seconds, "file_bytes": file_bytes,
        "threads": threads, "sentences": len(texts)}


def run_isolated(spec: dict, timeout: float = 3600) -> dict:
    """:func:`measure_variant` in a fresh Python process (its own peak memory, cold caches)."""
    threads = str(int(spec.get("threads") or 1))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "RAYON_NUM_THREADS": threads}   # rayon: the tokenizers library's thread pool
    proc = subprocess.run([sys.executable, "-m", "ktlab.deploy.measure"], input=json.dumps(spec),
                          capture_output=True, text=True, env=env, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"measuring {spec.get('path')} failed (exit {proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    spec = json.loads(sys.stdin.read())
    print(json.dumps(measure_variant(spec)))


if __name__ == "__main__":
    main()
