"""`reclmis train --recipe` end to end on a few tiny synthetic images (CPU, seconds)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
# The reference recipe on the tiny preset's model, at CPU-test size.
TINY = ["--preset", "tiny", "--batch-size", "4", "--set", "model.image_size=32", "--deterministic", "--device", "cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    out = tmp_path_factory.mktemp("syn") / "data"
    write_synthetic(out, SyntheticConfig(n_train=8, n_val=4, n_test=2, size=64, seed=7), workers=1)
    return out


def test_train_with_the_reference_recipe_records_it(data_dir, tmp_path):
    run = tmp_path / "ref"
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--recipe", "reference-qata", "--epochs", "2",
                              "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert (cfg["recipe"], cfg["preset"]) == ("reference-qata", "tiny")
    assert (cfg["loss"]["dice"], cfg["loss"]["bce"], cfg["loss"]["dice_denominator"]) == (0.5, 0.5, "squared")
    assert (cfg["train"]["scheduler"], cfg["train"]["weight_decay"], cfg["train"]["patience"]) == (
        "cosine-restarts", 0.0, 101)
    assert cfg["train"]["batch_size"] == 4 and cfg["train"]["epochs"] == 2  # flags win over the recipe
    assert (cfg["model"]["recon_layers"], cfg["model"]["cvr_loss_condition"], cfg["model"]["ccl_weights"]) == (
        4, False, "reference")
    # the lr of each epoch is torch's CosineAnnealingWarmRestarts(T_0=10, eta_min=1e-4) stepped per epoch
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=3e-4)
    ref = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(opt, T_0=10, eta_min=1e-4)
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    for row in rows:
        assert float(row["lr"]) == pytest.approx(ref.get_last_lr()[0], rel=1e-5)
        opt.step()
        ref.step()
    # the run resumes with its recipe (named short) and a longer budget
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--recipe", "reference", "--epochs", "3",
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert len(rows) == 3 and float(rows[2]["lr"]) == pytest.approx(ref.get_last_lr()[0], rel=1e-5)
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--recipe", "paper-qata", "--device", "cpu"])
    assert res.exit_code == 2 and "recipe" in res.output


@pytest.mark.parametrize("args, message", [
    (["--recipe", "reference"], "name it in full: reference-mosmed, reference-qata"),
    (["--recipe", "referenc-qata"], "Did you mean 'reference-qata'"),
    (["--set", "recipe=reference-qata"], "--recipe NAME"),
])
def test_bad_recipe_is_one_line_and_exit_2(data_dir, tmp_path, args, message):
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--out", str(tmp_path / "r"), *args, *TINY])
    assert res.exit_code == 2, res.output
    assert message in res.output and len(res.output.strip().splitlines()) == 1, res.output


def test_short_recipe_name_with_a_registered_dataset(data_dir, tmp_path, monkeypatch):
    root = tmp_path / "registered"
    root.mkdir()
    (root / "mosmed").symlink_to(data_dir.resolve(), target_is_directory=True)
    monkeypatch.setenv("RECLMIS_DATA", str(root))
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "--dataset", "mosmed", "--recipe", "reference", "--epochs", "1", *TINY])
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((tmp_path / "runs" / "mosmed-tiny-reference" / "config.yaml").read_text())
    assert (cfg["recipe"], cfg["train"]["scheduler"], cfg["model"]["interest_dropout"]) == (
        "reference-mosmed", "exponential", 0.5)
