"""``ktlab run EXPERIMENT``: one sub-command per experiment, all with the same core options.

To add an experiment, append an :class:`Experiment` to :data:`EXPERIMENTS` with a function that
adds its own options and a function that runs it; ``ktlab run --help`` lists them.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import sys
from typing import Callable

from ktlab.config import PROFILES


@dataclasses.dataclass(frozen=True)
class Experiment:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def _sentiment_args(parser: argparse.ArgumentParser) -> None:
    from ktlab.experiments.classify import STUDENTS
    parser.add_argument("--students", default=None,
                        help=f"comma-separated students to train, from {','.join(STUDENTS)} "
                             "(default: the profile's; bench: bilstm,cnn)")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated conditions for every student, e.g. "
                             "hard,kd+aug+pca (default: the profile's; see "
                             "ktlab.experiments.classify.CONDITIONS)")


def _classify_args(parser: argparse.ArgumentParser) -> None:
    _sentiment_args(parser)
    parser.add_argument("--train", required=True,
                        help="labelled training texts: a .tsv, .csv or .jsonl file (or a "
                             "Hugging Face dataset name, hub:NAME[:CONFIG], when online)")
    parser.add_argument("--dev", required=True, help="labelled dev texts, same format")
    parser.add_argument("--text-column", default=None,
                        help="column holding the text (default: sentence or text)")
    parser.add_argument("--label-column", default=None, help="column holding the label "
                                                             "(default: label)")
    parser.add_argument("--encoding", default="utf-8", help="file encoding (default utf-8)")


def _run_classification(args: argparse.Namespace, task: object, name: str) -> int:
    from ktlab.experiments import classify
    out = args.out or f"runs/{name}-{args.profile or 'quick'}"
    try:
        students = classify.parse_students(args.students or classify.default_students(
            args.profile))
        conditions = classify.parse_conditions(args.conditions, students)
        classify.run(profile=args.profile, teacher=args.teacher, students=students,
                     conditions=conditions,
                     out_dir=out, seed=args.seed, task=task, use_cache=not args.no_cache,
                     progress=args.progress, max_examples=args.max_examples,
                     max_steps=args.max_steps)
    except classify.ConfigError as err:
        print(f"ktlab run {name}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _run_sentiment(args: argparse.Namespace) -> int:
    return _run_classification(args, None, "sentiment")


def _run_classify(args: argparse.Namespace) -> int:
    from ktlab.data.labelled import DataFormatError, load_classification_task
    try:
        task = load_classification_task(args.train, args.dev, args.text_column,
                                        args.label_column, args.encoding)
    except DataFormatError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return _run_classification(args, task, "classify")


def _ner_args(parser: argparse.ArgumentParser) -> None:
    from ktlab.experiments.ner import ALL_CONDITIONS, STUDENTS
    parser.add_argument("--students", default=",".join(STUDENTS),
                        help=f"comma-separated taggers to train (default: {','.join(STUDENTS)})")
    parser.add_argument("--conditions", default=None,
                        help="comma-separated conditions for every student, from "
                             f"{','.join(ALL_CONDITIONS)} (default: the profile's; +pca needs "
                             "--students bilstm)")


def _run_ner(args: argparse.Namespace) -> int:
    from ktlab.experiments import ner
    from ktlab.models import TeacherNotFoundError
    out = args.out or f"runs/ner-{args.profile or 'quick'}"
    try:
        students = ner.parse_students(args.students)
        conds = ner.parse_conditions(args.conditions)
        ner.run(profile=args.profile, teacher=args.teacher, students=students, out_dir=out,
                seed=args.seed, conditions={s: conds for s in students} if conds else None,
                use_cache=not args.no_cache, progress=args.progress,
                max_examples=args.max_examples, max_steps=args.max_steps)
    except (ner.ConfigError, TeacherNotFoundError) as err:
        print(f"ktlab run ner: error: {err}", file=sys.stderr)
        return 2
    return 0


def _multitask_args(parser: argparse.ArgumentParser) -> None:
    from ktlab.experiments.multitask import SAMPLERS, TASKS
    parser.add_argument("--tasks", default=",".join(TASKS),
                        help=f"comma-separated tasks (default: {','.join(TASKS)})")
    parser.add_argument("--samplers", default=",".join(SAMPLERS),
                        help=f"comma-separated task samplers (default: {','.join(SAMPLERS)})")
    parser.add_argument("--seeds", default=None,
                        help="comma-separated seeds (default: the profile's; 3 in bench)")
    parser.add_argument("--no-distill", action="store_true",
                        help="skip multi-task distillation from the single-task teachers")
    parser.add_argument("--equal-updates", action="store_true",
                        help="also train the equal-updates control: per task, a single-task "
                             "model with as many encoder updates as a multi-task model "
                             "(steps_per_task x tasks; on in bench)")


def _run_multitask(args: argparse.Namespace) -> int:
    from ktlab.experiments import multitask
    out = args.out or f"runs/multitask-{args.profile or 'quick'}"
    try:
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else (
            [args.seed] if args.seed is not None else None)
        results = multitask.run(profile=args.profile, teacher=args.teacher,
                                tasks=[t for t in args.tasks.split(",") if t],
                                samplers=[s for s in args.samplers.split(",") if s],
                                out_dir=out, seeds=seeds, distill=not args.no_distill,
                                progress=args.progress, max_examples=args.max_examples,
                                max_steps=args.max_steps, equal_updates=args.equal_updates or None)
    except (multitask.ConfigError, ValueError) as err:
        print(f"ktlab run multitask: error: {err}", file=sys.stderr)
        return 2
    print(multitask.markdown_table(results))
    print(f"\nresults: {out}/results.json ({results['seconds']:.0f} s)")
    return 0


def _peft_args(parser: argparse.ArgumentParser) -> None:
    from ktlab.experiments.peft import METHODS, PROFILE_METHODS
    parser.add_argument("--methods", default=None,
                        help=f"comma-separated methods, from {','.join(METHODS)} (default: the "
                             f"profile's; quick: {','.join(PROFILE_METHODS['quick'])}; bench "
                             "and full: all)")


def _run_peft(args: argparse.Namespace) -> int:
    import matplotlib
    matplotlib.use("Agg")  # PNG files only: no window, no display needed
    from ktlab.experiments import peft
    out = args.out or f"runs/peft-{args.profile or 'quick'}"
    try:
        methods = peft.parse_methods(args.methods) if args.methods is not None else None
        peft.run(profile=args.profile, teacher=args.teacher, methods=methods, out_dir=out,
                 seed=args.seed, use_cache=not args.no_cache, progress=args.progress,
                 max_examples=args.max_examples, max_steps=args.max_steps)
    except peft.ConfigError as err:
        print(f"ktlab run peft: error: {err}", file=sys.stderr)
        return 2
    return 0


def _serving_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default=None, metavar="DIR",
                        help="folder of the trained teacher and BiLSTM students (a sentiment "
                             "run; trained there if missing; default: OUT/models). deploy and "
                             "explain can share one: --models results/serving-bench")


def _run_serving(name: str) -> Callable[[argparse.Namespace], int]:
    """``ktlab run deploy`` / ``ktlab run explain``: same options, different experiment."""
    def run(args: argparse.Namespace) -> int:
        import importlib
        module = importlib.import_module(f"ktlab.experiments.{name}")
        from ktlab.experiments.common import ConfigError
        from ktlab.deploy.bundle import BundleError
        out = args.out or f"runs/{name}-{args.profile or 'quick'}"
        try:
            module.run(profile=args.profile, out_dir=out, models_dir=args.models,
                       teacher=args.teacher, seed=args.seed, max_examples=args.max_examples,
                       max_steps=args.max_steps)
        except (ConfigError, BundleError, FileNotFoundError) as err:
            print(f"ktlab run {name}: error: {err}", file=sys.stderr)
            return 2
        return 0
    return run


EXPERIMENTS = [
    Experiment("sentiment", "SST-2: fine-tune a teacher, distil it into BiLSTM/CNN/tiny "
               "Transformer students, measure accuracy, size and speed",
               _sentiment_args, _run_sentiment),
    Experiment("classify", "your own labelled texts (--train/--dev TSV, CSV or JSONL): the "
               "same teacher -> student transfer as sentiment, any number of classes",
               _classify_args, _run_classify),
    Experiment("ner", "CoNLL-2003 NER: fine-tune a teacher, distil it token by token into "
               "BiLSTM(-CRF) and tiny-Transformer taggers, measure entity F1, size and speed",
               _ner_args, _run_ner),
    Experiment("multitask", "SST-2 + CoNLL NER/POS/chunking: one shared encoder vs single-task "
               "baselines, three task samplers, multi-task distillation",
               _multitask_args, _run_multitask),
    Experiment("peft", "SST-2 with parameter-efficient methods (head, BitFit, LoRA and its "
               "rank, adapters, peft's LoRA) beside full fine-tuning, L2-SP and Mixout: "
               "accuracy, cost, and forgetting (CKA, a POS probe, the WiSE-FT frontier)",
               _peft_args, _run_peft),
    Experiment("deploy", "serve the SST-2 teacher and best BiLSTM: dynamic int8, ONNX fp32/int8 "
               "with onnxruntime; size, accuracy, agreement, p50/p95 latency with and without "
               "tokenisation, throughput, peak memory (notebook 08)",
               _serving_args, _run_serving("deploy")),
    Experiment("explain", "look inside the teacher and students: integrated gradients, teacher-"
               "student attribution agreement (kd vs hard), attention vs gradients, deletion "
               "test, LIME; perturbed dev sets and FGM adversarial training (notebook 09)",
               _serving_args, _run_serving("explain")),
]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", choices=PROFILES, default=None,
                        help="quick (2 CPU cores, minutes; default), full (GPU, all data), "
                             "bench (CPU, full training sets)")
    parser.add_argument("--teacher", default=None,
                        help="teacher: 'minilm' (offline), a Hugging Face name or a local folder "
                             "(default: minilm for quick/bench; for full bert-base-uncased, "
                             "bert-base-cased for ner)")
    parser.add_argument("--out", default=None, help="output folder (default: runs/NAME-PROFILE)")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    parser.add_argument("--no-cache", action="store_true",
                        help="retrain the teacher and recompute its logits even if cached")
    parser.add_argument("--progress", action="store_true", help="show tqdm progress bars")
    parser.add_argument("--threads", type=_positive_int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 is faster on a "
                             "machine shared with other jobs)")
    parser.add_argument("--max-examples", type=_positive_int, default=None, metavar="N",
                        help="cap every data split (training, dev, test, transfer sets, timed "
                             "sentences) at N sentences: a smoke test of a profile on a small "
                             "machine (default: the profile's sizes; results.json records the "
                             "caps under 'capped')")
    parser.add_argument("--max-steps", type=_positive_int, default=None, metavar="N",
                        help="cap every training run (the teacher and each student/model) at N "
                             "optimiser steps; multitask caps the steps per task, so a "
                             "multi-task model keeps the budget of its single-task baselines "
                             "together (default: the profile's sizes)")


def _with_common_settings(run: Callable[[argparse.Namespace], int]
                          ) -> Callable[[argparse.Namespace], int]:
    """Apply the options every experiment shares (``--threads``) before its own handler runs,
    so no handler can forget them."""
    def run_with_settings(args: argparse.Namespace) -> int:
        if args.threads:
            import torch
            torch.set_num_threads(args.threads)
        return run(args)
    return run_with_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    run = subparsers.add_parser("run", help="run an experiment end to end",
                                description="Run an experiment and write results.json, "
                                            "table.md and plots to --out.")
    exp_sub = run.add_subparsers(dest="experiment", metavar="EXPERIMENT")
    for exp in EXPERIMENTS:
        if importlib.util.find_spec(f"ktlab.experiments.{exp.name}") is None:
            continue  # an experiment whose module is not installed in this checkout
        parser = exp_sub.add_parser(exp.name, help=exp.help, description=exp.help)
        _common_args(parser)
        exp.add_arguments(parser)
        parser.set_defaults(func=_with_common_settings(exp.run))
    run.set_defaults(func=lambda args: (run.print_help(), 2)[1])
