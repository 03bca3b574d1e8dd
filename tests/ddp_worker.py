"""Run by tests/test_train_multiprocess.py under `accelerate launch --num_processes 2` (CPU/gloo).

Each rank trains the same tiny BERT with ktlab's Trainer and writes what it saw and where it
ended: the number of batches, the example ids it trained on, and a fingerprint of its weights."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_models import tiny_bert, toy_sequence_data  # noqa: E402

from ktlab.train import TrainConfig, Trainer, default_loss  # noqa: E402


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    data = toy_sequence_data(64)
    for i, item in enumerate(data):
        item["example_id"] = i
    seen: list[int] = []

    def counting_loss(model, batch):
        seen.extend(int(i) for i in batch["example_id"])
        return default_loss(model, batch)

    model = tiny_bert(seed=0)
    trainer = Trainer(model, TrainConfig(lr=1e-3, epochs=2, batch_size=8, progress=False),
                      data, loss_fn=counting_loss)
    history = trainer.fit()
    rank = trainer.accelerator.process_index
    weights = b"".join(v.detach().cpu().numpy().tobytes() for v in model.state_dict().values())
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({
        "rank": rank, "world": trainer.accelerator.num_processes,
        "batches": len(seen) // 8, "examples": seen, "steps": history.step[-1],
        "sha": hashlib.sha256(weights).hexdigest()}))


if __name__ == "__main__":
    main(sys.argv[1])
