"""The deploy and explain experiments end to end on a capped quick run (tiny budgets: the
numbers are not meaningful, the stages, the files they write and the checks they make are)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from ktlab.experiments import deploy, explain, serving

pytestmark = pytest.mark.usefixtures("data_dir")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("serving") / "models"
    serving.train_or_load("quick", folder, max_examples=48, max_steps=2, log=lambda s: None)
    return folder


def test_serving_models_reload_from_the_cache(models_dir):
    models = serving.load(models_dir)
    assert set(models.students) == set(serving.CONDITIONS)
    assert models.best_student in models.students
    assert len(models.dev_sentences) == len(models.dev_labels) == 48
    assert models.max_length == 64 and models.label_names == ["0", "1"]


def test_serving_load_names_a_missing_cache(tmp_path, models_dir):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(models_dir, copy)
    for f in copy.glob("cache/*/teacher/model.pt"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match="rerun the training stage"):
        serving.load(copy)


def test_deploy_run_writes_every_variant_and_goal(tmp_path, models_dir):
    res = deploy.run("quick", tmp_path / "deploy", models_dir=models_dir, max_examples=24,
                     max_steps=2, log=lambda s: None)
    assert {(r["model"], r["variant"]) for r in res["variants"]} == {
        (m, v) for m in ("teacher", res["student"]) for v in deploy.VARIANTS}
    for p in res["parity"].values():
        assert p["max_abs_logit_difference"] <= 1e-4 and p["within_1e-4"]
    for r in res["variants"]:
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["agreement"] <= 1
        assert r["latency_model"]["p50_ms"] <= r["latency_model"]["p95_ms"]
        assert r["throughput_sps"] > 0 and r["peak_rss_mb"] > 50 and r["weight_bytes"] > 0
    fp32 = {r["model"]: r for r in res["variants"] if r["variant"] == "torch-fp32"}
    int8 = {r["model"]: r for r in res["variants"] if r["variant"] == "torch-int8"}
    assert int8["teacher"]["weight_bytes"] < 0.8 * fp32["teacher"]["weight_bytes"]
    assert set(res["goals"]) == {"student_int8_accuracy", "student_onnx_int8_vs_teacher",
                                 "teacher_int8_latency_gain"}
    assert all(isinstance(g["met"], bool) for g in res["goals"].values())
    saved = deploy.load_results(tmp_path / "deploy")
    assert saved["schema"] == deploy.SCHEMA and (tmp_path / "deploy" / "table.md").is_file()


def test_explain_run_measures_reasons_deletion_and_robustness(tmp_path, models_dir):
    res = explain.run("quick", tmp_path / "explain", models_dir=models_dir, max_examples=24,
                      max_steps=2, log=lambda s: None)
    assert {"bilstm/kd", "bilstm/hard", "kd_minus_hard"} <= set(res["reasons"])
    for name in ("bilstm/kd", "bilstm/hard"):
        rho = res["reasons"][name]["mean_spearman"]
        assert rho != rho or -1 <= rho <= 1           # nan allowed when no sentence agrees
    assert set(res["deletion"]) >= {"teacher", "bilstm/kd"}
    models = set(res["robustness"])
    assert {"teacher", "bilstm/kd", "bilstm/kd+fgm", res["fgm"]["fgm_teacher"]} <= models
    for row in res["robustness"].values():
        assert set(row) == {"clean", "typo", "swap", "drop"}
        for kind in ("typo", "swap", "drop"):
            assert row[kind]["drop_points"] == pytest.approx(
                100 * (row["clean"]["accuracy"] - row[kind]["accuracy"]), abs=0.05)
    assert set(res["fgm"]["teacher"]) == {"typo", "swap", "drop"}
    assert res["lime"]["teacher"]["lime_words"] and res["lime"]["teacher"]["ig_words"]


def test_run_lists_deploy_and_explain():
    done = subprocess.run([sys.executable, "-m", "ktlab.cli", "run", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "deploy" in done.stdout and "explain" in done.stdout
