"""The bad-input list: each kind of bad input gets one clear message (the problem, the file and
line where there is one, and the fix) within seconds, and leaves no partial output behind.

Every input is a copy of a real file (the SST-2 / CoNLL-2003 mirror, the MiniLM teacher's
config.json), corrupted, truncated or edited in ``tmp_path``. Behaviours tested elsewhere are
named in the docstrings instead of being tested twice."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

from ktlab import config, models
from ktlab.cli import main
from ktlab.data import DataCorruptError, load_conll, load_sst2, read_conll
from ktlab.data import mirror, sst2
from ktlab.data.labelled import ClassificationTask
from ktlab.experiments import classify, ner
from test_data import _copy_mirror
from test_labelled import sst2_head

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: Seconds within which every error must arrive (generous: a shared 2-core machine).
FAST = 10.0


@pytest.fixture
def root(data_dir, tmp_path) -> Path:
    """A writable copy of the whole mirror."""
    return _copy_mirror(data_dir, tmp_path / "mirror")


def one_line(message: str) -> str:
    assert "\n" not in message, message
    return message


def one_error_line(capsys) -> str:
    """The single ``error:`` line a failing command printed on stderr (and no traceback)."""
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert "error:" in lines[0] and "Traceback" not in lines[0], lines[0]
    return lines[0]


def assert_no_partial_output(out: Path) -> None:
    """A failed run leaves no results.json and no temporary or half-written file."""
    if not out.exists():
        return
    leftovers = [p for p in out.rglob("*") if p.is_file() and (
        p.name == "results.json" or p.suffix in (".tmp", ".partial")
        or p.name.startswith(".tmp"))]
    assert not leftovers, leftovers


def corrupt_errors(*reads) -> list[str]:
    """The one-line DataCorruptError message of each call; each must fail within seconds."""
    messages = []
    for read in reads:
        start = time.perf_counter()
        with pytest.raises(DataCorruptError) as err:
            read()
        assert time.perf_counter() - start < FAST
        messages.append(one_line(str(err.value)))
    return messages


def with_manifest(root: Path, *relpaths: str) -> None:
    """Record the current digests of ``relpaths`` in ``root/manifest.json`` (as ``ktlab data
    download`` does), so the readers see an edited file instead of a digest mismatch."""
    files = {rel: {"sha256": mirror.sha256_file(root / rel)} for rel in relpaths}
    (root / mirror.MANIFEST).write_text(json.dumps({"files": files}))


# ----------------------------------------------------------------------------- 1. corrupt file

def test_truncated_mirror_file_names_the_file_and_the_fix(root):
    """SST-2 train cut off mid-line (an interrupted copy): its load names the file and three
    fixes; SST-2 dev and CoNLL still load. A flipped label in dev.tsv is refused in
    test_data.py::test_corrupt_mirror_file_is_refused."""
    train = root / "sst2" / "train.tsv"
    data = train.read_bytes()
    train.write_bytes(data[: len(data) // 2])
    [message] = corrupt_errors(lambda: load_sst2("train", data_dir=root))
    assert f"{train} is corrupt or truncated" in message and f"{len(data) // 2:,} bytes" in message
    assert "re-copy this file" in message and "../shared/data/sst2/train.tsv" in message
    assert f"`ktlab data download --to {root}`" in message
    assert f"`ktlab data verify {root}`" in message
    # the other files are checked on their own and still load
    assert load_sst2("dev", data_dir=root).num_rows == 872
    assert load_conll("valid", data_dir=root).num_rows == 3250


def test_corrupt_mirror_file_through_the_cli(root, tmp_path, monkeypatch, capsys):
    """``ktlab run sentiment`` on a mirror whose train.tsv has one byte changed (same size):
    one error line, exit 1, within seconds, nothing written."""
    train = root / "sst2" / "train.tsv"
    data = bytearray(train.read_bytes())
    data[1000] = ord("#") if data[1000] != ord("#") else ord("$")
    train.write_bytes(bytes(data))
    monkeypatch.setenv("KTLAB_DATA_DIR", str(root))
    out = tmp_path / "run"
    start = time.perf_counter()
    assert main(["run", "sentiment", "--out", str(out), "--students", "bilstm"]) == 1
    assert time.perf_counter() - start < FAST
    line = one_error_line(capsys)
    assert f"{train} is corrupt" in line and "ktlab data verify" in line
    assert_no_partial_output(out)


# ----------------------------------------------------------------------------- 2. CoNLL, 3 cols

def test_conll_line_with_three_columns_names_file_and_line(root):
    """valid.txt with the NER column of line 5 ('LEICESTERSHIRE NNP B-NP B-ORG') dropped."""
    path = root / "conll2003" / "valid.txt"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[4].split() == ["LEICESTERSHIRE", "NNP", "B-NP", "B-ORG"]
    lines[4] = "LEICESTERSHIRE NNP B-NP"
    path.write_text("\n".join(lines), encoding="utf-8")
    # as a mirror file, its digest no longer matches: the sha256 check names it
    with pytest.raises(DataCorruptError, match="valid.txt is corrupt or truncated"):
        load_conll("valid", data_dir=root)
    # read directly (or through a manifest that matches the edit): the line is named
    with_manifest(root, "conll2003/valid.txt")
    for message in corrupt_errors(lambda: read_conll(path),
                                  lambda: load_conll("valid", data_dir=root)):
        assert message.startswith(f"{path}:5: expected 4 columns 'word POS chunk NER', got 3")
        assert "'LEICESTERSHIRE NNP B-NP'" in message and "fix that line" in message


# ----------------------------------------------------------------------------- 3. SST-2, extra tab

def test_sst2_line_with_an_extra_tab_names_file_and_line(root):
    """dev.tsv with the first space of line 3 turned into a tab. The labelled-file reader of
    ``ktlab run classify`` says the same (test_labelled.py::test_wrong_number_of_fields)."""
    path = root / "sst2" / "dev.tsv"
    lines = path.read_text(encoding="utf-8").split("\n")
    assert lines[2].startswith("unflinchingly bleak")
    lines[2] = lines[2].replace(" ", "\t", 1)
    path.write_text("\n".join(lines), encoding="utf-8")
    with_manifest(root, "sst2/dev.tsv")
    for message in corrupt_errors(lambda: sst2.read_tsv(path, "dev"),
                                  lambda: load_sst2("dev", data_dir=root)):
        assert message.startswith(f"{path}:3: expected 2 tab-separated columns")
        assert "got 3" in message and "replace it with a space" in message


def test_extra_tab_in_a_classify_file_through_the_cli(data_dir, tmp_path, capsys):
    """The same stray tab in a ``--train`` file: one error line naming file and line, exit 2."""
    lines = sst2_head(data_dir, "train", 60).decode("utf-8").split("\n")
    lines[6] = lines[6].replace(" ", "\t", 1)                 # line 7
    train, _, line = classify_cli_error(tmp_path, capsys, "\n".join(lines).encode("utf-8"),
                                        sst2_head(data_dir, "dev", 20))
    assert f"{train}:7: expected 2 tab-separated fields" in line and "got 3" in line


def classify_cli_error(tmp_path: Path, capsys, train_bytes: bytes, dev_bytes: bytes
                       ) -> tuple[Path, Path, str]:
    """``ktlab run classify`` on these train/dev bytes must stop within seconds with exit 2 and
    one error line, before anything is written; returns the two files and that line."""
    train, dev = tmp_path / "reviews.tsv", tmp_path / "reviews_dev.tsv"
    train.write_bytes(train_bytes)
    dev.write_bytes(dev_bytes)
    out = tmp_path / "run"
    start = time.perf_counter()
    assert main(["run", "classify", "--train", str(train), "--dev", str(dev),
                 "--out", str(out)]) == 2
    assert time.perf_counter() - start < FAST
    assert not out.exists()
    return train, dev, one_error_line(capsys)


# ----------------------------------------------------------------------------- 4. --teacher DIR

def teacher_folder(tmp_path: Path, name: str, files: tuple[str, ...]) -> Path:
    """A folder holding some of the real MiniLM teacher's files (never its weights here)."""
    folder = tmp_path / name
    folder.mkdir()
    for file in files:
        shutil.copy(models.minilm_path() / file, folder / file)
    return folder


@pytest.mark.parametrize("files, problem", [
    (("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"), "no weights"),
    (("tokenizer.json", "vocab.txt"), "no config.json")])
def test_teacher_folder_without_weights(tmp_path, capsys, files, problem):
    folder = teacher_folder(tmp_path, "teacher", files)
    with pytest.raises(models.TeacherNotFoundError, match=problem):
        models.load_teacher(str(folder), num_labels=2, task="sequence")
    for experiment, code in (("sentiment", 1), ("ner", 2)):
        out = tmp_path / f"run-{experiment}"
        start = time.perf_counter()
        assert main(["run", experiment, "--teacher", str(folder), "--out", str(out)]) == code
        assert time.perf_counter() - start < FAST
        line = one_error_line(capsys)
        assert str(folder) in line and problem in line
        assert "save_pretrained" in line and "--teacher minilm" in line
        if problem == "no weights":
            assert "model.safetensors" in line and "pytorch_model.bin" in line
        assert_no_partial_output(out)


# ----------------------------------------------------------------------------- 5. KTLAB_DEVICE

def test_cuda_requested_without_cuda(monkeypatch, tmp_path, capsys):
    """``KTLAB_DEVICE=cuda`` where CUDA is missing (forced here, so GPU machines test it too):
    config.load, ``ktlab env`` and ``ktlab run`` each give the variable and the fix."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv("KTLAB_DEVICE", "cuda")
    with pytest.raises(config.DeviceError) as err:
        config.load(verbose=False)
    message = one_line(str(err.value))
    assert message.startswith("KTLAB_DEVICE=cuda asks for a CUDA GPU, but CUDA is not available")
    assert "unset KTLAB_DEVICE" in message and "KTLAB_DEVICE=cpu" in message
    assert isinstance(err.value, RuntimeError)       # what callers caught before

    for argv in (["env"], ["run", "sentiment", "--out", str(tmp_path / "run")]):
        start = time.perf_counter()
        assert main(argv) == 1
        assert time.perf_counter() - start < FAST
        line = one_error_line(capsys)
        assert "KTLAB_DEVICE=cuda" in line and "unset KTLAB_DEVICE" in line
    assert_no_partial_output(tmp_path / "run")

    monkeypatch.delenv("KTLAB_DEVICE")               # an argument is named as an argument
    with pytest.raises(config.DeviceError, match=r"device='cuda:1' asks .*pass device='cpu'"):
        config.load(device="cuda:1", verbose=False)


def test_unknown_device_name(monkeypatch):
    monkeypatch.setenv("KTLAB_DEVICE", "gpu")
    with pytest.raises(config.DeviceError, match="KTLAB_DEVICE=gpu is not a torch device name"):
        config.pick_device()
    monkeypatch.setenv("KTLAB_DEVICE", "cpu")
    assert config.load(verbose=False).device == "cpu"


# ----------------------------------------------------------------------------- 6. truncation

MAX_LENGTH = 12


def test_classify_run_counts_truncated_sentences(data_dir, tmp_path, tokenizer):
    """SST-2 at max_length 12: the dev sentences cut are counted in results.json and logged.
    (The counter itself: test_collate.py::test_truncation_never_crashes_and_is_reported.)"""
    sizes = dataclasses.replace(classify.PROFILE_SIZES["tiny"], max_length=MAX_LENGTH)
    log: list[str] = []
    results = classify.run("quick", teacher="minilm", students=["bilstm"], sizes=sizes,
                           conditions={"bilstm": ("hard",)}, out_dir=tmp_path / "run", seed=0,
                           plots=False, log=log.append)
    dev = load_sst2("dev", data_dir=data_dir)
    lengths = [len(tokenizer(dev[i]["sentence"])["input_ids"]) for i in results["dev"]["idx"]]
    expected_dev = sum(n > MAX_LENGTH for n in lengths)
    assert 0 < expected_dev < len(lengths)
    on_disk = classify.load_results(tmp_path / "run")
    for data in (results["data"], on_disk["data"]):
        per_split = data["truncated_per_split"]
        assert per_split["dev"] == expected_dev
        assert data["truncated"] == sum(per_split.values())
        assert data["encoded"] == data["student_train"] + data["transfer_augmented"] + data["dev"]
    line = next(x for x in log if f"max_length {MAX_LENGTH}:" in x)
    assert f"{results['data']['truncated']} of {results['data']['encoded']} inputs truncated" \
        in line and f"dev {expected_dev}" in line


def lost_words(tokenizer, sentences, max_length: int) -> int:
    """Sentences whose last word starts beyond the ``max_length - 1`` sub-tokens kept before
    [SEP] (counted from an untruncated encoding, independently of ``encode_tagged``)."""
    lost = 0
    for words in sentences:
        word_ids = tokenizer(list(words), is_split_into_words=True).word_ids()
        first_of_last = word_ids.index(len(words) - 1)
        lost += first_of_last > max_length - 2
    return lost


def test_ner_run_counts_truncated_sentences(data_dir, tmp_path, tokenizer):
    """CoNLL at max_length 12: results.json and the log say how many sentences lost words."""
    sizes = dataclasses.replace(ner.PROFILE_SIZES["tiny"], max_length=MAX_LENGTH)
    log: list[str] = []
    results = ner.run("quick", teacher="minilm", students="bilstm", sizes=sizes, seed=0,
                      conditions={"bilstm": ("hard",)}, out_dir=tmp_path / "run", plots=False,
                      log=log.append)
    data = ner.load_data(sizes, 0, data_dir)
    splits = ("train", "teacher_train", "dev", "test")
    expected = sum(lost_words(tokenizer, data[s]["tokens"], MAX_LENGTH) for s in splits)
    assert expected > 0
    recorded = ner.load_results(tmp_path / "run")["data"]
    assert recorded["truncated"] == results["data"]["truncated"] == expected
    assert recorded["encoded"] == sum(len(data[s]) for s in splits)
    assert any(f"{expected} of {recorded['encoded']} inputs truncated" in x for x in log)


# ----------------------------------------------------------------------------- 7. empty dev

def test_header_only_dev_file_through_the_cli(data_dir, tmp_path, capsys):
    """A dev file with the 'sentence<TAB>label' header and no rows."""
    _, dev, line = classify_cli_error(tmp_path, capsys, sst2_head(data_dir, "train", 60),
                                      sst2_head(data_dir, "dev", 0))
    assert f"{dev}: only a header line, no examples" in line and "add one example" in line


def test_empty_dev_list_in_the_library(data_dir, tmp_path, tokenizer):
    """A task whose dev columns are empty, and measure() handed no dev items."""
    train = load_sst2("train", data_dir=data_dir).select(range(40)).to_dict()
    task = ClassificationTask("reviews", train=train,
                              dev={"idx": [], "sentence": [], "label": []}, label_names=["0", "1"])
    sizes = classify.PROFILE_SIZES["tiny"]
    start = time.perf_counter()
    with pytest.raises(classify.ConfigError, match="the dev set of 'reviews' is empty"):
        classify.load_data(sizes, 0, data_dir, task)
    out = tmp_path / "run"
    with pytest.raises(classify.ConfigError, match="dev set of 'reviews' is empty"):
        classify.run("quick", students=["bilstm"], sizes=sizes, task=task, out_dir=out,
                     plots=False, log=lambda _: None)
    assert time.perf_counter() - start < FAST
    assert_no_partial_output(out)
    teacher = models.load_teacher("minilm")
    with pytest.raises(classify.ConfigError, match="measure\\('teacher'\\) got an empty dev list"):
        classify.measure("teacher", "teacher", "fine-tuned", teacher, [], sizes)
    with pytest.raises(classify.ConfigError, match="predict\\(\\) got no items"):
        classify.predict(teacher, [])
