"""The NER transfer experiment: CoNLL-2003 teacher -> BiLSTM(-CRF) and tiny-Transformer taggers.

One pipeline for ``ktlab run ner`` and notebook 05. Token-level transfer is the harder case:
every *word* carries a label, but the models see WordPiece sub-tokens. Throughout, the first
sub-token of each word carries the word's label (:func:`ktlab.data.encode_tagged`), the others are
ignored (-100), and :func:`ktlab.nn.students.word_view` packs those first sub-tokens into one row
per word. Losses, caches, CRFs and evaluation all work on that word view.

1. fine-tune the teacher (``BertForTokenClassification``; MiniLM offline, ``bert-base-cased`` in
   the full profile) on the CoNLL-2003 training subset;
2. cache its per-word logits on the students' training set once (the teacher never runs inside
   a student epoch);
3. train every student under several *conditions*:

   * ``hard``     - cross-entropy on the gold tags (no teacher);
   * ``hard+crf`` - the same encoder with a CRF layer, trained on gold tags (a BiLSTM-CRF);
   * ``kd``       - token-level distillation: KL to the teacher's softened per-word distribution
     mixed with cross-entropy on the gold tags;
   * ``kd+crf``   - distillation on the emissions plus the CRF's sentence-level likelihood;
   * ``kd+crf+pca`` (BiLSTM) - as ``kd+crf`` with the word embeddings initialised from the
     teacher's table (PCA, :func:`ktlab.nn.students.init_embeddings_from_teacher`): transfer
     through the weights as well as through the outputs;

4. evaluate with seqeval in strict IOB2 mode (invalid predictions repaired and counted) on dev and
   test, overall and per type; split errors into boundary and type errors; measure parameters,
   CPU throughput, batch-1 latency (forward + decoding, Viterbi for CRFs) and training time;
5. put error bars on every comparison, from the stored test predictions (:func:`add_intervals`):
   each model's test F1 with its sentence-level bootstrap 95% interval, and each student against
   its ``hard`` condition and against the teacher as a paired-bootstrap F1 difference with its
   interval and verdict (:func:`ktlab.metrics.paired_bootstrap_f1`);
   write ``results.json``, ``table.md`` and plots.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ktlab import config as kconfig
from ktlab.data.conll import ENTITY_TYPES, NER_LABELS
from ktlab.experiments import common
from ktlab.experiments.common import (  # noqa: F401  (shared stages, re-exported)
    ConfigError, caps_record, count_params, describe_machine)

_cache_key = common.cache_key

#: ``/2`` adds bootstrap intervals of the test F1 and paired comparisons (:func:`add_intervals`);
#: :func:`load_results` upgrades a ``/1`` file in memory from its stored test predictions
SCHEMA = "ktlab.ner/2"
OLD_SCHEMAS = ("ktlab.ner/1",)
#: the sentence-level bootstrap behind every interval (resamples, generator seed, level)
BOOTSTRAP = {"n_boot": 1000, "seed": 0, "level": 0.95}
STUDENTS = ("bilstm", "tiny")
ALL_CONDITIONS = ("hard", "hard+crf", "kd", "kd+crf", "kd+crf+pca")
#: What each student trains under by default (``hard+crf`` is opt-in: it costs a run).
CONDITIONS = {"bilstm": ("hard", "kd", "kd+crf", "kd+crf+pca"), "tiny": ("hard", "kd", "kd+crf")}
#: Students that train fewer conditions in a profile to fit its time budget (overrides
#: CONDITIONS student by student; "notebook" goes with ``PROFILE_SIZES["notebook"]``).
PROFILE_CONDITIONS = {"quick": {"tiny": ("hard",)}, "bench": {"tiny": ("hard", "kd")},
                      "notebook": {"tiny": ("hard",)}}
#: Conditions that need an ``nn.Embedding`` student (the BiLSTM) to copy the teacher's table into.
PCA_STUDENTS = ("bilstm",)
#: Teacher per profile when none is named: casing matters for entities, so the full profile
#: uses a *cased* BERT (the offline MiniLM is uncased; the BiLSTM gets a word-shape feature).
DEFAULT_TEACHER = {"quick": "minilm", "bench": "minilm", "full": "bert-base-cased"}


@dataclasses.dataclass(frozen=True)
class NerSizes:
    """How big one run is. ``None`` means the whole split."""

    teacher_train: Optional[int]     #: sentences the teacher is fine-tuned on
    student_train: Optional[int]     #: labelled sentences the students see (teacher's is a subset)
    dev: Optional[int]               #: CoNLL valid sentences (3250 in all)
    test: Optional[int]              #: CoNLL test sentences (3453 in all)
    max_length: int
    teacher_epochs: int
    student_epochs: int
    batch_size: int = 32
    teacher_batch_size: Optional[int] = None  #: default batch_size; 16 gives a short run more steps
    teacher_lr: float = 5e-5
    #: keep the teacher's word-embedding table fixed while fine-tuning: AdamW then skips MiniLM's
    #: 11.7M-parameter table every step (``ktlab run ner --profile quick``: dev F1 76.1 frozen
    #: with lr 3e-4 / batch 8; 52.9 unfrozen with lr 1e-4 / batch 16 at commit 960eb27)
    teacher_freeze_embeddings: bool = False
    teacher_evals: int = 4           #: dev evaluations during teacher fine-tuning (the curve)
    kd_alpha: float = 0.5            #: weight of the teacher term in ``kd`` / ``kd+crf``
    #: measured on quick (BiLSTM, kd, alpha 0.5): dev F1 49.9 at T=1, 45.7 at T=2, 42.8 at T=4
    kd_temperature: float = 1.0
    speed_sentences: int = 256       #: test sentences timed for throughput
    latency_sentences: int = 64      #: test sentences timed one by one for latency
    student_max_steps: Optional[int] = None  #: cap per student run (tests)
    teacher_max_steps: Optional[int] = None
    #: per-student constructor overrides (``{"bilstm": {"hidden_size": 128}}``); the rest come
    #: from :data:`STUDENT_KWARGS`
    student_kwargs: Optional[dict] = None

    def kwargs_for(self, student: str) -> dict:
        """The constructor arguments of ``student`` under these sizes."""
        return {**STUDENT_KWARGS[student], **(self.student_kwargs or {}).get(student, {})}


#: Smaller students for the CPU-minutes profiles: a 128-d BiLSTM and a 2-layer Transformer
#: (a BiLSTM step costs ~0.13 s on one core instead of ~0.34 s).
SMALL_STUDENTS = {"bilstm": dict(embed_dim=128, hidden_size=128),
                  "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512)}


PROFILE_SIZES = {
    # <= 5 min on 2 CPU cores, including the teacher (4 student epochs and a distilled tiny
    # Transformer took 588 s with one thread on a shared machine: both were cut)
    "quick": NerSizes(teacher_train=1500, student_train=1500, dev=500, test=500, max_length=96,
                      teacher_epochs=1, student_epochs=3, teacher_batch_size=8,
                      teacher_lr=3e-4, teacher_evals=2, teacher_freeze_embeddings=True,
                      student_kwargs=SMALL_STUDENTS),
    # a GPU: everything, BERT recipe (Devlin et al. 2019: lr 5e-5, 3-4 epochs)
    "full": NerSizes(teacher_train=None, student_train=None, dev=None, test=None,
                     max_length=128, teacher_epochs=3, student_epochs=10, teacher_lr=5e-5,
                     teacher_evals=6),
    # CPU, < 100 min on 2 shared cores (1 thread): the full training set, 2 teacher epochs
    # (27 min), 2 student epochs (a 300-d BiLSTM epoch takes ~4 min, 3 epochs did not fit),
    # a 2-layer width-256 Transformer, full dev and test (see README, "NER")
    "bench": NerSizes(teacher_train=None, student_train=None, dev=None, test=None,
                      max_length=128, teacher_epochs=2, student_epochs=2,
                      teacher_batch_size=16, teacher_lr=2e-4, teacher_evals=4,
                      teacher_freeze_embeddings=True, student_kwargs={"tiny": {"num_layers": 2}}),
    # notebook 05: the quick recipe trimmed to fit 180 s with the data tour around it
    "notebook": NerSizes(teacher_train=1000, student_train=1000, dev=300, test=300,
                         max_length=96, teacher_epochs=1, student_epochs=4,
                         teacher_batch_size=8, teacher_lr=3e-4, teacher_evals=3,
                         teacher_freeze_embeddings=True, student_kwargs=SMALL_STUDENTS,
                         speed_sentences=128, latency_sentences=32),
    # unit tests: a few dozen sentences, one or two optimiser steps
    "tiny": NerSizes(teacher_train=24, student_train=32, dev=24, test=24, max_length=48,
                     teacher_epochs=1, student_epochs=1, batch_size=16, teacher_evals=1,
                     speed_sentences=16, latency_sentences=4, student_max_steps=2,
                     teacher_max_steps=2),
}

STUDENT_KWARGS = {
    "bilstm": dict(embed_dim=300, hidden_size=256, case_dim=16, dropout=0.3),
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
}
STUDENT_LR = {"bilstm": 3e-3, "tiny": 5e-4}


def cap_sizes(sizes: NerSizes, max_examples: Optional[int] = None,
              max_steps: Optional[int] = None) -> NerSizes:
    """``sizes`` with every split (teacher and student training sets, dev, test, the sentences
    timed for speed) cut to at most ``max_examples`` sentences and every training run (teacher
    and each student) to at most ``max_steps`` optimiser steps; ``None`` leaves a size alone.

    For smoke runs of a profile on a small machine (``ktlab run ner --profile full
    --max-examples 24 --max-steps 2``): the profile's recipe, teacher and model sizes stay."""
    common.check_caps(max_examples, max_steps)
    return common.cap_fields(sizes, max_examples, max_steps,
                             ("teacher_train", "student_train", "dev", "test", "speed_sentences",
                              "latency_sentences"), ("teacher_max_steps", "student_max_steps"))


def parse_students(spec: str | Sequence[str]) -> list[str]:
    """``"bilstm,tiny"`` -> ``["bilstm", "tiny"]``, rejecting unknown names with the valid ones."""
    return common.parse_names(spec, STUDENTS, "student", "--students", "bilstm")


def parse_conditions(spec: str | Sequence[str] | None) -> Optional[tuple[str, ...]]:
    """``"hard,kd+crf"`` -> ``("hard", "kd+crf")`` (``None``/empty: the defaults)."""
    if spec is None:
        return None
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in ALL_CONDITIONS]
    if bad:
        raise ConfigError(f"unknown condition(s) {', '.join(map(repr, bad))}; choose from "
                          f"{', '.join(ALL_CONDITIONS)} (e.g. --conditions hard,kd+crf)")
    return tuple(dict.fromkeys(names)) or None


# ----------------------------------------------------------------------------- data

def load_data(sizes: NerSizes, seed: int, data_dir: Optional[Path] = None) -> dict:
    """Seeded subsets of CoNLL-2003; the teacher's set is a subset of the students' set."""
    from ktlab.data import load_conll, subset
    train = subset(load_conll("train", data_dir), sizes.student_train, seed)
    teacher = subset(train, sizes.teacher_train, seed + 1)
    dev = subset(load_conll("valid", data_dir), sizes.dev, seed)
    test = subset(load_conll("test", data_dir), sizes.test, seed)
    return {"train": train, "teacher_train": teacher, "dev": dev, "test": test}


def encode(tokenizer: Any, tokens: Sequence[Sequence[str]], tags: Sequence[Sequence[str]],
           max_length: int, report: Any = None) -> list[dict]:
    """Model items: aligned sub-token labels (first sub-token of each word), word-shape ids for
    the BiLSTM, the word count (words cut by truncation are predicted ``O`` at evaluation)."""
    from ktlab.data.collate import encode_tagged
    from ktlab.nn.students import case_ids_for
    index = {label: i for i, label in enumerate(NER_LABELS)}
    bad = sorted({t for sent in tags for t in sent} - set(index))
    if bad:
        raise ValueError(f"unknown NER tag(s) {bad}; expected IOB2 tags from {NER_LABELS} "
                         "(load the data with ktlab.data.load_conll)")
    items = encode_tagged(tokenizer, tokens, [[index[t] for t in s] for s in tags],
                          max_length=max_length, report=report)
    for item, words in zip(items, tokens):
        item["case_ids"] = case_ids_for(words, item["word_ids"])
        item["num_words"] = len(words)
    return items


@dataclasses.dataclass
class NerCollator:
    """:class:`ktlab.data.PadCollator` plus the NER extras: ``case_ids`` padded with 0 and the
    cached per-word ``teacher_logits`` (``[W_i, C]``) padded with zeros to ``[B, W, C]``."""

    pad_token_id: int = 0

    def __call__(self, items: list[dict]) -> dict[str, torch.Tensor]:
        from ktlab.data.collate import PadCollator
        skip = ("case_ids", "teacher_logits", "word_ids")
        batch = PadCollator(self.pad_token_id)([{k: v for k, v in it.items() if k not in skip}
                                                for it in items])
        length = batch["input_ids"].shape[1]
        if "case_ids" in items[0]:
            batch["case_ids"] = torch.tensor([list(it["case_ids"]) + [0] * (
                length - len(it["case_ids"])) for it in items], dtype=torch.long)
        if "teacher_logits" in items[0]:
            width = max(len(it["teacher_logits"]) for it in items)
            batch["teacher_logits"] = torch.stack([F.pad(torch.as_tensor(it["teacher_logits"]),
                                                         (0, 0, 0, width - len(it["teacher_logits"])))
                                                   for it in items]).float()
        return batch


# ----------------------------------------------------------------------------- losses

def _emissions(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    from ktlab.train import logits_of, model_inputs
    inputs = {k: v for k, v in model_inputs(model, batch).items() if k != "labels"}
    return logits_of(model(**inputs))


def _crf_of(model: torch.nn.Module) -> Any:
    model = getattr(model, "module", model)
    return model if hasattr(model, "crf") else None


def make_loss(condition: str, alpha: float = 0.5, temperature: float = 2.0) -> Callable:
    """``loss_fn(model, batch)`` for one condition (see the module docstring).

    Every term lives on the word view: cross-entropy on gold tags, ``T**2``-scaled KL to the
    cached teacher distribution (:func:`ktlab.transfer.distill.kd_loss`), and the CRF's
    per-word negative log-likelihood. ``alpha`` weighs the teacher term."""
    from ktlab.nn.students import word_view
    from ktlab.transfer.distill import kd_loss
    if condition not in ALL_CONDITIONS:
        raise ConfigError(f"unknown condition {condition!r}; choose from {ALL_CONDITIONS}")

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        emissions = _emissions(model, batch)
        labels = batch["labels"]
        crf = _crf_of(model)
        if "crf" in condition:
            if crf is None:
                raise ConfigError(f"condition {condition!r} needs a model with a CRF "
                                  "(build_tagger(..., crf=True))")
            gold = crf.nll(emissions, labels)
        else:
            gold = F.cross_entropy(emissions.reshape(-1, emissions.shape[-1]).float(),
                                   labels.reshape(-1), ignore_index=-100)
        if not condition.startswith("kd"):
            return gold
        word_logits, _, word_mask = word_view(emissions, labels)
        teacher = batch["teacher_logits"][:, :word_logits.shape[1]].to(word_logits.dtype)
        soft = kd_loss(word_logits, teacher, temperature, mask=word_mask)
        return alpha * soft + (1 - alpha) * gold

    return loss_fn


# ----------------------------------------------------------------------------- predicting

def _word_f1_metric(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """Entity F1 from argmax over first sub-tokens (the Trainer's dev metric; final numbers
    use :func:`predict_tags`, which maps back to every word and decodes CRFs with Viterbi)."""
    from ktlab.nn.students import word_view
    from ktlab.tagging import ner_scores
    word_logits, word_labels, word_mask = word_view(logits, labels)
    pred = word_logits.argmax(-1)
    gold_tags, pred_tags = [], []
    for b in range(len(word_mask)):
        n = int(word_mask[b].sum())
        gold_tags.append([NER_LABELS[i] for i in word_labels[b, :n].tolist()])
        pred_tags.append([NER_LABELS[i] for i in pred[b, :n].tolist()])
    acc = float((pred[word_mask] == word_labels[word_mask]).float().mean())
    return {"f1": float(ner_scores(gold_tags, pred_tags)["f1"]) / 100, "token_accuracy": acc}


@torch.no_grad()
def tag_batch(model: torch.nn.Module, batch: dict) -> list[list[int]]:
    """Tag ids of the words kept in each sentence: argmax, or Viterbi when the model has a CRF."""
    from ktlab.nn.students import word_view
    emissions = _emissions(model, batch)
    crf = _crf_of(model)
    if crf is not None:
        return crf.decode(emissions, batch["labels"])
    word_logits, _, word_mask = word_view(emissions, batch["labels"])
    pred = word_logits.argmax(-1)
    return [pred[b, :int(word_mask[b].sum())].tolist() for b in range(len(pred))]


@torch.no_grad()
def predict_tags(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int = 0,
                 batch_size: int = 64) -> list[list[str]]:
    """One IOB2 tag per *word* of every item (words lost to truncation get ``O``)."""
    model = model.to("cpu").eval()
    collate = NerCollator(pad_token_id)
    out: list[list[str]] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = collate([{k: v for k, v in it.items() if k != "teacher_logits"} for it in chunk])
        for it, ids in zip(chunk, tag_batch(model, batch)):
            words = [NER_LABELS[i] for i in ids]
            out.append(words + ["O"] * (it["num_words"] - len(words)))
    return out


@torch.no_grad()
def teacher_word_logits(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int = 0,
                        batch_size: int = 64) -> list[torch.Tensor]:
    """The teacher's logits at each item's first sub-tokens: one ``[W_i, C]`` tensor per item.

    This is the whole cache the students need (a few MB for all of CoNLL), computed once."""
    compute, chunks = _word_logit_batches(model, items, pad_token_id, batch_size)
    return [row for chunk in chunks for row in compute(chunk)]


def _word_logit_batches(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int,
                        batch_size: int = 64) -> tuple[Callable, list]:
    """``(compute, chunks)``: item chunks in order and ``compute(chunk)``, their per-word logits."""
    model = model.to("cpu").eval()
    collate = NerCollator(pad_token_id)

    def compute(chunk: Sequence[dict]) -> list[torch.Tensor]:
        batch = collate(list(chunk))
        emissions = _emissions(model, batch).float()
        keep = batch["labels"] != -100
        return [emissions[b][keep[b]].clone() for b in range(len(emissions))]

    return compute, [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


@torch.no_grad()
def measure_speed(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int = 0,
                  batch_size: int = 32, latency_items: int = 64) -> dict:
    """CPU sentences/s at ``batch_size`` and batch-1 latency (median ms) of *tagging*: the
    forward pass plus decoding (argmax or Viterbi), with dynamic padding as in serving."""
    from ktlab.experiments.common import time_calls
    collate = NerCollator(pad_token_id)
    model = model.to("cpu").eval()
    strip = [{k: v for k, v in it.items() if k != "teacher_logits"} for it in items]
    batches = [collate(strip[i:i + batch_size]) for i in range(0, len(strip), batch_size)]
    singles = [collate([it]) for it in strip[:latency_items]]
    return time_calls(lambda b: tag_batch(model, b), batches, singles, len(strip))


# ----------------------------------------------------------------------------- training

def _train(model: torch.nn.Module, train_items: list, dev_items: list, stage: str,
           final: Optional[Path] = None, **kwargs: Any) -> dict:
    """:func:`ktlab.experiments.common.train_resumable` with NER's collator and word-level F1
    (dev F1 in points in the history), in item order and without checkpoints; ``final``, when
    given, caches the finished run. Returns the history dict."""
    return common.train_resumable(model, train_items, dev_items, None, stage, final=final,
                                  collate_fn=NerCollator(kwargs["pad_id"]),
                                  metric_fn=_word_f1_metric, metric_name="f1",
                                  history_scale=100, length_bucketing=False, **kwargs)


def _scores(gold: list, pred: list) -> dict:
    from ktlab.tagging import error_breakdown, ner_scores
    s = ner_scores(gold, pred)
    return {"f1": round(float(s["f1"]), 3), "precision": round(float(s["precision"]), 3),
            "recall": round(float(s["recall"]), 3), "repaired_tags": int(s["repaired_tags"]),
            "per_type": {k: {m: round(float(v), 3) if isinstance(v, float) else int(v)
                             for m, v in row.items()} for k, row in s["per_type"].items()},
            "errors": dict(error_breakdown(gold, pred))}


def evaluate_model(model: torch.nn.Module, name: str, student: str, condition: str,
                   data: dict, pad_token_id: int, sizes: NerSizes) -> dict:
    """F1 on dev and test (with the error split), parameters, speed: one results record."""
    dev_pred = predict_tags(model, data["dev_items"], pad_token_id)
    test_pred = predict_tags(model, data["test_items"], pad_token_id)
    dev, test = _scores(data["dev_gold"], dev_pred), _scores(data["test_gold"], test_pred)
    speed = measure_speed(model, data["test_items"][: sizes.speed_sentences], pad_token_id,
                          sizes.batch_size, sizes.latency_sentences)
    return {**common.model_record(name, student, condition, model, speed, dev_f1=dev["f1"],
                                  test_f1=test["f1"], dev=dev, test=test),
            "test_predictions": [[NER_LABELS.index(t) for t in s] for s in test_pred]}


def _check_pca_width(teacher: str, conditions: dict[str, Sequence[str]],
                     sizes: NerSizes) -> None:
    """Refuse ``+pca`` for a student whose ``embed_dim`` is wider than the teacher's word
    embeddings (PCA cannot widen them) from the teacher's config alone: before the data is read
    and the teacher fine-tuned, not when the student's turn comes."""
    wanted = [s for s, conds in conditions.items() if any(c.endswith("+pca") for c in conds)]
    if not wanted:
        return
    from transformers import AutoConfig

    from ktlab.models import resolve_teacher
    config = AutoConfig.from_pretrained(resolve_teacher(teacher))
    width = getattr(config, "embedding_size", None) or config.hidden_size
    for student in wanted:
        dim = sizes.kwargs_for(student).get("embed_dim", 0)
        if dim > width:
            raise ConfigError(f"{student}/+pca projects the teacher's {width}-d word embeddings "
                              f"onto the student's {dim}-d ones, which cannot be wider: drop "
                              "the +pca condition (--conditions) or use a teacher whose "
                              f"embeddings have at least {dim} dimensions")


def condition_table(profile: str, override: Optional[dict[str, Sequence[str]]] = None
                    ) -> dict[str, tuple]:
    """Conditions per student (:data:`CONDITIONS`, the profile's, ``override``), checked."""
    table = common.condition_table(CONDITIONS, PROFILE_CONDITIONS.get(profile, {}), override,
                                   None, lambda student: ALL_CONDITIONS)
    for student, conds in table.items():
        if student not in PCA_STUDENTS and any(c.endswith("+pca") for c in conds):
            raise ConfigError(f"{student!r} has no nn.Embedding to initialise with PCA; "
                              f"+pca conditions work for {', '.join(PCA_STUDENTS)} only (e.g. "
                              "--students bilstm --conditions kd+crf+pca)")
    return table


def resolve_config(profile: Optional[str], teacher: Optional[str], seed: Optional[int],
                   sizes: Optional[NerSizes], max_examples: Optional[int],
                   max_steps: Optional[int]) -> tuple[Any, NerSizes]:
    """The run's config (NER's default teacher per profile: :data:`DEFAULT_TEACHER`) and sizes."""
    profile = profile or os.environ.get("KTLAB_PROFILE", "quick")
    if profile not in kconfig.PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {kconfig.PROFILES}")
    teacher = teacher or os.environ.get("KTLAB_TEACHER") or DEFAULT_TEACHER[profile]
    return common.resolve(profile, teacher, seed, PROFILE_SIZES, sizes, cap_sizes,
                          max_examples, max_steps)


@dataclasses.dataclass
class Prepared:
    """What the data, teacher and logit-cache stages produce and every student run reads."""

    data: dict
    tokenizer: Any
    pad_id: int
    train_items: list     #: the students' sentences (with cached per-word ``teacher_logits``)
    teacher_items: list
    ev: dict              #: ``dev_items``, ``test_items``, ``dev_gold``, ``test_gold``
    truncation: Any       #: :class:`ktlab.data.collate.TruncationReport`
    timings: dict
    teacher: Optional[torch.nn.Module] = None
    teacher_record: Optional[dict] = None


def prepare_data(cfg: Any, sizes: NerSizes, log: Callable[[str], None] = print) -> Prepared:
    """CoNLL-2003 subsets encoded for the teacher's tokenizer (truncation counted)."""
    from ktlab.data.collate import TruncationReport
    from ktlab.models import load_tokenizer
    t0 = time.perf_counter()
    data = load_data(sizes, cfg.seed, cfg.data_dir)
    tokenizer = load_tokenizer(cfg.teacher)
    trunc = TruncationReport()

    def items_of(ds: Any) -> list[dict]:
        return encode(tokenizer, ds["tokens"], ds["ner_tags"], sizes.max_length, trunc)

    train_items, teacher_items = items_of(data["train"]), items_of(data["teacher_train"])
    ev = {"dev_items": items_of(data["dev"]), "test_items": items_of(data["test"]),
          "dev_gold": [list(t) for t in data["dev"]["ner_tags"]],
          "test_gold": [list(t) for t in data["test"]["ner_tags"]]}
    prep = Prepared(data, tokenizer, tokenizer.pad_token_id or 0, train_items, teacher_items,
                    ev, trunc, {"data": time.perf_counter() - t0})
    log(f"[ner] data: teacher {len(teacher_items)}, students {len(train_items)}, dev "
        f"{len(ev['dev_items'])}, test {len(ev['test_items'])} sentences; {trunc}")
    return prep


def teacher_key(cfg: Any, sizes: NerSizes) -> str:
    """The teacher's cache key: only what shapes the teacher and its cached logits (changing a
    student setting reuses them)."""
    teacher_sizes = {k: v for k, v in dataclasses.asdict(sizes).items()
                     if k.startswith("teacher") or k in ("student_train", "dev", "max_length",
                                                         "batch_size")}
    return _cache_key(teacher=cfg.teacher, seed=cfg.seed, sizes=teacher_sizes, schema=SCHEMA)


def fine_tune_teacher(prep: Prepared, cfg: Any, sizes: NerSizes, file: Path,
                      use_cache: bool = True, progress: bool = False,
                      log: Callable[[str], None] = print) -> dict:
    """Fine-tune the token-classification teacher (``prep.teacher``), or load it from ``file``."""
    from ktlab.models import load_teacher
    prep.teacher = load_teacher(cfg.teacher, num_labels=len(NER_LABELS), task="token",
                                seed=cfg.seed, id2label=dict(enumerate(NER_LABELS)),
                                label2id={t: i for i, t in enumerate(NER_LABELS)})
    if sizes.teacher_freeze_embeddings:
        from ktlab.transfer.freeze import freeze_embeddings
        freeze_embeddings(prep.teacher)
    if not use_cache:
        file.unlink(missing_ok=True)
    if file.is_file():
        log(f"[ner] teacher loaded from cache {file.name}")
    batch = sizes.teacher_batch_size or sizes.batch_size
    steps = common.planned_steps(len(prep.teacher_items), batch, sizes.teacher_epochs,
                                 sizes.teacher_max_steps)
    t0 = time.perf_counter()
    history = _train(prep.teacher, prep.teacher_items, prep.ev["dev_items"], "teacher", file,
                     lr=sizes.teacher_lr, epochs=sizes.teacher_epochs, batch_size=batch,
                     seed=cfg.seed, loss_fn=None, pad_id=prep.pad_id, weight_decay=0.01,
                     warmup_ratio=0.1, max_steps=sizes.teacher_max_steps,
                     eval_every=max(1, steps // max(1, sizes.teacher_evals)), progress=progress)
    prep.timings["teacher_finetune"] = time.perf_counter() - t0
    return history


def cache_word_logits(prep: Prepared, file: Path, use_cache: bool = True) -> None:
    """The teacher's per-word logits on the students' sentences, computed once into ``file``
    and attached to ``prep.train_items`` as ``teacher_logits``."""
    t0 = time.perf_counter()
    if not use_cache:
        file.unlink(missing_ok=True)
    compute, chunks = _word_logit_batches(prep.teacher, prep.train_items, prep.pad_id)
    cached = common.cache_batches(file, chunks, compute,
                                  lambda done: [row for chunk in done for row in chunk])
    for item, logits in zip(prep.train_items, cached):
        item["teacher_logits"] = logits
    prep.timings["teacher_logits"] = time.perf_counter() - t0


def prepare(cfg: Any, sizes: NerSizes, out: Path, use_cache: bool = True,
            progress: bool = False, log: Callable[[str], None] = print) -> Prepared:
    """Data, the teacher (fine-tuned or cached), its cached per-word logits and its record."""
    prep = prepare_data(cfg, sizes, log)
    key = teacher_key(cfg, sizes)
    history = fine_tune_teacher(prep, cfg, sizes, out / "cache" / f"teacher-{key}.pt",
                                use_cache, progress, log)
    cache_word_logits(prep, out / "cache" / f"word-logits-{key}.pt", use_cache)
    rec = evaluate_model(prep.teacher, f"teacher ({cfg.teacher})", "teacher", "fine-tuned",
                         prep.ev, prep.pad_id, sizes)
    rec.update(train_seconds=history["train_seconds"], history=history,
               train_examples=len(prep.teacher_items) * sizes.teacher_epochs)
    prep.teacher_record = rec
    log(f"[ner] teacher F1 dev {rec['dev_f1']:.1f} test {rec['test_f1']:.1f}; "
        f"word logits cached ({prep.timings['teacher_logits']:.0f} s); "
        f"{rec['throughput_sps']:.0f} sentences/s")
    return prep


def build_student(prep: Prepared, student: str, condition: str, sizes: NerSizes,
                  seed: int) -> torch.nn.Module:
    """The tagger for ``(student, condition)``: a CRF for ``*crf*``, the teacher's PCA-projected
    word embeddings for ``*+pca`` (seeded first)."""
    from ktlab.nn.students import (build_tagger, init_embeddings_from_teacher,
                                   teacher_input_embeddings)
    kconfig.seed_everything(seed)
    model = build_tagger(student, len(prep.tokenizer), len(NER_LABELS), crf="crf" in condition,
                         labels=NER_LABELS, pad_token_id=prep.pad_id, **sizes.kwargs_for(student))
    if condition.endswith("+pca"):
        init_embeddings_from_teacher(getattr(model, "encoder", model),
                                     teacher_input_embeddings(prep.teacher), "pca")
    return model


def run_student(prep: Prepared, student: str, condition: str, sizes: NerSizes, seed: int,
                progress: bool = False) -> dict:
    """Build, train and evaluate one ``(student, condition)``; returns its results record."""
    model = build_student(prep, student, condition, sizes, seed)
    history = _train(model, prep.train_items, prep.ev["dev_items"], f"{student}/{condition}",
                     lr=STUDENT_LR[student], epochs=sizes.student_epochs,
                     batch_size=sizes.batch_size, seed=seed,
                     loss_fn=make_loss(condition, sizes.kd_alpha, sizes.kd_temperature),
                     pad_id=prep.pad_id, weight_decay=0.01 if student == "tiny" else 0.0,
                     warmup_ratio=0.05, max_steps=sizes.student_max_steps, progress=progress)
    rec = evaluate_model(model, f"{student}/{condition}", student, condition, prep.ev,
                         prep.pad_id, sizes)
    rec.update(train_seconds=history["train_seconds"],
               train_examples=len(prep.train_items) * sizes.student_epochs, history=history)
    return rec


def assemble_results(cfg: Any, sizes: NerSizes, names: Sequence[str], prep: Prepared,
                     records: list, started: float, cpu_started: float,
                     capped: Optional[dict]) -> dict:
    """The results dict (schema :data:`SCHEMA`), with intervals and the summary."""
    data, ev, trunc = prep.data, prep.ev, prep.truncation
    results = {
        "schema": SCHEMA, "profile": cfg.profile, "teacher_name": cfg.teacher, "seed": cfg.seed,
        "sizes": dataclasses.asdict(sizes), "capped": capped, "students_requested": list(names),
        "labels": NER_LABELS, "machine": describe_machine(),
        **common.run_clock(started, cpu_started, prep.timings),
        "data": {"teacher_train": len(prep.teacher_items), "student_train": len(prep.train_items),
                 "dev": len(ev["dev_items"]), "test": len(ev["test_items"]),
                 "truncated": trunc.truncated, "encoded": trunc.total},
        "teacher": prep.teacher_record, "students": records,
        "test": {"ids": [str(i) for i in data["test"]["id"]],
                 "tokens": [list(t) for t in data["test"]["tokens"]],
                 "gold": [[NER_LABELS.index(t) for t in s] for s in ev["test_gold"]]},
    }
    add_intervals(results)
    results["summary"] = summarise(results)
    return results


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        students: str | Sequence[str] = STUDENTS, out_dir: str | Path = "runs/ner",
        seed: Optional[int] = None, sizes: Optional[NerSizes] = None,
        conditions: Optional[dict[str, Sequence[str]]] = None, use_cache: bool = True,
        plots: bool = True, progress: bool = False,
        log: Callable[[str], None] = print, max_examples: Optional[int] = None,
        max_steps: Optional[int] = None) -> dict:
    """Run the whole experiment; returns the results dict (also written to ``out_dir``).

    :func:`prepare` (data, teacher, cached logits), :func:`run_student` per (student,
    condition), :func:`assemble_results`, :func:`write_results`. ``sizes`` overrides the
    profile's :class:`NerSizes` (``PROFILE_SIZES["tiny"]`` in tests, ``["notebook"]`` in
    notebook 05); ``conditions`` maps a student to the conditions it trains under (default
    :data:`CONDITIONS`; any of :data:`ALL_CONDITIONS`). ``max_examples`` and ``max_steps`` cap
    those sizes (:func:`cap_sizes`; ``results["capped"]`` records them)."""
    names = parse_students(students)
    cfg, sizes = resolve_config(profile, teacher, seed, sizes, max_examples, max_steps)
    table = condition_table(cfg.profile, conditions)
    _check_pca_width(cfg.teacher, {s: table[s] for s in names}, sizes)
    out = Path(out_dir)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(torch.get_num_threads(), os.cpu_count() or 1))
    started, cpu_started = time.time(), time.process_time()
    log(f"[ner] {cfg.summary()} students={','.join(names)} out={out}")
    prep = prepare(cfg, sizes, out, use_cache, progress, log)
    records = []
    for student in names:
        for condition in table[student]:
            t0 = time.perf_counter()
            rec = run_student(prep, student, condition, sizes, cfg.seed, progress)
            records.append(rec)
            prep.timings[rec["name"]] = time.perf_counter() - t0
            log(f"[ner] {rec['name']:<16} F1 dev {rec['dev_f1']:5.1f} test {rec['test_f1']:5.1f}"
                f"  {rec['throughput_sps']:.0f} sent/s  {rec['latency_ms']:.1f} ms  "
                f"train {rec['train_seconds']:.0f} s")
    results = assemble_results(cfg, sizes, names, prep, records, started, cpu_started,
                               caps_record(max_examples, max_steps))
    write_results(results, out, plots=plots)
    log(markdown_table(results))
    log(f"[ner] wrote {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results


# ----------------------------------------------------------------------------- reporting

def add_intervals(results: dict, n_boot: int = BOOTSTRAP["n_boot"],
                  seed: int = BOOTSTRAP["seed"], level: float = BOOTSTRAP["level"]) -> dict:
    """Error bars from the stored test predictions (no model is run): every record gets
    ``test_f1_ci`` (``[low, high]``, percentile bootstrap over test sentences) and the same per
    entity type (``test.per_type[X].f1_ci``); every student gets ``vs_hard`` (against its own
    ``hard`` condition; ``None`` for ``hard`` itself or when it was not trained) and
    ``vs_teacher``: the paired-bootstrap F1 difference with its interval, p-value and verdict
    (:func:`ktlab.metrics.paired_bootstrap_f1`). ``results["bootstrap"]`` records the settings.
    Records without ``test_predictions`` are left alone. Returns ``results`` (changed in place)."""
    from ktlab.metrics import bootstrap_f1_interval
    if "test" not in results or not all("test_predictions" in r for r in _records(results)):
        return results
    gold = _tags(results, results["test"]["gold"])
    settings = dict(n_boot=n_boot, seed=seed, level=level)
    for rec in _records(results):
        pred = _tags(results, rec["test_predictions"])
        for row, kind in [(rec, None)] + [(row, k) for k, row in rec["test"]["per_type"].items()]:
            ci = bootstrap_f1_interval(gold, pred, entity_type=kind, **settings)
            row["test_f1_ci" if kind is None else "f1_ci"] = [round(ci["low"], 3),
                                                             round(ci["high"], 3)]
    for rec in results["students"]:
        hard = _hard_of(results, rec["student"])
        rec["vs_hard"] = (compare(results, rec["name"], hard["name"], **settings)
                          if hard is not None and hard is not rec else None)
        rec["vs_teacher"] = compare(results, rec["name"], results["teacher"]["name"], **settings)
    results["bootstrap"] = {"split": "test", "unit": "sentence", "sentences": len(gold),
                            **settings}
    return results


def compare(results: dict, name: str, baseline: str, n_boot: int = BOOTSTRAP["n_boot"],
            seed: int = BOOTSTRAP["seed"], level: float = BOOTSTRAP["level"]) -> dict:
    """Model ``name`` against model ``baseline`` (record names, e.g. ``"bilstm/kd+crf"`` and
    ``"bilstm/kd"``) on the stored test predictions: the paired-bootstrap test-F1 difference
    (points), its interval, p-value and verdict (:func:`ktlab.metrics.paired_bootstrap_f1`),
    as stored under ``vs_hard`` / ``vs_teacher``."""
    from ktlab.metrics import paired_bootstrap_f1
    recs = {r["name"]: r for r in _records(results)}
    missing = [n for n in (name, baseline) if n not in recs]
    if missing:
        raise KeyError(f"no model {missing[0]!r} in these results; they hold {', '.join(recs)}")
    test = paired_bootstrap_f1(_tags(results, results["test"]["gold"]),
                               _tags(results, recs[name]["test_predictions"]),
                               _tags(results, recs[baseline]["test_predictions"]),
                               n_boot=n_boot, seed=seed, level=level)
    return {"baseline": baseline, "verdict": test["verdict"],
            **{k: round(test[k], 3) for k in ("difference", "low", "high", "p_value")}}


def _tags(results: dict, rows: Sequence[Sequence[int]]) -> list[list[str]]:
    names = results["labels"]
    return [[names[i] for i in row] for row in rows]


def _hard_of(results: dict, student: str) -> Optional[dict]:
    return next((r for r in results["students"]
                 if r["student"] == student and r["condition"] == "hard"), None)


def summarise(results: dict) -> dict:
    """Headline comparisons: best student per architecture, gain over its ``hard`` baseline,
    share of the teacher's F1, speed-up and size ratio (all computed from the records); with
    intervals (:func:`add_intervals`), the teacher's and the best student's test-F1 interval
    and the best student's paired comparisons with ``hard`` and with the teacher."""
    teacher = results["teacher"]
    summary: dict[str, Any] = {"teacher_test_f1": teacher["test_f1"],
                               "teacher_dev_f1": teacher["dev_f1"],
                               "teacher_test_f1_ci": teacher.get("test_f1_ci")}
    for student in results["students_requested"]:
        recs = [r for r in results["students"] if r["student"] == student]
        if not recs:
            continue
        best = max(recs, key=lambda r: r["dev_f1"])  # chosen on dev, reported on test
        hard = _hard_of(results, student)
        summary[student] = {
            "best": best["name"], "best_test_f1": best["test_f1"], "best_dev_f1": best["dev_f1"],
            "best_test_f1_ci": best.get("test_f1_ci"),
            "share_of_teacher": round(best["test_f1"] / max(teacher["test_f1"], 1e-9), 4),
            "gain_over_hard_points": (round(best["test_f1"] - hard["test_f1"], 2)
                                      if hard else None),
            "best_vs_hard": best.get("vs_hard"), "best_vs_teacher": best.get("vs_teacher"),
            "speedup_vs_teacher": round(best["throughput_sps"] / teacher["throughput_sps"], 2),
            "params_ratio": round(teacher["params"] / best["params"], 2)}
    return summary


def format_interval(value: float, ci: Optional[Sequence[float]], signed: bool = False) -> str:
    """``"77.5 [76.3, 78.8]"`` (``"+3.3 [+2.6, +4.0]"`` when ``signed``); the bare value
    without an interval."""
    fmt = "{:+.1f}" if signed else "{:.1f}"
    if ci is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def format_comparison(test: Optional[dict]) -> str:
    """A paired comparison as a table cell: difference [interval] and its verdict."""
    if not test:
        return "—"
    return (f"{format_interval(test['difference'], (test['low'], test['high']), signed=True)} "
            f"{test['verdict']}")


def markdown_table(results: dict) -> str:
    """One row per model: entity F1 (dev; test with its bootstrap 95% interval), the paired
    test-F1 difference to the student's ``hard`` condition and to the teacher (interval and
    verdict), share of teacher, size, speed, training time; a note on how the intervals were
    computed when the results have them."""
    teacher = results["teacher"]
    head = ("| model | F1 dev | F1 test [95% CI] | Δ F1 vs hard [95% CI] | Δ F1 vs teacher "
            "[95% CI] | % of teacher | repaired tags | params (M) | sent/s @32 | x teacher | "
            "latency b=1 (ms) | train (s) |\n" + "|---" * 12 + "|")
    rows = []
    for r in [teacher] + results["students"]:
        rows.append(f"| {r['name']} | {r['dev_f1']:.1f} | "
                    f"{format_interval(r['test_f1'], r.get('test_f1_ci'))} | "
                    f"{format_comparison(r.get('vs_hard'))} | "
                    f"{format_comparison(r.get('vs_teacher'))} | "
                    f"{100 * r['test_f1'] / max(teacher['test_f1'], 1e-9):.1f} | "
                    f"{r['test']['repaired_tags']} | {r['params'] / 1e6:.2f} | "
                    f"{r['throughput_sps']:.0f} | "
                    f"{r['throughput_sps'] / teacher['throughput_sps']:.1f} | "
                    f"{r['latency_ms']:.1f} | {r['train_seconds']:.0f} |")
    table = head + "\n" + "\n".join(rows)
    b = results.get("bootstrap")
    if b:
        table += (f"\n\nIntervals: {100 * b['level']:.0f}% percentile bootstrap over the "
                  f"{b['sentences']:,} {b['split']} sentences ({b['n_boot']:,} resamples, seed "
                  f"{b['seed']}); Δ: the paired bootstrap of the F1 difference (both models "
                  "scored on the same resamples); better/worse only where its interval "
                  "excludes 0.")
    return table


def write_results(results: dict, out: Path, plots: bool = True) -> None:
    """``results.json``, ``table.md`` and the four plots into ``out``."""
    from ktlab.experiments import common
    common.write_results(results, out, markdown_table(results),
                         {"per_type_f1": plot_per_type, "errors": plot_errors,
                          "tradeoff": plot_tradeoff, "teacher_curve": plot_teacher_curve},
                         plots=plots)


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (a file or the folder holding it) and check its schema; a
    ``ktlab.ner/1`` file is upgraded in memory (:func:`migrate_results`)."""
    from ktlab.experiments.common import load_results as load
    return migrate_results(load(path, (SCHEMA, *OLD_SCHEMAS), "ner"))


def migrate_results(results: dict) -> dict:
    """A ``ktlab.ner/1`` results dict as ``ktlab.ner/2``: intervals and paired comparisons
    computed from its stored test predictions (:func:`add_intervals`, no retraining) and the
    summary recomputed. A ``/2`` dict is returned unchanged."""
    if results.get("schema") in OLD_SCHEMAS:
        add_intervals(results)
        results["schema"] = SCHEMA
        results["summary"] = summarise(results)
    return results


def upgrade_results_dir(path: str | Path) -> dict:
    """Rewrite a results folder written under an older schema: ``results.json`` (migrated),
    ``table.md`` and the two plots that show intervals (``tradeoff.png``, ``per_type_f1.png``).
    For committed bench results: ``ner.upgrade_results_dir("results/ner-bench")``."""
    from ktlab.experiments import common
    out = Path(path)
    results = load_results(out)
    common.write_results(results, out, markdown_table(results),
                         {"per_type_f1": plot_per_type, "tradeoff": plot_tradeoff})
    return results


def _records(results: dict) -> list[dict]:
    return [results["teacher"]] + results["students"]


def _short(results: dict, rec: dict) -> str:
    return "teacher" if rec["student"] == "teacher" else rec["name"]


def plot_per_type(results: dict) -> Any:
    """Test F1 per entity type (PER, LOC, ORG, MISC) for every model: grouped bars, with the
    bootstrap 95% interval of each as an error bar where the results have them."""
    import matplotlib.pyplot as plt
    recs = _records(results)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(ENTITY_TYPES) + 0.4 * len(recs)), 3.8))
    width = 0.8 / len(recs)
    for k, r in enumerate(recs):
        rows = [r["test"]["per_type"].get(t, {}) for t in ENTITY_TYPES]
        vals = [row.get("f1", 0.0) for row in rows]
        cis = [row.get("f1_ci") or (v, v) for row, v in zip(rows, vals)]
        ax.bar([i + (k - (len(recs) - 1) / 2) * width for i in range(len(ENTITY_TYPES))], vals,
               width, label=_short(results, r),
               yerr=[[max(v - lo, 0) for v, (lo, _) in zip(vals, cis)],
                     [max(hi - v, 0) for v, (_, hi) in zip(vals, cis)]],
               error_kw=dict(lw=0.8, capsize=1.5, ecolor="0.25"))
    ax.set_xticks(range(len(ENTITY_TYPES)), ENTITY_TYPES)
    ax.set_xlabel("entity type")
    ax.set_ylabel("test F1 (%, strict IOB2; 95% CI)" if "bootstrap" in results
                  else "test F1 (%, strict IOB2)")
    ax.set_ylim(0, 100)
    ax.set_title(f"CoNLL-2003 F1 per entity type ({results['profile']} profile)")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(axis="y", alpha=0.3)
    return fig


def plot_errors(results: dict) -> Any:
    """Wrong entities on test split into boundary, type, type+boundary, spurious and missed."""
    import matplotlib.pyplot as plt
    kinds = ("boundary", "type", "type+boundary", "spurious", "missed")
    recs = _records(results)
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(recs) + 1.5))
    left = np.zeros(len(recs))
    for kind in kinds:
        vals = np.array([r["test"]["errors"].get(kind, 0) for r in recs], dtype=float)
        ax.barh(range(len(recs)), vals, left=left, label=kind)
        left += vals
    ax.set_yticks(range(len(recs)), [_short(results, r) for r in recs])
    ax.invert_yaxis()
    ax.set_xlabel("wrong entities on the test subset (count)")
    ax.set_title("Where the errors are: boundaries vs types")
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_tradeoff(results: dict) -> Any:
    """Test F1 against parameters and against batch-1 latency (log axes)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    markers = {"teacher": "*", "bilstm": "o", "tiny": "^"}
    for ax, key, label in ((axes[0], "params", "parameters (millions, log)"),
                           (axes[1], "latency_ms", "batch-1 CPU latency incl. decoding (ms, log)")):
        for r in _records(results):
            x = r[key] / 1e6 if key == "params" else r[key]
            dots = ax.scatter(x, r["test_f1"], marker=markers.get(r["student"], "o"),
                              s=120 if r["student"] == "teacher" else 50)
            if r.get("test_f1_ci"):   # the bootstrap 95% interval of the test F1
                low, high = r["test_f1_ci"]
                ax.errorbar(x, r["test_f1"], yerr=[[r["test_f1"] - low], [high - r["test_f1"]]],
                            fmt="none", ecolor=dots.get_facecolor()[0], capsize=3, lw=1)
            ax.annotate(_short(results, r), (x, r["test_f1"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))   # 2, 5, 10 rather than 2x10^0
        ax.xaxis.set_minor_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel(label)
        ax.set_ylabel("test entity F1 (%; bars: 95% CI)" if "bootstrap" in results
                      else "test entity F1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"NER: F1 vs size and latency ({results['profile']} profile)")
    return fig


def plot_teacher_curve(results: dict) -> Any:
    """The teacher's fine-tuning: training loss per step and dev entity F1 at each evaluation."""
    fig, ax, ax2 = common.teacher_curve_axes(results, results["teacher"]["history"]["eval_f1"],
                                             "dev F1 (first sub-token)", "dev entity F1 (%)")
    ax2.set_ylim(0, 100)
    ax.set_title(f"Teacher fine-tuning on CoNLL-2003 ({results['teacher_name']}, "
                 f"{results['profile']})")
    lines = ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()
    ax.legend(lines[0][0] + lines[1][0], lines[0][1] + lines[1][1], loc="center right",
              fontsize=8)
    return fig


def highlight_html(tokens: Sequence[str], gold: Sequence[str], pred: Sequence[str]) -> str:
    """One sentence as HTML: gold entities underlined, predicted ones coloured by type; a
    prediction that matches a gold span exactly is green-bordered, a wrong one red-bordered."""
    from ktlab.tagging import decode_entities, repair_iob2
    colours = {"PER": "#ffd6a5", "LOC": "#caffbf", "ORG": "#9bf6ff", "MISC": "#e0c3fc"}
    gold_spans = set(decode_entities(gold))
    pred_spans = set(decode_entities(repair_iob2(pred)[0]))
    pred_at = {s: (k, s, e) for k, s, e in pred_spans}
    gold_at = {i: k for k, s, e in gold_spans for i in range(s, e)}
    parts, i = [], 0
    while i < len(tokens):
        if i in pred_at:
            kind, s, e = pred_at[i]
            ok = (kind, s, e) in gold_spans
            words = " ".join(_gold_word(tokens, j, gold_at) for j in range(s, e))
            parts.append(f'<span style="background:{colours.get(kind, "#eee")};padding:1px 3px;'
                         f'border:2px solid {"#2a9d2a" if ok else "#d62828"};border-radius:3px">'
                         f'{words}<sub style="font-size:70%">{kind}</sub></span>')
            i = e
        else:
            parts.append(_gold_word(tokens, i, gold_at))
            i += 1
    return '<div style="line-height:2.1;font-family:sans-serif">' + " ".join(parts) + "</div>"


def _gold_word(tokens: Sequence[str], i: int, gold_at: dict) -> str:
    import html
    word = html.escape(tokens[i])
    if i in gold_at:
        return (f'<u style="text-decoration-thickness:2px" title="gold {gold_at[i]}">{word}'
                f'</u>')
    return word
