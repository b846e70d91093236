"""Inference core: geometry round trip, PNG/DICOM/NIfTI outputs in the input's geometry, notes, explain, cache."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reclmis_core.errors import ConfigError, DataError
from reclmis_core.inference import (
    Failure,
    NoteTable,
    Prediction,
    PredictOptions,
    Predictor,
    collect_inputs,
    plan_geometry,
    restore_map,
    run_predict,
    to_model_pixels,
)
from reclmis_core.inference import write_prediction
from reclmis_core.inference.figures import upscale_factor

from tests.dicom_series import write_ct_series

NOTE = "Unilateral pulmonary infection, one infected area, lower left lung."
CORPUS = [
    NOTE,
    "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
    "Unilateral pulmonary infection, one infected area, middle right lung.",
]
NIB_DATA = Path(__import__("nibabel").__file__).parent / "tests" / "data"


@pytest.fixture(scope="module")
def ckpt(tiny_checkpoint) -> Path:
    """The session's tiny text-guided checkpoint (random weights: geometry and IO do not need a trained model)."""
    return tiny_checkpoint


@pytest.fixture(scope="module")
def predictor(ckpt) -> Predictor:
    return Predictor.from_checkpoint(ckpt, batch_size=4)


def _png(path: Path, arr: np.ndarray) -> Path:
    Image.fromarray(arr).save(path)
    return path


def _run(predictor, inputs, out, note=NOTE, **opts):
    specs, failures = collect_inputs([str(p) for p in inputs])
    return run_predict(predictor, specs, lambda s: note, out, PredictOptions(**opts), failures)


# ------------------------------------------------------------------------------------------ geometry


@pytest.mark.parametrize("shape,spacing", [((50, 70), None), ((64, 64), None), ((40, 90), (0.5, 0.5)),
                                           ((60, 30), (0.4, 0.8))])
def test_geometry_round_trip_returns_input_size(shape, spacing):
    geom = plan_geometry(shape, spacing, 32)
    img = np.random.default_rng(0).integers(0, 255, shape, dtype=np.uint8)
    assert to_model_pixels(img, geom).shape == (32, 32)
    back = restore_map(np.ones((32, 32), np.float32), geom)
    assert back.shape == shape
    if spacing is not None:  # anatomy keeps its shape: square pixels, padded field of view (as `prepare`)
        assert geom.square_h * min(spacing) == pytest.approx(shape[0] * spacing[0], abs=min(spacing))
        assert geom.square_w * min(spacing) == pytest.approx(shape[1] * spacing[1], abs=min(spacing))
        assert geom.padded == (geom.square_h != geom.square_w)


def test_restore_puts_a_region_back_where_it_was():
    geom = plan_geometry((40, 80), (1.0, 1.0), 32)  # padded vertically to 80x80
    img = np.zeros((40, 80), np.uint8)
    img[10:30, 50:70] = 255
    model_px = to_model_pixels(img, geom).astype(np.float32) / 255
    back = restore_map(model_px, geom) > 0.5
    truth = img > 0
    assert (back & truth).sum() / (back | truth).sum() > 0.8


# ------------------------------------------------------------------------------------------ PNG


def test_png_gray_rgb_16bit_masks_come_back_at_input_size(predictor, tmp_path):
    rng = np.random.default_rng(1)
    files = [
        _png(tmp_path / "gray.png", rng.integers(0, 255, (50, 70), dtype=np.uint8)),
        _png(tmp_path / "rgb.png", rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)),
        _png(tmp_path / "rgba.png", rng.integers(0, 255, (37, 45, 4), dtype=np.uint8)),
        _png(tmp_path / "deep.png", rng.integers(0, 60000, (33, 41), dtype=np.uint16)),
        _png(tmp_path / "big.tif", rng.integers(0, 255, (300, 260), dtype=np.uint8)),
    ]
    report = _run(predictor, files, tmp_path / "out", overlay=True, save_prob=True)
    assert not report.failures and report.n_ok == 5
    for f in files:
        h, w = np.asarray(Image.open(f)).shape[:2]
        stem = f.stem
        mask = np.asarray(Image.open(tmp_path / "out" / f"{stem}_mask.png"))
        assert mask.shape == (h, w) and set(np.unique(mask)) <= {0, 255}
        overlay = np.asarray(Image.open(tmp_path / "out" / f"{stem}_overlay.png"))
        k = upscale_factor(h, w)  # the picture at k x its size (k = 1 from 256 px), a caption band below
        assert overlay.ndim == 3 and overlay.shape[1] == w * k and overlay.shape[0] > h * k >= h
        assert np.asarray(Image.open(tmp_path / "out" / f"{stem}_prob.png")).shape == (h, w)
    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    entry = doc["inputs"][0]
    for key in ("input", "note", "threshold", "foreground_fraction", "lesion_area_px", "lesion_area_mm2", "outputs"):
        assert key in entry
    assert entry["shape"] == entry["file_shape"] == [50, 70] and entry["shape_order"] == ["row", "column"]
    assert entry["lesion_area_mm2"] is None  # a PNG has no spacing
    assert Path(entry["outputs"]["mask"]).is_file()


def test_note_cache_encodes_each_distinct_note_once_and_matches_uncached(ckpt, tmp_path):
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 255, (40, 40), dtype=np.uint8) for _ in range(6)]
    notes = [CORPUS[i % 2] for i in range(6)]
    cached = Predictor.from_checkpoint(ckpt, batch_size=4)
    plain = Predictor.from_checkpoint(ckpt, batch_size=4, note_cache=False)
    a = cached.predict_arrays(imgs, notes)
    b = plain.predict_arrays(imgs, notes)
    # tiny mirrors at test time: each note is also encoded with its sides swapped
    assert cached.runtime.mirror and cached.stats.text_encodes == 4 and plain.stats.text_encodes == 12
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=1e-5)


def test_batched_mixed_notes_match_one_by_one(ckpt, tmp_path):
    rng = np.random.default_rng(3)
    files = [_png(tmp_path / f"im{i}.png", rng.integers(0, 255, (36, 44), dtype=np.uint8)) for i in range(5)]
    specs, _ = collect_inputs([str(tmp_path)])
    jobs = [(s, CORPUS[i % 3]) for i, s in enumerate(specs)]
    batched = {r.spec.stem: r.prob for r in Predictor.from_checkpoint(ckpt, batch_size=4).predict(jobs)}
    single = {r.spec.stem: r.prob for r in Predictor.from_checkpoint(ckpt, batch_size=1).predict(jobs)}
    assert set(batched) == {f.stem for f in files}
    for k in batched:
        np.testing.assert_allclose(batched[k], single[k], atol=1e-5)


# ------------------------------------------------------------------------------------------ DICOM


def test_ct_small_to_dicom_seg_references_its_source(predictor, tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm"))
    source = pydicom.dcmread(src)
    report = _run(predictor, [src], tmp_path / "out", format="dicom-seg", threshold=0.3)
    assert not report.failures, report.failures
    seg_path = tmp_path / "out" / "CT_small_seg.dcm"
    seg = pydicom.dcmread(seg_path)
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns) == (128, 128)
    assert int(seg.NumberOfFrames) == 1 and seg.pixel_array.shape == (128, 128)
    ref = seg.ReferencedSeriesSequence[0]
    assert ref.SeriesInstanceUID == source.SeriesInstanceUID
    assert ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    frame_src = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence[0]
    assert frame_src.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
    entry = report.entries[0]
    mask = (seg.pixel_array > 0).astype(np.uint8)
    assert entry["lesion_area_px"] == int(mask.sum())
    assert entry["lesion_area_mm2"] == pytest.approx(mask.sum() * 0.661468**2, rel=1e-4)


def _fake_series(folder: Path, n: int = 3) -> list[str]:
    return write_ct_series(folder, n, reverse_file_order=True)  # file order differs from slice order on purpose


def test_dicom_series_to_nifti_and_dicom_seg(predictor, tmp_path):
    import nibabel as nib
    import pydicom

    uids = _fake_series(tmp_path / "series")
    report = _run(predictor, [tmp_path / "series"], tmp_path / "nii")
    assert not report.failures and report.entries[0]["kind"] == "dicom-series"
    img = nib.load(tmp_path / "nii" / "series_mask.nii.gz")
    assert img.shape == (128, 128, 3)
    entry = report.entries[0]  # shape in predict's (slice, row, column) order, file_shape in the NIfTI's
    assert entry["shape"] == [3, 128, 128] and entry["shape_order"] == ["slice", "row", "column"]
    assert entry["file_shape"] == list(img.shape)
    report = _run(predictor, [tmp_path / "series"], tmp_path / "seg", format="dicom-seg")
    seg = pydicom.dcmread(tmp_path / "seg" / "series_seg.dcm")
    assert int(seg.NumberOfFrames) == 3
    refs = [g.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
            for g in seg.PerFrameFunctionalGroupsSequence]
    assert sorted(refs) == sorted(uids)
    assert report.entries[0]["lesion_volume_mm3"] is not None or report.entries[0]["lesion_area_px"] == 0
    assert report.entries[0]["file_shape"] == [int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)]


# ------------------------------------------------------------------------------------------ NIfTI


def test_nifti_volume_mask_has_identical_affine_shape_and_zooms(predictor, tmp_path):
    import nibabel as nib

    src = NIB_DATA / "anatomical.nii"  # 33x41x25 int16, LAS: exercises the reorientation
    report = _run(predictor, [src], tmp_path / "out", save_prob=True, overlay=True)
    assert not report.failures, report.failures
    inp, out = nib.load(src), nib.load(tmp_path / "out" / "anatomical_mask.nii.gz")
    assert out.shape == inp.shape
    np.testing.assert_array_equal(out.affine, inp.affine)
    assert out.header.get_zooms() == inp.header.get_zooms()
    assert out.header.get_qform(coded=True)[1] == inp.header.get_qform(coded=True)[1]
    assert out.header.get_sform(coded=True)[1] == inp.header.get_sform(coded=True)[1]
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1}
    assert np.load(tmp_path / "out" / "anatomical_prob.npy").shape == inp.shape
    # predictions.json: shape in predict's (slice, row, column) order, named; file_shape as nibabel reads the file
    entry = report.entries[0]
    assert entry["file_shape"] == list(out.shape) == list(inp.shape) == [33, 41, 25]
    assert entry["shape"] == [25, 41, 33] and entry["shape_order"] == ["slice", "row", "column"]
    assert 0 <= entry["view_slice"] < entry["shape"][entry["shape_order"].index("slice")]
    # the mask volume is the prediction put back voxel for voxel: compare with the probabilities saved
    prob = np.load(tmp_path / "out" / "anatomical_prob.npy")
    np.testing.assert_array_equal(np.asarray(out.dataobj) > 0, prob > 0.5)
    assert report.entries[0]["lesion_volume_mm3"] is not None


def test_volume_with_png_format_fails_and_writes_nothing(predictor, tmp_path):
    specs, _ = collect_inputs([str(NIB_DATA / "standard.nii.gz")])
    (res,) = list(predictor.predict([(specs[0], NOTE)]))
    assert isinstance(res, Prediction)
    with pytest.raises(DataError, match="volume"):
        write_prediction(res, tmp_path, PredictOptions(format="png", overlay=True))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------ inputs, notes


def test_stems_are_unique_and_deterministic(tmp_path):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        _png(tmp_path / d / "scan.png", np.zeros((8, 8), np.uint8))
    _png(tmp_path / "other.png", np.zeros((8, 8), np.uint8))
    specs, failures = collect_inputs([str(tmp_path / "a"), str(tmp_path / "b" / "scan.png"),
                                      str(tmp_path / "*.png"), str(tmp_path / "nope.png")])
    assert [s.stem for s in specs] == ["a_scan", "b_scan", "other"]
    assert len(failures) == 1 and "nope.png" in failures[0].error


def test_notes_table_matches_by_path_name_and_stem(tmp_path):
    for name in ("p1.png", "p2.png", "p3.png"):
        _png(tmp_path / name, np.zeros((8, 8), np.uint8))
    csv = tmp_path / "notes.csv"
    csv.write_text("image,note\np1.png,first note\np2,second note\n" f"{tmp_path / 'p3.png'},third\n")
    table = NoteTable(csv)
    specs, _ = collect_inputs([str(tmp_path)])
    assert [table.get(s) for s in specs] == ["first note", "second note", "third"]
    bad = tmp_path / "bad.csv"
    bad.write_text("file_name,text_note\na,b\n")
    with pytest.raises(DataError, match="columns"):
        NoteTable(bad)


def test_missing_note_and_corrupt_input_fail_alone(predictor, tmp_path):
    good = _png(tmp_path / "good.png", np.full((20, 20), 90, np.uint8))
    other = _png(tmp_path / "other.png", np.full((20, 20), 90, np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    specs, _ = collect_inputs([str(tmp_path)])
    notes = {"good": NOTE, "broken": NOTE, "other": ""}
    report = run_predict(predictor, specs, lambda s: notes[s.stem], tmp_path / "out", PredictOptions())
    assert [e["stem"] for e in report.entries] == ["good"]
    errors = {Path(f.input).name: f.error for f in report.failures}
    assert set(errors) == {"broken.png", "other.png"} and "no note" in errors["other.png"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["good_mask.png", "predictions.json"]
    assert good.exists() and other.exists()


# ------------------------------------------------------------------------------------------ explain


def test_explain_writes_heat_map_and_word_weights(ckpt, tmp_path):
    pred = Predictor.from_checkpoint(ckpt, explain=True)
    f = _png(tmp_path / "x.png", np.random.default_rng(4).integers(0, 255, (45, 60), dtype=np.uint8))
    report = _run(pred, [f], tmp_path / "out")
    entry = report.entries[0]
    fig = np.asarray(Image.open(entry["outputs"]["explain"]))
    assert fig.ndim == 3 and fig.shape[0] >= 300
    words = [w["token"] for w in entry["word_weights"]]
    assert "lower" in " ".join(words) and "left" in " ".join(words)
    assert sum(w["weight"] for w in entry["word_weights"]) == pytest.approx(1.0, abs=1e-3)
    assert entry["patch_grid"] == [2, 2]  # 32 px / 16


def test_explain_needs_the_interest_module(tmp_path):
    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    cfg = build_config("tiny", overrides={"model": {"image_size": 32, "text": {"encoder": "none"}}})
    path = save_checkpoint(build_model(cfg.model), cfg, tmp_path / "imgonly")
    with pytest.raises(ConfigError, match="explain"):
        Predictor.from_checkpoint(path, explain=True)
    # an image-only model needs no note
    pred = Predictor.from_checkpoint(path)
    f = _png(tmp_path / "y.png", np.zeros((20, 24), np.uint8))
    report = _run(pred, [f], tmp_path / "out", note="")
    assert report.n_ok == 1 and not report.failures


# ------------------------------------------------------------------------------------------ the note matters


def _counterfactual(rng: np.random.Generator, n: int, size: int):
    """Two bright blobs per image (image-left and image-right); the note says which one is the target."""
    notes = {"left": "one infected area in the left half", "right": "one infected area in the right half"}
    yy, xx = np.mgrid[0:size, 0:size]
    imgs, masks, texts = [], [], []
    for i in range(n):
        img = rng.normal(60, 10, (size, size))
        blobs = {}
        for side, (x0, x1) in {"left": (6, 12), "right": (20, 26)}.items():
            cy, cx, r = rng.integers(8, 24), rng.integers(x0, x1), rng.uniform(3, 5)
            blobs[side] = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            img[blobs[side]] = 200
        side = ("left", "right")[i % 2]
        imgs.append(np.clip(img, 0, 255).astype(np.uint8))
        masks.append(blobs[side].astype(np.float32))
        texts.append(notes[side])
    return imgs, masks, texts, notes


def _train_counterfactual(model, opt, rng: np.random.Generator, size: int, steps: int = 70) -> None:
    import torch

    for _ in range(steps):
        imgs, masks, texts, _ = _counterfactual(rng, 16, size)
        x = torch.from_numpy(np.stack(imgs).astype(np.float32) / 255)[:, None].repeat(1, 3, 1, 1)
        tok = model.tokenize(texts)
        p = torch.sigmoid(model(x, tok.input_ids, tok.attention_mask).logits[:, 0])
        y = torch.from_numpy(np.stack(masks))
        loss = torch.nn.functional.binary_cross_entropy(p, y) + 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_changing_the_note_changes_the_prediction(tmp_path):
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(0)
    size = 32
    cfg = build_config("tiny", overrides={"model": {"image_size": size, "use_cvr": False, "use_clr": False,
                                                    "use_ccl": False, "dropout": 0.0}})
    rng = np.random.default_rng(0)
    _, _, _, notes = _counterfactual(rng, 2, size)
    model = build_model(cfg.model, corpus=list(notes.values()) * 4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast, and immune to a busy shared machine
    try:
        _train_counterfactual(model, opt, rng, size)
    finally:
        torch.set_num_threads(threads)
    ckpt = save_checkpoint(model.eval(), cfg, tmp_path / "trained")

    # counterfactual pairs: the same pixels, two notes; saved as PNG at a non-training size (64 px)
    imgs, _, _, _ = _counterfactual(np.random.default_rng(7), 4, size)
    files = []
    for i, img in enumerate(imgs):
        big = np.asarray(Image.fromarray(img).resize((64, 64), Image.Resampling.BILINEAR))
        files.append(_png(tmp_path / f"pair{i}.png", big))
    pred = Predictor.from_checkpoint(ckpt)
    specs, _ = collect_inputs([str(f) for f in files])
    left = [r.mask(0.5) for r in pred.predict([(s, notes["left"]) for s in specs])]
    right = [r.mask(0.5) for r in pred.predict([(s, notes["right"]) for s in specs])]
    assert pred.stats.text_encodes == 2
    for lm, rm in zip(left, right):
        assert lm.shape == (64, 64)
        assert not np.array_equal(lm, rm)
        # each note's mask sits on its own side of the image
        assert lm[:, :32].sum() > lm[:, 32:].sum() and rm[:, 32:].sum() > rm[:, :32].sum()


def test_unknown_window_is_a_usage_error(ckpt):
    with pytest.raises(DataError, match="window"):
        Predictor.from_checkpoint(ckpt, window="liver-ish")


def test_failure_type_is_reported_for_missing_files(predictor, tmp_path):
    specs, failures = collect_inputs([str(tmp_path / "missing.dcm")])
    assert not specs and isinstance(failures[0], Failure) and "not found" in failures[0].error
    shutil.rmtree(tmp_path, ignore_errors=True)


# ------------------------------------------------------------------------------------------ threshold, eval parity


@pytest.fixture(scope="module")
def ckpt_thr(tmp_path_factory) -> Path:
    """A tiny checkpoint whose infer.threshold is not 0.5 (what eval and validation use)."""
    import torch

    from reclmis_core.config import build_config
    from reclmis_core.engine.checkpoint import save_checkpoint
    from reclmis_core.models import build_model

    torch.manual_seed(1)
    cfg = build_config("tiny", overrides={"model": {"image_size": 32}, "infer": {"threshold": 0.7}})
    model = build_model(cfg.model, corpus=CORPUS * 3)
    return save_checkpoint(model, cfg, tmp_path_factory.mktemp("ckpt_thr") / "best")


def test_predict_defaults_threshold_from_checkpoint_and_flag_wins(ckpt_thr, tmp_path):
    pred = Predictor.from_checkpoint(ckpt_thr)
    assert pred.threshold == 0.7
    img = np.random.default_rng(0).integers(0, 255, (40, 50), dtype=np.uint8)
    src = _png(tmp_path / "a.png", img)
    report = _run(pred, [src], tmp_path / "default")
    doc = json.loads((tmp_path / "default" / "predictions.json").read_text())
    assert doc["threshold"] == 0.7 and report.entries[0]["threshold"] == 0.7
    specs, _ = collect_inputs([str(src)])
    (res,) = list(pred.predict([(specs[0], NOTE)]))
    assert report.entries[0]["foreground_fraction"] == round(res.foreground_fraction(0.7), 6)
    report = _run(pred, [src], tmp_path / "explicit", threshold=0.3)
    assert report.entries[0]["threshold"] == 0.3
    assert report.entries[0]["foreground_fraction"] == round(res.foreground_fraction(0.3), 6)


def test_predict_and_eval_give_identical_masks_on_the_same_images(ckpt_thr, tmp_path):
    import pandas as pd

    from reclmis_core.data.prepare import PrepareOptions, prepare_dataset
    from reclmis_core.engine.evaluator import evaluate_checkpoint

    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    rng = np.random.default_rng(3)
    rows = []
    for i in range(3):
        _png(src / "images" / f"i{i}.png", rng.integers(0, 255, (32, 32), dtype=np.uint8))
        m = np.zeros((32, 32), np.uint8)
        m[4 + i : 20, 6:22 - i] = 255
        _png(src / "masks" / f"i{i}.png", m)
        rows.append({"image": f"i{i}.png", "note": CORPUS[i], "split": "test"})
    pd.DataFrame(rows).to_csv(src / "notes.csv", index=False)
    data = tmp_path / "data"
    prepare_dataset(src, data, PrepareOptions(size=32, workers=1))
    result, eval_rows = evaluate_checkpoint(ckpt_thr, data, "test")
    assert result.threshold == 0.7
    manifest = pd.read_csv(data / "manifest.csv")
    pred = Predictor.from_checkpoint(ckpt_thr)
    by_id = {r["id"]: r for r in eval_rows}
    for _, row in manifest.iterrows():
        specs, _ = collect_inputs([str(data / row["image"])])
        (res,) = list(pred.predict([(specs[0], row["note"])]))
        mask = res.mask(pred.threshold).astype(bool)
        truth = np.asarray(Image.open(data / row["mask"])) > 0
        dice = 2 * (mask & truth).sum() / max(mask.sum() + truth.sum(), 1)
        assert by_id[row["id"]]["fg_pred"] == pytest.approx(mask.mean(), abs=1e-9)
        assert by_id[row["id"]]["dice"] == pytest.approx(dice, abs=1e-6)


def test_note_never_goes_into_dicom_seg_headers_unless_given(predictor, tmp_path):
    """Bug 8: the free-text note was written into SeriesDescription/ContentDescription."""
    import pydicom
    from pydicom.data import get_testdata_file

    src = Path(get_testdata_file("CT_small.dcm"))
    note = "Patient John Doe, 1970-01-01: unilateral pulmonary infection, lower left lung."
    _run(predictor, [src], tmp_path / "a", note=note, format="dicom-seg")
    seg = pydicom.dcmread(tmp_path / "a" / "CT_small_seg.dcm")
    texts = [str(el.value) for el in seg.iterall() if el.VR in ("LO", "LT", "ST", "UT", "SH", "PN", "UC")]
    assert not any("John" in t or "infection" in t for t in texts), [t for t in texts if "John" in t]
    assert seg.SeriesDescription == "RecLMIS SEG"
    _run(predictor, [src], tmp_path / "b", note=note, format="dicom-seg", seg_description="AI lesion mask v1")
    seg = pydicom.dcmread(tmp_path / "b" / "CT_small_seg.dcm")
    assert seg.SeriesDescription == "AI lesion mask v1" and seg.ContentDescription == "AI lesion mask v1"
