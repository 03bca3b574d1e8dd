"""ktlab.transfer.distill: KD losses, masking, feature losses, teacher caching, the Distiller."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ktlab.data.collate import PadCollator
from ktlab.train import TrainConfig, Trainer
from ktlab.transfer.distill import (Distiller, Match, PadTeacherCollator, TeacherCache,
                                    attention_kl, cache_teacher_logits, cosine_embedding,
                                    hard_soft_loss, hidden_mse, kd_loss, logit_mse, soften)
from tiny_models import batch_of, tiny_bert, toy_sequence_data, toy_token_data

torch.set_num_threads(2)


def _pair(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)


def test_kd_loss_matches_definition_and_is_zero_at_match():
    s, t = _pair(5, 3)
    T = 3.0
    p_t = F.softmax(t / T, -1)
    manual = (p_t * (p_t.log() - F.log_softmax(s / T, -1))).sum(-1).mean() * T ** 2
    assert kd_loss(s, t, T) == pytest.approx(float(manual), rel=1e-5)
    assert kd_loss(t, t, T) == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(s, t, 1.0) > 0


def test_t_squared_keeps_gradient_scale():
    s, t = _pair(64, 5, seed=1)
    s, t = s * 0.1, t * 0.1  # small logits: the high-temperature regime of Hinton et al.
    norms = []
    for T in (2.0, 8.0):
        x = s.clone().requires_grad_(True)
        kd_loss(x, t, T).backward()
        norms.append(float(x.grad.norm()))
    assert norms[1] / norms[0] == pytest.approx(1.0, abs=0.15)
    x = s.clone().requires_grad_(True)
    (kd_loss(x, t, 8.0) / 64).backward()  # without T^2 the gradient shrinks ~1/T^2
    assert float(x.grad.norm()) < norms[1] / 30


def test_token_level_masking_ignores_minus_100():
    s, t = _pair(2, 4, 3, seed=2)
    labels = torch.tensor([[0, 1, -100, -100], [2, -100, 1, -100]])
    keep = labels != -100
    assert kd_loss(s, t, 2.0, labels=labels) == pytest.approx(float(kd_loss(s[keep], t[keep], 2.0)))
    s2 = s.clone()
    s2[~keep] = 100.0  # garbage at ignored positions changes nothing
    assert kd_loss(s2, t, labels=labels) == pytest.approx(float(kd_loss(s, t, labels=labels)))
    assert logit_mse(s2, t, labels=labels) == pytest.approx(float(F.mse_loss(s[keep], t[keep])))
    mix = hard_soft_loss(s2, t, labels, alpha=0.3, temperature=2.0)
    want = 0.3 * kd_loss(s[keep], t[keep], 2.0) + 0.7 * F.cross_entropy(s[keep], labels[keep])
    assert mix == pytest.approx(float(want), rel=1e-5)
    all_ignored = torch.full((2, 4), -100)
    assert float(kd_loss(s, t, labels=all_ignored)) == 0.0


def test_hard_soft_endpoints_and_mse_variant():
    s, t = _pair(6, 2, seed=3)
    y = torch.tensor([0, 1, 1, 0, 1, 0])
    assert hard_soft_loss(s, t, y, alpha=0.0) == pytest.approx(float(F.cross_entropy(s, y)))
    assert hard_soft_loss(s, t, y, alpha=1.0, temperature=4) == pytest.approx(
        float(kd_loss(s, t, 4)))
    assert hard_soft_loss(s, t, y, alpha=1.0, soft="mse") == pytest.approx(float(logit_mse(s, t)))


def test_bad_inputs_are_explained():
    s, t = _pair(4, 3)
    with pytest.raises(ValueError, match="differ in shape"):
        kd_loss(s, t[:, :2])
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, 0.0)
    with pytest.raises(ValueError, match="alpha"):
        hard_soft_loss(s, t, torch.zeros(4, dtype=torch.long), alpha=1.5)
    with pytest.raises(ValueError, match="labels"):
        logit_mse(s, t, labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="projection"):
        hidden_mse(torch.randn(2, 3, 8), torch.randn(2, 3, 16))
    with pytest.raises(ValueError, match="batch, heads"):
        attention_kl(torch.rand(2, 3, 3), torch.rand(2, 3, 3))
    with pytest.raises(ValueError, match="unknown feature"):
        Match(feature="embeddings")
    with pytest.raises(ValueError, match="does not apply"):
        Match(feature="attention", loss="mse", teacher_layer=1, student_layer=1)
    with pytest.raises(ValueError, match="needs teacher_layer"):
        Match(feature="hidden", loss="mse")
    teacher, student = tiny_bert(seed=0), tiny_bert(seed=1)
    with pytest.raises(ValueError, match="matches is empty"):
        Distiller(student, teacher, [])
    with pytest.raises(IndexError, match="does not exist"):
        Distiller(student, teacher, [{"feature": "hidden", "loss": "mse", "teacher_layer": 7,
                                      "student_layer": 1}])
    with pytest.raises(ValueError, match="eager"):
        Distiller(tiny_bert(attn_implementation="sdpa"), teacher,
                  [Match("attention", "kl", teacher_layer=1, student_layer=1)])


def test_feature_losses():
    h_s, h_t = _pair(2, 5, 8, seed=4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert hidden_mse(h_s, h_t, mask=mask) == pytest.approx(
        float(F.mse_loss(h_s[mask.bool()], h_t[mask.bool()])))
    proj = torch.nn.Linear(8, 16)
    assert hidden_mse(h_s, torch.randn(2, 5, 16), proj).requires_grad
    assert cosine_embedding(h_t * 3.0, h_t) == pytest.approx(0.0, abs=1e-6)  # scale-free
    assert cosine_embedding(-h_t, h_t) == pytest.approx(2.0, abs=1e-6)
    a_t = torch.rand(2, 4, 5, 5).softmax(-1)
    assert attention_kl(a_t, a_t) == pytest.approx(0.0, abs=1e-6)
    a_s = torch.rand(2, 2, 5, 5).softmax(-1)  # different head count -> head means compared
    assert attention_kl(a_s, a_t, mask) > 0
    assert soften(torch.tensor([2.0, 0.0]), 100.0)[0] == pytest.approx(0.505, abs=1e-3)


def test_teacher_cache_runs_teacher_once_per_example():
    teacher = tiny_bert(seed=0).eval()
    data = toy_sequence_data(12)
    cache = TeacherCache(teacher, hidden_states=True)
    for _ in range(3):  # three "epochs", different batchings
        for chunk in (data[:5], data[5:], data[::2]):
            out = cache(batch_of(chunk))
    assert cache.teacher_calls == 12
    direct = teacher(**{k: v for k, v in batch_of(data[::2]).items() if k != "labels"},
                     output_hidden_states=True)
    assert torch.allclose(out["logits"], direct.logits, atol=1e-5)
    m = batch_of(data[::2])["attention_mask"].bool()
    assert torch.allclose(out["hidden_states"][-1][m], direct.hidden_states[-1][m], atol=1e-5)


def test_cached_token_logits_collate_with_padding():
    teacher = tiny_bert("token", num_labels=3).eval()
    data = cache_teacher_logits(teacher, toy_token_data(6), PadCollator(), batch_size=4)
    assert data[0]["teacher_logits"].shape == (len(data[0]["input_ids"]), 3)
    batch = PadTeacherCollator(PadCollator())(data)
    assert batch["teacher_logits"].shape == batch["input_ids"].shape + (3,)
    direct = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    m = batch["attention_mask"].bool()
    assert torch.allclose(batch["teacher_logits"][m], direct[m], atol=1e-5)


@pytest.mark.parametrize("task", ["sequence", "token"])
def test_distiller_trains_student_toward_teacher(task):
    kw = {"num_labels": 3} if task == "token" else {}
    teacher = tiny_bert(task, seed=0, hidden=48, heads=4, layers=2,
                        attn_implementation="eager", **kw).eval()
    student = tiny_bert(task, seed=1, hidden=32, heads=2, layers=1,
                        attn_implementation="eager", **kw)
    matches = [{"feature": "logits", "loss": "kl", "weight": 1.0, "temperature": 2.0},
               {"feature": "hidden", "loss": "mse", "weight": 0.5, "teacher_layer": 2,
                "student_layer": 1},
               {"feature": "hidden", "loss": "cosine", "weight": 0.5, "teacher_layer": 0,
                "student_layer": 0},
               {"feature": "attention", "loss": "kl", "weight": 0.1, "teacher_layer": -1,
                "student_layer": 1}]
    distiller = Distiller(student, teacher, matches, hard_weight=0.5)
    assert set(distiller.projections) == {"1", "2"}  # 32 -> 48 for both hidden matches
    assert not any(p is q for p in distiller.parameters() for q in teacher.parameters())
    data = toy_token_data(24) if task == "token" else toy_sequence_data(24)
    batch = batch_of(data)
    distiller.train()
    with torch.no_grad():
        before = float(distiller(**batch).loss)
    Trainer(distiller, TrainConfig(lr=3e-3, epochs=4, batch_size=8, progress=False,
                                   warmup_ratio=0.0), data).fit()
    distiller.train()
    with torch.no_grad():
        out = distiller(**batch)
    assert float(out.loss) < before
    assert set(out.terms) == {"0:logits/kl", "1:hidden/mse", "2:hidden/cosine",
                              "3:attention/kl", "hard/ce"}
    assert distiller.cache.teacher_calls == 24  # once per example over 4 epochs + checks
    distiller.eval()
    assert distiller(**batch).logits.shape[-1] == (3 if task == "token" else 2)


def test_distiller_reads_cached_logits_from_batch():
    teacher = tiny_bert(seed=0).eval()
    student = tiny_bert(seed=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    distiller = Distiller(student, teacher, [Match("logits", "mse")]).train()
    batch = batch_of(toy_sequence_data(4, with_teacher=True))
    with torch.no_grad():
        out = distiller(**batch)
    assert distiller.cache.teacher_calls == 0
    assert float(out.loss) == pytest.approx(float(logit_mse(student(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
        batch["teacher_logits"])), rel=1e-4)
