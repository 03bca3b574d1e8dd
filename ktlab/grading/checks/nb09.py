"""Checks for ``solutions/09_interpretability_and_robustness.ipynb``: integrated gradients as a
Riemann sum, the deletion test of an attribution, and one FGM perturbation of the embeddings.

References are computed on seeded tiny models and seeded inputs, so a hard-coded answer cannot
pass: integrated gradients is captum's ``IntegratedGradients(forward).attribute(x, baselines=
baseline, n_steps=steps, method="riemann_right")``; the deletion drop is :func:`deletion_reference`
on a tiny position-weighted bag-of-tokens classifier whose output depends on known tokens; the
FGM perturbation is :func:`fgm_reference`, ε·g/‖g‖₂ per example. Core cases (a failure caps the
task at 1/3): the attributions add up to f(x) − f(baseline) (completeness) and the gradient is
averaged along the path, not taken at x; [CLS] and [SEP] are never deleted and the drop is read
on the class predicted for the full sentence; the perturbation has norm ε per example and points
along the gradient (FGM, not FGSM's sign).
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ktlab.grading.checks._shared import own_rng, scalar
from ktlab.grading.registry import Checker, task

#: The special tokens of BERT's WordPiece vocabulary that the deletion test never removes.
CLS_ID, SEP_ID = 101, 102
SPECIAL_IDS = (CLS_ID, SEP_ID)


# ----------------------------------------------------------------------------- integrated gradients
class _Scorer(nn.Module):
    """A seeded tiny MLP on the flattened input; returns the score of one class, shape (batch,)."""

    def __init__(self, d_in: int, hidden: int, classes: int, target: int, seed: int,
                 act: Callable = torch.tanh, gain: float = 1.0) -> None:
        super().__init__()
        with own_rng():
            torch.manual_seed(seed)
            self.fc1, self.fc2 = nn.Linear(d_in, hidden), nn.Linear(hidden, classes)
        with torch.no_grad():
            self.fc1.weight.mul_(gain)
        self.requires_grad_(False)  # gradients flow to the input only
        self.act, self.target = act, target

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(z.flatten(1))))[:, self.target]


def ig_reference(forward: Callable, x: torch.Tensor, baseline: torch.Tensor, steps: int,
                 method: str = "riemann_right") -> torch.Tensor:
    """captum's integrated gradients with the right Riemann sum (alphas k / steps, k = 1..steps)."""
    from captum.attr import IntegratedGradients
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return IntegratedGradients(forward).attribute(
            x.detach().clone(), baselines=baseline.detach().clone(), n_steps=steps,
            method=method).detach()


def _grad_at(forward: Callable, z: torch.Tensor) -> torch.Tensor:
    z = z.detach().clone().requires_grad_(True)
    (g,) = torch.autograd.grad(forward(z).sum(), z)
    return g


def _mean_path_grad(forward, x, baseline, alphas) -> torch.Tensor:
    return torch.stack([_grad_at(forward, baseline + float(a) * (x - baseline))
                        for a in alphas]).mean(0)


def _ig_mistakes(forward, x, baseline, steps: int) -> list:
    """(attributions, one sentence) for the usual mistakes, to name the one a student made."""
    right = _mean_path_grad(forward, x, baseline, torch.linspace(1 / steps, 1, steps))
    at_x = _grad_at(forward, x)
    return [
        (ig_reference(forward, x, baseline, steps, "riemann_left"),
         f"that is the left Riemann sum (alphas 0, 1/{steps}, ..., {steps - 1}/{steps}); this task "
         f"uses the right one, alphas k/{steps} for k = 1..{steps}, as captum's "
         "method='riemann_right'"),
        (ig_reference(forward, x, baseline, steps, "riemann_middle"),
         "that is the midpoint rule (alphas (k - 1/2)/steps); use the right Riemann sum, alphas "
         "k/steps for k = 1..steps"),
        (ig_reference(forward, x, baseline, steps, "riemann_trapezoid"),
         "that is captum's trapezoid rule; use the right Riemann sum, alphas k/steps for k = "
         "1..steps, each gradient weighted 1/steps"),
        ((x - baseline) * at_x,
         "that is gradient x (input - baseline), with the gradient taken at x only; integrated "
         "gradients averages the gradient at every point baseline + alpha (x - baseline) of the "
         "path"),
        (right, "you returned the averaged gradient; multiply it by (x - baseline)"),
        (x * right, "you multiplied by x instead of (x - baseline); the baseline is not zero here"),
        ((x - baseline) * right * steps, "you summed the gradients over the steps; average them "
                                         "(weight each by 1/steps)"),
    ]


def _ig_call(fn, forward, x, baseline, steps: int, t: Checker) -> torch.Tensor:
    got = fn(forward, x.clone(), baseline.clone(), steps)
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        t.fail(f"return the attributions as a torch.Tensor of x's shape, got "
               f"{type(got).__name__}.")
    t.is_true(tuple(got.shape) == tuple(x.shape), f"the attributions must have x's shape "
              f"{tuple(x.shape)} (one per input feature), got {tuple(got.shape)}.")
    return got.detach()


def _ig_case(fn, forward, x, baseline, steps: int, t: Checker) -> None:
    want = ig_reference(forward, x, baseline, steps)
    got = _ig_call(fn, forward, x, baseline, steps, t)
    if not torch.allclose(got.double(), want.double(), atol=1e-5, rtol=1e-4):
        for alt, why in _ig_mistakes(forward, x, baseline, steps):
            if torch.allclose(got.double(), alt.double(), atol=1e-5, rtol=1e-4):
                t.fail(f"your attributions do not match captum's: {why}.")
    t.allclose(got, want, atol=1e-5, rtol=1e-4, what="attributions",
               hint="(x - baseline) * the mean of the gradients at baseline + (k/steps) (x - "
                    "baseline), k = 1..steps.")


@task("09.ig_riemann", points=2, title="integrated gradients as a right Riemann sum",
      hint="for k = 1..steps: z = baseline + (k / steps) * (x - baseline), the gradient of "
           "forward(z).sum() with respect to z; average those gradients and multiply by "
           "(x - baseline).")
def check_ig_riemann(fn, t: Checker) -> None:
    t.callable(fn, "your integrated_gradients function")
    setups = [((3, 4), 8, 1, 0, torch.tanh, False, 16),
              ((4, 6), 16, 3, 2, F.softplus, True, 8),
              ((2, 5, 4), 12, 2, 1, torch.tanh, False, 32),
              ((3, 5), 10, 2, 0, torch.sigmoid, True, 5)]
    for seed, (shape, hidden, classes, target, act, random_base, steps) in enumerate(setups):
        d_in = int(torch.tensor(shape[1:]).prod())
        base_what = "a random baseline" if random_base else "a zero baseline"
        name = (f"x {shape}, MLP {d_in} -> {hidden} -> {classes} ({act.__name__}), class {target}, "
                f"{base_what}, {steps} steps")
        with t.case(name):
            forward = _Scorer(d_in, hidden, classes, target, 900 + seed, act)
            x = t.randn(*shape, seed=10 * seed, scale=1.5)
            baseline = t.randn(*shape, seed=10 * seed + 1, scale=0.5) if random_base \
                else torch.zeros(shape)
            _ig_case(fn, forward, x, baseline, steps, t)
    with t.case("x and the baseline are left unchanged"):
        forward = _Scorer(6, 8, 2, 1, 950)
        x, baseline = t.randn(2, 6, seed=51), t.randn(2, 6, seed=52, scale=0.3)
        x_in, b_in = x.clone(), baseline.clone()
        fn(forward, x_in, b_in, 10)
        t.is_true(torch.equal(x_in, x) and torch.equal(b_in, baseline), "your function changed x "
                  "or the baseline in place; build the path points as new tensors.")
    with t.case("completeness: each example's attributions sum to f(x) - f(baseline)", core=True):
        forward = _Scorer(6, 12, 1, 0, 960)
        x, baseline = t.randn(4, 6, seed=61, scale=1.5), t.randn(4, 6, seed=62, scale=0.3)
        steps = 256
        got = _ig_call(fn, forward, x, baseline, steps, t)
        with torch.no_grad():
            delta = (forward(x) - forward(baseline)).double()
        sums = got.double().sum(1)
        gap = (sums - delta).abs()
        tol = 0.01 * delta.abs().clamp(min=0.1)
        if not bool((gap <= tol).all()):
            i = int(torch.argmax(gap - tol))
            why = ""
            for alt, sentence in _ig_mistakes(forward, x, baseline, steps)[3:]:
                if torch.allclose(got.double(), alt.double(), atol=1e-5, rtol=1e-4):
                    why = f" ({sentence})"
            t.fail(f"example {i}: your attributions sum to {float(sums[i]):.5g}, but f(x) - "
                   f"f(baseline) = {float(delta[i]):.5g}{why}. Integrated gradients are complete: "
                   "they split the change of the output among the input features.")
    with t.case("the gradient is averaged along the path, not taken at x (a saturated model)",
                core=True):
        forward = _Scorer(5, 6, 1, 0, 970, torch.tanh, gain=4.0)
        x = t.randn(3, 5, seed=71, scale=2.0)
        baseline = torch.zeros(3, 5)
        got = _ig_call(fn, forward, x, baseline, 64, t)
        at_x = (x - baseline) * _grad_at(forward, x)
        if torch.allclose(got.double(), at_x.double(), atol=1e-5, rtol=1e-4):
            t.fail("your attributions are gradient x (input - baseline) at x only; where the model "
                   "saturates that gradient is ~0 and misses what moved the output. Average the "
                   "gradients at baseline + (k/steps)(x - baseline), k = 1..steps.")
        want = ig_reference(forward, x, baseline, 64)
        rules = [want] + [alt for alt, _ in _ig_mistakes(forward, x, baseline, 64)[:3]]
        if any(torch.allclose(got.double(), r.double(), atol=1e-5, rtol=1e-4) for r in rules):
            return  # left, midpoint, trapezoid: averaged along the path (the rule: other cases)
        rel = float((got.double() - want.double()).norm() / want.double().norm())
        t.is_true(rel <= 0.05, f"your attributions are {100 * rel:.0f}% away from integrated "
                  "gradients (captum, 64 steps); average the gradients at baseline + (k/steps) "
                  "(x - baseline), k = 1..steps, and multiply by (x - baseline).")


# ----------------------------------------------------------------------------- deletion test
class BagOfTokens(nn.Module):
    """A tiny classifier whose output depends on known tokens: each token id has a seeded logit
    vector ``table[id]``, weighted by its position (1 / (1 + 0.2 t): earlier tokens weigh more,
    so deleting a token moves the ones after it). ``predict(ids)`` takes a batch ``(batch, seq)``
    of token ids and returns class probabilities ``(batch, classes)``. Id 0 ([PAD]) has a zero
    vector; [CLS] and [SEP] (101, 102) carry a strong one."""

    def __init__(self, classes: int, seed: int, vocab: int = 130) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        table = 1.5 * torch.randn(vocab, classes, generator=g)
        table[0] = 0.0
        table[CLS_ID] = 3.0 * torch.randn(classes, generator=g)
        table[SEP_ID] = 3.0 * torch.randn(classes, generator=g)
        self.register_buffer("table", table)

    @torch.no_grad()
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(f"predict takes a batch of token ids of shape (batch, seq), got "
                             f"{shape}; pass ids.unsqueeze(0)")
        weights = 1.0 / (1.0 + 0.2 * torch.arange(ids.shape[1], dtype=torch.float32))
        return torch.softmax((self.table[ids] * weights[None, :, None]).sum(1), dim=-1)


def deletion_reference(predict: Callable, ids: torch.Tensor, scores: torch.Tensor, k: int) -> float:
    """p(c | sentence) - p(c | sentence without its k highest-scored ordinary tokens), where c is
    the class predicted for the full sentence; [CLS] and [SEP] are never deleted."""
    full = predict(ids[None])[0]
    c = int(full.argmax())
    ordinary = [i for i in range(len(ids)) if int(ids[i]) not in SPECIAL_IDS]
    top = set(sorted(ordinary, key=lambda i: -float(scores[i]))[:k])
    kept = ids[[i for i in range(len(ids)) if i not in top]]
    return float(full[c] - predict(kept[None])[0, c])


def _sentence(t: Checker, length: int, seed: int) -> torch.Tensor:
    middle = t.randint(1, 100, length - 2, seed=seed)  # ordinary ids (never 0, 101, 102)
    return torch.cat([torch.tensor([CLS_ID]), middle, torch.tensor([SEP_ID])])


_PAD = 6  #: the index of the [PAD]-instead-of-deletion mistake below


def _deletion_mistakes(predict, ids, scores, k: int) -> list:
    full = predict(ids[None])[0]
    c = int(full.argmax())
    n = len(ids)

    def prob_without(remove, order=None, pad=False, cls=None):
        if pad:
            kept = ids.clone()
            kept[list(remove)] = 0
        else:
            keep = [i for i in (order if order is not None else range(n)) if i not in remove]
            kept = ids[keep]
        p = predict(kept[None])[0]
        return p if cls is None else float(p[cls])

    ordinary = [i for i in range(n) if int(ids[i]) not in SPECIAL_IDS]
    by_score = sorted(range(n), key=lambda i: -float(scores[i]))
    top = set(sorted(ordinary, key=lambda i: -float(scores[i]))[:k])
    low = set(sorted(ordinary, key=lambda i: float(scores[i]))[:k])
    any_top = set(by_score[:k])
    after = prob_without(top)
    c_new = int(after.argmax())
    ref = float(full[c] - after[c])
    return [
        (float(full[c]) - prob_without(any_top, cls=c),
         "you deleted [CLS] or [SEP]; they are not words of the sentence, skip positions whose "
         "id is 101 or 102 when choosing the top k"),
        (float(full[c]) - prob_without(low, cls=c), "you deleted the k *lowest*-scored tokens; "
                                                    "delete the k highest"),
        (float(full[c_new] - after[c_new]),
         "you read the class predicted *after* the deletion; the drop is in the probability of "
         "the class predicted for the full sentence" + (
             " (or your drop has the wrong sign: with two classes both give this number)"
             if abs(float(full[c_new] - after[c_new]) + ref) < 1e-6 else "")),
        (float(after[c]), "you returned the probability after the deletion; return the drop, "
                          "p(before) - p(after)"),
        (-ref, "your drop has the wrong sign: return p(before) - p(after), positive when the "
               "deleted tokens supported the prediction"),
        (float(full.max() - after.max()), "you compared the top probabilities before and after; "
                                          "read both on the class predicted for the full sentence"),
        (float(full[c]) - prob_without(top, cls=c, pad=True),
         "you replaced the tokens by [PAD] (id 0); delete them, so the sentence gets k tokens "
         "shorter"),
        (float(full[c]) - prob_without(top, order=by_score, cls=c),
         "the kept tokens are reordered (by score); keep them in their original order"),
    ]


def _drop(fn, predict, ids, scores, k: int, t: Checker) -> float:
    return scalar(fn(predict, ids.clone(), scores.clone(), k), t, "drop")


def _deletion_case(fn, predict, ids, scores, k: int, t: Checker, core: bool = False) -> None:
    """``core``: the case tests one idea, so [PAD] instead of deletion (another case's point) is
    accepted here."""
    want = deletion_reference(predict, ids, scores, k)
    got = _drop(fn, predict, ids, scores, k, t)
    if abs(got - want) <= 1e-5:
        return
    mistakes = _deletion_mistakes(predict, ids, scores, k)
    if core and abs(got - mistakes[_PAD][0]) <= 1e-5:
        return
    for value, why in mistakes:
        if abs(got - value) <= 1e-5 and abs(value - want) > 1e-5:
            t.fail(f"expected a drop of {want:.5f}, got {got:.5f}: {why}.")
    t.fail(f"expected a drop of {want:.5f}, got {got:.5f}. Delete the k highest-scored tokens "
           "other than [CLS]/[SEP], keep the rest in order, and subtract the probability of the "
           "originally predicted class after from before.")


@task("09.deletion_test", points=2, title="the deletion test of an attribution",
      hint="c = predict(ids[None])[0].argmax(); among the positions whose id is not 101/102, take "
           "the k with the highest scores; delete them (keep the order of the rest) and return "
           "p_before[c] - p_after[c].")
def check_deletion(fn, t: Checker) -> None:
    t.callable(fn, "your deletion_drop function")
    for seed, (length, k, classes) in enumerate([(10, 1, 2), (15, 3, 3), (20, 5, 2), (8, 2, 4)]):
        with t.case(f"{length} tokens, k={k}, {classes} classes"):
            predict = BagOfTokens(classes, 1000 + seed)
            ids, scores = _sentence(t, length, 10 * seed), t.randn(length, seed=10 * seed + 1)
            _deletion_case(fn, predict, ids, scores, k, t)
    with t.case("k=0 deletes nothing: the drop is 0"):
        predict = BagOfTokens(2, 1050)
        ids, scores = _sentence(t, 9, 51), t.randn(9, seed=52)
        got = _drop(fn, predict, ids, scores, 0, t)
        t.is_true(abs(got) <= 1e-6, f"with k=0 nothing is deleted, so the drop must be 0, got "
                  f"{got:.5g}.")
    with t.case("the ids and the scores are left unchanged"):
        predict = BagOfTokens(3, 1060)
        ids, scores = _sentence(t, 12, 61), t.randn(12, seed=62)
        ids_in, scores_in = ids.clone(), scores.clone()
        fn(predict, ids_in, scores_in, 3)
        t.is_true(torch.equal(ids_in, ids) and torch.equal(scores_in, scores),
                  "your function changed ids or scores in place; index into copies instead.")
    with t.case("[CLS] and [SEP] are never deleted (here they have the highest scores)",
                core=True):
        predict = BagOfTokens(2, 1070)
        ids = _sentence(t, 14, 71)
        scores = t.randn(14, seed=72)
        scores[0], scores[-1] = 10.0, 9.0  # the specials look most important
        _deletion_case(fn, predict, ids, scores, 2, t, core=True)
    with t.case("the drop is read on the class predicted for the full sentence (here deleting "
                "the top 3 tokens flips the prediction)", core=True):
        predict, ids, scores = _flipping_setup(t)
        _deletion_case(fn, predict, ids, scores, 3, t, core=True)


def _flipping_setup(t: Checker) -> tuple:
    """A sentence whose three top-scored tokens carry the prediction: without them it flips.
    (The first seeded model, from 1080 on, where it does: found by search, not by hand.)"""
    for seed in range(1080, 1200):
        predict = BagOfTokens(2, seed)
        margin = predict.table[:100, 0] - predict.table[:100, 1]
        margin[0] = -1e9  # never [PAD]
        order = [int(i) for i in torch.argsort(margin, descending=True)]
        strong = order[:3]                                                # strongly for class 0
        mild = [i for i in order if -0.9 < float(margin[i]) < -0.2][:8]   # mildly for class 1
        if len(mild) < 8:
            continue
        body = [strong[0], mild[0], strong[1], mild[1], mild[2], strong[2]] + mild[3:8]
        ids = torch.tensor([CLS_ID] + body + [SEP_ID])
        keep = [i for i in range(len(ids)) if i not in (1, 3, 6)]
        before, after = predict(ids[None])[0], predict(ids[keep][None])[0]
        if int(before.argmax()) == 0 and int(after.argmax()) == 1 and float(after[1]) > 0.6:
            scores = t.randn(len(ids), seed=81, scale=0.3)
            scores[[1, 3, 6]] += 3.0
            return predict, ids, scores
    raise AssertionError("no seeded model gives a flipping sentence")


# ----------------------------------------------------------------------------- FGM
def fgm_reference(embeddings: torch.Tensor, grad: torch.Tensor, epsilon: float) -> torch.Tensor:
    """ε·g/‖g‖₂ per example (the norm over every dimension but the first); zeros where g = 0."""
    norm = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.dim() - 1)))
    return torch.where(norm > 0, epsilon * grad / norm.clamp(min=1e-30), torch.zeros_like(grad))


def _per_example_norm(r: torch.Tensor) -> torch.Tensor:
    return r.detach().double().flatten(1).norm(dim=1)


def _fgm_mistakes(grad: torch.Tensor, epsilon: float) -> list:
    ref = fgm_reference(grad, grad, epsilon)
    return [
        (epsilon * grad / grad.norm(), "you divided by the norm of the whole batch; normalise "
                                       "each example by its own norm, ‖g_i‖ over its sequence and "
                                       "embedding dimensions"),
        (epsilon * grad / grad.norm(dim=-1, keepdim=True), "you normalised each token's vector "
                                                           "separately; FGM normalises the whole "
                                                           "sentence's gradient, one norm per "
                                                           "example"),
        (epsilon * grad.sign(), "that is FGSM's ε·sign(g); FGM keeps the gradient's direction: "
                                "ε·g/‖g‖₂"),
        (-ref, "your perturbation points against the gradient; the adversarial direction "
               "*increases* the loss, +g"),
        (epsilon * grad, "you did not normalise the gradient; divide by each example's ‖g‖₂"),
    ]


def _fgm_call(fn, emb: torch.Tensor, grad: torch.Tensor, epsilon: float,
              t: Checker) -> torch.Tensor:
    got = fn(emb.clone(), grad.clone(), epsilon)
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    if not isinstance(got, torch.Tensor):
        t.fail(f"return the perturbation as a torch.Tensor, got {type(got).__name__}.")
    t.is_true(tuple(got.shape) == tuple(emb.shape), f"the perturbation must have the embeddings' "
              f"shape {tuple(emb.shape)}, got {tuple(got.shape)}.")
    return got.detach()


def _fgm_case(fn, emb, grad, epsilon: float, t: Checker) -> None:
    want = fgm_reference(emb, grad, epsilon)
    got = _fgm_call(fn, emb, grad, epsilon, t)
    if not torch.allclose(got.double(), want.double(), atol=1e-6, rtol=1e-4):
        for alt, why in _fgm_mistakes(grad, epsilon):
            if torch.allclose(got.double(), alt.double(), atol=1e-6, rtol=1e-4):
                t.fail(f"wrong perturbation: {why}.")
    t.allclose(got, want, atol=1e-6, rtol=1e-4, what="perturbation",
               hint="epsilon * g / ‖g‖₂, the norm of each example over all its other dimensions.")


def _row_scaled(t: Checker, shape: tuple, scales: tuple, seed: int) -> torch.Tensor:
    g = t.randn(*shape, seed=seed)
    return g * torch.tensor(scales).view(-1, *([1] * (len(shape) - 1)))


@task("09.fgm_step", points=2, title="one FGM perturbation of the embeddings",
      hint="norm = grad.flatten(1).norm(dim=1), reshaped to broadcast (batch, 1, 1); return "
           "epsilon * grad / norm, and zeros for an example whose gradient is all zero.")
def check_fgm(fn, t: Checker) -> None:
    t.callable(fn, "your fgm_perturbation function")
    for seed, (shape, epsilon) in enumerate([((2, 5, 8), 1.0), ((4, 3, 16), 0.5),
                                             ((1, 7, 4), 2.0), ((3, 6), 0.1)]):
        what = "sentence embeddings" if len(shape) == 2 else "token embeddings"
        with t.case(f"{what} {shape}, epsilon={epsilon}"):
            emb, grad = t.randn(*shape, seed=10 * seed), t.randn(*shape, seed=10 * seed + 1)
            _fgm_case(fn, emb, grad, epsilon, t)
    with t.case("an example with a zero gradient gets a zero perturbation (no NaN)"):
        emb, grad = t.randn(3, 4, 6, seed=41), t.randn(3, 4, 6, seed=42)
        grad[1] = 0.0
        got = _fgm_call(fn, emb, grad, 1.0, t)
        t.is_true(bool(torch.isfinite(got).all()), "your perturbation has NaN/inf where the "
                  "gradient is zero (0/0); return zeros for an example whose ‖g‖₂ is 0.")
        t.is_true(bool((got[1] == 0).all()), "example 1 has a zero gradient, so there is no "
                  "adversarial direction: its perturbation must be all zeros.")
        _fgm_case(fn, emb, grad, 1.0, t)
    with t.case("the embeddings and the gradient are left unchanged; float64 stays float64"):
        emb = t.randn(2, 3, 5, seed=51).double()
        grad = t.randn(2, 3, 5, seed=52).double()
        emb_in, grad_in = emb.clone(), grad.clone()
        got = fn(emb_in, grad_in, 0.7)
        t.is_true(torch.equal(emb_in, emb) and torch.equal(grad_in, grad),
                  "your function changed the embeddings or the gradient in place; return the "
                  "perturbation as a new tensor (the training step adds it, then removes it).")
        t.is_true(isinstance(got, torch.Tensor) and got.dtype == torch.float64,
                  f"float64 embeddings need a float64 perturbation, got "
                  f"{getattr(got, 'dtype', type(got).__name__)}.")
    with t.case("‖r‖₂ = epsilon for every example (one norm over its sequence and embedding "
                "dimensions)", core=True):
        epsilon = 0.3
        grad = _row_scaled(t, (3, 6, 8), (0.01, 1.0, 50.0), 61)
        emb = t.randn(3, 6, 8, seed=62)
        got = _fgm_call(fn, emb, grad, epsilon, t)
        norms = _per_example_norm(got)
        if not torch.allclose(norms, torch.full_like(norms, epsilon), rtol=1e-4, atol=1e-7):
            for alt, why in _fgm_mistakes(grad, epsilon)[:2] + _fgm_mistakes(grad, epsilon)[4:]:
                if torch.allclose(got.double(), alt.double(), atol=1e-6, rtol=1e-4):
                    t.fail(f"the per-example norms of your perturbation are "
                           f"{[round(float(v), 4) for v in norms]}, expected {epsilon} each: "
                           f"{why}.")
            t.fail(f"the per-example norms of your perturbation are "
                   f"{[round(float(v), 4) for v in norms]}, expected {epsilon} each: every "
                   "sentence gets a perturbation of size epsilon, whatever the size of its "
                   "gradient.")
    with t.case("r points along the gradient (FGM's ε·g/‖g‖₂, not FGSM's sign)", core=True):
        grad = _row_scaled(t, (4, 5, 6), (1.0, 3.0, 0.2, 7.0), 71)
        emb = t.randn(4, 5, 6, seed=72)
        got = _fgm_call(fn, emb, grad, 1.0, t)
        cos = F.cosine_similarity(got.double().flatten(1), grad.double().flatten(1), dim=1)
        if not bool((cos > 1 - 1e-6).all()):
            for alt, why in _fgm_mistakes(grad, 1.0)[2:4]:
                if torch.allclose(got.double(), alt.double(), atol=1e-6, rtol=1e-4):
                    t.fail(f"wrong direction: {why}.")
            t.fail(f"the cosine between your perturbation and the gradient is "
                   f"{[round(float(v), 4) for v in cos]}, expected 1 for every example: FGM moves "
                   "the embeddings along g, the direction that increases the loss fastest.")
