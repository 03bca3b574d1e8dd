"""The full profile, exercised on CPU: ``ktlab run EXPERIMENT --profile full`` with a hub-style
teacher loaded from a folder, every split cut to a few sentences and every training run to a few
steps (``--max-examples``, ``--max-steps``).

What runs is the full profile's own code path: its sizes table (full-size students, full
conditions, max_length 128, all teacher layers in the multi-task encoder), a teacher that is
neither the offline MiniLM nor on the hub, and the Trainer's precision choice (off on CPU). Only
the amounts are cut, and ``results.json`` says so under ``"capped"``.

One test function per experiment; a new experiment adds its own, built on :func:`run_full`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest
import torch

from ktlab.cli import main

MAX_EXAMPLES = 24
MAX_STEPS = 2
#: One experiment at these caps takes 30-50 s on one thread of a busy 2-core machine; minutes
#: would mean a cap stopped applying (the uncapped full profile runs for hours).
BUDGET_S = 120


@pytest.fixture(scope="module")
def teacher_folder(tmp_path_factory, data_dir) -> Path:
    """A randomly initialised BERT saved the way a hub checkpoint is (``BertForPreTraining``:
    encoder, pooler, MLM and NSP heads) with the MiniLM tokenizer: ``--teacher <folder>``.

    Its hidden size is the BiLSTM's full-profile ``embed_dim`` (300), the narrowest teacher whose
    word embeddings the NER ``kd+crf+pca`` condition can project onto the student's; depth,
    heads and feed-forward width stay tiny."""
    import transformers

    from ktlab.experiments import ner
    from ktlab.models import load_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=ner.STUDENT_KWARGS["bilstm"]["embed_dim"],
        num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    transformers.BertForPreTraining(config).save_pretrained(folder)
    return folder


@pytest.fixture
def restore_threads():
    """``--threads 1`` sets torch's thread count for the whole pytest process: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_full(experiment: str, teacher: Path, out: Path, *extra: str) -> tuple[dict, float]:
    """``ktlab run EXPERIMENT --profile full --teacher FOLDER`` at the smoke-test caps; checks
    the exit code, the time and what every experiment's results share, returns them and the
    seconds it took."""
    start = time.perf_counter()
    code = main(["run", experiment, "--profile", "full", "--teacher", str(teacher),
                 "--max-examples", str(MAX_EXAMPLES), "--max-steps", str(MAX_STEPS),
                 "--out", str(out), "--threads", "1", *extra])
    seconds = time.perf_counter() - start
    assert code == 0
    assert seconds < BUDGET_S, f"{experiment} took {seconds:.0f} s at {MAX_EXAMPLES} examples"
    assert (out / "table.md").is_file()
    results = json.loads((out / "results.json").read_text())
    assert results["profile"] == "full"
    assert results["capped"] == {"max_examples": MAX_EXAMPLES, "max_steps": MAX_STEPS}
    assert results["machine"]["torch_threads"] == 1
    return results, seconds


def _as_json(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


@pytest.mark.slow
def test_ner_full_profile(teacher_folder, tmp_path, restore_threads):
    from transformers import BertConfig, BertForTokenClassification

    from ktlab.experiments import ner

    results, _ = run_full("ner", teacher_folder, tmp_path / "ner")
    assert results["teacher_name"] == str(teacher_folder)
    # the full sizes table (full-size students, 128 tokens, 3 + 10 epochs), only the caps cut
    full = ner.PROFILE_SIZES["full"]
    assert results["sizes"] == _as_json(ner.cap_sizes(full, MAX_EXAMPLES, MAX_STEPS))
    assert results["sizes"]["student_kwargs"] is None and results["sizes"]["max_length"] == 128
    assert results["data"] == {**results["data"], "teacher_train": MAX_EXAMPLES,
                               "student_train": MAX_EXAMPLES, "dev": MAX_EXAMPLES,
                               "test": MAX_EXAMPLES}
    # every condition of every student: the full profile trims none
    assert [r["name"] for r in results["students"]] == [
        f"{s}/{c}" for s in ner.STUDENTS for c in ner.CONDITIONS[s]]
    for rec in [results["teacher"]] + results["students"]:
        assert rec["history"]["step"][-1] <= MAX_STEPS, rec["name"]
        assert rec["throughput_sps"] > 0 and 0.0 <= rec["test_f1"] <= 100.0
    # the teacher is the folder's BERT with a new 9-way tagging head
    config = BertConfig.from_pretrained(teacher_folder, num_labels=len(ner.NER_LABELS))
    assert results["teacher"]["params"] == sum(
        p.numel() for p in BertForTokenClassification(config).parameters())
    bilstm = next(r for r in results["students"] if r["name"] == "bilstm/hard")
    embed = ner.STUDENT_KWARGS["bilstm"]["embed_dim"]
    assert bilstm["params"] > config.vocab_size * embed    # the full 300-d embedding table


@pytest.mark.slow
def test_sentiment_full_profile(teacher_folder, tmp_path, restore_threads):
    from transformers import BertModel

    from ktlab.experiments import classify

    out = tmp_path / "sentiment"
    results, _ = run_full("sentiment", teacher_folder, out)
    assert results["teacher_name"] == str(teacher_folder) and results["complete"] is True
    assert results["task"] == "sst2" and results["label_names"] == ["0", "1"]
    # the full sizes table (all weights train, 128 tokens, 2 augmented copies), only the caps cut
    full = classify.PROFILE_SIZES["full"]
    assert results["sizes"] == _as_json(classify.cap_sizes(full, MAX_EXAMPLES, MAX_STEPS))
    assert results["sizes"]["max_length"] == 128
    assert results["sizes"]["teacher_freeze_embeddings"] is False
    assert results["data"] == {**results["data"], "teacher_train": MAX_EXAMPLES,
                               "student_train": MAX_EXAMPLES, "dev": MAX_EXAMPLES}
    assert results["data"]["transfer_augmented"] > 0
    # every default student under every condition: the full profile trims none
    assert results["students_requested"] == list(classify.STUDENTS)
    assert [r["name"] for r in results["students"]] == [
        f"{s}/{c}" for s in classify.STUDENTS for c in classify.STUDENT_CONDITIONS[s]]
    for rec in [results["teacher"]] + results["students"]:
        assert rec["history"]["step"][-1] <= MAX_STEPS, rec["name"]
        assert rec["throughput_sps"] > 0 and 0.0 <= rec["dev_accuracy"] <= 1.0
        assert len(rec["dev_predictions"]) == MAX_EXAMPLES
    assert len(results["dev"]["teacher_probs"]) == MAX_EXAMPLES
    # a folder teacher classifies from [CLS] through HF's pooler head (only MiniLM mean-pools):
    # the pooler is on the gradient path, so fine-tuning moved its weights
    assert results["teacher_pooling"] == "cls"
    tuned = torch.load(out / "cache" / results["cache_key"] / "teacher" / "model.pt",
                       map_location="cpu", weights_only=False)["state"]
    pretrained = BertModel.from_pretrained(teacher_folder).pooler.dense.weight
    assert tuned["bert.pooler.dense.weight"].shape == pretrained.shape
    assert not torch.equal(tuned["bert.pooler.dense.weight"], pretrained)
    # the full-size BiLSTM: its own 300-d table, as large as the teacher's
    bilstm = next(r for r in results["students"] if r["name"] == "bilstm/hard")
    assert bilstm["params"] > tuned["bert.embeddings.word_embeddings.weight"].numel()


def test_ner_refuses_pca_from_a_narrow_teacher_before_training(tmp_path, data_dir, capsys):
    """A teacher with 32-d embeddings cannot seed the full profile's 300-d BiLSTM table by PCA:
    the run stops on the teacher's config, not after fine-tuning it (hours on a GPU)."""
    import transformers

    from ktlab.models import load_tokenizer

    folder = tmp_path / "narrow-bert"
    tokenizer = load_tokenizer("minilm")
    tokenizer.save_pretrained(folder)
    transformers.BertModel(transformers.BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64)).save_pretrained(folder)
    out = tmp_path / "ner"
    assert main(["run", "ner", "--profile", "full", "--teacher", str(folder), "--max-examples",
                 "8", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "+pca" in err and "32-d" in err and "300-d" in err
    assert not out.exists()   # refused from the teacher's config: no data read, nothing trained


@pytest.mark.slow
def test_multitask_full_profile(teacher_folder, tmp_path, restore_threads):
    from ktlab.experiments import multitask

    results, _ = run_full("multitask", teacher_folder, tmp_path / "multitask", "--seeds", "0")
    assert results["teacher"] == str(teacher_folder)
    full = multitask.PROFILE_SIZES["full"]
    assert results["sizes"] == _as_json(multitask.cap_sizes(full, MAX_EXAMPLES, MAX_STEPS))
    assert results["sizes"]["encoder_layers"] is None   # all the teacher's layers
    assert results["seeds"] == [0] and results["tasks"] == list(multitask.TASKS)
    assert results["train_sizes"] == {t: MAX_EXAMPLES for t in multitask.TASKS}
    models = {r["model"] for r in results["runs"]}
    assert models == {"single-task", "multi-task KD (temperature)",
                      *(f"multi-task ({s})" for s in multitask.SAMPLERS)}
    # each single-task model trains MAX_STEPS; a multi-task one the budget of all four together
    assert [r["steps"] for r in results["runs"] if r["model"] == "single-task"] == \
        [MAX_STEPS] * len(multitask.TASKS)
    for model in models:
        steps = [r["steps"] for r in results["runs"] if r["model"] == model]
        assert sum(steps) == MAX_STEPS * len(multitask.TASKS), model
    assert all(0.0 <= r["score"] <= 100.0 for r in results["runs"])


def test_caps_only_shrink_and_are_recorded():
    """``--max-examples`` / ``--max-steps`` never enlarge a size, ``None`` keeps it, and a run
    at the profile's sizes records ``"capped": null``."""
    from ktlab.experiments import multitask, ner
    from ktlab.experiments.common import caps_record, capped

    assert capped(None, 5) == 5 and capped(3, 5) == 3 and capped(7, None) == 7
    assert capped(None, None) is None
    assert caps_record(None, None) is None
    assert caps_record(8, None) == {"max_examples": 8, "max_steps": None}
    tiny = ner.PROFILE_SIZES["tiny"]
    assert ner.cap_sizes(tiny) == tiny
    cut = ner.cap_sizes(tiny, max_examples=20, max_steps=10**6)
    assert (cut.teacher_train, cut.student_train, cut.dev, cut.speed_sentences,
            cut.latency_sentences) == (20, 20, 20, 16, 4)
    assert cut.student_max_steps == tiny.student_max_steps == cut.teacher_max_steps
    quick = multitask.PROFILE_SIZES["quick"]
    assert multitask.cap_sizes(quick, 10**6, 10**6) == quick
    with pytest.raises(multitask.ConfigError, match="max_steps must be >= 1"):
        multitask.cap_sizes(quick, max_steps=0)


@pytest.mark.parametrize("option", ["--max-examples", "--max-steps"])
def test_caps_must_be_positive(option, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["run", "ner", option, "0", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    assert "must be >= 1" in capsys.readouterr().err
