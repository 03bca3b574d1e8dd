"""Document ids do not depend on the file starting with ``-DOCSTART-`` (real CoNLL-2003 files)."""
from __future__ import annotations

import pytest

from ktlab.data import read_conll

TAGS = ("tokens", "pos_tags", "chunk_tags", "ner_tags")


def _column(ds, name: str) -> list:
    return ds.data.column(name).to_pylist()      # plain lists: fast to compare


def _first_marker(lines: list[str]) -> int:
    return next(i for i, line in enumerate(lines) if line.strip().startswith("-DOCSTART-"))


def _without_first_marker(lines: list[str]) -> tuple[list[str], str]:
    """The lines less the first marker and the blank line after it, if any; and the marker."""
    i = _first_marker(lines)
    end = i + 2 if i + 1 < len(lines) and not lines[i + 1].strip() else i + 1
    return lines[:i] + lines[end:], lines[i]


@pytest.mark.parametrize("split, documents", [("train", 946), ("valid", 216)])
def test_document_ids_without_a_leading_marker(data_dir, tmp_path, split, documents):
    src = data_dir / "conll2003" / f"{split}.txt"
    with open(src, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    assert lines[0].startswith("-DOCSTART-")          # the real file does start with a marker

    removed, marker = _without_first_marker(lines)
    assert not removed[0].startswith("-DOCSTART-")
    no_first = tmp_path / f"{split}-no-first-marker.txt"
    no_first.write_text("".join(removed), encoding="utf-8", newline="")
    moved = tmp_path / f"{split}-marker-at-end.txt"
    tail = "" if removed[-1].endswith("\n") else "\n"
    moved.write_text("".join(removed) + tail + marker.rstrip("\r\n") + "\n",
                     encoding="utf-8", newline="")

    original = read_conll(src, split)
    variants = {"no first marker": read_conll(no_first, split),
                "first marker at the end": read_conll(moved, split)}

    ids = _column(original, "document_id")
    assert len(set(ids)) == documents
    assert ids[0] == 0 and ids[-1] == documents - 1
    assert all(b - a in (0, 1) for a, b in zip(ids, ids[1:]))     # 0..n-1 in file order
    for name, ds in variants.items():
        assert ds.num_rows == original.num_rows, name
        for column in TAGS:
            assert _column(ds, column) == _column(original, column), (name, column)
        doc_ids = _column(ds, "document_id")
        assert len(set(doc_ids)) == documents, name
        # the sentences before the first marker are a document of their own, with id 0
        assert doc_ids == ids, name
