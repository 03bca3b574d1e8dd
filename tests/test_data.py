"""Data loaders: exact counts on the real mirror, the CoNLL reader's edge cases, bad input."""
import json
import shutil
import time

import pytest

from ktlab.data import (DataCorruptError, DataUnavailableError, entity_counts, iob1_to_iob2,
                        load_conll, load_sst2, read_conll, subset)
from ktlab.data import mirror


def test_sst2_counts_and_schema(data_dir):
    ds = load_sst2(data_dir=data_dir)
    assert {k: len(v) for k, v in ds.items()} == {"train": 67349, "dev": 872, "test": 1821}
    assert ds["train"].column_names == ["idx", "sentence", "label"]
    train_labels = ds["train"]["label"]
    assert train_labels.count(1) == 37569 and train_labels.count(0) == 29780
    assert set(ds["test"]["label"]) == {-1}          # unlabelled
    assert ds["test"][0]["idx"] == 0 and ds["test"][-1]["idx"] == 1820
    assert not ds["dev"][0]["sentence"].endswith(" ")  # GLUE's trailing space is stripped
    assert load_sst2("validation", data_dir=data_dir).num_rows == 872


def test_conll_counts_entities_and_documents(data_dir):
    ds = load_conll(data_dir=data_dir)
    assert {k: len(v) for k, v in ds.items()} == {"train": 14041, "valid": 3250, "test": 3453}
    assert entity_counts(ds["train"]["ner_tags"]) == {"PER": 6600, "LOC": 7140, "ORG": 6321,
                                                      "MISC": 3438}
    assert len(set(ds["train"]["document_id"])) == 946
    assert len(set(ds["test"]["document_id"])) == 231
    assert sum(len(t) for t in ds["valid"]["tokens"]) == 51362
    first = ds["train"][0]
    assert first["tokens"][:3] == ["EU", "rejects", "German"]
    assert first["ner_tags"][:3] == ["B-ORG", "O", "B-MISC"]


def test_label_lists_cover_the_data(data_dir):
    from ktlab.data import CHUNK_LABELS, NER_LABELS, POS_LABELS
    ds = load_conll("train", data_dir=data_dir)
    for column, labels in (("pos_tags", POS_LABELS), ("chunk_tags", CHUNK_LABELS),
                           ("ner_tags", NER_LABELS)):
        seen = {t for tags in ds[column] for t in tags}
        assert seen <= set(labels), seen - set(labels)


def test_iob1_to_iob2():
    assert iob1_to_iob2(["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"]) == \
        ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG"]
    iob2 = ["B-PER", "I-PER", "B-PER", "O", "B-MISC"]
    assert iob1_to_iob2(iob2) == iob2  # IOB2 is left as it is


IOB2_TEXT = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O


BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O

Paris NNP B-NP B-LOC
Lyon NNP B-NP B-LOC"""

IOB1_TEXT = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
call NN I-NP O

Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP I-LOC
1996-08-22 CD I-NP O

Paris NNP I-NP I-LOC
Lyon NNP B-NP B-LOC
"""


def test_iob1_and_iob2_renderings_load_identically(tmp_path):
    iob2 = tmp_path / "train.txt"
    iob2.write_bytes(IOB2_TEXT.replace("\n", "\r\n").encode())   # CRLF, no final newline
    iob1 = tmp_path / "eng.train"
    iob1.write_text(IOB1_TEXT)
    a, b = read_conll(iob2), read_conll(iob1)
    assert a.to_list() == b.to_list()
    assert a.num_rows == 4
    assert a["document_id"] == [0, 0, 1, 1]
    assert a[3]["ner_tags"] == ["B-LOC", "B-LOC"]       # two adjacent LOC entities stay two
    assert a[0]["chunk_tags"] == ["B-NP", "B-VP", "B-NP", "I-NP"]


def test_conll_bad_line_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("EU NNP B-NP B-ORG\nrejects VBZ\n")
    with pytest.raises(DataCorruptError, match=r"bad.txt:2: expected 4 columns"):
        read_conll(bad)


def _copy_mirror(src, dst):
    shutil.copytree(src / "sst2", dst / "sst2")
    shutil.copytree(src / "conll2003", dst / "conll2003")
    for path in dst.rglob("*"):
        path.chmod(0o644 if path.is_file() else 0o755)
    return dst


def test_corrupt_mirror_file_is_refused(data_dir, tmp_path):
    root = _copy_mirror(data_dir, tmp_path / "mirror")
    dev = root / "sst2" / "dev.tsv"
    dev.write_bytes(dev.read_bytes().replace(b"\t1\n", b"\t0\n", 1))
    with pytest.raises(DataCorruptError, match="dev.tsv is corrupt.*ktlab data download"):
        load_sst2("dev", data_dir=root)
    assert load_sst2("train", data_dir=root).num_rows == 67349   # other files still load


def test_manifest_mirror_uses_its_own_digests(data_dir, tmp_path):
    root = _copy_mirror(data_dir, tmp_path / "mirror")
    dev = root / "sst2" / "dev.tsv"
    dev.write_bytes(dev.read_bytes().replace(b" \t", b"\t"))  # different bytes, same rows
    manifest = {"files": {"sst2/dev.tsv": {"sha256": mirror.sha256_file(dev), "rows": 872}}}
    (root / "manifest.json").write_text(json.dumps(manifest))
    assert load_sst2("dev", data_dir=root).num_rows == 872


@pytest.mark.parametrize("switch", [True, False])
def test_offline_without_mirror_fails_fast(tmp_path, monkeypatch, switch):
    monkeypatch.delenv("KTLAB_DATA_DIR", raising=False)
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    if switch:
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    if not switch and mirror.hub_offline_reason() is None:
        pytest.skip("this machine can reach the hub; the probe path is exercised offline only")
    start = time.monotonic()
    with pytest.raises(DataUnavailableError) as err:
        load_conll("train")
    assert time.monotonic() - start < 5
    message = str(err.value)
    assert "KTLAB_DATA_DIR" in message and "ktlab data download" in message


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown SST-2 split 'val'"):
        load_sst2("val")
    with pytest.raises(ValueError, match="unknown CoNLL-2003 split 'dev'"):
        load_conll("dev")


def test_subset_is_seeded_and_stratified(data_dir):
    train = load_sst2("train", data_dir=data_dir)
    a = subset(train, 2000, seed=0, stratify_by="label")
    b = subset(train, 2000, seed=0, stratify_by="label")
    c = subset(train, 2000, seed=1, stratify_by="label")
    assert a["idx"] == b["idx"] and a["idx"] != c["idx"]
    assert len(a) == 2000
    share = sum(a["label"]) / 2000
    assert abs(share - 37569 / 67349) < 0.001
    assert subset(train, None) is train
    with pytest.raises(ValueError, match="positive"):
        subset(train, 0)


def test_empty_mirror_folder_offline_names_the_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataUnavailableError, match="mirror folder .*empty has no SST-2"):
        load_sst2("dev", data_dir=tmp_path / "empty")


def test_hub_schema_maps_to_the_same_rows(data_dir):
    """The hub's integer-label layout (built here from real mirror rows) maps to our schema."""
    import datasets

    from ktlab.data import CHUNK_LABELS, NER_LABELS, POS_LABELS, conll, sst2

    ours = load_conll("valid", data_dir=data_dir).select(range(50))
    hub_features = datasets.Features({
        "id": datasets.Value("string"), "tokens": datasets.Sequence(datasets.Value("string")),
        "pos_tags": datasets.Sequence(datasets.ClassLabel(names=POS_LABELS)),
        "chunk_tags": datasets.Sequence(datasets.ClassLabel(names=CHUNK_LABELS)),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=NER_LABELS))})
    hub_rows = datasets.Dataset.from_dict({
        "id": ours["id"], "tokens": list(ours["tokens"]),
        "pos_tags": [[POS_LABELS.index(t) for t in s] for s in ours["pos_tags"]],
        "chunk_tags": [[CHUNK_LABELS.index(t) for t in s] for s in ours["chunk_tags"]],
        "ner_tags": [[NER_LABELS.index(t) for t in s] for s in ours["ner_tags"]]},
        features=hub_features)
    mapped = conll.from_hub_schema(hub_rows)
    assert mapped.features == ours.features
    for column in ("tokens", "pos_tags", "chunk_tags", "ner_tags"):
        assert list(mapped[column]) == list(ours[column])
    assert set(mapped["document_id"]) == {-1}

    dev = load_sst2("dev", data_dir=data_dir).select(range(20))
    glue = datasets.Dataset.from_dict(
        {"sentence": [s + " " for s in dev["sentence"]], "label": list(dev["label"]),
         "idx": list(dev["idx"])},
        features=datasets.Features({"sentence": datasets.Value("string"),
                                    "label": datasets.ClassLabel(names=["negative", "positive"]),
                                    "idx": datasets.Value("int32")}))
    assert sst2.from_hub_schema(glue).to_list() == dev.to_list()
