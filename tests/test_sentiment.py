"""The sentiment pipeline end to end on a few dozen real SST-2 sentences (1-2 steps per model)."""
from __future__ import annotations

import json

import pytest

from ktlab.experiments import cli as exp_cli
from ktlab.experiments import sentiment

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = sentiment.PROFILE_SIZES["tiny"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment")
    results = sentiment.run("quick", teacher="minilm", students="bilstm,tiny", out_dir=out,
                            seed=0, sizes=TINY, plots=True,
                            conditions={"bilstm": ("hard", "kd+aug+pca"),
                                        "tiny": ("init+kd+aug",)},
                            log=lambda _: None)
    return out, results


def test_outputs_and_schema(tiny_run):
    out, results = tiny_run
    for name in ("results.json", "table.md", "tradeoff.png", "teacher_curve.png"):
        assert (out / name).is_file(), name
    on_disk = sentiment.load_results(out)
    assert on_disk["schema"] == sentiment.SCHEMA
    assert json.loads(json.dumps(results, default=str))["students"] == on_disk["students"]
    assert on_disk["data"]["dev"] == TINY.dev and on_disk["data"]["student_train"] == 48
    assert on_disk["data"]["transfer_augmented"] > 0
    names = [r["name"] for r in on_disk["students"]]
    assert names == ["bilstm/hard", "bilstm/kd+aug+pca", "tiny/init+kd+aug"]
    keys = {"dev_accuracy", "params", "trainable_params", "throughput_sps", "latency_ms",
            "train_seconds", "history", "dev_predictions"}
    for rec in [on_disk["teacher"]] + on_disk["students"]:
        assert keys <= set(rec), rec["name"]
        assert 0.0 <= rec["dev_accuracy"] <= 1.0
        assert rec["throughput_sps"] > 0 and rec["latency_ms"] > 0 and rec["params"] > 0
        assert len(rec["dev_predictions"]) == TINY.dev
    for rec in on_disk["students"]:
        assert 0.0 <= rec["agreement_with_teacher"] <= 1.0
        assert rec["history"]["step"][-1] <= TINY.student_max_steps
    # the teacher-initialised tiny student has the teacher's width and half-ish of its layers
    assert on_disk["students"][2]["params"] < on_disk["teacher"]["params"]
    assert len(on_disk["dev"]["teacher_probs"]) == TINY.dev
    assert set(on_disk["summary"]) >= {"teacher_dev_accuracy", "bilstm", "tiny"}
    table = (out / "table.md").read_text()
    assert table.count("\n") == 2 + 1 + 3 and "bilstm/kd+aug+pca" in table


def test_second_run_reuses_the_cached_teacher(tiny_run):
    out, first = tiny_run
    logs: list[str] = []
    again = sentiment.run("quick", teacher="minilm", students="cnn", out_dir=out, seed=0,
                          sizes=TINY, plots=False, conditions={"cnn": ("kd",)}, log=logs.append)
    assert any("loaded from cache" in line for line in logs)
    assert again["teacher"]["dev_accuracy"] == first["teacher"]["dev_accuracy"]
    assert [r["name"] for r in again["students"]] == ["cnn/kd"]


def test_bad_student_names_error_clearly(tmp_path, capsys):
    with pytest.raises(sentiment.ConfigError, match=r"unknown student\(s\) 'gru'.*bilstm, cnn"):
        sentiment.run("quick", students="bilstm,gru", out_dir=tmp_path)
    with pytest.raises(sentiment.ConfigError, match="unknown condition"):
        sentiment.run("quick", students="bilstm", out_dir=tmp_path,
                      conditions={"bilstm": ("init+kd+aug",)})
    from ktlab.cli import main
    assert main(["run", "sentiment", "--students", "lstm", "--out", str(tmp_path)]) == 2
    assert "unknown student(s) 'lstm'" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_cli_registers_sentiment_with_profiles():
    import argparse
    parser = argparse.ArgumentParser()
    exp_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["run", "sentiment", "--profile", "bench", "--students", "cnn"])
    assert args.profile == "bench" and args.students == "cnn" and args.func is not None
    with pytest.raises(SystemExit):
        parser.parse_args(["run", "sentiment", "--profile", "huge"])
    assert [e.name for e in exp_cli.EXPERIMENTS][0] == "sentiment"


def test_summary_and_table_from_a_hand_made_result():
    """The headline numbers are computed from the records, not copied: check the arithmetic."""
    rec = dict(params=10, trainable_params=10, latency_ms=1.0, train_seconds=1.0)
    results = {"students_requested": ["bilstm"], "teacher_name": "minilm", "profile": "quick",
               "teacher": {**rec, "name": "teacher", "student": "teacher", "dev_accuracy": 0.9,
                           "throughput_sps": 100.0, "params": 40},
               "students": [{**rec, "name": "bilstm/hard", "student": "bilstm",
                             "condition": "hard", "dev_accuracy": 0.8, "throughput_sps": 1000.0},
                            {**rec, "name": "bilstm/kd", "student": "bilstm", "condition": "kd",
                             "dev_accuracy": 0.87, "throughput_sps": 1500.0}]}
    summary = sentiment.summarise(results)["bilstm"]
    assert summary["best"] == "bilstm/kd"
    assert summary["gain_over_hard_points"] == pytest.approx(7.0)
    assert summary["share_of_teacher"] == pytest.approx(0.9667, abs=1e-4)
    assert summary["speedup_vs_teacher"] == pytest.approx(15.0)
    assert summary["params_ratio"] == pytest.approx(4.0)
    assert "| bilstm/kd | 87.0 | 96.7 |" in sentiment.markdown_table(results)
