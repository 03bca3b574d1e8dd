"""``ktlab run peft`` and its stages on real SST-2 / CoNLL-2003 at tiny caps: trainable counts
that follow from each method's definition, the saved delta, forgetting measures that read 0 / 1
on the pretrained encoder itself, WiSE-FT's endpoints, caching, resume and the CLI's errors."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from ktlab.cli import main
from ktlab.experiments import peft as P

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

CAPS = ("--max-examples", "48", "--max-steps", "3")
CLI_METHODS = ("full", "head", "lora", "peft-lora")
HEAD = 384 * 2 + 2  # MiniLM's hidden size -> 2 SST-2 labels, weight + bias


@pytest.fixture(scope="module")
def keep_threads():
    """``--threads 1`` sets torch's thread count for the whole pytest process: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _counts(model: torch.nn.Module) -> tuple[int, int]:
    return (sum(p.numel() for p in model.parameters()),
            sum(p.numel() for p in model.parameters() if p.requires_grad))


def _build(name: str) -> torch.nn.Module:
    return P.build_model(P.METHODS[name], "minilm", 2, seed=0)


def test_trainable_counts_follow_from_each_method():
    full = _build("full")
    total, trainable = _counts(full)
    assert trainable == total
    assert _counts(_build("head"))[1] == HEAD

    named = dict(full.named_parameters())
    biases = sum(p.numel() for n, p in named.items() if n.endswith(".bias"))
    assert _counts(_build("bitfit"))[1] == biases + named["classifier.weight"].numel()

    bottom = sum(p.numel() for n, p in named.items() if "embeddings." in n or any(
        f"layer.{i}." in n for i in range(3)))  # k = 3 of MiniLM's 6 layers
    assert _counts(_build("freeze-bottom-k"))[1] == total - bottom

    linears = {n: m for n, m in full.named_modules() if isinstance(m, torch.nn.Linear)}
    qv = [m for n, m in linears.items() if n.endswith((".query", ".value"))]
    assert len(qv) == 12
    for name, r in (("lora", 8), ("lora-r1", 1), ("lora-r16", 16)):
        assert _counts(_build(name))[1] == sum(r * (m.in_features + m.out_features)
                                               for m in qv) + HEAD, name

    per_adapter = 384 * 64 + 64 + 64 * 384 + 384
    norms = sum(p.numel() for n, p in named.items() if "LayerNorm" in n)
    assert _counts(_build("adapters"))[1] == 2 * 6 * per_adapter + norms + HEAD


def test_peft_lora_is_ktlab_lora_through_the_library():
    import peft
    from ktlab.transfer.peft import LoRALinear
    ours, theirs = _build("lora"), _build("peft-lora")
    assert _counts(ours) == _counts(theirs)
    a_ours = [m.lora_A for m in ours.modules() if isinstance(m, LoRALinear)]
    a_theirs = [m.lora_A["default"].weight for m in theirs.modules()
                if isinstance(m, peft.tuners.lora.Linear)]
    assert len(a_ours) == len(a_theirs) == 12
    assert all(torch.equal(a, b) for a, b in zip(a_ours, a_theirs))  # the same start
    trainable = {n for n, p in theirs.named_parameters() if p.requires_grad}
    assert {"base_model.model.classifier.weight", "base_model.model.classifier.bias"} <= trainable


def test_saved_delta_of_lora_is_far_smaller_than_full():
    lora, full = P.saved_bytes(_build("lora"), P.METHODS["lora"]), \
        P.saved_bytes(_build("full"), P.METHODS["full"])
    assert full > 22_000_000 * 4  # the whole fp32 state dict
    assert lora * 100 < full      # LoRA factors + head only


@pytest.fixture(scope="module")
def small(data_dir: Path):
    sizes = P.cap_sizes(P.PROFILE_SIZES["quick"], max_examples=48, max_steps=3)
    data = P.load_data(sizes, seed=0, data_dir=data_dir)
    pretrained = P.pretrained_model("minilm", 2, seed=0)
    return sizes, data, pretrained, P.train_probe(pretrained, data, sizes)


def test_the_pretrained_encoder_has_not_forgotten_itself(small):
    sizes, data, pretrained, probe = small
    assert len(data.dev_items) == len(data.probe_train) == len(data.probe_eval) == 48
    assert 0.3 < probe.pretrained_accuracy <= 1.0
    other = P.pretrained_model("minilm", 2, seed=0)  # a second copy of the same weights
    forgetting = P.measure_forgetting(other, pretrained, probe, data)
    assert forgetting["probe_drop_points"] == 0.0
    assert forgetting["cka_by_layer"] == pytest.approx([1.0] * 7, abs=1e-5)


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, data_dir, keep_threads) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("peft") / "run"
    assert main(["run", "peft", "--profile", "quick", *CAPS, "--methods", ",".join(CLI_METHODS),
                 "--out", str(out), "--threads", "1"]) == 0
    return out, json.loads((out / "results.json").read_text())


def test_cli_writes_results_table_and_plots(cli_run):
    out, results = cli_run
    for name in ("table.md", "accuracy_vs_trainable.png", "wise_ft_frontier.png"):
        assert (out / name).is_file(), name
    assert results["schema"] == P.SCHEMA and results["profile"] == "quick"
    assert results["capped"] == {"max_examples": 48, "max_steps": 3}
    assert results["machine"]["torch_threads"] == 1
    recs = {r["name"]: r for r in results["methods"]}
    assert list(recs) == list(CLI_METHODS)
    for name, rec in recs.items():
        assert len(rec["dev_predictions"]) == 48 and rec["steps"] == 3, name
        assert (rec["vs_full"] is None) == (name == "full")
        assert (out / "cache" / f"{name}.json").is_file()
    assert recs["head"]["forgetting"]["probe_drop_points"] == 0.0  # encoder untouched
    assert recs["lora"]["saved_bytes"] * 100 < recs["full"]["saved_bytes"]
    assert results["vs_peft"]["train_throughput_ratio"] > 0
    assert set(results["goals"]) == {"lora_near_full", "bitfit_near_full",
                                     "lora_speed_vs_peft", "least_forgetting"}
    assert results["goals"]["bitfit_near_full"]["met"] is None  # bitfit was not run
    table = (out / "table.md").read_text()
    assert all(f"| {name} |" in table for name in CLI_METHODS)
    assert not list(out.rglob("*.tmp"))


def test_wise_ft_endpoints_are_the_pretrained_and_the_fine_tuned_model(cli_run):
    _, results = cli_run
    wise = results["wise_ft"]
    assert [w["beta"] for w in wise] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert wise[0]["probe_accuracy"] == results["forgetting"]["pretrained_probe_accuracy"]
    full = next(r for r in results["methods"] if r["name"] == "full")
    assert wise[-1]["dev_accuracy"] == full["dev_accuracy"]
    assert wise[-1]["probe_accuracy"] == full["forgetting"]["probe_accuracy"]


def test_rerun_reuses_the_cached_method_records(cli_run, monkeypatch):
    out, first = cli_run

    def no_training(*args, **kwargs):
        raise AssertionError("a cached method was trained again")

    monkeypatch.setattr(P, "train_method", no_training)
    monkeypatch.setattr(P, "time_lora_vs_peft", no_training)
    assert main(["run", "peft", "--profile", "quick", *CAPS, "--methods", ",".join(CLI_METHODS),
                 "--out", str(out), "--threads", "1"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert all(r["cached"] for r in again["methods"])
    for a, b in zip(first["methods"], again["methods"]):
        assert a["dev_predictions"] == b["dev_predictions"] and a["history"] == b["history"]
    assert again["wise_ft"] == first["wise_ft"]


def test_interrupted_training_resumes_from_its_checkpoint(small, tmp_path):
    sizes, data, pretrained, probe = small
    method, work = P.METHODS["bitfit"], tmp_path / "work"

    def stop_at_2(stage: str, step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    model = P.build_model(method, "minilm", 2, seed=0)
    with pytest.raises(KeyboardInterrupt):
        P.train_method(model, method, data, dataclasses.replace(sizes, save_every=1), 0,
                       work, callbacks=[stop_at_2])
    assert (work / "checkpoint.pt").is_file() and not (work / "model.pt").exists()
    steps = []
    model = P.build_model(method, "minilm", 2, seed=0)
    done = P.train_method(model, method, data, dataclasses.replace(sizes, save_every=1), 0,
                          work, callbacks=[lambda stage, step: steps.append(step)])
    assert steps == [3] and done["steps"] == 3 and done["history"]["step"] == [1, 2, 3]
    assert (work / "model.pt").is_file() and not list(work.glob("*.tmp"))


def test_unknown_method_is_one_error_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "peft", "--methods", "lora,prefix-tuning", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0], lines
    assert "'prefix-tuning'" in lines[0] and all(m in lines[0] for m in P.METHODS)
    assert not out.exists()


@pytest.fixture(scope="module")
def hub_style_teacher(tmp_path_factory) -> Path:
    """A tiny randomly initialised BERT saved as a hub checkpoint is (``BertForPreTraining``)
    with the MiniLM tokenizer: the full profile's code path ([CLS] head, pooler) on a CPU."""
    import transformers

    from ktlab.models import load_tokenizer
    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = load_tokenizer("minilm")
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=32,
                                     num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64)
    transformers.BertForPreTraining(config).save_pretrained(folder)
    return folder


def test_full_profile_runs_every_method_on_a_hub_style_teacher(hub_style_teacher, tmp_path,
                                                               keep_threads):
    out = tmp_path / "full"
    assert main(["run", "peft", "--profile", "full", "--teacher", str(hub_style_teacher),
                 "--max-examples", "24", "--max-steps", "2", "--out", str(out),
                 "--threads", "1"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["profile"] == "full" and results["teacher_name"] == str(hub_style_teacher)
    recs = {r["name"]: r for r in results["methods"]}
    assert list(recs) == list(P.METHODS)
    assert all(r["steps"] == 2 and len(r["dev_predictions"]) == 24 for r in recs.values())
    assert all(len(r["forgetting"]["cka_by_layer"]) == 3 for r in recs.values())
    assert len(results["wise_ft"]) == 11
    saves_all = {n for n, r in recs.items() if r["saves"] == "all"}
    assert saves_all == {"full", "l2sp", "mixout"}
    assert all(recs[n]["saved_bytes"] < recs["full"]["saved_bytes"] / 2
               for n in recs if n not in saves_all)
