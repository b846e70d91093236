"""Spatially honest augmentation: a left-right flip flips image, mask, lesion labels and note together."""

from __future__ import annotations

import re

import numpy as np
import pytest

from reclmis_core.config import DataConfig
from reclmis_core.data.synthetic import ZONE_CODES, SyntheticConfig, generate_item, make_note
from reclmis_core.data.transforms import (
    FLIP_ZONE,
    Sample,
    TrainAugment,
    flip_note_laterality,
    hflip,
    is_colour,
    saturation_hue,
)
from reclmis_core.errors import ConfigError

ZONE_RE = re.compile(r"(upper|middle|lower) (left|right) lung")


@pytest.mark.parametrize(
    ("note", "flipped"),
    [
        ("Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung.",
         "Bilateral pulmonary infection, two infected areas, upper right lung and lower left lung."),
        ("Left lower lobe; RIGHT apex.", "Right lower lobe; LEFT apex."),
        ("Unilateral pulmonary infection, one infected area, middle right lung.",
         "Unilateral pulmonary infection, one infected area, middle left lung."),
        ("leftover rightward bilateral", "leftover rightward bilateral"),
        ("RUL consolidation, lll atelectasis; Lt base, RT apex.", "LUL consolidation, rll atelectasis; Rt base, LT apex."),
        ("all real rules", "all real rules"),
    ],
)
def test_flip_note_laterality(note: str, flipped: str) -> None:
    assert flip_note_laterality(note) == flipped
    assert flip_note_laterality(flipped) == note


def test_a_flipped_note_reads_as_the_mirrored_zones() -> None:
    from reclmis_core.data.note_text import parse_note

    for note in ("RUL consolidation, LLZ opacity.", "Lt lower zone and Rt cranial zone", "right apical zone"):
        assert parse_note(flip_note_laterality(note)).zones == {int(FLIP_ZONE[c]) for c in parse_note(note).zones}


def test_flip_moves_image_mask_labels_and_note_together() -> None:
    it = generate_item(SyntheticConfig(size=96, seed=5), "train", 2)[0]
    out = hflip(Sample(it.image, it.mask, it.note, it.lesion_labels))
    np.testing.assert_array_equal(out.image, it.image[:, ::-1])
    np.testing.assert_array_equal(out.mask, it.mask[:, ::-1])
    assert out.lesion_labels is not None
    # zone codes swap sides, keep levels
    for code in range(1, 7):
        a, b = ZONE_CODES[code], ZONE_CODES[int(FLIP_ZONE[code])]
        assert a[1] == b[1] and a[0] != b[0]
    np.testing.assert_array_equal(out.lesion_labels, FLIP_ZONE[it.lesion_labels[:, ::-1]])
    # the flipped note is exactly the note the generator would write for the flipped zones
    expected = make_note([int(FLIP_ZONE[c]) for c in it.named])
    assert sorted(ZONE_RE.findall(out.note)) == sorted(ZONE_RE.findall(expected))
    assert out.note.split(",")[:2] == expected.split(",")[:2]
    # and the flipped mask is the union of the lesions the flipped note names
    named = [int(FLIP_ZONE[c]) for c in it.named]
    np.testing.assert_array_equal(out.mask, np.isin(out.lesion_labels, named).astype(np.uint8))
    # lesions on the image's right half are in the patient's left lung after the flip too
    for code in np.unique(out.lesion_labels[out.lesion_labels > 0]):
        xs = np.nonzero(out.lesion_labels == code)[1]
        assert (xs.mean() > 48) == (ZONE_CODES[int(code)][0] == "left")


def test_train_augment_deterministic_and_honest() -> None:
    it = generate_item(SyntheticConfig(size=64, seed=1), "train", 0)[0]
    aug = TrainAugment(DataConfig())
    s = Sample(it.image, it.mask, it.note, it.lesion_labels)
    a = aug(s, np.random.default_rng(7))
    b = aug(s, np.random.default_rng(7))
    np.testing.assert_array_equal(a.image, b.image)
    assert a.note == b.note
    notes = set()
    for seed in range(30):
        out = aug(s, np.random.default_rng(seed))
        notes.add(out.note)
        assert out.image.shape == s.image.shape and out.image.dtype == np.uint8
        assert set(np.unique(out.mask)) <= {0, 1}
        assert out.lesion_labels is not None and set(np.unique(out.lesion_labels)) <= set(range(7))
        # mask stays consistent with the labels of the zones the (possibly flipped) note names
        flipped = out.note != it.note
        named = [int(FLIP_ZONE[c]) if flipped else c for c in it.named]
        np.testing.assert_array_equal(out.mask, np.isin(out.lesion_labels, named).astype(np.uint8))
    assert len(notes) == 2  # flipped and not flipped both occur


def test_flip_off_and_rotation_limit() -> None:
    it = generate_item(SyntheticConfig(size=64, seed=1), "train", 0)[0]
    aug = TrainAugment(DataConfig(hflip=False))
    s = Sample(it.image, it.mask, it.note, it.lesion_labels)
    assert all(aug(s, np.random.default_rng(k)).note == it.note for k in range(20))
    with pytest.raises(ConfigError, match="rotate_deg"):
        TrainAugment(DataConfig(rotate_deg=90))
    off = TrainAugment(DataConfig(augment=False))(s, np.random.default_rng(0))
    assert off is s


def test_colour_ops_only_on_colour() -> None:
    gray3 = np.repeat(np.arange(64, dtype=np.uint8).reshape(8, 8)[..., None], 3, axis=2)
    assert not is_colour(gray3)
    rgb = np.random.default_rng(0).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    assert is_colour(rgb)
    assert saturation_hue(rgb, 1.2, 0.05).shape == rgb.shape


def test_domain_augment_maths_and_that_it_leaves_mask_and_note() -> None:
    from reclmis_core.data.transforms import TrainAugment, gamma, gaussian_noise, low_resolution

    x = np.array([[0, 64, 255]], dtype=np.uint8)
    assert gamma(x, 2.0).tolist() == [[0, 16, 255]]  # 255 * (64/255)^2 = 16.06
    flat = np.full((32, 32), 100, np.uint8)
    assert np.array_equal(low_resolution(flat, 0.5), flat)  # a flat image has nothing to lose
    edge = np.zeros((32, 32), np.uint8)
    edge[:, 16:] = 255
    soft = low_resolution(edge, 0.25)
    assert soft.shape == edge.shape and 0 < soft[0, 15] < 255  # the edge is blurred
    noisy = gaussian_noise(flat, 10.0, np.random.default_rng(0)).astype(float)
    assert abs(noisy.mean() - 100) < 1.5 and 8 < noisy.std() < 12
    img = (np.arange(64 * 64).reshape(64, 64) % 200).astype(np.uint8)
    mask = (img > 100).astype(np.uint8)
    sample = Sample(img, mask, "upper left lung")
    plain, extra = TrainAugment(DataConfig(augment=True, hflip=False, rotate_deg=0.0)), TrainAugment(
        DataConfig(augment=True, hflip=False, rotate_deg=0.0, domain_augment=1.0))
    changed = 0
    for seed in range(8):
        a, b = plain(sample, np.random.default_rng(seed)), extra(sample, np.random.default_rng(seed))
        assert np.array_equal(a.mask, b.mask) and a.note == b.note
        changed += not np.array_equal(a.image, b.image)
    assert changed >= 6  # each of the four changes has probability 1/2: all four skipped 1 time in 16


def test_lesion_contrast_scales_a_lesion_against_its_surroundings() -> None:
    from reclmis_core.data.transforms import TrainAugment, lesion_contrast

    img = np.full((64, 64), 80, np.uint8)
    region = np.zeros((64, 64), np.uint8)
    region[24:40, 24:40] = 1
    img[region > 0] = 120  # a lesion 40 grey levels above flat tissue
    faint = lesion_contrast(img, region, 0.5).astype(int)
    assert faint[32, 32] == 100 and faint[4, 4] == 80  # half as bright inside; the tissue far away untouched
    assert lesion_contrast(img, region, 2.0)[32, 32] == 160
    assert np.array_equal(lesion_contrast(img, region, 1.0), img)
    assert np.array_equal(lesion_contrast(img, np.zeros_like(region), 0.5), img)  # no lesion: nothing to do
    rgb = np.repeat(img[..., None], 3, axis=2)
    assert lesion_contrast(rgb, region, 0.5)[32, 32].tolist() == [100, 100, 100]
    # In training it changes only the image, and only for the share of samples data.lesion_contrast picks.
    sample = Sample(img, region, "upper left lung", region * 3)
    aug = TrainAugment(DataConfig(augment=True, hflip=False, rotate_deg=0.0, lesion_contrast=1.0))
    out = aug(sample, np.random.default_rng(0))
    assert np.array_equal(out.mask, region) and out.note == sample.note and out.image[32, 32] != img[32, 32]
