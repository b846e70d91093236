"""The phantom generator: QaTa template notes, zone-coded lesion labels, distractors, counterfactual pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reclmis_core.data.prepare import PrepareOptions, prepare_dataset
from reclmis_core.data.synthetic import (
    ZONE_CODES,
    SyntheticConfig,
    generate_item,
    make_note,
    write_synthetic,
)

CFG = SyntheticConfig(n_train=12, n_val=4, n_test=8, size=96, seed=3)
NOTE_RE = re.compile(
    r"^(Unilateral|Bilateral) pulmonary infection, (one|two|three) infected areas?, "
    r"((upper|middle|lower) (left|right) lung)((, | and )(upper|middle|lower) (left|right) lung)*\.$"
)


def test_note_template() -> None:
    assert make_note([4, 3]) == ("Bilateral pulmonary infection, two infected areas, upper left lung and lower right "
                                 "lung.")
    assert make_note([2]) == "Unilateral pulmonary infection, one infected area, middle right lung."
    assert make_note([6, 4, 5]).startswith("Unilateral pulmonary infection, three infected areas, upper left lung, ")


def test_zone_geometry_patient_left_on_image_right() -> None:
    it = generate_item(SyntheticConfig(size=96, seed=1, distractor_share=0.0), "train", 0)[0]
    for code in np.unique(it.lesion_labels[it.lesion_labels > 0]):
        ys, xs = np.nonzero(it.lesion_labels == code)
        side, level = ZONE_CODES[int(code)]
        assert (xs.mean() > 48) == (side == "left")  # the patient's left lung is on the image's right
    # levels: a zone's rows lie in its third of the lung
    labels = np.concatenate([generate_item(CFG, "train", i)[0].lesion_labels for i in range(12)], axis=1)
    rows = {ZONE_CODES[int(c)][1]: np.nonzero(labels == c)[0].mean() for c in np.unique(labels[labels > 0])}
    if {"upper", "lower"} <= rows.keys():
        assert rows["upper"] < rows["lower"]


def test_deterministic_and_notes_match_masks() -> None:
    a = [generate_item(CFG, "train", i) for i in range(6)]
    b = [generate_item(CFG, "train", i) for i in range(6)]
    for items_a, items_b in zip(a, b, strict=True):
        for x, y in zip(items_a, items_b, strict=True):
            assert np.array_equal(x.image, y.image) and x.note == y.note
    for items in a:
        it = items[0]
        assert NOTE_RE.match(it.note), it.note
        # mask == lesions of the named zones; distractor lesions are in the label map but not in the mask
        np.testing.assert_array_equal(it.mask, np.isin(it.lesion_labels, it.named).astype(np.uint8))
        for code in it.distractors:
            assert code not in it.named and (it.lesion_labels == code).any()
            assert not it.mask[it.lesion_labels == code].any()
        for code in it.named:
            assert ZONE_CODES[code][1] + " " + ZONE_CODES[code][0] + " lung" in it.note


def test_distractor_share_about_half() -> None:
    cfg = SyntheticConfig(n_train=60, size=64, seed=0)
    with_distractor = sum(bool(generate_item(cfg, "train", i)[0].distractors) for i in range(60))
    assert 18 <= with_distractor <= 42


def test_counterfactual_pairs_same_pixels_different_masks(tmp_path: Path) -> None:
    info = write_synthetic(tmp_path / "data", CFG, layout="prepared", workers=1)
    assert info["counts"] == {"train": 12, "val": 4, "test": 8} and info["n_counterfactual_pairs"] == 2
    df = pd.read_csv(tmp_path / "data" / "manifest.csv", dtype=str, keep_default_na=False)
    assert {"lesion_labels", "pair"} <= set(df.columns)
    pairs = df[df["pair"] != ""].groupby("pair")
    assert len(pairs) == 2
    for _, grp in pairs:
        assert len(grp) == 2
        img = [np.asarray(Image.open(tmp_path / "data" / p)) for p in grp["image"]]
        msk = [np.asarray(Image.open(tmp_path / "data" / p)) for p in grp["mask"]]
        assert np.array_equal(img[0], img[1])  # same pixels
        assert not np.array_equal(msk[0], msk[1]) and msk[0].any() and msk[1].any()
        assert not ((msk[0] > 0) & (msk[1] > 0)).any()  # the notes name different zones
        assert grp["note"].iloc[0] != grp["note"].iloc[1]
    meta = json.loads((tmp_path / "data" / "dataset.json").read_text())
    codes = meta["lesion_label_codes"]
    assert codes["1"] == "upper right lung" and codes["6"] == "lower left lung"


def test_qata_layout_roundtrip_keeps_lesion_labels(tmp_path: Path) -> None:
    write_synthetic(tmp_path / "qata", CFG, layout="qata", workers=1)
    assert (tmp_path / "qata" / "Train_Folder" / "Train_text.xlsx").is_file()
    assert (tmp_path / "qata" / "Test_Folder" / "labelcol").is_dir()
    report = prepare_dataset(tmp_path / "qata", tmp_path / "data", PrepareOptions(size=96, workers=1))
    assert report.layout == "qata" and report.counts == {"train": 12, "val": 4, "test": 8} and report.lesion_labels
    direct = pd.read_csv(tmp_path / "data" / "manifest.csv", dtype=str)
    assert direct["lesion_labels"].str.startswith("lesion_labels/").all()


def test_bad_synthetic_args(tmp_path: Path) -> None:
    from reclmis_core.errors import DataError

    with pytest.raises(DataError, match="size"):
        write_synthetic(tmp_path / "x", SyntheticConfig(size=8))
    with pytest.raises(DataError, match="n-train"):
        write_synthetic(tmp_path / "x", SyntheticConfig(n_train=0, n_val=0, n_test=0))
    assert not (tmp_path / "x").exists()
