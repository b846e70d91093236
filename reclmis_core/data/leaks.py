"""Split hygiene: images (and patients, studies) that appear in more than one split of a prepared DATA_DIR.

A test image that is also a training image (re-exported, re-encoded, brightened) inflates every score measured
on it. :func:`find_leaks` compares the prepared images, at the model size ``prepare`` wrote them, across splits:

* **exact**: the same pixels (a digest of the decoded image);
* **near**: a 256-bit difference hash (dHash: a 17 x 16 gray thumbnail, one bit per horizontal neighbour pair
  telling which is brighter) within :data:`NEAR_HAMMING` bits, confirmed by a normalised correlation of 64 x 64
  thumbnails of at least :data:`NEAR_CORRELATION`. The hash alone cannot tell two phantoms (or two chest
  radiographs) drawn on one template from a re-encoded copy; the correlation can. Found: re-encoding (JPEG),
  brightness/contrast/gamma changes, noise, resampling, left-right mirroring. Not found: crops, rotations;
* **patient / study**: for DICOM sources, one PatientID or StudyInstanceUID in rows of different splits
  (PatientIDs are reported as a short SHA-256 digest, never in clear).

Nearly uniform images (blank slices) carry no content to compare and are skipped (counted). Pairs are reported
per source (all slices of a volume are one source). ``prepare`` writes the result as ``leaks`` in dataset.json,
warns with the counts, and with ``--fail-on-leaks`` refuses to write the DATA_DIR.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import DataError
from .pool import pool_map

NEAR_HAMMING = 24  # (bits of 256) dHash distance below which a cross-split pair is a near-duplicate candidate
NEAR_CORRELATION = 0.99  # normalised correlation of 64 x 64 thumbnails that confirms a candidate
FLAT_STD = 2.0  # gray levels: images with a smaller standard deviation are not compared
MAX_LISTED = 200  # pairs listed per kind in dataset.json (the counts are complete)
_SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}
_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def image_features(path: str | Path) -> tuple[bytes, np.ndarray, np.ndarray, float, np.ndarray]:
    """(pixel digest, packed 256-bit dHash (32 uint8), 64 x 64 uint8 thumbnail, gray std, dHash of the image
    mirrored left-right) of one image file."""
    with Image.open(path) as img:
        img.load()
        gray = img.convert("L")
    arr = np.asarray(gray)
    digest = hashlib.blake2b(np.ascontiguousarray(np.asarray(img)).tobytes() + str(arr.shape).encode(),
                             digest_size=16).digest()
    small = np.asarray(gray.resize((17, 16), Image.BILINEAR), dtype=np.int16)
    bits = np.packbits((small[:, 1:] > small[:, :-1]).ravel())
    mirrored = np.packbits((small[:, :-1] > small[:, 1:])[:, ::-1].ravel())
    thumb = np.asarray(gray.resize((64, 64), Image.BILINEAR), dtype=np.uint8)
    return digest, bits, thumb, float(arr.std()), mirrored


def _indexed_features(item: tuple[int, str]) -> tuple[int, tuple[bytes, np.ndarray, np.ndarray, float, np.ndarray]]:
    return item[0], image_features(item[1])


def _normalised(thumbs: np.ndarray) -> np.ndarray:
    t = thumbs.reshape(thumbs.shape[0], -1).astype(np.float32)
    t -= t.mean(axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True) + 1e-6
    return t


def _candidates(a: np.ndarray, b: np.ndarray, max_bits: int, chunk: int = 256) -> list[tuple[int, int, int]]:
    """(i, j, Hamming distance) of every pair of packed hashes a[i], b[j] within ``max_bits`` (numpy >= 2 counts
    bits natively on 64-bit words, older numpy through a byte table: the same result, 4x slower)."""
    native = hasattr(np, "bitwise_count")
    if native:
        a, b = np.ascontiguousarray(a).view(np.uint64), np.ascontiguousarray(b).view(np.uint64)
    out = []
    for start in range(0, a.shape[0], chunk):
        xor = a[start:start + chunk, None, :] ^ b[None, :, :]
        dist = (np.bitwise_count(xor) if native else _POPCOUNT[xor]).sum(axis=2, dtype=np.int32)
        for i, j in zip(*np.nonzero(dist <= max_bits)):
            out.append((start + int(i), int(j), int(dist[i, j])))
    return out


def _dicom_ids(source: Path) -> tuple[str | None, str | None]:
    """(PatientID, StudyInstanceUID) of a DICOM file or of the first DICOM file of a series folder."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    from .readers.dicom import is_dicom

    files = [source] if source.is_file() else sorted(p for p in source.iterdir() if p.is_file()) if source.is_dir() \
        else []
    for f in files:
        if not is_dicom(f):
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
            continue
        return (str(ds.get("PatientID", "")).strip() or None, str(ds.get("StudyInstanceUID", "")).strip() or None)
    return None, None


def _shared_ids(rows: Sequence[dict[str, Any]], src: Path | None) -> dict[str, list[dict[str, Any]]]:
    """PatientIDs and StudyInstanceUIDs of DICOM sources that occur in more than one split."""
    found: dict[str, dict[str, dict[str, set[str]]]] = {"patient": defaultdict(lambda: defaultdict(set)),
                                                      "study": defaultdict(lambda: defaultdict(set))}
    if src is None:
        return {"patient": [], "study": []}
    seen: dict[str, tuple[str | None, str | None]] = {}
    for row in rows:
        source = str(row.get("source", ""))
        if source not in seen:
            seen[source] = _dicom_ids(src / source) if source else (None, None)
        patient, study = seen[source]
        if patient:
            found["patient"][patient][row["split"]].add(source)
        if study:
            found["study"][study][row["split"]].add(source)
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, by_id in found.items():
        out[kind] = []
        for value, splits in sorted(by_id.items()):
            if len(splits) > 1:
                shown = "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:12] if kind == "patient" else value
                out[kind].append({kind: shown, "splits": {s: sorted(v) for s, v in sorted(splits.items())}})
    return out


def find_leaks(root: str | Path, rows: Sequence[dict[str, Any]], src: str | Path | None = None,
               workers: int = 1) -> dict[str, Any]:
    """The ``leaks`` section of dataset.json for the prepared ``rows`` (manifest rows: id, split, image relative
    to ``root``, source relative to ``src``)."""
    root = Path(root)
    paths = [str(root / r["image"]) for r in rows]
    feats: list[Any] = [None] * len(rows)
    try:
        for i, f in pool_map(_indexed_features, list(enumerate(paths)), workers, chunksize=64):
            feats[i] = f
    except OSError as exc:
        raise DataError(f"{root}: cannot read a prepared image for the leak check ({exc})") from None
    splits = np.asarray([r["split"] for r in rows])
    flat = np.asarray([f[3] < FLAT_STD for f in feats], dtype=bool)
    units = [str(r.get("source") or r["id"]) for r in rows]
    pairs: dict[str, dict[tuple[str, str], dict[str, Any]]] = {"exact": {}, "near": {}}

    def add(kind: str, i: int, j: int, **info: Any) -> None:
        a, b = sorted((i, j), key=lambda k: (_SPLIT_ORDER.get(rows[k]["split"], 3), units[k]))  # train first
        key = (units[a], units[b])
        entry = pairs[kind].setdefault(key, {"a": rows[a]["id"], "a_split": rows[a]["split"], "b": rows[b]["id"],
                                             "b_split": rows[b]["split"], "images": 0, **info})
        entry["images"] += 1

    by_digest: dict[bytes, list[int]] = defaultdict(list)
    for i, f in enumerate(feats):
        if not flat[i]:
            by_digest[f[0]].append(i)
    exact_pairs = set()
    for members in by_digest.values():
        for x in range(len(members)):
            for y in range(x + 1, len(members)):
                i, j = members[x], members[y]
                if splits[i] != splits[j]:
                    add("exact", i, j)
                    exact_pairs.add((min(i, j), max(i, j)))
    hashes = np.stack([f[1] for f in feats]) if feats else np.zeros((0, 32), np.uint8)
    mirrored = np.stack([f[4] for f in feats]) if feats else np.zeros((0, 32), np.uint8)
    names = sorted(set(splits.tolist()))
    found = set(exact_pairs)
    for x, sa in enumerate(names):
        for sb in names[x + 1:]:
            ia = np.flatnonzero((splits == sa) & ~flat)
            ib = np.flatnonzero((splits == sb) & ~flat)
            if not len(ia) or not len(ib):
                continue
            for flipped in (False, True):  # the copy may be mirrored left-right (an AP image flipped to PA)
                cands = _candidates((mirrored if flipped else hashes)[ia], hashes[ib], NEAR_HAMMING)
                if not cands:
                    continue
                ta = np.stack([feats[ia[i]][2] for i, _, _ in cands])
                ta = _normalised(ta[:, :, ::-1] if flipped else ta)
                tb = _normalised(np.stack([feats[ib[j]][2] for _, j, _ in cands]))
                corr = (ta * tb).sum(axis=1)
                for (i, j, d), c in zip(cands, corr):
                    key = (min(int(ia[i]), int(ib[j])), max(int(ia[i]), int(ib[j])))
                    if c >= NEAR_CORRELATION and key not in found:
                        found.add(key)
                        add("near", int(ia[i]), int(ib[j]), hamming=d, correlation=round(float(c), 4),
                            mirrored=flipped)
    shared = _shared_ids(rows, Path(src) if src is not None else None)
    counts = {"exact": len(pairs["exact"]), "near": len(pairs["near"]), "patient": len(shared["patient"]),
              "study": len(shared["study"])}
    return {
        "method": {"near": f"256-bit dHash within {NEAR_HAMMING} bits and 64x64 correlation >= "
                           f"{NEAR_CORRELATION}, on the prepared images", "exact": "identical prepared pixels",
                   "ids": "DICOM PatientID (as a SHA-256 digest) and StudyInstanceUID"},
        "counts": {**counts, "total": sum(counts.values())},
        "flat_images_not_compared": int(flat.sum()),
        "exact": list(pairs["exact"].values())[:MAX_LISTED],
        "near": list(pairs["near"].values())[:MAX_LISTED],
        "patient": shared["patient"][:MAX_LISTED],
        "study": shared["study"][:MAX_LISTED],
    }


def leak_summary(leaks: dict[str, Any], fatal: bool = False) -> str:
    """One line with the counts: the warning ``prepare`` prints, or (``fatal``) its ``--fail-on-leaks`` error
    naming the first pair."""
    c = leaks["counts"]
    line = (f"split leaks: {c['exact']} exact and {c['near']} near-duplicate image pair(s), {c['patient']} "
            f"patient(s) and {c['study']} study(ies) in more than one split")
    if not fatal:
        return line + " (listed under 'leaks' in dataset.json; --fail-on-leaks makes this an error)"
    first = next((f"{p['a']} ({p['a_split']}) ~ {p['b']} ({p['b_split']})" for k in ("exact", "near")
                  for p in leaks[k][:1]), None)
    if first is None:
        first = next((f"{k} {e[k]} in {', '.join(e['splits'])}" for k in ("patient", "study") for e in leaks[k][:1]))
    return f"{line}, first: {first}; nothing was written (--fail-on-leaks)"
