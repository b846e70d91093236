"""`reclmis export` and `reclmis bench` through the CLI on the tiny preset."""

from __future__ import annotations

import json

import torch
from typer.testing import CliRunner

from reclmis_cli.main import app
from reclmis_core.config import build_config
from reclmis_core.engine.checkpoint import save_checkpoint
from reclmis_core.export import SAMPLE_NOTES
from reclmis_core.models import build_model

runner = CliRunner()


def _ckpt(tmp_path):
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    return save_checkpoint(build_model(cfg.model, corpus=SAMPLE_NOTES), cfg, tmp_path / "run" / "best")


def test_export_safetensors_verify(tmp_path):
    ckpt = _ckpt(tmp_path)
    out = tmp_path / "exp"
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(out),
                                 "--verify"])
    assert result.exit_code == 0, result.output
    assert "passed" in result.output and (out / "model.safetensors").is_file()


def test_export_bad_input_is_one_line_exit_2(tmp_path):
    result = runner.invoke(app, ["export", "--checkpoint", str(tmp_path / "nope"), "--format", "onnx",
                                 "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "not found" in result.output and "Traceback" not in result.output
    ckpt = _ckpt(tmp_path)
    result = runner.invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "tflite", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "onnx" in result.output


def test_bench_tiny_json(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", "--preset", "tiny", "--backends", "eager", "--batch-sizes", "1",
                                 "--no-latency", "--train-batch", "0", "--json", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("params_total_m", "params_trainable_m", "params_infer_m", "params_text_encoder_m", "gmacs_infer",
                "gflops_infer", "gmacs_infer_with_text", "gflops_infer_with_text", "gmacs_train_fwd", "latency",
                "train_images_per_s", "device_name", "torch_version"):
        assert key in data
    assert data["latency"] == [] and "Table II" in result.output


def test_bench_bad_batch_sizes_exit_2():
    result = runner.invoke(app, ["bench", "--preset", "tiny", "--batch-sizes", "one"])
    assert result.exit_code == 2 and "--batch-sizes" in result.output
