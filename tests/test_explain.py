"""ktlab.explain on tiny models with the real MiniLM tokenizer: IG's completeness and its
Riemann sum, HTML, rank comparisons, attention, the deletion test and LIME."""
from __future__ import annotations

import math

import pytest
import torch
from transformers import BertModel

from ktlab import explain
from ktlab.nn.students import BiLSTMClassifier, MeanPoolClassifier
from tests.tiny_models import tiny_config

SENTENCES = ["a gripping , beautifully acted film .", "the plot is thin and the jokes fall flat .",
             "unwatchable"]


@pytest.fixture(scope="module")
def models(tokenizer):
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.vocab_size = len(tokenizer)
    teacher = MeanPoolClassifier(BertModel(cfg)).eval()
    student = BiLSTMClassifier(len(tokenizer), embed_dim=16, hidden_size=8, mlp_size=8).eval()
    return teacher, student


def test_integrated_gradients_is_complete_and_matches_the_riemann_sum(models, tokenizer):
    for model in models:
        attrs = explain.integrated_gradients(model, tokenizer, SENTENCES, n_steps=200)
        assert [a.tokens[0] for a in attrs] == ["[CLS]"] * 3
        for a in attrs:
            assert len(a.scores) == len(a.tokens) == len(a.ids)
            assert abs(a.delta) < 1e-2 * max(1.0, sum(abs(s) for s in a.scores))
            assert a.target == a.predicted and 0.5 <= a.prob <= 1.0
        r = explain.riemann_integrated_gradients(model, tokenizer, SENTENCES[1], n_steps=400)
        assert r.ids == attrs[1].ids
        assert torch.allclose(torch.tensor(r.scores), torch.tensor(attrs[1].scores),
                              atol=5e-3 + 0.02 * max(abs(s) for s in attrs[1].scores))
        # the special tokens are kept in the baseline: they get (almost) no attribution
        assert abs(attrs[1].scores[0]) < 1e-6 and abs(attrs[1].scores[-1]) < 1e-6


def test_attribution_html_escapes_and_colours(models, tokenizer):
    a = explain.integrated_gradients(models[1], tokenizer, ["<b>bold</b> & good"], n_steps=8)[0]
    page = explain.attribution_html(a)
    assert "<b>bold" not in page and "&lt;" in page and "rgba(" in page and "[CLS]" not in page
    assert "student" in explain.side_by_side_html([("student", a)])


def test_rank_correlation_and_top_k_overlap():
    a = explain.TokenAttribution(["[CLS]", "a", "b", "c", "d", "[SEP]"], [1, 2, 3, 4, 5, 6],
                                 [0, 1, 2, 3, 4, 0], 1, 1, 0.9, 0.0)
    b = explain.TokenAttribution(a.tokens, a.ids, [0, 4, 3, 2, 1, 0], 1, 1, 0.9, 0.0)
    assert explain.rank_correlation(a, a) == pytest.approx(1.0)
    assert explain.rank_correlation(a, b) == pytest.approx(-1.0)
    assert explain.top_k_overlap(a, a, 2) == 1.0 and explain.top_k_overlap(a, b, 2) == 0.0
    flat = explain.TokenAttribution(a.tokens, a.ids, [1] * 6, 1, 1, 0.9, 0.0)
    assert math.isnan(explain.rank_correlation(a, flat))
    other = explain.TokenAttribution(a.tokens, [9] * 6, a.scores, 1, 1, 0.9, 0.0)
    with pytest.raises(ValueError, match="same sentence"):
        explain.rank_correlation(a, other)


def test_attention_scores_and_their_agreement_with_gradients(models, tokenizer):
    teacher = models[0]
    att = explain.attention_scores(teacher, tokenizer, SENTENCES)
    attrs = explain.integrated_gradients(teacher, tokenizer, SENTENCES, n_steps=8)
    for a, g in zip(att, attrs):
        assert len(a) == len(g.tokens) and sum(a) == pytest.approx(1.0, abs=1e-5)
    res = explain.attention_vs_gradients(att, attrs)
    assert -1.0 <= res["mean_spearman"] <= 1.0 and res["sentences"] >= 1
    assert teacher.bert.config._attn_implementation != "eager"   # switched back


def test_deletion_test_deletes_the_top_tokens(models, tokenizer):
    student = models[1]
    attrs = explain.integrated_gradients(student, tokenizer, SENTENCES, n_steps=8)
    res = explain.deletion_test(student, tokenizer, SENTENCES, [1, 0, 0], attrs, ks=(1, 2))
    assert res["n"] == 3 and set(res["k"]) == {1, 2}
    for k in (1, 2):
        for kind in ("top", "random"):
            row = res["k"][k][kind]
            assert 0 <= row["accuracy"] <= 1 and 0 <= row["flip_rate"] <= 1
    # removing the tokens that push hardest towards the prediction lowers its probability
    assert res["k"][2]["top"]["prob_drop"] > 0
    with pytest.raises(ValueError, match="one of each"):
        explain.deletion_test(student, tokenizer, SENTENCES, [1], attrs)


def test_lime_and_word_level(models, tokenizer):
    student = models[1]
    proba = explain.predict_proba_fn(student, tokenizer)
    p = proba(SENTENCES)
    assert p.shape == (3, 2) and abs(p.sum(1) - 1).max() < 1e-5
    weights = explain.lime_explanation(proba, SENTENCES[1], 0, num_features=4, num_samples=50)
    assert len(weights) == 4 and all(w in SENTENCES[1].split() for w, _ in weights)
    attr = explain.integrated_gradients(student, tokenizer, ["unwatchable"], n_steps=8)[0]
    words = explain.word_level(attr)
    assert [w for w, _ in words] == ["unwatchable"]
    assert words[0][1] == pytest.approx(sum(attr.scores[1:-1]))
