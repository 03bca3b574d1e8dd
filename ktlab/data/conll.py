"""CoNLL-2003 English NER in one schema, from IOB2 or original IOB1 files.

Each example is one sentence::

    id: str, document_id: int, tokens: list[str],
    pos_tags, chunk_tags, ner_tags: list[str]   (chunk and NER tags in IOB2)

The reader accepts the IOB2 ``train/valid/test.txt`` files and the original IOB1
``eng.train / eng.testa / eng.testb`` files (converted to IOB2), ``-DOCSTART-`` lines anywhere,
runs of blank lines, CRLF line endings and a missing final newline. Document boundaries are kept
in ``document_id`` (NSP pretraining and document-level context need them).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

import datasets

from ktlab.data import mirror

SPLITS = ("train", "valid", "test")
HUB_ID, HUB_REVISION = "eriktks/conll2003", "convert/parquet"
_HUB_SPLIT = {"train": "train", "valid": "validation", "test": "test"}

NER_LABELS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
ENTITY_TYPES = ["PER", "LOC", "ORG", "MISC"]
POS_LABELS = ['"', "''", "#", "$", "(", ")", ",", ".", ":", "``", "CC", "CD", "DT", "EX", "FW",
              "IN", "JJ", "JJR", "JJS", "LS", "MD", "NN", "NNP", "NNPS", "NNS", "NN|SYM", "PDT",
              "POS", "PRP", "PRP$", "RB", "RBR", "RBS", "RP", "SYM", "TO", "UH", "VB", "VBD",
              "VBG", "VBN", "VBP", "VBZ", "WDT", "WP", "WP$", "WRB"]
CHUNK_LABELS = ["O", "B-ADJP", "I-ADJP", "B-ADVP", "I-ADVP", "B-CONJP", "I-CONJP", "B-INTJ",
                "I-INTJ", "B-LST", "I-LST", "B-NP", "I-NP", "B-PP", "I-PP", "B-PRT", "I-PRT",
                "B-SBAR", "I-SBAR", "B-UCP", "I-UCP", "B-VP", "I-VP"]
LABEL_LISTS = {"ner": NER_LABELS, "pos": POS_LABELS, "chunk": CHUNK_LABELS}

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "document_id": datasets.Value("int32"),
    "tokens": datasets.Sequence(datasets.Value("string")),
    "pos_tags": datasets.Sequence(datasets.Value("string")),
    "chunk_tags": datasets.Sequence(datasets.Value("string")),
    "ner_tags": datasets.Sequence(datasets.Value("string")),
})


def iob1_to_iob2(tags: list[str]) -> list[str]:
    """Make every chunk start with ``B-``. IOB2 input comes back unchanged.

    In IOB1 a chunk starts with ``I-`` unless it directly follows a chunk of the same type;
    so an ``I-X`` after ``O`` or after a tag of another type opens a new chunk.
    """
    out = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and (previous == "O" or previous[2:] != tag[2:]):
            tag = "B-" + tag[2:]
        out.append(tag)
        previous = tag
    return out


def parse_conll_lines(lines: Iterable[str], source: str = "<lines>") -> dict[str, list]:
    """Parse ``word POS chunk NER`` lines into column lists, one entry per sentence.

    A document is the run of sentences after a ``-DOCSTART-`` line; sentences before the first
    marker form a document of their own. A document id is given when a document's first sentence
    is read, so ids run 0..n-1 in file order and a marker with no sentences after it (one at the
    end of the file, say) opens no document.
    """
    rows = {name: [] for name in FEATURES}
    document = -1
    new_document = True          # the start of the file opens a document, like a marker
    sentence: list[list[str]] = []

    def flush() -> None:
        nonlocal document, new_document
        if not sentence:
            return
        if new_document:
            document += 1
            new_document = False
        columns = list(zip(*sentence))
        rows["id"].append(str(len(rows["id"])))
        rows["document_id"].append(document)
        rows["tokens"].append(list(columns[0]))
        rows["pos_tags"].append(list(columns[1]))
        rows["chunk_tags"].append(iob1_to_iob2(list(columns[2])))
        rows["ner_tags"].append(iob1_to_iob2(list(columns[3])))
        sentence.clear()

    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r\n").strip()
        if not line:
            flush()
            continue
        if line.startswith("-DOCSTART-"):
            flush()
            new_document = True
            continue
        cols = line.split()
        if len(cols) != 4:
            raise mirror.DataCorruptError(
                f"{source}:{number}: expected 4 columns 'word POS chunk NER', "
                f"got {len(cols)}: {line[:60]!r}; fix that line (every token line needs all 4 "
                "columns; a blank line ends a sentence), or restore the original file "
                "(`ktlab data verify` checks a mirror)")
        sentence.append(cols)
    flush()
    return rows


def read_conll(path: str | Path, split: str = "train") -> datasets.Dataset:
    """Read one CoNLL-2003 file (IOB1 or IOB2) into a :class:`datasets.Dataset`."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        text = handle.read()
    rows = parse_conll_lines(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"),
                             source=str(path))
    return datasets.Dataset.from_dict(rows, features=FEATURES, split=split)


def _from_hub(split: str) -> datasets.Dataset:
    raw = datasets.load_dataset(HUB_ID, revision=HUB_REVISION, split=_HUB_SPLIT[split])
    return from_hub_schema(raw)


def from_hub_schema(raw: datasets.Dataset) -> datasets.Dataset:
    """Map the hub's integer ClassLabel columns to ktlab's IOB2 string schema.

    The hub copy marks no documents, so ``document_id`` is -1 there.
    """
    names = {col: raw.features[col].feature.names for col in ("pos_tags", "chunk_tags", "ner_tags")}

    def to_strings(ex: dict, i: int) -> dict:
        tags = {col: [names[col][t] for t in ex[col]] for col in names}
        return {"id": str(i), "document_id": -1, "tokens": ex["tokens"],
                "pos_tags": tags["pos_tags"], "chunk_tags": iob1_to_iob2(tags["chunk_tags"]),
                "ner_tags": iob1_to_iob2(tags["ner_tags"])}

    return raw.map(to_strings, with_indices=True, remove_columns=raw.column_names,
                   features=FEATURES)


def load_conll(split: Optional[str] = None, data_dir: Optional[str | Path] = None
               ) -> datasets.Dataset | datasets.DatasetDict:
    """Load CoNLL-2003: from the mirror (``data_dir`` or ``KTLAB_DATA_DIR``), else the hub.

    ``split`` is ``train``, ``valid`` (alias ``validation``) or ``test``; ``None`` gives all three.
    """
    if split is None:
        return datasets.DatasetDict({s: load_conll(s, data_dir) for s in SPLITS})
    if split == "validation":
        split = "valid"
    if split not in SPLITS:
        raise ValueError(f"unknown CoNLL-2003 split {split!r}; choose one of {SPLITS}")
    root = mirror.mirror_root(data_dir)
    if mirror.mirror_has(root, "conll2003", split):
        return read_conll(mirror.verified_mirror_file(root, "conll2003", split), split)
    reason = mirror.hub_offline_reason()
    if reason:
        raise mirror.no_data_error("CoNLL-2003", root, reason)
    return _from_hub(split)


def entity_counts(ner_tags: Iterable[list[str]]) -> dict[str, int]:
    """Number of entities (``B-`` tags in IOB2) per type."""
    counts = {t: 0 for t in ENTITY_TYPES}
    for tags in ner_tags:
        for tag in tags:
            if tag.startswith("B-"):
                counts[tag[2:]] = counts.get(tag[2:], 0) + 1
    return counts
