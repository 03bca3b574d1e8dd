"""ktlab.deploy on tiny models: ONNX equals PyTorch, int8 shrinks, bundles round-trip and refuse
bad folders with a fix, the runtime needs no torch, measuring in a subprocess, and the CLI."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from transformers import BertModel

from ktlab.cli import main
from ktlab.deploy import measure
from ktlab.deploy.bundle import BUNDLE_FORMAT, BundleError, export_bundle
from ktlab.deploy.onnx_export import export_onnx, onnx_session
from ktlab.deploy.quantize import int8_size_estimate, quantize_int8, state_bytes
from ktlab.deploy.runtime import Predictor
from ktlab.nn.students import BiLSTMClassifier, MeanPoolClassifier
from tiny_models import VOCAB, tiny_config

TEXTS = ["a fine , moving film", "dull",
         "the plot is thin , the pacing slow , but the actors carry it along nicely to the end",
         "not good at all"]


def _logits(model: nn.Module, ids, mask) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask))
    return (out if isinstance(out, torch.Tensor) else out.logits).numpy()


def tiny_teacher(vocab: int = VOCAB, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    config = tiny_config()
    config.vocab_size = vocab
    return MeanPoolClassifier(BertModel(config), 2).eval()


def tiny_bilstm(vocab: int = VOCAB, pooling: str = "max", seed: int = 0,
                width: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return BiLSTMClassifier(vocab, 2, embed_dim=2 * width, hidden_size=width,
                            mlp_size=width + 4, pooling=pooling).eval()


def padded_batch(rows: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ids, random lengths (one row full), padding id 0 after each row's end."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (rows, length), dtype=np.int64)
    lengths = rng.integers(1, length + 1, rows)
    lengths[rng.integers(rows)] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    return ids * mask, mask


# ----------------------------------------------------------------------------- ONNX parity

@pytest.mark.parametrize("make", [tiny_teacher, tiny_bilstm, lambda: tiny_bilstm(pooling="last")],
                         ids=["teacher", "bilstm-max", "bilstm-last"])
def test_onnx_equals_torch_on_padded_batches(make, tmp_path):
    model = make()
    session = onnx_session(export_onnx(model, tmp_path / "m.onnx"), threads=1)
    for rows, length, seed in ((1, 3, 0), (4, 11, 1), (7, 30, 2), (2, 1, 3)):
        ids, mask = padded_batch(rows, length, seed)
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert got.shape == (rows, 2)
        assert np.abs(got - _logits(model, ids, mask)).max() <= 1e-4


# ----------------------------------------------------------------------------- int8

@pytest.mark.parametrize("make", [tiny_teacher, lambda: tiny_bilstm(width=32)],
                         ids=["teacher", "bilstm"])
def test_int8_shrinks_the_weights_and_keeps_the_predictions(make):
    model = make()
    int8 = quantize_int8(model)
    assert state_bytes(int8) < 0.8 * state_bytes(model)
    assert any(type(m) is nn.Linear for m in model.modules())       # the original is untouched
    ids, mask = padded_batch(64, 12, seed=5)
    fp32, q = _logits(model, ids, mask), _logits(int8, ids, mask)
    assert np.abs(fp32 - q).max() < 0.1
    assert (fp32.argmax(-1) == q.argmax(-1)).mean() >= 0.9


def test_int8_size_estimate_arithmetic():
    est = int8_size_estimate(nn.Linear(10, 4))
    assert est == {"fp32_bytes": 4 * 44, "int8_bytes": 40 + 16 + 4 * 4, "ratio": 176 / 72,
                   "quantised_params": 40, "kept_fp32_params": 4}
    with torch.device("meta"):                              # shapes only: no memory needed
        model = nn.Sequential(nn.Embedding(50, 8), nn.LSTM(8, 4), nn.Linear(4, 2))
    est = int8_size_estimate(model)
    lstm_w, lstm_b = 16 * 8 + 16 * 4, 2 * 16
    assert est["quantised_params"] == lstm_w + 8
    assert est["kept_fp32_params"] == 400 + lstm_b + 2
    assert est["int8_bytes"] == lstm_w + 8 + 3 * 16 + 4 * (400 + lstm_b + 2)


# ----------------------------------------------------------------------------- bundles

@pytest.fixture(scope="module")
def served(tokenizer, tmp_path_factory):
    """A tiny teacher and BiLSTM over the real MiniLM vocabulary, each exported as a bundle."""
    folder = tmp_path_factory.mktemp("bundles")
    models = {"teacher": tiny_teacher(len(tokenizer)), "bilstm": tiny_bilstm(len(tokenizer))}
    bundles = {name: export_bundle(m, tokenizer, ["neg", "pos"], folder / name, max_length=16,
                                   source={"model": name})
               for name, m in models.items()}
    return models, bundles


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("name", ["teacher", "bilstm"])
def test_bundle_round_trip_gives_the_torch_probabilities(served, tokenizer, name):
    models, bundles = served
    folder = bundles[name]
    assert sorted(p.name for p in folder.iterdir()) == [
        "labels.json", "manifest.json", "model.onnx", "tokenizer.json"]
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == BUNDLE_FORMAT and manifest["max_length"] == 16
    assert manifest["model"] == {"file": "model.onnx", "int8": False, "opset": 17,
                                 "inputs": ["input_ids", "attention_mask"], "outputs": ["logits"]}
    assert set(manifest["files"]) == {"model.onnx", "tokenizer.json", "labels.json"}
    assert manifest["source"] == {"model": name} and manifest["labels"] == ["neg", "pos"]
    predictor = Predictor.load(folder, threads=1)
    rows = predictor.predict(TEXTS)
    enc = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="np")
    ref = _softmax(_logits(models[name], enc["input_ids"], enc["attention_mask"]))
    for row, p in zip(rows, ref):
        assert set(row) == {"text", "label", "label_id", "probs", "tokens", "truncated"}
        assert [row["probs"]["neg"], row["probs"]["pos"]] == pytest.approx(p.tolist(), abs=1e-5)
        assert row["label"] == ["neg", "pos"][row["label_id"]] and row["tokens"][0] == "[CLS]"
    assert [r["truncated"] for r in rows] == [False, False, True, False]
    assert len(rows[2]["tokens"]) == 16 and rows[2]["tokens"][-1] == "[SEP]"


def test_int8_bundle_is_smaller_and_agrees(served, tokenizer, tmp_path):
    models, bundles = served
    folder = export_bundle(models["teacher"], tokenizer, ["neg", "pos"], tmp_path / "t8",
                           max_length=16, int8=True)
    assert json.loads((folder / "manifest.json").read_text())["model"]["int8"] is True
    assert not (folder / "model-fp32.onnx").exists()
    size = (folder / "model.onnx").stat().st_size
    assert size < (bundles["teacher"] / "model.onnx").stat().st_size
    fp32 = [r["label"] for r in Predictor.load(bundles["teacher"]).predict(TEXTS)]
    int8 = [r["label"] for r in Predictor.load(folder).predict(TEXTS)]
    assert np.mean([a == b for a, b in zip(fp32, int8)]) >= 0.75


def test_export_refuses_a_folder_that_is_not_a_bundle(served, tokenizer, tmp_path):
    models, _ = served
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match="not a ktlab bundle"):
        export_bundle(models["bilstm"], tokenizer, ["neg", "pos"], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    again = export_bundle(models["bilstm"], tokenizer, ["neg", "pos"], tmp_path / "b")
    export_bundle(models["bilstm"], tokenizer, ["neg", "pos"], again)     # a bundle: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "notes.txt"]  # no temp folder left


def _copy(bundle: Path, tmp_path: Path) -> Path:
    import shutil
    return Path(shutil.copytree(bundle, tmp_path / "copy"))


def _edit_manifest(folder: Path, **changes) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_bad_bundles_are_refused_with_the_fix(served, tmp_path):
    from ktlab.deploy.bundle import sha256_of
    bundle = served[1]["bilstm"]
    with pytest.raises(BundleError, match="no bundle folder.*ktlab export"):
        Predictor.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json.*ktlab export"):
        Predictor.load(tmp_path / "empty")
    folder = _copy(bundle, tmp_path)
    _edit_manifest(folder, format="other.bundle/9")
    with pytest.raises(BundleError, match="'other.bundle/9'.*ktlab.bundle/1"):
        Predictor.load(folder)
    _edit_manifest(folder, format=BUNDLE_FORMAT, ktlab_version="9.9.0")
    with pytest.raises(BundleError, match="exported by ktlab 9.9.0.*install ktlab==9.9.0"):
        Predictor.load(folder)
    _edit_manifest(folder, ktlab_version=json.loads((bundle / "manifest.json").read_text())
                   ["ktlab_version"])
    Predictor.load(folder)                                             # repaired: loads again
    (folder / "tokenizer.json").unlink()
    with pytest.raises(BundleError, match="missing tokenizer.json"):
        Predictor.load(folder)
    (folder / "tokenizer.json").write_bytes((bundle / "tokenizer.json").read_bytes())
    (folder / "labels.json").write_text('["neg", "pos", "meh"]')
    with pytest.raises(BundleError, match="labels.json does not match the sha256"):
        Predictor.load(folder)
    files = json.loads((folder / "manifest.json").read_text())["files"]
    files["labels.json"]["sha256"] = sha256_of(folder / "labels.json")
    _edit_manifest(folder, files=files)
    with pytest.raises(BundleError, match="2 logits but labels.json names 3 labels"):
        Predictor.load(folder)


def test_overlength_truncates_or_is_refused(served):
    bundle = served[1]["teacher"]
    long = "a very long review " * 10
    row = Predictor.load(bundle).predict([long])[0]
    assert row["truncated"] and len(row["tokens"]) == 16
    strict = Predictor.load(bundle, on_overlength="error")
    assert strict.predict(["short"])[0]["truncated"] is False
    with pytest.raises(BundleError, match=r"text 1 \('a very long.*max_length of 16.*truncated"):
        strict.predict(["short", long])
    with pytest.raises(ValueError, match="on_overlength"):
        Predictor.load(bundle, on_overlength="cut")


def test_runtime_serves_without_torch(served):
    code = ("import sys, ktlab.deploy, ktlab.deploy.runtime as rt\n"
            f"rows = rt.Predictor.load({str(served[1]['bilstm'])!r}).predict(['a fine film'])\n"
            "heavy = {'torch', 'transformers', 'ktlab.models', 'ktlab.train'} & set(sys.modules)\n"
            "assert not heavy, heavy\n"
            "print(rows[0]['label'])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in {"neg", "pos"}


# ----------------------------------------------------------------------------- measuring

def test_percentiles_and_warmup_is_not_timed():
    assert measure.percentiles([1.0, 2.0, 3.0, 4.0]) == pytest.approx(
        {"p50_ms": 2.5, "p95_ms": 3.85, "mean_ms": 2.5, "n": 4})
    calls = []
    lat = measure.time_latency(calls.append, ["a", "b", "c"], warmup=5)
    assert len(calls) == 8 and lat["n"] == 3 and lat["p50_ms"] <= lat["p95_ms"]
    sps, out = measure.time_throughput(lambda batch: [len(t) for t in batch], ["ab", "c", "def"],
                                       batch_size=2)
    assert sps > 0 and out == [2, 1, 3]


KEYS = {"accuracy", "agreement", "predictions", "latency_model", "latency_end_to_end",
        "throughput_sps", "peak_rss_mb", "load_seconds", "file_bytes"}


def test_run_isolated_measures_torch_and_onnx_variants(served, tokenizer, tmp_path):
    models, bundles = served
    tokenizer.backend_tokenizer.save(str(tmp_path / "tokenizer.json"))
    torch.save(quantize_int8(models["bilstm"]), tmp_path / "bilstm-int8.pt")
    spec = {"tokenizer": str(tmp_path / "tokenizer.json"), "max_length": 16, "texts": TEXTS,
            "labels": [1, 0, 1, 0], "threads": 1, "latency_n": 5, "batch_size": 2, "warmup": 1}
    onnx = measure.run_isolated({**spec, "kind": "onnx", "path": str(bundles["bilstm"]),
                                 "reference": None})
    torch8 = measure.run_isolated({**spec, "kind": "torch", "reference": onnx["predictions"],
                                   "path": str(tmp_path / "bilstm-int8.pt")})
    for rec in (onnx, torch8):
        assert KEYS <= set(rec)
        assert len(rec["predictions"]) == 4 and 0 <= rec["accuracy"] <= 1
        assert rec["latency_model"]["n"] == rec["latency_end_to_end"]["n"] == 5
        assert rec["throughput_sps"] > 0 and rec["peak_rss_mb"] > 10 and rec["file_bytes"] > 0
    assert onnx["agreement"] is None and 0 <= torch8["agreement"] <= 1
    # each process reports its own peak: the ONNX one never loads torch (and, on Linux, does not
    # inherit this test process's peak through fork + exec, as ru_maxrss would)
    assert onnx["peak_rss_mb"] < torch8["peak_rss_mb"]
    with pytest.raises(RuntimeError, match="unknown variant kind"):
        measure.run_isolated({**spec, "kind": "tflite", "path": "x", "reference": None})


# ----------------------------------------------------------------------------- CLI

@pytest.fixture
def fake_run(served, tokenizer, tmp_path, monkeypatch):
    """A serving run folder whose loading is replaced by the tiny models (no training)."""
    from ktlab.experiments import serving
    models, _ = served
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "results.json").write_text("{}")
    loaded = serving.ServingModels(
        models["teacher"], {"hard": models["bilstm"]}, tokenizer, ["neg", "pos"], 16, [], [],
        {"cache_key": "k", "summary": {"bilstm": {"best": "bilstm/hard"}}}, run_dir)
    monkeypatch.setattr(serving, "load", lambda folder: loaded)
    return run_dir


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_cli_export_then_predict(fake_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "bundle"
    assert main(["export", str(fake_run), "--format", "onnx", "--out", str(out)]) == 0
    assert "bilstm/hard" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["source"]["model"] == "bilstm/hard"
    assert main(["predict", str(out), "a fine film", "dull", "--threads", "1"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["a fine film", "dull"]
    monkeypatch.setattr(sys, "stdin", io.StringIO("one\n\ntwo\n"))
    assert main(["predict", str(out)]) == 0
    assert [json.loads(l)["text"] for l in capsys.readouterr().out.splitlines()] == ["one", "two"]
    assert main(["predict", "--strict", str(out), "word " * 40]) == 1
    assert "max_length of 16" in _error_line(capsys)


def test_cli_errors_are_one_line(fake_run, tmp_path, capsys):
    assert main(["export", str(fake_run), "--model", "bilstm/nope", "--out",
                 str(tmp_path / "b")]) == 1
    assert "no student 'bilstm/nope'" in _error_line(capsys)
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(tmp_path / "b")]) == 1
    assert "no results.json" in _error_line(capsys)
    assert main(["predict", str(tmp_path / "nowhere"), "text"]) == 1
    assert "no bundle folder" in _error_line(capsys)
    assert main(["export", str(fake_run), "--int8", "--model", "teacher", "--out",
                 str(fake_run)]) == 1
    assert "not a ktlab bundle" in _error_line(capsys)
