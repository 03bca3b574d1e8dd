"""Checks, the registry and the exercise builder, in-process (no kernel): fast."""
from __future__ import annotations

import csv
import json
import math
import random
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
import torch
import torch.nn.functional as F
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from torch import nn

from ktlab.cli import main as ktlab_main
from ktlab.grading import TASKS, check, run_check, task, tasks_for
from ktlab.grading import reference as ref
from ktlab.grading.exercises import (ExerciseError, build, make_exercise, release, stale,
                                     strip_regions)
from ktlab.grading.registry import CORE_CAP_LINE, core_cap

REPO = Path(__file__).resolve().parent.parent


def _softmax_no_temperature(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    return torch.softmax(x, dim=-1)


def _softmax_unstable(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    e = torch.exp(x / t)
    return e / e.sum(-1, keepdim=True)


def _softmax_wrong_dim(x, t=1.0):
    if t <= 0:
        raise ValueError("bad T")
    return torch.softmax(x / t, dim=0)


def _softmax_accepts_zero(x, t=1.0):
    return torch.softmax(x / t if t else x, dim=-1)


_MEMO = ref.softmax_with_temperature(torch.randn(4, 5, generator=torch.Generator().manual_seed(0))
                                     * 3.0, 1.0)


def _softmax_hard_coded(x, t=1.0):
    """Returns the answer to the first case only: the other shapes must catch it."""
    if t <= 0:
        raise ValueError("bad T")
    return _MEMO


def _pool_plain_mean(h, m):
    return h.mean(dim=1)


def _pool_no_clamp(h, m):
    m = m.float().unsqueeze(-1)
    return (h * m).sum(1) / m.sum(1)


def _pool_keepdim(h, m):
    return ref.masked_mean_pool(h, m).unsqueeze(1)


def _pool_no_return(h, m):
    ref.masked_mean_pool(h, m)


def _pool_int_only(h, m):
    return (h * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp(min=1)


def _pool_crashes(h, m):
    return h[m]  # boolean indexing with an int mask: IndexError


def _not_attempted(*args):
    raise NotImplementedError("00.softmax: replace this line with your code")


def _bitfit_no_head(model):
    return [n for n, _ in model.named_parameters() if n.endswith(".bias")]


def _bitfit_all_vectors(model):  # LayerNorm gains are 1-D too, but they are not biases
    return [n for n, p in model.named_parameters() if p.dim() == 1 or n.startswith("classifier.")]


def _adapter_tanh_gelu(h, dw, db, uw, ub):
    return h + F.linear(F.gelu(F.linear(h, dw, db), approximate="tanh"), uw, ub)


def _merge_lora_in_place(W, A, B, alpha, r):
    W += (alpha / r) * (B @ A)
    return W


def _probe_drop(probe, before, after, labels):
    with torch.no_grad():
        correct = [int((probe(x).argmax(-1) == labels).sum()) for x in (before, after)]
    return 100 * (correct[0] - correct[1]) / len(labels)


def _probe_drop_fraction(probe, before, after, labels):
    return _probe_drop(probe, before, after, labels) / 100


# result tasks (notebooks 03-06): the student runs a computation on real, seeded data and returns
# the number or decision; a typical wrong result keeps at most a third of the points
def _sweep(target, source, batch, betas, *, fixed_start=True, pick=min):
    from ktlab.transfer.interpolate import interpolate
    start = {k: v.clone() for k, v in target.state_dict().items()}
    target.eval()
    losses = []
    for beta in betas:
        interpolate(target, source, beta, initial=start if fixed_start else None)
        with torch.no_grad():
            logits = target(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        losses.append(float(F.cross_entropy(logits, batch["labels"])))
    return betas[losses.index(pick(losses))]


def _sweep_argmax(target, source, batch, betas):  # the worst β, not the best
    return _sweep(target, source, batch, betas, pick=max)


def _sweep_compounding(target, source, batch, betas):  # blends into the previous blend
    return _sweep(target, source, batch, betas, fixed_start=False)


def _sweep_wise_ft(target, source, batch, betas):
    from ktlab.transfer.regularize import wise_ft_sweep
    start = {k: v.clone() for k, v in target.state_dict().items()}  # not references: they change
    rows = wise_ft_sweep(target, start, source.state_dict(), betas,
                         lambda m: {"loss": float(F.cross_entropy(m.eval()(
                             input_ids=batch["input_ids"],
                             attention_mask=batch["attention_mask"]).logits.detach(),
                             batch["labels"]))})
    return min(rows, key=lambda r: r["loss"])["beta"]


def _interval_unpaired(pred_a, pred_b, labels, level=0.95):
    from scipy.stats import norm
    n = len(labels)
    pa, pb = (sum(int(p == y) for p, y in zip(pred, labels)) / n for pred in (pred_a, pred_b))
    half = norm.ppf((1 + level) / 2) * math.sqrt(pa * (1 - pa) / n + pb * (1 - pb) / n)
    return {"difference": pa - pb, "low": pa - pb - half, "high": pa - pb + half,
            "significant": not pa - pb - half <= 0 <= pa - pb + half}


def _interval_ktlab(pred_a, pred_b, labels, level=0.95):
    from ktlab.metrics import paired_difference_interval
    return paired_difference_interval(pred_a, pred_b, labels, level)


def _mcnemar_by_size(pred_a, pred_b, labels):  # right p-value, verdict from the gap in points
    from ktlab.metrics import mcnemar_test
    test = mcnemar_test(pred_a, pred_b, labels)
    gap = test["difference"]
    return {"p_value": test["p_value"], "verdict": "no measurable difference" if abs(gap) < 0.01
            else "better" if gap > 0 else "worse"}


def _mcnemar_ktlab(pred_a, pred_b, labels):
    from ktlab.metrics import mcnemar_test, verdict
    test = mcnemar_test(pred_a, pred_b, labels)
    return {"p_value": test["p_value"], "verdict": verdict(test)}


def _accuracy_wald(pred, labels, level=0.95):
    from scipy.stats import norm
    p = sum(int(a == y) for a, y in zip(pred, labels)) / len(labels)
    half = norm.ppf((1 + level) / 2) * math.sqrt(p * (1 - p) / len(labels))
    return {"accuracy": p, "low": p - half, "high": p + half}


def _accuracy_ktlab(pred, labels, level=0.95):
    from ktlab.metrics import accuracy_interval
    return accuracy_interval([int(a) == int(y) for a, y in zip(pred, labels)], level)


def _f1_token_level(gold, pred):  # scores tags, not entities
    tp = sum(g == p != "O" for gs, ps in zip(gold, pred) for g, p in zip(gs, ps))
    n_pred = sum(p != "O" for ps in pred for p in ps)
    n_gold = sum(g != "O" for gs in gold for g in gs)
    return 0.0 if tp == 0 else 100 * 2 * tp / (n_pred + n_gold)


def _f1_ktlab(gold, pred):
    from ktlab.tagging import ner_scores
    return ner_scores(gold, pred)["f1"]


def _breakdown_overlap_is_boundary(gold, pred):  # no type+boundary class
    from ktlab.tagging import error_breakdown
    counts = error_breakdown(gold, pred)
    counts["boundary"] += counts.pop("type+boundary", 0)
    counts["type+boundary"] = 0
    return counts


def _breakdown_ktlab(gold, pred):
    from ktlab.tagging import error_breakdown
    return error_breakdown(gold, pred)


def _draws(sizes, temperature, steps, seed, strategy="temperature"):
    from ktlab.transfer.multitask import TaskSampler
    drawn = TaskSampler(sizes, strategy, temperature, seed).draw(steps)
    return {name: drawn.count(name) for name in sizes}


def _draws_proportional(sizes, temperature, steps, seed):  # the temperature is ignored
    return _draws(sizes, temperature, steps, seed, strategy="proportional")


def _seed_delta_ktlab(runs, model, task):
    from ktlab.metrics import seed_difference_interval
    base = {r["seed"]: r["score"] for r in runs if r["model"] == "single-task" and r["task"] == task}
    return seed_difference_interval([r["score"] - base[r["seed"]] for r in runs if r["model"] == model
                                     and r["task"] == task and r["seed"] in base])


def _seed_delta_sign_only(runs, model, task):  # "helped" whenever the mean is positive
    out = dict(_seed_delta_ktlab(runs, model, task))
    out["verdict"] = "helped" if out["mean"] > 0 else "hurt"
    return out



# (task, student, expected points, text that must appear in the failure reasons)
WRONG = [
    # T ignored: 4 of 7 cases pass, but the core case fails: capped at 0.66 (a third, rounded down)
    ("00.softmax", _softmax_no_temperature, 0.66, "the temperature is ignored"),
    ("00.softmax", _softmax_unstable, 12 / 7, "NaN/inf"),
    ("00.softmax", _softmax_wrong_dim, 4 / 7, "wrong values"),
    ("00.softmax", _softmax_accepts_zero, 12 / 7, "expected ValueError, nothing was raised"),
    ("00.softmax", _softmax_hard_coded, 4 / 7, "wrong output shape: expected (3, 10), got (4, 5)"),
    ("00.softmax", torch.softmax, 0.0, "your code raised TypeError"),
    ("00.softmax", _not_attempted, 0.0, "not attempted yet"),
    ("00.softmax", 0.5, 0.0, "expected your softmax function, got a float"),
    ("00.mean_pool", _pool_plain_mean, 0.0, "wrong values"),
    ("00.mean_pool", _pool_no_clamp, 1.6, "Hint: clamp the token count"),
    ("00.mean_pool", _pool_keepdim, 0.0, "wrong output shape: expected (2, 4), got (2, 1, 4)"),
    ("00.mean_pool", _pool_no_return, 0.0, "returned None; did you forget `return`"),
    ("00.mean_pool", _pool_int_only, 2.0, ""),  # integer arithmetic still gives the right floats
    ("00.mean_pool", _pool_crashes, 0.0, "your code raised IndexError"),
    ("00.mean_pool", None, 0.0, "you passed None"),
    ("07.bitfit_params", _bitfit_no_head, 1.0, "the new task head must train too"),
    ("07.bitfit_params", _bitfit_all_vectors, 0.75, "are LayerNorm gains, not biases"),
    ("07.adapter_forward", _adapter_tanh_gelu, 0.67, "tanh approximation of GELU"),
    ("07.merge_lora", _merge_lora_in_place, 1.71, "changed W in place"),
    ("07.probe_drop", _probe_drop_fraction, 0.86, "multiply the accuracies by 100"),
    ("07.probe_drop", _probe_drop, 2.0, ""),  # counts instead of means: the same points
    # result tasks: a typical wrong result keeps at most a third, the right one every point
    ("03.beta_sweep", _sweep_compounding, 0.66, "pass initial="),
    ("03.beta_sweep", _sweep_argmax, 0.0, "the *highest* loss"),
    ("03.beta_sweep", _sweep, 2.0, ""),
    ("03.beta_sweep", _sweep_wise_ft, 2.0, ""),
    ("03.difference_interval", _interval_unpaired, 0.0, "treats the two accuracies as independent"),
    ("03.difference_interval", _interval_ktlab, 2.0, ""),
    ("04.mcnemar", _mcnemar_by_size, 0.66, "only where p < 0.05"),
    ("04.mcnemar", _mcnemar_ktlab, 2.0, ""),
    ("04.accuracy_interval", _accuracy_wald, 0.0, "the normal approximation"),
    ("04.accuracy_interval", _accuracy_ktlab, 2.0, ""),
    ("05.entity_f1", _f1_token_level, 0.0, "tags that merely overlap earn nothing"),
    ("05.entity_f1", _f1_ktlab, 2.0, ""),
    ("05.error_breakdown", _breakdown_overlap_is_boundary, 0.0, "type+boundary 0 (expected"),
    ("05.error_breakdown", _breakdown_ktlab, 2.0, ""),
    ("06.sampler_draws", _draws_proportional, 0.66, "the temperature T=3.0 is ignored"),
    ("06.sampler_draws", _draws, 2.0, ""),
    ("06.seed_delta", _seed_delta_sign_only, 0.66, "should be 'no measurable difference'"),
    ("06.seed_delta", _seed_delta_ktlab, 2.0, ""),
]


@pytest.mark.parametrize("task_id,student,points,reason", WRONG,
                         ids=[f"{t}-{getattr(s, '__name__', repr(s))}" for t, s, _, _ in WRONG])
def test_wrong_implementations_lose_the_right_points(task_id, student, points, reason):
    r = run_check(task_id, student)
    assert r.points == pytest.approx(points, abs=0.01), r.report()
    assert r.max_points == TASKS[task_id].points
    if points < r.max_points:
        assert any(reason in why for why in r.reasons()), r.report()
        assert "Traceback" not in r.report()
    else:
        assert r.status == "passed"


def test_reference_passes_and_check_prints_one_line_per_case(capsys):
    r = check("00.softmax", ref.softmax_with_temperature)
    out = capsys.readouterr().out
    assert r.points == r.max_points == 2 and r.status == "passed"
    assert out.count("[PASS]") == len(r.lines) >= 5 and "[FAIL]" not in out
    assert repr(r) == "<TaskResult 00.softmax: 2/2 points>"
    assert check("00.mean_pool", ref.masked_mean_pool, quiet=True).passed


def test_check_records_results_for_the_grader(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    monkeypatch.setenv("KTLAB_GRADING_RESULTS", str(path))
    check("00.softmax", _softmax_no_temperature, quiet=True)
    check("00.mean_pool", ref.masked_mean_pool, quiet=True)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["task_id"], r["points"], r["status"]) for r in rows] == [
        ("00.softmax", 0.66, "failed"), ("00.mean_pool", 2.0, "passed")]
    assert rows[0]["core_failed"] and rows[0]["lines"][-1]["name"] == CORE_CAP_LINE


# ----------------------------------------------------------------------------- core cases
# Code that misses the point of a task: each used to keep much of its points (measured before
# core cases existed, in the last column); a failed core case now caps it at a third.
def _softmax_ignores_temperature(x, t=1.0):
    return torch.softmax(x, dim=-1)


def _attention_masked_after_softmax(q, k, v, attention_mask=None):
    probs = (q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    if attention_mask is not None:
        probs = probs * attention_mask[:, None, None, :].to(probs.dtype)
    return probs @ v, probs


def _mlm_always_mask(input_ids, special_mask, mask_token_id, vocab_size, generator):
    chosen = (torch.rand(input_ids.shape, generator=generator) < 0.15) & ~special_mask
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    corrupted = input_ids.clone()
    corrupted[chosen] = mask_token_id  # no 80/10/10
    return corrupted, labels


def _kd_no_t2(s, t, temperature):
    return F.kl_div(F.log_softmax(s / temperature, -1), F.softmax(t.detach() / temperature, -1),
                    reduction="batchmean")


def _token_kd_no_t2(s, t, labels, temperature=2.0):
    keep = labels != -100
    return _kd_no_t2(s[keep], t[keep], temperature)


def _interpolate_swapped(target, source, beta):
    if not 0 <= beta <= 1:
        raise ValueError("beta")
    out = {}
    for name, w_t in target.items():
        if source[name].shape != w_t.shape:
            raise ValueError(name)
        out[name] = (1 - beta) * source[name] + beta * w_t if torch.is_floating_point(w_t) else w_t
    return out


class _LoRAScaledByAlpha(nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.scaling = alpha  # should be alpha / r
        self.lora_A = nn.Parameter(torch.randn(r, base.in_features) * 0.01)
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


def _bilstm_no_packing(model, input_ids, attention_mask):
    out, _ = model.lstm(model.dropout(model.embedding(input_ids)))  # runs over the padding
    out = out.masked_fill(~attention_mask[:, :, None].bool(), float("-inf"))
    return model.mlp(model.dropout(out.max(dim=1).values))


def _bitfit_with_weight_matrices(model):
    return [n for n, _ in model.named_parameters()
            if n.endswith(".bias") or ".layer." in n or n.startswith("classifier.")]


def _bitfit_encoder_biases_only(model):  # forgets the embeddings' LayerNorm and the pooler
    return [n for n, _ in model.named_parameters()
            if (n.endswith(".bias") and "encoder." in n) or n.startswith("classifier.")]


def _adapter_no_residual(h, dw, db, uw, ub):
    return F.linear(F.gelu(F.linear(h, dw, db)), uw, ub)


def _adapter_no_activation(h, dw, db, uw, ub):
    return h + F.linear(F.linear(h, dw, db), uw, ub)


def _merge_lora_scaled_by_alpha(W, A, B, alpha, r):
    return W + alpha * (B @ A)


def _probe_drop_sign_flipped(probe, before, after, labels):
    return -_probe_drop(probe, before, after, labels)


def _probe_drop_refit(probe, before, after, labels):
    """Fits a new least-squares probe on each feature set: measures what is there, not forgetting."""
    def refit_accuracy(x):
        x = torch.cat([x.double(), torch.ones(len(x), 1, dtype=torch.double)], 1)
        w = torch.linalg.lstsq(x, F.one_hot(labels, probe.out_features).double()).solution
        return 100 * float(((x @ w).argmax(-1) == labels).double().mean())
    return refit_accuracy(before) - refit_accuracy(after)


# (task, wrong implementation, the core case it must fail, points it scored before core cases)
MISSES_THE_POINT = [
    ("02.mlm_mask", _mlm_always_mask, "80% [MASK], 10% random, 10% unchanged", 2.57),
    ("01.attention", _attention_masked_after_softmax, "mask before the softmax", 2.0),
    ("03.kd_loss", _kd_no_t2, "the T**2 factor", 1.2),
    ("05.token_kd_loss", _token_kd_no_t2, "the T**2 factor", 1.8),
    ("03.interpolate", _interpolate_swapped, "beta weights the source, 1 - beta the target", 1.5),
    ("03.lora", _LoRAScaledByAlpha, "scaled by alpha / r", 1.33),
    ("00.softmax", _softmax_ignores_temperature, "the temperature divides the logits", 0.67),
    ("04.bilstm_forward", _bilstm_no_packing, "packing", 0.75),
    # notebook 07 (the last column: the score without the cap)
    ("07.bitfit_params", _bitfit_with_weight_matrices, "no weight matrix is selected", 0.5),
    ("07.bitfit_params", _bitfit_encoder_biases_only, "every bias is selected", 0.75),
    ("07.adapter_forward", _adapter_no_residual, "the residual connection is kept", 0.33),
    ("07.adapter_forward", _adapter_no_activation, "the GELU non-linearity", 0.33),
    ("07.merge_lora", _merge_lora_scaled_by_alpha, "scaled by alpha / r", 0.57),
    ("07.probe_drop", _probe_drop_sign_flipped, "the sign: positive means forgetting", 0.57),
    ("07.probe_drop", _probe_drop_refit, "one fixed probe reads both feature sets", 0.57),
    # the result tasks of notebooks 03-06 (the last column: the score without the cap)
    ("03.beta_sweep", _sweep_compounding, "every β starts from the target's own weights", 1.2),
    ("03.difference_interval", _interval_unpaired, "paired: 30 vs 12 discordant", 0.0),
    ("04.mcnemar", _mcnemar_by_size, "the verdict comes from p < 0.05", 1.71),
    ("04.accuracy_interval", _accuracy_wald, "the edges", 0.0),
    ("05.entity_f1", _f1_token_level, "type and both boundaries", 0.0),
    ("05.error_breakdown", _breakdown_overlap_is_boundary, "a right span with the wrong type", 0.0),
    ("06.sampler_draws", _draws_proportional, "the temperature is applied", 0.67),
    ("06.seed_delta", _seed_delta_sign_only, "a positive mean is not enough", 1.25),
]


@pytest.mark.parametrize("task_id,student,core,before", MISSES_THE_POINT,
                         ids=[f"{t}-{s.__name__}" for t, s, _, _ in MISSES_THE_POINT])
def test_missing_the_point_caps_the_task_at_a_third(task_id, student, core, before):
    r = run_check(task_id, student)
    assert r.max_points == TASKS[task_id].points
    assert r.status == "failed" and r.points <= r.max_points / 3, r.report()
    assert r.points <= min(before, core_cap(r.max_points))
    assert r.capped and any(core in name for name in r.core_failed), r.report()
    note = [why for why in r.reasons() if why.startswith(f"{CORE_CAP_LINE}: ")]
    assert len(note) == 1 and core in note[0] and "score capped at 1/3" in note[0], r.reasons()
    assert "core case failed" in r.report().splitlines()[0]


def _attention_ktlab(q, k, v, attention_mask=None):
    from ktlab.nn.attention import padding_mask, scaled_dot_product_attention
    mask = None if attention_mask is None else padding_mask(attention_mask)
    return scaled_dot_product_attention(q, k, v, mask)


def _mlm_ktlab(input_ids, special_mask, mask_token_id, vocab_size, generator):
    from ktlab.pretraining import MLMMasker
    masker = MLMMasker(mask_token_id, vocab_size, special_ids=(0, 1, 2, 3, mask_token_id))
    return masker(input_ids, generator=generator)


def _token_kd_ktlab(s, t, labels, temperature=2.0):
    from ktlab.transfer.distill import kd_loss
    return kd_loss(s, t, temperature, labels=labels)


def _interpolate_ktlab(target, source, beta):
    from ktlab.transfer.interpolate import interpolate
    names = list(target)  # dotted names: hold them as buffers p0, p1, ... and map them back
    holder = nn.Module()
    for i, name in enumerate(names):
        holder.register_buffer(f"p{i}", target[name].clone())
    interpolate(holder, source, beta, mapping={f"p{i}": n for i, n in enumerate(names)},
                strict=True)
    state = holder.state_dict()
    return {name: state[f"p{i}"] for i, name in enumerate(names)}


def _lora_ktlab(base, r, alpha):
    from ktlab.transfer.peft import LoRALinear
    return LoRALinear(base, r=r, alpha=alpha)


def _bilstm_ktlab(model, input_ids, attention_mask):
    from ktlab.nn.students import BiLSTMClassifier
    return BiLSTMClassifier.forward(model, input_ids, attention_mask)  # model.forward is blocked


def _kd_ktlab(s, t, temperature):
    from ktlab.transfer.distill import kd_loss
    return kd_loss(s, t, temperature)


def _bitfit_ktlab(model):
    from ktlab.transfer.peft import apply_bitfit
    apply_bitfit(model)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def _adapter_ktlab(h, dw, db, uw, ub):
    from ktlab.transfer.peft import Adapter
    adapter = Adapter(h.shape[-1], dw.shape[0])
    adapter.load_state_dict({"down.weight": dw, "down.bias": db, "up.weight": uw, "up.bias": ub})
    return adapter(h).detach()


def _merge_lora_ktlab(W, A, B, alpha, r):
    from ktlab.transfer.peft import LoRALinear
    layer = LoRALinear(nn.Linear(W.shape[1], W.shape[0]), r=r, alpha=alpha)
    with torch.no_grad():
        for param, value in ((layer.base.weight, W), (layer.lora_A, A), (layer.lora_B, B)):
            param.copy_(value)
    layer.merge()
    return layer.base.weight.detach()


KTLAB_REFERENCES = [("00.softmax", ref.softmax_with_temperature),
                    ("01.attention", _attention_ktlab), ("02.mlm_mask", _mlm_ktlab),
                    ("03.kd_loss", _kd_ktlab), ("05.token_kd_loss", _token_kd_ktlab),
                    ("03.interpolate", _interpolate_ktlab), ("03.lora", _lora_ktlab),
                    ("04.bilstm_forward", _bilstm_ktlab), ("07.bitfit_params", _bitfit_ktlab),
                    ("07.adapter_forward", _adapter_ktlab), ("07.merge_lora", _merge_lora_ktlab)]


@pytest.mark.parametrize("task_id,obj", KTLAB_REFERENCES, ids=[t for t, _ in KTLAB_REFERENCES])
def test_ktlab_references_still_score_full_points(task_id, obj):
    r = run_check(task_id, obj)
    assert r.passed and r.points == r.max_points and not r.capped, r.report()
    assert any(line.core for line in r.lines)


def _solution_functions():
    """The code between BEGIN/END SOLUTION of every solution notebook, run in-process: task id
    -> what the notebook passes to check() (a kernel-free stand-in for the batch grader test)."""
    from ktlab.nn.students import BiLSTMClassifier
    found = {}
    for path in sorted((REPO / "solutions").glob("*.ipynb")):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and "### BEGIN SOLUTION" in cell.source:
                ns = dict(torch=torch, F=F, nn=nn, math=math, random=random, re=re,
                          BiLSTMClassifier=BiLSTMClassifier,
                          check=lambda task_id, obj, **_: found.__setitem__(task_id, obj))
                exec(compile(cell.source, str(path), "exec"), ns)
    return found


def test_solution_notebooks_score_full_points_and_every_task_has_a_core_case():
    found = _solution_functions()
    assert set(found) == set(TASKS) - {t for t in TASKS if t.startswith("99.")}
    for task_id, obj in found.items():
        r = run_check(task_id, obj)
        assert r.passed and r.points == r.max_points, r.report()
        assert any(line.core for line in r.lines), f"{task_id} declares no core case"


def test_a_failed_core_case_caps_the_score_and_reaches_the_batch_grader():
    from ktlab.grading.grader import _grade_from_result

    @task("99.capped", points=4)
    def _capped(fn, t):
        for i in range(5):
            with t.case(f"side case {i}"):
                pass
        with t.case("the point of the task", core=True):
            t.fail("missed it.")
        with t.case("another core case, passed", core=True):
            pass

    try:
        r = run_check("99.capped", None)
        assert (r.points, r.max_points, r.status) == (1.33, 4.0, "failed")  # 6/7 of 4 = 3.43
        assert r.core_failed == ["the point of the task"] and r.capped
        assert r.reasons() == ["the point of the task: missed it.",
                               "core case failed: 'the point of the task' — score capped at 1/3 "
                               "of the points (1.33/4 at most, whatever else passes)."]
        report = r.report().splitlines()
        assert report[0] == ("99.capped: 1.33/4 points (some checks failed; core case failed, "
                             "score capped at 1/3)")
        assert "  [FAIL] the point of the task (core) - missed it." in report
        assert report[-1].startswith("  core case failed: 'the point of the task'")
        payload = json.loads(json.dumps(r.to_json()))  # what check() records for ktlab grade
        assert payload["points"] == 1.33 and payload["core_failed"] == ["the point of the task"]
        grade = _grade_from_result(TASKS["99.capped"], payload)
        assert grade.points == 1.33 and grade.status == "failed"
        assert grade.reasons[-1].startswith("core case failed: 'the point of the task' — score "
                                            "capped at 1/3")
        # core cases that pass cap nothing; a third is rounded down: 2 -> 0.66, 3 -> 1
        assert [core_cap(p) for p in (1, 2, 3, 4, 5)] == [0.33, 0.66, 1.0, 1.33, 1.66]
    finally:
        TASKS.pop("99.capped")


@pytest.mark.parametrize("task_id,obj", [("00.softmax", ref.softmax_with_temperature),
                                         ("07.bitfit_params", _bitfit_no_head),
                                         ("07.adapter_forward", _adapter_tanh_gelu),
                                         ("07.merge_lora", _merge_lora_in_place),
                                         ("07.probe_drop", _probe_drop),
                                         ("03.beta_sweep", _sweep),
                                         ("06.sampler_draws", _draws)])
def test_checks_do_not_touch_the_global_rng(task_id, obj):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    run_check(task_id, obj)
    assert torch.equal(torch.rand(3), expected)


def test_unknown_task_and_bad_registrations_explain_themselves():
    r = run_check("00.nope", ref.softmax_with_temperature)
    assert r.status == "error" and "unknown task '00.nope'" in r.reasons()[0]
    with pytest.raises(ValueError, match="must look like 'NN.name'"):
        task("softmax")
    with pytest.raises(ValueError, match="registered twice"):
        task("00.softmax")(lambda fn, t: None)
    assert [t.task_id for t in tasks_for("00")] == ["00.softmax", "00.mean_pool"]


def test_a_bug_in_a_check_is_reported_not_raised():
    @task("99.buggy", points=1)
    def _buggy(fn, t):
        raise KeyError("oops")

    try:
        r = run_check("99.buggy", ref.softmax_with_temperature)
        assert r.status == "error" and r.points == 0 and "tell your instructor" in r.reasons()[0]
    finally:
        TASKS.pop("99.buggy")


# ----------------------------------------------------------------------------- exercises
SOLUTION_CELL = '''def f(x):
    """Doc stays."""
    ### BEGIN SOLUTION
    # HINT: square it.
    y = x * x
    return y
    ### END SOLUTION

check("00.softmax", f)'''


def test_strip_regions_keeps_indentation_and_uses_the_region_hint():
    out, n = strip_regions(SOLUTION_CELL)
    assert n == 1
    assert out == '''def f(x):
    """Doc stays."""
    # HINT: square it.
    raise NotImplementedError("00.softmax: replace this line with your code")

check("00.softmax", f)'''


def test_strip_regions_falls_back_to_the_registered_hint_and_rejects_bad_markers():
    out, _ = strip_regions(SOLUTION_CELL.replace("    # HINT: square it.\n", ""))
    assert f"# HINT: {TASKS['00.softmax'].hint}" in out
    with pytest.raises(ExerciseError, match="never closed"):
        strip_regions("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ExerciseError, match="without a"):
        strip_regions("x = 1\n### END SOLUTION")
    with pytest.raises(ExerciseError, match="inside another region"):
        strip_regions("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION")


def _solution_nb() -> nbformat.NotebookNode:
    cells = [new_markdown_cell("# T\n### BEGIN SOLUTION\nthe answer\n### END SOLUTION"),
             new_code_cell(SOLUTION_CELL, execution_count=3,
                           outputs=[nbformat.v4.new_output("stream", text="hi\n")],
                           metadata={"tags": ["keep"],
                                     "execution": {"shell.execute_reply": "2026-01-01T00:00:00Z"}})]
    return new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3",
                                                              "display_name": "Python 3"}})


def test_make_exercise_clears_outputs_and_keeps_everything_else():
    sol = _solution_nb()
    ex = make_exercise(sol)
    assert ex.cells[0].source == "# T\n*Write your answer here.*"
    code = ex.cells[1]
    assert code.outputs == [] and code.execution_count is None
    assert code.metadata == {"tags": ["keep"]} and code.id == sol.cells[1].id
    assert ex.metadata == sol.metadata
    assert sol.cells[1].outputs, "the solution notebook itself must not change"
    with pytest.raises(ExerciseError, match="no '### BEGIN SOLUTION'"):
        make_exercise(new_notebook(cells=[new_code_cell("x = 1")]), "00_x.ipynb")


def test_build_stale_and_release_round_trip(tmp_path, capsys):
    sol, ex, bundle = tmp_path / "solutions", tmp_path / "exercises", tmp_path / "bundle"
    sol.mkdir()
    nbformat.write(_solution_nb(), sol / "00_demo.ipynb")
    assert stale(sol, ex) == [f"{ex / '00_demo.ipynb'} is missing"]
    assert ktlab_main(["exercises", "check", "--solutions", str(sol)]) == 1
    assert ktlab_main(["exercises", "build", "--solutions", str(sol)]) == 0
    assert stale(sol, ex) == [] and build(sol, ex) == []  # second build writes nothing
    assert ktlab_main(["exercises", "check", "--solutions", str(sol)]) == 0
    # a solution edit makes exercises/ stale, and release refuses until it is rebuilt
    nb = nbformat.read(sol / "00_demo.ipynb", as_version=4)
    nb.cells[1].source = nb.cells[1].source.replace("Doc stays.", "Doc changed.")
    nbformat.write(nb, sol / "00_demo.ipynb")
    assert "differs from" in stale(sol, ex)[0]
    with pytest.raises(ExerciseError, match="out of date"):
        release(sol, ex, bundle)
    build(sol, ex)
    (ex / "01_orphan.ipynb").write_text("{}")
    assert "has no solution notebook" in stale(sol, ex)[0]
    build(sol, ex)
    assert not (ex / "01_orphan.ipynb").exists()
    assert ktlab_main(["exercises", "release", "--solutions", str(sol), "--to", str(bundle)]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == ["00_demo.ipynb", "README.md"]
    text = (bundle / "00_demo.ipynb").read_text()
    assert "BEGIN SOLUTION" not in text and "y = x * x" not in text and "the answer" not in text
    assert ktlab_main(["exercises", "release", "--solutions", str(sol), "--to", str(bundle)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_committed_exercises_are_up_to_date_with_solutions():
    problems = stale(REPO / "solutions", REPO / "exercises")
    assert problems == [], "exercises/ is stale: run `ktlab exercises build` and commit\n" + \
        "\n".join(problems)


def test_grade_rejects_a_bad_report_name_and_an_empty_folder(tmp_path, capsys):
    assert ktlab_main(["grade", str(tmp_path / "x.ipynb"), "--out", str(tmp_path / "g.txt")]) == 2
    assert "--out must end in .csv or .json" in capsys.readouterr().err
    assert ktlab_main(["grade", str(tmp_path)]) == 2
    assert "no .ipynb files in" in capsys.readouterr().err


def test_missing_and_unreadable_submissions_get_reasons_in_csv(tmp_path, capsys):
    """No kernel is started for these, so this runs in a second."""
    (tmp_path / "00_broken.ipynb").write_text('{"cells": 3}')
    out = tmp_path / "grades.csv"
    assert ktlab_main(["grade", str(tmp_path), str(tmp_path / "00_gone.ipynb"), "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(Path(r["submission"]).name, r["task"], r["points"], r["status"]) for r in rows] == [
        ("00_broken.ipynb", "00.softmax", "0.0", "not run"),
        ("00_broken.ipynb", "00.mean_pool", "0.0", "not run"),
        ("00_broken.ipynb", "TOTAL", "0.0", "unreadable"),
        ("00_gone.ipynb", "00.softmax", "0.0", "not run"),
        ("00_gone.ipynb", "00.mean_pool", "0.0", "not run"),
        ("00_gone.ipynb", "TOTAL", "0.0", "missing")]
    assert all(r["reasons"] for r in rows)
    assert "submission not found" in rows[-1]["reasons"]


def test_network_guard_refuses_remote_connections_but_not_loopback():
    code = ("import socket\n"
            "try:\n    socket.create_connection(('192.0.2.1', 80), timeout=2)\n"
            "except OSError as e:\n    print('refused', e)\n"
            "try:\n    socket.getaddrinfo('example.com', 80)\n"
            "except OSError as e:\n    print('unresolved', e)\n"
            "srv = socket.socket(); srv.bind(('127.0.0.1', 0)); srv.listen(1)\n"
            "socket.create_connection(srv.getsockname(), timeout=2).close(); print('loopback ok')\n")
    from ktlab.grading.grader import _grading_env

    out = subprocess.run([sys.executable, "-c", code], env=_grading_env(Path("/dev/null")),
                         capture_output=True, text=True, timeout=60).stdout
    assert "refused [Errno 101] network access is disabled" in out
    assert "unresolved" in out and "loopback ok" in out
