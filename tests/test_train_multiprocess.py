"""Two CPU processes (gloo) through `accelerate launch`: same final weights, half the batches each."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree_and_split_the_batches(tmp_path):
    launcher = Path(sys.executable).with_name("accelerate")
    if not launcher.exists():
        launcher = shutil.which("accelerate")
    assert launcher, "the accelerate CLI is part of the pinned environment"
    env = dict(os.environ, ACCELERATE_USE_CPU="true", OMP_NUM_THREADS="1",
               TOKENIZERS_PARALLELISM="false")
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), str(HERE / "ddp_worker.py"), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["sha"] == ranks[1]["sha"], "ranks ended with different weights"
    # 64 examples, batch 8, 2 epochs = 16 batches: 8 per rank, 4 optimiser steps per epoch
    assert ranks[0]["batches"] == ranks[1]["batches"] == 8
    assert ranks[0]["steps"] == ranks[1]["steps"] == 8
    first_epoch = [set(r["examples"][:32]) for r in ranks]
    assert first_epoch[0].isdisjoint(first_epoch[1])
    assert first_epoch[0] | first_epoch[1] == set(range(64))
