"""The sentiment pipeline (the SST-2 preset of ``classify``) end to end on a few dozen real SST-2
sentences, one or two optimiser steps per model; and the reporting on a hand-made result."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from ktlab.experiments import classify, sentiment
from ktlab.experiments import cli as exp_cli

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: The unit-test sizes, smaller still; no mid-run checkpoints (tests/test_resume.py covers them).
TINY = dataclasses.replace(classify.PROFILE_SIZES["tiny"], teacher_train=32, student_train=32,
                           dev=16, speed_sentences=16, save_every=100)
CONDITIONS = {"bilstm": ("hard", "hard+pca", "kd+aug+pca"), "tiny": ("init+kd+aug",)}
NAMES = ["bilstm/hard", "bilstm/hard+pca", "bilstm/kd+aug+pca", "tiny/init+kd+aug"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One run with two students; returns its folder, the returned results, ``results.json`` as
    written by this run (a later test reruns into the same folder) and the callback events."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("sentiment")
    events: list[tuple[str, int]] = []
    try:
        results = sentiment.run("quick", teacher="minilm", students="bilstm,tiny", out_dir=out,
                                seed=0, sizes=TINY, plots=True, conditions=CONDITIONS,
                                callbacks=[lambda stage, step: events.append((stage, step))],
                                log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return out, results, json.loads((out / "results.json").read_text()), events


def test_outputs_and_schema(tiny_run):
    out, results, on_disk, _ = tiny_run
    for name in ("results.json", "table.md", "tradeoff.png", "teacher_curve.png"):
        assert (out / name).is_file(), name
    assert sentiment.load_results(out)["schema"] == sentiment.SCHEMA == classify.SCHEMA
    assert on_disk["complete"] is True and on_disk["capped"] is None
    assert on_disk["task"] == "sst2" and on_disk["label_names"] == ["0", "1"]
    assert on_disk["profile"] == "quick" and on_disk["teacher_pooling"] == "mean"
    assert on_disk["sizes"] == json.loads(json.dumps(dataclasses.asdict(TINY)))
    assert json.loads(json.dumps(results, default=str))["students"] == on_disk["students"]
    assert on_disk["data"]["dev"] == TINY.dev
    assert on_disk["data"]["student_train"] == TINY.student_train
    assert on_disk["data"]["teacher_train"] == TINY.teacher_train
    assert on_disk["data"]["transfer_augmented"] > 0
    assert [r["name"] for r in on_disk["students"]] == NAMES

    keys = {"dev_accuracy", "dev_accuracy_ci95", "params", "trainable_params", "throughput_sps",
            "latency_ms", "latency_p90_ms", "train_seconds", "history", "dev_predictions",
            "speed_at_train"}
    for rec in [on_disk["teacher"]] + on_disk["students"]:
        assert keys <= set(rec), rec["name"]
        low, high = rec["dev_accuracy_ci95"]
        assert 0.0 <= low <= rec["dev_accuracy"] <= high <= 1.0, rec["name"]
        assert rec["throughput_sps"] > 0 and rec["latency_ms"] > 0 and rec["params"] > 0
        assert len(rec["dev_predictions"]) == TINY.dev
        assert set(rec["dev_predictions"]) <= {0, 1}
        hits = sum(p == y for p, y in zip(rec["dev_predictions"], on_disk["dev"]["labels"]))
        assert rec["dev_accuracy"] == pytest.approx(hits / TINY.dev, abs=1e-5), rec["name"]
    assert on_disk["teacher"]["history"]["step"][-1] == TINY.teacher_max_steps
    for rec in on_disk["students"]:
        assert 0.0 <= rec["agreement_with_teacher"] <= 1.0
        assert rec["history"]["step"][-1] == TINY.student_max_steps
    # hard+pca: the teacher's table, frozen, without distillation
    by_name = {r["name"]: r for r in on_disk["students"]}
    assert by_name["bilstm/hard+pca"]["trainable_params"] < by_name["bilstm/hard"][
        "trainable_params"] == by_name["bilstm/hard"]["params"]
    assert on_disk["conditions"]["hard+pca"] == dataclasses.asdict(classify.CONDITIONS["hard+pca"])
    # the teacher-initialised tiny student has the teacher's width and half of its layers
    assert by_name["tiny/init+kd+aug"]["params"] < on_disk["teacher"]["params"]

    probs = on_disk["dev"]["teacher_probs"]
    assert len(probs) == len(on_disk["dev"]["labels"]) == len(on_disk["dev"]["idx"]) == TINY.dev
    assert all(len(row) == 2 and sum(row) == pytest.approx(1.0, abs=1e-3) for row in probs)
    assert [max(range(2), key=row.__getitem__) for row in probs] == \
        on_disk["teacher"]["dev_predictions"]

    summary = on_disk["summary"]
    assert set(summary) == {"teacher_dev_accuracy", "bilstm", "tiny"}
    bilstm = summary["bilstm"]
    assert set(bilstm["gain_over_hard"]) == {"points", "p_value", "verdict"}
    assert bilstm["gain_over_hard_points"] == bilstm["gain_over_hard"]["points"]
    assert set(bilstm["effects_vs_hard"]) == {"hard+pca", "kd+aug+pca"}
    assert "gain_over_hard" not in summary["tiny"]       # the tiny student ran no "hard"
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 1 + len(NAMES) and "bilstm/kd+aug+pca" in table


def test_callbacks_see_every_step_of_every_stage(tiny_run):
    *_, events = tiny_run
    stages = list(dict.fromkeys(stage for stage, _ in events))
    assert stages == ["teacher", "logits", *NAMES]
    for stage in stages:
        steps = [step for s, step in events if s == stage]
        assert steps == list(range(1, len(steps) + 1)), stage
    assert [s for s, _ in events].count("teacher") == TINY.teacher_max_steps
    assert all([s for s, _ in events].count(name) == TINY.student_max_steps for name in NAMES)


def test_second_run_reuses_the_cached_teacher(tiny_run):
    out, first, _, _ = tiny_run
    work = out / "cache" / first["cache_key"]
    stamps = {p: p.stat().st_mtime_ns for p in (work / "teacher" / "model.pt", work / "logits.pt")}
    events: list[tuple[str, int]] = []
    again = sentiment.run("quick", teacher="minilm", students="cnn", out_dir=out, seed=0,
                          sizes=TINY, plots=False, conditions={"cnn": ("kd",)},
                          callbacks=[lambda stage, step: events.append((stage, step))],
                          log=lambda _: None)
    # neither the teacher nor its logits were recomputed: only the new student trained
    assert {stage for stage, _ in events} == {"cnn/kd"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert again["cache_key"] == first["cache_key"]
    assert again["teacher"]["dev_accuracy"] == first["teacher"]["dev_accuracy"]
    assert again["teacher"]["dev_predictions"] == first["teacher"]["dev_predictions"]
    assert again["dev"]["teacher_probs"] == first["dev"]["teacher_probs"]
    assert [r["name"] for r in again["students"]] == ["cnn/kd"]
    on_disk = sentiment.load_results(out)
    assert on_disk["complete"] is True and on_disk["students_requested"] == ["cnn"]


def test_bad_student_and_condition_names_error_clearly(tmp_path, capsys):
    with pytest.raises(sentiment.ConfigError, match=r"unknown student\(s\) 'gru'.*bilstm, cnn"):
        sentiment.run("quick", students="bilstm,gru", out_dir=tmp_path)
    with pytest.raises(sentiment.ConfigError, match="unknown condition"):
        sentiment.run("quick", students="bilstm", out_dir=tmp_path,
                      conditions={"bilstm": ("init+kd+aug",)})
    with pytest.raises(sentiment.ConfigError, match="unknown condition"):
        sentiment.run("quick", students="tiny", out_dir=tmp_path,
                      conditions={"tiny": ("hard+pca",)})   # tiny has no table to PCA-initialise
    from ktlab.cli import main
    assert main(["run", "sentiment", "--students", "lstm", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ktlab run sentiment: error: unknown student(s) 'lstm'" in err
    assert not (tmp_path / "results.json").exists() and not (tmp_path / "cache").exists()


def test_cli_registers_sentiment_and_classify_with_profiles():
    import argparse
    parser = argparse.ArgumentParser()
    exp_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "sentiment", "--profile", "bench", "--students", "cnn"])
    assert args.profile == "bench" and args.students == "cnn" and args.func is not None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "sentiment", "--profile", "huge"])
    args = parser.parse_args(["run", "classify", "--train", "a.tsv", "--dev", "b.jsonl",
                              "--label-column", "entity", "--max-steps", "3"])
    assert (args.train, args.dev, args.label_column, args.text_column, args.encoding,
            args.max_steps) == ("a.tsv", "b.jsonl", "entity", None, "utf-8", 3)
    assert [e.name for e in exp_cli.EXPERIMENTS][:2] == ["sentiment", "classify"]


# ----------------------------------------------------------------------------- reporting

def _predictions(right: int, n: int, labels: list[int]) -> list[int]:
    """Right on the first ``right`` examples, wrong on the rest."""
    return [y if i < right else 1 - y for i, y in enumerate(labels[:n])]


def test_summary_and_table_from_a_hand_made_result():
    """The headline numbers are computed from the records, not copied: check the arithmetic and
    the paired tests (every model is right on a prefix of the dev set, so the disagreements are
    one-sided and McNemar's p-value is 2 * 0.5 ** k)."""
    labels = [i % 2 for i in range(100)]
    rec = dict(params=10, trainable_params=10, latency_ms=1.0, train_seconds=1.0)

    def model(name, right, throughput, **extra):
        student, _, condition = name.partition("/")
        return {**rec, "name": name, "student": student, "condition": condition or "teacher",
                "dev_accuracy": right / 100, "dev_accuracy_ci95": [(right - 9) / 100,
                                                                   (right + 6) / 100],
                "throughput_sps": throughput, "dev_predictions": _predictions(right, 100, labels),
                **extra}

    results = {"students_requested": ["bilstm", "cnn"], "teacher_name": "minilm",
               "profile": "quick", "task": "sst2", "label_names": ["0", "1"],
               "dev": {"labels": labels, "teacher_probs": [[0.5, 0.5]] * 100},
               "teacher": model("teacher", 90, 100.0, params=40, student="teacher"),
               "students": [model("bilstm/hard", 80, 1000.0),
                            model("bilstm/hard+pca", 81, 1000.0),
                            model("bilstm/kd", 87, 1500.0)]}
    summary = sentiment.summarise(results)
    assert set(summary) == {"teacher_dev_accuracy", "bilstm"}   # cnn requested, none ran
    bilstm = summary["bilstm"]
    assert bilstm["best"] == "bilstm/kd" and bilstm["best_dev_accuracy"] == 0.87
    assert bilstm["gain_over_hard"] == {"points": 7.0, "p_value": 0.01562,
                                        "verdict": "better"}
    assert bilstm["gain_over_hard_points"] == pytest.approx(7.0)
    assert bilstm["effects_vs_hard"] == {
        "hard+pca": {"points": 1.0, "p_value": 1.0, "verdict": "no measurable difference"},
        "kd": bilstm["gain_over_hard"]}
    assert bilstm["vs_teacher"] == {"points": -3.0, "p_value": 0.25,
                                    "verdict": "no measurable difference"}
    assert bilstm["share_of_teacher"] == pytest.approx(0.9667, abs=1e-4)
    assert bilstm["speedup_vs_teacher"] == pytest.approx(15.0)
    assert bilstm["latency_ratio_vs_teacher"] == pytest.approx(1.0)
    assert bilstm["params_ratio"] == pytest.approx(4.0)

    table = sentiment.markdown_table(results)
    lines = table.split("\n")
    assert len(lines) == 2 + 1 + 3
    assert lines[2].startswith("| teacher | 90.0 (81.0-96.0) | 100.0 | 0.00 | 100 | 1.0 |")
    assert "| bilstm/kd | 87.0 (78.0-93.0) | 96.7 | 0.00 | 1500 | 15.0 | 1.00 | 1 |" in table
    # a record without an interval (an older results.json) still gets its row
    del results["students"][0]["dev_accuracy_ci95"]
    assert "| bilstm/hard | 80.0 | 88.9 |" in sentiment.markdown_table(results)
