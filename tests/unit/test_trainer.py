"""Trainer and evaluator units: note shuffling, LR schedule, exact resume, non-finite policy."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from reclmis_core.config import build_config
from reclmis_core.engine.evaluator import notes_for_mode, shuffled_notes
from reclmis_core.config import TrainConfig
from reclmis_core.engine.schedule import build_lr_schedule
from reclmis_core.engine.trainer import Trainer
from reclmis_core.errors import ConfigError, NonFiniteLossError


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    out = tmp_path_factory.mktemp("syn") / "data"
    write_synthetic(out, SyntheticConfig(n_train=8, n_val=4, n_test=4, size=64, seed=3), workers=1)
    return out


def _cfg(epochs: int = 2, **train):
    return build_config("tiny", overrides={
        "model": {"image_size": 32},
        "train": {"epochs": epochs, "batch_size": 4, "deterministic": True, **train},
    })


def test_shuffle_is_a_seeded_derangement():
    notes = [f"note {i % 3}" for i in range(9)]
    a, b = shuffled_notes(notes, seed=1), shuffled_notes(notes, seed=1)
    assert a == b
    assert sorted(a) == sorted(notes)  # a permutation of the notes
    assert all(x != y for x, y in zip(a, notes))  # every image gets a note with other text
    assert shuffled_notes(notes, seed=2) != a or len(set(notes)) < 3
    distinct = [f"n{i}" for i in range(5)]
    assert all(x != y for x, y in zip(shuffled_notes(distinct, 0), distinct))
    same = ["x"] * 4  # cannot differ in text; still a permutation
    assert shuffled_notes(same, 0) == same
    assert notes_for_mode(["a", "b"], "empty") == ["", ""]
    with pytest.raises(ConfigError):
        notes_for_mode(["a"], "reverse")


def test_cosine_schedule_and_warmup():
    """transformers' schedules: warm-up from 0 (step / warmup), then cosine to 0 at ``total``."""
    import torch

    def factor(kind: str, total: int, warmup: int):  # one step per epoch: total steps = epochs
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        cfg = TrainConfig(epochs=total, scheduler=kind, warmup_epochs=warmup)
        return build_lr_schedule(opt, cfg, steps_per_epoch=1).lr_lambdas[0]

    f = factor("cosine", total=10, warmup=0)
    assert f(0) == 1.0 and math.isclose(f(5), 0.5) and f(10) == pytest.approx(0.0)
    g = factor("cosine", total=10, warmup=2)
    assert g(0) == 0.0 and g(1) == 0.5 and g(2) == 1.0
    assert factor("constant", 10, 0)(7) == 1.0


class _Interrupted(Trainer):
    """Stops after epoch 1 as if the process had been killed after writing last/."""

    def on_epoch_end(self, epoch, record):
        super().on_epoch_end(epoch, record)
        return epoch >= 1


@pytest.mark.parametrize("scheduler", ["cosine", "cosine-restarts"])
def test_resume_ends_with_identical_weights(data_dir, tmp_path, scheduler):
    # cosine-restarts (the reference recipe's, per epoch): epoch 2 runs at a lower lr than epoch 1
    sched = {"scheduler": scheduler, "restart_epochs": 3}
    full = Trainer(_cfg(**sched), data_dir, tmp_path / "full").fit()
    assert full.epochs_done == 2
    _Interrupted(_cfg(**sched), data_dir, tmp_path / "resumed").fit()
    assert load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))  # epoch-1 checkpoint exists
    resumed = Trainer(_cfg(**sched), data_dir, tmp_path / "resumed", resume=True).fit()
    assert resumed.epochs_done == 2
    a = load_file(str(tmp_path / "full" / "last" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "last" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    rows_full = (tmp_path / "full" / "metrics.csv").read_text().splitlines()
    rows_res = (tmp_path / "resumed" / "metrics.csv").read_text().splitlines()
    assert len(rows_res) == 3
    # identical losses and val scores per epoch (the seconds column differs)
    assert [r.split(",")[:-1] for r in rows_full] == [r.split(",")[:-1] for r in rows_res]
    if scheduler == "cosine-restarts":  # lr column: the rate each epoch ran at, 1e-3 then the cosine's second step
        lrs = [float(r.split(",")[-2]) for r in rows_res[1:]]
        assert lrs == pytest.approx([1e-3, 1e-4 + 9e-4 * (1 + math.cos(math.pi / 3)) / 2], rel=1e-5)


def test_existing_run_is_not_overwritten(data_dir, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("x: 1\n")
    with pytest.raises(ConfigError, match="--exist-ok"):
        Trainer(_cfg(1), data_dir, tmp_path / "run")


class _NaN(Trainer):
    def setup(self):
        super().setup()
        real = self.objective

        def broken(out, masks, scale, *groups):
            parts = real(out, masks, scale, *groups)
            parts["loss"] = parts["loss"] * float("nan")
            return parts

        self.objective = broken


def test_nonfinite_loss_stops_or_skips(data_dir, tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1, step 1"):
        _NaN(_cfg(1), data_dir, tmp_path / "stop").fit()
    res = _NaN(_cfg(1, on_nonfinite="skip"), data_dir, tmp_path / "skip").fit()
    assert res.skipped_steps == 2  # 8 images / batch 4


def test_mixed_precision_on_cpu(data_dir, tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="fp16 needs a CUDA GPU"):
            Trainer(_cfg(1, mixed_precision="fp16", deterministic=False), data_dir, tmp_path / "fp16").fit()
    res = Trainer(_cfg(1, mixed_precision="bf16", deterministic=False), data_dir, tmp_path / "bf16", cpu=True).fit()
    assert res.epochs_done == 1 and math.isfinite(res.history[0]["loss"])
