"""`reclmis train` / `reclmis eval` end to end on a few tiny synthetic images (CPU, seconds)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
TINY = ["--preset", "tiny", "--batch-size", "4", "--set", "model.image_size=32", "--deterministic", "--cpu"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    out = tmp_path_factory.mktemp("syn") / "data"
    write_synthetic(out, SyntheticConfig(n_train=8, n_val=4, n_test=6, size=64, seed=5), workers=1)
    return out


@pytest.fixture(scope="module")
def run_dir(data_dir, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "r1"
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--epochs", "2", "--out", str(run), *TINY])
    assert res.exit_code == 0, res.output
    return run


def test_train_writes_the_run_folder(run_dir, data_dir):
    for name in ("config.yaml", "metrics.csv", "best/model.safetensors", "best/config.json",
                 "last/model.safetensors", "last/config.json", "last/state/trainer_state.json",
                 "last/state/optimizer.bin", "best/state/trainer_state.json"):
        assert (run_dir / name).is_file(), name
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    for col in ("loss", "seg_loss", "dice_loss", "bce_loss", "clr_loss", "cvr_loss", "ccl_loss", "val_dice",
                "val_miou", "lr", "seconds"):
        assert col in rows[0], col
    assert "dice" not in rows[0] and "seg" not in rows[0]  # losses are named as losses
    summary = json.loads((run_dir / "results.json").read_text())
    assert summary["epochs_done"] == 2 and 1 <= summary["best_epoch"] <= 2 and len(summary["history"]) == 2
    assert "dice_loss" in summary["last_losses"]
    from PIL import Image

    assert Image.open(run_dir / "results.png").size == (1000, 420)
    import yaml

    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["model"]["text"]["max_length"] > 0  # resolved from the training notes
    assert cfg["data"]["root"] == str(data_dir.resolve())
    # an existing run is never overwritten silently
    res = runner.invoke(app, ["train", "--data", str(data_dir), "--epochs", "1", "--out", str(run_dir), *TINY])
    assert res.exit_code == 2 and "--exist-ok" in res.output


def _all_foreground(src: Path, dest: Path) -> None:
    """A copy of the checkpoint whose head predicts foreground everywhere (known Dice)."""
    from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint

    model, cfg, doc = load_checkpoint(src)
    with torch.no_grad():
        model.seg.head.weight.zero_()
        model.seg.head.bias.fill_(10.0)
    save_checkpoint(model, cfg, dest, doc["meta"])


def test_eval_json_and_known_dice(run_dir, data_dir, tmp_path):
    ckpt = tmp_path / "allfg"
    _all_foreground(run_dir / "best", ckpt)
    out_json, out_csv = tmp_path / "e.json", tmp_path / "e.csv"
    res = runner.invoke(app, ["eval", "--checkpoint", str(ckpt), "--data", str(data_dir), "--split", "test",
                              "--json", str(out_json), "--per-image", str(out_csv)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out_json.read_text())
    for key in ("dice", "miou", "dice_global", "iou_global", "n_images", "split", "checkpoint", "text"):
        assert key in doc, key
    assert doc["split"] == "test" and doc["text"] == "as-is" and doc["n_images"] == 6
    # all-foreground prediction: Dice = 2|T| / (|T| + N), IoU = |T| / N per image (masks at 32 px, nearest)
    from reclmis_core.data.dataset import read_manifest

    man = read_manifest(data_dir)
    dice, iou, tp = [], [], 0.0
    for path in man.loc[man["split"] == "test", "mask"]:
        m = np.asarray(Image.open(path).convert("L").resize((32, 32), Image.Resampling.NEAREST)) > 0
        t, n = m.sum(), m.size
        dice.append(2 * t / (t + n))
        iou.append(t / n)
        tp += t
    assert doc["dice"] == pytest.approx(np.mean(dice), abs=1e-6)
    assert doc["miou"] == pytest.approx(np.mean(iou), abs=1e-6)
    assert doc["dice_global"] == pytest.approx(2 * tp / (tp + 6 * 32 * 32), abs=1e-6)
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == 6 and set(rows[0]) >= {"id", "note", "dice", "iou", "fg_pred", "fg_true"}
    assert all(float(r["fg_pred"]) == 1.0 for r in rows)
    # leakage (synthetic data carries lesion_labels): foreground everywhere leaks every unnamed lesion
    assert doc["n_counterfactual"] > 0 and 0.0 <= doc["dice_counterfactual"] <= 1.0
    # pair leakage needs no zone labels: a mask of everything covers every lesion of both notes
    assert doc["n_pairs"] == doc["n_counterfactual"] // 2
    assert doc["pair_leakage"] == 1.0 and doc["pair_named_recall"] == 1.0
    n_same, n_other = doc["n_unnamed_lesions_named_side"], doc["n_unnamed_lesions_other_side"]
    assert n_same + n_other > 0
    if n_same:
        assert doc["leak_named_side_unnamed_level"] == 1.0
    if n_other:
        assert doc["leak_other_side"] == 1.0


def test_eval_text_shuffle_changes_the_notes(run_dir, data_dir, tmp_path):
    out_json, out_csv = tmp_path / "s.json", tmp_path / "s.csv"
    res = runner.invoke(app, ["eval", "--checkpoint", str(run_dir / "best"), "--data", str(data_dir),
                              "--text", "shuffle", "--json", str(out_json), "--per-image", str(out_csv)])
    assert res.exit_code == 0, res.output
    assert "reliance test" in res.output
    doc = json.loads(out_json.read_text())
    assert doc["text"] == "shuffle" and "dice_drop" in doc and "dice_as_is" in doc
    rows = list(csv.DictReader(out_csv.open()))
    assert all(r["note"] != r["original_note"] for r in rows)
    assert sorted(r["note"] for r in rows) == sorted(r["original_note"] for r in rows)
    res = runner.invoke(app, ["eval", "--checkpoint", str(run_dir / "best"), "--data", str(data_dir),
                              "--text", "empty", "--per-image", str(out_csv)])
    assert res.exit_code == 0, res.output
    assert all(r["note"] == "" for r in csv.DictReader(out_csv.open()))
    res = runner.invoke(app, ["eval", "--checkpoint", str(run_dir / "best"), "--data", str(data_dir),
                              "--text", "reverse"])
    assert res.exit_code == 2 and "as-is" in res.output


def test_resume_continues_the_cli_run(run_dir, data_dir, tmp_path):
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--epochs", "3", "--deterministic", "--cpu"])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--lr", "0.5"])
    assert res.exit_code == 2 and "train.lr" in res.output


def test_resumed_epoch_is_best_only_if_it_beats_the_saved_best(run_dir, tmp_path):
    """Issue 15: the console marked the first resumed epoch "best" (it started from no best at all)."""
    run = tmp_path / "r"
    shutil.copytree(run_dir, run)
    state_file = run / "last" / "state" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["best_dice"] = 1.5  # no epoch can beat it (Dice <= 1): the resumed epoch is not the best
    state_file.write_text(json.dumps(state))
    res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--epochs", "3", "--deterministic", "--cpu"])
    assert res.exit_code == 0, res.output
    (row,) = [line for line in res.output.splitlines() if line.startswith("epoch 3/3 ") and "val_dice" in line]
    assert "[best]" not in row
    summary = json.loads((run / "results.json").read_text())
    assert summary["best_epoch"] == state["best_epoch"] != 3


_RANK_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import torch.distributed as dist
    from safetensors.torch import save_file
    from reclmis_core.config import build_config
    from reclmis_core.engine.trainer import Trainer

    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    cfg = build_config("tiny", overrides={"model": {"image_size": 32},
                                          "train": {"epochs": 2, "batch_size": 2, "deterministic": True}})
    t = Trainer(cfg, data, out / "run", cpu=True)
    t.fit()
    acc = t.accelerator
    model = acc.unwrap_model(t.model)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    save_file(state, str(out / f"rank{acc.process_index}.safetensors"),
              metadata={"world": str(acc.num_processes), "backend": dist.get_backend()})
""")


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")
def test_two_process_cpu_run_keeps_ranks_identical(data_dir, tmp_path):
    script = tmp_path / "rank_train.py"
    script.write_text(_RANK_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
         str(data_dir), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    from safetensors import safe_open

    with safe_open(str(tmp_path / "rank0.safetensors"), "pt") as fh:
        meta = fh.metadata()
    assert meta["world"] == "2" and meta["backend"] == "gloo"
    a, b = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # and the ranks really trained: weights moved away from the checkpoint of epoch 0 (= init) ...
    assert (tmp_path / "run" / "best" / "model.safetensors").is_file()
    assert len(list((tmp_path / "run" / "last" / "state").glob("random_states_*.pkl"))) == 2
