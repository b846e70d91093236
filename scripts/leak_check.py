"""Measure ``prepare``'s split-leak check (reclmis_core.data.leaks): recall and false positives on planted
duplicates, and its time on many images.

    python scripts/leak_check.py recall DATA_DIR [--plant 40]   # DATA_DIR: e.g. reclmis prepare --synthetic
    python scripts/leak_check.py time --n 10000 [--size 224]

``recall`` copies ``--plant`` train images of a prepared DATA_DIR into a scratch copy's test split, each through
one edit (exact copy, JPEG q60, brightness +20 %, contrast 0.8, gamma 0.8, Gaussian noise sigma 8, downscale to
2/3 and back, left-right mirror, and the edits it does not claim to find: 5 % crop, 3 degree rotation), runs
``find_leaks`` and prints recall per edit and the pairs it reports that were not planted (false positives).
``time`` writes ``--n`` distinct images (smooth random textures) split 70/15/15 and times ``find_leaks``.
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from reclmis_core.data.leaks import find_leaks


def _jpeg(im: Image.Image) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=60)
    return Image.open(buf).convert(im.mode)


def _crop(im: Image.Image, f: float = 0.05) -> Image.Image:
    w, h = im.size
    d = int(w * f)
    return im.crop((d, d, w - d, h - d)).resize((w, h), Image.BILINEAR)


def _noise(im: Image.Image, seed: int) -> Image.Image:
    a = np.asarray(im, np.float32) + np.random.default_rng(seed).normal(0, 8, np.asarray(im).shape)
    return Image.fromarray(np.clip(a + 0.5, 0, 255).astype(np.uint8))


EDITS = {
    "exact": lambda im, s: im,
    "jpeg_q60": lambda im, s: _jpeg(im),
    "brightness_1.2": lambda im, s: ImageEnhance.Brightness(im).enhance(1.2),
    "contrast_0.8": lambda im, s: ImageEnhance.Contrast(im).enhance(0.8),
    "gamma_0.8": lambda im, s: Image.fromarray((255 * (np.asarray(im) / 255.0) ** 0.8 + 0.5).astype(np.uint8)),
    "noise_sigma8": _noise,
    "resample_0.67": lambda im, s: im.resize((im.width * 2 // 3, im.height * 2 // 3)).resize(im.size),
    "mirror": lambda im, s: ImageOps.mirror(im),
    # geometric edits: documented as not found
    "crop_5%": lambda im, s: _crop(im),
    "rotate_3deg": lambda im, s: im.rotate(3, resample=Image.BILINEAR),
}
CLAIMED = [k for k in EDITS if k not in ("crop_5%", "rotate_3deg")]


def recall(data_dir: Path, n_plant: int) -> None:
    with open(data_dir / "manifest.csv", newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    train = [r for r in rows if r["split"] == "train"]
    scratch = Path(tempfile.mkdtemp(prefix="leakcheck-"))
    try:
        shutil.copytree(data_dir / "images", scratch / "images")
        planted: dict[tuple[str, str], str] = {}
        picks = np.linspace(0, len(train) - 1, n_plant).round().astype(int)
        for k, idx in enumerate(picks):
            src = train[int(idx)]
            edit = list(EDITS)[k % len(EDITS)]
            img = Image.open(data_dir / src["image"])
            out_id = f"planted_{k:03d}_{edit}"
            rel = f"images/test/{out_id}.png"
            EDITS[edit](img, k).save(scratch / rel)
            rows.append({**src, "id": out_id, "split": "test", "image": rel, "source": f"planted/{out_id}"})
            planted[(src["id"], out_id)] = edit
        t0 = time.perf_counter()
        leaks = find_leaks(scratch, rows)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    found = {(p["a"], p["b"]) for kind in ("exact", "near") for p in leaks[kind]}
    print(f"{data_dir}: {len(rows) - len(planted)} images + {len(planted)} planted duplicates in test; "
          f"find_leaks {seconds:.2f} s")
    for edit in EDITS:
        pairs = [p for p, e in planted.items() if e == edit]
        hit = sum(p in found for p in pairs)
        print(f"  {edit:15s} {hit}/{len(pairs)} found{'' if edit in CLAIMED else '  (not claimed)'}")
    claimed = [p for p, e in planted.items() if e in CLAIMED]
    print(f"  recall on the claimed edits: {sum(p in found for p in claimed)}/{len(claimed)}; "
          f"all edits: {sum(p in found for p in planted)}/{len(planted)}")
    false = sorted(found - set(planted))
    print(f"  false positives (reported pairs that were not planted): {len(false)} {false[:5]}")


def timing(n: int, size: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="leaktime-"))
    try:
        rng = np.random.default_rng(0)
        rows = []
        for i in range(n):
            split = "train" if i % 20 < 14 else ("val" if i % 20 < 17 else "test")
            rel = f"images/{split}/img{i:05d}.png"
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            small = rng.integers(0, 255, (12, 12), dtype=np.uint8)
            Image.fromarray(small).resize((size, size), Image.BICUBIC).save(root / rel, compress_level=1)
            rows.append({"id": f"img{i:05d}", "split": split, "image": rel, "source": rel})
        t0 = time.perf_counter()
        leaks = find_leaks(root, rows, workers=1)
        seconds = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"find_leaks on {n} images of {size}x{size} px (70/15/15 split, 1 worker): {seconds:.1f} s "
          f"({1000 * seconds / n:.2f} ms/image); pairs reported: {leaks['counts']['total']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("recall")
    r.add_argument("data_dir", type=Path)
    r.add_argument("--plant", type=int, default=40)
    t = sub.add_parser("time")
    t.add_argument("--n", type=int, default=10_000)
    t.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    if args.cmd == "recall":
        recall(args.data_dir, args.plant)
    else:
        timing(args.n, args.size)


if __name__ == "__main__":
    main()
