"""Readers/writers keep geometry: rasters of every mode, DICOM (CT_small.dcm), DICOM series, NIfTI."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIB_DATA
from PIL import Image
from pydicom.data import get_testdata_file

from reclmis_core.data.arrays import binarize
from reclmis_core.data.intensity import apply_window, parse_window, to_uint8
from reclmis_core.data.readers import read_image, read_mask
from reclmis_core.data.writers import dicom_series_affine, write_mask_png, write_nifti_mask
from reclmis_core.errors import DataError

CT_SMALL = get_testdata_file("CT_small.dcm")


def _gradient(h: int = 20, w: int = 30) -> np.ndarray:
    return (np.arange(h * w).reshape(h, w) % 256).astype(np.uint8)


@pytest.mark.parametrize(
    ("mode", "shape", "dtype"),
    [("L", (20, 30), np.uint8), ("RGB", (20, 30, 3), np.uint8), ("RGBA", (20, 30, 4), np.uint8)],
)
def test_raster_modes(tmp_path: Path, mode: str, shape: tuple[int, ...], dtype: type) -> None:
    g = _gradient()
    arr = g if mode == "L" else np.stack([g, 255 - g, g // 2, np.full_like(g, 255)][: len(mode)], axis=2)
    Image.fromarray(arr, mode=mode).save(tmp_path / "x.png")
    out, meta = read_image(tmp_path / "x.png")
    assert out.shape == shape and out.dtype == dtype
    assert meta.kind == "raster" and meta.mode == {"L": "gray", "RGB": "rgb", "RGBA": "rgba"}[mode]
    assert meta.display_shape == (20, 30)
    u8 = to_uint8(out, meta)
    assert u8.dtype == np.uint8 and u8.shape[:2] == (20, 30)
    if mode == "RGBA":
        assert u8.shape == (20, 30, 3)  # alpha dropped


def test_16bit_png_and_jpeg(tmp_path: Path) -> None:
    a16 = (np.arange(600).reshape(20, 30) * 100).astype(np.uint16)
    Image.fromarray(a16).save(tmp_path / "x16.png")
    arr, meta = read_image(tmp_path / "x16.png")
    assert arr.dtype == np.uint16 and meta.bit_depth == 16
    np.testing.assert_array_equal(arr, a16)
    u8 = to_uint8(arr, meta)
    assert u8.min() == 0 and u8.max() == 255
    Image.fromarray(np.stack([_gradient()] * 3, 2)).save(tmp_path / "x.jpg", quality=95)
    arr, meta = read_image(tmp_path / "x.jpg")
    assert arr.shape == (20, 30, 3) and to_uint8(arr, meta).ndim == 2  # equal channels -> gray


def test_corrupt_and_unsupported_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError, match="bad.png: unreadable"):
        read_image(tmp_path / "bad.png")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(DataError, match="unsupported file type"):
        read_image(tmp_path / "x.txt")
    with pytest.raises(DataError, match="not found"):
        read_image(tmp_path / "missing.png")


def test_dicom_ct_small_rescale_window_spacing() -> None:
    arr, meta = read_image(CT_SMALL)
    ds = pydicom.dcmread(CT_SMALL)
    raw = ds.pixel_array.astype(np.float32)
    np.testing.assert_allclose(arr, raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert meta.kind == "dicom" and meta.modality == "CT" and meta.rescale == (1.0, -1024.0)
    assert meta.spacing == pytest.approx((0.661468, 0.661468))
    assert meta.dicom is not None and meta.dicom.sop_instance_uids == [str(ds.SOPInstanceUID)]
    lung = to_uint8(arr, meta)  # CT default: lung window
    np.testing.assert_array_equal(lung, apply_window(arr, -600, 1500))
    bone = to_uint8(arr, meta, window="bone")
    explicit = to_uint8(arr, meta, window="400,1800")
    np.testing.assert_array_equal(bone, explicit)
    assert not np.array_equal(lung, bone)


def test_dicom_monochrome1_and_16bit_unsigned(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT_SMALL)
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(tmp_path / "mono1.dcm")
    arr, meta = read_image(tmp_path / "mono1.dcm")
    normal = to_uint8(arr, meta, window="lung")
    ref_arr, ref_meta = read_image(CT_SMALL)
    np.testing.assert_array_equal(normal, 255 - to_uint8(ref_arr, ref_meta, window="lung"))
    # 16-bit unsigned, slope 2, no CT modality: min..max scaling after rescale
    ds = pydicom.dcmread(CT_SMALL)
    data = (np.arange(128 * 128).reshape(128, 128) * 3).astype(np.uint16)
    ds.PixelRepresentation = 0
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.RescaleSlope = 2
    ds.RescaleIntercept = 10
    ds.Modality = "DX"
    ds.PixelData = data.tobytes()
    ds.save_as(tmp_path / "u16.dcm")
    arr, meta = read_image(tmp_path / "u16.dcm")
    np.testing.assert_allclose(arr, data.astype(np.float32) * 2 + 10)
    assert meta.bit_depth == 16
    u8 = to_uint8(arr, meta)
    assert u8.min() == 0 and u8.max() == 255


def _series(folder: Path, n: int = 3, spacing: tuple[float, float] = (0.661468, 0.661468)) -> list[str]:
    folder.mkdir(parents=True)
    uids = []
    base = pydicom.dcmread(CT_SMALL)
    series_uid = pydicom.uid.generate_uid()
    for k in reversed(range(n)):  # written in reverse order: the reader must sort by position
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5.0 * k]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(spacing)
        arr = base.pixel_array.copy()
        arr[0, 0] = k  # tag each slice
        ds.PixelData = arr.tobytes()
        ds.save_as(folder / f"im{k}.dcm")
        uids.append(str(ds.SOPInstanceUID))
    return uids[::-1]


def test_dicom_series_sorted_and_mask_roundtrip(tmp_path: Path) -> None:
    uids = _series(tmp_path / "series")
    vol, meta = read_image(tmp_path / "series")
    assert vol.shape == (3, 128, 128) and meta.is_volume and meta.kind == "dicom-series"
    assert [int(vol[k, 0, 0]) + 1024 for k in range(3)] == [0, 1, 2]  # inferior -> superior
    assert meta.dicom is not None and meta.dicom.sop_instance_uids == uids
    assert meta.slice_spacing == pytest.approx(5.0)
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[1, 10:20, 30:50] = 1
    write_nifti_mask(tmp_path / "m.nii.gz", mask, meta)
    img = nib.load(tmp_path / "m.nii.gz")
    np.testing.assert_allclose(img.affine, dicom_series_affine(meta))
    data = np.asanyarray(img.dataobj)
    assert data.shape == (128, 128, 3) and data[30:50, 10:20, 1].all() and data.sum() == mask.sum()


def _series_at(folder: Path, z: list[float], tilt_last: bool = False) -> None:
    """Slices at the given z positions (mm); ``tilt_last`` gives the last slice another orientation."""
    folder.mkdir(parents=True)
    base = pydicom.dcmread(CT_SMALL)
    uid = pydicom.uid.generate_uid()
    for k, zk in enumerate(z):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [-158.0, -179.0, zk]
        tilt = tilt_last and k == len(z) - 1
        ds.ImageOrientationPatient = [1, 0, 0, 0, 0.9950042, 0.0998334] if tilt else [1, 0, 0, 0, 1, 0]
        ds.save_as(folder / f"im{k}.dcm")


@pytest.mark.parametrize("z,needle", [([0.0, 5.0, 15.0, 20.0], "gap"), ([0.0, 5.0, 9.0, 15.0], "uneven"),
                                      ([0.0, 5.0, 5.0, 10.0], "duplicate")])
def test_dicom_series_with_missing_slice_or_uneven_spacing_is_an_error(tmp_path: Path, z, needle) -> None:
    """Bug 7: a median spacing and a first-to-last step gave a silently wrong affine."""
    _series_at(tmp_path / "s", z)
    with pytest.raises(DataError, match=needle) as info:
        read_image(tmp_path / "s")
    assert "--allow-uneven-slices" in str(info.value) and "im1.dcm" in str(info.value)


def test_dicom_series_uneven_spacing_accepted_with_flag_warns(tmp_path: Path, caplog) -> None:
    _series_at(tmp_path / "s", [0.0, 5.0, 15.0, 20.0])
    with caplog.at_level("WARNING"):
        vol, meta = read_image(tmp_path / "s", allow_uneven_slices=True)
    assert vol.shape[0] == 4 and "accepted" in caplog.text
    assert meta.slice_spacing == pytest.approx(20.0 / 3)  # the step the affine uses, first to last
    assert dicom_series_affine(meta)[2, 2] == pytest.approx(20.0 / 3)


def test_dicom_series_with_mixed_orientation_is_an_error(tmp_path: Path) -> None:
    _series_at(tmp_path / "s", [0.0, 5.0, 10.0], tilt_last=True)
    with pytest.raises(DataError, match="different orientations"):
        read_image(tmp_path / "s", allow_uneven_slices=True)


def test_nifti_reader_writer_roundtrip(tmp_path: Path) -> None:
    src = os.path.join(NIB_DATA, "anatomical.nii")  # (33, 41, 25), L-A-S, 2 mm
    vol, meta = read_image(src)
    stored = np.asanyarray(nib.load(src).dataobj)
    assert vol.shape == (25, 41, 33) and meta.axcodes == ("L", "A", "S")
    # display slice z: rows anterior->posterior, columns patient right->left. Stored x runs towards L,
    # so display column c is stored x = c; display row r is stored y = Y-1-r.
    np.testing.assert_array_equal(vol[7], stored[:, ::-1, 7].T.astype(np.float32))
    thr = vol > np.percentile(vol, 80)
    write_nifti_mask(tmp_path / "mask.nii.gz", thr, meta)
    out = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_allclose(out.affine, nib.load(src).affine)
    np.testing.assert_array_equal(np.asanyarray(out.dataobj) > 0, stored > np.percentile(vol, 80))
    assert out.get_data_dtype() == np.uint8


def test_nifti_non_square_pixels_and_4d() -> None:
    vol, meta = read_image(os.path.join(NIB_DATA, "standard.nii.gz"))  # zooms (1, 3, 2), RAS
    assert vol.shape == (7, 5, 4) and meta.spacing == (3.0, 1.0) and meta.slice_spacing == 2.0
    with pytest.raises(DataError, match="3-D volume"):
        read_image(os.path.join(NIB_DATA, "example4d.nii.gz"))


def test_write_mask_png_restores_input_size(tmp_path: Path) -> None:
    Image.fromarray(_gradient(40, 60)).save(tmp_path / "in.png")
    _, meta = read_image(tmp_path / "in.png")
    pred = np.zeros((16, 16), dtype=np.float32)
    pred[:8, :8] = 0.9
    write_mask_png(tmp_path / "out_mask.png", pred, meta)
    m, mmeta = read_mask(tmp_path / "out_mask.png")
    assert m.shape == (40, 60) and set(np.unique(m)) == {0, 255}
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_binarize_and_windows() -> None:
    m, nb = binarize(np.array([[0, 255]], dtype=np.uint8))
    assert m.tolist() == [[0, 1]] and not nb
    _, nb = binarize(np.array([[0, 128, 255]], dtype=np.uint8))
    assert nb
    assert parse_window("lung") == (-600.0, 1500.0)
    assert parse_window("40,400") == (40.0, 400.0)
    with pytest.raises(DataError, match="CENTER,WIDTH"):
        parse_window("wide")
    with pytest.raises(DataError, match="width"):
        parse_window("0,-5")
