"""One Preprocessor from file to model input: prepare + Dataset, eval and predict feed identical pixels.

The data is prepared at its native size and the model takes 32 px, so every path resizes; each must resize once,
from the same pixels, with the checkpoint's preprocessor (colour, kind).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reclmis_core.config import build_config
from reclmis_core.data.dataset import ManifestDataset
from reclmis_core.data.prepare import PrepareOptions, prepare_dataset
from reclmis_core.engine.checkpoint import load_checkpoint, save_checkpoint
from reclmis_core.engine.evaluator import evaluate_checkpoint
from reclmis_core.errors import DataError
from reclmis_core.export import export_model
from reclmis_core.inference import Predictor, collect_inputs
from reclmis_core.models import build_model
from reclmis_core.runtime.torch_runtime import TorchRuntime

from .test_preprocess import NOTE, _folder_source, _png_gray, _png_rgb, dicom_2d, nifti_source

SIZE = 32


def _dicom_anisotropic(path: Path) -> tuple[int, int]:
    """A 60 x 40 radiograph with 0.3 x 0.15 mm pixels: resampled to square pixels, then padded."""
    import pydicom

    dicom_2d(path, rows=60, cols=40)
    ds = pydicom.dcmread(path)
    ds.PixelSpacing = [0.3, 0.15]
    ds.save_as(path)
    return (60, 40)


def _cfg(in_channels: int = 3, reference: bool = False):
    data = {"preprocessing": "reference", "mean": 0.0, "std": 1.0} if reference else {}
    # one pass per image (infer.mirror would segment the mirrored image too): the pixels each path feeds
    return build_config("tiny", overrides={"model": {"image_size": SIZE, "in_channels": in_channels}, "data": data,
                                           "infer": {"mirror": False}})


def _checkpoint(tmp_path: Path, cfg, preprocessing: dict) -> Path:
    """A tiny checkpoint that records ``preprocessing`` as training does (``meta.preprocessing``)."""
    torch.manual_seed(0)
    model = build_model(cfg.model, corpus=[NOTE] * 4)
    meta = {"colour": bool(preprocessing.get("colour")), "preprocessing": preprocessing}
    return save_checkpoint(model, cfg, tmp_path / "ckpt", meta)


@pytest.fixture
def captured(monkeypatch):
    """Every image batch a TorchRuntime segments (eval and predict both run one)."""
    seen: list[torch.Tensor] = []
    original = TorchRuntime.segment

    def segment(self, images, feats=None, mask=None):  # noqa: ANN001
        seen.append(images.detach().cpu().clone())
        return original(self, images, feats, mask)

    monkeypatch.setattr(TorchRuntime, "segment", segment)
    return seen


def _eval_pixels(ckpt: Path, data: Path, captured: list) -> torch.Tensor:
    captured.clear()
    evaluate_checkpoint(ckpt, data, "train", device="cpu")
    return torch.cat(captured)


def _predict_pixels(ckpt: Path, path: Path, captured: list) -> torch.Tensor:
    captured.clear()
    specs, failures = collect_inputs([str(path)])
    assert not failures, failures
    out = list(Predictor.from_checkpoint(ckpt, workers=0).predict([(specs[0], NOTE)]))
    assert not hasattr(out[0], "error"), out
    return torch.cat(captured)


@pytest.mark.parametrize("name,writer,in_channels", [
    ("g.png", _png_gray, 1), ("g.png", _png_gray, 3), ("c.png", _png_rgb, 3), ("x.dcm", _dicom_anisotropic, 3),
    ("s.dcm", lambda p: (dicom_2d(p), (60, 40))[1], 1),
])
def test_prepare_dataset_eval_and_predict_feed_identical_pixels(tmp_path, captured, name, writer, in_channels):
    cfg = _cfg(in_channels)
    src = _folder_source(tmp_path, name, writer)
    data = tmp_path / "data"
    prepare_dataset(src, data, PrepareOptions(workers=1))  # native size: 32 px is the model's, not the data's
    ds = ManifestDataset(data, "train", SIZE, in_channels, cfg.data)  # as training builds it
    train_x = torch.stack([ds[i]["image"] for i in range(len(ds))])
    ckpt = _checkpoint(tmp_path, cfg, ds.preprocessor.to_dict())
    eval_x = _eval_pixels(ckpt, data, captured)
    predict_x = _predict_pixels(ckpt, src / "images" / name, captured)
    assert train_x.shape == (1, in_channels, SIZE, SIZE)
    torch.testing.assert_close(eval_x, train_x, rtol=0, atol=0)
    torch.testing.assert_close(predict_x, train_x, rtol=0, atol=0)


def test_nifti_slice_identical_through_dataset_eval_and_predict(tmp_path, captured):
    cfg = _cfg(3)
    src = nifti_source(tmp_path)
    data = tmp_path / "data"
    prepare_dataset(src, data, PrepareOptions(workers=1))
    ds = ManifestDataset(data, "train", SIZE, 3, cfg.data)
    assert ds.ids == ["v_s001"]
    train_x = ds[0]["image"][None]
    ckpt = _checkpoint(tmp_path, cfg, ds.preprocessor.to_dict())
    torch.testing.assert_close(_eval_pixels(ckpt, data, captured), train_x, rtol=0, atol=0)
    predict_x = _predict_pixels(ckpt, src / "images" / "v.nii.gz", captured)
    torch.testing.assert_close(predict_x[1:2], train_x, rtol=0, atol=0)


def test_reference_kind_identical_through_dataset_eval_and_predict(tmp_path, captured):
    pytest.importorskip("cv2")
    cfg = _cfg(3, reference=True)
    src = _folder_source(tmp_path, "c.png", _png_rgb)
    data = tmp_path / "data"
    prepare_dataset(src, data, PrepareOptions(workers=1))
    ds = ManifestDataset(data, "train", SIZE, 3, cfg.data)
    train_x = ds[0]["image"][None]
    ckpt = _checkpoint(tmp_path, cfg, ds.preprocessor.to_dict())
    torch.testing.assert_close(_eval_pixels(ckpt, data, captured), train_x, rtol=0, atol=0)
    torch.testing.assert_close(_predict_pixels(ckpt, src / "images" / "c.png", captured), train_x, rtol=0, atol=0)
    import cv2  # the reference's own pipeline on the source file: BGR, cv2.resize, x / 255

    bgr = cv2.resize(cv2.imread(str(src / "images" / "c.png")), (SIZE, SIZE))
    expected = torch.from_numpy(np.moveaxis(bgr.astype(np.float32) / 255.0, -1, 0))[None]
    torch.testing.assert_close(train_x, expected, rtol=0, atol=0)


def test_eval_uses_the_checkpoints_colour_not_the_splits_first_image(tmp_path, captured):
    """Bug: eval re-derived colour from the split's first image (gray here) while predict used the checkpoint's
    (colour): the same colour file got other pixels in eval than in predict."""
    cfg = _cfg(3)
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(4)
    rows = []
    for i, colour in enumerate((False, True)):  # the first image of the split is gray
        shape = (SIZE, SIZE, 3) if colour else (SIZE, SIZE)
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(data / "images" / f"{i}.png")
        Image.fromarray(np.zeros((SIZE, SIZE), np.uint8)).save(data / "masks" / f"{i}.png")
        rows.append({"id": f"i{i}", "split": "train", "image": f"images/{i}.png", "mask": f"masks/{i}.png",
                     "note": NOTE, "height": SIZE, "width": SIZE, "source": f"{i}.png"})
    pd.DataFrame(rows).to_csv(data / "manifest.csv", index=False)
    ckpt = _checkpoint(tmp_path, cfg, {"image_size": SIZE, "in_channels": 3, "mean": cfg.data.mean,
                                       "std": cfg.data.std, "colour": True})
    eval_x = _eval_pixels(ckpt, data, captured)
    predict_x = _predict_pixels(ckpt, data / "images" / "1.png", captured)
    torch.testing.assert_close(eval_x[1:2], predict_x, rtol=0, atol=0)
    assert not torch.equal(predict_x[0, 0], predict_x[0, 1])  # colour kept


def test_training_resizes_once_from_the_source(tmp_path):
    """Bug: prepare resized to its --size (224 by default) and the Dataset again to the model's side; predict
    resizes once from the original. With the default prepare, the training pixels are predict's."""
    cfg = _cfg(1)
    src = _folder_source(tmp_path, "g.png", _png_gray)  # 50 x 70
    data = tmp_path / "data"
    prepare_dataset(src, data, PrepareOptions(workers=1))
    ds = ManifestDataset(data, "train", SIZE, 1, cfg.data)
    once = np.asarray(Image.open(src / "images" / "g.png").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(ds.raw(0).image, once)


def test_dataset_refuses_pixels_prepared_at_another_side(tmp_path):
    cfg = _cfg(1)
    src = _folder_source(tmp_path, "g.png", _png_gray)
    prepare_dataset(src, tmp_path / "d48", PrepareOptions(size=48, workers=1))
    assert json.loads((tmp_path / "d48" / "dataset.json").read_text())["native"] is False
    with pytest.raises(DataError, match="prepared at 48 px and the model takes 32 px"):
        ManifestDataset(tmp_path / "d48", "train", SIZE, 1, cfg.data)
    assert len(ManifestDataset(tmp_path / "d48", "train", 48, 1, cfg.data)) == 1  # its own side is fine


def test_safetensors_export_keeps_the_checkpoints_preprocessor(tmp_path):
    """Bug: a checkpoint trained on colour exported as gray (the export's config.json had no preprocessing)."""
    cfg = _cfg(3)
    stored = {"kind": "reclmis", "image_size": SIZE, "in_channels": 3, "mean": 0.4, "std": 0.3, "colour": True}
    ckpt = _checkpoint(tmp_path, cfg, stored)
    export_model(ckpt, "safetensors", tmp_path / "export")
    _, _, doc = load_checkpoint(tmp_path / "export")
    assert doc["meta"]["preprocessing"]["colour"] is True
    plan = Predictor.from_checkpoint(tmp_path / "export").preprocessor
    assert (plan.colour, plan.mean, plan.std) == (True, 0.4, 0.3)
