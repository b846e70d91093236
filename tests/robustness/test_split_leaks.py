"""Split hygiene in ``prepare``: exact and near-duplicate images and shared DICOM patients/studies across splits."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from typer.testing import CliRunner

from reclmis_cli.main import app
from reclmis_core.data.leaks import find_leaks

from .test_bad_inputs import NOTE, _check_refused, _mask

runner = CliRunner()


def _texture(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random image (distinct per seed; random noise would not survive a JPEG round trip)."""
    small = np.random.default_rng(seed).integers(0, 255, (8, 8), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.BICUBIC))


def _jpeg_brighter(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    ImageEnhance.Brightness(Image.fromarray(arr)).enhance(1.15).save(buf, format="JPEG", quality=70)
    return buf.getvalue()


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _source(root: Path, files: dict[str, tuple[bytes, str]]) -> Path:
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rows = []
    for name, (data, split) in files.items():
        (src / "images" / name).write_bytes(data)
        shape = (128, 128) if name.endswith(".dcm") else (64, 64)
        (src / "masks" / (Path(name).stem + ".png")).write_bytes(_png(_mask(*shape)))
        rows.append(f'{name},"{NOTE}",{split}')
    (src / "notes.csv").write_text("image,note,split\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return src


def _planted(root: Path) -> Path:
    a, b = _texture(1), _texture(2)
    return _source(root, {
        "a.png": (_png(a), "train"), "a_again.png": (_png(a), "test"),  # exact
        "b.png": (_png(b), "train"), "b_export.jpg": (_jpeg_brighter(b), "val"),  # re-encoded, brighter
        "c.png": (_png(_texture(3)), "train"), "d.png": (_png(_texture(4)), "test"),  # unrelated
        "e.png": (_png(_texture(6)), "train"), "e_mirrored.png": (_png(_texture(6)[:, ::-1].copy()), "test"),
    })


def _prepare(src: Path, out: Path, *extra: str):
    return runner.invoke(app, ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1", *extra])


def test_planted_duplicates_are_reported(tmp_path: Path) -> None:
    res = _prepare(_planted(tmp_path), tmp_path / "data")
    assert res.exit_code == 0, res.output
    assert "split leaks: 1 exact and 2 near-duplicate" in res.output
    leaks = json.loads((tmp_path / "data" / "dataset.json").read_text())["leaks"]
    assert leaks["counts"] == {"exact": 1, "near": 2, "patient": 0, "study": 0, "total": 3}
    assert {(p["a"], p["b"]) for p in leaks["exact"]} == {("a", "a_again")}
    assert {(p["a"], p["b"], p["mirrored"]) for p in leaks["near"]} == {("b", "b_export", False),
                                                                          ("e", "e_mirrored", True)}


def test_fail_on_leaks_writes_nothing(tmp_path: Path) -> None:
    res = _prepare(_planted(tmp_path), tmp_path / "data", "--fail-on-leaks")
    _check_refused(res, "split leaks", "a (train) ~ a_again (test)", "--fail-on-leaks")
    assert not (tmp_path / "data").exists()


def test_clean_splits_report_none(tmp_path: Path) -> None:
    src = _source(tmp_path, {f"x{i}.png": (_png(_texture(10 + i)), s) for i, s in
                             enumerate(["train", "train", "val", "test"])})
    res = _prepare(src, tmp_path / "data", "--fail-on-leaks")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "data" / "dataset.json").read_text())["leaks"]["counts"]["total"] == 0


def _dicom_bytes(seed: int, patient: str, study: str) -> bytes:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    pixels = (_texture(seed, 128).astype(np.int16) * 4).astype(ds.pixel_array.dtype)
    ds.PixelData = pixels.tobytes()
    ds.PatientID, ds.StudyInstanceUID = patient, study
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


def test_shared_patient_and_study_across_splits(tmp_path: Path) -> None:
    src = _source(tmp_path, {"p1_a.dcm": (_dicom_bytes(1, "PAT-1", "1.2.3.1"), "train"),
                             "p1_b.dcm": (_dicom_bytes(2, "PAT-1", "1.2.3.1"), "test"),
                             "p2.dcm": (_dicom_bytes(3, "PAT-2", "1.2.3.2"), "test")})
    res = _prepare(src, tmp_path / "data")
    assert res.exit_code == 0, res.output
    leaks = json.loads((tmp_path / "data" / "dataset.json").read_text())["leaks"]
    assert leaks["counts"]["patient"] == 1 and leaks["counts"]["study"] == 1
    assert "PAT-1" not in json.dumps(leaks)  # PatientIDs only as a digest
    assert leaks["patient"][0]["splits"] == {"test": ["images/p1_b.dcm"], "train": ["images/p1_a.dcm"]}


def test_blank_images_are_not_compared(tmp_path: Path) -> None:
    blank = np.zeros((64, 64), np.uint8)
    src = _source(tmp_path, {"blank1.png": (_png(blank), "train"), "blank2.png": (_png(blank + 1), "test")})
    res = _prepare(src, tmp_path / "data")
    assert res.exit_code == 0, res.output
    leaks = json.loads((tmp_path / "data" / "dataset.json").read_text())["leaks"]
    assert leaks["counts"]["total"] == 0 and leaks["flat_images_not_compared"] == 2


@pytest.mark.parametrize("rows", [[], [{"id": "x", "split": "train", "image": "x.png"}]])
def test_find_leaks_on_tiny_inputs(rows: list, tmp_path: Path) -> None:
    if rows:
        (tmp_path / "x.png").write_bytes(_png(_texture(5)))
    assert find_leaks(tmp_path, rows)["counts"]["total"] == 0
