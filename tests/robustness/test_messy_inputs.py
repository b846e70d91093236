"""Messy hospital inputs through ``reclmis predict`` (issue 22): silent wrong answers, exports nothing could read,
tracebacks and misleading messages. Every input is generated here, small; each case says what the run must do:
exit 2 with one ``error:`` line naming the file and the problem, or exit 0 with the right outputs.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .test_bad_inputs import NOTE, PNG_GOOD, _check_refused, _huge_png, _no_partials, _predict, ckpt  # noqa: F401

# --------------------------------------------------------------------------------------------------
# Builders: each writes its inputs below ``root`` and returns the paths to pass to predict
# --------------------------------------------------------------------------------------------------


def _nifti_data(shape: tuple[int, ...] = (20, 24, 3)) -> np.ndarray:
    return (np.random.default_rng(1).normal(size=shape) * 100).astype(np.float32)


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray | None = None, cls: str = "Nifti1Image") -> Path:
    import nibabel as nib

    img = getattr(nib, cls)(data, np.diag([1.5, 1.5, 3.0, 1.0]) if affine is None else affine)
    nib.save(img, str(path))
    return path


def nifti_bad_crc(root: Path) -> list[Path]:
    """Corrupted voxels that still inflate to the right length: the gzip trailer's CRC is the old data's."""
    data = _nifti_data()
    good = _save_nifti(root / "good.nii.gz", data).read_bytes()
    data[5:9, 5:9, 1] = 9999.0
    bad = _save_nifti(root / "scan.nii.gz", data).read_bytes()
    (root / "good.nii.gz").unlink()
    (root / "scan.nii.gz").write_bytes(bad[:-8] + good[-8:])  # same length (ISIZE), the old data's CRC32
    return [root / "scan.nii.gz"]


def nifti_zero_axis(root: Path) -> list[Path]:
    """An sform whose second voxel axis has zero length (nibabel refuses to write one: patch the header)."""
    import io

    import nibabel as nib

    path = _save_nifti(root / "scan.nii", _nifti_data())
    raw = path.read_bytes()
    hdr = nib.Nifti1Header.from_fileobj(io.BytesIO(raw))
    hdr["srow_y"] = [0.0, 0.0, 0.0, 0.0]
    hdr["sform_code"], hdr["qform_code"] = 1, 0
    path.write_bytes(hdr.binaryblock + raw[348:])
    return [path]


def nifti_no_voxels(root: Path) -> list[Path]:
    import nibabel as nib

    path = _save_nifti(root / "scan.nii", _nifti_data())
    raw = bytearray(path.read_bytes())
    hdr = nib.Nifti1Header.from_fileobj(__import__("io").BytesIO(bytes(raw)))
    hdr.set_data_shape((0,))
    path.write_bytes(hdr.binaryblock + bytes(raw[348:]))
    return [path]


def nifti_truncated_gz(root: Path) -> list[Path]:
    path = _save_nifti(root / "scan.nii.gz", _nifti_data())
    path.write_bytes(path.read_bytes()[:-200])
    return [path]


def nifti2_gz(root: Path) -> list[Path]:
    return [_save_nifti(root / "scan.nii.gz", _nifti_data(), cls="Nifti2Image")]


def nifti_4d(root: Path) -> list[Path]:
    return [_save_nifti(root / "scan.nii.gz", _nifti_data((20, 24, 3, 2)))]


def _jpeg(path: Path, arr: np.ndarray, orientation: int | None = None) -> Path:
    img = Image.fromarray(arr)
    extra = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        extra["exif"] = exif
    img.save(path, format="JPEG", quality=95, **extra)
    return path


def _stored(h: int = 40, w: int = 64) -> np.ndarray:
    arr = np.zeros((h, w), np.uint8)
    arr[: h // 2, : w // 4] = 200  # a bright block in the stored top-left corner
    return arr


def _tiff_pages(path: Path, pages: list[np.ndarray]) -> Path:
    imgs = [Image.fromarray(p) for p in pages]
    imgs[0].save(path, save_all=True, append_images=imgs[1:])
    return path


def _ct(seed: int = 0):
    import pydicom
    from pydicom.data import get_testdata_file

    return pydicom.dcmread(get_testdata_file("CT_small.dcm"))


def _series(folder: Path, n: int = 3, uid: str | None = None, prefix: str = "s") -> str:
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = uid or generate_uid()
    for z in range(n):
        ds = _ct()
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = z + 1
        pos = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * z]
        ds.save_as(folder / f"{prefix}{z + 1}.dcm")
    return uid


def two_series_one_folder(root: Path) -> list[Path]:
    _series(root / "ct", prefix="a")
    _series(root / "ct", prefix="b")
    return [root / "ct"]


def _dicomdir(root: Path, n_series: int = 2) -> Path:
    """A CD/USB export: DICOMDIR + PT000000/ST000000/SE00000k/IM00000z (no endings, nested)."""
    import pydicom
    from pydicom.fileset import FileSet

    tmp = root / "loose"
    uids = [_series(tmp / f"s{k}", prefix=f"k{k}_") for k in range(n_series)]
    fs = FileSet()
    for f in sorted(tmp.rglob("*.dcm")):
        fs.add(pydicom.dcmread(f))
    fs.write(root / "cd")
    (root / "uids.txt").write_text("\n".join(uids))
    return root / "cd"


def dicomdir_export(root: Path) -> list[Path]:
    return [_dicomdir(root)]


def dicomdir_missing_file(root: Path) -> list[Path]:
    cd = _dicomdir(root, 1)
    next(cd.rglob("IM000001")).unlink()
    return [cd]


def _multiframe(path: Path, frame_of_reference: bool) -> Path:
    ds = _ct()
    frame = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([frame, frame[::-1], frame[:, ::-1]]).astype(frame.dtype).tobytes()
    if not frame_of_reference:
        del ds.FrameOfReferenceUID
    ds.save_as(path)
    return path


def _encapsulated(path: Path, syntax: str) -> Path:
    from pydicom.encaps import encapsulate

    ds = _ct()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=False)
    return path


def dicom_rle(root: Path) -> list[Path]:
    from pydicom.uid import RLELossless

    ds = _ct()
    ds.compress(RLELossless)
    ds.save_as(root / "rle.dcm")
    return [root / "rle.dcm"]


def dicom_deflated(root: Path) -> list[Path]:
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = _ct()
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(root / "deflated.dcm", enforce_file_format=True)
    return [root / "deflated.dcm"]


def dicom_monochrome1(root: Path) -> list[Path]:
    ds = _ct()
    ds.PhotometricInterpretation = "MONOCHROME1"
    ds.save_as(root / "mono1.dcm")
    return [root / "mono1.dcm"]


def dicom_no_spacing(root: Path) -> list[Path]:
    ds = _ct()
    del ds.PixelSpacing
    ds.save_as(root / "nospacing.dcm")
    return [root / "nospacing.dcm"]


def dicom_no_extension(root: Path) -> list[Path]:
    _ct().save_as(root / "IM000001")
    return [root / "IM000001"]


def _file(name: str, write: Callable[[Path], object]) -> Callable[[Path], list[Path]]:
    def build(root: Path) -> list[Path]:
        write(root / name)
        return [root / name]

    return build


def _pydicom_test_file(name: str) -> str:
    from pydicom.data import get_testdata_file

    return get_testdata_file(name)


def _newline_name(root: Path) -> list[Path]:
    path = root / "bad\nname.png"
    path.write_bytes(PNG_GOOD[:50])
    return [path]


def _huge_beyond_pil(root: Path) -> list[Path]:
    _huge_png(root / "huge.png", side=14_000)  # 196 MP: above PIL's own 2 x 89 MP bomb limit
    return [root / "huge.png"]


# name -> (build(root) -> inputs, extra args, exit code, needles, check(out, root) or None)
Check = Callable[[Path, Path], None] | None


def _png_frames(stem: str, n: int, shape: tuple[int, int]) -> Check:
    def check(out: Path, root: Path) -> None:
        for i in range(1, n + 1):
            assert np.asarray(Image.open(out / f"{stem}_mask_{i:04d}.png")).shape == shape
        entry = json.loads((out / "predictions.json").read_text())["inputs"][0]
        assert entry["format"] == "png" and entry["shape"][0] == n

    return check


def _has(*names: str) -> Check:
    def check(out: Path, root: Path) -> None:
        files = {p.name for p in out.iterdir()}
        assert set(names) <= files, files

    return check


CASES: dict[str, tuple[Callable[[Path], list[Path]], tuple[str, ...], int, tuple[str, ...], Check]] = {
    # NIfTI
    "nifti_gz_bad_crc": (nifti_bad_crc, (), 2, ("scan.nii.gz", "CRC"), None),
    "nifti_zero_axis_affine": (nifti_zero_axis, (), 2, ("scan.nii", "zero length"), None),
    "nifti_no_voxels": (nifti_no_voxels, (), 2, ("scan.nii", "no voxels"), None),
    "nifti_truncated_gz": (nifti_truncated_gz, (), 2, ("scan.nii.gz", "unreadable NIfTI"), None),
    "nifti_4d": (nifti_4d, (), 2, ("scan.nii.gz", "3-D volume"), None),
    "nifti2_gz": (nifti2_gz, (), 0, (), _has("scan_mask.nii.gz")),
    # rasters
    "jpeg_exif_orientation_6": (_file("side.jpg", lambda p: _jpeg(p, _stored(), 6)), (), 0, (),
                                _has("side_mask.png")),
    "tiff_multipage": (_file("pages.tif", lambda p: _tiff_pages(p, [_stored()] * 3)), (), 0, (),
                       _png_frames("pages", 3, (40, 64))),
    "tiff_pages_of_different_sizes": (_file("pages.tif", lambda p: _tiff_pages(p, [_stored(), _stored(30, 30)])),
                                      (), 2, ("pages.tif", "page 2"), None),
    "tiff_16bit": (_file("deep.tif", lambda p: Image.fromarray(_stored().astype(np.uint16) * 250).save(p)), (), 0,
                   (), _has("deep_mask.png")),
    "tiff_float32": (_file("float.tif", lambda p: Image.fromarray(_stored().astype(np.float32) / 7).save(p)), (), 0,
                     (), _has("float_mask.png")),
    "png_1bit": (_file("bits.png", lambda p: Image.fromarray(_stored() > 0).save(p)), (), 0, (), _has("bits_mask.png")),
    "png_palette": (_file("pal.png", lambda p: Image.fromarray(_stored()).convert("P").save(p)), (), 0, (),
                    _has("pal_mask.png")),
    "png_gray_alpha": (_file("la.png", lambda p: Image.fromarray(_stored()).convert("LA").save(p)), (), 0, (),
                       _has("la_mask.png")),
    "jpeg_cmyk": (_file("cmyk.jpg", lambda p: Image.fromarray(_stored()).convert("CMYK").save(p)), (), 0, (),
                  _has("cmyk_mask.png")),
    "bmp": (_file("scan.bmp", lambda p: Image.fromarray(_stored()).save(p)), (), 0, (), _has("scan_mask.png")),
    "png_above_pil_limit": (_huge_beyond_pil, (), 2, ("huge.png", "67 MP limit"), None),
    "file_name_with_newline": (_newline_name, (), 2, ("bad\\nname.png", "corrupt"), None),
    # DICOM
    "dicom_two_series_one_folder": (two_series_one_folder, (), 2, ("ct", "holds 2 DICOM series", "--series"),
                                    None),
    "dicomdir_export": (dicomdir_export, (), 0, (), _has("SE000000_mask.nii.gz", "SE000001_mask.nii.gz")),
    "dicomdir_lists_missing_file": (dicomdir_missing_file, (), 2, ("DICOMDIR", "missing"), None),
    "dicom_multiframe_auto": (_file("mf.dcm", lambda p: _multiframe(p, False)), (), 0, (),
                              _png_frames("mf", 3, (128, 128))),
    "dicom_multiframe_png": (_file("mf.dcm", lambda p: _multiframe(p, False)), ("--format", "png"), 0, (),
                             _png_frames("mf", 3, (128, 128))),
    "dicom_multiframe_nifti": (_file("mf.dcm", lambda p: _multiframe(p, False)), ("--format", "nifti"), 2,
                               ("mf.dcm", "--format png"), None),
    "dicom_multiframe_seg_without_frame_of_reference": (_file("mf.dcm", lambda p: _multiframe(p, False)),
                                                        ("--format", "dicom-seg"), 2,
                                                        ("mf.dcm", "FrameOfReferenceUID"), None),
    "dicom_multiframe_with_frame_of_reference_auto": (_file("mf.dcm", lambda p: _multiframe(p, True)), (), 0, (),
                                                      _png_frames("mf", 3, (128, 128))),
    "dicom_multiframe_seg_without_positions": (_file("mf.dcm", lambda p: _multiframe(p, True)),
                                               ("--format", "dicom-seg"), 2, ("mf.dcm", "per-frame plane positions",
                                                                              "--format png"), None),
    "dicom_jpeg2000_bad_data": (_file("j2k.dcm", lambda p: _encapsulated(p, "1.2.840.10008.1.2.4.90")), (), 2,
                                ("j2k.dcm", "JPEG 2000", "pixel data"), None),
    "dicom_jpegls_bad_data": (_file("jls.dcm", lambda p: _encapsulated(p, "1.2.840.10008.1.2.4.80")), (), 2,
                              ("jls.dcm", "JPEG-LS", "pixel data"), None),
    "dicom_jpeg_baseline_bad_data": (_file("jpg.dcm", lambda p: _encapsulated(p, "1.2.840.10008.1.2.4.50")), (), 2,
                                     ("jpg.dcm", "JPEG Baseline", "pixel data"), None),
    "dicom_colour_multiframe": (
        _file("SC_rgb_rle_2frame.dcm", lambda p: shutil.copy(_pydicom_test_file(p.name), p)), (), 2,
        ("SC_rgb_rle_2frame.dcm", "colour multi-frame"), None),
    "dicom_rle_lossless": (dicom_rle, (), 0, (), _has("rle_mask.png")),
    "dicom_deflated": (dicom_deflated, (), 0, (), _has("deflated_mask.png")),
    "dicom_monochrome1": (dicom_monochrome1, (), 0, (), _has("mono1_mask.png")),
    "dicom_without_pixel_spacing": (dicom_no_spacing, (), 0, (), _has("nospacing_mask.png")),
    "dicom_without_file_ending": (dicom_no_extension, (), 0, (), _has("IM000001_mask.png")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_messy_input(case: str, ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    build, extra, code, needles, check = CASES[case]
    root = tmp_path / "in"
    root.mkdir()
    inputs = build(root)
    out = tmp_path / "out"
    res = _predict(ckpt, inputs, out, *extra)
    assert "Traceback" not in res.output, res.output
    if code == 2:
        _check_refused(res, *needles)
        assert not list(out.glob("*_mask*")) and not list(out.glob("*_seg*")) if out.exists() else True
    else:
        assert res.exit_code == 0, res.output
        if check is not None:
            check(out, root)
    _no_partials(out)
