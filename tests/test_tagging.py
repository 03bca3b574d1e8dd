"""Entity decoding, IOB2 repair, seqeval scores and the error breakdown."""
import pytest

from ktlab.tagging import decode_entities, error_breakdown, ner_scores, repair_iob2


def test_decode_entities():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O", "B-MISC"]
    assert decode_entities(tags) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 6), ("MISC", 7, 8)]
    assert decode_entities(["O", "O"]) == []


def test_repair_counts_changes():
    fixed, n = repair_iob2(["O", "I-PER", "I-PER", "B-LOC", "I-ORG"])
    assert fixed == ["O", "B-PER", "I-PER", "B-LOC", "B-ORG"] and n == 2


def test_scores_real_sentence_strict():
    gold = [["B-ORG", "O", "B-MISC", "O", "B-PER", "I-PER"]]
    perfect = ner_scores(gold, gold)
    assert perfect["f1"] == 100.0 and perfect["repaired_tags"] == 0
    pred = [["B-ORG", "O", "B-MISC", "O", "B-PER", "O"]]        # PER boundary wrong
    s = ner_scores(gold, pred)
    assert s["precision"] == pytest.approx(200 / 3) and s["recall"] == pytest.approx(200 / 3)
    assert s["per_type"]["PER"]["f1"] == 0.0 and s["per_type"]["ORG"]["f1"] == 100.0
    repaired = ner_scores(gold, [["I-ORG", "O", "I-MISC", "O", "B-PER", "I-PER"]])
    assert repaired["f1"] == 100.0 and repaired["repaired_tags"] == 2


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="lengths differ"):
        ner_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="1 gold sentences but 2"):
        ner_scores([["O"]], [["O"], ["O"]])


def test_error_breakdown():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG", "O"]]
    pred = [["B-PER", "O", "O", "B-ORG", "O", "O", "B-MISC"]]
    counts = error_breakdown(gold, pred)
    assert counts["boundary"] == 1 and counts["type"] == 1
    assert counts["spurious"] == 1 and counts["missed"] == 1 and counts["correct"] == 0
