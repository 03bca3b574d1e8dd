"""The multi-task pipeline end to end on tiny real slices, its report, and its CLI errors."""
import dataclasses
import json

import pytest

from ktlab.cli import main
from ktlab.experiments import multitask


@pytest.fixture(scope="module")
def tiny_results(tmp_path_factory, data_dir):
    sizes = dataclasses.replace(multitask.PROFILE_SIZES["quick"], sst2_train=48, conll_train=40,
                                eval_per_task=24, steps_per_task=3, seeds=(0,))
    out = tmp_path_factory.mktemp("mt")
    return multitask.run("quick", tasks=("sst2", "ner"), samplers=("round_robin",),
                         sizes=sizes, out_dir=out), out


def test_results_schema_and_budget(tiny_results):
    results, out = tiny_results
    assert json.loads((out / "results.json").read_text())["schema"] == multitask.SCHEMA
    assert (out / "table.md").is_file() and (out / "deltas.png").is_file()
    models = {r["model"] for r in results["runs"]}
    assert models == {"single-task", "multi-task (round_robin)", "multi-task KD (temperature)"}
    # same compute budget: multi-task steps over all tasks = sum of single-task steps
    mt = [r for r in results["runs"] if r["model"] == "multi-task (round_robin)"]
    assert [r["steps"] for r in mt] == [3, 3]
    single = [r for r in results["runs"] if r["model"] == "single-task"]
    assert sum(r["steps"] for r in single) == sum(r["steps"] for r in mt)
    assert results["train_sizes"] == {"sst2": 48, "ner": 40}
    assert results["sampling_probabilities"]["round_robin"]["sst2"] == pytest.approx(0.5)
    for run in results["runs"]:
        assert 0.0 <= run["score"] <= 100.0


def test_summary_deltas_are_paired_over_seeds(tiny_results):
    results, out = tiny_results
    assert "| single-task |" in multitask.markdown_table(results)
    assert multitask.load_results(out)["schema"] == multitask.SCHEMA
    # the report's arithmetic, on hand-made scores for two seeds
    runs = [{"model": m, "task": t, "seed": s, "score": v} for m, t, s, v in [
        ("single-task", "ner", 0, 80.0), ("single-task", "ner", 1, 82.0),
        ("single-task", "pos", 0, 90.0), ("single-task", "pos", 1, 90.0),
        ("mt", "ner", 0, 81.0), ("mt", "ner", 1, 85.0),
        ("mt", "pos", 0, 88.0), ("mt", "pos", 1, 89.0)]]
    summary = multitask.summarise({"runs": runs, "tasks": ["ner", "pos"], "seeds": [0, 1]})
    assert summary["deltas"]["mt"]["ner"]["mean"] == pytest.approx(2.0)       # (1 + 3) / 2
    assert summary["deltas"]["mt"]["ner"]["std"] == pytest.approx(2 ** 0.5)
    assert summary["deltas"]["mt"]["pos"]["mean"] == pytest.approx(-1.5)
    assert summary["scores"]["single-task"]["ner"] == {"mean": 81.0, "std": pytest.approx(2 ** 0.5),
                                                       "n": 2}
    goal = summary["goal"]["mt"]
    assert goal["average_vs_single"] == pytest.approx(0.25)
    assert goal["worst_task_delta"] == pytest.approx(-1.5) and goal["met"] is False


def test_bad_options_are_clear(capsys, tmp_path):
    with pytest.raises(multitask.ConfigError, match="unknown tasks"):
        multitask.run("quick", tasks=("sentiment",))
    assert main(["run", "multitask", "--samplers", "annealed", "--out", str(tmp_path)]) == 2
    assert "unknown samplers" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="has schema 'other', expected"):
        multitask.load_results(bad)
