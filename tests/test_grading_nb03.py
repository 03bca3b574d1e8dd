"""The notebook-03 exercise checks: ktlab's references pass, typical mistakes lose points."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from ktlab.grading import run_check
from ktlab.transfer.distill import kd_loss
from ktlab.transfer.freeze import freeze_bottom_k
from ktlab.transfer.peft import LoRALinear


def _interp(target, source, beta):
    if not 0 <= beta <= 1:
        raise ValueError("beta")
    out = {}
    for k, v in target.items():
        if source[k].shape != v.shape:
            raise ValueError(k)
        out[k] = beta * source[k] + (1 - beta) * v if torch.is_floating_point(v) else v
    return out


def _lora(base, r, alpha):
    return LoRALinear(base, r=r, alpha=alpha)


def _kd_no_t2(s, t, T):
    return F.kl_div(F.log_softmax(s / T, -1), F.softmax(t / T, -1), reduction="batchmean")


def _kd_mean(s, t, T):  # averages over entries instead of examples
    p = F.softmax(t / T, -1)
    return (p * (p.log() - F.log_softmax(s / T, -1))).mean() * T * T


def _interp_swapped(target, source, beta):
    return {k: (1 - beta) * source[k] + beta * v if torch.is_floating_point(v) else v
            for k, v in target.items()}


def _interp_skips(target, source, beta):
    return {k: beta * source[k] + (1 - beta) * v if source[k].shape == v.shape else v
            for k, v in target.items()}


def _freeze_prefix_bug(model, k):  # 'layer.1' also matches layer.10
    for name, p in model.named_parameters():
        p.requires_grad_(not ("embeddings." in name or
                              any(f"layer.{i}" in name for i in range(k))))


class _LoRANoScale(torch.nn.Module):
    def __init__(self, base, r, alpha):
        super().__init__()
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)
        self.lora_A = torch.nn.Parameter(torch.randn(r, base.in_features) * 0.01)
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, r))

    def forward(self, x):
        return self.base(x) + x @ self.lora_A.T @ self.lora_B.T


class _LoRABaseTrainable(LoRALinear):
    def __init__(self, base, r, alpha):
        super().__init__(base, r=r, alpha=alpha)
        base.weight.requires_grad_(True)


@pytest.mark.parametrize("task_id, obj", [("03.kd_loss", kd_loss), ("03.interpolate", _interp),
                                          ("03.freeze_bottom_k", freeze_bottom_k),
                                          ("03.lora", _lora)])
def test_references_pass(task_id, obj):
    result = run_check(task_id, obj)
    assert result.passed, result.report()


@pytest.mark.parametrize("task_id, student, reason", [
    ("03.kd_loss", _kd_no_t2, "wrong values"),
    ("03.kd_loss", _kd_mean, "batchmean"),
    ("03.interpolate", _interp_swapped, "wrong values"),
    ("03.interpolate", _interp_skips, "not skipped"),
    ("03.freeze_bottom_k", _freeze_prefix_bug, "should be frozen|should stay trainable"),
    ("03.lora", _LoRANoScale, "alpha / r"),
    ("03.lora", _LoRABaseTrainable, "only lora_A and lora_B"),
])
def test_typical_mistakes_fail_with_a_reason(task_id, student, reason):
    result = run_check(task_id, student)
    assert not result.passed
    assert re.search(reason, " ".join(result.reasons())), result.report()


def test_not_attempted():
    def todo(*args):
        raise NotImplementedError
    assert run_check("03.kd_loss", todo).points == 0
