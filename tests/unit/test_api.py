"""The Python API (issue 23): ``reclmis_core.load(...).predict(...)`` runs the code path of ``reclmis predict`` and
writes the same bytes; hub ids come from the local hub cache only; errors name Python arguments."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import reclmis_core
from reclmis_cli.main import app
from reclmis_core.errors import CheckpointError, ConfigError, DataError

from tests.dicom_series import write_ct_series

NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
CORPUS = [NOTE, "Unilateral pulmonary infection, one infected area, middle right lung."]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}, "infer": {"threshold": 0.52}})
    root = tmp_path_factory.mktemp("api_runs")
    return save_checkpoint(build_model(cfg.model, corpus=CORPUS * 3), cfg, root / "tiny" / "best")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    import nibabel as nib

    root = tmp_path_factory.mktemp("api_inputs")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (50, 70), dtype=np.uint8)).save(root / "gray.png")
    write_ct_series(root / "series", 3)
    vol = rng.integers(-1000, 400, (40, 30, 4)).astype(np.int16)
    nib.save(nib.Nifti1Image(vol, np.diag([-0.7, -0.9, 2.5, 1.0])), root / "case.nii.gz")
    return {"png": root / "gray.png", "series": root / "series", "nifti": root / "case.nii.gz"}


def _cli(*args: str) -> None:
    res = CliRunner().invoke(app, ["predict", *args])
    assert res.exit_code == 0, res.output


def _content(path: Path) -> bytes:
    """A mask file's bytes; a .nii.gz decompressed (gzip stores a time stamp)."""
    return gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()


@pytest.mark.parametrize("kind, mask_name", [("png", "gray_mask.png"), ("series", "series_mask.nii.gz"),
                                             ("nifti", "case_mask.nii.gz")])
def test_api_writes_the_bytes_the_cli_writes(ckpt, inputs, tmp_path, kind, mask_name):
    _cli(str(inputs[kind]), "--note", NOTE, "--checkpoint", str(ckpt), "--out", str(tmp_path / "cli"),
         "--device", "cpu")
    model = reclmis_core.load(ckpt, device="cpu")
    [res] = model.predict(inputs[kind], NOTE, out=tmp_path / "api")
    cli_mask, api_mask = tmp_path / "cli" / mask_name, tmp_path / "api" / mask_name
    assert _content(api_mask) == _content(cli_mask)
    assert res.files["mask"] == str(api_mask.resolve())
    cli_doc = json.loads((tmp_path / "cli" / "predictions.json").read_text())["inputs"][0]
    for key in ("shape", "lesion_area_px", "foreground_fraction", "threshold", "file_shape"):
        assert res.entry[key] == cli_doc[key]
    assert res.threshold == 0.52  # the checkpoint's infer.threshold, as the CLI uses
    assert list(res.mask.shape) == cli_doc["shape"] and res.areas()["lesion_area_px"] == cli_doc["lesion_area_px"]
    [again] = model.predict(inputs[kind], NOTE)  # no files: the same arrays
    assert np.array_equal(again.prob, res.prob)


def test_dicom_seg_of_a_series_matches_the_cli(ckpt, inputs, tmp_path):
    import pydicom

    args = ("--note", NOTE, "--checkpoint", str(ckpt), "--format", "dicom-seg", "--device", "cpu")
    _cli(str(inputs["series"]), *args, "--out", str(tmp_path / "cli"))
    reclmis_core.load(ckpt, device="cpu").predict(inputs["series"], NOTE, out=tmp_path / "api", format="dicom-seg")
    a, b = (pydicom.dcmread(tmp_path / d / "series_seg.dcm") for d in ("cli", "api"))
    assert a.PixelData == b.PixelData and a.NumberOfFrames == b.NumberOfFrames
    assert a.SeriesInstanceUID != b.SeriesInstanceUID  # each SEG is a new series; the masks are the same


def test_arrays_pil_images_and_lists(ckpt, inputs):
    model = reclmis_core.load(ckpt, device="cpu")
    pil = Image.open(inputs["png"])
    by_file, by_array, by_pil = model.predict([inputs["png"], np.asarray(pil), pil], NOTE)
    assert by_array.input == "<array 1>" and by_file.input == str(inputs["png"])
    assert np.array_equal(by_file.mask, by_array.mask) and np.array_equal(by_array.mask, by_pil.mask)
    two = model.predict([inputs["png"], inputs["nifti"]], [NOTE, CORPUS[1]])
    assert [r.note for r in two] == [NOTE, CORPUS[1]] and two[1].is_volume and two[1].spacing == pytest.approx((0.9, 0.7))
    with pytest.raises(ConfigError, match="note: 1 notes for 2 sources"):
        model.predict([inputs["png"], inputs["nifti"]], [NOTE])
    with pytest.raises(DataError, match="8-bit"):
        model.predict(np.zeros((8, 8), np.float32), NOTE)


def test_w_poi_on_the_input_grid(ckpt, inputs):
    res = reclmis_core.load(ckpt, device="cpu", explain=True).predict(inputs["png"], NOTE)[0]
    w = res.w_poi()
    assert w.shape == (50, 70) and w.dtype == np.float32 and w.max() > 0
    assert [t["token"] for t in res.word_weights()]
    with pytest.raises(ConfigError, match="explain=True"):
        reclmis_core.load(ckpt, device="cpu").predict(inputs["png"], NOTE)[0].w_poi()


def test_errors_name_python_arguments(ckpt, inputs, tmp_path):
    model = reclmis_core.load(ckpt, device="cpu")
    with pytest.raises(ConfigError, match="^note is empty"):
        model.predict(inputs["png"], "  ")
    with pytest.raises(ConfigError, match="^threshold must lie in"):
        model.predict(inputs["png"], NOTE, threshold=1.5)
    with pytest.raises(ConfigError, match="^format must be one of"):
        model.predict(inputs["png"], NOTE, format="jpeg")
    with pytest.raises(DataError, match="nope.png"):
        model.predict(tmp_path / "nope.png", NOTE)
    with pytest.raises(ConfigError, match="^precision must be"):
        reclmis_core.load(ckpt, precision="fp8")
    with pytest.raises(CheckpointError, match="path_or_hub_id: checkpoint not found"):
        reclmis_core.load(tmp_path / "a" / "b" / "c")
    with pytest.raises(ConfigError, match="^text must be one of"):
        model.evaluate(text="backwards")
    with pytest.raises(DataError, match="^data= .*nowhere: folder not found"):
        model.evaluate(tmp_path / "nowhere")


def test_config_section_sets_what_the_call_does_not_give(ckpt, inputs, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("predict:\n  threshold: 0.9\n  save-prob: true\n", encoding="utf-8")
    model = reclmis_core.load(ckpt, device="cpu")
    [res] = model.predict(inputs["png"], NOTE, out=tmp_path / "o", config=cfg)
    assert res.threshold == 0.9 and "prob" in res.files
    assert model.predict(inputs["png"], NOTE, threshold=0.3, config=cfg)[0].threshold == 0.3  # the call wins
    cfg.write_text("predict:\n  treshold: 0.9\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="'predict.treshold' is not an argument.*threshold"):
        model.predict(inputs["png"], NOTE, config=cfg)


def _hub_cache(root: Path, repo: str, folder: Path) -> Path:
    """A Hugging Face hub cache holding ``folder`` as the ``main`` snapshot of model ``repo``."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    base = root / f"models--{repo.replace('/', '--')}"
    shutil.copytree(folder, base / "snapshots" / commit)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text(commit, encoding="utf-8")
    return base / "snapshots" / commit


def test_hub_id_loads_from_the_local_cache_offline(ckpt, inputs, tmp_path, monkeypatch):
    from huggingface_hub import constants

    snapshot = _hub_cache(tmp_path / "hub", "acme/reclmis-tiny", ckpt)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = reclmis_core.load("acme/reclmis-tiny", device="cpu")
    assert model.path == snapshot and (snapshot / "README.md").is_file()
    local = reclmis_core.load(ckpt, device="cpu").predict(inputs["png"], NOTE)[0]
    assert np.array_equal(model.predict(inputs["png"], NOTE)[0].prob, local.prob)
    with pytest.raises(CheckpointError, match="acme/absent is no local folder"):
        reclmis_core.load("acme/absent")


def test_checkpoint_folders_carry_a_model_card(ckpt):
    import yaml

    text = (ckpt / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(text.split("---")[1])
    assert front["library_name"] == "reclmis" and front["pipeline_tag"] == "image-segmentation"
    for heading in ("## Training data", "## Metrics", "## Intended use", "## Limits"):
        assert heading in text


def test_train_checks_a_table_before_any_work(tmp_path):
    import pandas as pd

    with pytest.raises(DataError, match="needs columns image, mask, note.*missing: mask"):
        reclmis_core.train(pd.DataFrame({"image": ["a.png"], "note": ["x"]}), out=tmp_path / "run")
    with pytest.raises(DataError, match="row 0: image .*nope.png is not a file"):
        reclmis_core.train(pd.DataFrame({"image": [tmp_path / "nope.png"], "mask": [tmp_path / "m.png"],
                                         "note": ["x"]}), out=tmp_path / "run")
    with pytest.raises(ConfigError, match="^data must be"):
        reclmis_core.train(42)
    assert not (tmp_path / "run" / "best").exists()
