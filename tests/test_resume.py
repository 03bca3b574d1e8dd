"""Interrupt ``classify.run`` in the middle of each resumable stage (teacher fine-tuning, the logit
cache, a student), run the same call again, and get exactly what an uninterrupted run gets:
the same weights, logits, predictions and histories, and no checkpoint or temporary file left."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from ktlab.experiments import classify

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

#: Real SST-2 rows, tiny models: the teacher takes 4 steps (32 sentences / 8), the logit cache
#: 3 batches (130 sentences in batches of 64, no augmentation), the student 4 steps; a
#: checkpoint after every step and every batch.
SIZES = dataclasses.replace(
    classify.PROFILE_SIZES["tiny"], teacher_train=32, student_train=130, dev=16,
    augment_per_sentence=0, batch_size=8, student_batch_size=8, teacher_max_steps=4,
    student_max_steps=4, save_every=1, speed_sentences=8, latency_sentences=2)
STUDENT, CONDITION = "bilstm", "kd"
#: (stage, the step or batch to interrupt after, how many it has in all)
STAGES = [("teacher", 2, 4), ("logits", 2, 3), (f"{STUDENT}/{CONDITION}", 2, 4)]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the resumed and uninterrupted runs must do the same arithmetic."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(out: Path, *callbacks) -> dict:
    return classify.run("quick", teacher="minilm", students=STUDENT, out_dir=out, seed=0,
                        sizes=SIZES, conditions={STUDENT: (CONDITION,)}, plots=False,
                        callbacks=callbacks, log=lambda _: None)


def recorder(events: list) -> classify.StageCallback:
    return lambda stage, step: events.append((stage, step))


def interrupt_after(stage: str, step: int) -> classify.StageCallback:
    def callback(at_stage: str, at_step: int) -> None:
        if (at_stage, at_step) == (stage, step):
            raise KeyboardInterrupt   # what Ctrl-C raises between two steps
    return callback


def student_dir(work: Path) -> Path:
    (folder,) = work.glob(f"{STUDENT}-{CONDITION}-*")
    return folder


def weights(file: Path) -> dict:
    return torch.load(file, map_location="cpu", weights_only=False)["state"]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), f"{b}: {name} differs from the uninterrupted run"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    events: list = []
    results = run(out, recorder(events))
    steps = {stage: [s for name, s in events if name == stage] for stage, _, _ in STAGES}
    assert steps == {stage: list(range(1, n + 1)) for stage, _, n in STAGES}, \
        "the sizes no longer give the stages the steps this test interrupts"
    return out, results


@pytest.mark.parametrize("stage, step, total", STAGES, ids=[s for s, _, _ in STAGES])
def test_interrupted_stage_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path,
                                                               stage, step, total):
    out_a, a = uninterrupted
    work_a = out_a / "cache" / a["cache_key"]
    out_b = tmp_path / "interrupted"
    work_b = out_b / "cache" / a["cache_key"]

    # 1. interrupted after `step` of `stage`: the exception reaches the caller, and the stage's
    #    checkpoint (not its final file) is on disk; no results.json pretends to be finished
    with pytest.raises(KeyboardInterrupt):
        run(out_b, interrupt_after(stage, step))
    assert not (out_b / "results.json").exists()
    if stage == "teacher":
        assert not (work_b / "teacher" / "model.pt").exists()
        ckpt = torch.load(work_b / "teacher" / "checkpoint.pt", weights_only=False)
        assert ckpt["step"] == step
    elif stage == "logits":
        assert (work_b / "teacher" / "model.pt").is_file()
        assert not (work_b / "logits.pt").exists()
        partial = torch.load(work_b / "logits.pt.partial", weights_only=False)
        assert len(partial["chunks"]) == step
    else:
        assert (work_b / "logits.pt").is_file()
        assert not (student_dir(work_b) / "model.pt").exists()
        ckpt = torch.load(student_dir(work_b) / "checkpoint.pt", weights_only=False)
        assert ckpt["step"] == step

    # 2. the same call again: earlier stages come from the cache, the interrupted one continues
    #    after its checkpoint (it does not start over), later ones run in full
    events: list = []
    b = run(out_b, recorder(events))
    order = [s for s, _, _ in STAGES]
    for other, _, n in STAGES:
        seen = [s for name, s in events if name == other]
        if order.index(other) < order.index(stage):
            assert seen == [], other
        elif other == stage:
            assert seen == list(range(step + 1, total + 1)), other
        else:
            assert seen == list(range(1, n + 1)), other

    # 3. ... and ends where the uninterrupted run ended
    assert b["cache_key"] == a["cache_key"]
    for key in ("dev_accuracy", "dev_accuracy_ci95", "dev_predictions"):
        assert b["teacher"][key] == a["teacher"][key], key
    assert b["dev"] == a["dev"]                       # labels and the teacher's probabilities
    (rec_a,), (rec_b,) = a["students"], b["students"]
    assert rec_b["name"] == rec_a["name"] == f"{STUDENT}/{CONDITION}"
    for key in ("dev_accuracy", "dev_predictions", "agreement_with_teacher", "train_examples"):
        assert rec_b[key] == rec_a[key], key
    for rec_x, rec_y in ((a["teacher"], b["teacher"]), (rec_a, rec_b)):
        for key in ("step", "loss", "eval_step", "eval_accuracy", "best_step", "examples_seen"):
            assert rec_y["history"][key] == rec_x["history"][key], (rec_y["name"], key)
    assert_same_weights(work_a / "teacher" / "model.pt", work_b / "teacher" / "model.pt")
    assert_same_weights(student_dir(work_a) / "model.pt", student_dir(work_b) / "model.pt")
    assert torch.equal(torch.load(work_a / "logits.pt", weights_only=False),
                       torch.load(work_b / "logits.pt", weights_only=False))
    assert classify.load_results(out_b)["complete"] is True

    # 4. nothing half-written or resumable is left behind
    leftovers = [p.relative_to(out_b) for pattern in ("*.tmp", "checkpoint.pt", "best.pt",
                                                      "*.partial")
                 for p in out_b.rglob(pattern)]
    assert leftovers == []
