"""User-supplied classification files (``ktlab run classify``): formats, label numbering, and one
clear error per kind of bad input. Every input file is built from real SST-2 / CoNLL-2003 rows."""
from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import pytest

from ktlab.data import load_conll, load_sst2
from ktlab.data import mirror
from ktlab.data.labelled import (ClassificationTask, DataFormatError, load_classification_task,
                                 read_labelled_file, sort_labels, sst2_task)

N_TRAIN, N_DEV = 200, 100


# ----------------------------------------------------------------------------- real rows

@pytest.fixture(scope="module")
def sst2_rows(data_dir: Path) -> dict:
    """The first SST-2 train/dev rows, as the loader reads them (stripped text, int label)."""
    train = load_sst2("train", data_dir).select(range(N_TRAIN))
    dev = load_sst2("dev", data_dir).select(range(N_DEV))
    return {"train": (train["sentence"], train["label"]), "dev": (dev["sentence"], dev["label"])}


def first_entity(tags: list[str]) -> str | None:
    return next((t[2:] for t in tags if t.startswith("B-")), None)


@pytest.fixture(scope="module")
def conll_rows(data_dir: Path) -> dict:
    """(text, type of the first entity) of CoNLL sentences that have an entity.

    "train" comes from the valid split and "dev" from the test split (small, fast to load);
    "misc" holds sentences whose first entity is MISC, a class the 3-class task leaves out.
    """
    out: dict[str, list[tuple[str, str]]] = {"train": [], "dev": [], "misc": []}
    for split, key, n in (("valid", "train", 150), ("test", "dev", 60)):
        ds = load_conll(split, data_dir)
        for tokens, tags in zip(ds["tokens"], ds["ner_tags"]):
            kind = first_entity(tags)
            if kind in ("PER", "LOC", "ORG") and len(out[key]) < n:
                out[key].append((" ".join(tokens), kind))
            elif kind == "MISC" and key == "dev" and len(out["misc"]) < 3:
                out["misc"].append((" ".join(tokens), kind))
    return out


def sst2_head(data_dir: Path, split: str, rows: int) -> bytes:
    """Header plus the first ``rows`` lines of the real SST-2 file, byte for byte."""
    with open(data_dir / "sst2" / f"{split}.tsv", "rb") as handle:
        return b"".join(next(handle) for _ in range(rows + 1))


def write_tsv(path: Path, header: list[str], rows: list) -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, header: list[str], rows: list) -> Path:
    lines = [json.dumps(dict(zip(header, row))) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


WRITERS = {"tsv": write_tsv, "csv": write_csv, "jsonl": write_jsonl}


def error_of(call, *args, **kwargs) -> str:
    """The DataFormatError message of ``call``; it must fit on one line."""
    with pytest.raises(DataFormatError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ----------------------------------------------------------------------------- good input

@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_sst2_rows_round_trip_in_every_format(tmp_path, sst2_rows, fmt):
    texts, labels = sst2_rows["train"]
    dev_texts, dev_labels = sst2_rows["dev"]
    train = WRITERS[fmt](tmp_path / f"reviews.{fmt}", ["sentence", "label"],
                         list(zip(texts, labels)))
    dev = WRITERS[fmt](tmp_path / f"reviews_dev.{fmt}", ["sentence", "label"],
                       list(zip(dev_texts, dev_labels)))
    task = load_classification_task(train, dev)
    assert isinstance(task, ClassificationTask)
    assert task.name == "reviews"
    assert task.label_names == ["0", "1"] and task.num_labels == 2
    assert task.train == {"idx": list(range(N_TRAIN)), "sentence": texts, "label": labels}
    assert task.dev["sentence"] == dev_texts and task.dev["label"] == dev_labels


def test_real_tsv_copy_with_bom_and_trailing_spaces(tmp_path, data_dir, sst2_rows):
    """A byte copy of the GLUE file (trailing space before the tab) behind a UTF-8 BOM."""
    path = tmp_path / "train.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + sst2_head(data_dir, "train", N_TRAIN))
    texts, labels, lines = read_labelled_file(path)
    assert texts == sst2_rows["train"][0]
    assert labels == [str(y) for y in sst2_rows["train"][1]]
    assert lines == list(range(2, N_TRAIN + 2))       # the header is line 1


def test_conll_first_entity_three_classes(tmp_path, conll_rows):
    """A 3-class task with its own column names (text / entity) in JSON Lines and CSV."""
    train = write_jsonl(tmp_path / "entities.jsonl", ["text", "entity"], conll_rows["train"])
    dev = write_csv(tmp_path / "entities_dev.csv", ["text", "entity"], conll_rows["dev"])
    task = load_classification_task(train, dev, label_column="entity", name="first-entity")
    assert task.name == "first-entity"
    assert task.num_labels == 3 and task.label_names == ["LOC", "ORG", "PER"]
    names = [task.label_names[i] for i in task.train["label"]]
    assert names == [kind for _, kind in conll_rows["train"]]
    assert task.dev["sentence"] == [text for text, _ in conll_rows["dev"]]
    assert set(task.dev["label"]) == {0, 1, 2}


def test_label_order_is_numeric_for_integers():
    assert sort_labels({"10", "2", "1"}) == ["1", "2", "10"]
    assert sort_labels({"PER", "LOC", "10"}) == ["10", "LOC", "PER"]


def test_sst2_task_matches_the_loader(data_dir):
    task = sst2_task(data_dir, train_size=N_TRAIN, dev_size=N_DEV, seed=0)
    assert task.name == "sst2" and task.label_names == ["0", "1"]
    assert len(task.train["sentence"]) == N_TRAIN and len(task.dev["label"]) == N_DEV
    dev = load_sst2("dev", data_dir).to_dict()
    assert task.dev["sentence"] == [dev["sentence"][i] for i in task.dev["idx"]]
    assert task.dev["label"] == [dev["label"][i] for i in task.dev["idx"]]
    assert 0 < sum(task.train["label"]) < N_TRAIN    # stratified: both classes present


def test_hub_dataset_through_load_dataset(tmp_path, monkeypatch, sst2_rows):
    """``hub:NAME:CONFIG`` goes to datasets.load_dataset (faked here with real SST-2 rows)."""
    import datasets

    def fake_load(name, config=None):
        assert (name, config) == ("nyu-mll/glue", "sst2")
        return datasets.DatasetDict({
            split: datasets.Dataset.from_dict({"sentence": list(t), "label": list(y)})
            for split, (t, y) in (("train", sst2_rows["train"]), ("validation", sst2_rows["dev"]))})

    monkeypatch.setattr(mirror, "hub_offline_reason", lambda: None)
    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    task = load_classification_task("hub:nyu-mll/glue:sst2", "hub:nyu-mll/glue:sst2")
    assert task.name == "nyu-mll/glue" and task.label_names == ["0", "1"]
    assert task.train["sentence"] == sst2_rows["train"][0]
    assert task.dev["label"] == sst2_rows["dev"][1]


@pytest.mark.parametrize("source", ["hub:nyu-mll/glue:sst2", "stanfordnlp/imdb"])
def test_hub_offline_is_a_quick_clear_error(tmp_path, monkeypatch, source):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    message = error_of(load_classification_task, source, source)
    assert time.perf_counter() - start < 2
    assert source in message and "hub is unreachable" in message
    assert "pass a local .tsv/.csv/.jsonl" in message


# ----------------------------------------------------------------------------- bad input

def test_missing_file_and_unknown_extension(tmp_path, data_dir):
    message = error_of(read_labelled_file, tmp_path / "nope.tsv")
    assert "nope.tsv" in message and "does not exist" in message and "check the path" in message
    odd = tmp_path / "train.txt"
    odd.write_bytes(sst2_head(data_dir, "train", 20))
    message = error_of(read_labelled_file, odd)
    assert "train.txt" in message and "'.txt'" in message and ".tsv, .csv, .jsonl" in message


def test_missing_column_lists_columns_and_the_option(tmp_path, sst2_rows):
    rows = list(zip(*sst2_rows["train"]))
    only_text = write_tsv(tmp_path / "no_label.tsv", ["sentence"], [r[:1] for r in rows])
    message = error_of(read_labelled_file, only_text)
    assert "no_label.tsv:1" in message and "'label'" in message
    assert "found 'sentence'" in message and "--label-column" in message

    renamed = write_csv(tmp_path / "review.csv", ["review", "label"], rows)
    message = error_of(read_labelled_file, renamed)
    assert "review.csv:1" in message and "found 'review', 'label'" in message
    assert "--text-column" in message
    texts, _, _ = read_labelled_file(renamed, text_column="review")
    assert texts == sst2_rows["train"][0]


def test_tab_separated_file_named_csv_gets_a_hint(tmp_path, data_dir):
    path = tmp_path / "train.csv"
    path.write_bytes(sst2_head(data_dir, "train", 20))
    message = error_of(read_labelled_file, path)
    assert "train.csv:1" in message and "name it .tsv" in message


def test_duplicate_header(tmp_path, sst2_rows):
    rows = [(t, t, y) for t, y in zip(*sst2_rows["train"])]
    path = write_tsv(tmp_path / "dup.tsv", ["sentence", "sentence", "label"], rows)
    message = error_of(read_labelled_file, path)
    assert "dup.tsv:1" in message and "'sentence' twice" in message and "rename" in message

    path = tmp_path / "dup.jsonl"                     # JSON Lines: a key twice in one object
    first, label = sst2_rows["train"][0][0], sst2_rows["train"][1][0]
    path.write_text(json.dumps({"sentence": first, "label": label})[:-1]
                    + f', "label": {label}}}\n', encoding="utf-8")
    message = error_of(read_labelled_file, path)
    assert "dup.jsonl:1:" in message and "duplicate key 'label'" in message


def test_csv_line_numbers_count_quoted_newlines(tmp_path, sst2_rows):
    """A quoted CSV field may span lines; later rows still get their physical line number."""
    rows = [list(r) for r in zip(*sst2_rows["train"])]
    rows[1][0] = rows[1][0] + "\n" + rows[2][0]     # row 2 takes lines 3-4
    rows[5][0] = ""                                   # row 6 starts on line 8, not 7
    path = write_csv(tmp_path / "multi.csv", ["sentence", "label"], rows)
    message = error_of(read_labelled_file, path)
    assert "multi.csv:8:" in message and "empty text" in message
    rows[5][0] = sst2_rows["train"][0][5]
    texts, _, lines = read_labelled_file(write_csv(path, ["sentence", "label"], rows))
    assert texts[1] == rows[1][0] and lines[:4] == [2, 3, 5, 6]


@pytest.mark.parametrize("fmt", ["tsv", "csv", "jsonl"])
def test_empty_text_names_its_line(tmp_path, sst2_rows, fmt):
    rows = [list(r) for r in zip(*sst2_rows["train"])]
    rows[4][0] = "   "                              # row 5 = line 6 (line 5 in JSON Lines)
    path = WRITERS[fmt](tmp_path / f"blank.{fmt}", ["sentence", "label"], rows)
    line = 5 if fmt == "jsonl" else 6
    message = error_of(read_labelled_file, path)
    assert f"blank.{fmt}:{line}:" in message and "empty text" in message
    assert "delete that row" in message


def test_wrong_number_of_fields(tmp_path, data_dir, sst2_rows):
    lines = sst2_head(data_dir, "train", 30).decode("utf-8").split("\n")
    lines[9] = lines[9].replace(" ", "\t", 1)         # a stray tab on line 10
    tsv = tmp_path / "tabs.tsv"
    tsv.write_text("\n".join(lines), encoding="utf-8")
    message = error_of(read_labelled_file, tsv)
    assert "tabs.tsv:10:" in message and "expected 2" in message and "got 3" in message

    rows = [list(r) for r in zip(*sst2_rows["train"])]
    rows[11] = rows[11][:1]                           # label dropped on line 13
    path = write_csv(tmp_path / "short.csv", ["sentence", "label"], rows)
    message = error_of(read_labelled_file, path)
    assert "short.csv:13:" in message and "expected 2" in message and "got 1" in message
    assert "quote the field" in message


def test_invalid_json_line(tmp_path, sst2_rows):
    path = write_jsonl(tmp_path / "broken.jsonl", ["sentence", "label"],
                       list(zip(*sst2_rows["train"])))
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[3] = lines[3][:-5]                          # cut the end off line 4
    path.write_text("\n".join(lines), encoding="utf-8")
    message = error_of(read_labelled_file, path)
    assert "broken.jsonl:4:" in message and "invalid JSON" in message
    assert "one complete JSON object per line" in message


def test_latin1_bytes_name_the_line_and_the_encoding_option(tmp_path, data_dir, sst2_rows):
    """Line 6 of train.tsv has 'clichés'; saved as latin-1 its é is the byte 0xe9."""
    original = sst2_head(data_dir, "train", N_TRAIN)
    assert "é".encode() in original.split(b"\n")[5]
    path = tmp_path / "latin.tsv"
    path.write_bytes(original.decode("utf-8").encode("latin-1"))
    message = error_of(read_labelled_file, path)
    assert "latin.tsv:6:" in message and "0xe9" in message
    assert "pass --encoding latin-1 (or the file's encoding)" in message
    texts, _, _ = read_labelled_file(path, encoding="latin-1")
    assert texts == sst2_rows["train"][0]


def test_single_class_train(tmp_path, sst2_rows):
    negative = [(t, y) for t, y in zip(*sst2_rows["train"]) if y == 0]
    train = write_tsv(tmp_path / "negative.tsv", ["sentence", "label"], negative)
    dev = write_tsv(tmp_path / "dev.tsv", ["sentence", "label"], list(zip(*sst2_rows["dev"])))
    message = error_of(load_classification_task, train, dev)
    assert "negative.tsv" in message and "'0'" in message and "at least 2 classes" in message


def test_dev_label_missing_from_train(tmp_path, conll_rows):
    train = write_tsv(tmp_path / "ent.tsv", ["text", "label"], conll_rows["train"])
    dev_rows = conll_rows["dev"][:10] + conll_rows["misc"]
    dev = write_tsv(tmp_path / "ent_dev.tsv", ["text", "label"], dev_rows)
    message = error_of(load_classification_task, train, dev)
    assert "ent_dev.tsv" in message and "'MISC' (first at line 12)" in message
    assert "never seen in" in message and "ent.tsv" in message


def test_empty_file_and_header_only(tmp_path, data_dir):
    for name in ("empty.tsv", "empty.csv", "empty.jsonl"):
        (tmp_path / name).write_bytes(b"")
        message = error_of(read_labelled_file, tmp_path / name)
        assert name in message and "empty" in message
    header_only = tmp_path / "header.tsv"
    header_only.write_bytes(sst2_head(data_dir, "train", 0))
    message = error_of(read_labelled_file, header_only)
    assert "header.tsv" in message and "no examples" in message
