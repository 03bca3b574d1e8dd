"""Checks for ``solutions/03_transfer_math.ipynb``: the KD loss with temperature, β-interpolation,
freezing the bottom k layers, and a LoRA linear layer.

References are ktlab's own code (:func:`ktlab.transfer.distill.kd_loss`,
:func:`ktlab.transfer.interpolate.interpolate`, :func:`ktlab.transfer.freeze.freeze_bottom_k`,
:class:`ktlab.transfer.peft.LoRALinear`) run on seeded random inputs and tiny BERTs of several
shapes, so a hard-coded answer cannot pass. Core cases (a failure caps the task at 1/3): the
T**2 factor; β weighting the source and 1 - β the target; the embeddings and the *bottom* k
layers frozen; the low-rank update scaled by α / r on a frozen base layer.
"""
from __future__ import annotations

import torch

from ktlab.grading.checks._shared import t2_factor_case, tiny_bert as _tiny_bert
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
