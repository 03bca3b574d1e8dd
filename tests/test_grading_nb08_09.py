"""The notebook-08 and -09 exercise checks: references pass, typical mistakes lose the right points
with a reason, missing the point of a task caps it at a third, and the references themselves are
what torch and captum compute. In-process (no kernel): a few seconds."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ktlab.grading import TASKS, run_check, tasks_for
from ktlab.grading.checks import nb08, nb09
from ktlab.grading.registry import CORE_CAP_LINE, Checker, core_cap


# ----------------------------------------------------------------------------- 08.int8_size
def _int8(model, qparam=16, bias=None, quantised=(nn.Linear, nn.LSTM), all_2d=False):
    """A student's int8_size, written out (not the check's helper), with the usual knobs."""
    total = 0
    for module in model.modules():
        q = type(module) in quantised
        for name, p in module.named_parameters(recurse=False):
            if (q and name.startswith("weight")) or (all_2d and p.dim() >= 2):
                total += p.numel() + qparam
            elif q and bias is not None:
                total += p.numel() * bias
            else:
                total += p.numel() * p.element_size()
    return total


def int8_size(model):
    return _int8(model)


def _int8_isinstance(model):  # isinstance instead of type(...) in: the same on these models
    total = 0
    for module in model.modules():
        q = isinstance(module, (nn.Linear, nn.LSTM))
        for name, p in module.named_parameters(recurse=False):
            total += p.numel() + 16 if q and name.startswith("weight") else 4 * p.numel()
    return total


def _int8_everything_quarter(model):
    return sum(p.numel() for p in model.parameters())


def _int8_embeddings_too(model):
    return _int8(model, all_2d=True)


def _int8_no_qparams(model):
    return _int8(model, qparam=0)


def _int8_bias_one_byte(model):
    return _int8(model, bias=1)


def _int8_linear_only(model):
    return _int8(model, quantised=(nn.Linear,))


def _int8_nothing(model):
    return sum(4 * p.numel() for p in model.parameters())


def _int8_float(model):
    return float(_int8(model)) + 0.5


# ----------------------------------------------------------------------------- 08.latency
def latency_summary(samples, warmup):
    kept = np.asarray(samples, dtype=float)[warmup:]
    if kept.size == 0:
        raise ValueError("empty")
    return {"p50": float(np.percentile(kept, 50)), "p95": float(np.percentile(kept, 95))}


def _latency_torch(samples, warmup):  # torch.quantile interpolates linearly too
    kept = torch.tensor(list(samples), dtype=torch.float64)[warmup:]
    if kept.numel() == 0:
        raise ValueError("empty")
    return {"p50": float(torch.quantile(kept, 0.5)), "p95": float(torch.quantile(kept, 0.95))}


def _latency_keeps_warmup(samples, warmup):
    if warmup >= len(samples):
        raise ValueError("empty")
    return latency_summary(samples, 0)


def _latency_drops_one(samples, warmup):
    if warmup >= len(samples):
        raise ValueError("empty")
    return latency_summary(samples, min(warmup, 1))


def _latency_nearest(samples, warmup):
    kept = np.asarray(samples, dtype=float)[warmup:]
    if kept.size == 0:
        raise ValueError("empty")
    return {"p50": float(np.percentile(kept, 50, method="nearest")),
            "p95": float(np.percentile(kept, 95, method="nearest"))}


def _latency_mean(samples, warmup):
    kept = np.asarray(samples, dtype=float)[warmup:]
    if kept.size == 0:
        raise ValueError("empty")
    return {"p50": float(kept.mean()), "p95": float(np.percentile(kept, 95))}


def _latency_pops(samples, warmup):
    samples = samples if isinstance(samples, list) else list(samples)
    if warmup >= len(samples):
        raise ValueError("empty")
    del samples[:warmup]
    return latency_summary(samples, 0)


# ----------------------------------------------------------------------------- 09.ig_riemann
def _ig(forward, x, baseline, steps, alphas=None):
    alphas = [k / steps for k in range(1, steps + 1)] if alphas is None else alphas
    total = torch.zeros_like(x)
    for a in alphas:
        z = (baseline + a * (x - baseline)).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(forward(z).sum(), z)
        total += g
    return (x - baseline) * total / len(alphas)


def integrated_gradients(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps)


def _ig_batched(forward, x, baseline, steps):  # all path points in one batch, as captum does
    alphas = torch.linspace(1 / steps, 1, steps).view(-1, *[1] * x.dim())
    z = (baseline + alphas * (x - baseline)).reshape(-1, *x.shape[1:]).requires_grad_(True)
    forward(z).sum().backward()
    return (x - baseline) * z.grad.view(steps, *x.shape).mean(0)


def _ig_left(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps, [k / steps for k in range(steps)])


def _grad_times_input(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps, [1.0])


def _ig_times_x(forward, x, baseline, steps):
    return x * _ig(forward, x, baseline, steps) / (x - baseline)


def _ig_no_delta(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps) / (x - baseline)


def _ig_summed(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps) * steps


def _ig_wrong_shape(forward, x, baseline, steps):
    return _ig(forward, x, baseline, steps).flatten(1).sum(1)


# ----------------------------------------------------------------------------- 09.deletion_test
def _delete(predict, ids, scores, k, *, skip_special=True, lowest=False, new_class=False,
            pad=False, reorder=False, sign=1.0):
    before = predict(ids.unsqueeze(0))[0]
    c = int(before.argmax())
    candidates = [i for i in range(len(ids)) if not (skip_special and int(ids[i]) in (101, 102))]
    ranked = sorted(candidates, key=lambda i: float(scores[i]), reverse=not lowest)
    top = set(ranked[:k])
    if pad:
        kept = ids.clone()
        kept[list(top)] = 0
    else:
        order = sorted(range(len(ids)), key=lambda i: -float(scores[i])) if reorder \
            else range(len(ids))
        kept = ids[[i for i in order if i not in top]]
    after = predict(kept.unsqueeze(0))[0]
    if new_class:
        c = int(after.argmax())
    return sign * float(before[c] - after[c])


def deletion_drop(predict, ids, scores, k):
    return _delete(predict, ids, scores, k)


def _deletion_topk(predict, ids, scores, k):  # topk on masked scores: the same result
    p = predict(ids[None])[0]
    c = int(p.argmax())
    s = scores.clone()
    s[(ids == 101) | (ids == 102)] = -float("inf")
    keep = torch.ones(len(ids), dtype=torch.bool)
    keep[s.topk(k).indices] = False
    return float(p[c] - predict(ids[keep][None])[0, c])


def _deletion_specials(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, skip_special=False)


def _deletion_new_class(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, new_class=True)


def _deletion_lowest(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, lowest=True)


def _deletion_pad(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, pad=True)


def _deletion_reordered(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, reorder=True)


def _deletion_sign(predict, ids, scores, k):
    return _delete(predict, ids, scores, k, sign=-1.0)


def _deletion_unbatched(predict, ids, scores, k):
    return float(predict(ids)[0])


# ----------------------------------------------------------------------------- 09.fgm_step
def _norm(grad):
    return grad.flatten(1).norm(dim=1).view(-1, *[1] * (grad.dim() - 1))


def fgm_perturbation(emb, grad, eps):
    n = _norm(grad)
    return torch.where(n > 0, eps * grad / torch.where(n > 0, n, torch.ones_like(n)),
                       torch.zeros_like(grad))


def _fgm_plus_tiny(emb, grad, eps):  # the common `+ 1e-8` guard: passes
    return eps * grad / (_norm(grad) + 1e-8)


def _fgm_batch_norm(emb, grad, eps):
    return eps * grad / grad.norm()


def _fgm_per_token(emb, grad, eps):
    return eps * grad / grad.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def _fgsm(emb, grad, eps):
    return eps * grad.sign()


def _fgm_descent(emb, grad, eps):
    return -fgm_perturbation(emb, grad, eps)


def _fgm_nan(emb, grad, eps):
    return eps * grad / _norm(grad)


def _fgm_in_place(emb, grad, eps):
    r = fgm_perturbation(emb, grad, eps)
    emb.add_(r)
    return r


def _fgm_returns_perturbed(emb, grad, eps):
    return emb + fgm_perturbation(emb, grad, eps)


# ----------------------------------------------------------------------------- tables
REFERENCES = [("08.int8_size", int8_size), ("08.int8_size", _int8_isinstance),
              ("08.latency_percentiles", latency_summary),
              ("08.latency_percentiles", _latency_torch),
              ("09.ig_riemann", integrated_gradients), ("09.ig_riemann", _ig_batched),
              ("09.deletion_test", deletion_drop), ("09.deletion_test", _deletion_topk),
              ("09.fgm_step", fgm_perturbation), ("09.fgm_step", _fgm_plus_tiny)]


@pytest.mark.parametrize("task_id,obj", REFERENCES,
                         ids=[f"{t}-{f.__name__}" for t, f in REFERENCES])
def test_correct_implementations_score_full_points(task_id, obj):
    r = run_check(task_id, obj)
    assert r.passed and r.points == r.max_points == 2, r.report()
    assert any(line.core for line in r.lines)


#: (task, the student's function, points, a phrase of the reason). Points are the check's own
#: arithmetic (passed cases / cases, capped at 0.66 when a core case fails).
WRONG = [
    ("08.int8_size", _int8_no_qparams, 0.67, "scale and zero point of each quantised matrix"),
    ("08.int8_size", _int8_bias_one_byte, 0.67, "biases at 1 byte"),
    ("08.int8_size", _int8_float, 0.0, "a size in bytes is a whole number"),
    ("08.latency_percentiles", _latency_nearest, 0.89, "method='nearest'"),
    ("08.latency_percentiles", _latency_pops, 1.78, "changed the samples list"),
    ("09.ig_riemann", _ig_left, 0.86, "the left Riemann sum"),
    ("09.ig_riemann", _ig_wrong_shape, 0.29, "must have x's shape"),
    ("09.deletion_test", _deletion_pad, 1.0, "replaced the tokens by [PAD]"),
    ("09.deletion_test", _deletion_unbatched, 0.0, "pass ids.unsqueeze(0)"),
    ("09.fgm_step", _fgm_nan, 1.75, "NaN/inf where the gradient is zero"),
    ("09.fgm_step", _fgm_in_place, 1.75, "changed the embeddings or the gradient in place"),
]


@pytest.mark.parametrize("task_id,student,points,reason", WRONG,
                         ids=[f"{t}-{s.__name__}" for t, s, _, _ in WRONG])
def test_typical_mistakes_lose_points_with_a_reason(task_id, student, points, reason):
    r = run_check(task_id, student)
    assert r.points == pytest.approx(points, abs=0.01), r.report()
    assert any(reason in why for why in r.reasons()), r.report()
    assert "Traceback" not in r.report()


#: (task, the student's function, the core case it fails, a phrase of that case's reason)
MISSES_THE_POINT = [
    ("08.int8_size", _int8_everything_quarter, "embeddings stay fp32", "only 1.41x"),
    ("08.int8_size", _int8_embeddings_too, "embeddings stay fp32", "leaves nn.Embedding"),
    ("08.int8_size", _int8_nothing, "take 1 byte per element", "count those matrices at 1 byte"),
    ("08.int8_size", _int8_linear_only, "take 1 byte per element", "weight_ih_l*, weight_hh_l*"),
    ("08.latency_percentiles", _latency_keeps_warmup, "the cold first call",
     "leaked into your p95"),
    ("08.latency_percentiles", _latency_drops_one, "exactly `warmup` calls are dropped",
     "after dropping 1 call(s), but warmup=5"),
    ("08.latency_percentiles", _latency_mean, "the cold first call", "is the mean"),
    ("09.ig_riemann", _grad_times_input, "not taken at x", "at x only"),
    ("09.ig_riemann", _ig_times_x, "completeness", "multiplied by x instead of (x - baseline)"),
    ("09.ig_riemann", _ig_no_delta, "completeness", "returned the averaged gradient"),
    ("09.ig_riemann", _ig_summed, "completeness", "summed the gradients"),
    ("09.deletion_test", _deletion_specials, "[CLS] and [SEP] are never deleted",
     "you deleted [CLS] or [SEP]"),
    ("09.deletion_test", _deletion_new_class, "the class predicted for the full sentence",
     "the class predicted *after* the deletion"),
    ("09.deletion_test", _deletion_sign, "[CLS] and [SEP] are never deleted", "wrong sign"),
    ("09.deletion_test", _deletion_sign, "the class predicted for the full sentence",
     "wrong sign"),
    ("09.deletion_test", _deletion_lowest, "[CLS] and [SEP] are never deleted",
     "the k *lowest*-scored tokens"),
    ("09.deletion_test", _deletion_reordered, "[CLS] and [SEP] are never deleted",
     "keep them in their original order"),
    ("09.fgm_step", _fgm_batch_norm, "for every example", "the norm of the whole batch"),
    ("09.fgm_step", _fgm_per_token, "for every example", "each token's vector separately"),
    ("09.fgm_step", _fgsm, "along the gradient", "FGSM"),
    ("09.fgm_step", _fgm_descent, "along the gradient", "points against the gradient"),
    ("09.fgm_step", _fgm_returns_perturbed, "for every example", "expected 0.3 each"),
]


@pytest.mark.parametrize("task_id,student,core,reason", MISSES_THE_POINT,
                         ids=[f"{t}-{s.__name__}" for t, s, _, _ in MISSES_THE_POINT])
def test_missing_the_point_caps_the_task_at_a_third(task_id, student, core, reason):
    r = run_check(task_id, student)
    assert r.status == "failed" and r.capped, r.report()
    assert r.points <= core_cap(r.max_points), r.report()
    assert any(core in name for name in r.core_failed), r.report()
    failed = [line for line in r.lines if line.core and not line.passed and core in line.name]
    assert any(reason in line.message for line in failed), r.report()
    assert any(why.startswith(f"{CORE_CAP_LINE}: ") for why in r.reasons())


def test_not_attempted_scores_zero():
    def todo(*args):
        raise NotImplementedError("not yet")
    for task_id in ("08.int8_size", "08.latency_percentiles", "09.ig_riemann",
                    "09.deletion_test", "09.fgm_step"):
        r = run_check(task_id, todo)
        assert (r.points, r.status) == (0, "not attempted"), r.report()


def test_tasks_points_and_hints():
    assert [t.task_id for t in tasks_for("08")] == ["08.int8_size", "08.latency_percentiles"]
    assert [t.task_id for t in tasks_for("09")] == ["09.ig_riemann", "09.deletion_test",
                                                     "09.fgm_step"]
    for task_id in ("08.int8_size", "08.latency_percentiles", "09.ig_riemann",
                    "09.deletion_test", "09.fgm_step"):
        assert TASKS[task_id].points == 2 and TASKS[task_id].hint and TASKS[task_id].title


@pytest.mark.parametrize("task_id,obj", [("08.int8_size", _int8_embeddings_too),
                                         ("08.latency_percentiles", latency_summary),
                                         ("09.ig_riemann", _ig_left),
                                         ("09.deletion_test", _deletion_new_class),
                                         ("09.fgm_step", fgm_perturbation)])
def test_checks_do_not_touch_the_global_rng(task_id, obj):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check(task_id, obj)
    assert torch.equal(torch.rand(3), expected)


# ----------------------------------------------------------------------------- the references
def test_the_int8_accounting_rule_is_what_quantize_dynamic_stores():
    t = Checker("test")
    models = [m for _, m in nb08._architectures(t)]
    models += [nb08._EmbeddingBag(500, 32, 2), nb08._LSTMStack(16, 48, 3)]
    for model in models:
        assert nb08.int8_bytes(model) == nb08.int8_bytes_estimate(model) == int8_size(model)
    # and the size torch.save writes for the quantised model moves with it (a sanity check of
    # the rule's direction: int8 state is about a quarter for the LSTM stack, most for the bag)
    lstm, bag = nb08._LSTMStack(16, 48, 3), nb08._EmbeddingBag(500, 32, 2)
    assert nb08.fp32_bytes(lstm) / nb08.int8_bytes(lstm) > 3.5
    assert nb08.fp32_bytes(bag) / nb08.int8_bytes(bag) < 1.6


def test_the_int8_estimate_works_on_the_meta_device():
    from ktlab.nn.students import BiLSTMClassifier
    with torch.device("meta"):
        model = BiLSTMClassifier(30522)
    embedding = 30522 * 300 * 4
    assert embedding < nb08.int8_bytes_estimate(model) < nb08.fp32_bytes(model)


def test_latency_reference_is_numpy_percentile_after_the_warmup():
    samples = [100.0, 9.0, 5.0, 6.0, 7.0, 5.5]
    assert nb08.latency_reference(samples, 2) == {"p50": float(np.percentile(samples[2:], 50)),
                                                  "p95": float(np.percentile(samples[2:], 95))}
    with pytest.raises(ValueError):
        nb08.latency_reference(samples, 6)


def test_ig_reference_is_complete_and_captum_right_riemann():
    forward = nb09._Scorer(6, 12, 1, 0, 960)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    base = torch.zeros(4, 6)
    attr = nb09.ig_reference(forward, x, base, 512)
    with torch.no_grad():
        delta = forward(x) - forward(base)
    assert torch.allclose(attr.sum(1), delta, atol=5e-3)
    assert torch.allclose(nb09.ig_reference(forward, x, base, 16), _ig(forward, x, base, 16),
                          atol=1e-5)


def test_deletion_setup_flips_and_predict_wants_a_batch():
    predict, ids, scores = nb09._flipping_setup(Checker("test"))
    assert int(ids[0]) == 101 and int(ids[-1]) == 102
    keep = [i for i in range(len(ids)) if i not in set(scores.topk(3).indices.tolist())]
    assert int(predict(ids[None]).argmax()) != int(predict(ids[keep][None]).argmax())
    with pytest.raises(ValueError, match="unsqueeze"):
        predict(ids)


def test_fgm_reference_norms_and_zero_rows():
    g = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    g[2] = 0
    r = nb09.fgm_reference(g, g, 0.5)
    assert torch.allclose(r[:2].flatten(1).norm(dim=1), torch.full((2,), 0.5))
    assert torch.equal(r[2], torch.zeros(4, 5)) and torch.isfinite(r).all()
