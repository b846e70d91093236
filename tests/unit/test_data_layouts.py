"""Every source layout, read from a small look-alike folder built in tmp_path, then prepared."""

from __future__ import annotations

import copy
import json
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
from nibabel.testing import data_path as NIB_DATA
from PIL import Image
from pydicom.data import get_testdata_file

from reclmis_core import __version__
from reclmis_core.data.layouts import LAYOUTS, Record, Scan, detect_layout, register_layout, scan_source
from reclmis_core.data.prepare import PrepareOptions, prepare_dataset

NOTE = "Unilateral pulmonary infection, one infected area, middle right lung."
OPT = PrepareOptions(size=32, workers=1)


def png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def img_arr(seed: int, size: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)


def mask_arr(size: int = 40) -> np.ndarray:
    m = np.zeros((size, size), dtype=np.uint8)
    m[5:15, 5:15] = 255
    return m


def make_lvit(root: Path, flavour: str = "qata", splits: dict[str, int] | None = None, shared: bool = False,
              val_folder: bool = True, dataset_dir: str = "QaTa-COV19", folder_sep: str = "_") -> Path:
    """A QaTa/MosMed look-alike: {Train,Val,Test}_Folder/{img,labelcol} + *_text.xlsx."""
    splits = splits or {"train": 3, "val": 2, "test": 2}
    base = root / dataset_dir
    sheets: dict[str, list[dict[str, str]]] = {}
    for split, n in splits.items():
        if split == "val" and not val_folder:
            continue
        folder = base / f"{split.title()}{folder_sep}Folder"
        for i in range(n):
            name = f"{split}_{i}.png"
            png(folder / "img" / name, img_arr(i))
            mask_name = f"mask_{name}" if flavour == "qata" else name
            png(folder / "labelcol" / mask_name, mask_arr())
            key = "train_val" if shared and split in ("train", "val") else split
            sheets.setdefault(key, []).append({"Image": mask_name, "Description": NOTE})
    for key, rows in sheets.items():
        sheet = "Train_Val_text.xlsx" if key == "train_val" else f"{key.title()}_text.xlsx"
        target = base / sheet if key == "train_val" else base / f"{key.title()}{folder_sep}Folder" / sheet
        pd.DataFrame(rows).to_excel(target, index=False)
    return root


def read_manifest_csv(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_qata_per_split_sheets(tmp_path: Path) -> None:
    src = make_lvit(tmp_path / "src")
    assert detect_layout(src) == "qata"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 3, "val": 2, "test": 2} and report.layout == "qata"
    df = read_manifest_csv(tmp_path / "out")
    assert list(df.columns[:8]) == ["id", "split", "image", "mask", "note", "height", "width", "source"]
    assert set(df["height"]) == {"40"} and (df["note"] == NOTE).all()
    row = df[df["id"] == "train_0"].iloc[0]
    assert row["source"] == "QaTa-COV19/Train_Folder/img/train_0.png"
    out_img = np.asarray(Image.open(tmp_path / "out" / row["image"]))
    out_mask = np.asarray(Image.open(tmp_path / "out" / row["mask"]))
    assert out_img.shape == (32, 32) and out_img.dtype == np.uint8 and set(np.unique(out_mask)) == {0, 255}
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["layout"] == "qata" and info["counts"]["val"] == 2 and info["version"] == __version__
    assert info["problems"] == []


def test_qata_shared_train_val_sheet_without_val_folder(tmp_path: Path) -> None:
    src = make_lvit(tmp_path / "src", splits={"train": 10, "test": 2}, shared=True, val_folder=False,
                    dataset_dir="Covid19", folder_sep=" ")
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 8, "val": 2, "test": 2}
    df = read_manifest_csv(tmp_path / "out")
    assert sorted(df[df.split == "val"]["id"]) == ["train_8", "train_9"]  # last 20 % of the sheet rows
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert "last 20%" in info["split_rule"] and "Train_Val_text.xlsx" in info["split_rule"]


def test_qata_shared_sheet_with_val_folder(tmp_path: Path) -> None:
    src = make_lvit(tmp_path / "src", shared=True)
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 3, "val": 2, "test": 2}
    assert "split folder that holds" in report.split_rule


def test_mosmed(tmp_path: Path) -> None:
    src = make_lvit(tmp_path / "src", flavour="mosmed", dataset_dir="MosMedData+")
    assert detect_layout(src) == "mosmed"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 3, "val": 2, "test": 2} and report.layout == "mosmed"


def test_ariadne_csv(tmp_path: Path) -> None:
    src = tmp_path / "src"
    for part, n in (("Train", 10), ("Test", 3)):
        rows = []
        for i in range(n):
            png(src / part / "Images" / f"{part}_{i}.png", img_arr(i))
            png(src / part / "GTs" / f"mask_{part}_{i}.png", mask_arr())
            rows.append({"Image": f"mask_{part}_{i}.png", "Description": NOTE})
        (src / "prompt").mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_csv(src / "prompt" / f"{part.lower()}.csv", index=False)
    assert detect_layout(src) == "ariadne"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 8, "val": 2, "test": 3}
    df = read_manifest_csv(tmp_path / "out")
    assert sorted(df[df.split == "val"]["id"]) == ["Train_8", "Train_9"]  # last 20 % in file order


def test_folder_csv_with_and_without_split(tmp_path: Path) -> None:
    src = tmp_path / "src"
    rows = []
    for i, split in enumerate(["train", "train", "val", "test"]):
        png(src / "images" / f"a{i}.png", img_arr(i))
        png(src / "masks" / f"a{i}.png", mask_arr())
        rows.append({"image": f"a{i}.png", "note": NOTE, "split": split})
    # RGB image with an explicit mask column
    rgb = np.stack([img_arr(9), img_arr(8), img_arr(7)], 2)
    png(src / "images" / "c.png", rgb)
    png(src / "masks" / "c_seg.png", mask_arr())
    rows.append({"image": "c.png", "note": NOTE, "split": "validation", "mask": "c_seg.png"})
    pd.DataFrame(rows).to_csv(src / "notes.csv", index=False)
    assert detect_layout(src) == "folder"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.counts == {"train": 2, "val": 2, "test": 1}
    df = read_manifest_csv(tmp_path / "out")
    c = np.asarray(Image.open(tmp_path / "out" / df[df.id == "c"].iloc[0]["image"]))
    assert c.shape == (32, 32, 3)  # colour kept
    # without a split column: deterministic hash split, recorded
    pd.DataFrame(rows).drop(columns=["split"]).to_csv(src / "notes.csv", index=False)
    r2 = prepare_dataset(src, tmp_path / "out2", OPT)
    r3 = prepare_dataset(src, tmp_path / "out3", OPT)
    assert r2.counts == r3.counts and sum(r2.counts.values()) == 5 and "sha1" in r2.split_rule


def test_nifti_volumes_sliced(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    shutil.copy(os.path.join(NIB_DATA, "anatomical.nii"), src / "images" / "scan1.nii")
    img = nib.load(src / "images" / "scan1.nii")
    mask = np.zeros(img.shape, dtype=np.uint8)
    mask[10:20, 10:20, 5:8] = 1  # lesion on stored slices 5, 6, 7
    nib.save(nib.Nifti1Image(mask, img.affine), src / "masks" / "scan1.nii.gz")
    pd.DataFrame([
        {"image": "scan1.nii", "note": NOTE, "split": "train"},
        {"image": "scan1.nii", "note": "Bilateral pulmonary infection.", "split": "train", "slice": 12},
    ]).to_csv(src / "notes.csv", index=False)
    assert detect_layout(src) == "nifti"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    df = read_manifest_csv(tmp_path / "out")
    # lesion slices 5..7 (display order = stored order for an L-A-S volume) + the explicitly noted empty slice 12
    assert sorted(df["id"]) == ["scan1_s005", "scan1_s006", "scan1_s007", "scan1_s012"]
    assert df[df.id == "scan1_s012"].iloc[0]["note"] == "Bilateral pulmonary infection."
    assert df.iloc[0]["source"].startswith("images/scan1.nii#slice=")
    assert report.counts["train"] == 4
    keep = prepare_dataset(src, tmp_path / "out_keep", PrepareOptions(size=32, workers=1, keep_empty=True))
    assert keep.counts["train"] == 25  # every axial slice
    m = np.asarray(Image.open(tmp_path / "out" / df[df.id == "scan1_s006"].iloc[0]["mask"]))
    assert m.max() == 255


def test_nifti_non_square_pixels_padded_square(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "masks").mkdir()
    vol = np.random.default_rng(0).normal(-500, 300, (20, 10, 4)).astype(np.int16)
    aff = np.diag([1.0, 2.0, 3.0, 1.0])  # 1 x 2 mm pixels -> 20 x 20 mm slice
    nib.save(nib.Nifti1Image(vol, aff), src / "images" / "v.nii.gz")
    m = np.zeros(vol.shape, dtype=np.uint8)
    m[:, :, 1] = 1
    nib.save(nib.Nifti1Image(m, aff), src / "masks" / "v.nii.gz")
    pd.DataFrame([{"image": "v.nii.gz", "note": NOTE, "split": "test"}]).to_csv(src / "notes.csv", index=False)
    prepare_dataset(src, tmp_path / "out", PrepareOptions(size=40, workers=1, window="-500,1000"))
    df = read_manifest_csv(tmp_path / "out")
    assert list(df["id"]) == ["v_s001"] and (df["height"].iloc[0], df["width"].iloc[0]) == ("10", "20")
    mask = np.asarray(Image.open(tmp_path / "out" / df.iloc[0]["mask"]))
    assert mask.shape == (40, 40) and mask.all()  # square physical extent: resampled, fills the frame


def _ct_series(folder: Path, n: int = 3) -> list[pydicom.Dataset]:
    folder.mkdir(parents=True)
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    uid = pydicom.uid.generate_uid()
    out = []
    for k in range(n):
        ds = copy.deepcopy(base)
        ds.SeriesInstanceUID = uid
        ds.SOPInstanceUID = pydicom.uid.generate_uid()
        ds.ImagePositionPatient = [-158.0, -179.0, -75.0 + 5.0 * k]
        ds.InstanceNumber = k + 1
        ds.save_as(folder / f"{k:03d}.dcm")
        out.append(ds)
    return out


def test_dicom_series_with_nifti_mask(tmp_path: Path) -> None:
    src = tmp_path / "src"
    _ct_series(src / "images" / "pat1")
    (src / "masks").mkdir()
    from reclmis_core.data.readers import read_image
    from reclmis_core.data.writers import write_nifti_mask

    vol, meta = read_image(src / "images" / "pat1")
    m = np.zeros(vol.shape, dtype=np.uint8)
    m[1, 40:60, 40:70] = 1
    write_nifti_mask(src / "masks" / "pat1.nii.gz", m, meta)  # a mask in the series' own geometry
    pd.DataFrame([{"image": "pat1", "note": NOTE, "split": "train"}]).to_csv(src / "notes.csv", index=False)
    assert detect_layout(src) == "dicom"
    report = prepare_dataset(src, tmp_path / "out", OPT)
    df = read_manifest_csv(tmp_path / "out")
    assert list(df["id"]) == ["pat1_s001"] and report.counts["train"] == 1


def test_dicom_series_with_seg(tmp_path: Path) -> None:
    hd = pytest.importorskip("highdicom")
    src = tmp_path / "src"
    sources = _ct_series(src / "images" / "pat2")
    (src / "masks").mkdir()
    mask = np.zeros((3, 128, 128), dtype=bool)
    mask[2, 10:30, 10:30] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="lesion",
        segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
        segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
    )
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(src / "masks" / "pat2.dcm")
    pd.DataFrame([{"image": "pat2", "note": NOTE, "split": "test"}]).to_csv(src / "notes.csv", index=False)
    prepare_dataset(src, tmp_path / "out", OPT)
    df = read_manifest_csv(tmp_path / "out")
    assert list(df["id"]) == ["pat2_s002"]


def test_scan_reports_detect_failure(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    from reclmis_core.errors import DataError

    with pytest.raises(DataError, match="cannot detect the layout"):
        scan_source(tmp_path / "empty")
    with pytest.raises(DataError, match="unknown layout"):
        scan_source(tmp_path / "empty", "zip")


# -- the layout registry ------------------------------------------------------------------------------------


def test_every_built_in_layout_is_registered_and_detected_above():
    # each one has a test above that builds a look-alike source, detects it and prepares it
    assert LAYOUTS.names() == ("qata", "mosmed", "ariadne", "nifti", "dicom", "folder")
    assert [name for name, spec in LAYOUTS.items() if spec.fallback] == ["folder"]


def test_unknown_layout_names_the_registered_ones_and_the_nearest(tmp_path: Path) -> None:
    from reclmis_core.errors import DataError

    (tmp_path / "src").mkdir()
    with pytest.raises(DataError, match=r"unknown layout 'folders'\. Did you mean 'folder'\? Available: qata, mosmed, "
                                        r"ariadne, nifti, dicom, folder"):
        scan_source(tmp_path / "src", "folders")


def test_the_cannot_detect_message_lists_what_each_layout_looks_for(tmp_path: Path) -> None:
    from reclmis_core.errors import DataError

    (tmp_path / "src").mkdir()
    with pytest.raises(DataError) as info:
        detect_layout(tmp_path / "src")
    assert all(f"for {name}" in str(info.value) for name in LAYOUTS.names())


def test_lvit_folders_win_over_a_prompt_folder_as_before(tmp_path: Path) -> None:
    src = make_lvit(tmp_path / "src")
    (src / "prompt").mkdir()
    assert detect_layout(src) == "qata"


def test_a_registered_layout_is_detected_before_the_fallback_and_prepared(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LAYOUTS, "_entries", dict(LAYOUTS._entries))  # registered for this test only
    src = tmp_path / "src"
    png(src / "images" / "a.png", img_arr(0))
    png(src / "labels" / "a.png", mask_arr())
    (src / "cases.txt").write_text(f"a.png\t{NOTE}\n", encoding="utf-8")

    @register_layout("mylab", detect=lambda s: (s / "cases.txt").is_file(), expects="cases.txt")
    def scan_mylab(s: Path, notes_optional: bool = False) -> Scan:
        name, note = (s / "cases.txt").read_text(encoding="utf-8").strip().split("\t")
        rec = Record("a", "train", s / "images" / name, s / "labels" / name, note, f"images/{name}")
        return Scan("mylab", s, [rec], [], "all train")

    assert detect_layout(src) == "mylab"  # images/ alone would make it the folder layout
    report = prepare_dataset(src, tmp_path / "out", OPT)
    assert report.layout == "mylab" and report.counts["train"] == 1
    with pytest.raises(ValueError, match="already registered"):
        register_layout("mylab", detect=lambda s: False, expects="")(scan_mylab)


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
def test_dicom_seg_with_two_segments_and_label_map_is_read_with_highdicom(tmp_path: Path, seg_type: str) -> None:
    """Segments 1 and 2 (and a label-map SEG, its own SOP class) are merged onto the right slices."""
    hd = pytest.importorskip("highdicom")
    from reclmis_core.data.readers import read_image
    from reclmis_core.data.readers.dicom import read_dicom_seg

    sources = _ct_series(tmp_path / "series", n=4)
    labels = np.zeros((4, 128, 128), dtype=np.uint8)
    labels[1, 10:30, 10:30] = 1
    labels[3, 50:60, 40:70] = 2
    descs = [
        hd.seg.SegmentDescription(
            segment_number=k, segment_label=f"lesion {k}",
            segmented_property_category=hd.sr.CodedConcept("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=hd.sr.CodedConcept("4147007", "SCT", "Mass"),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for k in (1, 2)
    ]
    pixels = labels if seg_type == "LABELMAP" else np.stack([labels == 1, labels == 2], axis=-1)
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=pixels, segmentation_type=getattr(hd.seg.SegmentationTypeValues, seg_type),
        segment_descriptions=descs, series_instance_uid=hd.UID(), series_number=2, sop_instance_uid=hd.UID(),
        instance_number=1, manufacturer="test", manufacturer_model_name="test", software_versions="0",
        device_serial_number="0",
    )
    seg.save_as(tmp_path / "seg.dcm")
    _, meta = read_image(tmp_path / "series")
    mask = read_dicom_seg(tmp_path / "seg.dcm", meta)
    np.testing.assert_array_equal(mask, (labels > 0).astype(np.uint8))
