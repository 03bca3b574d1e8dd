"""The sentiment bench's goals, met or not, from the committed JSON files (nothing typed in).

    python benchmarks/sentiment_report.py [--bench results/sentiment-bench] \
        [--anchors results/sentiment-anchors/anchors.json]

Reads ``results.json`` of ``ktlab run sentiment --profile bench``, the anchors written by
``benchmarks/bench_sentiment_anchors.py`` and, when present, ``levers.json`` from
``benchmarks/bench_sentiment_levers.py``, and prints markdown: the model table, the goal checks,
the effects of each condition against ``hard`` (McNemar), the anchor ratios and the levers.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def goals(bench: dict) -> list[tuple[str, str, bool]]:
    """(goal, measured value, met) for each goal of the issue, from the bench summary."""
    s, t = bench["summary"]["bilstm"], bench["summary"]["teacher_dev_accuracy"]
    return [
        ("teacher dev accuracy >= 88.5%", f"{100 * t:.1f}%", t >= 0.885),
        ("best BiLSTM >= 86.0%", f"{s['best']} {100 * s['best_dev_accuracy']:.1f}%",
         s["best_dev_accuracy"] >= 0.86),
        ("best BiLSTM >= 97% of the teacher", f"{100 * s['share_of_teacher']:.1f}%",
         s["share_of_teacher"] >= 0.97),
        ("best BiLSTM >= +3 points over bilstm/hard (same sentences)",
         f"{s['gain_over_hard']['points']:+.1f} (McNemar p = {s['gain_over_hard']['p_value']:.2g})",
         s["gain_over_hard"]["points"] >= 3),
        ("best BiLSTM >= 10x the teacher's throughput at batch 32",
         f"{s['speedup_vs_teacher']:.1f}x", s["speedup_vs_teacher"] >= 10),
    ]


def best_thread_speedup(levers: dict) -> tuple[str, bool]:
    """BiLSTM ÷ teacher throughput at batch 32 with each model on its own best thread count
    (the "1 vs 2 threads" lever of ``levers.json``: an LSTM at batch 32 is overhead-bound and
    runs faster on one thread, the teacher's matrix products gain from two)."""
    t = levers["teacher_2_vs_1_threads_throughput"]
    b = levers["bilstm_2_vs_1_threads_throughput"]
    t_best, b_best = max(t["on"], t["off"]), max(b["on"], b["off"])
    threads = (2 if t["on"] >= t["off"] else 1, 2 if b["on"] >= b["off"] else 1)
    ratio = b_best / t_best
    return (f"{ratio:.1f}x (teacher {t_best:.0f} sent/s on {threads[0]} thread(s), BiLSTM "
            f"{b_best:.0f} on {threads[1]}; levers.json, measured side by side)", ratio >= 10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default=str(ROOT / "results" / "sentiment-bench"))
    parser.add_argument("--anchors", default=str(ROOT / "results" / "sentiment-anchors"
                                                 / "anchors.json"))
    args = parser.parse_args()
    from ktlab.experiments import sentiment
    bench = sentiment.load_results(args.bench)
    print(sentiment.markdown_table(bench) + "\n")
    print("| goal | measured | |\n|---|---|---|")
    rows = goals(bench)
    levers_file = Path(args.bench) / "levers.json"
    if levers_file.is_file():
        value, met = best_thread_speedup(json.loads(levers_file.read_text())["levers"])
        rows.append(("... with each model on its best thread count", value, met))
    for goal, value, met in rows:
        print(f"| {goal} | {value} | {'met' if met else '**not met**'} |")
    for student in bench["students_requested"]:
        s = bench["summary"].get(student)
        if not s or "effects_vs_hard" not in s:
            continue
        print(f"\n{student}: each condition minus `{student}/hard` (points, McNemar p, verdict)\n")
        for cond, e in s["effects_vs_hard"].items():
            print(f"- `{cond}`: {e['points']:+.1f}, p = {e['p_value']:.2g}, {e['verdict']}")
    t = bench["teacher"]
    print(f"\nteacher: {t['throughput_sps']:.0f} sentences/s at batch 32, batch-1 latency "
          f"{t['latency_ms']:.1f} ms (p90 {t['latency_p90_ms']:.1f}); "
          f"{bench['torch_threads']} torch threads")
    anchors_file = Path(args.anchors)
    if anchors_file.is_file():
        anchors = json.loads(anchors_file.read_text())
        for key, what in (("hf_trainer", "plain transformers.Trainer MiniLM"),
                          ("bilstm", "plain BiLSTM")):
            value = (f"{100 * anchors[key]['dev_accuracy']:.1f}% dev" if key in anchors
                     else "not trained yet")
            print(f"\nanchor {what} ({anchors['train_sentences']} training sentences): {value}")
        print()
        print("| ktlab | anchor | accuracy difference (points) | McNemar p | throughput ratio | "
              "latency ratio |\n|---|---|---|---|---|---|")
        for r in anchors.get("side_by_side", {}).get("ratios", []):
            print(f"| {r['ktlab']} | {r['anchor']} | {r['accuracy_diff_points']:+.1f} | "
                  f"{r['mcnemar_p']:.2g} | {r['throughput_ratio']:.2f}x | "
                  f"{r['latency_ratio']:.2f}x |")
    if levers_file.is_file():
        levers = json.loads(levers_file.read_text())["levers"]
        print("\n| speed lever | on | off | on/off |\n|---|---|---|---|")
        for name, r in levers.items():
            print(f"| {name} | {r['on']} | {r['off']} | {r['ratio_on_off']} |")


if __name__ == "__main__":
    main()
