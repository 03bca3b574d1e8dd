"""Training throughput of ktlab's loop (``ktlab.train.Trainer``) vs ``transformers.Trainer``.

    KTLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_trainer.py \
        [--model tiny|minilm] [--examples 512] [--rounds 3] [--threads 2] [--json out.json]

Same model (both start from the same seeded weights), same real SST-2 sentences tokenised once,
same collator (dynamic padding), same batch size, AdamW, linear warm-up/decay, clipping at 1.0,
one epoch, no evaluation, no checkpoints, no logging. Each round runs both trainers back to back,
alternating which goes first, so a noisy neighbour slows both alike. Examples/second is measured
around the ``fit()``/``train()`` call (both trainers are constructed before the clock starts).
The headline ratio is the median over rounds of the paired ratio ktlab/transformers (each pair
ran back to back, so it cancels slow phases of a shared machine); >= 1.0 means ktlab is not
slower. The ratio of the medians is printed too.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time


def build_model(kind: str, seed: int):
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from ktlab.models import load_teacher
    if kind == "minilm":
        return load_teacher("minilm", num_labels=2, task="sequence", seed=seed)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=512, num_labels=2)
    return BertForSequenceClassification(config)


def run_ktlab(model, data, collate, args) -> float:
    from ktlab.train import TrainConfig, Trainer
    cfg = TrainConfig(lr=5e-5, epochs=1, batch_size=args.batch_size, warmup_ratio=0.1,
                      weight_decay=0.01, max_grad_norm=1.0, progress=False, seed=0,
                      load_best_at_end=False)
    trainer = Trainer(model, cfg, data, collate_fn=collate)
    start = time.perf_counter()
    trainer.fit()
    return len(data) / (time.perf_counter() - start)


def run_hf(model, data, collate, args) -> float:
    import transformers
    with tempfile.TemporaryDirectory() as out:
        targs = transformers.TrainingArguments(
            output_dir=out, per_device_train_batch_size=args.batch_size, num_train_epochs=1,
            learning_rate=5e-5, warmup_steps=0.1, weight_decay=0.01, max_grad_norm=1.0,
            logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
            disable_tqdm=True, seed=0, remove_unused_columns=False,
            dataloader_num_workers=0, use_cpu=not _cuda())
        trainer = transformers.Trainer(model=model, args=targs, train_dataset=data,
                                       data_collator=collate)
        start = time.perf_counter()
        trainer.train()
        return len(data) / (time.perf_counter() - start)


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("tiny", "minilm"), default="tiny")
    parser.add_argument("--examples", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    torch.set_num_threads(args.threads)
    from ktlab.data import PadCollator, encode_sentences, load_sst2, subset
    from ktlab.models import load_tokenizer

    tokenizer = load_tokenizer("minilm")
    train = subset(load_sst2("train"), args.examples, seed=0)
    enc = encode_sentences(tokenizer, train["sentence"], max_length=args.max_length)
    data = [{**e, "labels": int(y)} for e, y in zip(enc, train["label"])]
    collate = PadCollator(pad_token_id=tokenizer.pad_token_id)

    runners = {"ktlab": run_ktlab, "transformers": run_hf}
    speeds: dict[str, list[float]] = {name: [] for name in runners}
    run_hf(build_model(args.model, 0), data[: 2 * args.batch_size], collate, args)  # warm-up
    run_ktlab(build_model(args.model, 0), data[: 2 * args.batch_size], collate, args)
    for r in range(args.rounds):
        order = list(runners) if r % 2 == 0 else list(reversed(runners))
        for name in order:
            speeds[name].append(runners[name](build_model(args.model, 0), data, collate, args))
        print(f"round {r + 1}: " + ", ".join(f"{n} {speeds[n][-1]:.1f} ex/s" for n in runners),
              flush=True)
    med = {n: statistics.median(v) for n, v in speeds.items()}
    paired = [a / b for a, b in zip(speeds["ktlab"], speeds["transformers"])]
    ratio = statistics.median(paired)
    print(f"model={args.model} examples={args.examples} batch={args.batch_size} "
          f"threads={args.threads} device={'cuda' if _cuda() else 'cpu'}")
    print(f"median examples/s: ktlab {med['ktlab']:.1f}, transformers.Trainer "
          f"{med['transformers']:.1f}")
    print(f"paired ratios per round: {', '.join(f'{r:.2f}' for r in paired)}")
    print(f"ratio of medians = {med['ktlab'] / med['transformers']:.3f}")
    print(f"ratio ktlab/transformers (median of paired rounds) = {ratio:.3f} (goal >= 1.0)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"model": args.model, "examples": args.examples,
                       "batch_size": args.batch_size, "threads": args.threads,
                       "device": "cuda" if _cuda() else "cpu", "examples_per_s": speeds,
                       "median": med, "paired_ratios": paired, "ratio": ratio},
                      handle, indent=2)


if __name__ == "__main__":
    main()
