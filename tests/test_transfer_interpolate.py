"""ktlab.transfer.interpolate and ktlab.transfer.layers: beta-blending and layer maps."""
from __future__ import annotations

import pytest
import torch

from ktlab.transfer.interpolate import (add_replace_weights, interpolate, slice_projection)
from ktlab.transfer.layers import (WidthProjection, custom_map, first_k_map,
                                   init_student_from_teacher, last_k_map, layer_mapping,
                                   make_layer_map, num_layers, projections_for, uniform_map)
from tiny_models import batch_of, tiny_bert, toy_sequence_data


def _same(a, b) -> bool:
    return all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())


def test_beta_endpoints_and_midpoint():
    source, target = tiny_bert(seed=0), tiny_bert(seed=1)
    t0 = {k: v.clone() for k, v in target.state_dict().items()}
    report = interpolate(target, source, 1.0)
    assert _same(target, source) and len(report.blended) > 0 and not report.shape_mismatch
    target.load_state_dict(t0)
    interpolate(target, source, 0.0)
    assert all(torch.equal(target.state_dict()[k], t0[k]) for k in t0)
    interpolate(target, source, 0.25)
    w = "bert.encoder.layer.0.attention.self.query.weight"
    assert torch.allclose(target.state_dict()[w],
                          0.25 * source.state_dict()[w] + 0.75 * t0[w])
    ints = "bert.embeddings.position_ids"
    if ints in t0:
        assert torch.equal(target.state_dict()[ints], t0[ints])


def test_beta_out_of_range_and_bad_mappings():
    source, target = tiny_bert(seed=0), tiny_bert(seed=1)
    for beta in (-0.1, 1.01, float("nan")):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            interpolate(target, source, beta)
    with pytest.raises(KeyError, match="unknown parameter"):
        interpolate(target, source, 0.5, mapping={"bert.nope": "bert.pooler.dense.weight"})
    with pytest.raises(ValueError, match="mapping is empty"):
        interpolate(target, source, 0.5, mapping={})
    with pytest.raises(KeyError, match="no parameter names in common"):
        interpolate(target, {"x": torch.ones(1)}, 0.5)


def test_shape_mismatch_is_reported_or_projected_never_silent():
    source, target = tiny_bert(seed=0, num_labels=3), tiny_bert(seed=1, num_labels=2)
    report = interpolate(target, source, 1.0)
    mismatched = {name for name, _, _ in report.shape_mismatch}
    assert mismatched == {"classifier.weight", "classifier.bias"}
    assert "classifier.weight" in str(report)
    with pytest.raises(ValueError, match="strict"):
        interpolate(target, source, 1.0, strict=True)
    report = interpolate(target, source, 1.0, projections={"classifier.weight": slice_projection,
                                                          "classifier.bias": slice_projection})
    assert not report.shape_mismatch and len(report.projected) == 2
    assert torch.equal(target.classifier.weight, source.classifier.weight[:2])
    with pytest.raises(ValueError, match="returned"):
        interpolate(target, source, 1.0, projections={"classifier.bias": lambda s, t: s})


def test_replace_weights_does_not_compound():
    source, target = tiny_bert(seed=0), tiny_bert(seed=1)
    t0 = target.classifier.weight.detach().clone()
    add_replace_weights(target, source)
    target.replace_weights(beta=0.5)
    target.replace_weights(beta=0.5)
    assert torch.allclose(target.classifier.weight, 0.5 * source.classifier.weight + 0.5 * t0)
    target.replace_weights(beta=0.0)
    assert torch.equal(target.classifier.weight, t0)
    with pytest.raises(ValueError):
        target.replace_weights(beta=2)


def test_layer_maps():
    assert uniform_map(6, 3) == {0: 1, 1: 3, 2: 5}
    assert uniform_map(12, 6) == {i: 2 * i + 1 for i in range(6)}
    assert last_k_map(6, 2) == {0: 4, 1: 5}
    assert first_k_map(6, 2) == {0: 0, 1: 1}
    assert make_layer_map({0: 5}, 6, 1) == {0: 5}
    with pytest.raises(ValueError, match="more layers"):
        uniform_map(2, 4)
    with pytest.raises(IndexError, match="out of range"):
        custom_map({0: 6}, 6, 2)
    with pytest.raises(ValueError, match="empty"):
        custom_map({}, 6, 2)
    with pytest.raises(ValueError, match="unknown layer-map"):
        make_layer_map("every-other", 6, 3)


def test_init_shallow_student_from_teacher():
    teacher = tiny_bert("base", seed=0, layers=4)
    student = tiny_bert("sequence", seed=1, layers=2)
    used = init_student_from_teacher(student, teacher, "last")
    assert used == {0: 2, 1: 3} and num_layers(student) == 2
    assert torch.equal(student.bert.encoder.layer[1].output.dense.weight,
                       teacher.encoder.layer[3].output.dense.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight,
                       teacher.embeddings.word_embeddings.weight)
    pairs = layer_mapping(student, teacher, {0: 0})
    assert pairs["bert.encoder.layer.0.attention.self.query.weight"] == \
        "encoder.layer.0.attention.self.query.weight"
    assert not any(k.startswith("classifier") for k in pairs)
    narrow = tiny_bert("sequence", seed=1, layers=2, hidden=16)
    with pytest.raises(ValueError, match="WidthProjection"):
        init_student_from_teacher(narrow, teacher, "uniform")
    with pytest.raises(ValueError, match="BERT-style"):
        num_layers(torch.nn.Linear(2, 2))


def test_layer_mapping_feeds_interpolate():
    teacher = tiny_bert("base", seed=0, layers=4)
    student = tiny_bert("sequence", seed=1, layers=2)
    mapping = layer_mapping(student, teacher, uniform_map(4, 2))
    report = interpolate(student, teacher, 0.5, mapping=mapping)
    assert len(report.blended) == len(mapping)


def test_width_projection():
    proj = WidthProjection(8, 12, init_identity=True)
    x = torch.randn(2, 3, 8)
    assert torch.equal(proj(x)[..., :8], x) and proj(x)[..., 8:].abs().sum() == 0
    assert projections_for(8, 8, 3) is None and len(projections_for(8, 12, 3)) == 3
    assert tiny_bert(seed=0)(**batch_of(toy_sequence_data(2))).logits.shape == (2, 2)
