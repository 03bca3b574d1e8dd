"""The sentiment transfer experiment: SST-2 teacher -> BiLSTM / CNN / tiny-Transformer students.

``ktlab run sentiment`` is the SST-2 preset of ``ktlab run classify``: the stages, conditions
and sizes all live in :mod:`ktlab.experiments.classify` (read it top to bottom; notebook 04
calls its stages one cell each). This module names the preset and re-exports the stages so
``sentiment.fine_tune_teacher`` and friends read naturally in the notebook.

Conditions (:data:`CONDITIONS`): ``hard`` (gold labels), ``hard+pca`` (the control: the
teacher's embedding table without distillation), ``kd`` (the teacher's logits), ``kd+aug``
(plus the augmented transfer set of Tang et al. 2019), ``kd+aug+pca`` (both), and for the tiny
Transformer ``init+kd+aug`` (layers copied from the teacher).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from ktlab.experiments.classify import (  # noqa: F401  (the stages, re-exported)
    CONDITIONS, HEAD_LR_SCALE, PROFILE_CONDITIONS, PROFILE_SIZES, SCHEMA, STUDENT_CONDITIONS,
    STUDENT_KWARGS, STUDENT_LR, STUDENTS, TEACHER_POOLING, ClassifySizes, Condition, ConfigError,
    Prepared, build_student, build_teacher, build_transfer_set, cache_key, cache_logits,
    count_params, encode, fine_tune_teacher, hard_label_loss, load_data, load_results,
    make_distill_loss, markdown_table, measure, measure_speed, parse_students, predict, prepare,
    run_student, summarise, train_student, write_results)
from ktlab.experiments.classify_plots import plot_teacher_curve, plot_tradeoff  # noqa: F401

SentimentSizes = ClassifySizes
_cache_key = cache_key


def run(profile: Optional[str] = None, teacher: Optional[str] = None,
        students: str | Sequence[str] | None = None,
        out_dir: str | Path = "runs/sentiment", **kwargs: Any) -> dict:
    """``classify.run`` on SST-2 (the task is the default there); see its docstring."""
    from ktlab.experiments import classify
    return classify.run(profile, teacher, students, out_dir, task=None, **kwargs)


def load_bench_models(run_dir: str | Path) -> dict:
    """ktlab's fine-tuned teacher and best BiLSTM of a finished run, rebuilt from its cache
    (for ``benchmarks/bench_sentiment_anchors.py``, which times them beside the anchors)."""
    import torch
    from ktlab.experiments import classify
    results = load_results(run_dir)
    labels = len(results["label_names"])
    teacher = classify.build_teacher(results["teacher_name"], labels, results["seed"])
    cache = [Path(run_dir) / "cache" / results["cache_key"] / "teacher" / "model.pt"]
    if not cache[0].is_file():
        raise FileNotFoundError(f"no cached teacher under {run_dir}/cache: rerun the bench")
    teacher.load_state_dict(torch.load(cache[-1], map_location="cpu",
                                       weights_only=False)["state"])
    models = {"ktlab: teacher": teacher}
    best = results["summary"]["bilstm"]["best"].split("/")[1]
    student = classify.build_student("bilstm", CONDITIONS[best], teacher, 30522, labels, 0, 0)
    folder = next(cache[-1].parent.parent.glob(f"bilstm-{best}-*/model.pt"))
    student.load_state_dict(torch.load(folder, map_location="cpu", weights_only=False)["state"])
    models[f"ktlab: bilstm/{best}"] = student
    return models


def load_bench_architectures(run_dir: str | Path) -> dict:
    """The same teacher and best-BiLSTM *architectures* as :func:`load_bench_models`, built
    without the run's cache (pretrained teacher, untrained student): for timing only, since a
    model's speed depends on its shapes, not on its weight values."""
    from ktlab.experiments import classify
    results = load_results(run_dir)
    labels = len(results["label_names"])
    teacher = classify.build_teacher(results["teacher_name"], labels, results["seed"])
    best = results["summary"]["bilstm"]["best"].split("/")[1]
    student = classify.build_student("bilstm", CONDITIONS[best], teacher, 30522, labels, 0, 0)
    return {"ktlab: teacher": teacher, f"ktlab: bilstm/{best}": student}


def bench_headline_records(results: dict) -> dict:
    """The rows the anchors are compared with: the teacher and the best BiLSTM."""
    best = results["summary"]["bilstm"]["best"]
    rec = next(r for r in results["students"] if r["name"] == best)
    return {"ktlab: teacher": results["teacher"], f"ktlab: {best}": rec}
