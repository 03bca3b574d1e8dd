"""Latency of ktlab's from-scratch BERT vs ``transformers.BertModel`` on the same MiniLM weights.

    .venv/bin/python benchmarks/bench_bert.py [--repeats 7] [--threads 2]

Both models run in eval mode under ``torch.inference_mode`` with their default (fused SDPA)
attention, on the same padded batches of real SST-2 sentences (dynamic lengths, so the padding
mask is exercised). After a warm-up, each repeat times both models back to back, alternating
which goes first, so that a noisy neighbour on a shared machine slows both alike. The ratio is
median(ktlab) / median(transformers): below 1.0 means ktlab is faster.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

SHAPES = ((32, 64), (8, 128))


def make_batch(tokenizer, sentences: list[str], batch: int, length: int) -> dict:
    """``batch`` sentences padded/truncated to exactly ``length`` tokens (pairs joined until long
    enough so most rows are full and some carry padding)."""
    texts, i = [], 0
    while len(texts) < batch:
        text = sentences[i % len(sentences)]
        while len(tokenizer.tokenize(text)) < length * (0.6 + 0.4 * (len(texts) % 2)):
            i += 1
            text += " " + sentences[i % len(sentences)]
        texts.append(text)
        i += 1
    return dict(tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                          return_tensors="pt"))


def time_once(fn, batch: dict) -> float:
    start = time.perf_counter()
    fn(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    torch.set_num_threads(args.threads)
    import transformers

    from ktlab.data import load_sst2
    from ktlab.models import load_tokenizer, minilm_path
    from ktlab.nn import from_hf

    transformers.utils.logging.disable_progress_bar()
    tokenizer = load_tokenizer("minilm")
    sentences = list(load_sst2("dev")["sentence"])
    theirs = transformers.BertModel.from_pretrained(str(minilm_path())).eval()
    ours = from_hf("minilm").eval()

    def run_ours(b: dict) -> None:
        ours(b["input_ids"], b["attention_mask"], b["token_type_ids"])

    def run_theirs(b: dict) -> None:
        theirs(**b)

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"threads={torch.get_num_threads()}, HF attention={theirs.config._attn_implementation}")
    results = []
    with torch.inference_mode():
        for batch_size, length in SHAPES:
            batch = make_batch(tokenizer, sentences, batch_size, length)
            a = ours(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
            b = theirs(**batch)
            real = batch["attention_mask"].bool()
            diff = (a.last_hidden_state[real] - b.last_hidden_state[real]).abs().max().item()
            for _ in range(args.warmup):
                run_ours(batch), run_theirs(batch)
            t_ours, t_theirs = [], []
            for r in range(args.repeats):
                order = [(run_ours, t_ours), (run_theirs, t_theirs)]
                for fn, times in (order if r % 2 == 0 else order[::-1]):
                    times.append(time_once(fn, batch))
            m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
            row = {"batch": batch_size, "seq_len": length,
                   "padding_share": round(1 - real.float().mean().item(), 3),
                   "ktlab_ms": round(1000 * m_ours, 1), "transformers_ms": round(1000 * m_theirs, 1),
                   "ratio": round(m_ours / m_theirs, 3), "max_abs_diff": diff}
            results.append(row)
            print(f"batch {batch_size:>2} x {length:>3} (padding {row['padding_share']:.0%}): "
                  f"ktlab {row['ktlab_ms']:7.1f} ms | transformers {row['transformers_ms']:7.1f} ms"
                  f" | ratio {row['ratio']:.3f} | max |diff| {diff:.1e}")
    overall = statistics.mean(r["ratio"] for r in results)
    print(f"latency ratio ktlab / transformers (mean over shapes): {overall:.3f} "
          f"({'goal met' if overall <= 1.0 else 'goal missed'}: <= 1.0)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"shapes": results, "mean_ratio": overall, "threads": args.threads,
                       "repeats": args.repeats}, handle, indent=2)


if __name__ == "__main__":
    main()
