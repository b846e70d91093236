"""`notes`: note wording and parsing, zone/area maths on hand-built masks, phantom accuracy, orientation."""

from __future__ import annotations

import copy
import itertools
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file

from reclmis_core.data.readers.nifti import display_to_nifti
from reclmis_core.data.writers import encode_png
from reclmis_core.data.note_text import ZONE_CODES, format_note, parse_note, zone_code, zones_field
from reclmis_core.data.notes import (
    LungGeometry,
    NotesOptions,
    check_notes,
    describe_areas,
    estimate_lung_field,
    generate_notes,
    left_on_image_right,
    lung_geometry,
    min_area_pixels,
    otsu_threshold,
    zone_map_2d,
)
from reclmis_core.data.synthetic import SyntheticConfig, generate_item, write_synthetic
from reclmis_core.errors import DataError

UL, ML, LL = zone_code("left", "upper"), zone_code("left", "middle"), zone_code("left", "lower")
UR, MR, LR = zone_code("right", "upper"), zone_code("right", "middle"), zone_code("right", "lower")


# ----------------------------------------------------------------------------------------- wording


def test_format_and_parse_round_trip_every_zone_set() -> None:
    for k in range(1, 7):
        for codes in itertools.combinations(range(1, 7), k):
            for style in ("qata", "mosmed", "plain"):
                parsed = parse_note(format_note([[c] for c in codes], style))
                assert parsed is not None and parsed.zones == set(codes), (codes, style)
                assert parsed.count == (None if style == "plain" else k)


def test_qata_spans_and_real_qata_wording() -> None:
    assert format_note([[UL, ML, LL], [MR, LR]]) == ("Bilateral pulmonary infection, two infected areas, all left "
                                                     "lung and middle lower right lung.")
    assert format_note([[MR, LR]], "mosmed") == ("Unilateral pulmonary infection, one infected area, middle right "
                                                 "lung and lower right lung.")
    assert format_note([], "qata") == "No pulmonary infection."
    p = parse_note("Bilateral pulmonary infection, three infected areas, upper middle left lung and lower right lung.")
    assert p is not None and p.zones == {UL, ML, LR} and p.count == 3 and p.sides == {"left", "right"}
    p = parse_note("Unilateral pulmonary infection, one infected area, all right lung.")
    assert p is not None and p.zones == {UR, MR, LR} and p.count == 1
    assert parse_note("No pulmonary infection.").empty
    assert parse_note("Some opacity.") is None
    assert zones_field([LR, UL, UL]) == "lower_right;upper_left"


# ------------------------------------------------------------------------------- zones and areas


def _two_lungs(h: int = 60, w: int = 80) -> np.ndarray:
    lung = np.zeros((h, w), dtype=bool)
    lung[6:36, 8:30] = True  # image-left lung: rows 6..35 -> thirds 6-15, 16-25, 26-35
    lung[12:54, 50:72] = True  # image-right lung: rows 12..53 -> thirds 12-25, 26-39, 40-53
    return lung


def test_geometry_and_zone_map_from_hand_built_lungs() -> None:
    lung = _two_lungs()
    geo = lung_geometry(lung)
    assert geo.extents == ((6, 35), (12, 53))
    assert 30 < geo.midline < 50
    zones = zone_map_2d(lung.shape, geo, left_on_right=True)
    # image left = patient's right
    assert ZONE_CODES[int(zones[6, 10])] == ("right", "upper")
    assert ZONE_CODES[int(zones[20, 10])] == ("right", "middle")
    assert ZONE_CODES[int(zones[35, 10])] == ("right", "lower")
    assert ZONE_CODES[int(zones[25, 60])] == ("left", "upper")
    assert ZONE_CODES[int(zones[26, 60])] == ("left", "middle")
    assert ZONE_CODES[int(zones[53, 60])] == ("left", "lower")
    flipped = zone_map_2d(lung.shape, geo, left_on_right=False)
    assert ZONE_CODES[int(flipped[6, 10])] == ("left", "upper")
    # a half without lung gets no zone
    one = lung.copy()
    one[:, 40:] = False
    geo1 = lung_geometry(one)
    assert geo1.extents[1] is None and not zone_map_2d(one.shape, geo1, True)[:, 60].any()


def test_lesion_pixels_extend_their_lung() -> None:
    lung = _two_lungs()
    lesion = np.zeros_like(lung)
    lesion[0:8, 12:20] = True  # a lesion hiding the top of the image-left lung
    assert lung_geometry(lung, lesion).extents[0] == (0, 35)


def test_areas_counts_spans_and_min_area() -> None:
    lung = _two_lungs()
    zones = zone_map_2d(lung.shape, lung_geometry(lung), True)
    mask = np.zeros(lung.shape, dtype=np.uint8)
    mask[7:12, 10:15] = 1  # upper right (patient)
    mask[18:21, 10:13] = 1  # middle right: a second area in the same lung
    mask[40:52, 55:60] = 1  # lower left
    mask[30:32, 60:62] = 1  # 4 px: below min area
    areas, unplaced = describe_areas(mask, zones, min_pixels=5)
    assert unplaced == 0 and sorted(areas) == sorted([[UR], [MR], [LL]])
    areas, _ = describe_areas(mask, zones, min_pixels=1)
    assert len(areas) == 4
    # one area across two thirds: 50/50 covers both; 90/10 only the majority (span_share 0.3)
    span = np.zeros_like(mask)
    span[21:31, 55:60] = 1  # rows 21-25 upper left, 26-30 middle left
    assert describe_areas(span, zones, 1)[0] == [sorted([UL, ML])]
    span[:] = 0
    span[16:26, 55:60] = 1  # rows 16..25 upper, nothing below
    span[26, 55] = 1
    assert describe_areas(span, zones, 1)[0] == [[UL]]
    # diagonal pixels are one area (8-connectivity)
    diag = np.zeros_like(mask)
    diag[40, 56] = diag[41, 57] = diag[42, 58] = 1
    assert len(describe_areas(diag, zones, 1)[0]) == 1
    # a lesion where no lung was found is counted as unplaced, never guessed
    no_zone = np.zeros_like(zones)
    assert describe_areas(mask, no_zone, 5) == ([], 3)


def test_min_area_and_otsu() -> None:
    assert min_area_pixels(12, (100, 100)) == 12
    assert min_area_pixels(0.001, (100, 200)) == 20
    vals = np.concatenate([np.full(100, 40), np.full(100, 200)]).astype(np.uint8)
    assert 40 < otsu_threshold(vals) <= 200


def test_estimated_lungs_match_the_phantom_anatomy() -> None:
    for i in range(6):
        it = generate_item(SyntheticConfig(size=96, seed=3), "train", i)[0]
        lung = estimate_lung_field(it.image)
        geo = lung_geometry(lung, it.mask > 0)
        assert geo.extents[0] is not None and geo.extents[1] is not None
        zones = zone_map_2d(lung.shape, geo, True)
        # every named lesion pixel lies (mostly) in its true zone
        named = np.isin(it.lesion_labels, it.named)
        agree = (zones[named] == it.lesion_labels[named]).mean()
        assert agree > 0.9, (i, agree)


# ----------------------------------------------------------------------------------- phantom set


def test_phantom_notes_side_zones_count(tmp_path: Path) -> None:
    """Against the generator's truth (the named zones): side >= 99 %, zone set >= 90 %, count >= 90 %."""
    cfg = SyntheticConfig(n_train=60, n_val=0, n_test=0, size=96, seed=11)
    write_synthetic(tmp_path / "src", cfg, layout="qata", workers=1)
    result = generate_notes(tmp_path / "src", NotesOptions(workers=1))
    truth = {it.id: it.named for i in range(60) for it in generate_item(cfg, "train", i)}
    got = {r.id: r for r in result.rows}
    side = zones = count = 0
    for rid, named in truth.items():  # an image left out (problem) counts as wrong
        r = got.get(rid)
        if r is None:
            continue
        side += {ZONE_CODES[c][0] for c in r.zones} == {ZONE_CODES[c][0] for c in named}
        zones += r.zones == set(named)
        count += len(r.areas) == len(named)
    n = len(truth)
    assert side / n >= 0.99 and zones / n >= 0.9 and count / n >= 0.9, (side, zones, count, n)
    # --check reads the same truth from the source's QaTa notes
    check = check_notes(result.rows)
    assert check["n_compared"] == len(result.rows) and check["side"] >= 0.99 and check["zones"] >= 0.9


def _folder_source(root: Path, n: int, size: int = 64, empty: int = 0) -> list:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    items = []
    for i in range(n):
        it = generate_item(SyntheticConfig(size=size, seed=2), "train", i)[0]
        mask = np.zeros_like(it.mask) if i < empty else it.mask
        (root / "images" / f"{it.id}.png").write_bytes(encode_png(it.image))
        (root / "masks" / f"{it.id}.png").write_bytes(encode_png(mask * np.uint8(255)))
        items.append(it)
    return items


def test_folder_without_notes_empty_masks_and_lungs_none(tmp_path: Path) -> None:
    _folder_source(tmp_path / "src", 5, empty=2)
    res = generate_notes(tmp_path / "src", NotesOptions(workers=1))
    assert res.layout == "folder" and len(res.rows) == 5
    assert sum(r.note == "No pulmonary infection." for r in res.rows) == 2
    res = generate_notes(tmp_path / "src", NotesOptions(workers=1, empty="skip", lungs="none", style="plain"))
    assert len(res.rows) == 3 and res.skipped_empty == 2 and {r.lungs for r in res.rows} == {"none"}
    assert all(r.note.endswith(" lung") for r in res.rows)


def test_given_lung_masks_and_unplaced_lesion(tmp_path: Path) -> None:
    items = _folder_source(tmp_path / "src", 2)
    lungs = tmp_path / "lungs"
    lungs.mkdir()
    only_right = np.zeros((64, 64), dtype=np.uint8)
    only_right[10:50, 8:28] = 255  # a lung on the image's left half only
    for it in items:
        (lungs / f"{it.id}.png").write_bytes(encode_png(only_right))
    res = generate_notes(tmp_path / "src", NotesOptions(workers=1, lungs=str(lungs)))
    for it in items:
        on_image_right = bool((it.mask[:, 32:] > 0).sum() > 10)
        placed = [r for r in res.rows if r.id == it.id]
        if on_image_right:  # the patient's left lung is missing from the lung masks: reported, not guessed
            assert not placed and any(p.id == it.id and p.kind == "no_lung" for p in res.problems)
        else:
            assert placed[0].lungs == "given"
    with pytest.raises(DataError, match="--lungs"):
        NotesOptions(lungs=str(tmp_path / "nowhere")).validate()


# ----------------------------------------------------------------------------------- orientation


def _ct_phantom(size: int = 64, n: int = 6) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(Z, H, W) display HU volume (lung window gives the phantom back) and its lesion mask."""
    it = generate_item(SyntheticConfig(size=size, seed=4), "train", 2)[0]
    hu = it.image.astype(np.float32) * (1500.0 / 255.0) - 1350.0
    vol = np.repeat(hu[None], n, axis=0)
    mask = np.zeros(vol.shape, dtype=np.uint8)
    mask[1:n - 1] = it.mask
    return vol, mask, it.named


def _sides(rows) -> list[set[str]]:
    return [{ZONE_CODES[c][0] for c in r.zones} for r in sorted(rows, key=lambda r: r.id)]


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_nifti_two_stored_orientations_same_sides(tmp_path: Path, mode: str) -> None:
    vol, mask, named = _ct_phantom()
    results = []
    for name, affine in (("ras", np.diag([1.0, 1.0, 2.0, 1.0])), ("las", np.diag([-1.0, 1.0, 2.0, 1.0]))):
        src = tmp_path / name
        (src / "images").mkdir(parents=True)
        (src / "masks").mkdir()
        nib.save(nib.Nifti1Image(display_to_nifti(vol, affine).astype(np.int16), affine), src / "images" / "v.nii.gz")
        nib.save(nib.Nifti1Image(display_to_nifti(mask, affine), affine), src / "masks" / "v.nii.gz")
        res = generate_notes(src, NotesOptions(workers=1, empty="skip", volume_mode=mode))
        assert res.layout == "nifti" and not res.problems
        results.append(res)
    expected = {ZONE_CODES[c][0] for c in named}
    assert _sides(results[0].rows) == _sides(results[1].rows) and all(s == expected for s in _sides(results[0].rows))
    assert [r.note for r in results[0].rows] == [r.note for r in results[1].rows]
    # the geometry decides: the same voxels flipped without saying so in the affine swap the sides
    src = tmp_path / "lying"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    aff = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(display_to_nifti(vol[:, :, ::-1].copy(), aff).astype(np.int16), aff),
             src / "images" / "v.nii.gz")
    nib.save(nib.Nifti1Image(display_to_nifti(mask[:, :, ::-1].copy(), aff), aff), src / "masks" / "v.nii.gz")
    lying = generate_notes(src, NotesOptions(workers=1, empty="skip", volume_mode=mode))
    swap = {"left": "right", "right": "left"}
    assert _sides(lying.rows) == [{swap[s] for s in sides} for sides in _sides(results[0].rows)]


def _dicom_series(folder: Path, vol: np.ndarray, flip_x: bool, intercept: float) -> None:
    """Axial series of ``vol`` (display slices: cols patient right -> left, slice 0 inferior)."""
    folder.mkdir(parents=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = pydicom.uid.generate_uid()
    n, h, w = vol.shape
    sp = 0.7
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = k + 1
        ds.Rows, ds.Columns = h, w
        ds.PixelSpacing = [sp, sp]
        x0 = -100.0
        if flip_x:  # columns run patient left -> right; the first column is the patient's leftmost voxel
            ds.ImageOrientationPatient = [-1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [x0 + (w - 1) * sp, -100.0, 10.0 * k]
            pix = vol[k][:, ::-1]
        else:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
            ds.ImagePositionPatient = [x0, -100.0, 10.0 * k]
            pix = vol[k]
        ds.RescaleSlope, ds.RescaleIntercept = 1, intercept
        ds.PixelData = np.ascontiguousarray(np.round(pix - intercept)).astype(np.int16).tobytes()
        for tag in ("WindowCenter", "WindowWidth"):
            if tag in ds:
                delattr(ds, tag)
        ds.save_as(folder / f"{(n - 1 - k) if flip_x else k:03d}.dcm")


@pytest.mark.parametrize("mode", ["slice", "volume"])
def test_dicom_two_stored_orientations_same_sides(tmp_path: Path, mode: str) -> None:
    vol, mask, named = _ct_phantom()
    results = []
    for name, flip in (("std", False), ("flipped", True)):
        src = tmp_path / name
        _dicom_series(src / "images" / "pat", vol, flip, -1024.0)
        _dicom_series(src / "masks" / "pat", mask.astype(np.float32), flip, 0.0)
        pd.DataFrame([{"image": "pat", "note": "", "mask": "pat"}]).to_csv(src / "notes.csv", index=False)
        res = generate_notes(src, NotesOptions(layout="dicom", workers=1, empty="skip", volume_mode=mode))
        assert not res.problems, [p.line() for p in res.problems]
        results.append(res)
    from reclmis_core.data.readers import read_image

    std, _ = read_image(tmp_path / "std" / "images" / "pat")
    flipped, _ = read_image(tmp_path / "flipped" / "images" / "pat")
    np.testing.assert_allclose(std[:, :, ::-1], flipped[::-1])  # stored differently: only the geometry tells
    expected = {ZONE_CODES[c][0] for c in named}
    assert all(s == expected for s in _sides(results[0].rows)) and _sides(results[1].rows) == _sides(results[0].rows)
    # the same levels too: slice order differs on disk, the cranio-caudal position decides
    assert sorted(zones_field(sorted(r.zones)) for r in results[0].rows) == \
        sorted(zones_field(sorted(r.zones)) for r in results[1].rows)


def test_sagittal_dicom_is_refused() -> None:
    from reclmis_core.data.meta import DicomRef, ImageMeta

    meta = ImageMeta(path="x", kind="dicom", shape=(4, 4), original_shape=(4, 4), dtype="int16",
                     dicom=DicomRef(image_orientation=(0, 1, 0, 0, 0, -1)))
    with pytest.raises(DataError, match="left-right"):
        left_on_image_right(meta)
    meta.dicom = DicomRef(patient_orientation=("R", "F"))
    assert left_on_image_right(meta) is False
    assert LungGeometry(1.0, (None, None)).extents == (None, None)
