"""ktlab.robustness: perturbed dev sets and FGM adversarial training."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from ktlab import robustness
from ktlab.augment import WordLookup

SENTENCES = ["a gripping , beautifully acted film about grief .",
             "the plot is thin and the jokes fall flat .",
             "ok"]


def test_typo_edits_one_character_and_keeps_the_first_letter():
    rng = random.Random(0)
    for _ in range(200):
        new = robustness.typo("wonderful", rng)
        assert new[0] == "w" and abs(len(new) - len("wonderful")) <= 1
    assert sum(robustness.typo("wonderful", rng) != "wonderful" for _ in range(50)) >= 45
    assert robustness.typo("film", rng) != "film" or robustness.typo("film", rng) != "film"
    assert robustness.typo("bad", rng) == "bad" and robustness.typo("co-op", rng) == "co-op"
    # replacements and insertions come from the QWERTY row neighbours
    assert set(robustness.QWERTY_NEIGHBOURS["a"]) == {"s"}
    assert set(robustness.QWERTY_NEIGHBOURS["g"]) == {"f", "h"}


def test_perturb_dev_is_deterministic_changes_sentences_and_keeps_order():
    for kind in ("typo", "drop"):
        a = robustness.perturb_dev(SENTENCES, kind, p=0.15, seed=3)
        assert a == robustness.perturb_dev(SENTENCES, kind, p=0.15, seed=3)
        assert a != robustness.perturb_dev(SENTENCES, kind, p=0.15, seed=4)
        assert len(a) == len(SENTENCES)
        assert a[0] != SENTENCES[0] and a[1] != SENTENCES[1]  # redrawn until changed
    # adding sentences leaves the earlier ones' edits unchanged
    assert robustness.perturb_dev(SENTENCES[:2], "typo", seed=3) == \
        robustness.perturb_dev(SENTENCES, "typo", seed=3)[:2]
    dropped = robustness.perturb_dev(SENTENCES, "drop", p=1.0, seed=0)
    assert all(len(s.split()) == 1 for s in dropped)  # one word always survives
    assert robustness.changed_fraction(SENTENCES, SENTENCES) == 0.0


def test_swap_uses_the_pos_lookup_and_needs_one():
    import collections
    lookup = WordLookup({"JJ": collections.Counter({"thin": 3, "flat": 2, "gripping": 1,
                                                    "dull": 5}),
                         "NN": collections.Counter({"plot": 2, "film": 2, "story": 4})})
    swapped = robustness.perturb_dev(SENTENCES, "swap", p=0.5, seed=0, lookup=lookup)
    for old, new in zip(SENTENCES, swapped):
        assert len(old.split()) == len(new.split())
        for a, b in zip(old.split(), new.split()):
            assert a == b or lookup.group_of[a] == lookup.group_of[b]
    assert swapped[1] != SENTENCES[1]
    with pytest.raises(ValueError, match="build_pos_lookup"):
        robustness.perturb_dev(SENTENCES, "swap")
    with pytest.raises(ValueError, match="unknown perturbation"):
        robustness.perturb_dev(SENTENCES, "shuffle")


def test_fgm_perturbation_has_norm_epsilon_per_example_along_the_gradient():
    g = torch.randn(3, 5, 4)
    g[2] = 0.0
    r = robustness.fgm_perturbation(torch.zeros_like(g), g, 2.0)
    norms = r.flatten(1).norm(dim=1)
    assert torch.allclose(norms[:2], torch.tensor([2.0, 2.0]), atol=1e-5)
    assert norms[2] == 0
    cos = F.cosine_similarity(r[0].flatten(), g[0].flatten(), dim=0)
    assert cos > 0.9999


class _Bag(torch.nn.Module):
    """Embedding -> mean -> linear: small enough to compute FGM by hand."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(20, 6)
        self.out = torch.nn.Linear(6, 2)

    def forward(self, input_ids, attention_mask=None, **_):
        return self.out(self.embedding(input_ids).mean(1))


def _ce(model, batch):
    return F.cross_entropy(model(batch["input_ids"]), batch["labels"])


def test_fgm_loss_equals_clean_plus_loss_at_the_adversarial_embeddings():
    model = _Bag()
    batch = {"input_ids": torch.tensor([[1, 2, 3], [4, 5, 6]]), "labels": torch.tensor([0, 1])}
    eps = 0.5
    got = robustness.fgm_loss(_ce, eps)(model, batch)

    e = model.embedding(batch["input_ids"]).detach().requires_grad_(True)
    clean = F.cross_entropy(model.out(e.mean(1)), batch["labels"])
    (g,) = torch.autograd.grad(clean, e)
    r = robustness.fgm_perturbation(e, g, eps)
    adv = F.cross_entropy(model.out((e + r).mean(1)), batch["labels"])
    assert torch.allclose(got, clean + adv, atol=1e-6)
    assert adv > clean                            # the step increases the loss
    got.backward()                                # gradients reach the weights
    assert model.embedding.weight.grad is not None and model.out.weight.grad.abs().sum() > 0
    assert not model.embedding._forward_hooks     # the hook is removed


def test_fgm_loss_works_with_frozen_embeddings_and_under_no_grad():
    model = _Bag()
    model.embedding.weight.requires_grad_(False)
    batch = {"input_ids": torch.tensor([[1, 2, 3]]), "labels": torch.tensor([1])}
    loss = robustness.fgm_loss(_ce, 1.0)(model, batch)
    assert loss > _ce(model, batch)
    with torch.no_grad():
        assert torch.allclose(robustness.fgm_loss(_ce, 1.0)(model, batch), _ce(model, batch))
    with pytest.raises(ValueError, match="epsilon"):
        robustness.fgm_loss(_ce, 0.0)


def test_fgm_loss_finds_the_teacher_and_student_embeddings():
    from ktlab.nn.students import BiLSTMClassifier
    from tests.tiny_models import tiny_bert
    student = BiLSTMClassifier(100, embed_dim=8, hidden_size=4, mlp_size=4)
    assert robustness.word_embedding_module(student) is student.embedding
    teacher = tiny_bert()
    assert robustness.word_embedding_module(teacher) is teacher.get_input_embeddings()
    batch = {"input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]]),
             "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]]),
             "labels": torch.tensor([0, 1])}
    student.eval()

    def loss(model, b):
        return F.cross_entropy(model(b["input_ids"], b["attention_mask"]), b["labels"])
    assert robustness.fgm_loss(loss, 1.0)(student, batch) > loss(student, batch)
    with pytest.raises(TypeError, match="layer"):
        robustness.word_embedding_module(torch.nn.Linear(2, 2))
