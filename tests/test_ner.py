"""The NER pipeline: taggers, the word view, losses, the collator, and a run end to end on a few
dozen real CoNLL-2003 sentences (1-2 optimiser steps per model)."""
from __future__ import annotations

import json

import pytest
import torch

from ktlab.data import NER_LABELS, load_conll
from ktlab.experiments import cli as exp_cli
from ktlab.experiments import ner
from ktlab.nn.students import (BiLSTMTagger, CRFTagger, build_tagger, case_class, word_view)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = ner.PROFILE_SIZES["tiny"]


@pytest.fixture(scope="module")
def conll_slice(data_dir):
    ds = load_conll("valid", data_dir)
    return ds.select(range(1, 9))  # row 0 is a one-word -DOCSTART- style heading sentence


@pytest.fixture(scope="module")
def items(tokenizer, conll_slice):
    return ner.encode(tokenizer, conll_slice["tokens"], conll_slice["ner_tags"], max_length=64)


def test_encode_aligns_first_subtokens_on_real_sentences(tokenizer, conll_slice, items):
    for item, words, tags in zip(items, conll_slice["tokens"], conll_slice["ner_tags"]):
        kept = [lab for lab in item["labels"] if lab != -100]
        assert kept == [NER_LABELS.index(t) for t in tags]          # one label per word, in order
        assert item["num_words"] == len(words)
        assert len(item["case_ids"]) == len(item["input_ids"])
        assert item["case_ids"][0] == 0 and item["case_ids"][-1] == 0  # [CLS], [SEP]
    with pytest.raises(ValueError, match="unknown NER tag"):
        ner.encode(tokenizer, [["Paris"]], [["B-CITY"]], max_length=16)


def test_case_classes():
    assert [case_class(w) for w in ("the", "Paris", "EU", "1996", "-")] == [1, 2, 3, 4, 5]


def test_word_view_packs_first_subtokens_in_order():
    logits = torch.arange(2 * 6 * 3, dtype=torch.float).reshape(2, 6, 3)
    labels = torch.tensor([[-100, 4, -100, 7, 0, -100], [-100, -100, 2, -100, -100, -100]])
    w_logits, w_labels, w_mask = word_view(logits, labels)
    assert w_logits.shape == (2, 3, 3)
    assert w_labels.tolist() == [[4, 7, 0], [2, -100, -100]]
    assert w_mask.tolist() == [[True, True, True], [True, False, False]]
    assert torch.equal(w_logits[0], logits[0, [1, 3, 4]])
    assert torch.equal(w_logits[1, 0], logits[1, 2])
    with pytest.raises(ValueError, match="must agree"):
        word_view(logits, labels[:, :4])


def test_collator_pads_case_ids_and_teacher_logits(items):
    batch_items = [dict(it, teacher_logits=torch.randn(it["num_words"], 9)) for it in items[:3]]
    batch = ner.NerCollator(0)(batch_items)
    length = max(len(it["input_ids"]) for it in items[:3])
    width = max(it["num_words"] for it in items[:3])
    assert batch["input_ids"].shape == batch["case_ids"].shape == (3, length)
    assert batch["labels"].shape == (3, length)
    assert batch["teacher_logits"].shape == (3, width, 9)
    assert batch["num_words"].tolist() == [it["num_words"] for it in items[:3]]
    short = min(range(3), key=lambda i: items[i]["num_words"])
    assert batch["teacher_logits"][short, items[short]["num_words"]:].abs().sum() == 0


@pytest.mark.parametrize("name", ["bilstm", "tiny"])
def test_taggers_give_one_row_of_scores_per_subtoken(name, items):
    torch.manual_seed(0)
    kwargs = dict(hidden_size=32, num_layers=1, num_heads=2) if name == "tiny" else dict(
        embed_dim=16, hidden_size=8)
    model = build_tagger(name, 30522, 9, crf=True, labels=NER_LABELS, **kwargs)
    assert isinstance(model, CRFTagger)
    batch = ner.NerCollator(0)(items[:4])
    emissions = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "case_ids")})
    assert emissions.shape == (*batch["input_ids"].shape, 9)
    paths = model.decode(emissions, batch["labels"])
    assert [len(p) for p in paths] == [int((batch["labels"][b] != -100).sum()) for b in range(4)]
    # the IOB2 constraints: Viterbi never emits I-X after O or at the start
    for path in paths:
        tags = ["O"] + [NER_LABELS[i] for i in path]
        for prev, cur in zip(tags, tags[1:]):
            assert not cur.startswith("I-") or prev[2:] == cur[2:], tags
    loss = model.nll(emissions, batch["labels"])
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ValueError, match="unknown tagger"):
        build_tagger("gru", 10)


def test_losses_differ_by_condition_and_need_what_they_use(items):
    torch.manual_seed(0)
    plain = BiLSTMTagger(30522, 9, embed_dim=16, hidden_size=8).eval()  # no dropout noise
    withcrf = CRFTagger(BiLSTMTagger(30522, 9, embed_dim=16, hidden_size=8), 9, NER_LABELS)
    batch = ner.NerCollator(0)([dict(it, teacher_logits=torch.randn(it["num_words"], 9) * 3)
                                for it in items[:4]])
    hard = ner.make_loss("hard")(plain, batch)
    kd = ner.make_loss("kd", alpha=1.0)(plain, batch)
    assert torch.isfinite(hard) and torch.isfinite(kd) and abs(float(hard - kd)) > 1e-3
    mixed = ner.make_loss("kd", alpha=0.5)(plain, batch)
    assert float(mixed) == pytest.approx(0.5 * float(hard) + 0.5 * float(kd), rel=1e-5)
    assert torch.isfinite(ner.make_loss("kd+crf")(withcrf, batch))
    with pytest.raises(ner.ConfigError, match="needs a model with a CRF"):
        ner.make_loss("hard+crf")(plain, batch)
    with pytest.raises(ner.ConfigError, match="unknown condition"):
        ner.make_loss("crf+kd")


def test_kd_term_is_zero_when_the_student_copies_the_teacher(items):
    torch.manual_seed(0)
    model = BiLSTMTagger(30522, 9, embed_dim=16, hidden_size=8).eval()
    batch = ner.NerCollator(0)(items[:3])
    with torch.no_grad():
        w_logits, _, _ = word_view(model(**{k: batch[k] for k in ("input_ids", "case_ids")}),
                                   batch["labels"])
    batch["teacher_logits"] = w_logits.clone()
    assert float(ner.make_loss("kd", alpha=1.0)(model, batch)) == pytest.approx(0.0, abs=1e-6)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ner")
    results = ner.run("quick", teacher="minilm", students="bilstm,tiny", out_dir=out, seed=0,
                      sizes=TINY, plots=True,
                      conditions={"bilstm": ("kd+crf",), "tiny": ("kd",)},
                      log=lambda _: None)
    return out, results


def test_outputs_and_schema(tiny_run):
    out, results = tiny_run
    for name in ("results.json", "table.md", "per_type_f1.png", "errors.png", "tradeoff.png",
                 "teacher_curve.png"):
        assert (out / name).is_file(), name
    on_disk = ner.load_results(out)
    assert on_disk["schema"] == ner.SCHEMA
    assert json.loads(json.dumps(results))["students"] == on_disk["students"]
    assert on_disk["data"]["dev"] == TINY.dev and on_disk["data"]["test"] == TINY.test
    assert on_disk["data"]["student_train"] == TINY.student_train
    assert [r["name"] for r in on_disk["students"]] == ["bilstm/kd+crf", "tiny/kd"]
    keys = {"dev_f1", "test_f1", "dev", "test", "params", "trainable_params", "throughput_sps",
            "latency_ms", "train_seconds", "history", "test_predictions"}
    n_words = [len(t) for t in on_disk["test"]["tokens"]]
    for rec in [on_disk["teacher"]] + on_disk["students"]:
        assert keys <= set(rec), rec["name"]
        assert 0.0 <= rec["test_f1"] <= 100.0 and 0.0 <= rec["dev_f1"] <= 100.0
        assert rec["throughput_sps"] > 0 and rec["latency_ms"] > 0 and rec["params"] > 0
        assert [len(p) for p in rec["test_predictions"]] == n_words
        assert set(rec["test"]["errors"]) <= {"correct", "boundary", "type", "type+boundary",
                                              "spurious", "missed"}
        assert rec["test"]["repaired_tags"] >= 0
    for rec in on_disk["students"]:
        assert rec["history"]["step"][-1] <= TINY.student_max_steps
    # the CRF student decodes with IOB2 constraints: nothing to repair
    assert on_disk["students"][0]["test"]["repaired_tags"] == 0
    assert on_disk["teacher"]["params"] > on_disk["students"][1]["params"]
    assert set(on_disk["summary"]) >= {"teacher_test_f1", "bilstm", "tiny"}
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 1 + 2 + 2 and "bilstm/kd+crf" in table   # + the CI note
    # error bars from the stored test predictions: every F1 with its interval, every student
    # against the teacher (no "hard" condition trained here: vs_hard is None)
    assert on_disk["bootstrap"] == {"split": "test", "unit": "sentence", "sentences": TINY.test,
                                    **ner.BOOTSTRAP}
    for rec in [on_disk["teacher"]] + on_disk["students"]:
        low, high = rec["test_f1_ci"]
        assert low <= rec["test_f1"] <= high
        for row in rec["test"]["per_type"].values():
            assert row["f1_ci"][0] <= row["f1"] <= row["f1_ci"][1]
    for rec in on_disk["students"]:
        assert rec["vs_hard"] is None
        vs = rec["vs_teacher"]
        assert vs["baseline"] == on_disk["teacher"]["name"] and 0 < vs["p_value"] <= 1
        assert vs["difference"] == pytest.approx(rec["test_f1"] - on_disk["teacher"]["test_f1"],
                                                 abs=2e-3)
        assert vs["verdict"] in ("better", "worse", "no measurable difference")
        assert ner.format_comparison(vs) in table
    assert on_disk["summary"]["teacher_test_f1_ci"] == on_disk["teacher"]["test_f1_ci"]


def test_second_run_reuses_the_cached_teacher(tiny_run):
    out, first = tiny_run
    logs: list[str] = []
    again = ner.run("quick", teacher="minilm", students="bilstm", out_dir=out, seed=0,
                    sizes=TINY, plots=False, conditions={"bilstm": ("hard",)}, log=logs.append)
    assert any("loaded from cache" in line for line in logs)
    assert again["teacher"]["test_f1"] == first["teacher"]["test_f1"]
    assert [r["name"] for r in again["students"]] == ["bilstm/hard"]


def test_pca_condition_frozen_teacher_embeddings_and_reused_teacher(tiny_run):
    """``kd+crf+pca`` starts the BiLSTM from the teacher's table; a student-only change (more
    epochs) reuses the cached teacher; the frozen teacher's table equals the pre-trained one."""
    import dataclasses
    from ktlab.models import load_teacher
    out, first = tiny_run
    sizes = dataclasses.replace(TINY, teacher_freeze_embeddings=True,
                                student_kwargs={"bilstm": {"embed_dim": 32, "hidden_size": 16}})
    logs: list[str] = []
    frozen = ner.run("quick", teacher="minilm", students="bilstm", out_dir=out, seed=0,
                     sizes=sizes, plots=False, conditions={"bilstm": ("kd+crf+pca",)},
                     log=logs.append)
    assert not any("loaded from cache" in line for line in logs)   # teacher setting changed
    cache = sorted((out / "cache").glob("teacher-*.pt"), key=lambda p: p.stat().st_mtime)[-1]
    state = torch.load(cache, map_location="cpu", weights_only=False)["state"]
    pretrained = load_teacher("minilm", task="base").get_input_embeddings().weight
    assert torch.equal(state["bert.embeddings.word_embeddings.weight"], pretrained)
    rec = frozen["students"][0]
    assert rec["name"] == "bilstm/kd+crf+pca" and rec["test"]["repaired_tags"] == 0
    assert rec["params"] < first["students"][0]["params"]           # the 32-d student_kwargs
    logs.clear()
    longer = dataclasses.replace(sizes, student_epochs=2)
    ner.run("quick", teacher="minilm", students="bilstm", out_dir=out, seed=0, sizes=longer,
            plots=False, conditions={"bilstm": ("hard",)}, log=logs.append)
    assert any("loaded from cache" in line for line in logs)


def test_profile_sizes_and_conditions():
    assert ner.PROFILE_SIZES["quick"].kwargs_for("bilstm")["embed_dim"] == 128
    assert ner.PROFILE_SIZES["bench"].kwargs_for("bilstm") == ner.STUDENT_KWARGS["bilstm"]
    for conds in [ner.CONDITIONS, *ner.PROFILE_CONDITIONS.values()]:
        assert set(c for cs in conds.values() for c in cs) <= set(ner.ALL_CONDITIONS)
        assert not any(c.endswith("+pca") for c in conds.get("tiny", ()))


def test_bad_input_errors_clearly(tmp_path, capsys):
    with pytest.raises(ner.ConfigError, match="has no nn.Embedding.*--students bilstm"):
        ner.run("quick", students="tiny", out_dir=tmp_path, conditions={"tiny": ("kd+crf+pca",)})
    with pytest.raises(ner.ConfigError, match=r"unknown student\(s\) 'cnn'.*bilstm, tiny"):
        ner.run("quick", students="bilstm,cnn", out_dir=tmp_path)
    with pytest.raises(ner.ConfigError, match="unknown condition"):
        ner.run("quick", students="bilstm", out_dir=tmp_path, conditions={"bilstm": ("aug",)})
    with pytest.raises(ner.ConfigError, match="unknown profile"):
        ner.run("huge", out_dir=tmp_path)
    from ktlab.cli import main
    assert main(["run", "ner", "--students", "lstm", "--out", str(tmp_path)]) == 2
    assert "unknown student(s) 'lstm'" in capsys.readouterr().err
    assert main(["run", "ner", "--conditions", "hard,crf", "--out", str(tmp_path)]) == 2
    assert "unknown condition(s) 'crf'" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()
    with pytest.raises(FileNotFoundError, match="ktlab run ner"):
        ner.load_results(tmp_path)


def test_cli_registers_ner():
    import argparse
    parser = argparse.ArgumentParser()
    exp_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "ner", "--profile", "bench", "--students", "bilstm",
                              "--conditions", "hard,kd+crf"])
    assert args.profile == "bench" and args.students == "bilstm" and args.func is not None
    assert "ner" in [e.name for e in exp_cli.EXPERIMENTS]
    assert ner.DEFAULT_TEACHER["full"] == "bert-base-cased"


def test_summary_and_highlight_from_hand_made_records():
    rec = dict(params=10, trainable_params=10, latency_ms=1.0, train_seconds=1.0,
               test={"repaired_tags": 0})
    results = {"students_requested": ["bilstm"], "teacher_name": "minilm", "profile": "quick",
               "teacher": {**rec, "name": "teacher", "student": "teacher", "dev_f1": 90.0,
                           "test_f1": 80.0, "throughput_sps": 100.0, "params": 40},
               "students": [{**rec, "name": "bilstm/hard", "student": "bilstm",
                             "condition": "hard", "dev_f1": 70.0, "test_f1": 60.0,
                             "throughput_sps": 1000.0},
                            {**rec, "name": "bilstm/kd", "student": "bilstm", "condition": "kd",
                             "dev_f1": 75.0, "test_f1": 72.0, "throughput_sps": 1500.0}]}
    s = ner.summarise(results)["bilstm"]
    assert s["best"] == "bilstm/kd" and s["gain_over_hard_points"] == pytest.approx(12.0)
    assert s["share_of_teacher"] == pytest.approx(0.9) and s["speedup_vs_teacher"] == 15.0
    assert "| bilstm/kd | 75.0 | 72.0 | — | — | 90.0 |" in ner.markdown_table(results)
    assert "Intervals" not in ner.markdown_table(results)     # no predictions, no intervals
    assert ner.add_intervals(results) is results and "bootstrap" not in results
    html = ner.highlight_html(["John", "lives", "in", "New", "York"],
                              ["B-PER", "O", "O", "B-LOC", "I-LOC"],
                              ["B-PER", "O", "O", "B-ORG", "O"])
    assert html.count("#2a9d2a") == 1 and html.count("#d62828") == 1   # one right, one wrong
    assert "<sub" in html and "title=\"gold LOC\"" in html


def test_an_unreachable_teacher_is_a_clear_cli_error(tmp_path, capsys):
    from ktlab.cli import main
    missing = tmp_path / "no-such-teacher"
    missing.mkdir()   # a folder without config.json: refused before any data is read
    assert main(["run", "ner", "--teacher", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert "not a Hugging Face model folder" in capsys.readouterr().err


def test_cli_threads_reach_torch(monkeypatch, tmp_path):
    """``ktlab run ner --threads 1`` must set torch's thread count before the run starts."""
    from ktlab.cli import main
    seen = {}
    monkeypatch.setattr(ner, "run", lambda **kw: seen.setdefault("threads", torch.get_num_threads()))
    before = torch.get_num_threads()
    try:
        assert main(["run", "ner", "--threads", "1", "--out", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(before)
    assert seen["threads"] == 1


def _hand_made_results(gold_tags: list, preds: dict) -> dict:
    """A ``ktlab.ner/1`` results dict around real CoNLL-2003 sentences and given predictions."""
    from ktlab.tagging import ner_scores
    ids = lambda rows: [[NER_LABELS.index(t) for t in s] for s in rows]   # noqa: E731
    recs = []
    for name, pred in preds.items():
        student, _, condition = name.partition("/")
        score = ner_scores(gold_tags, pred)
        recs.append({"name": name, "student": student, "condition": condition or "fine-tuned",
                     "dev_f1": score["f1"], "test_f1": round(score["f1"], 3),
                     "test": {"repaired_tags": 0, "per_type": score["per_type"], "errors": {}},
                     "params": 10, "throughput_sps": 100.0, "latency_ms": 1.0,
                     "train_seconds": 1.0, "test_predictions": ids(pred)})
    return {"schema": "ktlab.ner/1", "labels": NER_LABELS, "profile": "bench",
            "teacher_name": "minilm", "students_requested": ["bilstm"], "teacher": recs[0],
            "students": recs[1:], "test": {"gold": ids(gold_tags)}}


def test_intervals_and_migration_from_stored_predictions(data_dir, tmp_path):
    """Schema 1 results are upgraded from their test predictions alone: a copy of the gold tags
    is "better" than a tagger that loses the first word of many entities; two conditions with
    the same predictions show "no measurable difference"."""
    gold = [list(t) for t in load_conll("test", data_dir)["ner_tags"][:300]]
    dropped = [["O" if i % 3 == 0 and t.startswith("B-") else t for i, t in enumerate(s)]
               for s in gold]
    old = _hand_made_results(gold, {"teacher (minilm)": gold, "bilstm/hard": dropped,
                                    "bilstm/kd": dropped, "bilstm/kd+crf": gold})
    path = tmp_path / "results.json"
    path.write_text(json.dumps(old))
    new = ner.load_results(tmp_path)
    assert new["schema"] == ner.SCHEMA == "ktlab.ner/2"
    hard, kd, crf = new["students"]
    assert hard["vs_hard"] is None and hard["vs_teacher"]["verdict"] == "worse"
    assert kd["vs_hard"]["verdict"] == "no measurable difference"
    assert (kd["vs_hard"]["difference"], kd["vs_hard"]["p_value"]) == (0.0, 1.0)
    assert crf["vs_hard"]["verdict"] == "better" and crf["vs_hard"]["low"] > 0
    assert crf["vs_teacher"] == {"baseline": "teacher (minilm)", "verdict": "no measurable "
                                 "difference", "difference": 0.0, "low": 0.0, "high": 0.0,
                                 "p_value": 1.0}
    assert new["teacher"]["test_f1_ci"] == [100.0, 100.0]
    s = new["summary"]["bilstm"]
    assert s["best"] == "bilstm/kd+crf" and s["best_vs_hard"] == crf["vs_hard"]
    assert s["best_test_f1_ci"] == crf["test_f1_ci"]
    table = ner.markdown_table(new)
    assert ner.format_comparison(crf["vs_hard"]) in table and "better" in table
    assert "over the 300 test sentences (1,000 resamples, seed 0)" in table
    assert ner.migrate_results(new) is new      # already current: unchanged
    ner.upgrade_results_dir(tmp_path)
    assert json.loads(path.read_text())["schema"] == ner.SCHEMA
    assert (tmp_path / "table.md").read_text() == table + "\n"
    assert (tmp_path / "tradeoff.png").is_file() and (tmp_path / "per_type_f1.png").is_file()
    path.write_text(json.dumps({"schema": "ktlab.ner/0"}))
    with pytest.raises(ValueError, match="expected 'ktlab.ner/2' \\(or 'ktlab.ner/1'\\)"):
        ner.load_results(tmp_path)
