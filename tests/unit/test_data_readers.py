"""The input-reader registry: every registered format is detected and read; unknown inputs name the readable ones."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from reclmis_core.data.meta import ImageMeta
from reclmis_core.data.readers import READERS, ReadOptions, detect_kind, read_image, register_reader, strip_suffix
from reclmis_core.errors import DataError

CT_SMALL = get_testdata_file("CT_small.dcm")


def _raster(tmp: Path) -> Path:
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(tmp / "x.png")
    return tmp / "x.png"


def _dicom(tmp: Path) -> Path:
    return Path(shutil.copy(CT_SMALL, tmp / "ct.dcm"))


def _series(tmp: Path) -> Path:
    folder = tmp / "series"
    folder.mkdir()
    for i in range(3):
        ds = pydicom.dcmread(CT_SMALL)
        ds.SOPInstanceUID = f"{ds.SOPInstanceUID}.{i}"
        ds.ImagePositionPatient = [0.0, 0.0, float(i)]
        ds.InstanceNumber = i + 1
        ds.save_as(folder / f"s{i}.dcm")
    return folder


def _nifti(tmp: Path) -> Path:
    nib.Nifti1Image(np.zeros((4, 5, 3), np.float32), np.eye(4)).to_filename(tmp / "vol.nii.gz")  # RAS voxels
    return tmp / "vol.nii.gz"


SAMPLES = {"raster": (_raster, (8, 10)), "dicom": (_dicom, (128, 128)), "dicom-series": (_series, (3, 128, 128)),
           "nifti": (_nifti, (3, 5, 4))}  # NIfTI: (Z, H, W) display slices of an (X, Y, Z) volume


def test_the_built_in_readers_are_registered_in_order():
    assert READERS.names() == ("raster", "dicom", "dicom-series", "nifti")
    assert set(SAMPLES) == set(READERS.names())  # the test below reads one input per registered reader


@pytest.mark.parametrize("kind", list(SAMPLES))
def test_every_registered_reader_is_detected_and_reads(tmp_path: Path, kind: str) -> None:
    make, shape = SAMPLES[kind]
    path = make(tmp_path)
    assert detect_kind(path) == kind
    arr, meta = read_image(path)
    assert isinstance(meta, ImageMeta) and meta.kind == kind and arr.shape == shape


def test_a_dicom_file_without_an_ending_is_found_by_its_content(tmp_path: Path) -> None:
    path = Path(shutil.copy(CT_SMALL, tmp_path / "IM0001"))
    assert detect_kind(path) == "dicom"


def test_unknown_inputs_name_the_readable_formats(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match=r"unsupported file type '\.txt' \(use PNG/JPEG/TIFF, DICOM \.dcm, NIfTI"):
        detect_kind(tmp_path / "notes.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="expected a DICOM series folder"):
        detect_kind(tmp_path / "empty")
    with pytest.raises(DataError, match="unknown input format 'niftii'. Did you mean 'nifti'"):
        READERS.get("niftii")


def test_strip_suffix_takes_the_longest_registered_ending():
    assert strip_suffix("scan.nii.gz") == "scan" and strip_suffix("a.b.PNG") == "a.b"
    assert strip_suffix("IM0001") == "IM0001"


def test_a_registered_reader_is_used_by_read_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(READERS, "_entries", dict(READERS._entries))  # registered for this test only

    @register_reader("npy", describe="NumPy .npy", suffixes=(".npy",))
    def read_npy(path: Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
        arr = np.load(path)
        return arr, ImageMeta(str(path), "npy", arr.shape, arr.shape, str(arr.dtype))

    np.save(tmp_path / "x.npy", np.ones((4, 5), np.float32))
    arr, meta = read_image(tmp_path / "x.npy")
    assert meta.kind == "npy" and arr.shape == (4, 5)
    (tmp_path / "y.txt").write_text("")
    with pytest.raises(DataError, match="NumPy .npy"):
        read_image(tmp_path / "y.txt")
