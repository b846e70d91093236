"""The fast paths through the CLI: `export --int8 --calib`, `predict --backend onnx` on it, `predict --precision`,
and the GPU check script's CPU dry run (one JSON)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from reclmis_cli.main import app
from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import save_checkpoint
from reclmis_core.export import SAMPLE_NOTES
from reclmis_core.models import build_model

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[2]


def _ckpt(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    return save_checkpoint(build_model(cfg.model, corpus=SAMPLE_NOTES), cfg, tmp_path / "run" / "best")


def _png(path: Path) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 36), dtype=np.uint8)).save(path)
    return path


def test_int8_export_calibrated_on_data_then_predict(tmp_path):
    pytest.importorskip("onnxruntime")
    ckpt = _ckpt(tmp_path)
    data = tmp_path / "data"
    res = runner.invoke(app, ["-q", "prepare", "--synthetic", "--out", str(data), "--n-train", "6", "--n-val", "2",
                              "--n-test", "2", "--size", "32", "--seed", "0"])
    assert res.exit_code == 0, res.output
    out = tmp_path / "int8"
    res = runner.invoke(app, ["export", "-c", str(ckpt), "-f", "onnx", "-o", str(out), "--int8", "--calib", str(data),
                              "--calib-images", "4", "--verify", "--int8-min-dice", "0"])
    assert res.exit_code == 0, res.output
    assert "int8 vs fp32" in res.output and "mask Dice" in res.output
    q = json.loads((out / "reclmis_export.json").read_text())["quantization"]
    assert q["n_calibration_images"] == 4 and "train split" in q["calibration"]
    img = _png(tmp_path / "x.png")
    pred = tmp_path / "pred"
    res = runner.invoke(app, ["predict", str(img), "--note", SAMPLE_NOTES[0], "--backend", "onnx", "-c", str(out),
                              "-o", str(pred)])
    assert res.exit_code == 0, res.output
    doc = json.loads((pred / "predictions.json").read_text())
    assert doc["precision"] == "int8" and doc["runtime"].startswith("ONNX Runtime int8")
    assert (pred / "x_mask.png").is_file()


def test_int8_and_precision_usage_errors_are_one_line_exit_2(tmp_path):
    ckpt = _ckpt(tmp_path)
    img = _png(tmp_path / "x.png")
    cases = [
        (["export", "-c", str(ckpt), "-f", "safetensors", "-o", str(tmp_path / "e"), "--int8"], "--format onnx"),
        (["export", "-c", str(ckpt), "-f", "onnx", "-o", str(tmp_path / "e"), "--int8", "--calib",
          str(tmp_path / "missing")], "not found"),
        (["predict", str(img), "--note", "x", "-c", str(ckpt), "--precision", "fp16"], "CUDA only"),
        (["predict", str(img), "--note", "x", "-c", str(ckpt), "--precision", "half"], "--precision must be one of"),
        (["predict", str(img), "--note", "x", "-c", str(ckpt), "--backend", "onnx", "--precision", "bf16"],
         "for --backend torch"),
        (["predict", str(img), "--note", "x", "-c", str(ckpt), "--workers", "-1"], "--workers must be >= 0"),
    ]
    for args, message in cases:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        assert message in res.output and "Traceback" not in res.output, (args, res.output)
    assert not (tmp_path / "e").exists()


def test_gpu_check_dry_run_writes_one_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--dry-run", str(out)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["dry_run"] is True and set(doc["steps"]) == {"env", "latency"}
    assert all(s["rc"] == 0 for s in doc["steps"].values())
    rows = {(r["backend"], r["batch"], r["status"]) for r in doc["bench"]["latency"]}
    assert ("eager", 1, "ok") in rows and ("eager", 4, "ok") in rows
    assert ("eager-fp16", 0, "skipped") in rows  # CUDA only: skipped on the CPU, with its reason
    assert doc["summary"]["best_batch1"]["backend"] == "eager" and doc["summary"]["goal_met"] is None
    assert doc["env"]["reclmis"]
