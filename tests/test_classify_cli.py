"""``ktlab run classify`` on your own files: a 3-class task made of real CoNLL-2003 sentences
(label = the type of the sentence's first entity), end to end through the CLI, and bad input
stopped before anything runs with one ``error:`` line that names the file."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ktlab.cli import main
from ktlab.data import load_conll
from ktlab.experiments import classify
from test_labelled import first_entity, write_jsonl, write_tsv

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N_TRAIN, N_DEV = 60, 30
HEADER = ["text", "entity"]


@pytest.fixture(scope="module")
def entity_rows(data_dir: Path) -> dict:
    """(sentence, PER/LOC/ORG of its first entity): train rows from CoNLL's valid split, dev
    rows from its test split; sentences without an entity, or whose first is MISC, are skipped."""
    rows: dict[str, list[tuple[str, str]]] = {}
    for split, key, n in (("valid", "train", N_TRAIN), ("test", "dev", N_DEV)):
        ds = load_conll(split, data_dir)
        rows[key] = [(" ".join(tokens), kind)
                     for tokens, kind in ((t, first_entity(tags))
                                          for t, tags in zip(ds["tokens"], ds["ner_tags"]))
                     if kind in ("PER", "LOC", "ORG")][:n]
    assert {kind for _, kind in rows["train"]} == {"LOC", "ORG", "PER"}
    assert {kind for _, kind in rows["dev"]} <= {"LOC", "ORG", "PER"}
    return rows


@pytest.fixture
def files(tmp_path, entity_rows) -> tuple[Path, Path]:
    return (write_tsv(tmp_path / "entities.tsv", HEADER, entity_rows["train"]),
            write_jsonl(tmp_path / "entities_dev.jsonl", HEADER, entity_rows["dev"]))


@pytest.fixture
def restore_threads():
    """``--threads 1`` sets torch's thread count for the whole pytest process: put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def classify_cli(train: Path, dev: Path, out: Path, *extra: str) -> int:
    return main(["run", "classify", "--train", str(train), "--dev", str(dev), "--profile",
                 "quick", "--max-examples", "48", "--max-steps", "2", "--students", "bilstm",
                 "--out", str(out), "--threads", "1", *extra])


def test_three_class_task_end_to_end(files, entity_rows, tmp_path, restore_threads):
    train, dev = files
    out = tmp_path / "run"
    assert classify_cli(train, dev, out, "--label-column", "entity") == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "table.md").is_file() and (out / "tradeoff.png").is_file()
    assert results["schema"] == classify.SCHEMA and results["complete"] is True
    assert results["task"] == "entities" and results["profile"] == "quick"
    assert results["label_names"] == ["LOC", "ORG", "PER"]
    assert results["capped"] == {"max_examples": 48, "max_steps": 2}
    assert results["machine"]["torch_threads"] == 1
    assert results["data"]["student_train"] == 48 and results["data"]["dev"] == N_DEV

    # the dev rows, labels numbered in label_names' order, and a 3-way teacher distribution
    dev_rows = entity_rows["dev"]
    assert [results["label_names"][y] for y in results["dev"]["labels"]] == \
        [dev_rows[i][1] for i in results["dev"]["idx"]]
    probs = results["dev"]["teacher_probs"]
    assert len(probs) == N_DEV
    assert all(len(row) == 3 and sum(row) == pytest.approx(1.0, abs=1e-3) for row in probs)

    conditions = classify.PROFILE_CONDITIONS["quick"]["bilstm"]
    assert [r["name"] for r in results["students"]] == [f"bilstm/{c}" for c in conditions]
    for rec in [results["teacher"]] + results["students"]:
        assert len(rec["dev_predictions"]) == N_DEV
        assert set(rec["dev_predictions"]) <= {0, 1, 2}, rec["name"]
        assert rec["history"]["step"][-1] <= 2, rec["name"]
    assert set(results["summary"]["bilstm"]["effects_vs_hard"]) == set(conditions) - {"hard"}


def _one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error:"), lines[0]
    return lines[0]


def test_missing_column_is_one_error_line(files, tmp_path, capsys):
    train, dev = files
    out = tmp_path / "run"
    assert classify_cli(train, dev, out) == 2             # no --label-column entity
    line = _one_error_line(capsys)
    assert f"{train}:1:" in line and "no label column 'label'" in line
    assert "found 'text', 'entity'" in line and "--label-column" in line
    assert not out.exists()


def test_non_utf8_file_is_one_error_line(files, tmp_path, capsys):
    """The dev file saved as UTF-16 (Windows' "Unicode"): the error names the dev file, its
    line and the --encoding option."""
    train, dev = files
    dev.write_bytes(dev.read_text(encoding="utf-8").encode("utf-16"))
    out = tmp_path / "run"
    assert classify_cli(train, dev, out, "--label-column", "entity") == 2
    line = _one_error_line(capsys)
    assert f"{dev}:1:" in line and "is not valid utf-8" in line and "--encoding" in line
    assert str(train) not in line
    assert not out.exists()
