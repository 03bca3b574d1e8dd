"""Students (ktlab.nn.students) and augmentation (ktlab.augment): shapes, padding, init, errors."""
from __future__ import annotations

import random

import pytest
import torch

from ktlab import augment
from ktlab.nn import students as st

VOCAB = 50


def _batch(lengths, vocab=VOCAB, seed=0):
    gen = torch.Generator().manual_seed(seed)
    length = max(lengths)
    ids = torch.zeros(len(lengths), length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(1, vocab, (n,), generator=gen)
        mask[i, :n] = 1
    return ids, mask


@pytest.mark.parametrize("pooling", st.POOLINGS)
def test_bilstm_shapes_and_padding_invariance(pooling):
    torch.manual_seed(0)
    model = st.BiLSTMClassifier(VOCAB, num_labels=3, embed_dim=8, hidden_size=6, mlp_size=5,
                                pooling=pooling).eval()
    ids, mask = _batch([5, 2, 7])
    logits = model(ids, mask)
    assert logits.shape == (3, 3)
    # the same sentence padded further gives the same logits (padding never leaks in)
    longer = torch.nn.functional.pad(ids, (0, 4))
    longer_mask = torch.nn.functional.pad(mask, (0, 4))
    torch.testing.assert_close(model(longer, longer_mask), logits)
    # and alone, unpadded
    torch.testing.assert_close(model(ids[1:2, :2], mask[1:2, :2]), logits[1:2])


def test_cnn_handles_sentences_shorter_than_filters():
    torch.manual_seed(0)
    model = st.KimCNN(VOCAB, embed_dim=8, num_filters=4, kernel_sizes=(3, 4, 5)).eval()
    ids, mask = _batch([1, 2])
    assert model(ids, mask).shape == (2, 2)
    torch.testing.assert_close(model(ids[:1, :1], mask[:1, :1]), model(ids, mask)[:1])


def test_students_learn_a_toy_task():
    """A token that decides the label: a few Adam steps must fit it (the forward is trainable)."""
    torch.manual_seed(0)
    ids, mask = _batch([6] * 32, seed=1)
    labels = (ids[:, 0] % 2)
    for name in ("bilstm", "cnn"):
        model = st.build_student(name, VOCAB, embed_dim=16, dropout=0.0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        first = None
        for _ in range(40):
            loss = torch.nn.functional.cross_entropy(model(ids, mask), labels)
            first = first if first is not None else loss.item()
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * first, name


def test_tiny_transformer_is_a_small_bert():
    model = st.build_student("tiny", VOCAB, hidden_size=32, num_layers=2, num_heads=4)
    ids, mask = _batch([4, 3])
    out = model(input_ids=ids, attention_mask=mask)
    assert st.logits_of(out).shape == (2, 2)
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 32
    with pytest.raises(ValueError, match="divisible"):
        st.tiny_transformer(VOCAB, hidden_size=30, num_heads=4)


def test_mean_pool_transformer_ignores_padding():
    torch.manual_seed(0)
    model = st.tiny_transformer(VOCAB, hidden_size=32, num_layers=1, num_heads=4,
                                pooling="mean").eval()
    ids, mask = _batch([4, 2])
    out = model(input_ids=ids, attention_mask=mask, labels=torch.tensor([0, 1]))
    assert out.logits.shape == (2, 2) and out.loss is not None
    alone = model(input_ids=ids[1:, :2], attention_mask=mask[1:, :2]).logits
    torch.testing.assert_close(alone, out.logits[1:], atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="pooling"):
        st.tiny_transformer(VOCAB, hidden_size=32, num_heads=4, pooling="max")


def test_embedding_init_from_teacher_table():
    torch.manual_seed(0)
    table = torch.randn(VOCAB, 12) @ torch.randn(12, 12)
    pca = st.build_student("bilstm", VOCAB, embed_dim=6, hidden_size=4, teacher_table=table,
                           embedding_init="pca")
    weight = pca.embedding.weight.detach()
    assert weight.shape == (VOCAB, 6) and torch.all(weight[0] == 0)  # padding row zeroed
    # PCA keeps the teacher's geometry: the projected columns are uncorrelated
    cov = torch.cov(weight[1:].T)
    off_diag = cov - torch.diag(torch.diag(cov))
    assert off_diag.abs().max() < 0.05 * torch.diag(cov).max()
    lin = st.build_student("cnn", VOCAB, embed_dim=6, num_filters=3, teacher_table=table,
                           embedding_init="linear")
    assert isinstance(lin.embedding, st.ProjectedEmbedding)
    assert not lin.embedding.table.weight.requires_grad and lin.embedding.proj.weight.requires_grad
    assert lin(*_batch([3])).shape == (1, 2)


def test_student_errors_are_clear():
    with pytest.raises(ValueError, match="unknown student 'gru'"):
        st.build_student("gru", VOCAB)
    with pytest.raises(ValueError, match="needs teacher_table"):
        st.build_student("bilstm", VOCAB, embedding_init="pca")
    with pytest.raises(ValueError, match="vocabulary"):
        st.build_student("bilstm", VOCAB, teacher_table=torch.randn(VOCAB + 1, 8),
                         embedding_init="pca", embed_dim=4)
    with pytest.raises(ValueError, match="cannot widen"):
        st.build_student("bilstm", VOCAB, teacher_table=torch.randn(VOCAB, 8),
                         embedding_init="pca", embed_dim=16)
    with pytest.raises(ValueError, match="pooling"):
        st.BiLSTMClassifier(VOCAB, pooling="sum")


# ----------------------------------------------------------------------------- augmentation

CONLL_ROWS = [
    {"tokens": ["The", "good", "film", "ran", "."], "pos_tags": ["DT", "JJ", "NN", "VBD", "."]},
    {"tokens": ["A", "bad", "movie", "ended", "."], "pos_tags": ["DT", "JJ", "NN", "VBD", "."]},
    {"tokens": ["Reuters", "said", "great", "plot"], "pos_tags": ["NNP", "VBD", "JJ", "NN"]},
]


def test_pos_lookup_swaps_within_a_tag():
    lookup = augment.build_pos_lookup(CONLL_ROWS)
    assert "reuters" not in lookup.group_of            # proper nouns are skipped
    assert lookup.group_of["good"] == "JJ"
    rng = random.Random(0)
    swaps = {lookup.replacement("good", rng) for _ in range(30)}
    assert swaps <= {"bad", "great"} and swaps
    assert lookup.replacement("zebra", rng) is None    # unknown word: keep it


def test_operations_and_determinism():
    rng = random.Random(0)
    words = "a b c d e f g".split()
    assert augment.mask_words(words, 1.0, rng) == ["[MASK]"] * 7
    assert augment.mask_words(words, 0.0, rng) == words
    for _ in range(20):
        gram = augment.sample_ngram(words, rng, 2, 3)
        assert 2 <= len(gram) <= 3 and " ".join(gram) in " ".join(words)
    lookup = augment.build_pos_lookup(CONLL_ROWS)
    sentences = ["the good film ran .", "a bad movie ended ."]
    cfg = augment.AugmentConfig(p_mask=0.3, p_swap=0.3, p_ngram=0.3, n_samples=3)
    first = augment.augment_dataset(sentences, cfg, lookup, seed=3)
    assert first == augment.augment_dataset(sentences, cfg, lookup, seed=3)
    assert len(first) == len(set(first)) and not set(first) & set(sentences)
    assert 0 < len(first) <= 6


def test_class_lookup_and_config_errors():
    lookup = augment.build_class_lookup(["great fun", "great joy", "dull mess", "dull bore"],
                                        [1, 1, 0, 0], min_count=1)
    assert lookup.group_of["great"] == "1" and lookup.group_of["dull"] == "0"
    with pytest.raises(ValueError, match="p_mask"):
        augment.AugmentConfig(p_mask=1.5)
    with pytest.raises(ValueError, match="swap mode"):
        augment.AugmentConfig(swap="synonym")
    with pytest.raises(ValueError, match="needs a lookup"):
        augment.augment_sentence("a b", augment.AugmentConfig(), random.Random(0), None)
