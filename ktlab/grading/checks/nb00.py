"""Checks for ``solutions/00_warmup.ipynb``: softmax with temperature, masked mean-pooling.

Each case feeds seeded random inputs of a different shape to the student's function and to the
reference (:func:`ktlab.transfer.distill.soften` via :mod:`ktlab.grading.reference`), so a
hard-coded answer cannot pass. Core cases (a failure caps the task at 1/3): the temperature
divides the logits; padding never leaks into the pooled mean.
"""
from __future__ import annotations

import torch

from ktlab.grading import reference as ref
from ktlab.grading.registry import Checker, task


@task("00.softmax", points=2, title="softmax with temperature",
      hint="Divide the logits by the temperature, subtract the max of each row, exponentiate, "
           "and divide by the row sum (all over the last dimension).")
def check_softmax(fn, t: Checker) -> None:
    t.callable(fn, "your softmax function")
    cases = [((4, 5), 1.0, 0), ((3, 10), 0.5, 1), ((2, 3, 7), 4.0, 2), ((6,), 2.0, 3)]
    for shape, temp, seed in cases:
        with t.case(f"shape {shape}, temperature {temp}"):
            x = t.randn(*shape, seed=seed, scale=3.0)
            t.allclose(fn(x.clone(), temp), ref.softmax_with_temperature(x, temp), atol=1e-5)
    with t.case("large logits (stability)"):
        x = t.randn(3, 6, seed=4, scale=10.0) + 1000.0
        t.allclose(fn(x.clone(), 1.0), ref.softmax_with_temperature(x, 1.0), atol=1e-5,
                   hint="subtract each row's max before exp (the result does not change).")
    with t.case("temperature <= 0 is refused"):
        x = t.randn(2, 3, seed=5)
        t.raises(ValueError, lambda: fn(x, 0.0), "temperature=0")
    with t.case("the temperature divides the logits: T=0.25 sharpens, T=4 flattens", core=True):
        x = t.randn(3, 8, seed=6, scale=2.0)
        plain = ref.softmax_with_temperature(x, 1.0)
        for temp in (0.25, 4.0):
            got = fn(x.clone(), temp)
            if (isinstance(got, torch.Tensor) and got.shape == plain.shape
                    and torch.allclose(got.detach().double(), plain.double(), atol=1e-5)):
                t.fail(f"with temperature {temp} you returned softmax(logits) itself: the "
                       "temperature is ignored. Divide the logits by it before the softmax.")
            t.allclose(got, ref.softmax_with_temperature(x, temp), atol=1e-5,
                       what=f"output at temperature {temp}",
                       hint="softmax(logits / temperature): divide, do not multiply.")


@task("00.mean_pool", points=2, title="masked mean-pooling",
      hint="Multiply the hidden states by the mask (as float, with a trailing axis), sum over "
           "the sequence axis, and divide by the number of real tokens (at least 1).")
def check_mean_pool(fn, t: Checker) -> None:
    t.callable(fn, "your pooling function")
    for seed, (b, n, d) in enumerate([(2, 5, 4), (3, 9, 16), (1, 4, 8)]):
        with t.case(f"hidden {(b, n, d)}, random padding", core=True):
            h = t.randn(b, n, d, seed=10 + seed)
            mask = t.padding_mask(b, n, seed=20 + seed)
            # huge values at padded positions: any leak of padding into the mean shows at once
            h = torch.where(mask[..., None].bool(), h, torch.full_like(h, 1e4))
            t.allclose(fn(h.clone(), mask.clone()), ref.masked_mean_pool(h, mask), atol=1e-4)
    with t.case("boolean mask"):
        h = t.randn(2, 6, 3, seed=30)
        mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.bool)
        t.allclose(fn(h.clone(), mask.clone()), ref.masked_mean_pool(h, mask), atol=1e-5)
    with t.case("all-padding row gives zeros, not NaN"):
        h = t.randn(2, 4, 3, seed=31)
        mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
        t.allclose(fn(h.clone(), mask.clone()), ref.masked_mean_pool(h, mask), atol=1e-5,
                   hint="clamp the token count to at least 1.")
