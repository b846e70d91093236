"""Bad-input corpus: every malformed file goes through the CLI (prepare, predict, train, eval).

Each case builds its input in ``tmp_path`` and checks the contract: exit 2 with one ``error:`` line naming the
file and the problem (or exit 0 where the input is legitimately fine), never a traceback, no partial output
files, and the good inputs of the same run still processed. The table of cases and outcomes is in
``docs_fragments/robustness.md``.
"""

from __future__ import annotations

import errno
import json
import pickle
import shutil
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from reclmis_cli.main import app

runner = CliRunner()
NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."
LONG_NOTE = ("Bilateral pulmonary infection, patchy ground glass opacity in the lower right lung. " * 120)[:10_000]
SCRIPT_NOTE = "双肺感染 — двусторонняя инфекция — عدوى رئوية ثنائية — 両肺感染 🫁🦠 lower left lung"


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------


def _gray(h: int = 40, w: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w), dtype=np.uint8)


def _mask(h: int = 40, w: int = 40) -> np.ndarray:
    m = np.zeros((h, w), dtype=np.uint8)
    m[h // 4: h // 2, w // 4: w // 2] = 255
    return m


def _png_bytes(arr: np.ndarray, fmt: str = "PNG") -> bytes:
    import io

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def _huge_png(path: Path, side: int = 10_000) -> None:
    """A valid side x side 8-bit gray PNG written row by row (a few MB on disk, never a big array in memory)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(1)
    row = b"\x00" * (side + 1)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def _dicom(path: Path, *, pixels: bool = True, transfer_syntax: str | None = None) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    if not pixels:
        del ds.PixelData
    if transfer_syntax is not None:  # claim a compressed syntax; the bytes are an encapsulated garbage frame
        from pydicom.encaps import encapsulate

        ds.file_meta.TransferSyntaxUID = transfer_syntax
        ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\x00" * 64])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=False)


def _nifti(path: Path, bad: float | None) -> None:
    import nibabel as nib

    data = np.random.default_rng(1).normal(size=(24, 24, 3)).astype(np.float32) * 100
    if bad is not None:
        data[3, 4, 1] = bad
    nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 3.0, 1.0])), str(path))


def _check_refused(res, *needles: str) -> None:
    """Exit 2, exactly one ``error:`` line, no traceback, every needle (file name, problem) in the output."""
    out = res.output
    assert res.exit_code == 2, out
    assert "Traceback" not in out, out
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert sum(line.lstrip().startswith("error:") for line in out.splitlines()) == 1, out
    for needle in needles:
        assert needle in out, (needle, out)


def _no_partials(folder: Path) -> None:
    if folder.exists():
        left = [p for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp-" in p.name or ".tmp." in p.name]
        assert not left, left


# --------------------------------------------------------------------------------------------------
# prepare: a "folder" layout (images/, masks/, notes.csv) with one good row and one bad thing
# --------------------------------------------------------------------------------------------------


def _folder_src(root: Path, extra: dict[str, tuple[bytes | Callable[[Path], None], bytes | None, str]] | None = None,
                notes_text: str | None = None) -> Path:
    """``good.png`` + for each ``name -> (image bytes|writer, mask bytes|None, note)`` one more row."""
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    (src / "images" / "good.png").write_bytes(_png_bytes(_gray()))
    (src / "masks" / "good.png").write_bytes(_png_bytes(_mask()))
    rows = [("good.png", NOTE)]
    for name, (img, mask, note) in (extra or {}).items():
        if callable(img):
            img(src / "images" / name)
        else:
            (src / "images" / name).write_bytes(img)
        if mask is not None:
            (src / "masks" / name).write_bytes(mask)
        rows.append((name, note))
    if notes_text is None:
        notes_text = "image,note\n" + "".join(f'{n},"{t}"\n' for n, t in rows)
    (src / "notes.csv").write_text(notes_text, encoding="utf-8")
    return src


GOOD_MASK = _png_bytes(_mask())
PNG_GOOD = _png_bytes(_gray(seed=2))
JPG_GOOD = _png_bytes(np.stack([_gray(seed=3)] * 3, axis=-1), "JPEG")

# name -> (build source(root) -> src, expected exit code, needles in the output)
PREPARE_CASES: dict[str, tuple[Callable[[Path], Path], int, tuple[str, ...]]] = {
    "truncated_png": (lambda r: _folder_src(r, {"bad.png": (PNG_GOOD[: len(PNG_GOOD) // 2], GOOD_MASK, NOTE)}),
                      2, ("bad.png", "unreadable")),
    "zero_byte_png": (lambda r: _folder_src(r, {"bad.png": (b"", GOOD_MASK, NOTE)}), 2, ("bad.png", "unreadable")),
    "truncated_jpeg": (lambda r: _folder_src(r, {"bad.jpg": (JPG_GOOD[: len(JPG_GOOD) // 3], GOOD_MASK, NOTE)}),
                       2, ("bad.jpg", "unreadable")),
    "zero_byte_jpeg": (lambda r: _folder_src(r, {"bad.jpg": (b"", GOOD_MASK, NOTE)}), 2, ("bad.jpg", "unreadable")),
    "text_named_png": (lambda r: _folder_src(r, {"bad.png": (b"patient: anonymous\nnot an image\n", GOOD_MASK,
                                                             NOTE)}), 2, ("bad.png", "unreadable")),
    "huge_10000px": (lambda r: _folder_src(r, {"bad.png": (_huge_png, GOOD_MASK, NOTE)}), 2,
                     ("bad.png", "10000x10000", "limit")),
    "mask_wrong_size": (lambda r: _folder_src(r, {"bad.png": (PNG_GOOD, _png_bytes(_mask(20, 30)), NOTE)}), 2,
                        ("bad.png", "size_mismatch")),
    "mask_truncated": (lambda r: _folder_src(r, {"bad.png": (PNG_GOOD, GOOD_MASK[:40], NOTE)}), 2,
                       ("masks/bad.png", "unreadable")),
    "dicom_without_pixels": (lambda r: _folder_src(r, {"bad.dcm": (lambda p: _dicom(p, pixels=False),
                                                                   _png_bytes(_mask(128, 128)), NOTE)}),
                             2, ("bad.dcm", "pixel data")),
    "dicom_undecodable_syntax": (lambda r: _folder_src(r, {"bad.dcm": (
        lambda p: _dicom(p, transfer_syntax="1.2.840.10008.1.2.4.100"), _png_bytes(_mask(128, 128)), NOTE)}),
        2, ("bad.dcm", "pixel data")),
    "csv_wrong_columns": (lambda r: _folder_src(r, notes_text="file,finding\ngood.png,x\n"), 2,
                          ("notes.csv", "missing column 'image'")),
    "empty_description": (lambda r: _folder_src(r, {"b.png": (PNG_GOOD, GOOD_MASK, "")}), 2,
                          ("notes.csv", "empty_note")),
    "duplicate_rows": (lambda r: _folder_src(r, notes_text=f'image,note\ngood.png,"{NOTE}"\ngood.png,"{NOTE}"\n'),
                       2, ("good", "duplicate_id")),
    "path_outside_source": (lambda r: _folder_src(r, notes_text=f'image,note\ngood.png,"{NOTE}"\n'
                                                                f'../../etc/passwd,"{NOTE}"\n'),
                            2, ("../../etc/passwd", "outside_source")),
    # legitimately fine inputs: exit 0
    "one_by_one_image": (lambda r: _folder_src(r, {"tiny.png": (_png_bytes(np.full((1, 1), 90, np.uint8)),
                                                                _png_bytes(np.full((1, 1), 255, np.uint8)), NOTE)}),
                         0, ()),
    "16bit_png": (lambda r: _folder_src(r, {"deep.png": (_png_bytes((_gray().astype(np.uint16) * 257)), GOOD_MASK,
                                                         NOTE)}), 0, ()),
    "rgba_png": (lambda r: _folder_src(r, {"alpha.png": (_png_bytes(np.dstack([_gray()] * 3 + [_mask()])),
                                                         GOOD_MASK, NOTE)}), 0, ()),
    "mask_non_binary": (lambda r: _folder_src(r, {"nb.png": (PNG_GOOD, _png_bytes((_mask() // 255) * np.arange(
        40, dtype=np.uint8)[None, :] * 6), NOTE)}), 0, ("non_binary_mask",)),
    "note_10000_chars": (lambda r: _folder_src(r, {"long.png": (PNG_GOOD, GOOD_MASK, LONG_NOTE)}), 0, ()),
    "note_scripts_emoji": (lambda r: _folder_src(r, {"intl.png": (PNG_GOOD, GOOD_MASK, SCRIPT_NOTE)}), 0, ()),
}


def _xlsx_missing_column(root: Path) -> Path:
    import pandas as pd

    src = _folder_src(root)
    (src / "notes.csv").unlink()
    pd.DataFrame({"image": ["good.png"], "comment": [NOTE]}).to_excel(src / "notes.xlsx", index=False)
    return src


def _non_utf8_csv(root: Path) -> Path:
    src = _folder_src(root)
    (src / "notes.csv").write_bytes("image,note\ngood.png,opacité basale droite, épanchement\n".encode("latin-1"))
    return src


def _nifti_src(root: Path, bad: float) -> Path:
    src = root / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    _nifti(src / "images" / "vol.nii.gz", bad)
    import nibabel as nib

    m = np.zeros((24, 24, 3), dtype=np.uint8)
    m[5:10, 5:10, :] = 1
    nib.save(nib.Nifti1Image(m, np.diag([1.5, 1.5, 3.0, 1.0])), str(src / "masks" / "vol.nii.gz"))
    (src / "notes.csv").write_text(f'image,note\nvol.nii.gz,"{NOTE}"\n')
    return src


PREPARE_CASES.update({
    "xlsx_missing_column": (_xlsx_missing_column, 2, ("notes.xlsx", "missing column 'note'")),
    "csv_not_utf8": (_non_utf8_csv, 2, ("notes.csv", "UTF-8")),
    "nifti_nan": (lambda r: _nifti_src(r, float("nan")), 2, ("vol.nii.gz", "NaN")),
    "nifti_inf": (lambda r: _nifti_src(r, float("inf")), 2, ("vol.nii.gz", "inf")),
})


@pytest.mark.parametrize("case", sorted(PREPARE_CASES))
def test_prepare_corpus(case: str, tmp_path: Path) -> None:
    build, code, needles = PREPARE_CASES[case]
    src = build(tmp_path)
    out = tmp_path / "data"
    res = runner.invoke(app, ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1"])
    if code == 2:
        _check_refused(res, *needles)
        assert not out.exists(), "prepare must write nothing when it fails"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["src"], "staging folder left behind"
    else:
        assert res.exit_code == 0, res.output
        assert "Traceback" not in res.output
        for needle in needles:
            assert needle in res.output or needle in (out / "dataset.json").read_text()
        import pandas as pd

        manifest = pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)
        assert len(manifest) == 2  # the good row and the fine one
        if case.startswith("note_"):
            notes = set(manifest["note"])
            assert (LONG_NOTE if case == "note_10000_chars" else SCRIPT_NOTE) in notes
        for rel in manifest["image"]:
            assert Image.open(out / rel).size == (32, 32)


def test_prepare_skip_bad_keeps_the_good_rows(tmp_path: Path) -> None:
    src = _folder_src(tmp_path, {"bad.png": (b"", GOOD_MASK, NOTE), "huge.png": (_huge_png, GOOD_MASK, NOTE)})
    out = tmp_path / "data"
    res = runner.invoke(app, ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1",
                              "--skip-bad"])
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "dataset.json").read_text())
    assert doc["n_images"] == 1 and sorted(doc["dropped"]) == ["bad", "huge"]


def test_prepare_unwritable_output(tmp_path: Path) -> None:
    src = _folder_src(tmp_path)
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    res = runner.invoke(app, ["prepare", str(src), "--out", str(blocker / "data"), "--size", "32", "--workers", "1"])
    _check_refused(res, "not_a_folder")


def test_prepare_disk_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder_src(tmp_path, {"second.png": (PNG_GOOD, GOOD_MASK, NOTE)})
    _disk_full_after(monkeypatch, 1)
    out = tmp_path / "data"
    res = runner.invoke(app, ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1"])
    _check_refused(res, "No space left")
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


_FSIZE_RUNNER = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from reclmis_cli.main import app
app(sys.argv[2:])
"""


def test_prepare_real_file_size_limit(tmp_path: Path) -> None:
    """A kernel-enforced limit (RLIMIT_FSIZE, like a nearly full tmpfs): the first big PNG write fails."""
    import subprocess
    import sys

    src = _folder_src(tmp_path, {"second.png": (PNG_GOOD, GOOD_MASK, NOTE)})
    out = tmp_path / "data"
    proc = subprocess.run([sys.executable, "-c", _FSIZE_RUNNER, "20000", "prepare", str(src), "--out", str(out),
                           "--size", "512", "--workers", "1"], capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output and "File too large" in output, output
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, n_ok: int) -> None:
    """Every file write after the first ``n_ok`` writes half its bytes, then fails like a full disk (ENOSPC)."""
    real = Path.write_bytes
    calls = [0]

    def write_bytes(self: Path, data: bytes) -> int:
        calls[0] += 1
        if calls[0] <= n_ok:
            return real(self, data)
        real(self, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_bytes", write_bytes)


# --------------------------------------------------------------------------------------------------
# predict: one good image next to each bad one in the same run
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    return tiny_checkpoint


def _predict(ckpt: Path, inputs: list[Path], out: Path, *extra: str, note: str | None = NOTE):
    args = ["predict", *map(str, inputs), "--checkpoint", str(ckpt), "--out", str(out), "--device", "cpu"]
    if note is not None:
        args += ["--note", note]
    return runner.invoke(app, [*args, *extra])


def _writer(data: bytes) -> Callable[[Path], None]:
    return lambda p: p.write_bytes(data)


# name -> (file name, writer, expected exit code, needles)
PREDICT_CASES: dict[str, tuple[str, Callable[[Path], None], int, tuple[str, ...]]] = {
    "truncated_png": ("bad.png", _writer(PNG_GOOD[: len(PNG_GOOD) // 2]), 2, ("bad.png", "corrupt")),
    "zero_byte_png": ("bad.png", _writer(b""), 2, ("bad.png", "corrupt")),
    "truncated_jpeg": ("bad.jpg", _writer(JPG_GOOD[: len(JPG_GOOD) // 3]), 2, ("bad.jpg", "corrupt")),
    "zero_byte_jpeg": ("bad.jpg", _writer(b""), 2, ("bad.jpg", "corrupt")),
    "text_named_png": ("bad.png", _writer(b"just some text\n"), 2, ("bad.png", "corrupt")),
    "huge_10000px": ("bad.png", _huge_png, 2, ("bad.png", "10000x10000", "limit")),
    "nifti_nan": ("bad.nii.gz", lambda p: _nifti(p, float("nan")), 2, ("bad.nii.gz", "NaN")),
    "dicom_without_pixels": ("bad.dcm", lambda p: _dicom(p, pixels=False), 2, ("bad.dcm", "pixel data")),
    "dicom_undecodable_syntax": ("bad.dcm", lambda p: _dicom(p, transfer_syntax="1.2.840.10008.1.2.4.100"), 2,
                                 ("bad.dcm", "pixel data")),
    "one_by_one_image": ("tiny.png", _writer(_png_bytes(np.full((1, 1), 90, np.uint8))), 0, ()),
    "16bit_png": ("deep.png", _writer(_png_bytes(_gray().astype(np.uint16) * 257)), 0, ()),
    "rgba_png": ("alpha.png", _writer(_png_bytes(np.dstack([_gray()] * 3 + [_mask()]))), 0, ()),
}


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "good.png"
    path.parent.mkdir()
    path.write_bytes(PNG_GOOD)
    return path


@pytest.mark.parametrize("case", sorted(PREDICT_CASES))
def test_predict_corpus(case: str, ckpt: Path, good: Path, tmp_path: Path) -> None:
    name, write, code, needles = PREDICT_CASES[case]
    bad = good.parent / name
    write(bad)
    out = tmp_path / "out"
    res = _predict(ckpt, [good.parent], out)
    files = sorted(p.name for p in out.iterdir())
    stem = name.split(".")[0]
    if code == 2:
        _check_refused(res, *needles)
        assert not [f for f in files if f.startswith(stem + "_")], files  # nothing for the bad input
    else:
        assert res.exit_code == 0, res.output
        assert f"{stem}_mask.png" in files
        h, w = np.asarray(Image.open(bad)).shape[:2]
        assert Image.open(out / f"{stem}_mask.png").size == (w, h)  # the input's own geometry
    assert "good_mask.png" in files  # the good input of the same run is complete
    doc = json.loads((out / "predictions.json").read_text())
    assert doc["n_ok"] == (2 if code == 0 else 1) and doc["n_failed"] == (0 if code == 0 else 1)
    _no_partials(out)


@pytest.mark.parametrize("note", [LONG_NOTE, SCRIPT_NOTE], ids=["note_10000_chars", "note_scripts_emoji"])
def test_predict_unusual_notes_work(note: str, ckpt: Path, good: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = _predict(ckpt, [good], out, note=note)
    assert res.exit_code == 0, res.output
    doc = json.loads((out / "predictions.json").read_text(encoding="utf-8"))
    assert doc["inputs"][0]["note"] == note


@pytest.mark.parametrize(
    ("case", "content", "needles"),
    [
        ("notes_not_utf8", "image,note\ngood.png,opacité basale\n".encode("latin-1"), ("notes.csv", "UTF-8")),
        ("notes_wrong_columns", b"file,finding\ngood.png,x\n", ("notes.csv", "'image' and 'note'")),
        ("notes_empty_description", b'image,note\ngood.png,""\n', ("good.png", "no note")),
    ],
)
def test_predict_bad_notes_table(case: str, content: bytes, needles: tuple[str, ...], ckpt: Path, good: Path,
                                 tmp_path: Path) -> None:
    csv = tmp_path / "notes.csv"
    csv.write_bytes(content)
    out = tmp_path / "out"
    res = _predict(ckpt, [good], out, "--notes", str(csv), note=None)
    _check_refused(res, *needles)
    assert not [p for p in out.glob("*_mask.png")] if out.exists() else True


def test_predict_unwritable_output(ckpt: Path, good: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")
    res = _predict(ckpt, [good], blocker / "out")
    _check_refused(res, "not_a_folder")


def test_predict_disk_full_keeps_no_partial_file(ckpt: Path, good: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    second = good.parent / "second.png"
    second.write_bytes(PNG_GOOD)
    out = tmp_path / "out"
    _disk_full_after(monkeypatch, 1)  # good_mask.png fits, second_mask.png hits a full disk
    res = _predict(ckpt, [good, second], out)
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert "second.png" in res.output and "No space left" in res.output
    files = sorted(p.name for p in out.iterdir())
    assert "good_mask.png" in files and "second_mask.png" not in files, files
    _no_partials(out)


# --------------------------------------------------------------------------------------------------
# Untrusted checkpoints through the CLI (predict / eval / train --resume)
# --------------------------------------------------------------------------------------------------


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("where", ["file", "weights", "resume_state"])
def test_pickle_payload_is_refused_and_never_runs(where: str, ckpt: Path, good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker), protocol=2)
    if where == "file":  # a .pt file given where a checkpoint folder is expected
        target = tmp_path / "model.pt"
        target.write_bytes(payload)
        res = _predict(target, [good], tmp_path / "out")
        _check_refused(res, "model.pt", "pickle")
    elif where == "weights":  # a pickle disguised as model.safetensors
        target = tmp_path / "ckpt"
        shutil.copytree(ckpt, target)
        (target / "model.safetensors").write_bytes(payload)
        res = _predict(target, [good], tmp_path / "out")
        _check_refused(res, "model.safetensors", "safetensors")
    else:  # a payload in the resume state of a run folder (accelerate's random_states_0.pkl)
        run = tmp_path / "run"
        shutil.copytree(ckpt, run / "last")
        state = run / "last" / "state"
        state.mkdir()
        (state / "trainer_state.json").write_text(json.dumps({"epoch": 1}))
        shutil.copyfile(ckpt / "model.safetensors", state / "model.safetensors")
        (state / "random_states_0.pkl").write_bytes(payload)
        for name in ("optimizer.bin", "scheduler.bin"):
            (state / name).write_bytes(payload)
        res = runner.invoke(app, ["train", "--resume", "--out", str(run), "--cpu", "--data",
                                  str(_tiny_data(tmp_path))])
        _check_refused(res, "state")
    assert not marker.exists(), "the pickle payload ran"


def _tiny_data(root: Path) -> Path:
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    out = root / "data"
    if not out.exists():
        write_synthetic(out, SyntheticConfig(n_train=4, n_val=2, n_test=2, size=64, seed=3), workers=1)
    return out


@pytest.mark.parametrize("what", ["preset", "format"])
def test_incompatible_checkpoint_says_what_differs(what: str, ckpt: Path, good: Path, tmp_path: Path) -> None:
    target = tmp_path / "ckpt"
    shutil.copytree(ckpt, target)
    doc = json.loads((target / "config.json").read_text())
    if what == "preset":  # weights of the 32 px tiny model under a config that asks for a wider model
        doc["config"]["model"]["base_channels"] = doc["config"]["model"].get("base_channels", 16) * 2
        needle = "differ in shape"
    else:
        doc["format_version"] = 99
        needle = "newer than this reclmis supports"
    (target / "config.json").write_text(json.dumps(doc))
    res = _predict(target, [good], tmp_path / "out")
    _check_refused(res, needle)
    res = runner.invoke(app, ["eval", "--checkpoint", str(target), "--data", str(_tiny_data(tmp_path))])
    _check_refused(res, needle)


# --------------------------------------------------------------------------------------------------
# train / eval on a bad DATA_DIR manifest
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    return _tiny_data(tmp_path_factory.mktemp("rb_data"))


def _edit_manifest(data_dir: Path, tmp_path: Path, edit: Callable[[list[str]], list[str]]) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy)
    lines = (copy / "manifest.csv").read_text().splitlines()
    (copy / "manifest.csv").write_text("\n".join(edit(lines)) + "\n")
    return copy


def _corrupt_first_image(data_dir: Path, tmp_path: Path) -> Path:
    copy = _edit_manifest(data_dir, tmp_path, lambda lines: lines)
    import pandas as pd

    first = pd.read_csv(copy / "manifest.csv", dtype=str)
    (copy / first[first["split"] == "train"]["image"].iloc[0]).write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return copy


def _outside(lines: list[str]) -> list[str]:
    header = lines[0].split(",")
    row = lines[1].split(",")
    row[header.index("image")] = "../../etc/passwd"
    return [lines[0], ",".join(row), *lines[2:]]


MANIFEST_CASES = {
    "manifest_path_outside": (lambda d, t: _edit_manifest(d, t, _outside), ("../../etc/passwd", "outside")),
    "manifest_missing_column": (lambda d, t: _edit_manifest(d, t, lambda ls: [ls[0].replace("note", "text"),
                                                                               *ls[1:]]),
                                ("manifest.csv", "missing column")),
    "manifest_corrupt_image": (_corrupt_first_image, ("unreadable image",)),
}


# eval reads the test split only; the corrupt file is a train image, so that case runs through train alone
@pytest.mark.parametrize(("case", "command"), [(c, cmd) for c in sorted(MANIFEST_CASES) for cmd in ("train", "eval")
                                               if (c, cmd) != ("manifest_corrupt_image", "eval")])
def test_train_eval_bad_manifest(case: str, command: str, data_dir: Path, ckpt: Path, tmp_path: Path) -> None:
    build, needles = MANIFEST_CASES[case]
    bad = build(data_dir, tmp_path)
    if command == "train":
        run = tmp_path / "run"
        res = runner.invoke(app, ["train", "--data", str(bad), "--out", str(run), "--preset", "tiny", "--epochs",
                                  "1", "--batch-size", "2", "--set", "model.image_size=32", "--cpu"])
    else:
        res = runner.invoke(app, ["eval", "--checkpoint", str(ckpt), "--data", str(bad)])
    _check_refused(res, *needles)
