"""Print the README's results tables from the committed bench results under ``results/``.

    python benchmarks/results_summary.py            # markdown to stdout

Every number comes from a results JSON written by ``ktlab run ... --profile bench``; a missing
file is reported, not invented.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {
    "sentiment": ROOT / "results" / "sentiment-bench" / "results.json",
    "ner": ROOT / "results" / "ner-bench" / "results.json",
    "multitask": ROOT / "results" / "multitask-bench" / "results.json",
}


def _machine(results: dict) -> str:
    m = results.get("machine", {})
    return (f"{m.get('cpu_model', '?').strip()}, {m.get('cpu_count', '?')} cores, "
            f"{m.get('torch_threads', '?')} torch thread(s), torch {m.get('torch', '?')}")


def main() -> int:
    from ktlab.experiments import multitask, ner, sentiment
    modules = {"sentiment": sentiment, "ner": ner, "multitask": multitask}
    missing = 0
    for name, path in SOURCES.items():
        print(f"### {name} (`{path.relative_to(ROOT)}`)\n")
        if not path.is_file():
            print(f"not run yet: `ktlab run {name} --profile bench`\n")
            missing += 1
            continue
        results = modules[name].load_results(path)
        wall = results.get("wall_seconds", results.get("seconds", 0)) / 60
        print(f"Machine: {_machine(results)}; {wall:.0f} min wall.\n")
        print(modules[name].markdown_table(results) + "\n")
    return 1 if missing == len(SOURCES) else 0


if __name__ == "__main__":
    sys.exit(main())
