"""The sentiment transfer experiment: SST-2 teacher -> BiLSTM / CNN / tiny-Transformer students.

One pipeline for ``ktlab run sentiment`` and notebook 04:

1. fine-tune the teacher (MiniLM offline, or any HF name) on SST-2;
2. cache its logits on the students' training set and on an augmented *transfer set*
   (:mod:`ktlab.augment`, Tang et al. 2019), so the teacher never runs inside a student epoch;
3. train every student under several *conditions*:

   * ``hard``     - cross-entropy on the gold labels only (the no-distillation baseline);
   * ``kd``       - distillation: match the teacher's logits on the training sentences;
   * ``kd+aug``   - distillation on training + augmented sentences (labels from the teacher);
   * ``kd+aug+pca`` (BiLSTM/CNN) - as ``kd+aug`` with embeddings initialised from the teacher's
     word-embedding table through PCA (knowledge moved through the embedding table);
   * ``init+kd+aug`` (tiny) - a Transformer whose layers are copied from the teacher
     (:mod:`ktlab.transfer.layers`), then distilled on the transfer set;

4. measure each model: dev accuracy, parameters, CPU throughput (sentences/s at batch 32),
   batch-1 latency, training time; write ``results.json``, ``table.md`` and plots.

Artifacts that are expensive to recompute (the fine-tuned teacher and its logits) are cached under
``<out>/cache`` keyed by everything that determines them, so a second run only retrains students.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ktlab import config as kconfig
from ktlab.experiments.common import describe_machine

SCHEMA = "ktlab.sentiment/1"
STUDENTS = ("bilstm", "cnn", "tiny")
CONDITIONS = {
    "bilstm": ("hard", "kd", "kd+aug", "kd+aug+pca"),
    "cnn": ("hard", "kd", "kd+aug", "kd+aug+pca"),
    "tiny": ("hard", "kd", "kd+aug", "init+kd+aug"),
}


@dataclasses.dataclass(frozen=True)
class SentimentSizes:
    """How big one run is. ``None`` means the whole split."""

    teacher_train: Optional[int]     #: sentences the teacher is fine-tuned on
    student_train: Optional[int]     #: labelled sentences the students see (the transfer set base)
    dev: Optional[int]               #: SST-2 dev sentences for every evaluation (872 in all)
    augment_per_sentence: int        #: augmented copies per training sentence (0 = no kd+aug)
    max_length: int
    teacher_epochs: int
    student_epochs: int
    batch_size: int = 32
    teacher_lr: float = 5e-5
    teacher_evals: int = 4           #: dev evaluations during teacher fine-tuning (the curve)
    speed_sentences: int = 256       #: dev sentences timed for throughput
    latency_sentences: int = 64      #: dev sentences timed one by one for latency
    student_max_steps: Optional[int] = None  #: cap per student run (tests)
    teacher_max_steps: Optional[int] = None


PROFILE_SIZES = {
    # <= 5 min on 2 CPU cores, including the teacher
    "quick": SentimentSizes(teacher_train=1000, student_train=1500, dev=872,
                            augment_per_sentence=1, max_length=64, teacher_epochs=1,
                            student_epochs=1, teacher_lr=1e-4, teacher_evals=2),
    # a GPU: everything, BERT-style recipe
    "full": SentimentSizes(teacher_train=None, student_train=None, dev=None,
                           augment_per_sentence=2, max_length=128, teacher_epochs=3,
                           student_epochs=5, teacher_lr=2e-5, teacher_evals=10),
    # CPU, about an hour and a half on 2 shared cores (see results/README in the report)
    # CPU with one thread: about an hour on a 2-core machine shared with other jobs. The sizes
    # are what fitted that day's budget (see results/README.md); raise them on a free machine.
    "bench": SentimentSizes(teacher_train=4000, student_train=5000, dev=None,
                            augment_per_sentence=1, max_length=64, teacher_epochs=1,
                            student_epochs=2, teacher_evals=4),
    # unit tests: a few dozen sentences, one or two optimiser steps
    "tiny": SentimentSizes(teacher_train=32, student_train=48, dev=32, augment_per_sentence=1,
                           max_length=32, teacher_epochs=1, student_epochs=1, batch_size=16,
                           teacher_evals=1, speed_sentences=32, latency_sentences=4,
                           student_max_steps=2, teacher_max_steps=2),
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
#: The new classification head learns this many times faster than the pre-trained encoder: a
#: few dozen steps (quick profile) are otherwise too few for a randomly initialised head.
HEAD_LR_SCALE = 10.0
#: Layers of the teacher-initialised tiny student (6 -> 3 copies teacher layers 1, 3, 5).
TINY_INIT_LAYERS = 3


#: Fewer runs where the budget is minutes (quick: <= 5 min on 2 CPU cores).
PROFILE_CONDITIONS = {
    "quick": {"bilstm": ("hard", "kd", "kd+aug", "kd+aug+pca"), "cnn": ("hard", "kd+aug"),
              "tiny": ("init+kd+aug",)},
}


class ConfigError(ValueError):
    """A bad experiment argument (student name, profile, ...); the message says how to fix it."""


def parse_students(spec: str | Sequence[str]) -> list[str]:
    """``"bilstm,cnn"`` -> ``["bilstm", "cnn"]``, rejecting unknown names with the valid ones."""
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    bad = [n for n in names if n not in STUDENTS]
    if bad or not names:
        raise ConfigError(f"unknown student(s) {', '.join(map(repr, bad)) or '(none given)'}; "
                          f"--students takes a comma-separated list of {', '.join(STUDENTS)} "
                          "(e.g. --students bilstm,cnn)")
    return list(dict.fromkeys(names))


# ----------------------------------------------------------------------------- data

def _items(tokenizer: Any, sentences: Sequence[str], labels: Optional[Sequence[int]],
           max_length: int, teacher_logits: Optional[torch.Tensor] = None) -> list[dict]:
    from ktlab.data.collate import encode_sentences
    items = encode_sentences(tokenizer, sentences, max_length=max_length)
    for i, item in enumerate(items):
        item["labels"] = int(labels[i]) if labels is not None else -100
        if teacher_logits is not None:
            item["teacher_logits"] = teacher_logits[i].float()
    return items


def load_data(sizes: SentimentSizes, seed: int, data_dir: Optional[Path] = None) -> dict:
    """Seeded, label-stratified subsets; the teacher's set is a subset of the students' set, so
    the students never see a labelled sentence the teacher was denied."""
    from ktlab.data import load_sst2, subset
    train = subset(load_sst2("train", data_dir), sizes.student_train, seed, stratify_by="label")
    teacher = subset(train, sizes.teacher_train, seed + 1, stratify_by="label")
    dev = subset(load_sst2("dev", data_dir), sizes.dev, seed, stratify_by="label")
    return {"train": train, "teacher_train": teacher, "dev": dev}


def build_transfer_set(sentences: Sequence[str], per_sentence: int, seed: int,
                       labels: Optional[Sequence[int]] = None, swap: str = "pos",
                       data_dir: Optional[Path] = None) -> tuple[list[str], dict]:
    """Augmented sentences (no gold labels) for ``kd+aug``, and facts about how they were made."""
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


# ----------------------------------------------------------------------------- losses

def _student_logits(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    from ktlab.train import logits_of, model_inputs
    inputs = {k: v for k, v in model_inputs(model, batch).items() if k != "labels"}
    return logits_of(model(**inputs))


def hard_label_loss(model: torch.nn.Module, batch: dict) -> torch.Tensor:
    """Cross-entropy on the gold labels (augmented sentences carry -100 and are ignored)."""
    return F.cross_entropy(_student_logits(model, batch), batch["labels"], ignore_index=-100)


def make_distill_loss(alpha: float = 0.0, objective: str = "mse",
                      temperature: float = 2.0) -> Callable:
    """``loss_fn(model, batch)`` for distillation from cached ``teacher_logits``.

    ``objective="mse"`` matches logits (Tang et al. found it best for BiLSTM students);
    ``"kl"`` is Hinton's temperature-softened KL. ``alpha`` mixes in cross-entropy on gold labels
    where a sentence has one (augmented sentences have none)."""
    from ktlab.transfer import distill

    def loss_fn(model: torch.nn.Module, batch: dict) -> torch.Tensor:
        logits = _student_logits(model, batch)
        teacher = batch["teacher_logits"].to(logits.dtype)
        soft = (distill.logit_mse(logits, teacher) if objective == "mse"
                else distill.kd_loss(logits, teacher, temperature))
        if alpha <= 0:
            return soft
        labelled = batch["labels"] != -100
        if not labelled.any():
            return soft
        hard = F.cross_entropy(logits[labelled], batch["labels"][labelled])
        return alpha * hard + (1 - alpha) * soft

    return loss_fn


# ----------------------------------------------------------------------------- measuring

def _accuracy_metric(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"accuracy": float((logits.argmax(-1) == labels).float().mean())}


@torch.no_grad()
def measure_speed(model: torch.nn.Module, items: Sequence[dict], pad_token_id: int = 0,
                  batch_size: int = 32, latency_items: int = 64) -> dict:
    """CPU throughput (sentences/s at ``batch_size``) and batch-1 latency (median ms).

    One warm-up batch first; the timed batches use dynamic padding, as in serving."""
    from ktlab.data.collate import PadCollator
    from ktlab.metrics import measure_throughput
    from ktlab.train import model_inputs
    collate = PadCollator(pad_token_id)
    model = model.to("cpu").eval()
    strip = [{k: it[k] for k in ("input_ids", "token_type_ids")} for it in items]
    batches = [collate(strip[i:i + batch_size]) for i in range(0, len(strip), batch_size)]
    batches = [model_inputs(model, b) for b in batches]
    seconds = measure_throughput(model, batches, warmup=1, repeats=1)["seconds"]
    singles = [collate([it]) for it in strip[:latency_items]]
    model(**model_inputs(model, singles[0]))
    times = []
    for b in singles:
        t0 = time.perf_counter()
        model(**model_inputs(model, b))
        times.append(time.perf_counter() - t0)
    return {"throughput_sps": len(strip) / seconds,
            "latency_ms": 1000 * float(np.median(times)),
            "latency_p90_ms": 1000 * float(np.percentile(times, 90))}


def count_params(model: torch.nn.Module) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


# ----------------------------------------------------------------------------- training

def _optimizer_with_fast_head(model: torch.nn.Module, lr: float, weight_decay: float,
                              head: Sequence[str] = ("classifier.", "bert.pooler.")) -> Any:
    """AdamW where the (new) head's parameters get ``HEAD_LR_SCALE`` x the encoder's LR, with the
    Trainer's decay rule (none on biases and LayerNorm); its schedule scales all groups alike."""
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


def _train(model: torch.nn.Module, train_items: list, dev_items: list, *, lr: float,
           epochs: int, batch_size: int, seed: int, loss_fn: Optional[Callable],
           pad_token_id: int, weight_decay: float, warmup_ratio: float,
           max_steps: Optional[int], eval_every: Optional[int] = None,
           progress: bool = False, optimizer: Any = None) -> tuple[Any, Any]:
    from ktlab.data.collate import PadCollator
    from ktlab.train import TrainConfig, Trainer
    cfg = TrainConfig(lr=lr, epochs=epochs, batch_size=batch_size, weight_decay=weight_decay,
                      warmup_ratio=warmup_ratio, seed=seed, max_steps=max_steps,
                      eval_every=eval_every, progress=progress, eval_batch_size=64)
    trainer = Trainer(model, cfg, train_dataset=train_items, eval_dataset=dev_items,
                      collate_fn=PadCollator(pad_token_id), loss_fn=loss_fn,
                      metric_fn=_accuracy_metric, optimizer=optimizer)
    history = trainer.fit()
    return trainer, history


def _history_dict(history: Any) -> dict:
    return {"step": history.step, "loss": [round(x, 5) for x in history.loss],
            "eval_step": history.eval_step,
            "eval_accuracy": [round(m["accuracy"], 5) for m in history.eval_metrics],
            "best_step": history.best_step, "train_seconds": round(history.train_seconds, 2),
            "examples_seen": history.examples_seen}


def _cache_key(**parts: Any) -> str:
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _tiny_from_teacher(teacher: torch.nn.Module, vocab_size: int, pad_token_id: int,
                       num_labels: int) -> torch.nn.Module:
    """A shallower student of the teacher's *width* (copying needs equal shapes): embeddings and
    teacher layers 1, 3, 5 (``uniform`` map, DistilBERT-style) via
    :func:`ktlab.transfer.layers.init_student_from_teacher`, plus the fine-tuned pooler and
    classifier (and the teacher's pooling), so it starts as a (damaged) copy of the teacher
    rather than from noise."""
    from ktlab.nn.students import MeanPoolClassifier, tiny_transformer
    from ktlab.transfer.layers import init_student_from_teacher
    tc = teacher.config
    n_layers = max(1, min(TINY_INIT_LAYERS, tc.num_hidden_layers))
    student = tiny_transformer(vocab_size, num_labels, hidden_size=tc.hidden_size,
                               num_layers=n_layers, num_heads=tc.num_attention_heads,
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


def _record(name: str, student: str, condition: str, model: torch.nn.Module, trainer: Any,
            history: Any, dev_items: list, pad_token_id: int, sizes: SentimentSizes,
            train_size: int) -> dict:
    logits = trainer.predict(dev_items)
    accuracy = _accuracy_metric(logits, torch.tensor([it["labels"] for it in dev_items]))
    total, trainable = count_params(model)
    speed = measure_speed(model, dev_items[: sizes.speed_sentences], pad_token_id,
                          sizes.batch_size, sizes.latency_sentences)
    return {"name": name, "student": student, "condition": condition,
            "dev_accuracy": round(accuracy["accuracy"], 5), "params": total,
            "trainable_params": trainable, **{k: round(v, 3) for k, v in speed.items()},
            "train_seconds": round(history.train_seconds, 2), "train_examples": train_size,
            "history": _history_dict(history),
            "dev_predictions": logits.argmax(-1).tolist(),
            "_logits": logits}


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        students: str | Sequence[str] = STUDENTS, out_dir: str | Path = "runs/sentiment",
        seed: Optional[int] = None, sizes: Optional[SentimentSizes] = None,
        conditions: Optional[dict[str, Sequence[str]]] = None, use_cache: bool = True,
        plots: bool = True, progress: bool = False, threads: Optional[int] = None,
        log: Callable[[str], None] = print) -> dict:
    """Run the whole experiment; returns the results dict (also written to ``out_dir``).

    ``sizes`` overrides the profile's :class:`SentimentSizes` (``PROFILE_SIZES["tiny"]`` in the
    tests); ``conditions`` restricts the conditions per student (default: the profile's
    :data:`PROFILE_CONDITIONS`, else :data:`CONDITIONS`). ``threads`` sets torch's CPU threads
    (1 is faster than 2 on a machine shared with other jobs: no spinning on a busy core)."""
    from ktlab.models import load_teacher, load_tokenizer

    names = parse_students(students)
    cfg = kconfig.load(profile, teacher=teacher, seed=seed, verbose=False)
    sizes = sizes or PROFILE_SIZES[cfg.profile]
    conditions = {**CONDITIONS, **PROFILE_CONDITIONS.get(cfg.profile, {}), **(conditions or {})}
    for student, conds in conditions.items():
        unknown = set(conds) - set(CONDITIONS.get(student, ()))
        if unknown:
            raise ConfigError(f"unknown condition(s) {sorted(unknown)} for {student!r}; choose "
                              f"from {CONDITIONS.get(student)}")
    out = Path(out_dir)
    (out / "cache").mkdir(parents=True, exist_ok=True)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    started, cpu_started = time.time(), time.process_time()
    timings: dict[str, float] = {}
    log(f"[sentiment] {cfg.summary()} students={','.join(names)} out={out}")

    # --- data and transfer set -----------------------------------------------------------
    t0 = time.perf_counter()
    data = load_data(sizes, cfg.seed, cfg.data_dir)
    tokenizer = load_tokenizer(cfg.teacher)
    pad_id = tokenizer.pad_token_id or 0
    train_s, train_y = data["train"]["sentence"], data["train"]["label"]
    dev_s, dev_y = data["dev"]["sentence"], data["dev"]["label"]
    augmented, aug_info = build_transfer_set(train_s, sizes.augment_per_sentence, cfg.seed,
                                             data_dir=cfg.data_dir)
    dev_items = _items(tokenizer, dev_s, dev_y, sizes.max_length)
    timings["data"] = time.perf_counter() - t0
    log(f"[sentiment] data: teacher {len(data['teacher_train'])}, students {len(train_s)}, "
        f"augmented {len(augmented)}, dev {len(dev_s)} ({timings['data']:.0f} s)")

    # --- teacher: fine-tune (or load from cache) -------------------------------------------
    pooling = TEACHER_POOLING.get(cfg.teacher, "cls")
    key = _cache_key(teacher=cfg.teacher, seed=cfg.seed, sizes=dataclasses.asdict(sizes),
                     schema=SCHEMA, pooling=pooling, head_lr_scale=HEAD_LR_SCALE)
    teacher_file = out / "cache" / f"teacher-{key}.pt"
    kconfig.seed_everything(cfg.seed)
    if pooling == "mean":
        from ktlab.nn.students import MeanPoolClassifier
        teacher_model = MeanPoolClassifier(load_teacher(cfg.teacher, seed=cfg.seed), 2)
    else:
        teacher_model = load_teacher(cfg.teacher, num_labels=2, task="sequence", seed=cfg.seed)
    t0 = time.perf_counter()
    if use_cache and teacher_file.is_file():
        blob = torch.load(teacher_file, map_location="cpu", weights_only=False)
        teacher_model.load_state_dict(blob["state"])
        teacher_history, teacher_train_seconds = blob["history"], blob["train_seconds"]
        log(f"[sentiment] teacher loaded from cache {teacher_file.name}")
    else:
        t_items = _items(tokenizer, data["teacher_train"]["sentence"],
                         data["teacher_train"]["label"], sizes.max_length)
        steps = max(1, len(t_items) // sizes.batch_size) * sizes.teacher_epochs
        if sizes.teacher_max_steps:
            steps = min(steps, sizes.teacher_max_steps)
        trainer, history = _train(
            teacher_model, t_items, dev_items, lr=sizes.teacher_lr, epochs=sizes.teacher_epochs,
            batch_size=sizes.batch_size, seed=cfg.seed, loss_fn=None, pad_token_id=pad_id,
            weight_decay=0.01, warmup_ratio=0.1, max_steps=sizes.teacher_max_steps,
            eval_every=max(1, -(-steps // max(1, sizes.teacher_evals))), progress=progress,
            optimizer=_optimizer_with_fast_head(teacher_model, sizes.teacher_lr, 0.01))
        teacher_history, teacher_train_seconds = _history_dict(history), history.train_seconds
        torch.save({"state": teacher_model.state_dict(), "history": teacher_history,
                    "train_seconds": teacher_train_seconds}, teacher_file)
    timings["teacher_finetune"] = time.perf_counter() - t0

    # --- teacher logits on dev, train and the augmented transfer set -------------------------
    t0 = time.perf_counter()
    logits_file = out / "cache" / f"logits-{key}.pt"
    from ktlab.train import TrainConfig, Trainer
    from ktlab.data.collate import PadCollator
    predictor = Trainer(teacher_model, TrainConfig(batch_size=32, eval_batch_size=64,
                                                   progress=False),
                        collate_fn=PadCollator(pad_id), metric_fn=_accuracy_metric)
    if use_cache and logits_file.is_file():
        cached = torch.load(logits_file, map_location="cpu", weights_only=False)
        train_logits, aug_logits, dev_logits = cached["train"], cached["aug"], cached["dev"]
    else:
        train_logits = predictor.predict(_items(tokenizer, train_s, train_y, sizes.max_length))
        aug_logits = (predictor.predict(_items(tokenizer, augmented, None, sizes.max_length))
                      if augmented else torch.zeros(0, 2))
        dev_logits = predictor.predict(dev_items)
        torch.save({"train": train_logits, "aug": aug_logits, "dev": dev_logits}, logits_file)
    timings["teacher_logits"] = time.perf_counter() - t0
    teacher_acc = float((dev_logits.argmax(-1) == torch.tensor(dev_y)).float().mean())
    t_total, t_trainable = count_params(teacher_model)
    speed = measure_speed(teacher_model, dev_items[: sizes.speed_sentences], pad_id,
                          sizes.batch_size, sizes.latency_sentences)
    teacher_rec = {"name": f"teacher ({cfg.teacher})", "student": "teacher",
                   "condition": "fine-tuned", "dev_accuracy": round(teacher_acc, 5),
                   "params": t_total, "trainable_params": t_trainable,
                   **{k: round(v, 3) for k, v in speed.items()},
                   "train_seconds": round(teacher_train_seconds, 2),
                   "train_examples": len(data["teacher_train"]) * sizes.teacher_epochs,
                   "history": teacher_history,
                   "dev_predictions": dev_logits.argmax(-1).tolist()}
    log(f"[sentiment] teacher dev accuracy {teacher_acc:.4f}; logits cached "
        f"({timings['teacher_logits']:.0f} s); {speed['throughput_sps']:.0f} sentences/s")

    # --- students ------------------------------------------------------------------------
    from ktlab.nn.students import build_student, teacher_input_embeddings
    table = teacher_input_embeddings(teacher_model)
    train_items = _items(tokenizer, train_s, train_y, sizes.max_length, train_logits)
    aug_items = _items(tokenizer, augmented, None, sizes.max_length, aug_logits)
    records = []
    for student in names:
        for condition in conditions[student]:
            if "aug" in condition and not aug_items:
                continue
            t0 = time.perf_counter()
            kconfig.seed_everything(cfg.seed)
            items = train_items + aug_items if "aug" in condition else train_items
            lr = STUDENT_LR[student]
            if condition == "init+kd+aug":
                model = _tiny_from_teacher(teacher_model, len(tokenizer), pad_id, 2)
                lr = STUDENT_LR["tiny-init"]
            else:
                emb = "pca" if condition.endswith("+pca") else "random"
                model = build_student(student, len(tokenizer), 2, pad_token_id=pad_id,
                                      teacher_table=table, embedding_init=emb,
                                      **STUDENT_KWARGS[student])
            loss_fn = hard_label_loss if condition == "hard" else make_distill_loss()
            trainer, history = _train(
                model, items, None, lr=lr, epochs=sizes.student_epochs,
                batch_size=sizes.batch_size, seed=cfg.seed, loss_fn=loss_fn,
                pad_token_id=pad_id, weight_decay=0.0 if student != "tiny" else 0.01,
                warmup_ratio=0.05, max_steps=sizes.student_max_steps, progress=progress)
            rec = _record(f"{student}/{condition}", student, condition, model, trainer, history,
                          dev_items, pad_id, sizes, len(items) * sizes.student_epochs)
            rec["agreement_with_teacher"] = round(float(
                (rec.pop("_logits").argmax(-1) == dev_logits.argmax(-1)).float().mean()), 5)
            records.append(rec)
            timings[rec["name"]] = time.perf_counter() - t0
            log(f"[sentiment] {rec['name']:<22} dev {rec['dev_accuracy']:.4f}  "
                f"{rec['throughput_sps']:.0f} sent/s  {rec['latency_ms']:.1f} ms  "
                f"train {rec['train_seconds']:.0f} s")

    results = {
        "schema": SCHEMA, "profile": cfg.profile, "teacher_name": cfg.teacher, "seed": cfg.seed,
        "teacher_pooling": pooling, "head_lr_scale": HEAD_LR_SCALE,
        "sizes": dataclasses.asdict(sizes), "students_requested": names,
        "machine": describe_machine(), "started_utc": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "wall_seconds": round(time.time() - started, 1),
        # CPU seconds of this process (all threads): on a shared machine the wall time says
        # more about the neighbours than about the pipeline
        "cpu_seconds": round(time.process_time() - cpu_started, 1),
        "timings_seconds": {k: round(v, 1) for k, v in timings.items()},
        "data": {"teacher_train": len(data["teacher_train"]), "student_train": len(train_s),
                 "transfer_augmented": len(augmented), "dev": len(dev_s), "augment": aug_info},
        "teacher": teacher_rec, "students": records,
        "dev": {"idx": [int(i) for i in data["dev"]["idx"]], "labels": list(map(int, dev_y)),
                "teacher_probs": [round(p, 5) for p in
                                  dev_logits.softmax(-1)[:, 1].tolist()]},
    }
    results["summary"] = summarise(results)
    write_results(results, out, plots=plots)
    log(markdown_table(results))
    log(f"[sentiment] wrote {out / 'results.json'} in {results['wall_seconds']:.0f} s")
    return results


# ----------------------------------------------------------------------------- reporting

def summarise(results: dict) -> dict:
    """The headline comparisons the course's goals are stated in."""
    teacher = results["teacher"]
    summary: dict[str, Any] = {"teacher_dev_accuracy": teacher["dev_accuracy"]}
    for student in results["students_requested"]:
        recs = [r for r in results["students"] if r["student"] == student]
        if not recs:
            continue
        best = max(recs, key=lambda r: r["dev_accuracy"])
        hard = next((r for r in recs if r["condition"] == "hard"), None)
        summary[student] = {
            "best": best["name"], "best_dev_accuracy": best["dev_accuracy"],
            "share_of_teacher": round(best["dev_accuracy"] / max(teacher["dev_accuracy"], 1e-9), 4),
            "gain_over_hard_points": (round(100 * (best["dev_accuracy"] - hard["dev_accuracy"]), 2)
                                      if hard else None),
            "speedup_vs_teacher": round(best["throughput_sps"] / teacher["throughput_sps"], 2),
            "params_ratio": round(teacher["params"] / best["params"], 2)}
    return summary


def markdown_table(results: dict) -> str:
    """One row per model: accuracy, share of the teacher, size, speed, training time."""
    teacher = results["teacher"]
    head = ("| model | dev acc | % of teacher | params (M) | sent/s @32 | x teacher | "
            "latency b=1 (ms) | train (s) |\n|---|---|---|---|---|---|---|---|")
    rows = []
    for r in [teacher] + results["students"]:
        rows.append(f"| {r['name']} | {100 * r['dev_accuracy']:.1f} | "
                    f"{100 * r['dev_accuracy'] / max(teacher['dev_accuracy'], 1e-9):.1f} | "
                    f"{r['params'] / 1e6:.2f} | {r['throughput_sps']:.0f} | "
                    f"{r['throughput_sps'] / teacher['throughput_sps']:.1f} | "
                    f"{r['latency_ms']:.1f} | {r['train_seconds']:.0f} |")
    return head + "\n" + "\n".join(rows)


def write_results(results: dict, out: Path, plots: bool = True) -> None:
    """``results.json``, ``table.md`` and the plots, written by :mod:`ktlab.experiments.common`."""
    from ktlab.experiments import common
    common.write_results(results, out, markdown_table(results),
                         {"tradeoff": plot_tradeoff, "teacher_curve": plot_teacher_curve}, plots)


def load_results(path: str | Path) -> dict:
    """Read a ``results.json`` (a file or the folder holding it) and check its schema."""
    from ktlab.experiments import common
    return common.load_results(path, SCHEMA, "sentiment")


def plot_tradeoff(results: dict) -> Any:
    """Dev accuracy against parameters and against batch-1 latency (log axes)."""
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    recs = [results["teacher"]] + results["students"]
    markers = {"teacher": "*", "bilstm": "o", "cnn": "s", "tiny": "^"}
    for ax, key, label in ((axes[0], "params", "parameters (millions, log)"),
                           (axes[1], "latency_ms", "batch-1 CPU latency (ms, log)")):
        for r in recs:
            x = r[key] / 1e6 if key == "params" else r[key]
            ax.scatter(x, 100 * r["dev_accuracy"], marker=markers.get(r["student"], "o"),
                       s=120 if r["student"] == "teacher" else 50)
            ax.annotate(r["name"].replace(f" ({results['teacher_name']})", ""),
                        (x, 100 * r["dev_accuracy"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("SST-2 dev accuracy (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Accuracy vs size and latency ({results['profile']} profile)")
    return fig


def plot_teacher_curve(results: dict) -> Any:
    """The teacher's fine-tuning: training loss per step and dev accuracy at each evaluation."""
    import matplotlib.pyplot as plt
    h = results["teacher"]["history"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(h["step"], h["loss"], color="tab:blue", alpha=0.7, label="train loss")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("cross-entropy loss")
    ax2 = ax.twinx()
    ax2.plot(h["eval_step"], [100 * a for a in h["eval_accuracy"]], "o-", color="tab:red",
             label="dev accuracy")
    ax2.set_ylabel("dev accuracy (%)")
    ax.set_title(f"Teacher fine-tuning ({results['teacher_name']}, {results['profile']})")
    fig.legend(loc="center right", fontsize=8)
    return fig
