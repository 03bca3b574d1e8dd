"""Profiles, device choice, seeding and paths: one contract for notebooks, the CLI and tests.

A *profile* says how big an experiment is allowed to be:

* ``quick`` (default) - 2 CPU cores, offline, seeded subsets, the offline MiniLM teacher.
* ``full``  - a GPU with internet: all the data, a hub teacher such as ``bert-base-uncased``.
* ``bench`` - CPU, offline, full training sets; used by ``ktlab run ... --profile bench``.

Environment variables override the defaults: ``KTLAB_PROFILE``, ``KTLAB_DATA_DIR``,
``KTLAB_TEACHER``, ``KTLAB_SEED`` (and ``KTLAB_DEVICE`` to force a device).
"""
from __future__ import annotations

import dataclasses
import os
import random
import sys
from pathlib import Path
from typing import Optional

import numpy as np

PROFILES = ("quick", "full", "bench")


@dataclasses.dataclass(frozen=True)
class ProfileSizes:
    """How many examples each experiment may use (``None`` = the whole split)."""

    sst2_train: Optional[int]
    sst2_dev: Optional[int]
    conll_train: Optional[int]
    conll_eval: Optional[int]
    max_length: int
    epochs: int
    batch_size: int


PROFILE_SIZES = {
    "quick": ProfileSizes(sst2_train=2000, sst2_dev=872, conll_train=1500, conll_eval=500,
                          max_length=64, epochs=1, batch_size=32),
    "full": ProfileSizes(sst2_train=None, sst2_dev=None, conll_train=None, conll_eval=None,
                         max_length=128, epochs=3, batch_size=32),
    "bench": ProfileSizes(sst2_train=None, sst2_dev=None, conll_train=None, conll_eval=None,
                          max_length=64, epochs=2, batch_size=32),
}

DEFAULT_TEACHERS = {"quick": "minilm", "full": "bert-base-uncased", "bench": "minilm"}


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything an experiment needs to know about where and how big it runs."""

    profile: str
    teacher: str
    seed: int
    device: str
    data_dir: Optional[Path]
    sizes: ProfileSizes

    def summary(self) -> str:
        data = str(self.data_dir) if self.data_dir else "Hugging Face hub (no KTLAB_DATA_DIR)"
        return (f"ktlab profile={self.profile} device={self.device} teacher={self.teacher} "
                f"seed={self.seed} data={data}")


class DeviceError(RuntimeError):
    """The device asked for (``KTLAB_DEVICE`` or ``device=``) does not exist on this machine."""


def pick_device(override: Optional[str] = None) -> str:
    """cuda > mps > cpu, unless ``override`` or ``KTLAB_DEVICE`` names one.

    A named device that this machine lacks is a :class:`DeviceError` whose one-line message
    names where the request came from and the fix (never a silent fallback to the CPU)."""
    import torch

    env = os.environ.get("KTLAB_DEVICE", "").strip()
    choice = (override or env).strip()
    if choice:
        where = f"device={choice!r}" if override else f"KTLAB_DEVICE={choice}"
        fix = ("pass device='cpu' (or no device: ktlab then picks cuda > mps > cpu itself)"
               if override else "unset KTLAB_DEVICE (ktlab then picks cuda > mps > cpu itself) "
               "or set KTLAB_DEVICE=cpu")
        try:
            kind = torch.device(choice).type
        except (RuntimeError, ValueError):
            raise DeviceError(f"{where} is not a torch device name; use cpu, cuda, cuda:N or "
                              f"mps - or {fix}") from None
        if kind == "cuda":
            if not torch.cuda.is_available():
                why = ("a CPU-only build" if torch.version.cuda is None
                       else "no GPU or driver found")
                raise DeviceError(f"{where} asks for a CUDA GPU, but CUDA is not available on "
                                  f"this machine (torch {torch.__version__}: {why}); fix: {fix}")
            index, count = torch.device(choice).index, torch.cuda.device_count()
            if index is not None and index >= count:
                raise DeviceError(f"{where} asks for GPU {index}, but this machine has {count} "
                                  f"(cuda:0 to cuda:{count - 1}); fix: {fix}")
        elif kind == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise DeviceError(f"{where} asks for Apple's MPS, but it is not available on "
                                  f"this machine; fix: {fix}")
        elif kind != "cpu":
            raise DeviceError(f"{where}: ktlab runs on cpu, cuda[:N] or mps, not {kind!r}; "
                              f"fix: {fix}")
        return choice
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def default_data_dir() -> Optional[Path]:
    """The offline mirror named by ``KTLAB_DATA_DIR`` (``None`` means: use the Hugging Face hub).

    It is explicit on purpose: a classroom sets it once (the Makefile does when ``../shared/data``
    exists) and every notebook, test and CLI command then reads the same files."""
    env = os.environ.get("KTLAB_DATA_DIR")
    if env:
        return Path(env).expanduser().resolve()
    return None


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA). Call it *before* creating or loading models:
    new classification heads draw their initial weights from the global RNG."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def _in_notebook() -> bool:
    return "ipykernel" in sys.modules


def load(profile: Optional[str] = None, *, teacher: Optional[str] = None, seed: Optional[int] = None,
         device: Optional[str] = None, data_dir: Optional[str | Path] = None,
         verbose: Optional[bool] = None) -> Config:
    """Build the :class:`Config` from arguments, then environment variables, then defaults.

    In a notebook it prints a one-line summary so the reader sees where the run happens.
    """
    profile = profile or os.environ.get("KTLAB_PROFILE", "quick")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)} "
                         "(argument or KTLAB_PROFILE)")
    teacher = teacher or os.environ.get("KTLAB_TEACHER") or DEFAULT_TEACHERS[profile]
    if seed is None:
        raw = os.environ.get("KTLAB_SEED", "0")
        try:
            seed = int(raw)
        except ValueError:
            raise ValueError(f"KTLAB_SEED must be an integer, got {raw!r}") from None
    resolved_dir = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    cfg = Config(profile=profile, teacher=teacher, seed=seed, device=pick_device(device),
                 data_dir=resolved_dir, sizes=PROFILE_SIZES[profile])
    if verbose or (verbose is None and _in_notebook()):
        print(cfg.summary())
    return cfg
