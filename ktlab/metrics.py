"""Numbers that every experiment reports: accuracy, calibration, speed and size.

Each function takes plain tensors (or arrays) so that notebooks, the Trainer and the experiment
pipelines share one definition. Token-level inputs (``[N, L, C]`` logits with ``[N, L]`` labels)
are flattened and positions labelled ``-100`` are ignored, as in the loss.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
from torch import nn

IGNORE_INDEX = -100


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _flatten(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten token-level logits/labels and drop positions labelled -100."""
    logits, labels = _as_tensor(logits), _as_tensor(labels)
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match labels {tuple(labels.shape)}: "
                         "expected logits [..., C] with labels [...]")
    logits = logits.reshape(-1, logits.shape[-1])
    labels = labels.reshape(-1)
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


def accuracy(logits: Any, labels: Any) -> float:
    """Share of (non-ignored) positions whose arg-max equals the label."""
    logits, labels = _flatten(logits, labels)
    if labels.numel() == 0:
        raise ValueError("no labelled examples (all labels are -100 or the input is empty)")
    return float((logits.argmax(-1) == labels).float().mean())


def classification_metrics(logits: Any, labels: Any) -> dict:
    """Accuracy, ECE and negative log-likelihood: a ``metric_fn`` for the Trainer."""
    logits, labels = _flatten(logits, labels)
    nll = float(torch.nn.functional.cross_entropy(logits.float(), labels.long()))
    return {"accuracy": accuracy(logits, labels), "ece": expected_calibration_error(logits, labels),
            "nll": nll}


def expected_calibration_error(logits: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE (Guo et al. 2017): bin predictions by confidence, average |accuracy - confidence|
    weighted by bin size. 0 = perfectly calibrated. Fine-tuned transformers tend to be
    over-confident, and distillation with a temperature often lowers ECE."""
    conf, acc = _confidence_and_correct(logits, labels)
    edges = torch.linspace(0, 1, n_bins + 1)
    ece = torch.zeros(())
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.float().mean() * (acc[in_bin].mean() - conf[in_bin].mean()).abs()
    return float(ece)


def reliability_curve(logits: Any, labels: Any, n_bins: int = 10) -> dict:
    """Per-bin confidence, accuracy and count, for a reliability diagram."""
    conf, acc = _confidence_and_correct(logits, labels)
    edges = torch.linspace(0, 1, n_bins + 1)
    out = {"bin_lower": [], "bin_upper": [], "confidence": [], "accuracy": [], "count": []}
    for lo, hi in zip(edges[:-1], edges[1:]):
        in_bin = (conf > lo) & (conf <= hi)
        n = int(in_bin.sum())
        out["bin_lower"].append(float(lo))
        out["bin_upper"].append(float(hi))
        out["count"].append(n)
        out["confidence"].append(float(conf[in_bin].mean()) if n else float("nan"))
        out["accuracy"].append(float(acc[in_bin].mean()) if n else float("nan"))
    return out


def _confidence_and_correct(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    logits, labels = _flatten(logits, labels)
    if labels.numel() == 0:
        raise ValueError("no labelled examples (all labels are -100 or the input is empty)")
    probs = logits.float().softmax(-1)
    conf, pred = probs.max(-1)
    return conf, (pred == labels).float()


def parameter_counts(model: nn.Module) -> dict:
    """Total and trainable parameters, and the trainable share (for freezing/PEFT tables)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable,
            "trainable_share": trainable / total if total else 0.0}


def model_size_mb(model: nn.Module) -> float:
    """Parameters and buffers in MiB, as stored (fp32 = 4 bytes each)."""
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    return size / 2 ** 20


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_latency(fn: Callable[[], Any], warmup: int = 2, repeats: int = 10,
                    device: Optional[torch.device | str] = None) -> dict:
    """Wall-clock seconds per call of ``fn`` (median and spread after ``warmup`` calls).

    The median resists the noise of a shared machine; CUDA is synchronised around each call so
    asynchronous kernels are counted."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return {"median_s": statistics.median(times), "mean_s": statistics.fmean(times),
            "min_s": min(times), "max_s": max(times), "repeats": repeats}


@torch.no_grad()
def measure_throughput(model: nn.Module, batches: list[dict], warmup: int = 1,
                       repeats: int = 1) -> dict:
    """Inference examples per second of ``model(**batch)`` over a list of prepared batches."""
    if not batches:
        raise ValueError("measure_throughput needs at least one batch")
    model.eval()
    device = next(model.parameters()).device
    batches = [{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in b.items()}
               for b in batches]
    n = sum(int(next(v for v in b.values() if isinstance(v, torch.Tensor)).shape[0])
            for b in batches)

    def run() -> None:
        for b in batches:
            model(**b)

    lat = measure_latency(run, warmup=warmup, repeats=repeats, device=device)
    return {"examples_per_s": n / lat["median_s"], "seconds": lat["median_s"], "examples": n,
            "ms_per_example": 1000 * lat["median_s"] / n}


# ----------------------------------------------------------------------------- error bars

def accuracy_interval(correct: Sequence[bool] | Sequence[int], level: float = 0.95) -> dict:
    """Accuracy with its exact (Clopper-Pearson) binomial confidence interval.

    872 SST-2 dev sentences give an interval of about +-2.5 points around 85%: two models
    closer than that on the same dev set need a paired test (:func:`mcnemar_test`)."""
    from scipy.stats import beta
    hits, n = int(sum(bool(c) for c in correct)), len(correct)
    if n == 0:
        raise ValueError("accuracy_interval needs at least one example")
    alpha = 1 - level
    low = 0.0 if hits == 0 else float(beta.ppf(alpha / 2, hits, n - hits + 1))
    high = 1.0 if hits == n else float(beta.ppf(1 - alpha / 2, hits + 1, n - hits))
    return {"accuracy": hits / n, "low": low, "high": high, "level": level, "n": n}


def mcnemar_test(pred_a: Sequence[int], pred_b: Sequence[int], labels: Sequence[int]) -> dict:
    """Exact McNemar test for two classifiers scored on the *same* examples.

    Only the examples where exactly one model is right carry information: ``b`` (A right, B
    wrong) and ``c`` (A wrong, B right). Under "no difference" ``b ~ Binomial(b + c, 1/2)``;
    the two-sided p-value is exact. Returns the accuracy difference A - B too."""
    from scipy.stats import binomtest
    if not len(pred_a) == len(pred_b) == len(labels):
        raise ValueError(f"predictions and labels differ in length: {len(pred_a)}, "
                         f"{len(pred_b)}, {len(labels)}")
    a_right = [int(p) == int(y) for p, y in zip(pred_a, labels)]
    b_right = [int(p) == int(y) for p, y in zip(pred_b, labels)]
    b = sum(x and not y for x, y in zip(a_right, b_right))
    c = sum(y and not x for x, y in zip(a_right, b_right))
    p = 1.0 if b + c == 0 else float(binomtest(b, b + c, 0.5).pvalue)
    return {"a_only": b, "b_only": c, "p_value": p,
            "difference": (sum(a_right) - sum(b_right)) / max(len(labels), 1)}


def verdict(test: dict, alpha: float = 0.05) -> str:
    """"better" / "worse" only where the paired test says so, else "no measurable difference"."""
    if test["p_value"] >= alpha:
        return "no measurable difference"
    return "better" if test["difference"] > 0 else "worse"


def paired_difference_interval(pred_a: Sequence[int], pred_b: Sequence[int],
                               labels: Sequence[int], level: float = 0.95) -> dict:
    """The accuracy difference A - B of two classifiers scored on the *same* examples, with
    its Wald confidence interval for paired proportions.

    With ``b`` examples only A gets right and ``c`` only B gets right, out of ``n``:
    ``d = (b - c) / n`` and ``se = sqrt(b + c - (b - c)**2 / n) / n``; the interval is
    ``d +- z * se`` with ``z`` the normal quantile of ``(1 + level) / 2``. The examples both
    models get right (or wrong) carry no information about the difference, which is why this
    interval is much narrower than one that treats the two accuracies as independent samples.
    ``significant``: the interval excludes 0. (With only a handful of discordant examples
    prefer McNemar's exact test, :func:`mcnemar_test`.)"""
    import math

    from scipy.stats import norm
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if len(labels) == 0:
        raise ValueError("paired_difference_interval needs at least one example")
    test = mcnemar_test(pred_a, pred_b, labels)
    n, b, c = len(labels), test["a_only"], test["b_only"]
    d = (b - c) / n
    half = float(norm.ppf((1 + level) / 2)) * math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n
    low, high = d - half, d + half
    return {"difference": d, "low": low, "high": high, "level": level, "n": n, "a_only": b,
            "b_only": c, "significant": bool(low > 0 or high < 0)}


def seed_difference_interval(deltas: Sequence[float], level: float = 0.95) -> dict:
    """Mean and sample standard deviation of per-seed paired differences (a model's score minus
    the baseline's *with the same seed*), with the t confidence interval of the mean and the
    verdict: ``"helped"`` where the interval lies above 0, ``"hurt"`` where it lies below, else
    ``"no measurable difference"`` (always, with a single seed: one run says nothing about the
    spread). With 3 seeds the half-width is ``t(0.975, 2) * std / sqrt(3) = 2.48 std``."""
    import math

    from scipy.stats import t as student_t
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    deltas = [float(d) for d in deltas]
    n = len(deltas)
    if n == 0:
        raise ValueError("seed_difference_interval needs at least one paired difference")
    mean = statistics.fmean(deltas)
    std = statistics.stdev(deltas) if n > 1 else 0.0
    if n < 2:
        low, high = -math.inf, math.inf
    else:
        half = float(student_t.ppf((1 + level) / 2, n - 1)) * std / math.sqrt(n)
        low, high = mean - half, mean + half
    out = "helped" if low > 0 else "hurt" if high < 0 else "no measurable difference"
    return {"mean": mean, "std": std, "n": n, "low": low, "high": high, "level": level,
            "verdict": out}


# ----------------------------------------------------------------------------- entity F1 bootstrap

def _f1_points(correct: Any, predicted: Any, gold: Any) -> Any:
    """``2 * correct / (predicted + gold)`` in points (0 where there is no entity at all)."""
    correct, denom = np.asarray(correct, dtype=float), np.asarray(predicted + gold, dtype=float)
    return np.where(denom > 0, 200 * correct / np.maximum(denom, 1), 0.0)


def _entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                   entity_type: Optional[str]) -> np.ndarray:
    from ktlab.tagging import sentence_entity_counts
    counts = np.asarray(sentence_entity_counts(gold, pred, entity_type), dtype=np.int64)
    if len(counts) == 0:
        raise ValueError("an entity-F1 bootstrap needs at least one sentence")
    return counts.reshape(-1, 3)


def _resampled_sums(counts: np.ndarray, n_boot: int, seed: int, chunk: int = 100) -> np.ndarray:
    """Column sums of ``counts`` ``[n, k]`` over ``n_boot`` resamples of its ``n`` rows drawn with
    replacement (``numpy.random.default_rng(seed)``): ``[n_boot, k]``."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    rng = np.random.default_rng(seed)
    n = len(counts)
    sums = np.empty((n_boot, counts.shape[1]), dtype=np.int64)
    for start in range(0, n_boot, chunk):          # chunks keep [chunk, n, k] small
        stop = min(start + chunk, n_boot)
        sums[start:stop] = counts[rng.integers(0, n, size=(stop - start, n))].sum(axis=1)
    return sums


def _percentiles(values: np.ndarray, level: float) -> tuple[float, float]:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def bootstrap_f1_interval(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                          n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                          entity_type: Optional[str] = None) -> dict:
    """Entity F1 (seqeval strict IOB2, in points, as :func:`ktlab.tagging.ner_scores`) with its
    percentile bootstrap interval over *sentences*: ``n_boot`` resamples of the sentences with
    replacement, F1 recomputed on each from per-sentence (correct, predicted, gold) entity counts
    (:func:`ktlab.tagging.sentence_entity_counts`), so seqeval runs on no resample.

    On CoNLL-2003 test (3,453 sentences) the 95% interval is about +-1.2 points around 80 F1;
    on its first 300 sentences about +-4. ``entity_type`` ("PER", ...) scores one type only."""
    counts = _entity_counts(gold, pred, entity_type)
    tp, predicted, gold_n = counts.sum(axis=0)
    sums = _resampled_sums(counts, n_boot, seed)
    low, high = _percentiles(_f1_points(sums[:, 0], sums[:, 1], sums[:, 2]), level)
    return {"f1": float(_f1_points(tp, predicted, gold_n)), "low": low, "high": high,
            "level": level, "n": len(counts), "n_boot": n_boot, "seed": seed}


def paired_bootstrap_f1(gold: Sequence[Sequence[str]], pred_a: Sequence[Sequence[str]],
                        pred_b: Sequence[Sequence[str]], n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95, entity_type: Optional[str] = None) -> dict:
    """The entity-F1 difference A - B (points) of two taggers on the *same* sentences, with a
    paired bootstrap: each resample of the sentences scores A and B on the same draw, so what
    both get right or wrong cancels (Koehn 2004; Berg-Kirkpatrick et al. 2012).

    Returns ``difference`` (on all sentences), its percentile interval ``low``/``high``, a
    two-sided p-value estimate ``2 * (1 + min(#{d* <= 0}, #{d* >= 0})) / (n_boot + 1)`` (capped
    at 1; it cannot go below ``2 / (n_boot + 1)``), ``significant`` (the interval excludes 0)
    and ``verdict``: ``"better"`` / ``"worse"`` only where the interval excludes 0, else
    ``"no measurable difference"``. Identical predictions give 0, ``[0, 0]`` and p = 1."""
    a = _entity_counts(gold, pred_a, entity_type)
    b = _entity_counts(gold, pred_b, entity_type)
    stacked = np.column_stack([a[:, 0], a[:, 1], b[:, 0], b[:, 1], a[:, 2]])  # gold is shared
    sums = _resampled_sums(stacked, n_boot, seed)
    deltas = (_f1_points(sums[:, 0], sums[:, 1], sums[:, 4])
              - _f1_points(sums[:, 2], sums[:, 3], sums[:, 4]))
    low, high = _percentiles(deltas, level)
    tot = stacked.sum(axis=0)
    f1_a = float(_f1_points(tot[0], tot[1], tot[4]))
    f1_b = float(_f1_points(tot[2], tot[3], tot[4]))
    tail = min(int((deltas <= 0).sum()), int((deltas >= 0).sum()))
    significant = bool(low > 0 or high < 0)
    return {"f1_a": f1_a, "f1_b": f1_b, "difference": f1_a - f1_b, "low": low, "high": high,
            "level": level, "p_value": min(1.0, 2 * (1 + tail) / (n_boot + 1)),
            "significant": significant,
            "verdict": ("better" if low > 0 else "worse") if significant
            else "no measurable difference",
            "n": len(a), "n_boot": n_boot, "seed": seed}
