"""The models notebooks 08 and 09 serve and explain: the SST-2 teacher and BiLSTM students.

Deployment (:mod:`ktlab.deploy`) and interpretability (:mod:`ktlab.explain`) need *trained*
models: the fine-tuned MiniLM teacher and the BiLSTM students of the sentiment experiment
(notebook 04, ``ktlab run sentiment``). This stage trains them with the sentiment pipeline, or
reads them back from its cache, and returns them ready to use:

- ``teacher``: all-MiniLM-L6-v2 + mean-pooling head, fine-tuned on SST-2;
- ``bilstm/hard``: the BiLSTM on gold labels (the control);
- ``bilstm/hard+pca``: the best BiLSTM of the sentiment bench (the teacher's embedding table);
- ``bilstm/kd``: the distilled BiLSTM (the teacher's logits).

The sizes are the sentiment profile's without the augmented transfer set (no ``+aug``
condition is trained here, so its 57k extra teacher passes would be wasted).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import torch

#: The students trained for serving and explaining (``kd`` vs ``hard``; ``hard+pca`` is the best).
CONDITIONS = ("hard", "hard+pca", "kd")


def sizes_for(profile: str) -> Any:
    """The sentiment profile's sizes without augmentation (see the module docstring)."""
    from ktlab.experiments.classify import PROFILE_SIZES
    base = PROFILE_SIZES[profile if profile in PROFILE_SIZES else "quick"]
    return dataclasses.replace(base, augment_per_sentence=0)


@dataclasses.dataclass
class ServingModels:
    """Trained models plus what serving them needs (tokenizer, labels, max length, records)."""

    teacher: torch.nn.Module
    students: dict[str, torch.nn.Module]     #: condition -> BiLSTM
    tokenizer: Any
    label_names: list[str]
    max_length: int
    dev_sentences: list[str]
    dev_labels: list[int]
    results: dict                            #: the sentiment results.json of the run
    run_dir: Path

    @property
    def best_student(self) -> str:
        """The condition of the most accurate BiLSTM on dev."""
        return self.results["summary"]["bilstm"]["best"].split("/")[1]


def train_or_load(profile: str = "quick", run_dir: str | Path = "runs/serving-quick",
                  teacher: Optional[str] = None, seed: Optional[int] = None,
                  max_examples: Optional[int] = None, max_steps: Optional[int] = None,
                  log: Callable[[str], None] = print) -> ServingModels:
    """Train (or read back from ``run_dir``'s cache) the teacher and the BiLSTM students."""
    from ktlab.experiments import classify
    sizes = sizes_for(profile)
    results = classify.run(profile, teacher, ["bilstm"], run_dir, seed=seed, sizes=sizes,
                           conditions={"bilstm": CONDITIONS}, plots=False, log=log,
                           max_examples=max_examples, max_steps=max_steps)
    return load(run_dir, results)


def load(run_dir: str | Path, results: Optional[dict] = None) -> ServingModels:
    """Rebuild the models of a finished run from ``run_dir/cache`` (no training)."""
    from ktlab.experiments import classify
    from ktlab.models import load_tokenizer
    run_dir = Path(run_dir)
    results = results or classify.load_results(run_dir)
    labels = len(results["label_names"])
    work = run_dir / "cache" / results["cache_key"]
    teacher = classify.build_teacher(results["teacher_name"], labels, results["seed"])
    teacher.load_state_dict(_state(work / "teacher" / "model.pt"))
    teacher.eval()
    tokenizer = load_tokenizer(results["teacher_name"])
    students = {}
    for rec in results["students"]:
        cond = rec["condition"]
        model = classify.build_student("bilstm", classify.CONDITIONS[cond], teacher,
                                       len(tokenizer), labels, tokenizer.pad_token_id or 0, 0)
        folder = next(work.glob(f"bilstm-{cond}-*/model.pt"), None)
        if folder is None:
            raise FileNotFoundError(f"no trained bilstm/{cond} under {work}: rerun the "
                                    "training stage (train_or_load) for this folder")
        model.load_state_dict(_state(folder))
        students[cond] = model.eval()
    dev = _dev_rows(results)
    return ServingModels(teacher, students, tokenizer, list(results["label_names"]),
                         results["sizes"]["max_length"], dev[0], dev[1], results, run_dir)


def _state(file: Path) -> dict:
    if not file.is_file():
        raise FileNotFoundError(f"{file} is missing: the run's cache was deleted or the run "
                                "never finished; rerun the training stage for this folder")
    return torch.load(file, map_location="cpu", weights_only=False)["state"]


def _dev_rows(results: dict) -> tuple[list[str], list[int]]:
    """The run's dev sentences and gold labels, in the run's order (from their SST-2 idx)."""
    from ktlab.data.labelled import sst2_task
    from ktlab.config import load as load_config
    task = sst2_task(load_config(None, verbose=False).data_dir)
    by_idx = {int(i): (s, int(y)) for i, s, y in
              zip(task.dev["idx"], task.dev["sentence"], task.dev["label"])}
    rows = [by_idx[i] for i in results["dev"]["idx"]]
    return [r[0] for r in rows], [r[1] for r in rows]
