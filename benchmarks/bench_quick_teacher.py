"""Why the quick teacher is trained the way it is: each ingredient of the recipe removed once.

    KTLAB_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_quick_teacher.py \
        [--out results/quick-teacher-recipe.json]

The quick profile fine-tunes MiniLM on 2,000 SST-2 sentences for one epoch (63 steps) and must
reach >= 80% on all 872 dev sentences inside notebook 04's 3-minute budget. The recipe
(``ktlab.experiments.classify``): mean pooling, a frozen word-embedding table, a head learning
10x faster, length-bucketed batches. This script trains the recipe and each variant with one
ingredient changed, on the same sentences and seed, and prints dev accuracy (95% interval),
McNemar's p against the recipe, and training seconds.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="results/quick-teacher-recipe.json")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    from ktlab.experiments import classify
    from ktlab.experiments.common import describe_machine
    from ktlab.metrics import mcnemar_test
    from ktlab.models import load_tokenizer

    torch.set_num_threads(args.threads)
    base = classify.PROFILE_SIZES["quick"]
    data = classify.load_data(base, 0)
    tok = load_tokenizer("minilm")
    dev = classify.encode(tok, data["dev"]["sentence"], data["dev"]["label"], base.max_length)
    items = classify.encode(tok, data["teacher_train"]["sentence"],
                            data["teacher_train"]["label"], base.max_length)
    variants = {
        "recipe (mean pooling, frozen embeddings, head lr x10)": {},
        "embeddings trained": {"freeze": False},
        "head lr x1": {"head_scale": 1.0},
        "[CLS] head (BertForSequenceClassification)": {"teacher": "cls"},
    }
    rows = {}
    for name, change in variants.items():
        sizes = dataclasses.replace(base, teacher_freeze_embeddings=change.get("freeze", True))
        old_scale = classify.HEAD_LR_SCALE
        classify.HEAD_LR_SCALE = change.get("head_scale", old_scale)
        old_pool = dict(classify.TEACHER_POOLING)
        if change.get("teacher") == "cls":
            classify.TEACHER_POOLING.pop("minilm", None)
        try:
            teacher = classify.build_teacher("minilm", 2, 0)
            with tempfile.TemporaryDirectory() as work:
                history = classify.fine_tune_teacher(teacher, items, None, sizes, 0,
                                                     Path(work), tok.pad_token_id)
            rec = classify.measure(name, "teacher", name, teacher, dev, sizes, tok.pad_token_id)
        finally:
            classify.HEAD_LR_SCALE = old_scale
            classify.TEACHER_POOLING.clear()
            classify.TEACHER_POOLING.update(old_pool)
        rec.pop("_logits")
        rec["train_seconds"] = history["train_seconds"]
        rows[name] = rec
        print(f"{name:<55} {100 * rec['dev_accuracy']:.1f}% "
              f"({100 * rec['dev_accuracy_ci95'][0]:.1f}-{100 * rec['dev_accuracy_ci95'][1]:.1f})"
              f"  {history['train_seconds']:.0f} s", flush=True)
    recipe = next(iter(rows.values()))
    for rec in rows.values():
        test = mcnemar_test(recipe["dev_predictions"], rec["dev_predictions"],
                            data["dev"]["label"])
        rec["recipe_minus_this_points"] = round(100 * test["difference"], 2)
        rec["mcnemar_p"] = round(test["p_value"], 5)
    report = {"schema": "ktlab.quick-teacher-recipe/1", "machine": describe_machine(),
              "threads": args.threads, "teacher_sentences": len(items), "dev": len(dev),
              "sizes": dataclasses.asdict(base), "variants": rows}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1))
    os.replace(tmp, out)
    print("| variant | dev acc (95% CI) | recipe minus variant (points) | McNemar p | train s |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        lo, hi = r["dev_accuracy_ci95"]
        print(f"| {name} | {100 * r['dev_accuracy']:.1f} ({100 * lo:.1f}-{100 * hi:.1f}) | "
              f"{r['recipe_minus_this_points']:+.1f} | {r['mcnemar_p']:.4f} | "
              f"{r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
