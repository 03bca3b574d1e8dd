"""ktlab.explain on tiny seeded models with the real MiniLM tokenizer (fast: a few seconds)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import BertModel

from ktlab import explain
from ktlab.explain import TokenAttribution
from ktlab.nn.students import BiLSTMClassifier, MeanPoolClassifier
from tiny_models import tiny_config

SENTENCES = ["an unbelievably <b>moving</b> film .", "dull , lifeless and far too long",
             "it's fine", "the acting is superb but the plot drags"]


@pytest.fixture(scope="module")
def teacher(tokenizer):
    torch.set_num_threads(1)
    config = tiny_config()
    config.vocab_size = len(tokenizer)       # the students' and the teacher's WordPiece ids
    torch.manual_seed(0)
    return MeanPoolClassifier(BertModel(config), 2).eval()


@pytest.fixture(scope="module")
def student(tokenizer):
    torch.manual_seed(1)
    return BiLSTMClassifier(len(tokenizer), embed_dim=16, hidden_size=8, mlp_size=8).eval()


def attribution(tokens, scores, **kw) -> TokenAttribution:
    special = [t in ("[CLS]", "[SEP]") for t in tokens]
    fields = dict(ids=list(range(len(tokens))), target=1, predicted=1, prob=0.9, delta=0.0)
    fields.update(kw)
    return TokenAttribution(tokens=list(tokens), scores=list(scores), special=special, **fields)


# ----------------------------------------------------------------------------- gradients

def test_embedding_layer_is_the_word_table(teacher, student):
    assert explain.embedding_layer(teacher) is teacher.bert.embeddings.word_embeddings
    assert explain.embedding_layer(student) is student.embedding


def test_baseline_keeps_cls_sep_and_padding(tokenizer):
    ids = torch.tensor([[101, 2204, 3185, 102, 0]])
    assert explain.baseline_ids(ids, tokenizer).tolist() == [[101, 0, 0, 102, 0]]
    assert explain.baseline_ids(ids, tokenizer, "mask").tolist() == [[101, 103, 103, 102, 0]]
    with pytest.raises(ValueError, match="unknown baseline"):
        explain.baseline_ids(ids, tokenizer, "zeros")


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_integrated_gradients_are_complete(which, request, tokenizer):
    model = request.getfixturevalue(which)
    attrs = explain.integrated_gradients(model, tokenizer, SENTENCES, n_steps=128)
    for sentence, a in zip(SENTENCES, attrs):
        ids = torch.tensor([a.ids])
        mask = torch.ones_like(ids)
        with torch.no_grad():
            f_x = model(input_ids=ids, attention_mask=mask)
            f_b = model(input_ids=explain.baseline_ids(ids, tokenizer), attention_mask=mask)
            f_x, f_b = (getattr(f, "logits", f)[0, a.target].item() for f in (f_x, f_b))
        assert sum(a.scores) == pytest.approx(f_x - f_b, abs=1e-3 + 0.02 * abs(f_x - f_b))
        assert abs(a.delta) < 1e-3
        assert a.tokens == tokenizer.convert_ids_to_tokens(tokenizer(sentence)["input_ids"])
        assert a.tokens[0] == "[CLS]" and a.tokens[-1] == "[SEP]" and "[PAD]" not in a.tokens
        assert a.scores[0] == 0.0 and a.scores[-1] == 0.0           # kept in the baseline
        assert a.special == [t in ("[CLS]", "[SEP]") for t in a.tokens]
        assert a.target == a.predicted and 0.5 <= a.prob <= 1


def test_targets_and_the_prediction(teacher, tokenizer):
    own = explain.integrated_gradients(teacher, tokenizer, SENTENCES[:2], n_steps=8)
    other = [1 - a.predicted for a in own]
    flipped = explain.integrated_gradients(teacher, tokenizer, SENTENCES[:2], targets=other,
                                           n_steps=8)
    assert [a.target for a in flipped] == other
    assert [a.predicted for a in flipped] == [a.predicted for a in own]
    with pytest.raises(ValueError, match="targets"):
        explain.integrated_gradients(teacher, tokenizer, SENTENCES[:2], targets=[0])


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_riemann_matches_captum(which, request, tokenizer):
    model = request.getfixturevalue(which)
    captum = explain.integrated_gradients(model, tokenizer, SENTENCES, n_steps=16)
    mine = explain.riemann_integrated_gradients(model, tokenizer, SENTENCES, n_steps=16)
    for a, b in zip(captum, mine):
        assert a.ids == b.ids and a.target == b.target
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5, rtol=1e-4)
        assert a.delta == pytest.approx(b.delta, abs=1e-5)


def test_frozen_embeddings_and_training_mode_are_kept(student, tokenizer):
    student.embedding.weight.requires_grad_(False)
    student.train()
    try:
        a = explain.integrated_gradients(student, tokenizer, SENTENCES[:1], n_steps=8)[0]
        assert any(s != 0 for s in a.scores) and student.training
    finally:
        student.embedding.weight.requires_grad_(True)
        student.eval()


# ----------------------------------------------------------------------------- html

def test_attribution_html_escapes_and_colours():
    a = attribution(["[CLS]", "<b>", "good", "&", "[SEP]"], [0.0, 2.0, -1.0, 0.5, 0.0])
    out = explain.attribution_html(a)
    assert "<b>" not in out and "&lt;b&gt;" in out and "&amp;" in out
    assert "rgba(0, 150, 0, 1.00)" in out           # the largest positive: full green
    assert "rgba(210, 0, 0, 0.50)" in out           # half as large, negative: red
    assert "<script" not in out and "<link" not in out
    table = explain.side_by_side_html([("teacher <1>", a), ("bilstm/kd", a)])
    assert table.startswith("<table") and table.count("<tr>") == 3
    assert "teacher &lt;1&gt;" in table and "p = 0.90" in table


def test_attribution_html_all_zero_scores():
    out = explain.attribution_html(attribution(["[CLS]", "a", "[SEP]"], [0.0, 0.0, 0.0]))
    assert out.count("rgba(0, 150, 0, 0.00)") == 3


# ----------------------------------------------------------------------------- compare

def test_rank_correlation_known_values():
    tokens = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    a = attribution(tokens, [9.0, 1.0, 2.0, 3.0, 4.0, -9.0])
    assert explain.rank_correlation(a, attribution(tokens, [0, 10, 20, 30, 40, 0])) == \
        pytest.approx(1.0)                          # [CLS]/[SEP] are skipped
    assert explain.rank_correlation(a, attribution(tokens, [0, 4, 3, 2, 1, 0])) == \
        pytest.approx(-1.0)
    assert explain.rank_correlation(a, attribution(tokens, [0, 1, 3, 2, 4, 0])) == \
        pytest.approx(0.8)
    assert math.isnan(explain.rank_correlation(a, attribution(tokens, [0, 1, 1, 1, 1, 0])))
    with pytest.raises(ValueError, match="different tokens"):
        explain.rank_correlation(a, attribution(tokens, [0] * 6, ids=[5] * 6))
    constant = attribution(tokens, [0, 1, 1, 1, 1, 0])
    assert explain.mean_rank_correlation([a, a], [attribution(tokens, [0, 4, 3, 2, 1, 0]),
                                                  constant]) == pytest.approx(-1.0)


def test_top_k_overlap():
    tokens = ["[CLS]", "a", "b", "c", "d", "[SEP]"]
    a = attribution(tokens, [99, 4, 3, 2, 1, 99])
    assert explain.top_k_overlap(a, attribution(tokens, [0, 4, 3, 2, 1, 0]), 2) == 1.0
    assert explain.top_k_overlap(a, attribution(tokens, [0, 4, 1, 3, 2, 0]), 2) == 0.5
    assert explain.top_k_overlap(a, attribution(tokens, [0, 1, 2, 3, 4, 0]), 2) == 0.0
    assert explain.top_k_overlap(a, a, 10) == 1.0   # shorter than k: all its words


# ----------------------------------------------------------------------------- attention

def test_attention_scores(teacher, tokenizer, student):
    before = teacher.config._attn_implementation
    att = explain.attention_scores(teacher, tokenizer, SENTENCES)
    assert teacher.config._attn_implementation == before     # switched back
    lengths = [len(tokenizer(s)["input_ids"]) for s in SENTENCES]
    assert [len(a.scores) for a in att] == [len(a.tokens) for a in att] == lengths
    for a in att:                                   # each attention row sums to 1 over keys
        assert sum(a.scores) == pytest.approx(1.0, abs=1e-5) and min(a.scores) >= 0
    cls = explain.attention_scores(teacher, tokenizer, SENTENCES, layer=0, query="cls")
    assert all(sum(a.scores) == pytest.approx(1.0, abs=1e-5) for a in cls)
    assert cls[0].scores != att[0].scores
    with pytest.raises(TypeError, match="no attention"):
        explain.attention_scores(student, tokenizer, SENTENCES[:1])


def test_attention_vs_gradients(teacher, tokenizer):
    att = explain.attention_scores(teacher, tokenizer, SENTENCES)
    ig = explain.integrated_gradients(teacher, tokenizer, SENTENCES, n_steps=4)
    res = explain.attention_vs_gradients(att, ig)
    assert {"mean_spearman", "median_spearman", "top3_overlap", "sentences",
            "per_sentence_spearman"} <= set(res)
    assert -1 <= res["mean_spearman"] <= 1 and 0 <= res["top3_overlap"] <= 1
    assert res["sentences"] == len(res["per_sentence_spearman"]) == len(SENTENCES)
    same = explain.attention_vs_gradients(att, [attribution(a.tokens, a.scores, ids=a.ids)
                                                for a in att])
    assert same["mean_spearman"] == pytest.approx(1.0) and same["top3_overlap"] == 1.0


# ----------------------------------------------------------------------------- deletion

def test_deleting_tokens_keeps_specials_and_order():
    a = attribution(["[CLS]", "a", "b", "c", "[SEP]"], [50.0, 1.0, 3.0, 2.0, 40.0],
                    ids=[101, 11, 12, 13, 102])
    assert explain.top_positions(a, 2) == [2, 3]
    assert explain.delete_tokens(a.ids, explain.top_positions(a, 2)) == [101, 11, 102]
    assert explain.delete_tokens(a.ids, explain.top_positions(a, 9)) == [101, 102]
    rng = np.random.default_rng(0)
    for _ in range(10):
        assert set(explain.random_positions(a, 2, rng)) <= {1, 2, 3}


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_deletion_test(which, request, tokenizer):
    model = request.getfixturevalue(which)
    labels = [1, 0, 1, 1]
    ig = explain.integrated_gradients(model, tokenizer, SENTENCES, n_steps=4)
    res = explain.deletion_test(model, tokenizer, SENTENCES, labels, ig, ks=(1, 3), seed=0)
    assert res["n"] == len(SENTENCES) and set(res["k"]) == {1, 3}
    predicted = np.array([a.predicted for a in ig])
    assert res["original_accuracy"] == pytest.approx(float((predicted == labels).mean()),
                                                     abs=1e-4)
    for k, row in res["k"].items():
        assert set(row) == {"top", "random"}
        for kind in row.values():
            assert set(kind) == {"accuracy", "prob_drop", "flip_rate"}
            assert 0 <= kind["accuracy"] <= 1 and 0 <= kind["flip_rate"] <= 1
            assert -1 <= kind["prob_drop"] <= 1
    # deleting changes what the model reads: the probabilities move
    assert any(row[kind]["prob_drop"] != 0 for row in res["k"].values() for kind in row)
    again = explain.deletion_test(model, tokenizer, SENTENCES, labels, ig, ks=(1, 3), seed=0)
    assert again == res                             # seeded random deletions


# ----------------------------------------------------------------------------- LIME

def test_predict_proba_and_lime(teacher, tokenizer):
    proba = explain.predict_proba_fn(teacher, tokenizer)
    p = proba(["", "a good film", "bad"])
    assert p.shape == (3, 2) and np.allclose(p.sum(1), 1)
    sentence = SENTENCES[3]
    lime = explain.lime_explanation(proba, sentence, 1, num_features=4, num_samples=60, seed=0)
    assert 1 <= len(lime) <= 4
    assert all(w in sentence.split() and isinstance(s, float) for w, s in lime)
    assert lime == explain.lime_explanation(proba, sentence, 1, num_features=4, num_samples=60,
                                            seed=0)


def test_word_level_merges_wordpieces():
    a = attribution(["[CLS]", "un", "##believ", "##able", "film", "!", "it", "'", "s", "[SEP]"],
                    [5.0, 0.5, 0.25, 0.25, -1.0, 2.0, 0.1, 0.2, 0.3, 5.0])
    assert explain.word_level(a) == [("unbelievable", 1.0), ("film", -1.0), ("it", 0.1),
                                     ("s", 0.3)]
    assert [w for w, _ in explain.word_level(a, punctuation=True)] == [
        "unbelievable", "film", "!", "it", "'", "s"]


def test_word_level_of_real_attributions_keeps_the_total(student, tokenizer):
    a = explain.integrated_gradients(student, tokenizer, SENTENCES[:1], n_steps=4)[0]
    words = explain.word_level(a, punctuation=True)
    assert [w for w, _ in words] == ["an", "unbelievably", "<", "b", ">", "moving", "<", "/",
                                     "b", ">", "film", "."]
    assert sum(s for _, s in words) == pytest.approx(sum(a.scores), abs=1e-9)
