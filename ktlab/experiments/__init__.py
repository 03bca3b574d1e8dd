"""Experiments shared by the notebooks and ``ktlab run``: one pipeline per headline experiment.

* :mod:`ktlab.experiments.classify` - text classification transfer in six public stages
  (data, teacher, cached logits, transfer set, student, measure), on SST-2 or your own files.
* :mod:`ktlab.experiments.sentiment` - its SST-2 preset (``ktlab run sentiment``).
* :mod:`ktlab.experiments.ner` - CoNLL-2003 teacher -> BiLSTM(-CRF) / tiny-Transformer taggers
  (token-level distillation; helpers shared with later pipelines in :mod:`.common`).

Each experiment module exposes ``run(profile=..., teacher=..., out_dir=...) -> dict`` and a
results JSON schema; :mod:`ktlab.experiments.cli` maps ``ktlab run NAME`` onto it.
"""
