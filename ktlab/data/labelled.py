"""Your own labelled text-classification data, for ``ktlab run classify --train F --dev F``.

A file holds one example per row: a text and a label. Three formats, chosen by the extension:

* ``.tsv``  - tab-separated with a header line (``sentence<TAB>label``, like GLUE SST-2);
* ``.csv``  - comma-separated with a header line, read with the ``csv`` module (quoted fields OK);
* ``.jsonl`` / ``.json`` - one JSON object per line, e.g. ``{"text": "...", "label": "pos"}``.

The text column defaults to the first of ``sentence``/``text`` present, the label column to
``label``. A name that is not a local file (``hub:NAME[:CONFIG]``, or a string without a file
suffix) is loaded from the Hugging Face hub (``train`` and ``validation`` splits).

Labels are kept as strings and numbered after sorting (numerically when they are all integers),
so ``0``/``1`` stay ids 0/1. Every problem is a :class:`DataFormatError` whose one-line message
names the file, the line (the header is line 1) and the fix.
"""
from __future__ import annotations

import codecs
import csv
import dataclasses
import io
import json
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ktlab.data import mirror

FORMATS = {".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl"}
TEXT_COLUMNS = ("sentence", "text")
LABEL_COLUMN = "label"
HUB_PREFIX = "hub:"
_HUB_SPLITS = {"train": ("train",), "dev": ("validation", "dev", "test")}

Rows = tuple[list[str], list[str], list[int]]


class DataFormatError(ValueError):
    """A labelled file cannot be used; the message names the file and line and the fix."""


@dataclasses.dataclass
class ClassificationTask:
    """Train and dev columns in ``load_sst2``'s shape, plus the label names behind the ids."""

    name: str
    train: dict
    dev: dict
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ----------------------------------------------------------------------------- reading files

def _decode(path: Path, encoding: str) -> str:
    """Bytes to text without a BOM; a decoding error says on which line the bad byte sits."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode(encoding)
    except LookupError:
        raise DataFormatError(f"{path}: unknown encoding {encoding!r}; pass a Python codec name "
                              "such as --encoding utf-8 or --encoding latin-1") from None
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}:{line}: byte 0x{data[err.start]:02x} is not valid {encoding}; pass "
            f"--encoding latin-1 (or the file's encoding), or re-save the file as UTF-8") from None
    return text.lstrip("\ufeff")


def _check_header(path: Path, header: list[str]) -> list[str]:
    """Strip header names and refuse duplicates (which column would be meant?)."""
    names = [h.strip() for h in header]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataFormatError(f"{path}:1: the header names column {name!r} twice; rename one "
                                  "of them so every column name is unique")
        seen.add(name)
    return names


def _table_lines(path: Path, text: str, fmt: str) -> tuple[list[str], list[tuple[int, list]]]:
    """Header and ``(line, fields)`` of a TSV or CSV file; blank lines are skipped."""
    if fmt == "tsv":  # plain split: SST-2 style TSV does not quote, so quotes are just text
        lines = [(n, raw.rstrip("\r").split("\t"))
                 for n, raw in enumerate(text.split("\n"), start=1) if raw.strip()]
    else:
        lines = []
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        try:
            for fields in reader:
                if any(f.strip() for f in fields):
                    lines.append((start, fields))
                start = reader.line_num + 1  # a quoted field may span lines
        except csv.Error as err:
            raise DataFormatError(f"{path}:{start}: CSV error ({err}); check for an unclosed "
                                  "quote on that line") from None
    if not lines:
        raise DataFormatError(f"{path}: the file is empty; write a header line and one example "
                              "per row")
    return _check_header(path, lines[0][1]), lines[1:]


def _table_records(path: Path, fmt: str, header: list[str],
                   lines: list[tuple[int, list]]) -> list[tuple[int, dict]]:
    """Rows as ``{column: value}``; a row with more or fewer fields than the header is an error."""
    records = []
    for number, fields in lines:
        if len(fields) != len(header):
            sep = "tab" if fmt == "tsv" else "comma"
            fix = "quote the field" if fmt == "csv" else "replace it with a space"
            raise DataFormatError(
                f"{path}:{number}: expected {len(header)} {sep}-separated fields (like the "
                f"header), got {len(fields)}; fix that row (a stray {sep} in the text? {fix})")
        records.append((number, dict(zip(header, fields))))
    return records


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """``json.loads`` hook: a repeated key would silently keep the last value."""
    keys = [k for k, _ in pairs]
    for key in keys:
        if keys.count(key) > 1:
            raise ValueError(f"duplicate key {key!r}")
    return dict(pairs)


def _json_records(path: Path, text: str) -> tuple[list[str], list[tuple[int, dict]]]:
    """Keys of the first object and ``(line, object)`` records of a JSON Lines file."""
    records = []
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw, object_pairs_hook=_unique_keys)
        except ValueError as err:
            hint = ("the file looks like one JSON array; write one object per line (JSON Lines)"
                    if not records and raw.lstrip().startswith("[") else
                    "write one complete JSON object per line")
            raise DataFormatError(f"{path}:{number}: invalid JSON ({err}); {hint}") from None
        if not isinstance(obj, dict):
            raise DataFormatError(f"{path}:{number}: expected a JSON object like "
                                  f'{{"text": ..., "label": ...}}, got {type(obj).__name__}')
        records.append((number, obj))
    if not records:
        raise DataFormatError(f"{path}: the file is empty; write one JSON object per line")
    return list(records[0][1]), records


def _pick_columns(where: str, columns: Sequence[str], text_column: Optional[str],
                  label_column: Optional[str]) -> tuple[str, str]:
    """The text and label columns to read, or an error listing the columns that exist."""
    found = ", ".join(repr(c) for c in columns)
    tabbed = any("\t" in c for c in columns)
    hint = " (the file looks tab-separated: name it .tsv)" if tabbed else ""
    if text_column is None:
        text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
        if text_column is None:
            raise DataFormatError(f"{where}: no text column 'sentence' or 'text' (found {found})"
                                  f"{hint}; pass --text-column NAME")
    elif text_column not in columns:
        raise DataFormatError(f"{where}: no text column {text_column!r} (found {found}){hint}; "
                              "pass --text-column NAME")
    label_column = LABEL_COLUMN if label_column is None else label_column
    if label_column not in columns:
        raise DataFormatError(f"{where}: no label column {label_column!r} (found {found}){hint}; "
                              "pass --label-column NAME")
    if label_column == text_column:
        raise DataFormatError(f"{where}: text and label are both column {text_column!r}; pass "
                              "different --text-column and --label-column")
    return text_column, label_column


def _as_label(value: Any) -> Optional[str]:
    """A label as a string: strings and integers are fine, anything else is a mistake."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _rows(where: Callable[[int], str], records: list[tuple[int, dict]], text_column: str,
          label_column: str) -> Rows:
    """Texts, labels and line numbers from records; empty or missing values name their line.

    ``where(number)`` says where a record is, e.g. ``train.tsv:7`` or ``imdb[train] row 7``.
    """
    texts, labels, lines = [], [], []
    for number, record in records:
        at = where(number)
        for column in (text_column, label_column):
            if column not in record:
                raise DataFormatError(f"{at}: no {column!r} field (found "
                                      f"{', '.join(map(repr, record))}); add it to that line")
        text = record[text_column]
        if not isinstance(text, str) or not text.strip():
            raise DataFormatError(f"{at}: empty text in column {text_column!r}; write the text "
                                  "or delete that row")
        label = _as_label(record[label_column])
        if label is None:
            raise DataFormatError(f"{at}: label {record[label_column]!r} in column "
                                  f"{label_column!r} is not a non-empty string or integer; fix "
                                  "the label or delete that row")
        texts.append(text.strip())
        labels.append(label)
        lines.append(number)
    return texts, labels, lines


# ----------------------------------------------------------------------------- the hub

def is_hub_name(source: str | Path) -> bool:
    """``hub:NAME`` always; otherwise a string with no file suffix that is not a local path."""
    text = str(source)
    if text.startswith(HUB_PREFIX):
        return True
    return not Path(text).exists() and Path(text).suffix == "" and not text.endswith(("/", "\\"))


def _read_hub(source: str, split: str, text_column: Optional[str],
              label_column: Optional[str]) -> Rows:
    """One split of a hub dataset; offline machines get a quick, clear error instead of retries."""
    name = source[len(HUB_PREFIX):] if source.startswith(HUB_PREFIX) else source
    name, _, config = name.partition(":")
    reason = mirror.hub_offline_reason()
    if reason:
        raise DataFormatError(f"{source} is not a file here and the hub is unreachable "
                              f"({reason}): pass a local .tsv/.csv/.jsonl")
    import datasets

    try:
        loaded = datasets.load_dataset(name, config or None)
    except Exception as err:  # the hub raises many types; the user needs the first line of one
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise DataFormatError(f"{source}: could not load it from the hub "
                              f"({err.__class__.__name__}: {first}); check the name, or pass a "
                              "local .tsv/.csv/.jsonl") from None
    chosen = next((s for s in _HUB_SPLITS[split] if s in loaded), None)
    if chosen is None:
        raise DataFormatError(f"{source}: no {' or '.join(_HUB_SPLITS[split])} split (found "
                              f"{', '.join(loaded)}); pass a local file for --{split}")
    ds = loaded[chosen]
    where = f"{source}[{chosen}]"
    text_col, label_col = _pick_columns(where, ds.column_names, text_column, label_column)
    records = [(i, {text_col: t, label_col: y})
               for i, (t, y) in enumerate(zip(ds[text_col], ds[label_col]), start=1)]
    return _rows(lambda n: f"{where} row {n}", records, text_col, label_col)


# ----------------------------------------------------------------------------- public API

def read_labelled_file(path: str | Path, text_column: Optional[str] = None,
                       label_column: Optional[str] = None, encoding: str = "utf-8") -> Rows:
    """Texts, raw label strings and 1-based line numbers (header = line 1) of one local file."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataFormatError(f"{path}: {what}; check the path (or use hub:NAME for a Hugging "
                              "Face dataset)")
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise DataFormatError(f"{path}: unknown extension {path.suffix!r}; accepted are "
                              f"{', '.join(FORMATS)} - rename the file to match its format")
    text = _decode(path, encoding)
    if fmt == "jsonl":
        columns, records = _json_records(path, text)
        header_line = records[0][0]
    else:
        columns, lines = _table_lines(path, text, fmt)
        if not lines:
            raise DataFormatError(f"{path}: only a header line, no examples; add one example "
                                  "per row")
        header_line = 1
    text_col, label_col = _pick_columns(f"{path}:{header_line}", columns, text_column,
                                        label_column)
    if fmt != "jsonl":  # columns first: a wrong delimiter is clearer as "no column 'label'"
        records = _table_records(path, fmt, columns, lines)
    return _rows(lambda n: f"{path}:{n}", records, text_col, label_col)


def _read_source(source: str | Path, split: str, text_column: Optional[str],
                 label_column: Optional[str], encoding: str) -> Rows:
    if is_hub_name(source):
        return _read_hub(str(source), split, text_column, label_column)
    return read_labelled_file(source, text_column, label_column, encoding)


def sort_labels(labels: set[str]) -> list[str]:
    """Numeric order when every label is an integer (``"2" < "10"``), else alphabetical."""
    try:
        return sorted(labels, key=lambda y: (int(y), y))
    except ValueError:
        return sorted(labels)


def _columns(texts: list[str], labels: list[str], label_names: list[str]) -> dict:
    ids = {name: i for i, name in enumerate(label_names)}
    return {"idx": list(range(len(texts))), "sentence": texts,
            "label": [ids[y] for y in labels]}


def load_classification_task(train: str | Path, dev: str | Path,
                             text_column: Optional[str] = None,
                             label_column: Optional[str] = None, encoding: str = "utf-8",
                             name: Optional[str] = None) -> ClassificationTask:
    """Read train and dev, check the labels make a task, and number them from train's labels.

    For a hub dataset pass the same name twice: train reads its ``train`` split, dev its
    ``validation`` split.
    """
    tr_texts, tr_labels, _ = _read_source(train, "train", text_column, label_column, encoding)
    dv_texts, dv_labels, dv_lines = _read_source(dev, "dev", text_column, label_column, encoding)
    classes = set(tr_labels)
    if len(classes) < 2:
        raise DataFormatError(f"{train}: every row has label {tr_labels[0]!r}; a classifier needs "
                              "at least 2 classes - add examples of the other classes")
    label_names = sort_labels(classes)
    unseen = {}
    for label, line in zip(dv_labels, dv_lines):
        if label not in classes:
            unseen.setdefault(label, line)
    if unseen:
        listed = ", ".join(f"{y!r} (first at line {n})" for y, n in unseen.items())
        raise DataFormatError(f"{dev}: labels never seen in {train}: {listed}; the model can only "
                              f"predict {', '.join(map(repr, label_names))} - fix the labels or "
                              "add training examples for them")
    if name is None:
        text = str(train)
        name = (text.split(":")[1] if text.startswith(HUB_PREFIX) else Path(text).stem) or text
    return ClassificationTask(name=name, train=_columns(tr_texts, tr_labels, label_names),
                              dev=_columns(dv_texts, dv_labels, label_names),
                              label_names=label_names)


def sst2_task(data_dir: Optional[str | Path] = None, train_size: Optional[int] = None,
              dev_size: Optional[int] = None, seed: int = 0) -> ClassificationTask:
    """SST-2 as a :class:`ClassificationTask` (labels ``"0"``/``"1"`` = ids 0/1, as in the file).

    Subsets are the stratified, seeded ones of :func:`ktlab.data.subset`, so ``classify`` on
    SST-2 sees the same rows as the sentiment experiments.
    """
    from ktlab.data.sst2 import load_sst2
    from ktlab.data.subsets import subset

    train = subset(load_sst2("train", data_dir), train_size, seed, stratify_by="label")
    dev = subset(load_sst2("dev", data_dir), dev_size, seed, stratify_by="label")
    return ClassificationTask(name="sst2", train=train.to_dict(), dev=dev.to_dict(),
                              label_names=["0", "1"])
