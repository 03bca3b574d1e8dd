"""Checks for ``solutions/07_peft_and_forgetting.ipynb``: the parameters BitFit trains, a Houlsby
adapter's forward pass, merging a LoRA update into the frozen weight, and the accuracy drop of a
fixed linear probe (a measure of forgetting).

References are ktlab's own code (:func:`ktlab.transfer.peft.apply_bitfit`,
:class:`ktlab.transfer.peft.Adapter`, :meth:`ktlab.transfer.peft.LoRALinear.merge`) run on seeded
random inputs and tiny BERTs of several shapes, so a hard-coded answer cannot pass; the probe drop
is :func:`probe_drop` below. Core cases (a failure caps the task at 1/3): no weight matrix and
every bias for BitFit; the residual and the GELU of the adapter; the α / r scaling and a merged
layer that computes what the unmerged LoRA layer computes; one fixed probe for both feature sets
and the sign of the drop (positive = forgetting).
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ktlab.grading.checks._shared import own_rng, scalar, tiny_bert
from ktlab.grading.registry import Checker, task
from ktlab.transfer.freeze import TASK_HEAD, is_head
from ktlab.transfer.peft import Adapter, LoRALinear, apply_bitfit


# ----------------------------------------------------------------------------- BitFit
def _bitfit_reference(model: nn.Module) -> set:
    """What ktlab's apply_bitfit leaves trainable (on a copy: the student gets the original)."""
    ref = copy.deepcopy(model)
    apply_bitfit(ref)
    return {n for n, p in ref.named_parameters() if p.requires_grad}


def _fresh(model: nn.Module) -> nn.Module:
    """The same model with every parameter trainable again (the student's code may freeze)."""
    fresh = copy.deepcopy(model)
    for p in fresh.parameters():
        p.requires_grad_(True)
    return fresh


def _selected(fn, model: nn.Module, t: Checker) -> set:
    got = fn(model)
    if got is None:
        t.fail("your function returned None; did you forget `return`?")
    t.is_true(not isinstance(got, (str, torch.Tensor)) and hasattr(got, "__iter__"),
              f"return a list of parameter names (str), got a {type(got).__name__}.")
    got = list(got)
    bad = [n for n in got if not isinstance(n, str)]
    t.is_true(not bad, f"return parameter *names* (str), as model.named_parameters() gives them; "
              f"got a {type(bad[0]).__name__ if bad else ''}.")
    unknown = sorted(set(got) - {n for n, _ in model.named_parameters()})
    t.is_true(not unknown, f"{unknown[:2]} are not parameter names of this model; take the names "
              "from model.named_parameters().")
    return set(got)


@task("07.bitfit_params", points=2, title="the parameters BitFit trains",
      hint="every parameter whose name ends with '.bias', plus the task head (names starting "
           "with 'classifier.'); never a weight matrix or a LayerNorm weight.")
def check_bitfit(fn, t: Checker) -> None:
    t.callable(fn, "your bitfit_params function")
    for seed, (kind, layers, hidden) in enumerate([("sequence", 1, 16), ("sequence", 3, 16),
                                                   ("token", 2, 24), ("base", 2, 16)]):
        what = {"sequence": "BertForSequenceClassification", "token": "BertForTokenClassification",
                "base": "BertModel (no head)"}[kind]
        with t.case(f"{what}, {layers} layer(s), hidden {hidden}"):
            model = tiny_bert(layers, seed, kind, hidden, num_labels=2 + seed)
            want = _bitfit_reference(model)
            got = _selected(fn, model, t)
            extra, missing = sorted(got - want), sorted(want - got)
            t.is_true(not extra, f"these should stay frozen: {extra[:3]} (BitFit trains only the "
                      "biases and the task head).")
            t.is_true(not missing, f"these should be trained: {missing[:3]}.")
    model = tiny_bert(2, 7, "sequence", 16)
    names = dict(model.named_parameters())
    with t.case("no weight matrix is selected", core=True):
        got = _selected(fn, _fresh(model), t)
        matrices = sorted(n for n in got if names[n].dim() >= 2 and not is_head(n, TASK_HEAD))
        t.is_true(not matrices, f"you selected weight matrices, e.g. {matrices[:3]}: BitFit "
                  "freezes every weight matrix (embeddings, attention, feed-forward) and trains "
                  "only the biases, about 0.1% of BERT's parameters.")
    with t.case("every bias is selected", core=True):
        got = _selected(fn, _fresh(model), t)
        missing = sorted(n for n in names if n.endswith(".bias") and n not in got)
        t.is_true(not missing, f"these biases are missing: {missing[:3]}. BitFit trains every "
                  "bias: attention, feed-forward, LayerNorm, the embeddings' LayerNorm and the "
                  "pooler.")
    with t.case("the task head trains"):
        got = _selected(fn, _fresh(model), t)
        missing = sorted(n for n in names if is_head(n, TASK_HEAD) and n not in got)
        t.is_true(not missing, f"the new task head must train too (it starts random): "
                  f"{missing} are not selected.")
    with t.case("LayerNorm weights stay frozen"):
        got = _selected(fn, _fresh(model), t)
        gains = sorted(n for n in got if "LayerNorm.weight" in n)
        t.is_true(not gains, f"{gains[:2]} are LayerNorm gains, not biases; BitFit (as in "
                  "ktlab.transfer.peft.apply_bitfit) trains only the LayerNorm biases.")


# ----------------------------------------------------------------------------- adapter
def _adapter_reference(h, down_w, down_b, up_w, up_b) -> torch.Tensor:
    with own_rng():
        adapter = Adapter(h.shape[-1], down_w.shape[0])
    with torch.no_grad():
        for linear, w, b in ((adapter.down, down_w, down_b), (adapter.up, up_w, up_b)):
            linear.weight.copy_(w)
            linear.bias.copy_(b)
        return adapter(h)


def _adapter_inputs(t: Checker, shape: tuple, bottleneck: int, seed: int) -> tuple:
    dim = shape[-1]
    return (t.randn(*shape, seed=seed),
            t.randn(bottleneck, dim, seed=seed + 1, scale=dim ** -0.5),
            t.randn(bottleneck, seed=seed + 2, scale=0.5),
            t.randn(dim, bottleneck, seed=seed + 3, scale=bottleneck ** -0.5),
            t.randn(dim, seed=seed + 4, scale=0.5))


def _adapter_with(act, h, down_w, down_b, up_w, up_b) -> torch.Tensor:
    return h + F.linear(act(F.linear(h, down_w, down_b)), up_w, up_b)


#: The activations students reach for, to name the one they used (GELU is ktlab's).
_ACTIVATIONS = {"gelu": F.gelu, "gelu (tanh)": lambda z: F.gelu(z, approximate="tanh"),
                "relu": F.relu, "none": lambda z: z}


def _same(got, want, atol: float = 1e-5) -> bool:
    return (isinstance(got, torch.Tensor) and got.shape == want.shape
            and torch.allclose(got.detach().double(), want.double(), atol=atol))


@task("07.adapter_forward", points=2, title="a Houlsby adapter's forward pass",
      hint="h + F.linear(F.gelu(F.linear(h, down_w, down_b)), up_w, up_b): down-project, GELU, "
           "up-project, and add the input back.")
def check_adapter(fn, t: Checker) -> None:
    t.callable(fn, "your adapter_forward function")
    for seed, (shape, bottleneck) in enumerate([((4, 8), 2), ((2, 5, 16), 4), ((3, 7, 12), 1),
                                                ((1, 3, 32), 8)]):
        with t.case(f"h {shape}, bottleneck {bottleneck}"):
            inputs = _adapter_inputs(t, shape, bottleneck, 10 * seed)
            kept = [x.clone() for x in inputs]
            got = fn(*[x.clone() for x in inputs])
            if _same(got, _adapter_with(_ACTIVATIONS["gelu (tanh)"], *inputs), 1e-6):
                t.fail("you used the tanh approximation of GELU; ktlab's Adapter (like BERT) uses "
                       "the exact one: F.gelu(x).")
            t.allclose(got, _adapter_reference(*inputs), atol=1e-5, what="output",
                       hint="h + up(gelu(down(h))), with F.linear(x, W, b) = x @ W.T + b.")
            got = fn(*inputs)
            t.is_true(all(torch.equal(a, b) for a, b in zip(inputs, kept)),
                      "your function changed its inputs in place; compute a new tensor.")
    with t.case("the residual connection is kept", core=True):
        args = _adapter_inputs(t, (3, 6, 16), 4, 60)
        h, down_w, down_b, up_w, up_b = args
        got = fn(*[x.clone() for x in args])
        if any(_same(got, _adapter_with(act, *args) - h) for act in _ACTIVATIONS.values()):
            t.fail("you returned only the bottleneck path up(gelu(down(h))); add the input h back. "
                   "The residual is what makes an adapter with up = 0 the identity, so training "
                   "starts from the pretrained model.")
        zero = fn(h.clone(), down_w, down_b, torch.zeros_like(up_w), torch.zeros_like(up_b))
        t.allclose(zero, h, atol=1e-6, what="output with a zero up-projection",
                   hint="with up_w = 0 and up_b = 0 the adapter must return h unchanged: "
                        "h + up(gelu(down(h))).")
        if not any(_same(got, _adapter_with(act, *args)) for act in _ACTIVATIONS.values()):
            t.allclose(got, _adapter_reference(*args), atol=1e-5, what="output",
                       hint="h + up(gelu(down(h))).")
    with t.case("the GELU non-linearity is applied between down and up", core=True):
        args = _adapter_inputs(t, (4, 5, 12), 3, 70)
        got = fn(*[x.clone() for x in args])
        h = args[0]

        def matches(act: str) -> bool:  # with or without the residual (that is the other case)
            out = _adapter_with(_ACTIVATIONS[act], *args)
            return _same(got, out) or _same(got, out - h)

        if matches("none"):
            t.fail("no non-linearity: down and up then collapse into a single rank-"
                   f"{args[1].shape[0]} linear map. Apply F.gelu to the down-projection.")
        if matches("relu"):
            t.fail("you used ReLU; ktlab's Adapter, like BERT's feed-forward, uses GELU: F.gelu.")
        if not (matches("gelu") or matches("gelu (tanh)")):  # either GELU: the concept is there
            t.allclose(got, _adapter_reference(*args), atol=1e-5, what="output",
                       hint="gelu goes between the two projections: up(gelu(down(h))).")


# ----------------------------------------------------------------------------- LoRA merge
def _merge_reference(W, A, B, alpha: float, r: int) -> torch.Tensor:
    out_features, in_features = W.shape
    with own_rng():
        layer = LoRALinear(nn.Linear(in_features, out_features), r=r, alpha=alpha)
    with torch.no_grad():
        layer.base.weight.copy_(W)
        layer.lora_A.copy_(A)
        layer.lora_B.copy_(B)
    layer.merge()
    return layer.base.weight.detach().clone()


def _lora_inputs(t: Checker, out_features: int, in_features: int, r: int, seed: int) -> tuple:
    return (t.randn(out_features, in_features, seed=seed, scale=0.5),
            t.randn(r, in_features, seed=seed + 1), t.randn(out_features, r, seed=seed + 2))


@task("07.merge_lora", points=2, title="merging a LoRA update into the frozen weight",
      hint="return W + (alpha / r) * (B @ A), a new tensor of W's shape [out, in]; leave W "
           "unchanged.")
def check_merge_lora(fn, t: Checker) -> None:
    t.callable(fn, "your merge_lora function")
    for seed, (out_f, in_f, r, alpha) in enumerate([(8, 6, 2, 4.0), (16, 16, 4, 8.0),
                                                    (5, 12, 1, 1.0), (10, 7, 3, 12.0)]):
        with t.case(f"W {(out_f, in_f)}, r={r}, alpha={alpha}"):
            W, A, B = _lora_inputs(t, out_f, in_f, r, 10 * seed)
            t.allclose(fn(W.clone(), A.clone(), B.clone(), alpha, r),
                       _merge_reference(W, A, B, alpha, r), atol=1e-5, what="merged weight",
                       hint="W + (alpha / r) * B @ A, with A: [r, in] and B: [out, r].")
    with t.case("W is left unchanged (return a new tensor)"):
        W, A, B = _lora_inputs(t, 6, 4, 2, 50)
        W_in = W.clone()
        fn(W_in, A, B, 4.0, 2)
        t.is_true(torch.equal(W_in, W), "your function changed W in place; return a new tensor "
                  "(W + ...), so that the pretrained weight is still there to unmerge.")
    with t.case("the update is scaled by alpha / r (not alpha, not 1)", core=True):
        for seed, (out_f, in_f, r, alpha) in enumerate([(6, 5, 4, 16.0), (12, 10, 8, 2.0)]):
            W, A, B = _lora_inputs(t, out_f, in_f, r, 60 + 10 * seed)
            got = fn(W.clone(), A.clone(), B.clone(), alpha, r)
            for wrong, how in ((alpha, "alpha"), (1.0, "nothing"), (r / alpha, "r / alpha")):
                if _same(got, W + wrong * (B @ A)):
                    t.fail(f"with r={r}, alpha={alpha} your update B @ A is scaled by {how}; "
                           f"scale it by alpha / r = {alpha / r:g}, as the LoRA layer's forward "
                           "does, or the merged model computes something else.")
            t.allclose(got, _merge_reference(W, A, B, alpha, r), atol=1e-5,
                       what="merged weight", hint="W + (alpha / r) * B @ A.")
    with t.case("the merged layer computes what the unmerged LoRA layer computes", core=True):
        with own_rng():
            torch.manual_seed(80)
            layer = LoRALinear(nn.Linear(12, 9), r=3, alpha=6.0)
        with torch.no_grad():
            layer.lora_B.copy_(t.randn(9, 3, seed=81))  # a trained B (it starts at 0)
            x = t.randn(2, 5, 12, seed=82)
            unmerged = layer(x)
        merged_w = fn(layer.base.weight.detach().clone(), layer.lora_A.detach().clone(),
                      layer.lora_B.detach().clone(), 6.0, 3)
        t.is_true(isinstance(merged_w, torch.Tensor) and merged_w.shape == (9, 12),
                  f"the merged weight must be a tensor of W's shape (9, 12), got "
                  f"{tuple(getattr(merged_w, 'shape', ())) or type(merged_w).__name__}.")
        t.allclose(F.linear(x, merged_w.detach(), layer.base.bias.detach()), unmerged,
                   atol=1e-4, what="output of the merged layer",
                   hint="x @ merged.T + b must equal x @ W.T + b + (alpha / r) x @ A.T @ B.T, "
                        "so merged = W + (alpha / r) * B @ A.")


# ----------------------------------------------------------------------------- probe drop
@torch.no_grad()
def probe_accuracy(probe: nn.Module, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Accuracy of a fixed linear probe, in points (0-100)."""
    return 100.0 * float((probe(features).argmax(-1) == labels).double().mean())


def probe_drop(probe: nn.Module, before: torch.Tensor, after: torch.Tensor,
               labels: torch.Tensor) -> float:
    """The reference: the same probe's accuracy on ``before`` minus on ``after``, in points."""
    return probe_accuracy(probe, before, labels) - probe_accuracy(probe, after, labels)


def _probe_setup(t: Checker, n: int, dim: int, classes: int, seed: int) -> tuple:
    """A probe already trained on ``before``: the nearest-class-mean rule as an nn.Linear."""
    means = t.randn(classes, dim, seed=seed, scale=1.5)
    labels = t.randint(0, classes, n, seed=seed + 1)
    before = means[labels] + t.randn(n, dim, seed=seed + 2)
    with own_rng():
        probe = nn.Linear(dim, classes)
    with torch.no_grad():
        probe.weight.copy_(means)
        probe.bias.copy_(-0.5 * means.pow(2).sum(1))
    return probe, before, labels


def _drop_of(fn, probe, before, after, labels, t: Checker) -> float:
    return scalar(fn(probe, before.clone(), after.clone(), labels.clone()), t, "drop")


def _in_points_or_fraction(got: float, want: float) -> bool:
    return abs(got - want) <= 1e-3 or abs(100 * got - want) <= 1e-3


def _close(t: Checker, got: float, want: float, extra: str = "") -> None:
    if abs(got - want) <= 1e-3:
        return
    if abs(100 * got - want) <= 1e-3:
        t.fail(f"expected a drop of {want:.4g} points, got {got:.4g}: report points, i.e. "
               "multiply the accuracies by 100.")
    t.fail(f"expected a drop of {want:.4g} points, got {got:.4g}. {extra}".strip())


@task("07.probe_drop", points=2, title="the accuracy drop of a fixed linear probe",
      hint="with torch.no_grad(): the accuracy of probe(features).argmax(-1) == labels on the "
           "features before, minus the same on the features after, times 100.")
def check_probe_drop(fn, t: Checker) -> None:
    t.callable(fn, "your probe_drop function")
    for seed, (n, dim, classes, noise) in enumerate([(64, 8, 2, 2.0), (100, 16, 3, 1.5),
                                                     (37, 12, 5, 3.0), (200, 32, 4, 4.0)]):
        with t.case(f"{n} examples, {dim} features, {classes} classes"):
            probe, before, labels = _probe_setup(t, n, dim, classes, 10 * seed)
            after = before + t.randn(n, dim, seed=10 * seed + 3, scale=noise)
            _close(t, _drop_of(fn, probe, before, after, labels, t),
                   probe_drop(probe, before, after, labels),
                   "Accuracy in points: 100 * mean(argmax(probe(x)) == labels).")
    with t.case("identical features: no drop"):
        probe, before, labels = _probe_setup(t, 50, 8, 3, 40)
        _close(t, _drop_of(fn, probe, before, before, labels, t), 0.0)
    with t.case("one fixed probe reads both feature sets (it is not retrained)", core=True):
        probe, before, labels = _probe_setup(t, 120, 16, 4, 50)
        q, _ = torch.linalg.qr(t.randn(16, 16, seed=55))
        after = before @ q  # a rotation: the information is all there, not where the probe reads
        state = {k: v.clone() for k, v in probe.state_dict().items()}
        got = _drop_of(fn, probe, before, after, labels, t)
        changed = sorted(k for k, v in probe.state_dict().items() if not torch.equal(v, state[k]))
        t.is_true(not changed, f"your function changed the probe's {changed}: the probe is fixed "
                  "(trained once, on the pretrained features); only evaluate it.")
        want = probe_drop(probe, before, after, labels)
        if not _in_points_or_fraction(abs(got), want):  # units or sign: not this case's point
            if abs(got) < 5 and want > 20:
                t.fail(f"rotated features keep all their information, so a probe fit again on "
                       f"them loses nothing (your drop: {got:.3g}); the fixed probe loses "
                       f"{want:.3g} points. Evaluate the same, already trained probe on both "
                       "feature sets.")
            _close(t, got, want)
    with t.case("the sign: positive means forgetting", core=True):
        probe, before, labels = _probe_setup(t, 150, 12, 3, 60)
        worse = before + t.randn(150, 12, seed=63, scale=3.0)
        for b, a, how in ((before, worse, "worse"), (worse, before, "better")):
            want = probe_drop(probe, b, a, labels)  # +16 points, then -16
            got = _drop_of(fn, probe, b, a, labels, t)
            t.is_true(got * want > 0, f"your drop has the wrong sign: when the probe reads the "
                      f"features after {how} than before, the drop is {want:+.3g} points, you "
                      f"returned {got:+.3g}. Compute accuracy before minus accuracy after, so that "
                      "a positive drop means forgetting.")
