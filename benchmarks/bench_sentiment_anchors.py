"""The plain anchors for the sentiment bench: what a user would do *instead* of ktlab.

    KTLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_sentiment_anchors.py \
        [--out results/sentiment-anchors] [--ktlab results/sentiment-bench] [--compare-only]

Trains, in one run, on the same SST-2 sentences and budget as ``ktlab run sentiment --profile
bench`` (all 67,349 training sentences, max length 64, seed 0):

1. **plain ``transformers.Trainer``** fine-tune of the same offline MiniLM with HF's own
   ``[CLS]`` head (``AutoModelForSequenceClassification``): 1 epoch, batch 32, lr 5e-5, the
   ``TrainingArguments`` defaults otherwise, ``DataCollatorWithPadding``;
2. **plain BiLSTM**: embeddings 300, hidden 256, WordPiece ids, random init, no teacher, Adam
   1e-3, batch 32, 2 epochs, the last hidden states of both directions -> linear.

Then, when ``--ktlab`` points at a finished bench run, it loads ktlab's teacher and best BiLSTM
from that run's cache and measures all four models *side by side in this process* (same dev
sentences, same timing code, same threads), and prints ktlab's numbers as ratios to the anchors
(accuracy difference in points, throughput ratio). ``--compare-only`` skips training and reuses
the anchors saved by an earlier run; ``--anchors bilstm`` trains only that one (the other is
kept from an earlier run's ``anchors.json`` when there). Results go to ``OUT/anchors.json`` (written atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

MAX_LENGTH, SEED, BATCH = 64, 0, 32


def _atomic_json(obj: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def load_sst2_items(tokenizer):
    from ktlab.data import encode_sentences, load_sst2
    train, dev = load_sst2("train"), load_sst2("dev")

    def items(split):
        enc = encode_sentences(tokenizer, split["sentence"], max_length=MAX_LENGTH)
        return [{**e, "labels": int(y)} for e, y in zip(enc, split["label"])]
    return items(train), items(dev)


# ----------------------------------------------------------------------------- anchor 1: HF Trainer

def train_hf_anchor(train_items, dev_items, tokenizer, out: Path) -> dict:
    """A fine-tune as the transformers documentation teaches it."""
    import numpy as np
    import torch
    import transformers
    from ktlab.models import resolve_teacher
    torch.manual_seed(SEED)  # the new [CLS] head draws from the global RNG
    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        resolve_teacher("minilm"), num_labels=2)
    args = transformers.TrainingArguments(
        output_dir=str(out / "hf-trainer-tmp"), per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=64, num_train_epochs=1, learning_rate=5e-5,
        logging_strategy="no", save_strategy="no", eval_strategy="no", report_to=[],
        disable_tqdm=True, seed=SEED, use_cpu=not torch.cuda.is_available())
    collator = transformers.DataCollatorWithPadding(tokenizer)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=train_items,
                                   data_collator=collator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    pred = trainer.predict(dev_items)
    acc = float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())
    model.save_pretrained(out / "hf-trainer")
    tokenizer.save_pretrained(out / "hf-trainer")
    print(f"[anchors] transformers.Trainer MiniLM: dev {acc:.4f}, train {seconds:.0f} s", flush=True)
    return {"dev_accuracy": round(acc, 5), "train_seconds": round(seconds, 1),
            "train_examples": len(train_items),
            "dev_predictions": np.argmax(pred.predictions, -1).tolist()}


# ----------------------------------------------------------------------------- anchor 2: BiLSTM

def plain_bilstm(vocab_size: int):
    """The BiLSTM a user writes from a tutorial: no teacher, no pre-trained embeddings."""
    import torch
    from torch import nn

    class PlainBiLSTM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(vocab_size, 300, padding_idx=0)
            self.lstm = nn.LSTM(300, 256, batch_first=True, bidirectional=True)
            self.out = nn.Linear(512, 2)

        def forward(self, input_ids, attention_mask=None):
            lengths = (attention_mask if attention_mask is not None
                       else (input_ids != 0)).sum(1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(self.embed(input_ids), lengths,
                                                       batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)                         # h: (2, B, 256)
            return self.out(torch.cat([h[0], h[1]], dim=1))

    return PlainBiLSTM()


def train_bilstm_anchor(train_items, dev_items, pad_id: int, out: Path) -> dict:
    import torch
    import torch.nn.functional as F
    from ktlab.data import PadCollator
    torch.manual_seed(SEED)
    model = plain_bilstm(30522)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    collate = PadCollator(pad_id)
    gen = torch.Generator().manual_seed(SEED)
    start = time.perf_counter()
    for _ in range(2):
        model.train()
        order = torch.randperm(len(train_items), generator=gen).tolist()
        for i in range(0, len(order), BATCH):
            batch = collate([train_items[j] for j in order[i:i + BATCH]])
            loss = F.cross_entropy(model(batch["input_ids"], batch["attention_mask"]),
                                   batch["labels"])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - start
    preds = predict(model, dev_items, pad_id)
    acc = sum(int(p == it["labels"]) for p, it in zip(preds, dev_items)) / len(dev_items)
    torch.save(model.state_dict(), out / "bilstm.pt")
    print(f"[anchors] plain BiLSTM: dev {acc:.4f}, train {seconds:.0f} s", flush=True)
    return {"dev_accuracy": round(acc, 5), "train_seconds": round(seconds, 1),
            "train_examples": 2 * len(train_items), "dev_predictions": preds}


def predict(model, items, pad_id: int) -> list[int]:
    import torch
    from ktlab.data import PadCollator
    from ktlab.train import logits_of, model_inputs
    collate = PadCollator(pad_id)
    model.eval()
    preds = []
    with torch.inference_mode():
        for i in range(0, len(items), 64):
            batch = collate(items[i:i + 64])
            preds += logits_of(model(**model_inputs(model, batch))).argmax(-1).tolist()
    return preds


# ----------------------------------------------------------------------------- side by side

def load_models(out: Path, ktlab_dir: Path | None) -> dict:
    """The two anchors and, when a bench run is given, ktlab's teacher and best BiLSTM."""
    import torch
    import transformers
    models = {}
    if (out / "hf-trainer").is_dir():
        models["anchor: transformers.Trainer MiniLM"] = \
            transformers.AutoModelForSequenceClassification.from_pretrained(out / "hf-trainer")
    bilstm = plain_bilstm(30522)
    if (out / "bilstm.pt").is_file():
        bilstm.load_state_dict(torch.load(out / "bilstm.pt", map_location="cpu"))
        models["anchor: plain BiLSTM"] = bilstm
    elif anchors_trained(out).get("bilstm"):
        print("[anchors] plain BiLSTM weights not cached: timing its architecture (speed does "
              "not depend on the weight values; its accuracy is read from anchors.json)")
        models["anchor: plain BiLSTM"] = bilstm
    if ktlab_dir is not None:
        from ktlab.experiments import sentiment
        try:
            models.update(sentiment.load_bench_models(ktlab_dir))
        except FileNotFoundError as err:
            print(f"[anchors] {err}: timing ktlab's architectures instead (same sizes, "
                  "pretrained teacher weights, untrained student; accuracies from results.json)")
            models.update(sentiment.load_bench_architectures(ktlab_dir))
    return models


def anchors_trained(out: Path) -> dict:
    """Which anchors an earlier run recorded in ``anchors.json`` (beside the cache folder)."""
    report = out.parent / "anchors.json"
    return json.loads(report.read_text()) if report.is_file() else {}


def compare(models: dict, dev_items, pad_id: int, anchors: dict, ktlab_dir: Path | None) -> dict:
    from ktlab.experiments.sentiment import measure_speed
    speed = {}
    for name, model in models.items():
        speed[name] = measure_speed(model, dev_items, pad_id, BATCH, latency_items=128)
        print(f"[anchors] {name:<42} {speed[name]['throughput_sps']:7.0f} sent/s @32  "
              f"{speed[name]['latency_ms']:6.2f} ms b=1", flush=True)
    report = {"speed": speed}
    if ktlab_dir is None:
        return report
    from ktlab.experiments import sentiment
    from ktlab.metrics import mcnemar_test
    results = sentiment.load_results(ktlab_dir)
    labels = results["dev"]["labels"]
    rows = []
    for k_name, k_rec in sentiment.bench_headline_records(results).items():
        for a_name, a_key in (("anchor: transformers.Trainer MiniLM", "hf_trainer"),
                              ("anchor: plain BiLSTM", "bilstm")):
            if a_key not in anchors or a_name not in speed:
                continue  # that anchor has not been trained yet
            a = anchors[a_key]
            test = mcnemar_test(k_rec["dev_predictions"], a["dev_predictions"], labels)
            rows.append({"ktlab": k_name, "anchor": a_name,
                         "accuracy_diff_points": round(100 * (k_rec["dev_accuracy"]
                                                              - a["dev_accuracy"]), 2),
                         "mcnemar_p": round(test["p_value"], 4),
                         "throughput_ratio": round(speed[k_name]["throughput_sps"]
                                                   / speed[a_name]["throughput_sps"], 2),
                         "latency_ratio": round(speed[k_name]["latency_ms"]
                                                / speed[a_name]["latency_ms"], 2)})
    report["ratios"] = rows
    print("\n| ktlab | anchor | acc diff (points) | McNemar p | throughput ratio | "
          "latency ratio |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ktlab']} | {r['anchor']} | {r['accuracy_diff_points']:+.2f} | "
              f"{r['mcnemar_p']:.4f} | {r['throughput_ratio']:.2f}x | {r['latency_ratio']:.2f}x |")
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/sentiment-anchors")
    parser.add_argument("--ktlab", default=None, help="a finished `ktlab run sentiment` folder")
    parser.add_argument("--compare-only", action="store_true",
                        help="reuse the anchors trained by an earlier run of this script")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--anchors", default="hf_trainer,bilstm",
                        help="which anchors to train now (hf_trainer, bilstm); the others are "
                             "read from an earlier run's anchors.json when there")
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from ktlab.experiments.common import describe_machine
    from ktlab.models import load_tokenizer
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    models_dir = out / "cache"
    models_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer("minilm")
    train_items, dev_items = load_sst2_items(tokenizer)
    report_file = out / "anchors.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    report.update({"schema": "ktlab.sentiment-anchors/1", "machine": describe_machine(),
                   "threads": args.threads, "max_length": MAX_LENGTH, "seed": SEED,
                   "train_sentences": len(train_items), "dev_sentences": len(dev_items)})
    wanted = set() if args.compare_only else {a.strip() for a in args.anchors.split(",")}
    if "hf_trainer" in wanted:
        report["hf_trainer"] = train_hf_anchor(train_items, dev_items, tokenizer, models_dir)
        _atomic_json(report, report_file)
    if "bilstm" in wanted:
        report["bilstm"] = train_bilstm_anchor(train_items, dev_items, tokenizer.pad_token_id,
                                               models_dir)
        _atomic_json(report, report_file)
    ktlab_dir = Path(args.ktlab) if args.ktlab else None
    models = load_models(models_dir, ktlab_dir)
    report["side_by_side"] = compare(models, dev_items, tokenizer.pad_token_id,
                                     report, ktlab_dir)
    report["side_by_side"]["ktlab_run"] = str(ktlab_dir) if ktlab_dir else None
    report["side_by_side"]["timed_weights"] = {
        "ktlab": "trained (from the run's cache)" if ktlab_dir and any(
            (ktlab_dir / "cache").glob("*/teacher/model.pt")) else
        "architectures only (run cache absent; speed does not depend on weight values)",
        "plain BiLSTM": "trained" if (models_dir / "bilstm.pt").is_file() else
        "architecture only (weights not cached)"}
    _atomic_json(report, report_file)
    print(f"[anchors] wrote {report_file}")


if __name__ == "__main__":
    main()
