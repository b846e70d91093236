"""`reclmis predict` through the CLI: outputs, notes CSV, default checkpoint, and every error path (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
CORPUS = [NOTE, "Unilateral pulmonary infection, one infected area, middle right lung."]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}})
    root = tmp_path_factory.mktemp("runs_root")
    return save_checkpoint(build_model(cfg.model, corpus=CORPUS * 3), cfg, root / "runs" / "tiny" / "best")


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(folder / "gray.png")
    Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(folder / "rgb.jpg")
    return folder


def _invoke(args: list[str]):
    return runner.invoke(app, ["predict", *args])


def test_predict_folder_writes_every_output(ckpt, images, tmp_path):
    out = tmp_path / "out"
    res = _invoke([str(images), "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(out),
                   "--overlay", "--save-prob", "--explain", "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    names = sorted(p.name for p in out.iterdir())
    for stem in ("gray", "rgb"):
        for suffix in ("_mask.png", "_overlay.png", "_prob.png", "_explain.png"):
            assert f"{stem}{suffix}" in names
    assert Image.open(out / "gray_mask.png").size == (70, 50)
    assert Image.open(out / "rgb_mask.png").size == (30, 40)
    doc = json.loads((out / "predictions.json").read_text())
    # one note, encoded once, and once mirrored (tiny's infer.mirror), whatever the number of batches
    assert doc["n_ok"] == 2 and doc["n_failed"] == 0 and doc["text_encodes"] == 2 and doc["mirror"]
    assert all(e["note"] == NOTE and e["threshold"] == 0.5 and "word_weights" in e for e in doc["inputs"])
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_notes_csv_and_missing_note_row(ckpt, images, tmp_path):
    csv = tmp_path / "notes.csv"
    csv.write_text(f'image,note\ngray.png,"{CORPUS[1]}"\n')
    out = tmp_path / "out"
    res = _invoke([str(images), "--notes", str(csv), "--checkpoint", str(ckpt), "--out", str(out)])
    assert res.exit_code == 2
    assert "rgb.jpg" in res.output and "no note" in res.output
    doc = json.loads((out / "predictions.json").read_text())
    assert [e["note"] for e in doc["inputs"]] == [CORPUS[1]]
    assert sorted(p.name for p in out.iterdir()) == ["gray_mask.png", "predictions.json"]


def test_corrupt_file_among_good_ones(ckpt, images, tmp_path):
    (images / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    out = tmp_path / "out"
    res = _invoke([str(images), "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(out), "--overlay"])
    assert res.exit_code == 2
    assert "zz_corrupt.png" in res.output and "Traceback" not in res.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["gray_mask.png", "gray_overlay.png", "predictions.json", "rgb_mask.png", "rgb_overlay.png"]
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["n_ok"] == 2 and [Path(f["input"]).name for f in doc["failed"]] == ["zz_corrupt.png"]


def test_unreadable_only_input_exits_2(ckpt, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_text("not an image")
    res = _invoke([str(bad), "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "scan.png" in res.output
    missing = _invoke([str(tmp_path / "nope.dcm"), "--note", NOTE, "--checkpoint", str(ckpt)])
    assert missing.exit_code == 2 and "not found" in missing.output


def test_no_checkpoint_is_a_clear_error(images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = _invoke([str(images), "--note", NOTE])
    assert res.exit_code == 2 and "runs/*/best" in res.output and "Traceback" not in res.output
    res = _invoke([str(images), "--note", NOTE, "--checkpoint", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "checkpoint not found" in res.output


def test_default_checkpoint_is_the_newest_run(ckpt, images, tmp_path, monkeypatch):
    monkeypatch.chdir(ckpt.parent.parent.parent)  # the folder holding runs/tiny/best
    out = tmp_path / "out"
    res = _invoke([str(images / "gray.png"), "--note", NOTE, "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "predictions.json").read_text())
    assert Path(doc["checkpoint"]).resolve() == ckpt.resolve()


@pytest.mark.parametrize("extra,needle", [
    ([], "--note"),
    (["--note", "   "], "empty"),
    (["--note", NOTE, "--notes", "x.csv"], "not both"),
    (["--note", NOTE, "--backend", "onnx", "--explain"], "explain"),
    (["--note", NOTE, "--format", "jpeg"], "--format"),
    (["--note", NOTE, "--threshold", "1.5"], "threshold"),
    (["--note", NOTE, "--window", "liver-ish"], "window"),
])
def test_usage_errors_exit_2(ckpt, images, extra, needle):
    res = _invoke([str(images), "--checkpoint", str(ckpt), *extra])
    assert res.exit_code == 2, res.output
    assert needle in res.output and "Traceback" not in res.output


def test_nifti_and_dicom_from_the_cli(ckpt, tmp_path):
    import nibabel as nib
    import pydicom
    from pydicom.data import get_testdata_file

    nii = Path(nib.__file__).parent / "tests" / "data" / "standard.nii.gz"
    dcm = get_testdata_file("CT_small.dcm")
    out = tmp_path / "out"
    res = _invoke([str(nii), dcm, "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(out),
                   "--window", "mediastinum"])
    assert res.exit_code == 0, res.output
    assert nib.load(out / "standard_mask.nii.gz").shape == nib.load(nii).shape
    assert Image.open(out / "CT_small_mask.png").size == (128, 128)
    res = _invoke([dcm, "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(out / "seg"),
                   "--format", "dicom-seg"])
    assert res.exit_code == 0, res.output
    assert pydicom.dcmread(out / "seg" / "CT_small_seg.dcm").Modality == "SEG"


@pytest.mark.slow
def test_onnx_backend_matches_torch(ckpt, images, tmp_path):
    pytest.importorskip("onnxruntime")
    from reclmis_core.export.exporter import export_model

    export_model(ckpt, "onnx", tmp_path / "onnx")
    common = [str(images), "--note", NOTE, "--save-prob", "--quiet"]
    res_t = _invoke([*common, "--checkpoint", str(ckpt), "--out", str(tmp_path / "t")])
    res_o = _invoke([*common, "--checkpoint", str(tmp_path / "onnx"), "--backend", "onnx", "--out",
                     str(tmp_path / "o")])
    assert res_t.exit_code == 0 and res_o.exit_code == 0, res_o.output
    for name in ("gray_prob.png", "rgb_prob.png", "gray_mask.png"):
        a = np.asarray(Image.open(tmp_path / "t" / name)).astype(int)
        b = np.asarray(Image.open(tmp_path / "o" / name)).astype(int)
        assert np.abs(a - b).max() <= 1
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert doc["backend"] == "onnx" and doc["text_encodes"] == 2 and doc["mirror"]  # the note and its mirror
