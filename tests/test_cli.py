"""The `ktlab` command: env and data sub-commands, exit codes and readable problems."""
import subprocess
import sys

from ktlab.cli import main


def test_env_ok_with_mirror(data_dir, capsys, monkeypatch):
    monkeypatch.setenv("KTLAB_DATA_DIR", str(data_dir))
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    assert "torch" in out and "sst2/train" in out and "all good" in out


def test_env_lists_problems_without_data(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("KTLAB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("KTLAB_TEACHER", "no-such-org/bert")
    assert main(["env"]) == 1
    out = capsys.readouterr().out
    assert "3 problem(s)" in out
    assert "unknown teacher" in out and "ktlab data download" in out


def test_data_verify(data_dir, capsys, tmp_path):
    assert main(["data", "verify", str(data_dir)]) == 0
    assert "67,349" in capsys.readouterr().out
    assert main(["data", "verify", str(tmp_path)]) == 1
    assert "missing" in capsys.readouterr().out


def test_download_offline_is_refused(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert main(["data", "download", "--to", str(tmp_path / "m")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and "needs the Hugging Face hub" in err
    assert "Traceback" not in err


def test_console_entry_point_runs():
    proc = subprocess.run([sys.executable, "-m", "ktlab.cli", "--help"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "env" in proc.stdout
