"""The public pieces compose: every teacher and student ktlab builds works with
``cache_teacher_logits``, with the Trainer's default loss, and as a pair in distillation.

Real data (16 SST-2 sentences, 16 CoNLL-2003 sentences, at most 32 sub-tokens) and small
students keep the whole file fast on two CPU cores; two optimiser steps per run are enough to
show that a loss is finite and that it reaches the parameters.
"""
from __future__ import annotations

import math
from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ktlab.data import load_conll, load_sst2
from ktlab.data.collate import PadCollator, encode_sentences, encode_tagged
from ktlab.data.conll import NER_LABELS
from ktlab.experiments.ner import NerCollator
from ktlab.experiments.sentiment import make_distill_loss
from ktlab.models import load_teacher
from ktlab.nn.students import (STUDENT_NAMES, TAGGER_NAMES, CRFTagger, MeanPoolClassifier,
                               build_student, build_tagger, case_ids_for, tiny_transformer)
from ktlab.train import Trainer, TrainConfig, default_loss, logits_of, model_inputs
from ktlab.transfer.distill import PadTeacherCollator, TeacherCache, cache_teacher_logits

NUM_LABELS = 3          # SST-2's two classes plus a third: nothing may hard-code 2
NUM_TAGS = len(NER_LABELS)
MAX_LENGTH, N_ITEMS, BATCH, STEPS = 32, 16, 8, 2

#: Small sizes for every student name; a name missing here fails test_every_name_is_covered.
STUDENT_KWARGS = {"bilstm": dict(embed_dim=32, hidden_size=16, mlp_size=16),
                  "cnn": dict(embed_dim=32, num_filters=8),
                  "tiny": dict(hidden_size=32, num_layers=1, num_heads=2)}
TAGGER_KWARGS = {"bilstm": dict(embed_dim=32, hidden_size=16, case_dim=4),
                 "tiny": dict(hidden_size=32, num_layers=1, num_heads=2)}

Factory = Callable[[int], nn.Module]   # vocab_size -> a fresh model


def _seeded(build: Factory) -> Factory:
    """Fresh weights drawn from a fixed seed: every run of the file sees the same models."""
    def make(vocab_size: int) -> nn.Module:
        torch.manual_seed(0)
        return build(vocab_size)
    return make


SEQUENCE_TEACHERS: dict[str, Factory] = {
    "minilm-cls": _seeded(lambda v: load_teacher("minilm", num_labels=NUM_LABELS,
                                                 task="sequence")),
    "minilm-mean": _seeded(lambda v: MeanPoolClassifier(load_teacher("minilm"), NUM_LABELS)),
    "tiny-cls": _seeded(lambda v: tiny_transformer(v, NUM_LABELS, **STUDENT_KWARGS["tiny"])),
    "tiny-mean": _seeded(lambda v: tiny_transformer(v, NUM_LABELS, pooling="mean",
                                                    **STUDENT_KWARGS["tiny"])),
}
SEQUENCE_STUDENTS: dict[str, Factory] = {
    **{name: _seeded(lambda v, name=name: build_student(name, v, NUM_LABELS,
                                                        **STUDENT_KWARGS[name]))
       for name in STUDENT_NAMES},
    "tiny-mean": _seeded(lambda v: build_student("tiny", v, NUM_LABELS, pooling="mean",
                                                 **STUDENT_KWARGS["tiny"])),
}
TOKEN_TEACHERS: dict[str, Factory] = {
    "minilm-token": _seeded(lambda v: load_teacher("minilm", num_labels=NUM_TAGS, task="token")),
    "tiny-tagger": _seeded(lambda v: build_tagger("tiny", v, NUM_TAGS, **TAGGER_KWARGS["tiny"])),
}
TOKEN_STUDENTS: dict[str, Factory] = {
    f"{name}{'+crf' if crf else ''}": _seeded(
        lambda v, name=name, crf=crf: build_tagger(name, v, NUM_TAGS, crf=crf, labels=NER_LABELS,
                                                   **TAGGER_KWARGS[name]))
    for name in TAGGER_NAMES for crf in (False, True)
}
SEQUENCE_MODELS = {**SEQUENCE_TEACHERS, **SEQUENCE_STUDENTS}
TOKEN_MODELS = {**TOKEN_TEACHERS, **TOKEN_STUDENTS}


# ----------------------------------------------------------------------------- data

@pytest.fixture(scope="module")
def sst_items(data_dir, tokenizer) -> list[dict]:
    """Labelled SST-2 items; every fourth gets the third class so num_labels=3 is exercised."""
    rows = load_sst2("train", data_dir).select(range(N_ITEMS))
    items = encode_sentences(tokenizer, rows["sentence"], MAX_LENGTH)
    for i, (item, label) in enumerate(zip(items, rows["label"])):
        item["labels"] = 2 if i % 4 == 3 else int(label)
    return items


@pytest.fixture(scope="module")
def ner_items(data_dir, tokenizer) -> list[dict]:
    """CoNLL-2003 items: sub-token labels (-100 off first sub-tokens) and word-shape ids."""
    rows = load_conll("train", data_dir).select(range(N_ITEMS))
    index = {tag: i for i, tag in enumerate(NER_LABELS)}
    tags = [[index[t] for t in sentence] for sentence in rows["ner_tags"]]
    items = encode_tagged(tokenizer, rows["tokens"], tags, max_length=MAX_LENGTH)
    for item, words in zip(items, rows["tokens"]):
        item["case_ids"] = case_ids_for(words, item["word_ids"])
    return items


@pytest.fixture(scope="module")
def vocab_size(tokenizer) -> int:
    return len(tokenizer)


@pytest.fixture(scope="module")
def cached(sst_items, ner_items, vocab_size) -> Callable[[str], list[dict]]:
    """``cached(teacher_name)``: the items with that teacher's logits, computed once per file."""
    store: dict[str, list[dict]] = {}

    def get(name: str) -> list[dict]:
        if name not in store:
            token = name in TOKEN_TEACHERS
            teacher = (TOKEN_TEACHERS if token else SEQUENCE_TEACHERS)[name](vocab_size)
            store[name] = cache_teacher_logits(teacher, ner_items if token else sst_items,
                                               PadCollator(), batch_size=BATCH)
        return store[name]
    return get


# ----------------------------------------------------------------------------- helpers

def _config(lr: float = 1e-3) -> TrainConfig:
    # no weight decay: a parameter that moves did so because the loss reached it
    return TrainConfig(lr=lr, batch_size=BATCH, max_steps=STEPS, weight_decay=0.0,
                       progress=False, seed=0)


def _fit(model: nn.Module, items: list[dict], **kwargs) -> tuple[dict, dict]:
    """Train briefly; returns the trainable parameters before and after."""
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    history = Trainer(model, _config(), train_dataset=items, **kwargs).fit()
    assert len(history.loss) == STEPS
    assert all(math.isfinite(v) for v in history.loss), history.loss
    after = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return before, after


def _changed(before: dict, after: dict, prefix: str = "") -> list[str]:
    return [n for n in before if n.startswith(prefix) and not torch.equal(before[n], after[n])]


def _head(model: nn.Module) -> str:
    """The name prefix of the parameters closest to the output (the last ones registered)."""
    name = [n for n, _ in model.named_parameters()][-1]
    return name.rsplit(".", 1)[0]


def _direct_logits(model: nn.Module, batch: dict) -> torch.Tensor:
    inputs = {k: v for k, v in model_inputs(model, batch).items() if k != "labels"}
    with torch.no_grad():
        return logits_of(model.eval()(**inputs))


def test_every_name_is_covered():
    """A new student or tagger name must join this file's matrix."""
    assert set(STUDENT_KWARGS) == set(STUDENT_NAMES)
    assert set(TAGGER_KWARGS) == set(TAGGER_NAMES)


# ----------------------------------------------------------------------------- caching

@pytest.mark.parametrize("name", list(SEQUENCE_MODELS))
def test_cache_teacher_logits_sequence(name, sst_items, vocab_size):
    model = SEQUENCE_MODELS[name](vocab_size)
    data = cache_teacher_logits(model, sst_items, PadCollator(), batch_size=BATCH)
    assert len(data) == len(sst_items) and "teacher_logits" not in sst_items[0]
    assert all(it["teacher_logits"].shape == (NUM_LABELS,) for it in data)
    # the same padded batch straight through the model gives the same logits
    direct = _direct_logits(model, PadCollator()(sst_items[:BATCH]))
    cached_logits = torch.stack([it["teacher_logits"] for it in data[:BATCH]])
    assert torch.allclose(cached_logits, direct, atol=1e-4)


@pytest.mark.parametrize("name", list(TOKEN_MODELS))
def test_cache_teacher_logits_token(name, ner_items, vocab_size):
    model = TOKEN_MODELS[name](vocab_size)
    data = cache_teacher_logits(model, ner_items, PadCollator(), batch_size=BATCH)
    assert all(it["teacher_logits"].shape == (len(it["input_ids"]), NUM_TAGS) for it in data)
    batch = PadTeacherCollator(PadCollator())(data[:BATCH])
    direct = _direct_logits(model, batch)
    real = batch["attention_mask"].bool()
    assert torch.allclose(batch["teacher_logits"][real], direct[real], atol=1e-4)


def test_teacher_cache_asks_for_hidden_states_only_when_wanted(sst_items, vocab_size):
    """The MiniLM mean-pool head gives hidden states when asked; a bare-logit model says it
    has none instead of failing inside its forward."""
    batch = PadCollator()(sst_items[:4])
    teacher = SEQUENCE_TEACHERS["minilm-mean"](vocab_size)
    out = TeacherCache(teacher, hidden_states=True)(batch)
    assert len(out["hidden_states"]) == teacher.config.num_hidden_layers + 1
    assert out["hidden_states"][-1].shape == (*batch["input_ids"].shape,
                                              teacher.config.hidden_size)
    assert set(TeacherCache(teacher)(batch)) == {"logits"}
    with pytest.raises(ValueError, match="returned no hidden_states"):
        TeacherCache(SEQUENCE_STUDENTS["cnn"](vocab_size), hidden_states=True)(batch)


# ----------------------------------------------------------------------------- default loss

@pytest.mark.parametrize("name", list(SEQUENCE_MODELS))
def test_trainer_default_loss_sequence(name, sst_items, vocab_size):
    """Trainer(model, cfg, train_dataset=labelled items).fit(): no loss_fn, no collate_fn."""
    model = SEQUENCE_MODELS[name](vocab_size)
    before, after = _fit(model, sst_items)
    assert _changed(before, after, _head(model)), f"{name}: the output layer did not move"


@pytest.mark.parametrize("name", list(TOKEN_MODELS))
def test_trainer_default_loss_token(name, ner_items, vocab_size):
    model = TOKEN_MODELS[name](vocab_size)
    before, after = _fit(model, ner_items, collate_fn=NerCollator(0))
    assert _changed(before, after), f"{name}: no parameter moved"
    if isinstance(model, CRFTagger):  # the CRF's own loss trained it, not plain cross-entropy
        assert _changed(before, after, "crf.")


def test_default_loss_falls_back_to_cross_entropy(sst_items, ner_items, vocab_size):
    seq = SEQUENCE_STUDENTS["bilstm"](vocab_size).eval()
    batch = PadCollator()(sst_items[:BATCH])
    expected = F.cross_entropy(_direct_logits(seq, batch), batch["labels"])
    assert float(default_loss(seq, batch).detach()) == pytest.approx(float(expected), rel=1e-5)

    tagger = TOKEN_STUDENTS["bilstm"](vocab_size).eval()
    batch = NerCollator(0)(ner_items[:BATCH])
    logits = _direct_logits(tagger, batch)
    expected = F.cross_entropy(logits.reshape(-1, NUM_TAGS), batch["labels"].reshape(-1),
                               ignore_index=-100)
    assert float(default_loss(tagger, batch).detach()) == pytest.approx(float(expected), rel=1e-5)

    crf = TOKEN_STUDENTS["bilstm+crf"](vocab_size).eval()
    expected = crf.nll(_direct_logits(crf, batch), batch["labels"]).detach()
    assert float(default_loss(crf, batch).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_default_loss_without_labels_or_with_wrong_labels_says_why(sst_items, ner_items,
                                                                   vocab_size):
    model = SEQUENCE_STUDENTS["cnn"](vocab_size)
    batch = PadCollator()([{k: v for k, v in it.items() if k != "labels"}
                           for it in sst_items[:4]])
    with pytest.raises(ValueError, match="returned no loss"):
        default_loss(model, batch)
    token_batch = NerCollator(0)(ner_items[:4])  # token labels for a sentence classifier
    with pytest.raises(ValueError, match="do not match labels"):
        default_loss(model, token_batch)


# ----------------------------------------------------------------------------- distillation

@pytest.mark.parametrize("student", list(SEQUENCE_STUDENTS))
@pytest.mark.parametrize("teacher", list(SEQUENCE_TEACHERS))
def test_student_distils_from_cached_sequence_teacher(teacher, student, cached, vocab_size):
    model = SEQUENCE_STUDENTS[student](vocab_size)
    before, after = _fit(model, cached(teacher), loss_fn=make_distill_loss(alpha=0.5))
    assert _changed(before, after, _head(model))


@pytest.mark.parametrize("student", list(TOKEN_STUDENTS))
@pytest.mark.parametrize("teacher", list(TOKEN_TEACHERS))
def test_tagger_distils_from_cached_token_teacher(teacher, student, cached, vocab_size):
    """Token-level cached logits ``[L_i, C]`` pad to the batch with PadTeacherCollator."""
    model = TOKEN_STUDENTS[student](vocab_size)
    before, after = _fit(model, cached(teacher), loss_fn=make_distill_loss(0.5, objective="kl"),
                         collate_fn=PadTeacherCollator(NerCollator(0)))
    assert _changed(before, after)
