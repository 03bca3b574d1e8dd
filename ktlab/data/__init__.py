"""Data: SST-2 and CoNLL-2003 from an offline mirror or the hub, subsets and collation."""
from ktlab.data.collate import (IGNORE_INDEX, PadCollator, TruncationReport, align_labels,
                                encode_sentences, encode_tagged, labels_to_words)
from ktlab.data.conll import (CHUNK_LABELS, ENTITY_TYPES, LABEL_LISTS, NER_LABELS, POS_LABELS,
                              entity_counts, iob1_to_iob2, load_conll, read_conll)
from ktlab.data.mirror import DataCorruptError, DataUnavailableError
from ktlab.data.sst2 import LABELS as SST2_LABELS
from ktlab.data.sst2 import load_sst2
from ktlab.data.subsets import subset

__all__ = [
    "IGNORE_INDEX", "PadCollator", "TruncationReport", "align_labels", "encode_sentences",
    "encode_tagged", "labels_to_words", "CHUNK_LABELS", "ENTITY_TYPES", "LABEL_LISTS",
    "NER_LABELS", "POS_LABELS", "entity_counts", "iob1_to_iob2", "load_conll", "read_conll",
    "DataCorruptError", "DataUnavailableError", "SST2_LABELS", "load_sst2", "subset",
]
