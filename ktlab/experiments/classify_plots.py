"""Plots of a classification transfer run (``results.json`` of ``classify``/``sentiment``)."""
from __future__ import annotations

from typing import Any


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
    from ktlab.experiments.common import teacher_curve_axes
    fig, ax, _ = teacher_curve_axes(results, [100 * a for a in
                                              results["teacher"]["history"]["eval_accuracy"]],
                                    "dev accuracy", "dev accuracy (%)")
    ax.set_title(f"Teacher fine-tuning ({results['teacher_name']}, {results['profile']})")
    fig.legend(loc="center right", fontsize=8)
    return fig
