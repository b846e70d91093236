"""Phantom chest radiographs whose notes decide the mask (language must matter).

Each image is a frontal chest phantom: body, spine, ribs, heart and two dark lung fields with texture and noise.
Lesions (bright, soft-edged opacities) sit in lung *zones*: left/right x upper/middle/lower. As in a radiograph,
the patient's **left lung is on the image's right**. The note follows the QaTa-COV19 template, e.g.
``"Bilateral pulmonary infection, two infected areas, upper left lung and lower right lung."``; the mask holds
only the lesions the note names. To make the note necessary:

* in about half of the images (``distractor_share``) extra lesions appear in zones the note does *not* name
  (often the same lung at another level, so upper/middle/lower matter as much as left/right) and are *not* in
  the mask;
* the test split contains counterfactual pairs: the same pixels twice, with two notes naming different zones
  and two different masks (ids ``..._cfa`` / ``..._cfb``, manifest column ``pair``).

A lesion label map is written per image: every lesion pixel holds its zone code (see :data:`ZONE_CODES`;
0 = background), named or not, so evaluation can tell which unnamed lesions leaked into a prediction.

Everything is deterministic given ``seed``: image ``i`` of a split uses ``numpy.random.default_rng((seed,
split, i))``, so results do not depend on the number of worker processes.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from ..version import __version__
from ..errors import DataError
from .writers import encode_png
from .layouts import SPLITS
from .note_text import LEVELS, SIDES, ZONE_CODES, format_note  # noqa: F401  (SIDES, LEVELS re-exported)
from .transforms import FLIP_ZONE  # noqa: F401  (re-exported: a left-right flip maps zone c to FLIP_ZONE[c])
from .data_dir import check_out_dir, commit_staging_dir, make_staging_dir, write_dataset_json, write_manifest
from .pool import ProgressFn, pool_map
from .synthetic_b import generate_item_b, n_test_images_b
from .synthetic_types import FAMILIES, SyntheticConfig, SyntheticItem, smooth_noise  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)



def zone_name(code: int) -> str:
    side, level = ZONE_CODES[code]
    return f"{level} {side} lung"


def make_note(codes: list[int]) -> str:
    """QaTa-style note for the named zones, e.g. ``Unilateral pulmonary infection, one infected area, middle
    right lung.``; zones are listed left lung first, upper to lower (one infected area per zone)."""
    if not codes:
        raise ValueError("a note needs at least one zone")
    return format_note([[c] for c in codes], "qata")


# --------------------------------------------------------------------------------------------------
# Drawing
# --------------------------------------------------------------------------------------------------


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2


LESION_ATTEMPTS = 20


@dataclass
class _Anatomy:
    image: np.ndarray  # float32 (S, S) 0..255 without lesions
    zones: np.ndarray  # uint8 (S, S): zone code of each lung pixel, 0 outside the lungs


def _anatomy(rng: np.random.Generator, s: int) -> _Anatomy:
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float32) / s
    j = lambda scale: float(rng.uniform(-scale, scale))  # noqa: E731
    body = _ellipse(yy, xx, 0.56 + j(0.02), 0.5 + j(0.015), 0.52 + j(0.03), 0.44 + j(0.03)) < 1
    img = np.full((s, s), 12.0, dtype=np.float32)
    img[body] = 150 + j(15)
    # ribs: soft horizontal bands inside the body
    rib = 0.5 + 0.5 * np.sin((yy * (14 + j(1.5)) + 0.25 * np.abs(xx - 0.5)) * 2 * np.pi + j(3))
    img += body * 18 * rib**3
    lung_cy = 0.46 + j(0.02)
    lung_ry = 0.27 + j(0.02)
    lungs = []
    for side, cx in (("right", 0.31 + j(0.015)), ("left", 0.69 + j(0.015))):
        rx = (0.14 if side == "right" else 0.13) + j(0.01)
        e = _ellipse(yy, xx, lung_cy, cx, lung_ry, rx)
        lungs.append((side, e < 1, lung_cy - lung_ry, 2 * lung_ry))
    lung_any = lungs[0][1] | lungs[1][1]
    heart = _ellipse(yy, xx, 0.64 + j(0.02), 0.56 + j(0.02), 0.13 + j(0.01), 0.12 + j(0.01)) < 1
    tex = smooth_noise(rng, s, 18)
    img[lung_any] = 55 + 10 * tex[lung_any] + 14 * (rib[lung_any] ** 3)
    img[heart] = 175 + 8 * tex[heart]
    spine = np.abs(xx - 0.5) < 0.035 + 0.004 * np.sin(yy * 60)
    img[spine & body] = 205
    img += 6 * smooth_noise(rng, s, 40)
    zones = np.zeros((s, s), dtype=np.uint8)
    for side, m, top, height in lungs:
        m = m & ~heart
        level = np.clip(((yy - top) / height * 3).astype(np.int32), 0, 2)
        code = 1 + 3 * SIDES.index(side) + level
        zones[m] = code[m].astype(np.uint8)
    return _Anatomy(img, zones)


def _lesion(rng: np.random.Generator, zones: np.ndarray, code: int, s: int) -> np.ndarray | None:
    """A soft-edged blob inside one zone (clipped to it); returns its float opacity map (0..1) or None."""
    ys, xs = np.nonzero(zones == code)
    if len(ys) < 20:
        return None
    cy_z, cx_z = ys.mean(), xs.mean()
    k = int(rng.integers(len(ys)))
    cy = 0.5 * ys[k] + 0.5 * cy_z  # pull toward the zone centre so the blob is mostly inside
    cx = 0.5 * xs[k] + 0.5 * cx_z
    r = s * float(rng.uniform(0.04, 0.075))
    ry, rx = r * float(rng.uniform(0.7, 1.3)), r * float(rng.uniform(0.7, 1.3))
    half = int(2 * max(ry, rx)) + 2
    y0, y1 = max(0, int(cy) - half), min(s, int(cy) + half + 1)
    x0, x1 = max(0, int(cx) - half), min(s, int(cx) + half + 1)
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    d = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2)
    wobble = rng.uniform(-0.25, 0.25, (4, 4)).astype(np.float32)
    wob = np.asarray(Image.fromarray(wobble).resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR))
    d = d + wob
    op = np.clip(1.4 - d, 0, 1)  # soft edge
    out = np.zeros((s, s), dtype=np.float32)
    out[y0:y1, x0:x1] = op
    out *= zones == code
    return out if (out > 0.5).sum() >= 12 else None


def _pick(rng: np.random.Generator, pool: list[int], k: int) -> list[int]:
    return [int(c) for c in rng.choice(pool, size=min(k, len(pool)), replace=False)] if k > 0 else []


def _related_zone(rng: np.random.Generator, named: list[int], free: list[int]) -> int | None:
    """A free zone that differs from a named one in only one word (same side other level, or mirrored)."""
    base = named[int(rng.integers(len(named)))]
    side, level = ZONE_CODES[base]
    same_side = [c for c in free if ZONE_CODES[c][0] == side]
    mirror = [c for c in free if ZONE_CODES[c][1] == level]
    cands = same_side if rng.random() < 0.6 and same_side else (mirror or same_side)
    return int(cands[int(rng.integers(len(cands)))]) if cands else None


def generate_item(cfg: SyntheticConfig, split: str, index: int) -> list[SyntheticItem]:
    """Image ``index`` of ``split``: one item, or two (a counterfactual pair) for paired test indices."""
    if cfg.family == "b":
        return generate_item_b(cfg, split, index)
    s = cfg.size
    rng = np.random.default_rng((cfg.seed, SPLITS.index(split), index))
    paired = split == "test" and index < _n_pair_images(cfg)
    anat = _anatomy(rng, s)
    all_codes = list(range(1, 7))
    if paired:
        # two disjoint zone sets; half of the pairs differ in one word only (level or side)
        a = _pick(rng, all_codes, int(rng.choice([1, 1, 2])))
        free = [c for c in all_codes if c not in a]
        if rng.random() < 0.5:
            rel = _related_zone(rng, a, free)
            b = [rel] if rel is not None else _pick(rng, free, 1)
        else:
            b = _pick(rng, free, int(rng.choice([1, 2])))
        groups = [a, b]
        extra = _pick(rng, [c for c in free if c not in b], 1) if rng.random() < cfg.distractor_share else []
    else:
        k = int(rng.choice([1, 2, 3], p=[0.45, 0.4, 0.15]))
        named = _pick(rng, all_codes, k)
        groups = [named]
        extra = []
        if rng.random() < cfg.distractor_share:
            free = [c for c in all_codes if c not in named]
            rel = _related_zone(rng, named, free)
            extra = [rel] if rel is not None else []
            if rng.random() < 0.3:
                extra += _pick(rng, [c for c in free if c not in extra], 1)
    lesion_codes = sorted({c for g in groups for c in g} | set(extra))
    img = anat.image.copy()
    labels = np.zeros((s, s), dtype=np.uint8)
    present: list[int] = []
    # Small images: a draw can place no lesion at all; draw again, then try every zone.
    for attempt in range(LESION_ATTEMPTS + 1):
        for code in (lesion_codes if attempt < LESION_ATTEMPTS else all_codes):
            op = _lesion(rng, anat.zones, code, s)
            if op is None:
                continue
            strength = float(rng.uniform(55, 90))
            img += op * strength * (0.85 + 0.15 * smooth_noise(rng, s, 24))
            labels[op > 0.5] = code
            present.append(code)
        if present:
            break
    img += rng.normal(0, 4.0, (s, s)).astype(np.float32)
    img8 = np.clip(img, 0, 255).astype(np.uint8)
    groups = [[c for c in g if c in present] for g in groups]
    if any(not g for g in groups):  # a zone too small for a lesion (rare): fall back to any present lesion
        groups = [g or [present[0]] for g in groups] if present else groups
    if not present:
        raise DataError(f"--size {s}: no lesion fits the phantom's lung zones after {LESION_ATTEMPTS} draws and in any zone; "
                        "use --size 64 or more")
    base = f"syn_{split}_{index:05d}"
    items = []
    for gi, g in enumerate(groups):
        mask = np.isin(labels, g).astype(np.uint8)
        items.append(SyntheticItem(
            id=base + (("_cfa", "_cfb")[gi] if paired else ""), split=split, image=img8, mask=mask,
            lesion_labels=labels, note=make_note(g), named=sorted(g),
            distractors=[c for c in present if c not in g], pair=base if paired else "",
        ))
    return items


def _n_pair_images(cfg: SyntheticConfig) -> int:
    """How many test *indices* are pairs (each yields two items)."""
    if cfg.family == "b":
        return n_test_images_b(cfg.n_test)
    return int(round(cfg.n_test * cfg.pair_share / 2))


def _indices(cfg: SyntheticConfig) -> list[tuple[str, int]]:
    """(split, index) jobs; pairs count double so the test split holds n_test items."""
    n_test_idx = n_test_images_b(cfg.n_test) if cfg.family == "b" else cfg.n_test - _n_pair_images(cfg)
    return ([("train", i) for i in range(cfg.n_train)] + [("val", i) for i in range(cfg.n_val)]
            + [("test", i) for i in range(n_test_idx)])


# --------------------------------------------------------------------------------------------------
# Writers: a prepared DATA_DIR, or the QaTa folder layout
# --------------------------------------------------------------------------------------------------

_QATA_FOLDERS = {"train": "Train_Folder", "val": "Val_Folder", "test": "Test_Folder"}
_QATA_SHEETS = {"train": "Train_text.xlsx", "val": "Val_text.xlsx", "test": "Test_text.xlsx"}


def _write_job(job: tuple[dict[str, Any], str, str, tuple[str, int]]) -> list[dict[str, Any]]:
    cfg_d, root, layout, (split, index) = job[0], job[1], job[2], job[3]
    cfg = SyntheticConfig(**cfg_d)
    root_p = Path(root)
    rows = []
    for it in generate_item(cfg, split, index):
        if layout == "qata":
            folder = root_p / _QATA_FOLDERS[split]
            img_rel = f"{_QATA_FOLDERS[split]}/img/{it.id}.png"
            (folder / "img" / f"{it.id}.png").write_bytes(encode_png(it.image, 6))
            (folder / "labelcol" / f"mask_{it.id}.png").write_bytes(encode_png(it.mask * np.uint8(255), 6))
            (folder / "lesion" / f"{it.id}.png").write_bytes(encode_png(it.lesion_labels, 6))
            rows.append({"id": it.id, "split": split, "Image": f"mask_{it.id}.png", "Description": it.note,
                         "image": img_rel})
        else:
            rel = {"image": f"images/{split}/{it.id}.png", "mask": f"masks/{split}/{it.id}.png",
                   "lesion_labels": f"lesion_labels/{split}/{it.id}.png"}
            (root_p / rel["image"]).write_bytes(encode_png(it.image))
            (root_p / rel["mask"]).write_bytes(encode_png(it.mask * np.uint8(255)))
            (root_p / rel["lesion_labels"]).write_bytes(encode_png(it.lesion_labels))
            rows.append({"id": it.id, "split": split, "note": it.note, "height": cfg.size, "width": cfg.size,
                         "source": f"synthetic:{cfg.family}:seed={cfg.seed}:{split}:{index}", "pair": it.pair, **rel,
                         "_named": it.named, "_distractors": it.distractors})
    return rows


def write_synthetic(
    out: str | Path,
    cfg: SyntheticConfig | None = None,
    layout: str = "prepared",
    overwrite: bool = False,
    workers: int = 0,
    progress: ProgressFn | None = None,
) -> dict[str, Any]:
    """Generate a synthetic set into ``out``, atomically (temp folder, then rename).

    Args:
        out: destination folder (absent or empty unless ``overwrite``).
        cfg: sizes, seed and mix (defaults: 200/50/50 at 224 px).
        layout: ``prepared`` (a DATA_DIR: manifest.csv, dataset.json, images/, masks/, lesion_labels/) or
            ``qata`` (``{Train,Val,Test}_Folder/{img,labelcol,lesion}`` + ``*_text.xlsx``, read back by
            ``prepare --layout qata``).
        workers: processes (0 = all cores, 1 = in-process).
        progress: optional ``progress(stage, done, total)``.

    Returns:
        The dict written to ``dataset.json`` (prepared) or ``synthetic.json`` (qata).
    """
    t0 = time.perf_counter()
    cfg = cfg or SyntheticConfig()
    if layout not in ("prepared", "qata"):
        raise DataError(f"synthetic layout must be 'prepared' or 'qata', got '{layout}'")
    if min(cfg.n_train, cfg.n_val, cfg.n_test) < 0 or cfg.n_train + cfg.n_val + cfg.n_test == 0:
        raise DataError("--n-train/--n-val/--n-test must be >= 0 and not all 0")
    if cfg.size < 32:
        raise DataError(f"--size must be >= 32 for synthetic data, got {cfg.size}")
    if cfg.family not in FAMILIES:
        raise DataError(f"--family must be one of {', '.join(FAMILIES)}, got '{cfg.family}'")
    if not 0 <= cfg.pair_share <= 1:
        raise DataError(f"--pair-share must be in [0, 1], got {cfg.pair_share}")
    out = Path(out)
    check_out_dir(out, overwrite)
    staging = make_staging_dir(out)
    try:
        for split in SPLITS:
            subs = ([f"{_QATA_FOLDERS[split]}/{d}" for d in ("img", "labelcol", "lesion")] if layout == "qata"
                    else [f"{d}/{split}" for d in ("images", "masks", "lesion_labels")])
            for sub in subs:
                (staging / sub).mkdir(parents=True, exist_ok=True)
        jobs = [(asdict(cfg), str(staging), layout, job) for job in _indices(cfg)]
        rows: list[dict[str, Any]] = []
        if progress:
            progress("synthetic", 0, len(jobs))
        step = max(1, len(jobs) // 100)
        for done, res in enumerate(pool_map(_write_job, jobs, workers, chunksize=32), start=1):
            rows.extend(res)
            if progress and (done % step == 0 or done == len(jobs)):
                progress("synthetic", done, len(jobs))
        rows.sort(key=lambda r: (SPLITS.index(r["split"]), r["id"]))
        counts = {s: sum(r["split"] == s for r in rows) for s in SPLITS}
        n_distr = sum(bool(r.get("_distractors")) for r in rows) if layout == "prepared" else None
        info = {
            "layout": "synthetic" if layout == "prepared" else "synthetic-qata",
            "source": "reclmis prepare --synthetic",
            "size": cfg.size,
            "counts": counts,
            "n_images": sum(counts.values()),
            "split_rule": "generated per split",
            "problem_counts": {},
            "problems": [],
            "dropped": [],
            "lesion_labels": True,
            "lesion_label_codes": {str(c): zone_name(c) for c in ZONE_CODES},
            "lesion_label_note": "0 = background; patient's right lung is on the image's left",
            "synthetic": asdict(cfg),
            "n_counterfactual_pairs": sum(1 for r in rows if r["id"].endswith("_cfa")),
            "n_with_distractors": n_distr,
            "tool": "reclmis",
            "version": __version__,
        }
        if layout == "qata":
            for split in SPLITS:
                sheet = pd.DataFrame([{"Image": r["Image"], "Description": r["Description"]}
                                      for r in rows if r["split"] == split], columns=["Image", "Description"])
                sheet.to_excel(staging / _QATA_FOLDERS[split] / _QATA_SHEETS[split], index=False)
            (staging / "synthetic.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        else:
            write_manifest(staging, [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows])
            info["seconds"] = round(time.perf_counter() - t0, 2)
            write_dataset_json(staging, info)
        commit_staging_dir(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("wrote %d synthetic images (%s) to %s in %.1fs", info["n_images"],
             ", ".join(f"{k} {v}" for k, v in counts.items()), out, time.perf_counter() - t0)
    return info

