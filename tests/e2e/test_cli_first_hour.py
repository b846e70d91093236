"""A newcomer's first hour: fast help, one spelling of the common options, and one clear line (exit 2) for each
mistake, before any expensive work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
COMMANDS = ("prepare", "train", "eval", "predict", "export", "bench", "env", "convert-clip")
NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def _one_error(res, *needles: str) -> str:  # noqa: ANN001 - click Result
    assert res.exit_code == 2, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1, res.output
    assert "Traceback" not in res.output
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    root = tmp_path_factory.mktemp("first_hour")
    return save_checkpoint(build_model(cfg.model, corpus=[NOTE] * 3), cfg, root / "runs" / "tiny" / "best")


@pytest.fixture
def png(tmp_path) -> Path:
    path = tmp_path / "xray.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), dtype=np.uint8)).save(path)
    return path


# -- help -------------------------------------------------------------------------------------------


def test_importing_the_cli_does_not_import_torch_pandas_or_transformers():
    code = ("import sys, reclmis_cli.main; "
            "print(','.join(m for m in ('torch', 'pandas', 'transformers', 'onnxruntime') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "", f"imported at the top: {res.stdout}"


@pytest.mark.parametrize("command", COMMANDS)
def test_short_and_long_help_on_every_command(command):
    for flag in ("-h", "--help"):
        res = runner.invoke(app, [command, flag])
        assert res.exit_code == 0, res.output
        assert "Usage" in res.output and "<bool>" not in res.output


def test_root_help_short_flag_and_env_listed():
    res = runner.invoke(app, ["-h"])
    assert res.exit_code == 0 and "env" in res.output and "<bool>" not in res.output


@pytest.mark.parametrize("command", ("prepare", "train", "eval", "predict", "export", "bench", "env", "notes",
                                     "convert-reference", "convert-clip"))
def test_common_options_spelled_once(command):
    text = runner.invoke(app, [command, "-h"]).output
    assert "--quiet" in text and "-q" in text
    assert "--set" in text and "--config" in text
    if command in ("train", "eval", "predict", "bench"):
        assert "--device" in text and "--threads" in text
    if command in ("eval", "predict", "export"):
        assert "--checkpoint" in text and "-c" in text
    if command in ("train", "eval", "predict", "export", "prepare"):
        assert "--out" in text and "-o" in text


def test_train_help_shows_what_the_presets_give():
    text = " ".join(runner.invoke(app, ["train", "-h"], terminal_width=200).output.split())
    assert "tiny: 150" in text and "paper: 200" in text and "--workers" in text


# -- checks before expensive work ----------------------------------------------------------------------


def test_preset_typo_fails_at_once_with_the_nearest_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = runner.invoke(app, ["train", "--dataset", "sample", "--preset", "tinyy"])
    _one_error(res, "did you mean 'tiny'")
    assert not (tmp_path / "data").exists()  # nothing prepared


def test_bench_checks_data_before_counting_macs(tmp_path):
    res = runner.invoke(app, ["bench", "--preset", "tiny", "--data", str(tmp_path / "nope")])
    _one_error(res, "folder not found")
    assert "counting MACs" not in res.output and "building the model" not in res.output


def test_predict_format_checked_before_the_model_and_reported_once(png, tmp_path):
    # the checkpoint does not exist: the format error must come first, and only once
    res = runner.invoke(app, ["predict", str(png), "--note", NOTE, "--format", "nifti",
                              "-c", str(tmp_path / "no_ckpt"), "-o", str(tmp_path / "o")])
    _one_error(res, "--format nifti needs a NIfTI")
    assert res.output.count("--format nifti needs") == 1
    assert not (tmp_path / "o").exists()


def test_predict_format_from_the_config_file_section(png, tmp_path):
    cfg = tmp_path / "reclmis.yaml"
    cfg.write_text("predict:\n  format: nifti\neval:\n  split: val\n")
    res = runner.invoke(app, ["predict", str(png), "--note", NOTE, "--config", str(cfg),
                              "-c", str(tmp_path / "no_ckpt")])
    _one_error(res, "--format nifti needs a NIfTI")


def test_set_with_an_unknown_option_suggests_the_nearest(png, tmp_path):
    res = runner.invoke(app, ["predict", str(png), "--note", NOTE, "--set", "treshold=0.3"])
    _one_error(res, "no option 'treshold'", "Did you mean 'threshold'")


# -- devices --------------------------------------------------------------------------------------------


def test_unknown_device_spelling(ckpt):
    _one_error(runner.invoke(app, ["eval", "-c", str(ckpt), "--device", "gpu"]), "--device must be auto, cpu")


def test_cuda_on_a_cpu_host_is_one_line(ckpt, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    _one_error(runner.invoke(app, ["eval", "-c", str(ckpt), "--device", "cuda"]), "no CUDA device")
    _one_error(runner.invoke(app, ["bench", "--preset", "tiny", "--device", "cuda"]), "no CUDA device")
    _one_error(runner.invoke(app, ["train", "--data", str(tmp_path), "--device", "cuda:0"]), "no CUDA device")


def test_train_cpu_flag_is_a_deprecated_alias(tmp_path):
    res = runner.invoke(app, ["train", "--cpu", "--data", str(tmp_path / "missing"), "--preset", "tiny"])
    assert "--cpu is deprecated" in res.output and "use --device cpu" in res.output
    _one_error(res, "folder not found")


# -- misleading errors, fixed ---------------------------------------------------------------------------


def test_missing_data_folder_says_not_found(ckpt, tmp_path):
    _one_error(runner.invoke(app, ["train", "--data", str(tmp_path / "nope")]), "folder not found")
    _one_error(runner.invoke(app, ["eval", "-c", str(ckpt), "--data", str(tmp_path / "nope")]), "folder not found")
    (tmp_path / "empty").mkdir()
    _one_error(runner.invoke(app, ["train", "--data", str(tmp_path / "empty")]), "has no manifest.csv")


def test_resume_says_its_config_comes_from_the_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _one_error(runner.invoke(app, ["train", "--resume", "--preset", "tiny"]), "--resume")
    assert "no training data" not in line and "config saved in it" in line and "--out RUN_DIR" in line


def test_onnx_export_given_as_checkpoint_suggests_backend_onnx(png, tmp_path):
    export = tmp_path / "onnx"
    export.mkdir()
    (export / "reclmis_export.json").write_text("{}")
    res = runner.invoke(app, ["predict", str(png), "--note", NOTE, "-c", str(export), "-o", str(tmp_path / "o")])
    _one_error(res, "is an ONNX export", "--backend onnx")


def test_export_refuses_an_existing_out(ckpt, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    _one_error(runner.invoke(app, ["export", "-c", str(ckpt), "--format", "safetensors", "-o", str(out)]),
               "already exists", "--overwrite")
    res = runner.invoke(app, ["export", "-c", str(ckpt), "--format", "safetensors", "-o", str(out), "--overwrite"])
    assert res.exit_code == 0, res.output
    assert (out / "model.safetensors").is_file() or any(out.iterdir())


def test_eval_defaults_to_the_newest_run(ckpt, tmp_path, monkeypatch):
    monkeypatch.chdir(ckpt.parent.parent.parent)  # the folder holding runs/
    res = runner.invoke(app, ["eval", "--data", str(tmp_path / "nope")])
    _one_error(res, "folder not found")  # --data is checked first; now without --data:
    res = runner.invoke(app, ["eval"])
    assert "using the newest checkpoint" in res.output or "does not record its data folder" in res.output


# -- quiet, piped output ------------------------------------------------------------------------------------


def test_global_quiet_silences_predict_summary(ckpt, png, tmp_path):
    res = runner.invoke(app, ["-q", "predict", str(png), "--note", NOTE, "-c", str(ckpt), "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    assert "predicted" not in res.output and res.output.strip() == ""
    assert json.loads((tmp_path / "o" / "predictions.json").read_text())["n_ok"] == 1


def test_a_note_the_default_model_cannot_read_is_one_error(ckpt, png, tmp_path):
    res = runner.invoke(app, ["predict", str(png), "--note", "左肺下叶有感染病灶", "-c", str(ckpt),
                              "-o", str(tmp_path / "o")])
    _one_error(res, "the input failed")  # like any input that fails: its reason on its own line, exit 2
    assert any(x.startswith("warning: ") and "names no lung zone" in x and "model.text.reader=zones" in x
               for x in res.output.splitlines()), res.output
    assert not (tmp_path / "o" / "xray_mask.png").exists()


def test_unknown_words_warn_with_their_share(png, tmp_path):
    """A model that reads notes as written (model.text.reader=raw) warns when most of a note's words are unknown."""
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"reader": "raw"}}})
    raw = save_checkpoint(build_model(cfg.model, corpus=[NOTE] * 3), cfg, tmp_path / "raw" / "best")
    res = runner.invoke(app, ["predict", str(png), "--note", "左肺下叶有感染病灶", "-c", str(raw),
                              "-o", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if "unknown to this checkpoint's tokenizer" in x)
    assert line.startswith("warning: ") and "%" in line


def test_piped_tables_are_plain_text(tmp_path):
    res = runner.invoke(app, ["prepare", "--synthetic", "--out", str(tmp_path / "d"), "--n-train", "4",
                              "--n-val", "2", "--n-test", "2", "--size", "64"])
    assert res.exit_code == 0, res.output
    assert not any(ch in res.output for ch in "│┃━─╭")
    assert any(line.split()[:2] == ["train", "4"] for line in res.output.splitlines())


def test_env_reports_versions_and_cpu(tmp_path):
    res = runner.invoke(app, ["env", "--json", str(tmp_path / "env.json")])
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "env.json").read_text())
    assert doc["packages"]["torch"] and "avx2" in doc["cpu"]["features"] and "torch_intra_op" in doc["threads"]
    assert "CPU features" in res.output
