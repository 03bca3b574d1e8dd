"""Entity-level evaluation of IOB2 tag sequences: decoding spans, repairing invalid sequences,
seqeval F1 in strict mode, and splitting errors into boundary and type errors.

Token accuracy flatters a tagger (most tokens are ``O``); CoNLL-2003 is scored on *entities*:
a predicted entity counts only if its type and both boundaries match the gold one exactly.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from ktlab.data.conll import iob1_to_iob2

Span = tuple[str, int, int]   # (type, start, end) with end exclusive


def decode_entities(tags: Sequence[str]) -> list[Span]:
    """Entity spans of a *valid* IOB2 sequence: ``B-X`` opens, ``I-X`` continues, anything
    else closes. (Repair invalid sequences first with :func:`repair_iob2`.)"""
    spans: list[Span] = []
    start, kind = None, None
    for i, tag in enumerate(list(tags) + ["O"]):
        continues = tag.startswith("I-") and kind == tag[2:]
        if start is not None and not continues:
            spans.append((kind, start, i))
            start, kind = None, None
        if tag.startswith("B-") or (tag.startswith("I-") and not continues):
            start, kind = i, tag[2:]
    return spans


def repair_iob2(tags: Sequence[str]) -> tuple[list[str], int]:
    """Make a predicted sequence valid IOB2 the standard way (an ``I-X`` that does not continue
    an ``X`` entity starts one: it becomes ``B-X``). Returns the tags and how many changed."""
    fixed = iob1_to_iob2(list(tags))
    return fixed, sum(a != b for a, b in zip(tags, fixed))


def ner_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict:
    """seqeval precision / recall / F1 (strict IOB2), overall and per entity type, in percent.

    Predictions are repaired first; ``repaired_tags`` counts the changed tags.
    """
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    repaired, changes = [], 0
    for g, p in zip(gold, pred):
        if len(g) != len(p):
            raise ValueError(f"sentence lengths differ: gold {len(g)} tags, predicted {len(p)}")
        fixed, n = repair_iob2(p)
        repaired.append(fixed)
        changes += n
    report = classification_report([list(g) for g in gold], repaired, mode="strict", scheme=IOB2,
                                   output_dict=True, zero_division=0)
    overall = report["micro avg"]
    out = {"precision": 100 * overall["precision"], "recall": 100 * overall["recall"],
           "f1": 100 * overall["f1-score"], "repaired_tags": changes, "per_type": {}}
    for kind, row in report.items():
        if kind not in ("micro avg", "macro avg", "weighted avg"):
            out["per_type"][kind] = {"precision": 100 * row["precision"],
                                     "recall": 100 * row["recall"], "f1": 100 * row["f1-score"],
                                     "support": int(row["support"])}
    return out


def error_breakdown(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> Counter:
    """Classify every wrong entity: ``type`` (same span, wrong type), ``boundary`` (overlaps a
    gold entity of the same type with other boundaries), ``type+boundary``, ``spurious``
    (overlaps nothing), and ``missed`` gold entities that no prediction touches."""
    counts: Counter = Counter()
    for g_tags, p_tags in zip(gold, pred):
        g_spans = set(decode_entities(g_tags))
        p_spans = set(decode_entities(repair_iob2(p_tags)[0]))
        counts["correct"] += len(g_spans & p_spans)
        for kind, s, e in p_spans - g_spans:
            overlaps = [(gk, gs, ge) for gk, gs, ge in g_spans if gs < e and s < ge]
            if not overlaps:
                counts["spurious"] += 1
            elif any((gs, ge) == (s, e) for _, gs, ge in overlaps):
                counts["type"] += 1
            elif any(gk == kind for gk, _, _ in overlaps):
                counts["boundary"] += 1
            else:
                counts["type+boundary"] += 1
        for kind, s, e in g_spans - p_spans:
            if not any(ps < e and s < pe for _, ps, pe in p_spans):
                counts["missed"] += 1
    return counts


def sentence_entity_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]],
                           entity_type: str | None = None) -> list[tuple[int, int, int]]:
    """Per sentence: (correct, predicted, gold) entity counts under the rules of
    :func:`ner_scores` (predictions repaired, a span counts only with its type and both
    boundaries right); ``entity_type`` keeps only the entities of one type.

    Summed over any set of sentences they give seqeval's strict micro F1 as
    ``2 * correct / (predicted + gold)``: the resampling unit of a sentence-level bootstrap
    (:func:`ktlab.metrics.bootstrap_f1_interval`)."""
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    out = []
    for g_tags, p_tags in zip(gold, pred):
        if len(g_tags) != len(p_tags):
            raise ValueError(f"sentence lengths differ: gold {len(g_tags)} tags, predicted "
                             f"{len(p_tags)}")
        g_spans = set(decode_entities(g_tags))
        p_spans = set(decode_entities(repair_iob2(p_tags)[0]))
        if entity_type is not None:
            g_spans = {s for s in g_spans if s[0] == entity_type}
            p_spans = {s for s in p_spans if s[0] == entity_type}
        out.append((len(g_spans & p_spans), len(p_spans), len(g_spans)))
    return out
