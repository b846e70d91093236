"""One preprocessing plan: the pixels the model sees are identical through prepare + Dataset and through predict."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reclmis_core.config import build_config
from reclmis_core.data.dataset import ManifestDataset
from reclmis_core.data.prepare import PrepareOptions, prepare_dataset
from reclmis_core.data.preprocess import luminance, normalise_batch
from reclmis_core.data.preprocessor import PreprocessPlan
from reclmis_core.inference import Predictor, collect_inputs
from reclmis_core.models import build_model

NOTE = "Unilateral pulmonary infection, one infected area, lower left lung."
SIZE = 32


def dicom_2d(path: Path, rows: int = 60, cols: int = 40, spacing: float = 0.15) -> Path:
    """A 2-D CR radiograph, ``rows`` x ``cols`` pixels of ``spacing`` mm (square pixels, non-square image)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    yy, xx = np.mgrid[0:rows, 0:cols]
    px = ((yy * 37 + xx * 91) % 4096).astype(np.uint16)  # strong texture: a stretch and a pad differ a lot
    ds.Modality = "CR"
    for key in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if key in ds:
            delattr(ds, key)
    ds.Rows, ds.Columns = rows, cols
    ds.PixelSpacing = [spacing, spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PixelData = px.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return path


def _model_and_cfg(in_channels: int = 3):
    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": SIZE, "in_channels": in_channels}})
    return build_model(cfg.model, corpus=[NOTE] * 4), cfg


def _training_pixels(src: Path, cfg, colour_expected: bool | None = None) -> tuple[torch.Tensor, ManifestDataset]:
    out = src.parent / "data"
    prepare_dataset(src, out, PrepareOptions(size=SIZE, workers=1))
    ds = ManifestDataset(out, "train", SIZE, cfg.model.in_channels, cfg.data)
    if colour_expected is not None:
        assert ds.colour is colour_expected
    return torch.stack([ds[i]["image"] for i in range(len(ds))]), ds


def _inference_pixels(predictor: Predictor, path: Path) -> torch.Tensor:
    specs, failures = collect_inputs([str(path)])
    assert not failures, failures
    _, _, _, pixels = predictor._load(specs[0])
    return predictor._batch_tensor(list(pixels))


def _folder_source(root: Path, name: str, write_image) -> Path:  # noqa: ANN001
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    shape = write_image(src / "images" / name)
    m = np.zeros(shape, dtype=np.uint8)
    m[5:20, 5:15] = 255
    Image.fromarray(m).save(src / "masks" / (Path(name).stem + ".png"))
    pd.DataFrame([{"image": name, "note": NOTE, "split": "train"}]).to_csv(src / "notes.csv", index=False)
    return src


def _png_gray(path: Path) -> tuple[int, int]:
    arr = np.random.default_rng(1).integers(0, 255, (50, 70), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr.shape


def _png_rgb(path: Path) -> tuple[int, int]:
    arr = np.random.default_rng(2).integers(0, 255, (45, 45, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return arr.shape[:2]


def _dcm(path: Path) -> tuple[int, int]:
    dicom_2d(path)
    return (60, 40)


@pytest.mark.parametrize("name,writer", [("g.png", _png_gray), ("x.dcm", _dcm), ("c.png", _png_rgb)])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_prepare_dataset_and_predict_feed_identical_pixels(tmp_path, name, writer, in_channels):
    model, cfg = _model_and_cfg(in_channels)
    src = _folder_source(tmp_path, name, writer)
    train_x, ds = _training_pixels(src, cfg)
    predictor = Predictor.from_model(model, cfg, colour=ds.colour)
    infer_x = _inference_pixels(predictor, src / "images" / name)
    assert infer_x.shape == train_x.shape == (1, in_channels, SIZE, SIZE)
    torch.testing.assert_close(infer_x, train_x, rtol=0, atol=0)


def test_non_square_dicom_is_padded_not_stretched_in_training(tmp_path):
    """The 60x40 radiograph keeps its aspect in prepare: the 10 columns each side are zero padding."""
    model, cfg = _model_and_cfg(1)
    src = _folder_source(tmp_path, "x.dcm", _dcm)
    prepare_dataset(src, tmp_path / "d", PrepareOptions(size=60, workers=1))
    img = np.asarray(Image.open(tmp_path / "d" / "images" / "train" / "x.png"))
    assert img.shape == (60, 60)
    assert not img[:, :10].any() and not img[:, 50:].any() and img[:, 10:50].any()


def nifti_source(root: Path) -> Path:
    """A NIfTI volume (20 x 10 x 3, 1 x 2 mm pixels: resampled and padded) with a lesion on slice 1 only."""
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    vol = np.random.default_rng(0).normal(-500, 300, (20, 10, 3)).astype(np.int16)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])  # non-square pixels: resampled and padded
    nib.save(nib.Nifti1Image(vol, aff), src / "images" / "v.nii.gz")
    m = np.zeros(vol.shape, dtype=np.uint8)
    m[2:8, 2:6, 1] = 1
    nib.save(nib.Nifti1Image(m, aff), src / "masks" / "v.nii.gz")
    pd.DataFrame([{"image": "v.nii.gz", "note": NOTE, "split": "train"}]).to_csv(src / "notes.csv", index=False)
    return src


def test_nifti_slice_pixels_identical_in_training_and_prediction(tmp_path):
    model, cfg = _model_and_cfg(3)
    src = nifti_source(tmp_path)
    train_x, ds = _training_pixels(src, cfg)
    assert ds.ids == ["v_s001"]
    infer_x = _inference_pixels(Predictor.from_model(model, cfg), src / "images" / "v.nii.gz")
    torch.testing.assert_close(infer_x[1:2], train_x, rtol=0, atol=0)


def test_luminance_is_pil_convert_l():
    rgb = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb).convert("L"))
    np.testing.assert_array_equal(luminance(rgb), expected)
    np.testing.assert_array_equal(luminance(rgb.astype(np.float32)), expected.astype(np.float32))


def test_plan_round_trips_through_dict():
    plan = PreprocessPlan(64, 3, 0.4, 0.3, True)
    assert PreprocessPlan.from_dict(plan.to_dict()) == plan
    x = np.full((1, 3, 4, 4), 255, np.uint8)
    assert normalise_batch(x, 3, 0.0, 1.0, colour=False).shape == (1, 3, 4, 4)
