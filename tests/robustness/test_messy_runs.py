"""Issue 22, beyond single files: notes tables, EXIF orientation round trips, DICOM series selection, output
folders (read-only, re-used, shared by concurrent runs) and what reaches stderr."""

from __future__ import annotations

import errno
import json
import logging
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from reclmis_core.data.readers import read_image
from reclmis_core.data.writers import write_mask_png
from reclmis_core.inference.run import merge_results, results_lock

from .test_bad_inputs import NOTE, PNG_GOOD, _check_refused, _predict, ckpt  # noqa: F401
from .test_messy_inputs import _dicomdir, _jpeg, _series, _stored


def _notes(tmp_path: Path, text: str) -> Path:
    csv = tmp_path / "in" / "notes.csv"
    csv.write_text(text, encoding="utf-8")
    return csv


@pytest.fixture
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    for sub in ("a", "b"):
        (folder / sub).mkdir(parents=True)
        (folder / sub / "scan.png").write_bytes(PNG_GOOD)
    return folder


# -- notes tables: the rule prepare applies (one row per image) ------------------------------------


@pytest.mark.parametrize("second", [NOTE, "Unilateral pulmonary infection, one infected area, lower left lung."],
                         ids=["same_note", "different_note"])
def test_two_rows_for_one_image_are_refused_naming_both(second: str, ckpt: Path, inputs: Path,  # noqa: F811
                                                        tmp_path: Path) -> None:
    csv = _notes(tmp_path, f'image,note\na/scan.png,"{NOTE}"\nb/scan.png,"{NOTE}"\na/scan.png,"{second}"\n')
    res = _predict(ckpt, [inputs / "a" / "scan.png"], tmp_path / "out", "--notes", str(csv), note=None)
    _check_refused(res, "notes.csv", "rows 2 and 4", "duplicate_id")
    assert not (tmp_path / "out" / "scan_mask.png").exists()


def test_a_name_two_rows_share_is_ambiguous_not_missing(ckpt: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    csv = _notes(tmp_path, f'image,note\nx/scan.png,"{NOTE}"\ny/scan.png,"{NOTE}"\n')
    res = _predict(ckpt, [inputs / "a" / "scan.png"], tmp_path / "out", "--notes", str(csv), note=None)
    _check_refused(res, "scan.png", "2 rows", "row 2", "row 3", "by path")
    assert "no note" not in res.output


# -- EXIF orientation: applied on read, undone on write -------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_read_upright_and_mask_back_on_the_stored_grid(orientation: int, tmp_path: Path) -> None:
    stored = _stored()
    path = _jpeg(tmp_path / "x.jpg", stored, orientation)
    arr, meta = read_image(path)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    assert np.array_equal(arr, upright)  # what a viewer shows, what the model sees
    write_mask_png(tmp_path / "m.png", arr > 100, meta)
    back = Image.open(tmp_path / "m.png")
    assert np.array_equal(np.asarray(back) > 0, np.asarray(Image.open(path)) > 100)  # the stored pixel grid
    assert back.getexif().get(0x0112, 1) == orientation  # viewers turn it as they turn the input


def test_exif_orientation_6_through_predict(ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    (tmp_path / "in").mkdir()
    path = _jpeg(tmp_path / "in" / "side.jpg", _stored(40, 64), 6)
    res = _predict(ckpt, [path], tmp_path / "out", "--overlay")
    assert res.exit_code == 0, res.output
    assert Image.open(tmp_path / "out" / "side_mask.png").size == (64, 40)  # stored: 64 wide, 40 high
    entry = json.loads((tmp_path / "out" / "predictions.json").read_text())["inputs"][0]
    assert entry["shape"] == [64, 40] and entry["file_shape"] == [40, 64]  # upright in the model, stored on disk


# -- DICOM: several series in one folder, DICOMDIR exports, --series ------------------------------


def test_series_option_picks_one_series_of_a_folder(ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    _series(tmp_path / "in" / "ct", prefix="a")
    uid = _series(tmp_path / "in" / "ct", prefix="b")
    res = _predict(ckpt, [tmp_path / "in" / "ct"], tmp_path / "out", "--series", uid)
    assert res.exit_code == 0, res.output
    entry = json.loads((tmp_path / "out" / "predictions.json").read_text())["inputs"][0]
    assert entry["kind"] == "dicom-series" and entry["shape"][0] == 3


@pytest.mark.parametrize("given", ["folder", "dicomdir_file"])
def test_dicomdir_gives_every_series_or_the_one_picked(given: str, ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    cd = _dicomdir(tmp_path)
    arg = cd if given == "folder" else cd / "DICOMDIR"
    res = _predict(ckpt, [arg], tmp_path / "out")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert [e["kind"] for e in doc["inputs"]] == ["dicom-series", "dicom-series"]
    uid = (tmp_path / "uids.txt").read_text().split()[1]
    res = _predict(ckpt, [arg], tmp_path / "one", "--series", uid)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "one" / "predictions.json").read_text())["n_ok"] == 1
    res = _predict(ckpt, [arg], tmp_path / "none", "--series", "1.2.3.4")
    _check_refused(res, "no DICOM series 1.2.3.4")


# -- output folders --------------------------------------------------------------------------------


def _read_only(monkeypatch: pytest.MonkeyPatch, probe_too: bool) -> None:
    """Writes and removals fail with EROFS like a read-only mount (root ignores chmod, so it is simulated)."""
    def erofs(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("reclmis_core.utils.tempfile.mkstemp", erofs)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: erofs())
    if probe_too:
        monkeypatch.setattr("reclmis_core.inference.run.tempfile.TemporaryFile", erofs)


@pytest.mark.parametrize("probe_too", [True, False], ids=["whole_folder", "each_write"])
def test_read_only_output_is_one_line(probe_too: bool, ckpt: Path, inputs: Path, tmp_path: Path,  # noqa: F811
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    _read_only(monkeypatch, probe_too)
    res = _predict(ckpt, [inputs / "a" / "scan.png"], out)
    assert "Traceback" not in res.output, res.output
    assert res.exit_code == 2 and "Read-only file system" in res.output, res.output


def test_second_run_into_one_folder_keeps_the_first_runs_entries(ckpt: Path, inputs: Path,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _predict(ckpt, [inputs / "a" / "scan.png"], out).exit_code == 0
    assert _predict(ckpt, [inputs / "b" / "scan.png"], out).exit_code == 0  # same stem, another input
    assert _predict(ckpt, [inputs / "a" / "scan.png"], out).exit_code == 0  # the first input again
    doc = json.loads((out / "predictions.json").read_text())
    by_input = {Path(e["input"]).parent.name: e["stem"] for e in doc["inputs"]}
    assert by_input == {"a": "scan", "b": "scan_2"} and doc["n_ok"] == 2 and len(doc["runs"]) == 3
    assert (out / "scan_mask.png").exists() and (out / "scan_2_mask.png").exists()


def test_concurrent_runs_lose_no_entries(tmp_path: Path) -> None:
    path = tmp_path / "predictions.json"

    def run(i: int) -> None:
        entry = {"input": f"/x/{i}.png", "stem": f"s{i}"}
        with results_lock(tmp_path):
            old = json.loads(path.read_text()) if path.exists() else None
            doc = merge_results(old, {"created": str(i)}, [entry], [])
            tmp = Path(tempfile.mkstemp(dir=tmp_path)[1])
            tmp.write_text(json.dumps(doc))
            tmp.replace(path)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    doc = json.loads(path.read_text())
    assert sorted(e["stem"] for e in doc["inputs"]) == sorted(f"s{i}" for i in range(12))
    assert len(doc["runs"]) == 12


def test_unreadable_predictions_json_is_kept_aside(ckpt: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.json").write_text("{ not json")
    res = _predict(ckpt, [inputs / "a" / "scan.png"], out)
    assert res.exit_code == 0 and "kept it as predictions.json.unreadable-" in res.output, res.output
    assert len(list(out.glob("predictions.json.unreadable-*"))) == 1


# -- stderr: one line per message ------------------------------------------------------------------


def test_third_party_records_are_one_line_without_traceback(capsys: pytest.CaptureFixture) -> None:
    from reclmis_cli.console import setup_logging

    setup_logging()
    try:
        raise RuntimeError("decoder failed\nsecond line")
    except RuntimeError:
        logging.getLogger("pydicom.pixels.decoders.base").error("cannot decode\nframe 1", exc_info=True)
    logging.getLogger("reclmis_core.test").warning("file a\nb.png: \x1b[31mbad\x1b[0m")
    err = capsys.readouterr().err
    assert "Traceback" not in err and "second line" not in err, err
    assert err.splitlines() == ["error: cannot decode (pydicom.pixels.decoders.base)", "warning: file a\\nb.png: bad"]


def test_convert_reference_refusal_names_the_global_in_plain_text(tmp_path: Path) -> None:
    import pickle

    from reclmis_core.engine.convert_reference import _unpickling_reason

    exc = pickle.UnpicklingError("Weights only load failed. This file can still be loaded, to do so you have two "
                                 "options, \x1b[1mdo those steps only if you trust the source\x1b[0m.\n(1) ...\n"
                                 "WeightsUnpickler error: Unsupported global: GLOBAL os.system was not an allowed "
                                 "global by default.\n\nCheck the documentation")
    reason = _unpickling_reason(exc)
    assert reason == "Unsupported global: GLOBAL os.system was not an allowed global by default"
    assert "\x1b" not in _unpickling_reason(pickle.UnpicklingError("\x1b[1mbold\x1b[0m. more"))


# -- int8 export: gated on agreement by default ------------------------------------------------------


def test_int8_export_that_disagrees_is_refused_without_verify(ckpt: Path, tmp_path: Path,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime")
    import reclmis_core.export.quantize as quantize
    from typer.testing import CliRunner

    from reclmis_cli.main import app

    def disagreeing(src, dst, calib, holdout):
        (dst / "segmentation.int8.onnx").write_bytes(b"")
        return {"mask_dice_vs_fp32": 0.28, "min_mask_dice_vs_fp32": 0.0, "n_compared": 8, "n_both_empty": 0}

    monkeypatch.setattr(quantize, "quantize_export", disagreeing)
    out = tmp_path / "int8"
    res = CliRunner().invoke(app, ["export", "--checkpoint", str(ckpt), "--format", "onnx", "--int8", "--out",
                                   str(out), "--calib-images", "4"])
    _check_refused(res, "mean Dice 0.2800", "--int8-min-dice 0.98", "nothing was written")
    assert not out.exists()


# -- prepare: the same readers ---------------------------------------------------------------------


def _prepare(src: Path, out: Path):
    from typer.testing import CliRunner

    from reclmis_cli.main import app

    return CliRunner().invoke(app, ["prepare", str(src), "--out", str(out), "--size", "32", "--workers", "1"])


def test_prepare_refuses_a_multipage_tiff_row(tmp_path: Path) -> None:
    from .test_bad_inputs import GOOD_MASK, _folder_src
    from .test_messy_inputs import _tiff_pages

    src = _folder_src(tmp_path, {"pages.tif": (lambda p: _tiff_pages(p, [_stored(40, 40)] * 2), GOOD_MASK, NOTE)})
    res = _prepare(src, tmp_path / "data")
    _check_refused(res, "pages.tif", "2 frames/pages")


def test_prepare_warns_when_image_and_mask_orientations_differ(tmp_path: Path) -> None:
    from .test_bad_inputs import GOOD_MASK, _folder_src

    src = _folder_src(tmp_path, {"side.jpg": (lambda p: _jpeg(p, _stored(40, 40), 6), GOOD_MASK, NOTE)})
    res = _prepare(src, tmp_path / "data")
    assert res.exit_code == 0 and "exif_orientation" in res.output, res.output


def test_nibabel_writes_through_our_handler_not_its_own(tmp_path: Path) -> None:
    from .test_messy_inputs import _nifti_data, _save_nifti

    read_image(_save_nifti(tmp_path / "x.nii.gz", _nifti_data()))
    own = [h for h in logging.getLogger("nibabel.global").handlers if type(h) is logging.StreamHandler]
    assert not own  # its records now propagate to the CLI's one-line handler


def test_interrupted_run_records_the_inputs_it_finished(ckpt: Path, inputs: Path, tmp_path: Path) -> None:  # noqa: F811
    from reclmis_core.inference import Predictor, collect_inputs, run_predict
    from reclmis_core.inference.writers import PredictOptions

    predictor = Predictor.from_checkpoint(ckpt, batch_size=1, workers=0)
    specs, _ = collect_inputs([inputs / "a" / "scan.png", inputs / "b" / "scan.png"])

    def ctrl_c(done: int, total: int, stem: str) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_predict(predictor, specs, lambda s: NOTE, tmp_path / "out", PredictOptions(), progress=ctrl_c)
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert doc["interrupted"] is True and [e["stem"] for e in doc["inputs"]] == ["a_scan"]


def test_out_inside_the_input_folder_does_not_predict_its_own_masks(ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "x.png").write_bytes(PNG_GOOD)
    for _ in range(2):
        res = _predict(ckpt, [folder], folder, "--overlay")
        assert res.exit_code == 0, res.output
    doc = json.loads((folder / "predictions.json").read_text())
    assert [e["stem"] for e in doc["inputs"]] == ["x"]  # not x_mask, x_overlay


def test_a_tiff_stack_above_the_pixel_limit_is_refused_unread(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from reclmis_core.errors import DataError

    from .test_messy_inputs import _tiff_pages

    monkeypatch.setattr("reclmis_core.data.readers.raster.MAX_STACK_PIXELS", 5000)
    path = _tiff_pages(tmp_path / "stack.tif", [_stored()] * 3)
    with pytest.raises(DataError, match="3 pages of 64x40"):
        read_image(path)


def test_a_dicom_without_pixels_says_what_it_is(tmp_path: Path) -> None:
    import pydicom
    from pydicom.data import get_testdata_file

    from reclmis_core.errors import DataError

    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.PixelData
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"  # Encapsulated PDF Storage
    ds.save_as(tmp_path / "report.dcm")
    with pytest.raises(DataError, match=r"no pixel data \(SOP class Encapsulated PDF Storage\): it is not an image"):
        read_image(tmp_path / "report.dcm")


def test_a_run_that_stops_before_the_model_leaves_no_output_folder(ckpt: Path, tmp_path: Path) -> None:  # noqa: F811
    res = _predict(ckpt, [tmp_path / "missing.png"], tmp_path / "out")
    _check_refused(res, "missing.png")
    assert not (tmp_path / "out").exists()
