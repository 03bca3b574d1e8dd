"""ktlab.transfer.freeze, .peft, .regularize and .forgetting on tiny BERTs."""
from __future__ import annotations

import pytest
import torch

from ktlab.metrics import parameter_counts
from ktlab.transfer.forgetting import (cka_by_layer, linear_cka, strip_prefix, token_features,
                                       weight_distance)
from ktlab.transfer.freeze import (GradualUnfreezing, freeze_all_but_head, freeze_bottom_k,
                                   freeze_embeddings, layerwise_lr_groups, trainable_report,
                                   unfreeze_all)
from ktlab.transfer.peft import (LoRALinear, apply_adapters, apply_bitfit, apply_lora,
                                 merge_lora, unmerge_lora)
from ktlab.transfer.regularize import (apply_mixout, l2sp_penalty, mixout, snapshot, wise_ft,
                                       wise_ft_sweep, with_l2sp)
from tiny_models import batch_of, tiny_bert, toy_sequence_data


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


# ---------------------------------------------------------------------------- freeze

def test_freezing_strategies():
    model = tiny_bert(layers=3)
    n = freeze_embeddings(model)
    assert n > 0 and not any("embeddings" in t for t in _trainable(model))
    unfreeze_all(model)
    freeze_bottom_k(model, 2)
    trainable = _trainable(model)
    assert not any("layer.0." in t or "layer.1." in t or "embeddings" in t for t in trainable)
    assert any("layer.2." in t for t in trainable) and "classifier.weight" in trainable
    unfreeze_all(model)
    freeze_all_but_head(model)
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}
    with pytest.raises(ValueError, match="out of range"):
        freeze_bottom_k(model, 4)
    with pytest.raises(ValueError, match="head"):
        freeze_all_but_head(model, head_patterns=("no_such_head",))


def test_trainable_report_counts():
    model = tiny_bert(layers=2)
    freeze_bottom_k(model, 1)
    rows = {r["block"]: r for r in trainable_report(model)}
    assert rows["layer 0"]["trainable"] == 0 and rows["layer 1"]["trainable_%"] == 100.0
    assert rows["TOTAL"]["trainable"] == parameter_counts(model)["trainable"]
    assert rows["TOTAL"]["total"] == sum(p.numel() for p in model.parameters())


def test_gradual_unfreezing_schedule():
    model = tiny_bert(layers=3)
    sched = GradualUnfreezing(model)
    assert sched.apply(0) == [] and all("classifier" in n or "pooler" in n
                                        for n in _trainable(model))
    assert sched.apply(1) == [2]
    assert sched.apply(2) == [1, 2] and not any("layer.0." in n for n in _trainable(model))
    sched.apply(4)
    assert _trainable(model) == {n for n, _ in model.named_parameters()}
    with pytest.raises(ValueError):
        sched.unfrozen_layers(-1)


def test_layerwise_lr_decay_groups():
    model = tiny_bert(layers=2)
    groups = layerwise_lr_groups(model, lr=1.0, decay=0.5)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert lr_of[id(named["classifier.weight"])] == 1.0
    assert lr_of[id(named["bert.encoder.layer.1.output.dense.weight"])] == 0.5
    assert lr_of[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.25
    assert lr_of[id(named["bert.embeddings.word_embeddings.weight"])] == 0.125
    assert sum(len(g["params"]) for g in groups) == len(named)
    torch.optim.AdamW(groups)  # valid optimiser groups
    with pytest.raises(ValueError, match="decay"):
        layerwise_lr_groups(model, 1.0, decay=0.0)


# ---------------------------------------------------------------------------- peft

def test_lora_linear_forward_merge_unmerge():
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    lora = LoRALinear(base, r=4, alpha=8)
    x = torch.randn(3, 16)
    assert torch.allclose(lora(x), base(x))  # B = 0 at init
    with torch.no_grad():
        lora.lora_B.normal_()
    want = base(x) + 2.0 * (x @ lora.lora_A.T @ lora.lora_B.T)
    assert torch.allclose(lora(x), want, atol=1e-5)
    w0 = base.weight.detach().clone()
    lora.merge()
    assert torch.allclose(lora(x), want, atol=1e-5) and not torch.equal(base.weight, w0)
    lora.unmerge()
    assert torch.allclose(base.weight, w0, atol=1e-6) and torch.allclose(lora(x), want, atol=1e-5)
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(torch.nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match="exceeds"):
        LoRALinear(torch.nn.Linear(4, 4), r=5)


def test_apply_lora_on_bert_trains_only_lora_and_head():
    model = tiny_bert(layers=2)
    replaced = apply_lora(model, r=2, alpha=4, target_modules=("query", "value"))
    assert len(replaced) == 4
    assert all("lora_" in n or "classifier" in n for n in _trainable(model))
    batch = batch_of(toy_sequence_data(4))
    model.eval()
    before = model(**batch).logits
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_B.normal_(std=0.1)
    changed = model(**batch).logits
    assert not torch.allclose(before, changed)
    assert merge_lora(model) == 4
    assert torch.allclose(model(**batch).logits, changed, atol=1e-5)
    unmerge_lora(model)
    with pytest.raises(ValueError, match="target_modules"):
        apply_lora(tiny_bert(), target_modules=("wq",))
    with pytest.raises(ValueError, match="empty"):
        apply_lora(tiny_bert(), target_modules=())


def test_lora_matches_peft():
    import peft  # a pinned test dependency: a missing install fails, it does not skip
    model = tiny_bert(layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ref = tiny_bert(layers=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    apply_lora(model, r=2, alpha=4, target_modules=("query", "value"))
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["query", "value"],
                             lora_dropout=0.0)
    ref = peft.get_peft_model(ref, config)
    ours = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    with torch.no_grad():
        for name, layer in ours.items():
            layer.lora_B.normal_()
            theirs = ref.get_submodule("base_model.model." + name)
            theirs.lora_A["default"].weight.copy_(layer.lora_A)
            theirs.lora_B["default"].weight.copy_(layer.lora_B)
    batch = batch_of(toy_sequence_data(3))
    model.eval(), ref.eval()
    assert torch.allclose(model(**batch).logits, ref(**batch).logits, atol=1e-5)


def test_adapters_and_bitfit():
    model = tiny_bert(layers=2)
    batch = batch_of(toy_sequence_data(4))
    model.eval()
    before = model(**batch).logits
    placed = apply_adapters(model, bottleneck=4)
    assert len(placed) == 4  # attention output + FFN output in 2 layers
    assert torch.allclose(model(**batch).logits, before, atol=1e-6)  # identity at init
    assert all(".adapter." in n or "LayerNorm" in n or "classifier" in n
               for n in _trainable(model))
    bitfit = tiny_bert(layers=2)
    names = apply_bitfit(bitfit)
    assert names and all(n.endswith("bias") or "classifier" in n for n in _trainable(bitfit))
    share = parameter_counts(bitfit)["trainable_share"]
    assert 0 < share < 0.2
    with pytest.raises(ValueError, match="bottleneck"):
        apply_adapters(tiny_bert(), bottleneck=0)


# ---------------------------------------------------------------------------- regularize

def test_l2sp_penalty():
    model = tiny_bert()
    ref = snapshot(model)
    assert l2sp_penalty(model, ref, alpha=1.0, beta=0.0).item() == 0.0
    with torch.no_grad():
        model.bert.pooler.dense.weight += 1.0
    n = model.bert.pooler.dense.weight.numel()
    assert l2sp_penalty(model, ref, alpha=2.0, beta=0.0).item() == pytest.approx(n, rel=1e-5)
    head_only = {k: v for k, v in ref.items() if not k.startswith("classifier")}
    head_sq = sum(p.detach().pow(2).sum().item() for n_, p in model.named_parameters()
                  if n_.startswith("classifier"))
    pen = l2sp_penalty(model, head_only, alpha=0.0, beta=2.0)
    assert pen.item() == pytest.approx(head_sq, rel=1e-5)
    loss = with_l2sp(lambda m, b: torch.zeros(()), ref, alpha=2.0)(model, {})
    assert loss.item() == pytest.approx(n, rel=1e-5)
    with pytest.raises(ValueError):
        l2sp_penalty(model, {}, 0.1)
    with pytest.raises(ValueError):
        l2sp_penalty(model, ref, -1.0)


def test_mixout_expectation_and_eval_identity():
    torch.manual_seed(0)
    w, u = torch.randn(200, 200), torch.randn(200, 200)
    mixed = mixout(w, u, 0.3)
    assert (mixed - w).abs().mean() > 0.1
    mean = torch.stack([mixout(w, u, 0.3) for _ in range(50)]).mean(0)
    assert (mean - w).abs().mean() < 0.15
    assert torch.equal(mixout(w, u, 0.3, training=False), w)
    with pytest.raises(ValueError):
        mixout(w, u, 1.0)
    model = tiny_bert(layers=1)
    batch = batch_of(toy_sequence_data(4))
    model.eval()
    before = model(**batch).logits
    replaced = apply_mixout(model, 0.2)
    assert replaced and not any("classifier" in r for r in replaced)
    assert torch.allclose(model(**batch).logits, before)


def test_wise_ft_sweep():
    pre = tiny_bert("base", seed=0)
    model = tiny_bert("sequence", seed=1)
    finetuned = {k: v.clone() for k, v in model.state_dict().items()}
    pretrained = {"bert." + k: v for k, v in pre.state_dict().items()}
    wise_ft(model, pretrained, finetuned, 0.0)
    assert torch.equal(model.bert.pooler.dense.weight, pre.pooler.dense.weight)
    assert torch.equal(model.classifier.weight, finetuned["classifier.weight"])  # head kept
    rows = wise_ft_sweep(model, pretrained, finetuned, [0.0, 0.5, 1.0],
                         lambda m: {"w": float(m.bert.pooler.dense.weight[0, 0])})
    w0, w1 = float(pre.pooler.dense.weight[0, 0]), float(finetuned[
        "bert.pooler.dense.weight"][0, 0])
    assert [r["w"] for r in rows] == pytest.approx([w0, (w0 + w1) / 2, w1], abs=1e-6)
    assert torch.equal(model.bert.pooler.dense.weight, finetuned["bert.pooler.dense.weight"])
    with pytest.raises(ValueError):
        wise_ft_sweep(model, pretrained, finetuned, [], lambda m: {})
    with pytest.raises(ValueError):
        wise_ft(model, pretrained, finetuned, 1.5)


# ---------------------------------------------------------------------------- forgetting

def test_linear_cka_properties():
    torch.manual_seed(0)
    x = torch.randn(50, 8)
    q, _ = torch.linalg.qr(torch.randn(8, 8))
    assert linear_cka(x, x @ q * 3.0 + 1.0) == pytest.approx(1.0, abs=1e-6)  # rotation + scale
    assert linear_cka(x, torch.randn(50, 5)) < 0.5
    with pytest.raises(ValueError, match="same examples"):
        linear_cka(x, x[:10])
    with pytest.raises(ValueError, match="2-D"):
        linear_cka(x[None], x[None])


def test_cka_by_layer_and_weight_distance():
    model, pre = tiny_bert("sequence", seed=0), tiny_bert("base", seed=0)
    pre.load_state_dict(strip_prefix(model.state_dict(), "bert"), strict=False)
    batches = [batch_of(toy_sequence_data(8))]
    assert cka_by_layer(model, pre, batches) == pytest.approx([1.0] * 3, abs=1e-6)
    dist = weight_distance(strip_prefix(model.state_dict(), "bert"), pre)
    assert dist["total"] == pytest.approx(0.0, abs=1e-7)
    with torch.no_grad():
        model.bert.encoder.layer[1].output.dense.weight.add_(torch.randn(32, 64))
    cka = cka_by_layer(model, pre, batches)
    assert cka[0] == pytest.approx(1.0, abs=1e-6) and cka[2] < 0.999
    dist = weight_distance(strip_prefix(model.state_dict(), "bert"), pre)
    assert dist["layer 1"] > 0 and dist["layer 0"] == 0.0
    assert len(token_features(pre, batches, layers=[0])) == 1
    with pytest.raises(ValueError, match="share no"):
        weight_distance(model, {"x": torch.ones(1)})
