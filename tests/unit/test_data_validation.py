"""Every validation problem is triggered, named with its file, fatal (nothing written) unless skip_bad."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reclmis_core.data.prepare import PrepareError, PrepareOptions, prepare_dataset
from reclmis_core.errors import DataError

NOTE = "Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."


def png(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def make_folder(src: Path, n: int = 4) -> Path:
    rows = []
    for i in range(n):
        png(src / "images" / f"im{i}.png", np.full((24, 24), (40 * i) % 256, dtype=np.uint8))
        m = np.zeros((24, 24), dtype=np.uint8)
        m[2:9, 2:9] = 255
        png(src / "masks" / f"im{i}.png", m)
        rows.append({"image": f"im{i}.png", "note": NOTE, "split": "train" if i else "test"})
    pd.DataFrame(rows).to_csv(src / "notes.csv", index=False)
    return src


def edit_notes(src: Path, fn: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    df = pd.read_csv(src / "notes.csv", dtype=str, keep_default_na=False)
    fn(df).to_csv(src / "notes.csv", index=False)


def corrupt(src: Path) -> None:
    (src / "images" / "im1.png").write_bytes(b"not a png at all")


def missing_mask(src: Path) -> None:
    (src / "masks" / "im1.png").unlink()


def size_mismatch(src: Path) -> None:
    png(src / "masks" / "im1.png", np.zeros((30, 24), dtype=np.uint8))


def empty_note(src: Path) -> None:
    edit_notes(src, lambda df: df.assign(note=["", *df["note"][1:]]))


def duplicate_id(src: Path) -> None:
    edit_notes(src, lambda df: pd.concat([df, df.iloc[[1]]]))


def note_without_image(src: Path) -> None:
    edit_notes(src, lambda df: pd.concat([df, pd.DataFrame([{"image": "ghost.png", "note": NOTE, "split": "train"}])]))


def image_without_note(src: Path) -> None:
    png(src / "images" / "orphan.png", np.zeros((24, 24), dtype=np.uint8))


def outside_source(src: Path) -> None:
    png(src.parent / "secret.png", np.zeros((24, 24), dtype=np.uint8))
    edit_notes(src, lambda df: pd.concat([df, pd.DataFrame([{"image": "../secret.png", "note": NOTE,
                                                            "split": "train"}])]))


def symlink_outside(src: Path) -> None:
    png(src.parent / "elsewhere.png", np.zeros((24, 24), dtype=np.uint8))
    os.symlink(src.parent / "elsewhere.png", src / "images" / "link.png")
    edit_notes(src, lambda df: pd.concat([df, pd.DataFrame([{"image": "link.png", "note": NOTE,
                                                            "split": "train"}])]))


def bad_split(src: Path) -> None:
    edit_notes(src, lambda df: df.assign(split=["holdout", *df["split"][1:]]))


CASES = [
    (corrupt, "unreadable", "im1.png", 1),
    (missing_mask, "missing_mask", "im1.png", 1),
    (size_mismatch, "size_mismatch", "im1.png", 1),
    (empty_note, "empty_note", "notes.csv:row 2", 1),
    (duplicate_id, "duplicate_id", "im1.png", 1),
    (note_without_image, "note_without_image", "notes.csv:row 6", 0),
    (image_without_note, "image_without_note", "orphan.png", 0),
    (outside_source, "outside_source", "notes.csv:row 6", 0),
    (symlink_outside, "outside_source", "notes.csv:row 6", 0),
    (bad_split, "bad_split", "notes.csv:row 2", 1),
]


@pytest.mark.parametrize(("breaker", "kind", "where", "n_dropped"), CASES,
                         ids=[c[1] + "-" + c[0].__name__ for c in CASES])
def test_problem_is_fatal_named_and_writes_nothing(
    tmp_path: Path, breaker: Callable[[Path], None], kind: str, where: str, n_dropped: int
) -> None:
    src = make_folder(tmp_path / "src")
    breaker(src)
    out = tmp_path / "data"
    with pytest.raises(PrepareError) as info:
        prepare_dataset(src, out, PrepareOptions(size=16, workers=1))
    msg = str(info.value)
    assert "\n" not in msg and kind in msg and where in msg and "--skip-bad" in msg
    kinds = {p.kind for p in info.value.report.problems}
    assert kind in kinds
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) in (["src"], ["secret.png", "src"], ["elsewhere.png", "src"])
    # --skip-bad: the affected rows are dropped and recorded
    report = prepare_dataset(src, out, PrepareOptions(size=16, workers=1, skip_bad=True))
    info_json = json.loads((out / "dataset.json").read_text())
    assert kind in info_json["problem_counts"]
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert len(manifest) == 4 - n_dropped
    assert len(report.dropped) >= n_dropped
    assert manifest["id"].is_unique


def test_non_binary_mask_is_a_warning(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    m = np.zeros((24, 24), dtype=np.uint8)
    m[2:9, 2:9] = 128
    m[3:5, 3:5] = 255
    png(src / "masks" / "im2.png", m)
    report = prepare_dataset(src, tmp_path / "out", PrepareOptions(size=16, workers=1))
    assert [p.kind for p in report.warnings] == ["non_binary_mask"] and report.n_images == 4
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["problems"][0]["severity"] == "warning" and "im2.png" in info["problems"][0]["path"]
    out_mask = np.asarray(Image.open(tmp_path / "out" / "masks" / "train" / "im2.png"))
    assert set(np.unique(out_mask)) == {0, 255} and (out_mask > 0).sum() > 0


def test_full_list_reported_at_once(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", n=6)
    corrupt(src)
    size_mismatch_path = src / "masks" / "im3.png"
    png(size_mismatch_path, np.zeros((5, 5), dtype=np.uint8))
    image_without_note(src)
    with pytest.raises(PrepareError) as info:
        prepare_dataset(src, tmp_path / "out", PrepareOptions(size=16, workers=1))
    kinds = sorted(p.kind for p in info.value.report.problems)
    assert kinds == ["image_without_note", "size_mismatch", "unreadable"]
    assert str(info.value).startswith("3 problems in")


def test_out_dir_rules(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src")
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty.*--overwrite"):
        prepare_dataset(src, out, PrepareOptions(size=16, workers=1))
    prepare_dataset(src, out, PrepareOptions(size=16, workers=1, overwrite=True))
    assert not (out / "keep.txt").exists() and (out / "manifest.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "src"]  # no staging/trash left behind


def test_missing_column_and_pool(tmp_path: Path) -> None:
    src = make_folder(tmp_path / "src", n=10)
    # the process pool gives the same manifest as in-process work
    prepare_dataset(src, tmp_path / "a", PrepareOptions(size=16, workers=1))
    prepare_dataset(src, tmp_path / "b", PrepareOptions(size=16, workers=2))
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()
    edit_notes(src, lambda df: df.rename(columns={"note": "comment"}))
    with pytest.raises(DataError, match="notes.csv: missing column 'note'"):
        prepare_dataset(src, tmp_path / "c", PrepareOptions(size=16, workers=1))
