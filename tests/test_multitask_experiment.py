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
                         sizes=sizes, out_dir=out, equal_updates=True), out


def test_results_schema_and_budget(tiny_results):
    results, out = tiny_results
    assert json.loads((out / "results.json").read_text())["schema"] == multitask.SCHEMA
    assert (out / "table.md").is_file() and (out / "deltas.png").is_file()
    models = {r["model"] for r in results["runs"]}
    assert models == {"single-task", "single-task (equal updates)", "multi-task (round_robin)",
                      "multi-task KD (temperature)"}
    # same compute budget: multi-task steps over all tasks = sum of single-task steps
    mt = [r for r in results["runs"] if r["model"] == "multi-task (round_robin)"]
    assert [r["steps"] for r in mt] == [3, 3]
    single = [r for r in results["runs"] if r["model"] == "single-task"]
    assert sum(r["steps"] for r in single) == sum(r["steps"] for r in mt)
    # the equal-updates control: each task alone for as many encoder updates as multi-task
    control = [r for r in results["runs"] if r["model"] == multitask.EQUAL_UPDATES]
    assert [r["steps"] for r in control] == [3 * 2, 3 * 2] and results["sizes"][
        "single_task_equal_updates"] is True
    assert results["train_sizes"] == {"sst2": 48, "ner": 40}
    assert results["sampling_probabilities"]["round_robin"]["sst2"] == pytest.approx(0.5)
    for run in results["runs"]:
        assert 0.0 <= run["score"] <= 100.0


def test_summary_deltas_are_paired_over_seeds(tiny_results):
    results, out = tiny_results
    table = multitask.markdown_table(results)
    assert "| single-task |" in table and (out / "table.md").read_text() == table + "\n"
    # one seed: every delta, against either baseline, is "no measurable difference", no interval
    summary = results["summary"]
    for key in ("deltas", "deltas_vs_equal_updates"):
        for per_task in summary[key].values():
            for d in per_task.values():
                assert (d["n"], d["low"], d["high"]) == (1, None, None)
                assert d["verdict"] == "no measurable difference" and len(d["per_seed"]) == 1
                cell = multitask.format_delta(d)
                assert cell in table and "(1 seed)" in cell
    assert set(summary["deltas"]) == {multitask.EQUAL_UPDATES, "multi-task (round_robin)",
                                      "multi-task KD (temperature)"}
    assert set(summary["deltas_vs_equal_updates"]) == {"multi-task (round_robin)",
                                                       "multi-task KD (temperature)"}
    assert multitask.EQUAL_UPDATES not in summary["goal"]
    assert "Δ vs single-task (equal updates) (6 steps per task" in table
    assert "With 1 seed there is no spread to estimate" in table
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
    # the t interval over the two paired deltas (1, 3): mean 2 +- t(0.975, 1) * sqrt(2) / sqrt(2)
    from scipy.stats import t
    ner = summary["deltas"]["mt"]["ner"]
    assert ner["per_seed"] == [1.0, 3.0] and ner["n"] == 2
    assert (ner["low"], ner["high"]) == (pytest.approx(2 - t.ppf(0.975, 1)),
                                         pytest.approx(2 + t.ppf(0.975, 1)))
    assert ner["verdict"] == "no measurable difference"
    average = summary["average_deltas"]["mt"]    # per seed: (1 - 2) / 2 and (3 - 1) / 2
    assert average["per_seed"] == [-0.5, 1.0]
    assert average["mean"] == pytest.approx(goal["average_vs_single"])
    assert "deltas_vs_equal_updates" not in summary
    # three seeds that agree: the verdict names the direction
    runs3 = [{"model": m, "task": "ner", "seed": s, "score": v} for m, s, v in [
        ("single-task", 0, 80.0), ("single-task", 1, 82.0), ("single-task", 2, 81.0),
        ("mt", 0, 81.0), ("mt", 1, 83.1), ("mt", 2, 81.9),
        (multitask.EQUAL_UPDATES, 0, 82.0), (multitask.EQUAL_UPDATES, 1, 84.0),
        (multitask.EQUAL_UPDATES, 2, 83.1)]]
    three = multitask.summarise({"runs": runs3, "tasks": ["ner"], "seeds": [0, 1, 2]})
    assert three["deltas"]["mt"]["ner"]["verdict"] == "helped"
    assert three["deltas_vs_equal_updates"]["mt"]["ner"]["verdict"] == "hurt"
    assert three["deltas"][multitask.EQUAL_UPDATES]["ner"]["verdict"] == "helped"
    assert list(three["goal"]) == ["mt"]
    table = multitask.markdown_table({"summary": three, "tasks": ["ner"], "seeds": [0, 1, 2],
                                      "sizes": {"steps_per_task": 30}})
    assert "Δ vs single-task (equal updates) (30 steps per task" in table
    assert multitask.format_delta(three["deltas"]["mt"]["ner"]) in table
    assert "no spread" not in table


def test_bad_options_are_clear(capsys, tmp_path):
    with pytest.raises(multitask.ConfigError, match="unknown tasks"):
        multitask.run("quick", tasks=("sentiment",))
    assert main(["run", "multitask", "--samplers", "annealed", "--out", str(tmp_path)]) == 2
    assert "unknown samplers" in capsys.readouterr().err
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="has schema 'other', expected"):
        multitask.load_results(bad)


def test_old_results_are_read_and_the_cli_passes_equal_updates(tmp_path, monkeypatch, capsys):
    runs = [{"model": m, "task": "ner", "seed": s, "score": v} for m, s, v in [
        ("single-task", 0, 80.0), ("single-task", 1, 82.0), ("mt", 0, 81.0), ("mt", 1, 85.0)]]
    old = {"schema": "ktlab.multitask/1", "tasks": ["ner"], "seeds": [0, 1], "runs": runs,
           "profile": "bench", "sizes": {"steps_per_task": 30},
           "summary": {"deltas": {"mt": {"ner": {"mean": 2.0, "std": 1.4}}}}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    new = multitask.load_results(tmp_path)
    assert new["schema"] == multitask.SCHEMA == "ktlab.multitask/2"
    assert new["summary"]["deltas"]["mt"]["ner"]["per_seed"] == [1.0, 3.0]
    multitask.upgrade_results_dir(tmp_path)
    assert json.loads((tmp_path / "results.json").read_text())["schema"] == multitask.SCHEMA
    assert "[95% t interval over seeds]" in (tmp_path / "table.md").read_text()
    assert (tmp_path / "deltas.png").is_file()
    seen = {}

    def fake_run(**kw):
        seen.update(kw)
        raise multitask.ConfigError("stop here")

    monkeypatch.setattr(multitask, "run", fake_run)
    assert main(["run", "multitask", "--equal-updates", "--out", str(tmp_path)]) == 2
    assert seen["equal_updates"] is True
    assert main(["run", "multitask", "--out", str(tmp_path)]) == 2
    assert seen["equal_updates"] is None                 # the profile decides
    assert multitask.PROFILE_SIZES["bench"].single_task_equal_updates
    assert not multitask.PROFILE_SIZES["quick"].single_task_equal_updates
