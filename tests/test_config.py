import pytest

from ktlab import config


def test_defaults_quick_profile(monkeypatch):
    for var in ("KTLAB_PROFILE", "KTLAB_TEACHER", "KTLAB_SEED", "KTLAB_DEVICE"):
        monkeypatch.delenv(var, raising=False)
    cfg = config.load(verbose=False)
    assert cfg.profile == "quick"
    assert cfg.teacher == "minilm"
    assert cfg.seed == 0
    assert cfg.device == "cpu"
    assert cfg.sizes.sst2_train == 2000


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("KTLAB_PROFILE", "full")
    monkeypatch.setenv("KTLAB_SEED", "7")
    monkeypatch.setenv("KTLAB_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("KTLAB_TEACHER", raising=False)
    cfg = config.load(verbose=False)
    assert (cfg.profile, cfg.seed, cfg.data_dir) == ("full", 7, tmp_path.resolve())
    assert cfg.teacher == "bert-base-uncased"
    assert cfg.sizes.sst2_train is None
    monkeypatch.setenv("KTLAB_TEACHER", "some/model")
    assert config.load(verbose=False).teacher == "some/model"
    # explicit arguments beat the environment
    assert config.load("bench", teacher="minilm", verbose=False).teacher == "minilm"


def test_bad_profile_and_seed(monkeypatch):
    with pytest.raises(ValueError, match="unknown profile 'fast'"):
        config.load("fast", verbose=False)
    monkeypatch.setenv("KTLAB_SEED", "abc")
    with pytest.raises(ValueError, match="KTLAB_SEED must be an integer"):
        config.load(verbose=False)


def test_device_override(monkeypatch):
    monkeypatch.setenv("KTLAB_DEVICE", "cpu")
    assert config.pick_device() == "cpu"
    import torch
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            config.pick_device("cuda")


def test_seed_everything_repeats_all_rngs():
    import random

    import numpy as np
    import torch

    config.seed_everything(3)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    config.seed_everything(3)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_summary_printed_when_verbose(capsys):
    cfg = config.load("quick", verbose=True)
    out = capsys.readouterr().out
    assert out.strip() == cfg.summary()
    assert "profile=quick" in out and "teacher=minilm" in out
