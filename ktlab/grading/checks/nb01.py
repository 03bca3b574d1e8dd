"""Checks for ``solutions/01_transformer_internals.ipynb``: scaled dot-product attention with a
padding mask, multi-head split/merge, sinusoidal position encodings.

References are ktlab's own :mod:`ktlab.nn.attention`, run on seeded random inputs of several
shapes, so a hard-coded answer cannot pass. Core cases (a failure caps the task at 1/3): the
padding mask applied to the scores before the softmax; the head layout of split/merge; sines in
even and cosines in odd columns at geometrically spaced frequencies.
"""
from __future__ import annotations

import math

import torch

from ktlab.grading.registry import Checker, task
from ktlab.nn import attention as ref


def _pair(result, what: str, t: Checker):
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        t.fail(f"{what} must return a pair (output, probabilities), got {type(result).__name__}.")
    return result


@task("01.attention", points=3, title="scaled dot-product attention with a padding mask",
      hint="scores = q @ k.transpose(-2, -1) / sqrt(d); put a very negative number where "
           "attention_mask[:, None, None, :] == 0; softmax over the last axis; return "
           "(probs @ v, probs).")
def check_attention(fn, t: Checker) -> None:
    t.callable(fn, "your attention function")
    shapes = [(2, 1, 5, 4), (3, 4, 7, 8), (1, 2, 3, 16)]
    for seed, (b, h, n, d) in enumerate(shapes):
        with t.case(f"batch {b}, heads {h}, length {n}, head size {d}, no mask"):
            q, k, v = (t.randn(b, h, n, d, seed=10 * seed + i) for i in range(3))
            out, probs = _pair(fn(q.clone(), k.clone(), v.clone(), None), "attention", t)
            exp_out, exp_probs = ref.scaled_dot_product_attention(q, k, v)
            t.allclose(probs, exp_probs, atol=1e-5, what="probabilities",
                       hint="did you divide the scores by sqrt(head size)?")
            t.allclose(out, exp_out, atol=1e-5, what="output")
    for seed, (b, h, n, d) in enumerate([(3, 2, 6, 4), (4, 3, 9, 8)]):
        with t.case(f"batch {b}, length {n}, random padding (mask before the softmax)",
                    core=True):
            q, k, v = (t.randn(b, h, n, d, seed=50 + 10 * seed + i) for i in range(3))
            mask = t.padding_mask(b, n, seed=70 + seed, full_first=True)
            out, probs = _pair(fn(q.clone(), k.clone(), v.clone(), mask.clone()), "attention", t)
            exp_out, exp_probs = ref.scaled_dot_product_attention(q, k, v, ref.padding_mask(mask))
            pad = (mask == 0)[:, None, None, :].expand_as(exp_probs)
            got = torch.as_tensor(probs)
            if got.shape == exp_probs.shape:
                t.is_true(float(got[pad].abs().max()) < 1e-6,
                          "padded keys still receive attention; mask the scores *before* the "
                          "softmax (where attention_mask == 0).")
                sums = got.detach().double().sum(-1)
                t.is_true(bool(torch.allclose(sums, torch.ones_like(sums), atol=1e-4)),
                          "the attention rows no longer sum to 1 (e.g. "
                          f"{float(sums.min()):.3g}): you masked the probabilities *after* the "
                          "softmax. Mask the scores *before* it, so the real tokens share all "
                          "the attention.")
            t.allclose(probs, exp_probs, atol=1e-5, what="probabilities")
            t.allclose(out, exp_out, atol=1e-5, what="output")
    with t.case("query length differs from key length (cross-attention shapes)"):
        q, k, v = t.randn(2, 2, 3, 4, seed=90), t.randn(2, 2, 5, 4, seed=91), t.randn(2, 2, 5, 4,
                                                                                     seed=92)
        out, probs = _pair(fn(q, k, v, None), "attention", t)
        t.allclose(out, ref.scaled_dot_product_attention(q, k, v)[0], atol=1e-5, what="output",
                   hint="transpose only the last two axes of k.")


@task("01.split_merge", points=2, title="multi-head split and merge",
      hint="split: x.view(batch, T, heads, hidden // heads).transpose(1, 2); merge: transpose(1, 2) "
           "then reshape(batch, T, heads * d_head).")
def check_split_merge(fns, t: Checker) -> None:
    if not isinstance(fns, (tuple, list)) or len(fns) != 2:
        t.fail("pass the pair (split_heads, merge_heads): check(\"01.split_merge\", "
               "(split_heads, merge_heads)).")
    split, merge = fns
    t.callable(split, "your split_heads function")
    t.callable(merge, "your merge_heads function")
    with t.case("head h holds columns h*d_head..(h+1)*d_head-1; merge undoes split", core=True):
        x = torch.arange(2 * 3 * 8, dtype=torch.float32).view(2, 3, 8)  # every value unique
        t.allclose(split(x.clone(), 4), ref.split_heads(x, 4), atol=0, rtol=0,
                   what="split output",
                   hint="view(batch, T, heads, d_head) then transpose(1, 2): a head is a slice "
                        "of columns of every token, not a slice of tokens.")
        t.allclose(merge(ref.split_heads(x, 4)), x, atol=0, rtol=0, what="merged output",
                   hint="transpose(1, 2) back to (batch, T, heads, d_head) before reshaping.")
    for seed, (b, n, hidden, heads) in enumerate([(2, 5, 12, 3), (1, 7, 16, 4), (3, 2, 8, 8)]):
        with t.case(f"split ({b}, {n}, {hidden}) into {heads} heads"):
            x = t.randn(b, n, hidden, seed=seed)
            t.allclose(split(x.clone(), heads), ref.split_heads(x, heads), atol=0, rtol=0,
                       what="split output",
                       hint="head i must hold columns i*d_head..(i+1)*d_head-1 of every token.")
        with t.case(f"merge back to ({b}, {n}, {hidden})"):
            y = ref.split_heads(t.randn(b, n, hidden, seed=20 + seed), heads)
            t.allclose(merge(y.clone()), ref.merge_heads(y), atol=0, rtol=0, what="merged output")


@task("01.sinusoidal", points=2, title="sinusoidal position encodings",
      hint="pos = arange(max_len)[:, None]; freq = 10000 ** (-arange(0, dim, 2) / dim); "
           "even columns sin(pos * freq), odd columns cos(pos * freq).")
def check_sinusoidal(fn, t: Checker) -> None:
    t.callable(fn, "your sinusoidal_positions function")
    for max_len, dim in [(10, 4), (50, 16), (128, 64)]:
        with t.case(f"max_len {max_len}, dim {dim}"):
            t.allclose(fn(max_len, dim), ref.sinusoidal_positions(max_len, dim), atol=1e-4,
                       what="encodings",
                       hint="even columns are sines, odd columns cosines of the same frequency.")
    with t.case("position 0 is (0, 1, 0, 1, ...)", core=True):
        pe = torch.as_tensor(fn(3, 8))
        t.is_true(torch.allclose(pe[0, 0::2], torch.zeros(4), atol=1e-6)
                  and torch.allclose(pe[0, 1::2], torch.ones(4), atol=1e-6),
                  "row 0 must be sin(0)=0 in even columns and cos(0)=1 in odd ones.")
    with t.case("slowest frequency has wavelength 2*pi*10000^((dim-2)/dim)", core=True):
        pe = torch.as_tensor(fn(2, 6))
        t.is_true(abs(float(pe[1, 4]) - math.sin(10000 ** (-4 / 6))) < 1e-5,
                  "column 4 of dim 6 must be sin(pos / 10000^(4/6)).")
