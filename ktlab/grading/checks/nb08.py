"""Checks for ``solutions/08_deployment.ipynb``: the size of a model's weights after dynamic int8
quantisation, and latency percentiles with the warm-up calls removed.

References are computed here, by code, on seeded random architectures and seeded latency samples,
so a hard-coded answer cannot pass: :func:`int8_bytes` quantises a copy of the model with
``torch.ao.quantization.quantize_dynamic(model, {nn.Linear, nn.LSTM}, dtype=torch.qint8)`` and adds
up what it stores (:func:`int8_bytes_estimate` is the same rule as arithmetic on the fp32 model; a
test keeps the two equal); :func:`latency_reference` is ``np.percentile`` (linear interpolation)
on the samples after the warm-up. Core cases (a failure caps the task at 1/3): embeddings stay
fp32, so an embedding-dominated model shrinks far less than 4x; the Linear and LSTM weight
matrices take one byte per element; the cold first call stays out of p95; exactly ``warmup``
samples are dropped.

The byte accounting (stated in the task): each quantised weight matrix is a per-tensor qint8
tensor, 1 byte per element plus its scale and zero point, which PyTorch keeps as a float64
(``w.q_scale()``) and an int64 (``w.q_zero_point()``): :data:`QPARAM_BYTES` = 16 bytes per matrix.
Biases and every parameter of the other modules (embeddings, LayerNorm, a GRU) keep their dtype's
size, 4 bytes in fp32.
"""
from __future__ import annotations

import copy
import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

from ktlab.grading.checks._shared import own_rng, result_dict, tiny_bert
from ktlab.grading.registry import Checker, task

#: The module types ``quantize_dynamic`` is asked to quantise (exact types, as torch matches them).
QUANTISED = (nn.Linear, nn.LSTM)
#: Bytes of the quantisation parameters of one per-tensor qint8 matrix: a float64 scale and an
#: int64 zero point.
QPARAM_BYTES = 16


# ----------------------------------------------------------------------------- int8 size
def _param_bytes(p: torch.Tensor) -> int:
    return p.numel() * p.element_size()


def int8_bytes_estimate(model: nn.Module, *, quantised: tuple = QUANTISED,
                        qparam_bytes: int = QPARAM_BYTES, bias_bytes: Optional[int] = None,
                        all_matrices: bool = False) -> int:
    """The accounting rule as arithmetic on the fp32 model (works on the ``meta`` device too).

    The keyword arguments describe the typical mistakes, so that a check can name them:
    ``bias_bytes=1`` (biases quantised too), ``all_matrices=True`` (every 2-D parameter at 1
    byte, embeddings included), ``quantised=()`` (nothing quantised)."""
    total = 0
    for module in model.modules():
        is_q = type(module) in quantised
        for name, p in module.named_parameters(recurse=False):
            if (is_q and name.startswith("weight")) or (all_matrices and p.dim() >= 2):
                total += p.numel() + qparam_bytes
            elif is_q and bias_bytes is not None:
                total += p.numel() * bias_bytes
            else:
                total += _param_bytes(p)
    return total


def _quantize(model: nn.Module) -> nn.Module:
    from torch.ao.quantization import quantize_dynamic
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        return quantize_dynamic(copy.deepcopy(model), set(QUANTISED), dtype=torch.qint8)


def _qtensor_bytes(w: torch.Tensor) -> int:
    if w.is_quantized:
        assert w.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric), w.qscheme()
        return w.numel() * w.element_size() + QPARAM_BYTES
    return _param_bytes(w)


def int8_bytes(model: nn.Module) -> int:
    """The reference: quantise a copy of ``model`` with ``quantize_dynamic`` and add up what the
    quantised model stores — each qint8 weight (1 byte per element + 16 bytes of scale and zero
    point), its fp32 bias, and every parameter left as it was. Falls back to
    :func:`int8_bytes_estimate` where this torch has no ``torch.ao.quantization``."""
    try:
        from torch.ao.nn.quantized.dynamic import LSTM as QLSTM, Linear as QLinear
        with own_rng():  # the quantised LSTM draws random initial weights before loading
            qmodel = _quantize(model)
    except (ImportError, AttributeError):
        return int8_bytes_estimate(model)
    total = 0
    for module in qmodel.modules():
        if isinstance(module, QLinear):
            total += _qtensor_bytes(module.weight())
            if module.bias() is not None:
                total += _param_bytes(module.bias())
        elif isinstance(module, QLSTM):
            stored = module._weight_bias()
            total += sum(_qtensor_bytes(w) for w in stored["weight"].values())
            total += sum(_param_bytes(b) for b in stored["bias"].values())
        total += sum(_param_bytes(p) for p in module.parameters(recurse=False))
    return total


def fp32_bytes(model: nn.Module) -> int:
    return sum(_param_bytes(p) for p in model.parameters())


class _Recurrent(nn.Module):
    """Embedding -> LSTM (one layer, one direction) -> GRU -> Linear: the GRU is not quantised.
    (A bias-free LSTM is no case: torch's dynamic quantised LSTM requires biases.)"""

    def __init__(self, vocab: int, emb: int, hidden: int, gru: int, labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.gru = nn.GRU(hidden, gru, batch_first=True)
        self.head = nn.Linear(gru, labels)


class _EmbeddingBag(nn.Module):
    """An embedding table, a LayerNorm and a Linear feed-forward + head: more than half of it is
    embedding, as in the course's teacher and its BiLSTM students."""

    def __init__(self, vocab: int, dim: int, labels: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim)
        self.norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.head = nn.Linear(dim, labels)


class _LSTMStack(nn.Module):
    """A 2-layer BiLSTM and two Linear layers, no embedding: almost everything is quantised."""

    def __init__(self, dim: int, hidden: int, labels: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden, num_layers=2, bidirectional=True, batch_first=True)
        self.fc = nn.Linear(2 * hidden, hidden)
        self.out = nn.Linear(hidden, labels)


def _built(seed: int, make: Callable[[], nn.Module]) -> nn.Module:
    with own_rng():
        torch.manual_seed(seed)
        return make()


def _architectures(t: Checker) -> list:
    """(case name, model): seeded sizes, so a memorised number cannot pass."""
    from ktlab.nn.students import BiLSTMClassifier
    d = [int(v) for v in t.randint(4, 25, 12, seed=801)]
    mlp = _built(1, lambda: nn.Sequential(nn.Linear(d[0], d[1] + 8), nn.ReLU(),
                                          nn.Linear(d[1] + 8, d[2], bias=False), nn.Tanh(),
                                          nn.Linear(d[2], 3)))
    bilstm = _built(2, lambda: BiLSTMClassifier(200 + 10 * d[3], num_labels=2, embed_dim=d[4],
                                                hidden_size=d[5], mlp_size=d[6], num_layers=2))
    bert = tiny_bert(2, 3, "sequence", hidden=16, num_labels=2 + d[7] % 3)
    rec = _built(4, lambda: _Recurrent(50 + d[8], d[9], d[10], d[11], 4))
    return [(f"an MLP of three Linear layers ({d[0]} -> {d[1] + 8} -> {d[2]} -> 3, one without "
             "bias)", mlp),
            (f"a BiLSTM student (vocabulary {200 + 10 * d[3]}, embedding {d[4]}, 2 BiLSTM layers "
             f"of {d[5]})", bilstm),
            ("a tiny BERT (embeddings, LayerNorms, Linear layers)", bert),
            (f"an embedding, an LSTM and a GRU of {d[11]} (a GRU is not quantised)", rec)]


def _nbytes(got, t: Checker) -> int:
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, bool) or not isinstance(got, (int, float, np.integer, np.floating)):
        t.fail(f"return the number of bytes as an int, got a {type(got).__name__}.")
    if float(got) != int(got):
        t.fail(f"a size in bytes is a whole number, got {float(got):g}; count 1 byte per int8 "
               "element and 4 per fp32 element.")
    return int(got)


def _diagnose(model: nn.Module, got: int, want: int) -> str:
    """One sentence naming the mistake that gives ``got``, or the plain comparison."""
    est = lambda **kw: int8_bytes_estimate(model, **kw)  # noqa: E731
    n_q = sum(1 for m in model.modules() if type(m) in QUANTISED
              for n, _ in m.named_parameters(recurse=False) if n.startswith("weight"))
    fp32 = fp32_bytes(model)
    known = [
        (fp32, "that is the fp32 size: nothing was quantised. Count the weight matrices of "
               "nn.Linear and nn.LSTM at 1 byte per element"),
        (fp32 // 4, "that is the fp32 size divided by 4, as if every parameter became int8; "
                    "only the weight matrices of nn.Linear and nn.LSTM do, biases, embeddings "
                    "and LayerNorms stay 4 bytes"),
        (est(all_matrices=True), "you counted every 2-D parameter at 1 byte; quantize_dynamic on "
                                 "{nn.Linear, nn.LSTM} leaves the embedding tables (and any GRU) "
                                 "in fp32, 4 bytes per element"),
        (est(qparam_bytes=0), f"you left out the scale and zero point of each quantised matrix "
                              f"(16 bytes each, {n_q} matrices here)"),
        (est(qparam_bytes=8), "you counted 8 bytes of scale and zero point per matrix; torch "
                              "keeps them as a float64 and an int64, 16 bytes"),
        (est(bias_bytes=1), "you counted the biases at 1 byte; quantize_dynamic keeps biases in "
                            "fp32 (4 bytes per element)"),
        (est(bias_bytes=1, qparam_bytes=0), "you counted the biases at 1 byte (they stay fp32) "
                                            "and left out the 16 bytes of scale and zero point "
                                            "per matrix"),
        (est(quantised=(nn.Linear,)), "you did not quantise the nn.LSTM weights; quantize_dynamic "
                                      "with {nn.Linear, nn.LSTM} stores them in int8 too"),
        (est(quantised=(nn.Linear, nn.LSTM, nn.GRU)), "you quantised the GRU; only nn.Linear and "
                                                     "nn.LSTM are in the set, a GRU stays fp32"),
    ]
    for value, why in known:
        if value != want and got == value:
            return f"expected {want:,} bytes, got {got:,}: {why}."
    return (f"expected {want:,} bytes, got {got:,} (off by {got - want:+,}); count 1 byte per "
            "element + 16 per matrix for the Linear/LSTM weights, 4 bytes for everything else.")


def _size_case(fn, model: nn.Module, t: Checker) -> None:
    want = int8_bytes(model)
    got = _nbytes(fn(copy.deepcopy(model)), t)
    t.is_true(got == want, _diagnose(model, got, want))


def _ratio_case(fn, model: nn.Module, t: Checker, message: Callable[[float, float], str]) -> None:
    """Only the ratio must be right (to 8%): the 16 bytes per matrix and the biases' bytes are
    other cases' points; what this case catches (embeddings in int8, matrices left in fp32) moves
    the ratio by far more."""
    fp32, want = fp32_bytes(model), int8_bytes(model)
    got = _nbytes(fn(copy.deepcopy(model)), t)
    t.is_true(got > 0, f"your size is {got} bytes; it must be positive.")
    ratio, want_ratio = fp32 / got, fp32 / want
    t.is_true(abs(ratio - want_ratio) <= 0.08 * want_ratio, message(ratio, want_ratio))


@task("08.int8_size", points=2, title="the size of a model's weights after dynamic int8 "
      "quantisation",
      hint="loop over model.modules(); for an nn.Linear or nn.LSTM count each parameter whose name "
           "starts with 'weight' as numel() + 16 bytes, everything else as numel() * 4.")
def check_int8_size(fn, t: Checker) -> None:
    t.callable(fn, "your int8_size function")
    for name, model in _architectures(t):
        with t.case(name):
            _size_case(fn, model, t)
    vocab = 400 + 10 * int(t.randint(0, 20, 1, seed=802))
    emb_model = _built(5, lambda: _EmbeddingBag(vocab, 32, 2))
    share = emb_model.embedding.weight.numel() / sum(p.numel() for p in emb_model.parameters())
    with t.case(f"embeddings stay fp32: a model that is {100 * share:.0f}% embedding table shrinks "
                "far less than 4x", core=True):
        _ratio_case(fn, emb_model, t, lambda got, want: (
            f"this model is {100 * share:.0f}% embedding table, so int8 shrinks it only "
            f"{want:.2f}x, your size gives {got:.2f}x: quantize_dynamic on {{nn.Linear, nn.LSTM}} "
            "leaves nn.Embedding (and LayerNorm) in fp32, 4 bytes per element."))
    hidden = 48 + int(t.randint(0, 16, 1, seed=803))
    lstm_model = _built(6, lambda: _LSTMStack(16, hidden, 3))
    with t.case(f"Linear and LSTM weight matrices take 1 byte per element (a 2-layer BiLSTM of "
                f"{hidden} and two Linear layers shrink almost 4x)", core=True):
        _ratio_case(fn, lstm_model, t, lambda got, want: (
            f"almost every parameter here is a weight matrix of an nn.LSTM or nn.Linear, so int8 "
            f"shrinks it {want:.3f}x, your size gives {got:.3f}x: count those matrices at 1 byte "
            "per element (all of weight_ih_l*, weight_hh_l*, with _reverse), biases at 4."))


# ----------------------------------------------------------------------------- latency
def latency_reference(samples_ms, warmup: int) -> dict:
    """p50 and p95 (``np.percentile``, linear interpolation) of the samples after ``warmup``."""
    kept = np.asarray(samples_ms, dtype=np.float64)[warmup:]
    if kept.size == 0:
        raise ValueError(f"no samples left after dropping {warmup} warm-up call(s)")
    return {"p50": float(np.percentile(kept, 50)), "p95": float(np.percentile(kept, 95))}


def _samples(t: Checker, n: int, seed: int, cold: tuple = ()) -> list:
    """Seeded steady-state latencies around 5 ms (log-normal, a few slow calls), in ms; ``cold``
    replaces the first values (the cold calls)."""
    steady = 5.0 * torch.exp(0.25 * t.randn(n, seed=seed))
    slow = t.randint(0, 40, n, seed=seed + 1) == 0  # one call in 40 waits on something
    steady = torch.where(slow, steady * 3.0, steady)
    out = [round(float(v), 4) for v in steady.double()]
    out[:len(cold)] = list(cold)
    return out


def _call(fn, samples, warmup: int, t: Checker, unchanged: bool = False) -> dict:
    given = copy.deepcopy(samples)
    got = result_dict(fn(given, warmup), ("p50", "p95"), t, "summary")
    if unchanged:
        t.is_true(given == samples, "your function changed the samples list it was given (e.g. "
                  "with .pop or .sort); work on a copy or a slice.")
    for key in ("p50", "p95"):
        try:
            float(got[key])
        except (TypeError, ValueError):
            t.fail(f"the {key} must be a number, got {type(got[key]).__name__}.")
    return got


def _latency_diagnose(samples, warmup: int, got: dict, want: dict) -> str:
    kept = np.asarray(samples, dtype=np.float64)[warmup:]
    g = (float(got["p50"]), float(got["p95"]))
    same = lambda a, b: abs(a - b) <= 1e-6 * max(1.0, abs(b))  # noqa: E731
    for w in range(0, min(len(samples), warmup + 6)):
        if w != warmup:
            alt = latency_reference(samples, w)
            if same(g[0], alt["p50"]) and same(g[1], alt["p95"]):
                return (f"your p50/p95 are those of the samples after dropping {w} call(s), but "
                        f"warmup={warmup}: drop exactly the first {warmup} (samples[warmup:]).")
    for method in ("nearest", "lower", "higher", "midpoint", "inverted_cdf", "closest_observation"):
        alt = np.percentile(kept, [50, 95], method=method)
        if same(g[1], float(alt[1])) and not same(g[1], want["p95"]):
            return (f"your p95 {g[1]:.6g} is numpy's method='{method}'; use the default linear "
                    f"interpolation, np.percentile(kept, 95) = {want['p95']:.6g}.")
    if same(g[0], float(kept.mean())):
        return (f"your p50 {g[0]:.6g} is the mean of the kept samples; p50 is the median, "
                f"{want['p50']:.6g}.")
    if same(g[1], float(kept.max())):
        return (f"your p95 {g[1]:.6g} is the maximum; p95 is np.percentile(kept, 95) = "
                f"{want['p95']:.6g}.")
    which = "p50" if not same(g[0], want["p50"]) else "p95"
    return (f"the {which} is {float(got[which]):.6g}, expected {want[which]:.6g} "
            f"(np.percentile of samples[{warmup}:]).")


_METHODS = ("linear", "nearest", "lower", "higher", "midpoint", "inverted_cdf",
            "closest_observation", "averaged_inverted_cdf", "hazen", "weibull", "median_unbiased")


def _latency_case(fn, samples, warmup: int, t: Checker, core: bool = False) -> None:
    """``core``: the case is about which samples are kept, so any of numpy's percentile methods
    on exactly those samples passes (the interpolation is another case's point)."""
    want = latency_reference(samples, warmup)
    got = _call(fn, samples, warmup, t)
    kept = np.asarray(samples, dtype=np.float64)[warmup:]
    methods = _METHODS if core else _METHODS[:1]
    candidates = [np.percentile(kept, [50, 95], method=m) for m in methods]
    ok = any(all(abs(float(got[k]) - float(c[i])) <= 1e-6 * max(1.0, abs(float(c[i])))
                 for i, k in enumerate(("p50", "p95"))) for c in candidates)
    t.is_true(ok, _latency_diagnose(samples, warmup, got, want))


@task("08.latency_percentiles", points=2, title="latency percentiles with the warm-up removed",
      hint="kept = np.asarray(samples_ms, dtype=float)[warmup:]; raise ValueError if it is empty; "
           "return {'p50': float(np.percentile(kept, 50)), 'p95': float(np.percentile(kept, 95))}.")
def check_latency_percentiles(fn, t: Checker) -> None:
    t.callable(fn, "your latency_summary function")
    for seed, (n, warmup, kind) in enumerate([(120, 10, list), (57, 3, np.array),
                                              (25, 0, list), (200, 20, tuple)]):
        how = {list: "a list", np.array: "a numpy array", tuple: "a tuple"}[kind]
        with t.case(f"{n} samples ({how}), warmup={warmup}"):
            samples = _samples(t, n, 10 * seed)
            _latency_case(fn, kind(samples), warmup, t)
    with t.case("13 samples, warmup=2: numpy's linear interpolation between samples"):
        _latency_case(fn, _samples(t, 13, 50), 2, t)
    with t.case("the samples list is left unchanged"):
        samples = _samples(t, 30, 55)
        _call(fn, samples, 4, t, unchanged=True)
    with t.case("nothing left after the warm-up raises ValueError"):
        t.raises(ValueError, lambda: fn([4.0, 5.0, 6.0], 3),
                 "3 samples with warmup=3 leave nothing to summarise")
    cold = 300.0 + 100.0 * float(t.randn(1, seed=60).abs())
    with t.case(f"the cold first call ({cold:.0f} ms) stays out of p95 (warmup=1, 20 samples)",
                core=True):
        samples = _samples(t, 20, 61, cold=(cold,))
        want, leaked = latency_reference(samples, 1), latency_reference(samples, 0)
        got = _call(fn, samples, 1, t)
        if abs(float(got["p95"]) - leaked["p95"]) <= 1e-6 * leaked["p95"]:
            t.fail(f"the cold first call leaked into your p95: {float(got['p95']):.2f} ms instead "
                   f"of {want['p95']:.2f} ms. The first call allocates and picks kernels; drop the "
                   "warm-up samples before taking percentiles, or p95 describes the first request, "
                   "not the service.")
        _latency_case(fn, samples, 1, t, core=True)
    with t.case("exactly `warmup` calls are dropped (five cold calls, warmup=5)", core=True):
        samples = _samples(t, 40, 70, cold=(250.0, 90.0, 35.0, 14.0, 8.5))
        _latency_case(fn, samples, 5, t, core=True)
