"""Phantom family b: its own grammar, lesions across zone borders, a hard test split of counterfactual pairs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from reclmis_core.data.note_text import ZONE_CODES, parse_note
from reclmis_core.data.synthetic import SyntheticConfig, generate_item, write_synthetic
from reclmis_core.data.synthetic_b import LEVEL_WORDS, TEST_LESIONS, make_note_b
from reclmis_core.data.transforms import Sample, counterfactual

CFG = SyntheticConfig(n_train=6, n_val=2, n_test=4, size=128, seed=3, family="b")


def _zones_named(note: str) -> set[int]:
    """Zone codes a family-b note names (a reader for the test only: sides, then level synonyms per side)."""
    words = {w: lv for lv, ws in LEVEL_WORDS.items() for w in ws}
    out = set()
    for clause in re.split(r"\band\b(?= (?:the )?(?:left|right|[a-z]+ zones? of))|, (?=(?:left|right) )", note.lower()):
        side = re.search(r"\b(left|right)\b", clause)
        if side is None:
            continue
        for w in re.findall(r"[a-z]+", clause.lower()):
            if w in words:
                out.add(1 + 3 * ("right", "left").index(side.group(1)) + ("upper", "middle", "lower").index(words[w]))
    return out


def test_family_b_note_grammar_differs_from_qata() -> None:
    rng = np.random.default_rng(0)
    notes = [make_note_b([1, 6], rng) for _ in range(40)]
    assert not any("pulmonary infection" in n for n in notes)  # family a's opener never appears
    assert len(set(notes)) > 10  # templates, synonyms and word order vary
    assert any(re.search(r"\b2\b", n) for n in notes) and any("two" in n.lower() for n in notes)


def test_family_b_hard_test_split_is_counterfactual_pairs() -> None:
    for index in range(3):
        a, b = generate_item(CFG, "test", index)
        assert a.pair == b.pair != "" and np.array_equal(a.image, b.image)
        assert not np.any(a.mask & b.mask)  # the two notes name disjoint lesions
        codes = {int(c) for c in np.unique(a.lesion_labels) if c}
        assert len(codes) == TEST_LESIONS  # every test image holds four lesions, each note names two
        assert set(a.named) | set(b.named) == codes and len(a.named) == len(b.named) == 2
        assert np.array_equal(a.mask | b.mask, a.lesion_labels > 0)


def test_family_b_mask_is_named_lesions_and_deterministic() -> None:
    for index in range(6):
        (item,) = generate_item(CFG, "train", index)
        (again,) = generate_item(CFG, "train", index)
        assert np.array_equal(item.image, again.image) and item.note == again.note
        assert np.array_equal(item.mask, np.isin(item.lesion_labels, item.named))
        assert _zones_named(item.note) == set(item.named), item.note


def test_family_b_lesions_may_cross_zone_borders() -> None:
    """Labels keep a lesion's main zone over all of its pixels, so some label pixels lie in other zones."""
    from reclmis_core.data.synthetic_b import _anatomy, _lesion, _main_zone

    crossed = 0
    for i in range(30):
        rng = np.random.default_rng(i)
        _, zones, lungs = _anatomy(rng, 128)
        op = _lesion(rng, zones, lungs, 2, 128)
        if op is not None and _main_zone(op, zones) == 2:
            crossed += bool(np.any((zones[op > 0.5] != 2) & (zones[op > 0.5] > 0)))
    assert crossed > 0


def test_write_family_b(tmp_path: Path) -> None:
    info = write_synthetic(tmp_path / "b", CFG, workers=1)
    df = pd.read_csv(tmp_path / "b" / "manifest.csv", dtype=str, keep_default_na=False)
    test = df[df["split"] == "test"]
    assert info["counts"]["test"] == 4 and info["n_counterfactual_pairs"] == 2
    assert (test["pair"] != "").all() and df["id"].str.startswith("synb_").all()
    assert info["synthetic"]["family"] == "b"


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    from reclmis_core.errors import DataError

    with pytest.raises(DataError, match="--family"):
        write_synthetic(tmp_path / "x", SyntheticConfig(n_train=1, n_val=0, n_test=0, family="c"), workers=1)


def test_counterfactual_sample_note_names_exactly_its_mask() -> None:
    labels = np.zeros((8, 8), dtype=np.uint8)
    labels[1, 1], labels[6, 6], labels[3, 5] = 1, 6, 4  # upper right, lower left, upper left
    sample = Sample(np.zeros((8, 8), np.uint8), (labels == 1).astype(np.uint8), "original", labels)
    seen = set()
    for seed in range(30):
        out = counterfactual(sample, np.random.default_rng(seed))
        zones = parse_note(out.note).zones
        assert zones and np.array_equal(out.mask, np.isin(labels, sorted(zones)).astype(np.uint8))
        seen.add(frozenset(zones))
    assert len(seen) >= 5  # many subsets of three lesions are drawn
    one = Sample(sample.image, sample.mask, "original", (labels == 1).astype(np.uint8))
    assert counterfactual(one, np.random.default_rng(0)).note == "original"  # one lesion: nothing to choose
    assert ZONE_CODES[4] == ("left", "upper")


def test_note_augment_keeps_the_zones() -> None:
    from reclmis_core.data.note_augment import augment_note

    note = "Bilateral pulmonary infection, two infected areas, upper middle left lung and lower right lung."
    seen = set()
    for seed in range(40):
        out = augment_note(note, np.random.default_rng(seed))
        seen.add(out)
        canon = out
        for level, words in (("upper", ("apical", "superior")), ("middle", ("mid", "central")),
                             ("lower", ("basal", "inferior"))):
            for w in words:
                canon = re.sub(rf"\b{w}\b", level, canon, flags=re.I)
        canon = re.sub(r"\b(left|right) ((?:(?:upper|middle|lower) )+)", r"\2\1 ", canon, flags=re.I)
        assert parse_note(canon).zones == parse_note(note).zones, out
    assert len(seen) > 10
