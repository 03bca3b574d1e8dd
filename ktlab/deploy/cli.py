"""``ktlab export RUN_DIR --format onnx [--int8] --out DIR`` and ``ktlab predict DIR TEXT...``.

``export`` turns a trained serving run (``ktlab run deploy`` / notebook 08 write one:
``ktlab.experiments.serving``) into a bundle folder; ``predict`` serves a bundle with
:class:`ktlab.deploy.runtime.Predictor`, the torch-free code a server would import, and prints
one JSON line per text.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


#: Options go before DIR or after the texts: argparse cannot split ``DIR --strict TEXT``.
PREDICT_EXAMPLES = """examples:
  ktlab predict runs/bundle "a fine film" "a dull one"
  ktlab predict --strict --threads 1 runs/bundle "a fine film"
  ktlab predict runs/bundle < reviews.txt          (one text per line)
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model as a self-contained ONNX folder",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", help="a serving run's models folder (e.g. runs/deploy-quick/models)")
    p.add_argument("--format", default="onnx", choices=["onnx"], help="bundle format (onnx)")
    p.add_argument("--int8", action="store_true", help="dynamic int8 quantisation (onnxruntime)")
    p.add_argument("--model", default="best",
                   help="teacher, best (the best BiLSTM student, default) or bilstm/<condition>")
    p.add_argument("--out", required=True, help="the bundle folder to write")
    p.set_defaults(func=_export)

    p = sub.add_parser("predict", help="label texts with an exported bundle (JSON lines out)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=PREDICT_EXAMPLES)
    p.add_argument("bundle", help="a folder written by `ktlab export`")
    p.add_argument("texts", nargs="*", help="texts to label (none: read stdin, one per line)")
    p.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    p.add_argument("--strict", action="store_true",
                   help="refuse texts over the model's maximum length instead of truncating")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass")
    p.set_defaults(func=_predict)


def _export(args: argparse.Namespace) -> int:
    from ktlab.deploy.bundle import BundleError, export_bundle
    from ktlab.experiments import serving
    from ktlab.experiments.deploy import _pick
    run_dir = Path(args.run_dir)
    if not (run_dir / "results.json").is_file():
        print(f"error: {run_dir} has no results.json, so it is not a trained serving run; "
              "train one with `ktlab run deploy --profile quick` (its models are in "
              "OUT/models)", file=sys.stderr)
        return 1
    try:
        models = serving.load(run_dir)
        model, label = _pick(models, args.model)
        out = export_bundle(model, models.tokenizer, models.label_names, args.out,
                            max_length=models.max_length, int8=args.int8,
                            source={"run_dir": str(run_dir), "model": label,
                                    "cache_key": models.results["cache_key"]})
    except (BundleError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = (out / "model.onnx").stat().st_size / 2**20
    print(f"wrote {out} ({label}, {'int8' if args.int8 else 'fp32'}, model.onnx {size:.1f} MiB)")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from ktlab.deploy.runtime import BundleError, Predictor
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("error: no texts: pass them as arguments or one per line on stdin",
              file=sys.stderr)
        return 2
    try:
        predictor = Predictor.load(args.bundle, threads=args.threads,
                                   on_overlength="error" if args.strict else "truncate")
        for i in range(0, len(texts), args.batch_size):
            for row in predictor.predict(texts[i:i + args.batch_size]):
                print(json.dumps(row, ensure_ascii=False))
    except BundleError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
