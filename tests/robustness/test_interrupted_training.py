"""Interrupted and faulty training through the CLI.

``kill -9`` of a real ``reclmis train`` process (in the middle of an epoch, and while ``last/`` is being written)
must leave a loadable ``last/`` checkpoint, and ``--resume`` must then end, in deterministic CPU mode, with
weights identical to an uninterrupted run. A NaN batch stops the run with one clear line (or is skipped and
counted with ``train.on_nonfinite=skip``), never silently.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from reclmis_cli.main import app
from reclmis_core.engine.checkpoint import load_checkpoint

runner = CliRunner()
EPOCHS = 2
TINY = ["--preset", "tiny", "--batch-size", "2", "--set", "model.image_size=32", "--deterministic", "--cpu",
        "--seed", "0", "--epochs", str(EPOCHS), "--quiet"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    out = tmp_path_factory.mktemp("rb_train") / "data"
    write_synthetic(out, SyntheticConfig(n_train=4, n_val=2, n_test=2, size=64, seed=3), workers=1)
    return out


@pytest.fixture(scope="module")
def reference(data_dir, tmp_path_factory) -> dict[str, torch.Tensor]:
    """Final weights of an uninterrupted run with the same settings."""
    run = tmp_path_factory.mktemp("rb_ref") / "run"
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    return load_file(str(run / "last" / "model.safetensors"))


def _epochs_done(run: Path) -> int:
    path = run / "metrics.csv"
    if not path.is_file():
        return 0
    with path.open() as fh:
        return sum(1 for _ in csv.DictReader(fh))


def _start(data_dir: Path, run: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "reclmis_cli.main", "train", "--data", str(data_dir), "--out", str(run), *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ.copy())


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240.0, poll: float = 0.002) -> None:
    """SIGKILL ``proc`` (our own child, by its pid) as soon as ``ready()`` is true."""
    t0 = time.monotonic()
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"training ended before the kill point: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() - t0 > timeout:
                pytest.fail("kill point not reached in time")
            time.sleep(poll)
        proc.kill()
    finally:
        proc.wait(30)
    assert proc.returncode == -9


def _resume_and_compare(run: Path, reference: dict[str, torch.Tensor]) -> None:
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--deterministic", "--cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "Traceback" not in res.output
    assert _epochs_done(run) == EPOCHS
    final = load_file(str(run / "last" / "model.safetensors"))
    assert final.keys() == reference.keys()
    for k in reference:
        assert torch.equal(final[k], reference[k]), k
    assert not list(run.glob(".last.*")), "temporary checkpoint folders left behind"


@pytest.fixture(scope="module")
def killed_mid_epoch(data_dir, tmp_path_factory) -> Path:
    """A run folder whose training process got SIGKILL right after epoch 1 was written, inside epoch 2."""
    run = tmp_path_factory.mktemp("rb_killed") / "run"
    proc = _start(data_dir, run)
    _kill_when(proc, lambda: _epochs_done(run) >= 1)
    assert _epochs_done(run) == 1, "the kill must land inside epoch 2"
    return run


def test_kill_mid_epoch_then_resume_is_exact(killed_mid_epoch, reference, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, run)
    model, cfg, doc = load_checkpoint(run / "last")  # the last checkpoint stays loadable
    assert doc["meta"]["epoch"] == 1 and cfg.model.image_size == 32
    _resume_and_compare(run, reference)


def test_kill_during_checkpoint_write_then_resume_is_exact(data_dir, reference, tmp_path):
    run = tmp_path / "run"
    tmp = run / ".last.tmp"
    proc = _start(data_dir, run)
    # the second write of last/ (after epoch 2), so the epoch-1 checkpoint is what must survive
    _kill_when(proc, lambda: _epochs_done(run) >= 1 and tmp.exists())
    assert tmp.is_dir(), "the kill must land while .last.tmp is being written"
    _, _, doc = load_checkpoint(run / "last")  # the previous checkpoint is untouched and loads
    assert doc["meta"]["epoch"] == 1
    _resume_and_compare(run, reference)


def test_kill_between_the_two_renames_is_recovered(killed_mid_epoch, reference, tmp_path):
    """The narrow window of ``replace_folder``: last/ already moved aside, the new copy not yet in place."""
    run = tmp_path / "run"
    shutil.copytree(killed_mid_epoch, run)
    os.replace(run / "last", run / ".last.old-12345")  # exactly what a kill after the first rename leaves
    _resume_and_compare(run, reference)


def test_nan_batch_stops_with_one_line_or_is_counted(data_dir, tmp_path, monkeypatch):
    from reclmis_core.data.dataset import ManifestDataset

    real = ManifestDataset.__getitem__

    def corrupted(self, index):  # one corrupted image in every epoch
        item = real(self, index)
        if self.split == "train" and index == 0:
            item["image"] = item["image"] * float("nan")
        return item

    monkeypatch.setattr(ManifestDataset, "__getitem__", corrupted)
    base = ["train", "--data", str(data_dir), "--preset", "tiny", "--batch-size", "2", "--set",
            "model.image_size=32", "--cpu", "--epochs", "1"]
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "stop")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert sum(line.startswith("error:") for line in res.output.splitlines()) == 1, res.output
    assert "non-finite loss at epoch 1" in res.output and "on_nonfinite=skip" in res.output
    res = runner.invoke(app, [*base, "--out", str(tmp_path / "skip"), "--set", "train.on_nonfinite=skip"])
    assert res.exit_code == 0, res.output
    assert "skipped step" in res.output  # counted and reported, not silent
    with (tmp_path / "skip" / "metrics.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 1 and math.isfinite(float(rows[0]["loss"]))
