"""ktlab.nn: attention pieces and the from-scratch BERT, checked against transformers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ktlab.nn import (BertConfig, BertForPreTraining, BertModel, from_hf, merge_heads,
                      padding_mask, scaled_dot_product_attention, sinusoidal_positions,
                      split_heads)
from ktlab.nn.attention import MultiHeadSelfAttention

SENTENCES = ["The cat sat on the mat.",
             "Peter Blackburn went to Brussels to discuss European Union beef policy on Monday.",
             "hi"]


@pytest.fixture(scope="module")
def minilm_pair():
    transformers = pytest.importorskip("transformers")
    from ktlab.models import load_tokenizer, minilm_path
    tok = load_tokenizer("minilm")
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    ref = transformers.BertModel.from_pretrained(str(minilm_path()),
                                                 attn_implementation="eager").eval()
    return ref, from_hf("minilm"), batch


def test_minilm_matches_transformers_within_1e5(minilm_pair):
    ref, mine, batch = minilm_pair
    assert isinstance(mine, BertModel) and not mine.training
    assert batch["attention_mask"].min() == 0, "the batch must contain padding"
    with torch.no_grad():
        r = ref(**batch, output_attentions=True)
        m = mine(**batch, output_attentions=True)
    assert torch.allclose(m.last_hidden_state, r.last_hidden_state, atol=1e-5)
    assert torch.allclose(m.pooler_output, r.pooler_output, atol=1e-5)
    assert len(m.attentions) == len(r.attentions) == 6
    for mine_probs, ref_probs in zip(m.attentions, r.attentions):
        length = batch["input_ids"].shape[1]
        assert mine_probs.shape == ref_probs.shape == (3, 12, length, length)
        assert torch.allclose(mine_probs, ref_probs, atol=1e-5)
    # padded keys receive exactly zero attention
    pad = batch["attention_mask"] == 0
    assert m.attentions[0][2][:, :, pad[2]].abs().max() == 0


def test_fused_path_matches_explicit_path(minilm_pair):
    _, mine, batch = minilm_pair
    with torch.no_grad():
        fused = mine(**batch)
        explicit = mine(**batch, output_attentions=True)
    assert fused.attentions is None
    real = batch["attention_mask"].bool()
    assert torch.allclose(fused.last_hidden_state[real], explicit.last_hidden_state[real], atol=1e-5)
    assert torch.allclose(fused.pooler_output, explicit.pooler_output, atol=1e-5)


def test_from_loaded_model_and_export_roundtrip(minilm_pair):
    ref, mine, batch = minilm_pair
    again = from_hf(ref)
    for (k1, v1), (k2, v2) in zip(mine.state_dict().items(), again.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    exported = mine.to_hf()
    ref_keys = {k for k in ref.state_dict() if not k.endswith(("position_ids", "token_type_ids"))}
    assert set(mine.state_dict()) == ref_keys
    with torch.no_grad():
        assert torch.allclose(exported(**batch).pooler_output, ref(**batch).pooler_output, atol=1e-5)


def test_pretraining_heads_tied_and_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=97)).eval()
    assert model.is_tied
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb
    hf = model.to_hf()
    hf.save_pretrained(tmp_path)
    back = BertForPreTraining.from_hf(tmp_path).eval()
    assert back.is_tied
    x = torch.randint(1, 97, (2, 9))
    with torch.no_grad():
        a, b, c = model(x), hf(x), back(x)
    assert torch.allclose(a.prediction_logits, b.prediction_logits, atol=1e-5)
    assert torch.allclose(a.seq_relationship_logits, b.seq_relationship_logits, atol=1e-5)
    assert torch.allclose(a.prediction_logits, c.prediction_logits, atol=1e-6)


def test_pretraining_losses_and_gradients_flow():
    torch.manual_seed(0)
    model = BertForPreTraining(BertConfig.tiny(vocab_size=50, hidden_size=32,
                                               num_attention_heads=2, intermediate_size=64))
    x = torch.randint(1, 50, (4, 6))
    labels = torch.full_like(x, -100)
    labels[:, 2] = x[:, 2]
    out = model(x, labels=labels, next_sentence_label=torch.tensor([0, 1, 0, 1]))
    assert math.isclose(out.loss.item(), out.mlm_loss.item() + out.nsp_loss.item(), rel_tol=1e-6)
    assert abs(out.mlm_loss.item() - math.log(50)) < 1.0  # near uniform at initialisation
    out.loss.backward()
    assert model.bert.embeddings.word_embeddings.weight.grad.abs().sum() > 0


def test_minilm_has_no_mlm_head_but_one_can_be_built():
    with pytest.raises(ValueError, match="no MLM head"):
        BertForPreTraining.from_hf("minilm")
    model = BertForPreTraining.from_hf("minilm", allow_new_heads=True)
    assert model.is_tied and model.config.hidden_size == 384


def test_scaled_dot_product_attention_matches_torch_and_masks():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 8) for _ in range(3))
    am = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    out, probs = scaled_dot_product_attention(q, k, v, padding_mask(am))
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=am[:, None, None, :].bool())
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 3, 5))
    assert probs[0, :, :, 3:].max() == 0
    # temperature flattens the distribution: entropy grows
    _, hot = scaled_dot_product_attention(q, k, v, temperature=4.0)
    _, cold = scaled_dot_product_attention(q, k, v)
    ent = lambda p: -(p * p.clamp_min(1e-12).log()).sum(-1).mean()
    assert ent(hot) > ent(cold)


def test_split_merge_roundtrip_and_head_slices():
    x = torch.arange(2 * 4 * 12, dtype=torch.float32).view(2, 4, 12)
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 4, 4)
    assert torch.equal(heads[1, 2, 3], x[1, 3, 8:12])
    assert torch.equal(merge_heads(heads), x)
    with pytest.raises(ValueError, match="divisible"):
        split_heads(x, 5)


def test_multi_head_paths_agree():
    torch.manual_seed(2)
    mha = MultiHeadSelfAttention(16, 4).eval()
    h = torch.randn(3, 6, 16)
    mask = padding_mask(torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1, 0, 0, 0, 0, 0]]))
    fused, none = mha(h, mask)
    explicit, probs = mha(h, mask, need_weights=True)
    assert none is None and probs.shape == (3, 4, 6, 6)
    assert torch.allclose(fused, explicit, atol=1e-5)


def test_sinusoidal_positions_formula():
    pe = sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16)
    assert torch.allclose(pe[0, 0::2], torch.zeros(8)) and torch.allclose(pe[0, 1::2], torch.ones(8))
    pos, i = 7, 3
    angle = pos / 10000 ** (2 * i / 16)
    assert math.isclose(pe[pos, 2 * i].item(), math.sin(angle), abs_tol=1e-6)
    assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(angle), abs_tol=1e-6)
    with pytest.raises(ValueError, match="even"):
        sinusoidal_positions(10, 7)


def test_sinusoidal_bert_runs_and_refuses_export():
    model = BertModel(BertConfig.tiny(vocab_size=40, position_embedding_type="sinusoidal")).eval()
    out = model(torch.randint(0, 40, (2, 5)))
    assert out.last_hidden_state.shape == (2, 5, 128)
    assert not any("position_embeddings" in k for k in model.state_dict())
    with pytest.raises(ValueError, match="sinusoidal"):
        model.to_hf()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        BertConfig(hidden_size=10, num_attention_heads=3)
    model = BertModel(BertConfig.tiny(vocab_size=20, max_position_embeddings=8))
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.zeros(1, 9, dtype=torch.long))
    with pytest.raises(TypeError, match="from_hf expects"):
        from_hf(3.5)
