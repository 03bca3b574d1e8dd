"""Text classification transfer, stage by stage: teacher -> cached logits -> students.

The code behind ``ktlab run classify`` (your own labelled files) and ``ktlab run sentiment``
(its SST-2 preset), and behind notebook 04, which calls the same stages one cell each:

==================================  ======================================================
stage                               function
==================================  ======================================================
1. load the labelled data           :func:`load_data`
2. fine-tune the teacher            :func:`build_teacher` + :func:`fine_tune_teacher`
3. cache its logits once            :func:`cache_logits`
4. build the transfer set           :func:`build_transfer_set` (Tang et al. 2019)
5. train one student                :func:`train_student` under a :class:`Condition`
6. measure it                       :func:`measure` (accuracy with its interval, speed)
==================================  ======================================================

:func:`run` is only the composition of those functions plus the results writer.

Every stage that takes minutes is **resumable**: the teacher and each student checkpoint every
``save_every`` optimiser steps and the logit cache every ``save_every`` batches, all written
atomically under ``<out>/cache/<key>/``. Ctrl-C (or a kill) and the same command again continue
where the last checkpoint left off and end with the results of an uninterrupted run.
"""
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn.functional as F

from ktlab import config as kconfig
from ktlab.experiments import common
from ktlab.experiments.common import (  # noqa: F401  (shared stages, re-exported)
    ConfigError, StageCallback, cache_key, caps_record, count_params, train_resumable)

SCHEMA = "ktlab.sentiment/1"
STUDENTS = ("bilstm", "cnn", "tiny")


# ----------------------------------------------------------------------------- sizes

@dataclasses.dataclass(frozen=True)
class ClassifySizes:
    """How big one run is. ``None`` means the whole split."""

    teacher_train: Optional[int]     #: sentences the teacher is fine-tuned on
    student_train: Optional[int]     #: labelled sentences the students see (transfer-set base)
    dev: Optional[int]               #: dev sentences for every evaluation
    augment_per_sentence: int        #: augmented copies per training sentence (0 = no +aug)
    max_length: int
    teacher_epochs: int
    student_epochs: int
    batch_size: int = 32             #: teacher batch (and speed measurement batch)
    student_batch_size: int = 32
    teacher_lr: float = 5e-5
    teacher_freeze_embeddings: bool = True  #: keep the word-embedding table fixed (speed, and
    #: it stays the table the +pca students copy)
    teacher_evals: int = 4           #: dev evaluations during teacher fine-tuning (the curve)
    speed_sentences: int = 256       #: dev sentences timed for throughput
    latency_sentences: int = 64      #: dev sentences timed one by one for latency
    save_every: int = 200            #: optimiser steps (or cached batches) between checkpoints
    student_max_steps: Optional[int] = None  #: cap per student run (tests, smoke runs)
    teacher_max_steps: Optional[int] = None


PROFILE_SIZES = {
    # <= 5 min on 2 CPU cores, teacher included; notebook 04 uses it too
    "quick": ClassifySizes(teacher_train=2000, student_train=2000, dev=None,
                           augment_per_sentence=1, max_length=64, teacher_epochs=1,
                           student_epochs=2, teacher_lr=1e-4, teacher_evals=2),
    # one GPU: everything, the BERT recipe (all weights train)
    "full": ClassifySizes(teacher_train=None, student_train=None, dev=None,
                          augment_per_sentence=2, max_length=128, teacher_epochs=3,
                          student_epochs=5, teacher_lr=2e-5, teacher_freeze_embeddings=False,
                          teacher_evals=10),
    # the 2-core CPU bench (<= 110 min): all 67,349 SST-2 sentences (results/sentiment-bench)
    "bench": ClassifySizes(teacher_train=None, student_train=None, dev=None,
                           augment_per_sentence=1, max_length=64, teacher_epochs=1,
                           student_epochs=2, student_batch_size=64, teacher_evals=4,
                           speed_sentences=872, latency_sentences=200),
    # unit tests: a few dozen sentences, one or two optimiser steps
    "tiny": ClassifySizes(teacher_train=32, student_train=48, dev=32, augment_per_sentence=1,
                          max_length=32, teacher_epochs=1, student_epochs=1, batch_size=16,
                          student_batch_size=16, teacher_evals=1, speed_sentences=32,
                          latency_sentences=4, save_every=1, student_max_steps=2,
                          teacher_max_steps=2),
}

#: Student hyper-parameters (Tang et al. 2019 for the BiLSTM; Kim 2014 for the CNN).
STUDENT_KWARGS = {
    "bilstm": dict(embed_dim=300, hidden_size=150, mlp_size=200, dropout=0.1, pooling="max"),
    "cnn": dict(embed_dim=300, num_filters=100, kernel_sizes=(3, 4, 5), dropout=0.5),
    "tiny": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
}
STUDENT_LR = {"bilstm": 2e-3, "cnn": 2e-3, "tiny": 5e-4, "tiny-init": 1e-4}
#: How each teacher turns token states into a sentence vector: the offline MiniLM is a
#: mean-pooling sentence encoder; hub BERTs use their pre-trained [CLS] pooler (HF's head).
TEACHER_POOLING = {"minilm": "mean"}
#: The new classification head learns this many times faster than the pre-trained encoder.
HEAD_LR_SCALE = 10.0
#: Layers of the teacher-initialised tiny student (6 -> 3 copies teacher layers 1, 3, 5).
TINY_INIT_LAYERS = 3


# ----------------------------------------------------------------------------- conditions

@dataclasses.dataclass(frozen=True)
class Condition:
    """How one student is trained: what it learns from, on which sentences, from which init."""

    name: str
    distill: bool                 #: match the teacher's cached logits (else gold labels)
    augment: bool = False         #: add the augmented transfer set (teacher labels only)
    embedding_init: str = "random"  #: "random" or "pca" (the teacher's table, PCA-projected)
    freeze_embeddings: bool = False  #: keep the word-embedding table fixed (2-3x faster steps)
    init_layers: bool = False     #: tiny student: copy teacher layers (ktlab.transfer.layers)


CONDITIONS = {c.name: c for c in (
    Condition("hard", distill=False),
    # the control: teacher embeddings *without* distillation separates the two effects
    Condition("hard+pca", distill=False, embedding_init="pca", freeze_embeddings=True),
    Condition("kd", distill=True),
    Condition("kd+aug", distill=True, augment=True),
    Condition("kd+aug+pca", distill=True, augment=True, embedding_init="pca",
              freeze_embeddings=True),
    Condition("init+kd+aug", distill=True, augment=True, init_layers=True),
)}
#: Conditions per student (tiny has no embedding table to PCA-initialise; it copies layers).
STUDENT_CONDITIONS = {
    "bilstm": ("hard", "hard+pca", "kd", "kd+aug", "kd+aug+pca"),
    "cnn": ("hard", "hard+pca", "kd", "kd+aug", "kd+aug+pca"),
    "tiny": ("hard", "kd", "kd+aug", "init+kd+aug"),
}
#: Fewer runs where the budget is minutes.
PROFILE_CONDITIONS = {
    "quick": {"bilstm": ("hard", "hard+pca", "kd+aug", "kd+aug+pca"), "cnn": ("hard", "kd+aug"),
              "tiny": ("init+kd+aug",)},
}
PROFILE_STUDENTS = {"bench": ("bilstm", "cnn")}


def cap_sizes(sizes: ClassifySizes, max_examples: Optional[int] = None,
              max_steps: Optional[int] = None) -> ClassifySizes:
    """``sizes`` with every split and timing sample cut to ``max_examples`` sentences and every
    training run to ``max_steps`` optimiser steps (``--max-examples`` / ``--max-steps``)."""
    return common.cap_fields(sizes, max_examples, max_steps,
                             ("teacher_train", "student_train", "dev", "speed_sentences",
                              "latency_sentences"), ("teacher_max_steps", "student_max_steps"))


def parse_students(spec: str | Sequence[str]) -> list[str]:
    """``"bilstm,cnn"`` -> ``["bilstm", "cnn"]``, rejecting unknown names with the valid ones."""
    return common.parse_names(spec, STUDENTS, "student", "--students", "bilstm,cnn")


def default_students(profile: Optional[str]) -> tuple[str, ...]:
    """The students a profile trains when none are named (the bench: BiLSTM and CNN)."""
    return PROFILE_STUDENTS.get(kconfig.load(profile, verbose=False).profile, STUDENTS)


def parse_conditions(spec: Optional[str], students: Sequence[str]
                     ) -> Optional[dict[str, tuple[str, ...]]]:
    """``"hard,kd"`` -> the same conditions for every student (those it supports), or None
    (the profile's). Unknown names are rejected with the valid ones."""
    if not spec:
        return None
    names = tuple(dict.fromkeys(n.strip() for n in spec.split(",") if n.strip()))
    unknown = [n for n in names if n not in CONDITIONS]
    if unknown or not names:
        raise ConfigError(f"unknown condition(s) {unknown or '(none given)'}; --conditions takes "
                          f"a comma-separated list of {', '.join(CONDITIONS)}")
    return {s: tuple(n for n in names if n in STUDENT_CONDITIONS[s]) for s in students}


def conditions_for(profile: str, students: Sequence[str],
                   override: Optional[dict[str, Sequence[str]]] = None) -> dict[str, tuple]:
    """The condition names each student runs under, checked against :data:`STUDENT_CONDITIONS`."""
    table = common.condition_table(STUDENT_CONDITIONS, PROFILE_CONDITIONS.get(profile, {}),
                                   override, students, STUDENT_CONDITIONS.__getitem__)
    return {s: table[s] for s in students}


# ----------------------------------------------------------------------------- 1. data

def load_data(sizes: ClassifySizes, seed: int, data_dir: Optional[Path] = None,
              task: Any = None) -> dict:
    """Seeded, label-stratified subsets of a :class:`ktlab.data.labelled.ClassificationTask`
    (SST-2 when ``task`` is None). The teacher's set is a subset of the students' set, so the
    students never see a labelled sentence the teacher was denied."""
    import datasets
    from ktlab.data import subset
    from ktlab.data.labelled import sst2_task
    task = task or sst2_task(data_dir)
    train = subset(datasets.Dataset.from_dict(task.train), sizes.student_train, seed,
                   stratify_by="label")
    teacher = subset(train, sizes.teacher_train, seed + 1, stratify_by="label")
    dev = subset(datasets.Dataset.from_dict(task.dev), sizes.dev, seed, stratify_by="label")
    if len(dev) == 0:
        raise ConfigError(f"the dev set of {task.name!r} is empty: evaluation needs labelled "
                          "dev sentences (pass --dev FILE with at least one row, or a task "
                          "whose dev columns hold at least one sentence)")
    return {"task": task.name, "label_names": list(task.label_names), "train": train,
            "teacher_train": teacher, "dev": dev}


def encode(tokenizer: Any, sentences: Sequence[str], labels: Optional[Sequence[int]],
           max_length: int, teacher_logits: Optional[torch.Tensor] = None,
           report: Any = None) -> list[dict]:
    """Token ids (unpadded), the gold label (-100 when none) and the teacher's logits.

    Sentences longer than ``max_length`` sub-tokens are cut (``[CLS] ... [SEP]`` kept) and
    counted in ``report``, a :class:`ktlab.data.TruncationReport`, when one is given."""
    from ktlab.data.collate import encode_sentences
    items = encode_sentences(tokenizer, sentences, max_length=max_length, report=report)
    for i, item in enumerate(items):
        item["labels"] = int(labels[i]) if labels is not None else -100
        if teacher_logits is not None:
            item["teacher_logits"] = teacher_logits[i].float()
    return items


def build_transfer_set(sentences: Sequence[str], per_sentence: int, seed: int,
                       labels: Optional[Sequence[int]] = None, swap: str = "pos",
                       data_dir: Optional[Path] = None) -> tuple[list[str], dict]:
    """Augmented sentences (no gold labels) for ``+aug``: Tang et al.'s masking, POS-guided word
    swaps (POS from CoNLL-2003's train split) and n-gram sampling (:mod:`ktlab.augment`)."""
    from ktlab import augment
    if per_sentence < 1:
        return [], {"augmented": 0}
    if swap == "pos":
        from ktlab.data import load_conll
        lookup = augment.build_pos_lookup(load_conll("train", data_dir))
    elif swap == "class":
        lookup = augment.build_class_lookup(sentences, labels or [])
    else:
        lookup = None
    cfg = augment.AugmentConfig(n_samples=per_sentence, swap=swap)
    new = augment.augment_dataset(sentences, cfg, lookup, seed=seed)
    info = {"augmented": len(new), "config": dataclasses.asdict(cfg),
            "lookup_words": len(lookup) if lookup else 0,
            "lookup_coverage": round(lookup.coverage(sentences), 4) if lookup else 0.0}
    return new, info


# ----------------------------------------------------------------------------- 2. teacher

def teacher_pooling(teacher_name: str) -> str:
    """``"mean"`` or ``"cls"``: how ``teacher_name`` pools a sentence (:data:`TEACHER_POOLING`)."""
    return TEACHER_POOLING.get(teacher_name, "cls")


def build_teacher(teacher_name: str, num_labels: int, seed: int) -> torch.nn.Module:
    """MiniLM + a mean-pooling head, or a hub/folder BERT with HF's [CLS] head. Seeded first:
    the new head draws from the global RNG."""
    from ktlab.models import load_teacher
    kconfig.seed_everything(seed)
    if teacher_pooling(teacher_name) == "mean":
        from ktlab.nn.students import MeanPoolClassifier
        return MeanPoolClassifier(load_teacher(teacher_name, seed=seed), num_labels)
    return load_teacher(teacher_name, num_labels=num_labels, task="sequence", seed=seed)


def optimizer_with_fast_head(model: torch.nn.Module, lr: float, weight_decay: float,
                             head: Sequence[str] = ("classifier.", "bert.pooler.")) -> Any:
    """AdamW where the (new) head's parameters learn ``HEAD_LR_SCALE`` x faster than the
    pre-trained encoder, with the Trainer's decay rule (none on biases and LayerNorm)."""
    from ktlab.train import NO_DECAY
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        fast = name.startswith(tuple(head))
        decay = not (any(nd in name for nd in NO_DECAY) or param.ndim == 1)
        groups.setdefault((fast, decay), []).append(param)
    return torch.optim.AdamW(
        [{"params": params, "lr": lr * (HEAD_LR_SCALE if fast else 1.0),
          "weight_decay": weight_decay if decay else 0.0}
         for (fast, decay), params in groups.items()], lr=lr)


def fine_tune_teacher(teacher: torch.nn.Module, items: list[dict], dev_items: list[dict],
                      sizes: ClassifySizes, seed: int, work_dir: Path, pad_id: int = 0,
                      progress: bool = False, callbacks: Iterable[StageCallback] = (),
                      loss_fn: Optional[Callable] = None) -> dict:
    """Fine-tune ``teacher`` in place (resumable); returns its training history as a dict.

    A finished run is read back from ``work_dir/model.pt`` instead of retraining. ``loss_fn``
    (default: the model's own cross-entropy) lets notebook 09 train the same recipe with an
    adversarial loss (:func:`ktlab.robustness.fgm_loss`)."""
    if sizes.teacher_freeze_embeddings:
        teacher.get_input_embeddings().weight.requires_grad_(False)
    steps = common.planned_steps(len(items), sizes.batch_size, sizes.teacher_epochs,
                                 sizes.teacher_max_steps)
    optimizer = optimizer_with_fast_head(teacher, sizes.teacher_lr, 0.01)
    return train_resumable(
        teacher, items, dev_items, work_dir, "teacher", callbacks, lr=sizes.teacher_lr,
        epochs=sizes.teacher_epochs, batch_size=sizes.batch_size, seed=seed, loss_fn=loss_fn,
        pad_id=pad_id, weight_decay=0.01, warmup_ratio=0.1, max_steps=sizes.teacher_max_steps,
        eval_every=max(1, -(-steps // max(1, sizes.teacher_evals))), progress=progress,
        save_every=sizes.save_every, optimizer=optimizer)


# ----------------------------------------------------------------------------- 3. logits

def cache_logits(teacher: torch.nn.Module, items: list[dict], file: Path, pad_id: int = 0,
                 batch_size: int = 64, save_every: int = 50,
                 callbacks: Iterable[StageCallback] = (), stage: str = "logits") -> torch.Tensor:
    """The teacher's logits for ``items``, computed once and kept in ``file`` (resumable).

    Batches are formed from length-sorted items (less padding), and the logits are put back in
    the items' order. Every ``save_every`` batches the finished part is saved atomically, so an
    interrupted run continues from there."""
    from ktlab.data.collate import PadCollator
    from ktlab.train import logits_of, model_inputs
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    collate = PadCollator(pad_id)
    teacher = teacher.to("cpu").eval()

    def compute(rows: list[int]) -> torch.Tensor:
        batch = collate([{k: items[i][k] for k in ("input_ids", "token_type_ids")} for i in rows])
        return logits_of(teacher(**model_inputs(teacher, batch))).float()

    def finish(done: list[torch.Tensor]) -> torch.Tensor:
        logits = torch.empty(len(items), done[0].shape[-1] if done else 0)
        if done:
            logits[torch.tensor(order)] = torch.cat(done)
        return logits

    return common.cache_batches(file, batches, compute, finish, save_every, callbacks, stage)


# ----------------------------------------------------------------------------- 4/5. students

def hard_label_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy on the gold labels (augmented sentences carry -100 and are ignored)."""
    return F.cross_entropy(_logits(model, batch), batch["labels"], ignore_index=-100)


def _logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    from ktlab.train import logits_of, model_inputs
    inputs = {k: v for k, v in model_inputs(model, batch).items() if k != "labels"}
    return logits_of(model(**inputs))


def make_distill_loss(alpha: float = 0.0, objective: str = "mse",
                      temperature: float = 2.0) -> Callable:
    """``loss_fn(model, batch)`` for distillation from cached ``teacher_logits``.

    ``objective="mse"`` matches logits (Tang et al. found it best for BiLSTM students);
    ``"kl"`` is Hinton's temperature-softened KL. ``alpha`` mixes in cross-entropy on gold labels
    where a sentence has one (augmented sentences have none)."""
    from ktlab.transfer import distill

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        logits = _logits(model, batch)
        teacher = batch["teacher_logits"].to(logits.dtype)
        soft = (distill.logit_mse(logits, teacher) if objective == "mse"
                else distill.kd_loss(logits, teacher, temperature))
        labelled = batch["labels"] != -100
        if alpha <= 0 or not labelled.any():
            return soft
        hard = F.cross_entropy(logits[labelled], batch["labels"][labelled])
        return alpha * hard + (1 - alpha) * soft

    return loss_fn


def build_student(student: str, condition: Condition, teacher: torch.nn.Module,
                  vocab_size: int, num_labels: int, pad_id: int, seed: int) -> torch.nn.Module:
    """The student named ``student``, initialised as ``condition`` says (seeded first)."""
    from ktlab.nn import students
    kconfig.seed_everything(seed)
    if condition.init_layers:
        return tiny_from_teacher(teacher, vocab_size, pad_id, num_labels)
    return students.build_student(
        student, vocab_size, num_labels, pad_token_id=pad_id,
        teacher_table=students.teacher_input_embeddings(teacher),
        embedding_init=condition.embedding_init, **STUDENT_KWARGS[student])


def tiny_from_teacher(teacher: torch.nn.Module, vocab_size: int, pad_token_id: int,
                      num_labels: int) -> torch.nn.Module:
    """A shallower student of the teacher's *width*: embeddings and teacher layers 1, 3, 5
    (``uniform`` map, DistilBERT-style) plus the fine-tuned head, so it starts as a (damaged)
    copy of the teacher rather than from noise."""
    from ktlab.nn.students import MeanPoolClassifier, tiny_transformer
    from ktlab.transfer.layers import init_student_from_teacher
    tc = teacher.config
    student = tiny_transformer(vocab_size, num_labels, hidden_size=tc.hidden_size,
                               num_layers=max(1, min(TINY_INIT_LAYERS, tc.num_hidden_layers)),
                               num_heads=tc.num_attention_heads,
                               intermediate_size=tc.intermediate_size,
                               max_position_embeddings=tc.max_position_embeddings,
                               pad_token_id=pad_token_id,
                               pooling="mean" if isinstance(teacher, MeanPoolClassifier) else "cls")
    init_student_from_teacher(student, teacher, "uniform")
    with torch.no_grad():
        s_state, t_state = student.state_dict(), teacher.state_dict()
        for name, value in s_state.items():
            if (name.startswith(("bert.pooler.", "classifier.")) and name in t_state
                    and t_state[name].shape == value.shape):
                value.copy_(t_state[name])
    return student


def train_student(model: torch.nn.Module, student: str, condition: Condition,
                  train_items: list, aug_items: list, sizes: ClassifySizes, seed: int,
                  work_dir: Path, pad_id: int = 0, progress: bool = False,
                  callbacks: Iterable[StageCallback] = (),
                  loss_fn: Optional[Callable] = None) -> dict:
    """Train one student under ``condition`` (resumable); returns its history dict.

    ``loss_fn`` replaces the condition's loss (notebook 09 wraps it in adversarial training).

    Every condition gets the same budget, ``student_epochs`` passes' worth of the labelled set:
    with the transfer set added, there are proportionally fewer passes over the larger set."""
    items = train_items + aug_items if condition.augment else train_items
    epochs = max(1, round(sizes.student_epochs * len(train_items) / len(items)))
    if condition.freeze_embeddings and hasattr(model, "embedding"):
        model.embedding.weight.requires_grad_(False)
    lr = STUDENT_LR["tiny-init" if condition.init_layers else student]
    return train_resumable(
        model, items, None, work_dir, f"{student}/{condition.name}", callbacks, lr=lr,
        epochs=epochs, batch_size=sizes.student_batch_size, seed=seed,
        loss_fn=loss_fn or (make_distill_loss() if condition.distill else hard_label_loss),
        pad_id=pad_id, weight_decay=0.01 if student == "tiny" else 0.0, warmup_ratio=0.05,
        max_steps=sizes.student_max_steps, save_every=sizes.save_every, progress=progress)


# ----------------------------------------------------------------------------- 6. measuring

def predict(model: torch.nn.Module, items: Sequence[dict], pad_id: int = 0,
            batch_size: int = 64) -> torch.Tensor:
    """Logits for ``items`` in their order (length-sorted batches, ``torch.inference_mode``)."""
    from ktlab.data.collate import PadCollator
    from ktlab.train import logits_of, model_inputs
    if not items:
        raise ConfigError("predict() got no items: nothing to predict on (an empty dev list?); "
                          "pass at least one encoded sentence")
    collate = PadCollator(pad_id)
    model = model.to("cpu").eval()
    order = sorted(range(len(items)), key=lambda i: len(items[i]["input_ids"]))
    out = []
    with torch.inference_mode():
        for i in range(0, len(order), batch_size):
            batch = collate([{k: items[j][k] for k in ("input_ids", "token_type_ids")}
                             for j in order[i:i + batch_size]])
            out.append(logits_of(model(**model_inputs(model, batch))).float())
    logits = torch.empty(len(items), out[0].shape[-1])
    logits[torch.tensor(order)] = torch.cat(out)
    return logits.clone()


def measure_speed(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int = 0,
                  batch_size: int = 32, latency_items: int = 64, bucketed: bool = True,
                  inference_mode: bool = True) -> dict:
    """CPU throughput (sentences/s at ``batch_size``) and batch-1 latency (median, p90 ms).

    Tokenisation is excluded (ids are prepared first); one warm-up call precedes each
    measurement. ``bucketed`` batches length-sorted sentences, as a server that groups requests
    by length would; ``inference_mode`` is ``torch.inference_mode`` (else ``torch.no_grad``)."""
    from ktlab.data.collate import PadCollator
    from ktlab.experiments.common import time_calls
    from ktlab.train import model_inputs
    collate = PadCollator(pad_token_id)
    model = model.to("cpu").eval()
    strip = [{k: it[k] for k in ("input_ids", "token_type_ids")} for it in items]
    ordered = sorted(strip, key=lambda it: len(it["input_ids"])) if bucketed else strip
    batches = [model_inputs(model, collate(ordered[i:i + batch_size]))
               for i in range(0, len(ordered), batch_size)]
    singles = [model_inputs(model, collate([it])) for it in strip[:latency_items]]
    context = torch.inference_mode if inference_mode else torch.no_grad
    with context():
        return time_calls(lambda b: model(**b), batches, singles, len(strip))


def measure(name: str, student: str, condition: str, model: torch.nn.Module,
            dev_items: list, sizes: ClassifySizes, pad_id: int = 0) -> dict:
    """One result row: dev accuracy with its 95% interval, parameters and CPU speed."""
    from ktlab.metrics import accuracy_interval
    if not dev_items:
        raise ConfigError(f"measure({name!r}) got an empty dev list: accuracy needs at least "
                          "one labelled dev sentence (check the dev file or the subset size)")
    logits = predict(model, dev_items, pad_id)
    preds = logits.argmax(-1).tolist()
    ci = accuracy_interval([p == it["labels"] for p, it in zip(preds, dev_items)])
    speed = measure_speed(model, dev_items[: sizes.speed_sentences], pad_id, sizes.batch_size,
                          sizes.latency_sentences)
    return {**common.model_record(name, student, condition, model, speed,
                                  dev_accuracy=round(ci["accuracy"], 5),
                                  dev_accuracy_ci95=[round(ci["low"], 5), round(ci["high"], 5)]),
            "dev_predictions": preds, "_logits": logits}


# ----------------------------------------------------------------------------- run = stages

_cache_key = cache_key  # the NER pipeline's name for it


@dataclasses.dataclass
class Prepared:
    """What stages 1-4 produce and every student run reads."""

    data: dict
    tokenizer: Any
    pad_id: int
    teacher: torch.nn.Module
    teacher_record: dict
    train_items: list
    aug_items: list
    dev_items: list
    aug_info: dict
    work: Path
    timings: dict
    #: split -> :class:`ktlab.data.TruncationReport` of the sentences cut to ``max_length``
    truncation: dict = dataclasses.field(default_factory=dict)


def prepare(cfg: Any, sizes: ClassifySizes, out: Path, task: Any = None,
            use_cache: bool = True, progress: bool = False,
            callbacks: Iterable[StageCallback] = (), log: Callable[[str], None] = print
            ) -> Prepared:
    """Stages 1-4: data, teacher fine-tune, cached logits, transfer set."""
    from ktlab.data.collate import TruncationReport
    from ktlab.models import load_tokenizer
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    data = load_data(sizes, cfg.seed, cfg.data_dir, task)
    tokenizer = load_tokenizer(cfg.teacher)
    pad_id = tokenizer.pad_token_id or 0
    train, dev = data["train"], data["dev"]
    augmented, aug_info = build_transfer_set(train["sentence"], sizes.augment_per_sentence,
                                             cfg.seed, data_dir=cfg.data_dir)
    truncation = {split: TruncationReport() for split in ("train", "augmented", "dev")}
    dev_items = encode(tokenizer, dev["sentence"], dev["label"], sizes.max_length,
                       report=truncation["dev"])
    train_items = encode(tokenizer, train["sentence"], train["label"], sizes.max_length,
                         report=truncation["train"])
    aug_items = encode(tokenizer, augmented, None, sizes.max_length,
                       report=truncation["augmented"])
    timings["data"] = time.perf_counter() - t0
    log(f"[classify] data {data['task']}: teacher {len(data['teacher_train'])}, students "
        f"{len(train)}, augmented {len(augmented)}, dev {len(dev)}, "
        f"{len(data['label_names'])} labels ({timings['data']:.0f} s)")
    log(f"[classify] max_length {sizes.max_length}: {truncation_summary(truncation)}")

    key = cache_key(task=data["task"], labels=data["label_names"], teacher=cfg.teacher,
                    seed=cfg.seed, sizes=dataclasses.asdict(sizes), schema=SCHEMA,
                    pooling=teacher_pooling(cfg.teacher), head_lr_scale=HEAD_LR_SCALE)
    work = out / "cache" / key
    if not use_cache and work.exists():
        shutil.rmtree(work)
    t0 = time.perf_counter()
    teacher = build_teacher(cfg.teacher, len(data["label_names"]), cfg.seed)
    t_items = encode(tokenizer, data["teacher_train"]["sentence"],
                     data["teacher_train"]["label"], sizes.max_length)
    history = fine_tune_teacher(teacher, t_items, dev_items, sizes, cfg.seed, work / "teacher",
                                pad_id, progress, callbacks)
    timings["teacher_finetune"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    logits = cache_logits(teacher, train_items + aug_items, work / "logits.pt", pad_id,
                          save_every=sizes.save_every, callbacks=callbacks)
    for item, row in zip(train_items + aug_items, logits):
        item["teacher_logits"] = row
    timings["teacher_logits"] = time.perf_counter() - t0
    record = measure(f"teacher ({cfg.teacher})", "teacher", "fine-tuned", teacher, dev_items,
                     sizes, pad_id)
    record.update(train_seconds=history["train_seconds"], history=history,
                  train_examples=len(t_items) * sizes.teacher_epochs)
    log(f"[classify] teacher dev accuracy {record['dev_accuracy']:.4f} "
        f"(95% CI {record['dev_accuracy_ci95']}); {record['throughput_sps']:.0f} sent/s; "
        f"logits cached in {timings['teacher_logits']:.0f} s")
    return Prepared(data, tokenizer, pad_id, teacher, record, train_items, aug_items,
                    dev_items, aug_info, work, timings, truncation)


def truncation_summary(reports: dict) -> str:
    """``"3 of 160 inputs truncated (1.9%): train 1, augmented 0, dev 2"``."""
    from ktlab.data.collate import TruncationReport
    total = TruncationReport(sum(r.total for r in reports.values()),
                             sum(r.truncated for r in reports.values()))
    return f"{total}: " + ", ".join(f"{k} {r.truncated}" for k, r in reports.items())


def run_student(prep: Prepared, student: str, condition_name: str, sizes: ClassifySizes,
                seed: int, progress: bool = False, callbacks: Iterable[StageCallback] = ()
                ) -> dict:
    """Stage 5 + 6 for one (student, condition): build, train (resumable), measure."""
    condition = CONDITIONS[condition_name]
    model = build_student(student, condition, prep.teacher, len(prep.tokenizer),
                          len(prep.data["label_names"]), prep.pad_id, seed)
    key = cache_key(student=student, condition=dataclasses.asdict(condition),
                    kwargs=STUDENT_KWARGS[student], lr=STUDENT_LR)
    history = train_student(model, student, condition, prep.train_items, prep.aug_items, sizes,
                            seed, prep.work / f"{student}-{condition_name}-{key}", prep.pad_id,
                            progress, callbacks)
    rec = measure(f"{student}/{condition_name}", student, condition_name, model,
                  prep.dev_items, sizes, prep.pad_id)
    teacher_preds = torch.tensor(prep.teacher_record["dev_predictions"])
    rec["agreement_with_teacher"] = round(float(
        (rec.pop("_logits").argmax(-1) == teacher_preds).float().mean()), 5)
    rec.update(train_seconds=history["train_seconds"], history=history,
               train_examples=history["examples_seen"], _model=model)
    return rec


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        students: str | Sequence[str] | None = None, out_dir: str | Path = "runs/classify",
        seed: Optional[int] = None, sizes: Optional[ClassifySizes] = None,
        conditions: Optional[dict[str, Sequence[str]]] = None, task: Any = None,
        use_cache: bool = True, plots: bool = True, progress: bool = False,
        callbacks: Iterable[StageCallback] = (), log: Callable[[str], None] = print,
        max_examples: Optional[int] = None, max_steps: Optional[int] = None) -> dict:
    """The whole experiment: :func:`prepare` (stages 1-4), then :func:`run_student` for every
    (student, condition), then the results folder. Returns the results dict.

    ``max_examples`` / ``max_steps`` cap the profile's sizes (smoke runs of a profile)."""
    from ktlab.models import resolve_teacher
    cfg, sizes = common.resolve(profile, teacher, seed, PROFILE_SIZES, sizes, cap_sizes,
                                max_examples, max_steps)
    names = parse_students(students or default_students(cfg.profile))
    table = conditions_for(cfg.profile, names, conditions)
    resolve_teacher(cfg.teacher)  # a bad --teacher fails now, before minutes of data loading
    out = Path(out_dir)
    started, cpu_started = time.time(), time.process_time()
    log(f"[classify] {cfg.summary()} students={','.join(names)} out={out}")
    prep = prepare(cfg, sizes, out, task, use_cache, progress, callbacks, log)
    records, models = [], {}
    for student in names:
        for condition in table[student]:
            if CONDITIONS[condition].augment and not prep.aug_items:
                continue
            t0 = time.perf_counter()
            rec = run_student(prep, student, condition, sizes, cfg.seed, progress, callbacks)
            models[rec["name"]] = rec.pop("_model")
            records.append(rec)
            prep.timings[rec["name"]] = time.perf_counter() - t0
            log(f"[classify] {rec['name']:<22} dev {rec['dev_accuracy']:.4f}  "
                f"{rec['throughput_sps']:.0f} sent/s  {rec['latency_ms']:.2f} ms")
            partial = assemble_results(cfg, sizes, names, prep, records, started, cpu_started)
            write_results({**partial, "complete": False}, out, plots=False)
    time_side_by_side(prep, records, models, sizes)
    results = assemble_results(cfg, sizes, names, prep, records, started, cpu_started)
    results["capped"] = caps_record(max_examples, max_steps)
    write_results({**results, "complete": True}, out, plots=plots)
    log(markdown_table(results))
    log(f"[classify] wrote {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results


def time_side_by_side(prep: Prepared, records: list, models: dict, sizes: ClassifySizes,
                      rounds: int = 2) -> None:
    """Re-time the teacher and every student back to back, in rounds, once all training is
    done: speeds measured minutes apart on a shared machine are not comparable. Each record
    keeps the median of its rounds (and the first, training-time figure under ``speed_at_train``)."""
    everyone = {prep.teacher_record["name"]: (prep.teacher, prep.teacher_record)}
    everyone.update({r["name"]: (models[r["name"]], r) for r in records})
    common.retime_side_by_side(everyone, lambda model: measure_speed(
        model, prep.dev_items[: sizes.speed_sentences], prep.pad_id, sizes.batch_size,
        sizes.latency_sentences), rounds)


def assemble_results(cfg: Any, sizes: ClassifySizes, names: Sequence[str], prep: Prepared,
                     records: list, started: float, cpu_started: float) -> dict:
    """The results dict (schema :data:`SCHEMA`) from the prepared stages and student rows."""
    teacher = {k: v for k, v in prep.teacher_record.items() if k != "_logits"}
    dev_logits = prep.teacher_record["_logits"]
    results = {
        "schema": SCHEMA, "task": prep.data["task"], "label_names": prep.data["label_names"],
        "profile": cfg.profile, "teacher_name": cfg.teacher, "seed": cfg.seed,
        "teacher_pooling": teacher_pooling(cfg.teacher), "head_lr_scale": HEAD_LR_SCALE,
        "sizes": dataclasses.asdict(sizes), "students_requested": list(names),
        "conditions": {c.name: dataclasses.asdict(c) for c in CONDITIONS.values()},
        "machine": common.describe_machine(), "torch_threads": torch.get_num_threads(),
        **common.run_clock(started, cpu_started, prep.timings),
        "data": {"teacher_train": len(prep.data["teacher_train"]),
                 "student_train": len(prep.train_items),
                 "transfer_augmented": len(prep.aug_items), "dev": len(prep.dev_items),
                 "augment": prep.aug_info,
                 # sentences cut to sizes.max_length sub-tokens ([CLS] ... [SEP] kept)
                 "truncated": sum(r.truncated for r in prep.truncation.values()),
                 "encoded": sum(r.total for r in prep.truncation.values()),
                 "truncated_per_split": {k: r.truncated for k, r in prep.truncation.items()}},
        "cache_key": prep.work.name, "teacher": teacher, "students": records,
        "dev": {"idx": [int(i) for i in prep.data["dev"]["idx"]],
                "labels": [int(it["labels"]) for it in prep.dev_items],
                "teacher_probs": [[round(p, 5) for p in row]
                                  for row in dev_logits.softmax(-1).tolist()]},
    }
    results["summary"] = summarise(results)
    return results


# ----------------------------------------------------------------------------- reporting

def _paired(a: dict, b: dict, labels: Sequence[int]) -> dict:
    """Accuracy difference a - b in points with McNemar's exact p-value and the verdict."""
    from ktlab.metrics import mcnemar_test, verdict
    test = mcnemar_test(a["dev_predictions"], b["dev_predictions"], labels)
    return {"points": round(100 * test["difference"], 2), "p_value": round(test["p_value"], 5),
            "verdict": verdict(test)}


def summarise(results: dict) -> dict:
    """The headline comparisons the course's goals are stated in, each with its paired test.

    Per student: the best condition, its share of the teacher, its gain over ``hard`` and the
    separate shares of the embedding init (``hard+pca`` - ``hard``) and of distillation
    (``kd`` - ``hard``, ``kd+aug`` - ``hard``)."""
    teacher, labels = results["teacher"], results["dev"]["labels"]
    summary: dict[str, Any] = {"teacher_dev_accuracy": teacher["dev_accuracy"]}
    for student in results["students_requested"]:
        recs = {r["condition"]: r for r in results["students"] if r["student"] == student}
        if not recs:
            continue
        best = max(recs.values(), key=lambda r: r["dev_accuracy"])
        row = {"best": best["name"], "best_dev_accuracy": best["dev_accuracy"],
               "share_of_teacher": round(best["dev_accuracy"] / max(teacher["dev_accuracy"],
                                                                    1e-9), 4),
               "vs_teacher": _paired(best, teacher, labels),
               "speedup_vs_teacher": round(best["throughput_sps"] / teacher["throughput_sps"], 2),
               "latency_ratio_vs_teacher": round(best["latency_ms"] / teacher["latency_ms"], 3),
               "params_ratio": round(teacher["params"] / best["params"], 2)}
        hard = recs.get("hard")
        if hard:
            row["gain_over_hard"] = _paired(best, hard, labels)
            row["gain_over_hard_points"] = row["gain_over_hard"]["points"]
            row["effects_vs_hard"] = {c: _paired(r, hard, labels) for c, r in recs.items()
                                      if c != "hard"}
        summary[student] = row
    return summary


def markdown_table(results: dict) -> str:
    """One row per model: accuracy with its 95% interval, share of the teacher, size, speed."""
    teacher = results["teacher"]
    head = ("| model | dev acc (95% CI) | % of teacher | params (M) | sent/s @32 | x teacher | "
            "latency b=1 (ms) | train (s) |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for r in [teacher] + results["students"]:
        ci = r.get("dev_accuracy_ci95")
        acc = f"{100 * r['dev_accuracy']:.1f}" + (
            f" ({100 * ci[0]:.1f}-{100 * ci[1]:.1f})" if ci else "")
        rows.append(f"| {r['name']} | {acc} | "
                    f"{100 * r['dev_accuracy'] / max(teacher['dev_accuracy'], 1e-9):.1f} | "
                    f"{r['params'] / 1e6:.2f} | {r['throughput_sps']:.0f} | "
                    f"{r['throughput_sps'] / teacher['throughput_sps']:.1f} | "
                    f"{r['latency_ms']:.2f} | {r['train_seconds']:.0f} |")
    return head + "\n" + "\n".join(rows)


def write_results(results: dict, out: Path, plots: bool = True) -> None:
    """``results.json`` (atomic), ``table.md`` and the plots, via :mod:`.common`."""
    from ktlab.experiments.classify_plots import plot_teacher_curve, plot_tradeoff
    common.write_results(results, out, markdown_table(results),
                         {"tradeoff": plot_tradeoff, "teacher_curve": plot_teacher_curve}, plots)


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (a file or the folder holding it) and check its schema."""
    return common.load_results(path, SCHEMA, "sentiment")
