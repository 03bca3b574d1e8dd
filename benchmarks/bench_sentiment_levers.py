"""The speed levers of the sentiment pipeline, each measured on/off side by side in one run.

    KTLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_sentiment_levers.py \
        [--sentences 1024] [--out results/sentiment-bench/levers.json]

On real SST-2 training sentences (seeded sample, max length 64) and all 872 dev sentences:

* **length-bucketed batches** vs shuffled batches (both dynamically padded): teacher and BiLSTM
  training examples/s (``TrainConfig.length_bucketing``);
* **a frozen word-embedding table** vs a trained one: teacher (MiniLM, 11.7 M of 22.7 M
  parameters are that table) and BiLSTM (9.2 M of 9.8 M);
* **logits cached once** vs the teacher run inside every student step: seconds per student
  epoch over the sample;
* **``torch.inference_mode``** vs ``torch.no_grad``: dev throughput at batch 32;
* **1 vs 2 threads**: dev throughput at batch 32 and batch-1 latency.

Each pair is measured back to back (alternating order over ``--rounds``), so a busy neighbour
slows both alike; the ratios are the result, the absolute numbers depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def train_speed(build, items, batch_size: int, bucketed: bool, freeze: bool, lr: float,
                loss_fn=None) -> float:
    """Examples/s of one epoch of ``ktlab.train.Trainer`` over ``items``."""
    from ktlab.data.collate import PadCollator
    from ktlab.train import TrainConfig, Trainer
    model = build()
    if freeze:
        model.get_input_embeddings().weight.requires_grad_(False) if hasattr(
            model, "get_input_embeddings") else model.embedding.weight.requires_grad_(False)
    cfg = TrainConfig(lr=lr, epochs=1, batch_size=batch_size, progress=False,
                      length_bucketing=bucketed, load_best_at_end=False, warmup_ratio=0.0)
    trainer = Trainer(model, cfg, items, collate_fn=PadCollator(0), loss_fn=loss_fn)
    start = time.perf_counter()
    trainer.fit()
    return len(items) / (time.perf_counter() - start)


def paired(measure_a, measure_b, rounds: int) -> dict:
    """Median of each side over ``rounds``, alternating which runs first."""
    a, b = [], []
    for r in range(rounds):
        if r % 2 == 0:
            a.append(measure_a())
            b.append(measure_b())
        else:
            b.append(measure_b())
            a.append(measure_a())
    ma, mb = statistics.median(a), statistics.median(b)
    return {"on": round(ma, 3), "off": round(mb, 3), "ratio_on_off": round(ma / mb, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--teacher-sentences", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="results/sentiment-bench/levers.json")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from ktlab.data import load_sst2, subset
    from ktlab.experiments import classify
    from ktlab.experiments.common import describe_machine
    from ktlab.models import load_tokenizer
    from ktlab.nn.students import build_student

    torch.set_num_threads(2)
    tok = load_tokenizer("minilm")
    train = subset(load_sst2("train"), args.sentences, seed=0, stratify_by="label")
    items = classify.encode(tok, train["sentence"], train["label"], 64)
    dev = load_sst2("dev")
    dev_items = classify.encode(tok, dev["sentence"], dev["label"], 64)
    t_items = items[: args.teacher_sentences]

    def teacher():
        return classify.build_teacher("minilm", 2, 0)

    def bilstm():
        torch.manual_seed(0)
        return build_student("bilstm", len(tok), 2, **classify.STUDENT_KWARGS["bilstm"])

    loss = classify.hard_label_loss
    report: dict = {"schema": "ktlab.sentiment-levers/1", "machine": describe_machine(),
                    "sentences": len(items), "teacher_sentences": len(t_items),
                    "rounds": args.rounds, "unit": "examples per second unless stated"}
    lev = report["levers"] = {}
    lev["teacher_train_bucketing"] = paired(
        lambda: train_speed(teacher, t_items, 32, True, True, 1e-4),
        lambda: train_speed(teacher, t_items, 32, False, True, 1e-4), args.rounds)
    lev["teacher_train_frozen_embeddings"] = paired(
        lambda: train_speed(teacher, t_items, 32, True, True, 1e-4),
        lambda: train_speed(teacher, t_items, 32, True, False, 1e-4), args.rounds)
    lev["bilstm_train_bucketing"] = paired(
        lambda: train_speed(bilstm, items, 64, True, False, 2e-3, loss),
        lambda: train_speed(bilstm, items, 64, False, False, 2e-3, loss), args.rounds)
    lev["bilstm_train_frozen_embeddings"] = paired(
        lambda: train_speed(bilstm, items, 64, True, True, 2e-3, loss),
        lambda: train_speed(bilstm, items, 64, True, False, 2e-3, loss), args.rounds)
    print(json.dumps(lev, indent=1), flush=True)

    tm, st = teacher().eval(), bilstm().eval()
    # logits cached: a student epoch reads them; uncached, the teacher runs on every batch
    teacher_epoch = len(items) / classify.measure_speed(tm, items, 0, 64, 1)["throughput_sps"]
    student_epoch = len(items) / lev["bilstm_train_bucketing"]["on"]
    lev["logits_cached_seconds_per_student_epoch"] = {
        "on": round(student_epoch, 2), "off": round(student_epoch + teacher_epoch, 2),
        "ratio_on_off": round(student_epoch / (student_epoch + teacher_epoch), 3)}
    for name, model in (("teacher", tm), ("bilstm", st)):
        lev[f"{name}_inference_mode"] = paired(
            lambda: classify.measure_speed(model, dev_items, 0, 32, 1)["throughput_sps"],
            lambda: classify.measure_speed(model, dev_items, 0, 32, 1,
                                           inference_mode=False)["throughput_sps"], args.rounds)
        lev[f"{name}_inference_bucketed"] = paired(
            lambda: classify.measure_speed(model, dev_items, 0, 32, 1)["throughput_sps"],
            lambda: classify.measure_speed(model, dev_items, 0, 32, 1,
                                           bucketed=False)["throughput_sps"], args.rounds)

        def threads(n, key, model=model):
            torch.set_num_threads(n)
            try:
                return classify.measure_speed(model, dev_items, 0, 32, 128)[key]
            finally:
                torch.set_num_threads(2)
        lev[f"{name}_2_vs_1_threads_throughput"] = paired(
            lambda: threads(2, "throughput_sps"), lambda: threads(1, "throughput_sps"), args.rounds)
        lev[f"{name}_2_vs_1_threads_latency_ms"] = paired(
            lambda: threads(2, "latency_ms"), lambda: threads(1, "latency_ms"), args.rounds)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print("| lever | on | off | on/off |\n|---|---|---|---|")
    for name, r in lev.items():
        print(f"| {name} | {r['on']} | {r['off']} | {r['ratio_on_off']} |")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
