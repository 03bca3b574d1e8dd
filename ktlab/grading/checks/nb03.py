"""Checks for ``solutions/03_transfer_math.ipynb``: the KD loss with temperature, β-interpolation,
freezing the bottom k layers, a LoRA linear layer; and two result tasks: the best β of a sweep on
SST-2 dev sentences, and the 95% interval of a paired accuracy difference with its verdict.

References are ktlab's own code (:func:`ktlab.transfer.distill.kd_loss`,
:func:`ktlab.transfer.interpolate.interpolate`, :func:`ktlab.transfer.freeze.freeze_bottom_k`,
:class:`ktlab.transfer.peft.LoRALinear`) run on seeded random inputs and tiny BERTs of several
shapes, so a hard-coded answer cannot pass. Core cases (a failure caps the task at 1/3): the
T**2 factor; β weighting the source and 1 - β the target; the embeddings and the *bottom* k
layers frozen; the low-rank update scaled by α / r on a frozen base layer; every β of a sweep
blended from the same starting weights; the interval of a difference computed from the *paired*
(discordant) examples.

The result tasks are checked on seeded inputs and on the real data of the notebook's own call
(:mod:`ktlab.grading.fixtures`), against :func:`ktlab.transfer.regularize.wise_ft_sweep` and
:func:`ktlab.metrics.paired_difference_interval`.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F

from ktlab.grading.checks._shared import (bench_pairs, close, paired_predictions, result_dict,
                                          t2_factor_case, tiny_bert as _tiny_bert)
from ktlab.grading.registry import Checker, task


@task("03.kd_loss", points=3, title="the distillation loss with temperature",
      hint="log_softmax(student / T), softmax(teacher / T), KL(teacher || student) averaged over "
           "the batch (reduction='batchmean'), times T**2.")
def check_kd_loss(fn, t: Checker) -> None:
    from ktlab.transfer.distill import kd_loss
    t.callable(fn, "your kd_loss function")
    for seed, (batch, classes, temp) in enumerate([(4, 2, 1.0), (8, 5, 2.0), (3, 7, 4.0),
                                                   (16, 3, 0.5)]):
        with t.case(f"batch {batch}, {classes} classes, T={temp}"):
            s = t.randn(batch, classes, seed=seed, scale=2.0)
            te = t.randn(batch, classes, seed=50 + seed, scale=2.0)
            t.allclose(fn(s.clone(), te.clone(), temp), kd_loss(s, te, temp), atol=1e-5,
                       what="loss", hint="average over examples (batchmean), not over all "
                                         "entries, and multiply by T**2.")
    with t.case("equal logits give 0 and the gradient reaches the student"):
        s = t.randn(5, 4, seed=9).requires_grad_(True)
        loss = float(fn(s, s.detach().clone(), 3.0).detach())
        t.is_true(abs(loss) < 1e-6, f"KL of a distribution with itself is 0, got "
                  f"{loss:.3g}.")
        loss2 = fn(s, t.randn(5, 4, seed=10), 3.0)
        loss2.backward()
        t.is_true(s.grad is not None and s.grad.abs().sum() > 0,
                  "no gradient reached the student logits; do not detach them.")
    with t.case("the T**2 factor: doubling the logits and T multiplies the loss by 4",
                core=True):
        s, te = t.randn(6, 5, seed=11, scale=2.0), t.randn(6, 5, seed=12, scale=2.0)
        t2_factor_case(t, lambda k, temp: (fn(k * s, k * te, temp), kd_loss(k * s, k * te, temp)))


@task("03.interpolate", points=3, title="β-interpolation of two weight sets",
      hint="for each name: beta * source[name] + (1 - beta) * target[name]; raise ValueError "
           "for beta outside [0, 1] and for tensors whose shapes differ.")
def check_interpolate(fn, t: Checker) -> None:
    from ktlab.transfer.interpolate import interpolate
    t.callable(fn, "your interpolate_state function")
    for seed, beta in enumerate((0.0, 0.3, 0.5, 1.0)):
        with t.case(f"tiny BERT state dicts, beta={beta}"):
            target, source = _tiny_bert(1, seed), _tiny_bert(1, 100 + seed)
            t0 = {k: v.clone() for k, v in target.state_dict().items()}
            s0 = {k: v.clone() for k, v in source.state_dict().items()}
            got = fn({k: v.clone() for k, v in t0.items()}, s0, beta)
            t.is_true(isinstance(got, dict), f"return a dict of tensors, got "
                      f"{type(got).__name__}.")
            interpolate(target, source, beta)
            want = target.state_dict()
            missing = sorted(set(want) - set(got))
            t.is_true(not missing, f"the result lacks {missing[:2]}; keep every name.")
            for name in want:
                if torch.is_floating_point(want[name]):
                    t.allclose(got[name], want[name], atol=1e-6, what=name)
    with t.case("direction: beta weights the source, 1 - beta the target (beta=0.2)", core=True):
        target, source = torch.nn.Module(), torch.nn.Module()
        for i, m in enumerate((target, source)):
            m.weight = torch.nn.Parameter(t.randn(3, 4, seed=200 + 2 * i))
            m.bias = torch.nn.Parameter(t.randn(3, seed=201 + 2 * i))
        t0 = {k: v.detach().clone() for k, v in target.state_dict().items()}
        s0 = {k: v.detach().clone() for k, v in source.state_dict().items()}
        got = fn({k: v.clone() for k, v in t0.items()}, {k: v.clone() for k, v in s0.items()},
                 0.2)
        t.is_true(isinstance(got, dict) and set(got) >= set(t0),
                  f"return a dict with every name of the target {sorted(t0)}.")
        swapped = 0.8 * s0["weight"] + 0.2 * t0["weight"]
        w = got["weight"]
        if (isinstance(w, torch.Tensor) and w.shape == swapped.shape
                and torch.allclose(w.detach(), swapped, atol=1e-6)):
            t.fail("beta and 1 - beta are swapped: beta = 1 must give the source and beta = 0 "
                   "keep the target, so compute beta * source + (1 - beta) * target.")
        interpolate(target, source, 0.2)
        for name, want in target.state_dict().items():
            t.allclose(got[name], want, atol=1e-6, what=name,
                       hint="beta * source + (1 - beta) * target.")
    a = {"w": t.randn(2, 3, seed=1)}
    with t.case("beta outside [0, 1] is an error"):
        t.raises(ValueError, lambda: fn(a, {"w": t.randn(2, 3, seed=2)}, 1.5),
                 "beta=1.5 should be rejected")
        t.raises(ValueError, lambda: fn(a, {"w": t.randn(2, 3, seed=2)}, -0.1),
                 "beta=-0.1 should be rejected")
    with t.case("mismatched shapes are an error"):
        t.raises(ValueError, lambda: fn(a, {"w": t.randn(3, 2, seed=2)}, 0.5),
                 "a (2, 3) target with a (3, 2) source should be rejected, not skipped")


@task("03.freeze_bottom_k", points=2, title="freezing the embeddings and bottom k layers",
      hint="set requires_grad=False on every parameter whose name contains 'embeddings.' or "
           "'encoder.layer.<i>.' with i < k; leave the rest trainable.")
def check_freeze(fn, t: Checker) -> None:
    from ktlab.transfer.freeze import freeze_bottom_k
    t.callable(fn, "your freeze_bottom_k function")
    for seed, (layers, k) in enumerate([(3, 1), (3, 2), (4, 0), (2, 2), (12, 10)]):
        with t.case(f"{layers}-layer BERT, k={k}", core=layers == 3):
            mine, ref = _tiny_bert(layers, seed), _tiny_bert(layers, seed)
            fn(mine, k)
            freeze_bottom_k(ref, k)
            want = {n for n, p in ref.named_parameters() if p.requires_grad}
            got = {n for n, p in mine.named_parameters() if p.requires_grad}
            wrongly_frozen = sorted(want - got)
            wrongly_trainable = sorted(got - want)
            t.is_true(not wrongly_frozen, f"these should stay trainable: {wrongly_frozen[:3]}.")
            t.is_true(not wrongly_trainable, f"these should be frozen: {wrongly_trainable[:3]} "
                      "(watch out: 'layer.1.' is also a prefix of 'layer.10.' if you test "
                      "with startswith on 'layer.1').")
    with t.case("k larger than the number of layers is an error"):
        t.raises(ValueError, lambda: fn(_tiny_bert(2, 0), 3), "k=3 on a 2-layer model")


@task("03.lora", points=4, title="a LoRA linear layer",
      hint="lora_A: Parameter(r, in) with small random values, lora_B: Parameter(out, r) of "
           "zeros; forward = base(x) + (x @ A.T @ B.T) * alpha / r; freeze base's parameters.")
def check_lora(cls, t: Checker) -> None:
    t.callable(cls, "your LoRALinear class")
    shapes = [(8, 4, 2, 4.0), (16, 16, 4, 8.0), (5, 12, 1, 1.0)]
    for seed, (fan_in, fan_out, r, alpha) in enumerate(shapes):
        with t.case(f"Linear({fan_in}, {fan_out}), r={r}, alpha={alpha}"):
            torch.manual_seed(seed)
            base = torch.nn.Linear(fan_in, fan_out)
            layer = cls(base, r, alpha)
            x = t.randn(3, 7, fan_in, seed=seed)
            t.allclose(layer(x), base(x), atol=1e-6, what="output at initialisation",
                       hint="B starts at zero so the layer starts as the pretrained one.")
            a, b = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
            t.is_true(isinstance(a, torch.nn.Parameter) and isinstance(b, torch.nn.Parameter),
                      "define lora_A and lora_B as nn.Parameter attributes.")
            t.is_true(tuple(a.shape) == (r, fan_in) and tuple(b.shape) == (fan_out, r),
                      f"lora_A should be ({r}, {fan_in}) and lora_B ({fan_out}, {r}); got "
                      f"{tuple(a.shape)} and {tuple(b.shape)}.")
            with torch.no_grad():
                b.copy_(t.randn(fan_out, r, seed=20 + seed))
                if a.abs().sum() == 0:
                    t.fail("lora_A is all zeros: with A = B = 0 nothing can ever train.")
            want = base(x) + (x @ a.detach().T @ b.detach().T) * (alpha / r)
            t.allclose(layer(x), want, atol=1e-5, what="output with a trained B",
                       hint="scale the low-rank path by alpha / r.")
            trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
            t.is_true(trainable == {"lora_A", "lora_B"},
                      f"only lora_A and lora_B may be trainable; trainable now: "
                      f"{sorted(trainable)}.")
    with t.case("the low-rank update is scaled by alpha / r (not alpha, not 1)", core=True):
        for seed, (fan_in, fan_out, r, alpha) in enumerate([(6, 5, 4, 16.0), (12, 10, 8, 2.0)]):
            torch.manual_seed(40 + seed)
            base = torch.nn.Linear(fan_in, fan_out)
            layer = cls(base, r, alpha)
            a, b = getattr(layer, "lora_A", None), getattr(layer, "lora_B", None)
            t.is_true(isinstance(a, torch.nn.Parameter) and isinstance(b, torch.nn.Parameter)
                      and tuple(a.shape) == (r, fan_in) and tuple(b.shape) == (fan_out, r),
                      f"define lora_A ({r}, {fan_in}) and lora_B ({fan_out}, {r}) as "
                      "nn.Parameter attributes.")
            with torch.no_grad():
                a.copy_(t.randn(r, fan_in, seed=50 + seed))
                b.copy_(t.randn(fan_out, r, seed=60 + seed))
                x = t.randn(4, fan_in, seed=70 + seed)
                got, plain, delta = layer(x), base(x), x @ a.T @ b.T
            for wrong, how in ((alpha, "alpha"), (1.0, "nothing")):
                if (isinstance(got, torch.Tensor) and got.shape == plain.shape
                        and torch.allclose(got, plain + delta * wrong, atol=1e-5)):
                    t.fail(f"with r={r}, alpha={alpha} your update is scaled by {how}; scale it "
                           f"by alpha / r = {alpha / r:g}, so that the update keeps its size "
                           "when you change r and alpha need not be retuned.")
            t.allclose(got, plain + delta * (alpha / r), atol=1e-5, what="output",
                       hint="scale the low-rank path by alpha / r.")
    with t.case("the pretrained layer is frozen: only lora_A and lora_B train", core=True):
        torch.manual_seed(45)
        base = torch.nn.Linear(6, 4)
        layer = cls(base, 2, 4.0)
        frozen = sorted(n for n, p in base.named_parameters() if p.requires_grad)
        t.is_true(not frozen, f"the base layer's {frozen} still require gradients: LoRA trains "
                  "only the small A and B and leaves the pretrained weights untouched.")
        trainable = {n for n, p in layer.named_parameters() if p.requires_grad}
        t.is_true(trainable == {"lora_A", "lora_B"},
                  f"only lora_A and lora_B may be trainable; trainable now: {sorted(trainable)}.")


# ----------------------------------------------------------------------------- result tasks
def _dev_loss(model, batch) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(F.cross_entropy(logits, batch["labels"]))


def _sweep_losses(target, source, batch, betas) -> list:
    """ktlab's sweep: W(β) = β W_S + (1 - β) W_T0 from the target's own weights at every β."""
    from ktlab.transfer.regularize import wise_ft_sweep
    rows = wise_ft_sweep(copy.deepcopy(target), target.state_dict(), source.state_dict(), betas,
                         lambda m: {"loss": _dev_loss(m, batch)})
    return [row["loss"] for row in rows]


def _random_batch(t: Checker, batch: int, length: int, seed: int) -> dict:
    mask = t.padding_mask(batch, length, seed=seed, full_first=True)
    return {"input_ids": t.randint(1, 50, batch, length, seed=seed + 1) * mask,
            "attention_mask": mask, "labels": t.randint(0, 2, batch, seed=seed + 2)}


def _sweep_case(fn, t: Checker, target, source, batch, betas, losses=None, hint: str = "") -> None:
    losses = losses or _sweep_losses(target, source, batch, betas)
    got = fn(copy.deepcopy(target), copy.deepcopy(source), {k: v.clone() for k, v in batch.items()},
             list(betas))
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    try:
        got = float(got)
    except (TypeError, ValueError):
        t.fail(f"return the best β as a number, got {type(got).__name__}.")
    matches = [i for i, b in enumerate(betas) if abs(b - got) < 1e-9]
    t.is_true(bool(matches), f"you returned β={got:g}, which is not one of the βs swept {betas}.")
    best = min(range(len(betas)), key=losses.__getitem__)
    mine = losses[matches[0]]
    if mine > losses[best] + 1e-6:
        if not hint:
            worst = max(range(len(betas)), key=losses.__getitem__)
            hint = ("that is the β with the *highest* loss: return the argmin." if matches[0] == worst
                    else "switch both models to eval() (dropout makes every loss random) and "
                         "blend every β from the target's own starting weights.")
        t.fail(f"β={got:g} gives dev loss {mine:.5f}, but β={betas[best]:g} gives "
               f"{losses[best]:.5f}. Hint: {hint}")


@task("03.beta_sweep", points=2, title="the best β of an interpolation sweep (a result)",
      hint="For each β: copy the target, interpolate(copy, source, beta) from the target's own "
           "weights, eval(), mean cross-entropy on the batch; return the β of the lowest loss.")
def check_beta_sweep(fn, t: Checker) -> None:
    t.callable(fn, "your best_beta function")
    grids = [(0.0, 0.25, 0.5, 0.75, 1.0), tuple(i / 10 for i in range(11)), (0.2, 0.4, 0.6, 0.8)]
    for seed, betas in enumerate(grids):
        with t.case(f"tiny BERTs (seeds {10 + seed}, {20 + seed}), random batch, {len(betas)} βs"):
            target, source = _tiny_bert(1 + seed % 2, 10 + seed), _tiny_bert(1 + seed % 2, 20 + seed)
            _sweep_case(fn, t, target, source, _random_batch(t, 12, 9, seed=30 + seed), betas)
    with t.case("every β starts from the target's own weights (βs in descending order)",
                core=True):
        betas = (1.0, 0.75, 0.5, 0.25, 0.0)
        for seed in range(40, 60):  # a pair whose best β is not the first one swept
            target, source = _tiny_bert(1, seed), _tiny_bert(1, 100 + seed)
            batch = _random_batch(t, 16, 8, seed=seed)
            losses = _sweep_losses(target, source, batch, betas)
            if min(range(len(betas)), key=losses.__getitem__) != 0:
                break
        _sweep_case(fn, t, target, source, batch, betas, losses,
                    hint="with the βs in descending order, blending into the already blended "
                         "weights gives W = W_S at every β after the first: pass initial= (the "
                         "target's state dict) to interpolate, or start each β from a fresh copy.")
    with t.case("the notebook's sweep: SST-2 dev sentences, 11 βs"):
        from ktlab.grading import fixtures
        target, source, batch = fixtures.sweep_models()
        _sweep_case(fn, t, target, source, batch, tuple(i / 10 for i in range(11)))


def _interval_case(fn, t: Checker, pred_a, pred_b, labels, level: float = 0.95,
                   concept_only: bool = False) -> None:
    """The student's interval against ktlab's; ``concept_only``: only that it is the paired
    one (its width within 10%) and that the verdict is right, not every digit."""
    from ktlab.metrics import paired_difference_interval
    want = paired_difference_interval(pred_a, pred_b, labels, level)
    got = result_dict(fn(list(pred_a), list(pred_b), list(labels), level),
                      ("difference", "low", "high", "significant"), t)
    if not concept_only:
        close(t, got["difference"], want["difference"], "difference",
              hint="accuracy of A minus accuracy of B, as a fraction (not points).")
    want_half = (want["high"] - want["low"]) / 2
    try:
        half = (float(got["high"]) - float(got["low"])) / 2
    except (TypeError, ValueError):
        t.fail("low and high must be numbers.")
    if want_half > 0 and half > 1.5 * want_half:
        t.fail(f"your interval [{float(got['low']):.4f}, {float(got['high']):.4f}] is "
               f"{half / want_half:.1f}x too wide: it treats the two accuracies as independent "
               "samples. They are measured on the same sentences: use only the discordant counts b "
               "and c, se = sqrt(b + c - (b - c)**2 / n) / n.")
    if concept_only:
        t.is_true(want_half == 0 or abs(half / want_half - 1) < 0.1,
                  f"your interval is {half / want_half:.2f}x the width of the paired one: se = "
                  "sqrt(b + c - (b - c)**2 / n) / n.")
    else:
        close(t, got["low"], want["low"], f"lower end of the {level:.0%} interval",
              hint="d - z * se with z = norm.ppf((1 + level) / 2) and se from b and c.")
        close(t, got["high"], want["high"], f"upper end of the {level:.0%} interval",
              hint="d + z * se.")
    t.is_true(isinstance(got["significant"], (bool, np.bool_)),
              f"'significant' must be True or False, got {got['significant']!r}.")
    t.is_true(bool(got["significant"]) == want["significant"],
              f"'significant' should be {want['significant']}: the difference is significant "
              "exactly when the interval excludes 0.")


@task("03.difference_interval", points=2,
      title="the 95% interval of a paired accuracy difference, and its verdict (a result)",
      hint="b = #(A right, B wrong), c = #(A wrong, B right); d = (b - c) / n; se = sqrt(b + c - "
           "(b - c)**2 / n) / n; d -+ norm.ppf((1 + level) / 2) * se; significant: 0 outside.")
def check_difference_interval(fn, t: Checker) -> None:
    t.callable(fn, "your difference_interval function")
    for seed, (n, shares, level) in enumerate([(872, (0.80, 0.06, 0.03), 0.95),
                                               (500, (0.70, 0.08, 0.07), 0.95),
                                               (1000, (0.85, 0.04, 0.01), 0.90),
                                               (200, (0.60, 0.05, 0.15), 0.99)]):
        with t.case(f"{n} seeded examples, level {level}"):
            _interval_case(fn, t, *paired_predictions(t, n, 60 + seed, shares=shares), level)
    with t.case("paired: 30 vs 12 discordant of 872 is significant, though the unpaired "
                "interval holds 0", core=True):
        _interval_case(fn, t, *paired_predictions(t, 872, 70, counts=(730, 30, 12)),
                       concept_only=True)
    for a, b, pred_a, pred_b, labels in bench_pairs([("teacher", "bilstm/hard+pca"),
                                                     ("bilstm/hard+pca", "bilstm/hard")]):
        with t.case(f"the notebook's comparison: {a} vs {b} on the 872 SST-2 dev sentences"):
            _interval_case(fn, t, pred_a, pred_b, labels)
