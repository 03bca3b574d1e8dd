"""Dynamic padding, word <-> sub-word label alignment and truncation on real text."""
import torch

from ktlab.data import (IGNORE_INDEX, NER_LABELS, PadCollator, TruncationReport, align_labels,
                        encode_sentences, encode_tagged, labels_to_words)


def test_align_labels_first_subtoken_and_all_subtokens():
    word_ids = [None, 0, 1, 1, 1, 2, None]
    assert align_labels(word_ids, [5, 1, 0]) == [-100, 5, 1, -100, -100, 0, -100]
    assert align_labels(word_ids, [5, 1, 0], label_all_subtokens=True) == \
        [-100, 5, 1, 1, 1, 0, -100]


def test_alignment_round_trip_on_real_sentence(tokenizer):
    tokens = ["Kuala", "Lumpur", "hosted", "Wimbledon-style", "tennis", "."]
    tags = [NER_LABELS.index(t) for t in ["B-LOC", "I-LOC", "O", "B-MISC", "O", "O"]]
    (item,) = encode_tagged(tokenizer, [tokens], [tags])
    pieces = tokenizer.convert_ids_to_tokens(item["input_ids"])
    assert "##ala" in pieces or len(pieces) > len(tokens) + 2   # sub-words really appear
    labelled = [lab for lab in item["labels"] if lab != IGNORE_INDEX]
    assert labelled == tags                                     # one label per word
    assert labels_to_words(item["word_ids"], item["labels"]) == tags


def test_truncation_never_crashes_and_is_reported(tokenizer):
    report = TruncationReport()
    long_sentence = " ".join(["wonderful"] * 600)
    items = encode_sentences(tokenizer, ["short one .", long_sentence], max_length=32,
                             report=report)
    assert len(items[1]["input_ids"]) == 32
    assert items[1]["input_ids"][-1] == tokenizer.sep_token_id
    assert (report.total, report.truncated) == (2, 1)
    assert "1 of 2 inputs truncated" in str(report)

    tag_report = TruncationReport()
    words = ["Paris"] * 300
    (item,) = encode_tagged(tokenizer, [words], [[5] * 300], max_length=16, report=tag_report)
    assert len(item["input_ids"]) == 16 and tag_report.truncated == 1
    restored = labels_to_words(item["word_ids"], item["labels"], num_words=300, fill=-1)
    assert len(restored) == 300 and restored[:14] == [5] * 14 and restored[-1] == -1


def test_no_sentences_encode_to_no_items(tokenizer):
    """An empty transfer set (augment_per_sentence=0) is a valid input, not an IndexError from
    the fast tokenizer."""
    report = TruncationReport()
    assert encode_sentences(tokenizer, [], max_length=32, report=report) == []
    assert report.total == 0


def test_pad_collator_shapes_and_masks(tokenizer):
    items = encode_sentences(tokenizer, ["a fine film .", "bad"], max_length=64)
    items[0]["labels"], items[1]["labels"] = 1, 0
    batch = PadCollator(tokenizer.pad_token_id)(items)
    assert batch["input_ids"].shape == batch["attention_mask"].shape
    assert batch["attention_mask"].sum(1).tolist() == [len(items[0]["input_ids"]),
                                                       len(items[1]["input_ids"])]
    assert batch["labels"].tolist() == [1, 0]
    tagged = encode_tagged(tokenizer, [["EU", "rejects"], ["Peter"]], [[3, 0], [1]])
    tbatch = PadCollator(tokenizer.pad_token_id)([{k: v for k, v in t.items() if k != "word_ids"}
                                                  for t in tagged])
    assert tbatch["labels"].shape == tbatch["input_ids"].shape
    assert (tbatch["labels"][1, tbatch["attention_mask"][1] == 0] == IGNORE_INDEX).all()
    assert tbatch["input_ids"].dtype == torch.long
