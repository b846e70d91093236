"""Source layouts: find image/mask/note triples in a folder and name every structural problem with its file.

A reader returns a :class:`Scan`: the :class:`Record` list (one per 2-D image, or one per volume for the
``nifti``/``dicom`` layouts, sliced later) plus the :class:`Problem` list found without decoding pixels
(missing masks, empty notes, duplicate ids, notes without image, images without note, paths escaping the source
folder). Pixel-level checks (corrupt files, size mismatch, non-binary masks) happen in :mod:`.prepare`.

Layouts (see ``docs_fragments/data.md``): ``qata``, ``mosmed``, ``ariadne``, ``folder``, ``nifti``, ``dicom``.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..choices import LAYOUTS  # defined there: the CLI help lists them without importing pandas
from ..errors import DataError
from .readers.dicom import DICOM_EXTS, is_dicom
from .readers.nifti import is_nifti
from .readers.raster import RASTER_EXTS

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

#: Problem kinds. All are fatal (exit 2 unless --skip-bad) except ``non_binary_mask`` (a warning).
PROBLEM_KINDS = {
    "missing_mask": "the mask file does not exist",
    "unreadable": "the file cannot be decoded",
    "size_mismatch": "image and mask differ in size",
    "empty_note": "the note is empty",
    "missing_note": "the note column is missing a value",
    "duplicate_id": "two rows describe the same image",
    "note_without_image": "a note names an image that does not exist",
    "image_without_note": "an image has no note",
    "outside_source": "a path resolves outside the source folder",
    "bad_split": "the split is not train, val or test",
    "non_binary_mask": "the mask holds more than two values; binarised as > 0",
}
WARNING_KINDS = frozenset({"non_binary_mask"})

_SPLIT_ALIASES = {
    "train": "train", "training": "train", "tr": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "ts": "test",
}


@dataclass
class Problem:
    """One thing wrong with the source, named with its file."""

    kind: str  # (str) a key of PROBLEM_KINDS
    path: str  # (str) the file (or sheet row) the problem is about
    message: str  # (str) what is wrong, in words
    id: str | None = None  # (str) affected record id, when there is one
    fatal: bool = True  # (bool) False for warnings (non-binary masks)

    def line(self) -> str:
        return f"{self.kind}: {self.path}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "path": self.path, "message": self.message, "id": self.id,
                "severity": "error" if self.fatal else "warning"}


@dataclass
class Record:
    """One image (or one volume, for nifti/dicom) with its mask and note."""

    id: str  # (str) unique id; becomes the output file stem
    split: str  # (str) train | val | test
    image: Path  # (Path) image file, DICOM file, DICOM series folder or NIfTI volume
    mask: Path | None  # (Path) mask file/volume/SEG
    note: str  # (str) the clinical note ("" for volumes whose notes are all per slice)
    source: str  # (str) image path relative to the source folder (for the manifest)
    lesion_labels: Path | None = None  # (Path) zone-coded lesion label map (synthetic data)
    slice_notes: dict[int, str] = field(default_factory=dict)  # (dict) volumes: per-slice notes by index


@dataclass
class Scan:
    """What a layout reader found."""

    layout: str
    root: Path
    records: list[Record]
    problems: list[Problem]
    split_rule: str  # how records were assigned to train/val/test, recorded in dataset.json
    note_files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------

_SPLIT_DIR_RE = re.compile(r"^(train|val|test)[ _-]?folder$", re.IGNORECASE)
_TEXT_RE = re.compile(r"^(train_val|train|val|test)[ _-]?text\.(xlsx|xls|csv)$", re.IGNORECASE)
_DATASET_DIR_NAMES = ("qata-cov19", "qata_cov19", "qatacov19", "covid19", "qata", "mosmeddata+", "mosmeddataplus",
                      "mosmeddata", "mosmed")


def is_inside(path: Path, root: Path) -> bool:
    """True when ``path`` (after resolving symlinks and ``..``) lies inside ``root``."""
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def _files(folder: Path, exts: Iterable[str]) -> dict[str, Path]:
    exts = tuple(exts)
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file() and p.name.lower().endswith(exts)
            and not p.name.startswith(".")}


def _stem(name: str) -> str:
    lower = name.lower()
    for ext in (".nii.gz",) + RASTER_EXTS + (".nii",) + DICOM_EXTS:
        if lower.endswith(ext):
            return name[: -len(ext)]
    return name


def _clean(value: object) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value).strip()


def read_table(path: Path) -> pd.DataFrame:
    """A notes table (.xlsx/.xls/.csv) as strings; DataError naming the file when it cannot be read."""
    try:
        if path.suffix.lower() in (".xlsx", ".xls"):
            df = pd.read_excel(path, dtype=str, engine="openpyxl" if path.suffix.lower() == ".xlsx" else None)
        else:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
    except FileNotFoundError:
        raise DataError(f"{path}: notes file not found") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: {not_utf8(exc)}") from None
    except (ValueError, OSError, KeyError, UnicodeDecodeError, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        raise DataError(f"{path}: cannot read the notes table ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    return df


def not_utf8(exc: UnicodeDecodeError) -> str:
    """The message for a notes table in another encoding (hospital exports are often Windows-1252)."""
    return (f"not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); save it as UTF-8 "
            "(Excel: 'CSV UTF-8') or as .xlsx")


def _column(df: pd.DataFrame, path: Path, *names: str, required: bool = True) -> str | None:
    lower = {c.lower(): c for c in df.columns}
    for name in names:
        if name.lower() in lower:
            return lower[name.lower()]
    if required:
        raise DataError(
            f"{path}: missing column '{names[0]}' (found: {', '.join(map(str, df.columns)) or 'none'})"
        )
    return None


def hash_split(key: str, val_pct: int = 10, test_pct: int = 10) -> str:
    """Deterministic split from a stable hash of ``key``: 80 % train, 10 % val, 10 % test by default."""
    bucket = int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:8], 16) % 100
    if bucket < 100 - val_pct - test_pct:
        return "train"
    return "val" if bucket < 100 - test_pct else "test"


HASH_SPLIT_RULE = "no split column: split by sha1(id) % 100 -> <80 train, <90 val, else test"


def _norm_split(value: str) -> str | None:
    return _SPLIT_ALIASES.get(value.strip().lower())


def _dedupe(records: list[Record], problems: list[Problem]) -> list[Record]:
    """Report ids that occur more than once; all their rows are affected (dropped with --skip-bad)."""
    seen: dict[str, list[Record]] = {}
    for rec in records:
        seen.setdefault(rec.id, []).append(rec)
    for rid, recs in seen.items():
        if len(recs) > 1:
            where = ", ".join(f"{r.split}:{r.source}" for r in recs)
            problems.append(Problem("duplicate_id", str(recs[1].image),
                                    f"id '{rid}' occurs {len(recs)} times ({where})", id=rid))
    return records


# --------------------------------------------------------------------------------------------------
# QaTa-COV19 / MosMedData+ (LViT, RecLMIS distribution)
# --------------------------------------------------------------------------------------------------


def _split_dirs(root: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    if not root.is_dir():
        return out
    for p in sorted(root.iterdir()):
        m = _SPLIT_DIR_RE.match(p.name)
        if p.is_dir() and m:
            out.setdefault(m.group(1).lower(), p)
    return out


def find_lvit_root(src: Path) -> Path | None:
    """The folder holding ``{Train,Val,Test}_Folder``: SRC itself, a known dataset folder, or its only child."""
    if _split_dirs(src):
        return src
    if not src.is_dir():
        return None
    children = [p for p in sorted(src.iterdir()) if p.is_dir() and _split_dirs(p)]
    for p in children:
        if p.name.lower() in _DATASET_DIR_NAMES:
            return p
    return children[0] if len(children) == 1 else None


def _text_files(root: Path, split_dirs: dict[str, Path]) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in [root, *split_dirs.values()]:
        for p in sorted(folder.iterdir()):
            m = _TEXT_RE.match(p.name)
            if p.is_file() and m and not p.name.startswith("~$"):
                found.setdefault(m.group(1).lower(), p)
    return found


def read_lvit(src: Path, flavour: str, val_fraction: float = 0.2) -> Scan:
    """QaTa-COV19 (``flavour='qata'``: masks ``mask_<image>``) or MosMedData+ (``'mosmed'``: same name)."""
    root = find_lvit_root(src)
    if root is None:
        raise DataError(f"{src}: no Train_Folder/Val_Folder/Test_Folder found (is this the {flavour} layout?)")
    split_dirs = _split_dirs(root)
    texts = _text_files(root, split_dirs)
    if not texts:
        raise DataError(f"{root}: no notes sheet found (expected Train_text.xlsx, Val_text.xlsx, Test_text.xlsx or "
                        "Train_Val_text.xlsx next to or inside the split folders)")
    problems: list[Problem] = []
    records: list[Record] = []
    imgs = {s: _files(d / "img", RASTER_EXTS) for s, d in split_dirs.items()}
    masks = {s: _files(d / "labelcol", RASTER_EXTS) for s, d in split_dirs.items()}
    lesions = {s: _files(d / "lesion", (".png",)) for s, d in split_dirs.items()}
    for d in split_dirs.values():
        if not (d / "img").is_dir():
            problems.append(Problem("note_without_image", str(d / "img"), "image folder 'img' is missing"))
    used: set[tuple[str, str]] = set()
    rules: list[str] = []

    by_stem = {id(t): {s: {_stem(n): p for n, p in files.items()} for s, files in t.items()}
               for t in (imgs, masks, lesions)}

    def find(split: str, name: str, table: dict[str, dict[str, Path]]) -> Path | None:
        files = table.get(split, {})
        if name in files:
            return files[name]
        # names without (or with another) extension
        return by_stem[id(table)].get(split, {}).get(_stem(name))

    jobs: list[tuple[str, list[str], Path]] = []  # (sheet key, candidate splits, sheet)
    for key in ("train", "val", "test"):
        if key in texts:
            jobs.append((key, [key], texts[key]))
    if "train_val" in texts:
        if "train" in texts and ("val" in texts or "val" not in split_dirs):
            log.info("ignoring %s: per-split sheets are present", texts["train_val"])
        else:
            jobs.append(("train_val", ["train", "val"], texts["train_val"]))
    for key, cand, sheet in jobs:
        df = read_table(sheet)
        c_img = _column(df, sheet, "Image", "image", "mask")
        c_txt = _column(df, sheet, "Description", "text", "note")
        names = [_clean(v) for v in df[c_img]]
        notes = [_clean(v) for v in df[c_txt]]
        n = len(names)
        n_train_rows = n - int(round(n * val_fraction))
        shared_no_val = key == "train_val" and "val" not in split_dirs
        if shared_no_val:
            rules.append(f"{sheet.name} is shared by train and val and there is no Val_Folder: val = the last "
                         f"{val_fraction:.0%} of its rows in file order ({n - n_train_rows} of {n})")
        elif key == "train_val":
            rules.append(f"{sheet.name} is shared by train and val: each row goes to the split folder that holds "
                         "its image (Train_Folder first)")
        for i, (name, note) in enumerate(zip(names, notes, strict=True)):
            where = f"{sheet}:row {i + 2}"
            if not name:
                problems.append(Problem("note_without_image", where, "empty 'Image' cell"))
                continue
            if "/" in name or "\\" in name or name.startswith(".."):
                problems.append(Problem("outside_source", where, f"image name '{name}' contains a path"))
                continue
            mask_name = name
            if flavour == "qata":
                image_name = name[5:] if name.lower().startswith("mask_") else name
                mask_name = "mask_" + image_name
            else:
                image_name = name
            split = None
            image = None
            for c in cand:
                image = find(c, image_name, imgs)
                if image is not None:
                    split = c
                    break
            if image is None or split is None:
                problems.append(Problem("note_without_image", where,
                                        f"no image '{image_name}' in {'/'.join(cand)} img folder"))
                continue
            if shared_no_val:
                split = "train" if i < n_train_rows else "val"
                src_split = "train"
            else:
                src_split = split
            rid = _stem(image.name)
            used.add((src_split, image.name))
            if not is_inside(image, src):
                problems.append(Problem("outside_source", str(image), "image resolves outside the source folder", rid))
                continue
            mask = find(src_split, mask_name, masks) or find(src_split, image_name, masks)
            if mask is None:
                expected = split_dirs[src_split] / "labelcol" / mask_name
                problems.append(Problem("missing_mask", str(expected), f"no mask for image {image}", rid))
            elif not is_inside(mask, src):
                problems.append(Problem("outside_source", str(mask), "mask resolves outside the source folder", rid))
                mask = None
            if not note:
                problems.append(Problem("empty_note", where, f"empty note for image '{image.name}'", rid))
            lesion = find(src_split, image.name, lesions) if lesions.get(src_split) else None
            records.append(Record(rid, split, image, mask, note, str(image.relative_to(src)), lesion_labels=lesion))
    for s, files in imgs.items():
        for name, p in files.items():
            if (s, name) not in used:
                problems.append(Problem("image_without_note", str(p), "image has no row in the notes sheet",
                                        _stem(name)))
    _dedupe(records, problems)
    if not rules:
        rules.append("splits from the Train/Val/Test folders and their sheets")
    return Scan(flavour, root, records, problems, "; ".join(rules), [str(p) for p in texts.values()])


# --------------------------------------------------------------------------------------------------
# Ariadne's Thread (CSV prompts)
# --------------------------------------------------------------------------------------------------


def read_ariadne(src: Path, val_fraction: float = 0.2) -> Scan:
    """``prompt/{train,test}.csv`` (``Image`` = mask file name) + ``{Train,Test}/{Images,GTs}``."""
    prompt = src / "prompt"
    if not (prompt / "train.csv").is_file() and not (prompt / "test.csv").is_file():
        raise DataError(f"{src}: no prompt/train.csv or prompt/test.csv (is this the ariadne layout?)")
    problems: list[Problem] = []
    records: list[Record] = []
    used: set[Path] = set()
    rule = ""
    for part in ("train", "test"):
        sheet = prompt / f"{part}.csv"
        folder = next((p for p in src.iterdir() if p.is_dir() and p.name.lower() == part), src / part.title())
        if not sheet.is_file():
            continue
        df = read_table(sheet)
        c_img = _column(df, sheet, "Image")
        c_txt = _column(df, sheet, "Description", "text")
        names = [_clean(v) for v in df[c_img]]
        notes = [_clean(v) for v in df[c_txt]]
        n = len(names)
        n_train = int(n * (1 - val_fraction))
        if part == "train":
            rule = (f"val = the last {val_fraction:.0%} of prompt/train.csv rows in file order ({n - n_train} of {n}),"
                    " as Ariadne's Thread does")
        img_dir, gt_dir = folder / "Images", folder / "GTs"
        for i, (mask_name, note) in enumerate(zip(names, notes, strict=True)):
            where = f"{sheet}:row {i + 2}"
            if not mask_name:
                problems.append(Problem("note_without_image", where, "empty 'Image' cell"))
                continue
            image_name = mask_name[5:] if mask_name.lower().startswith("mask_") else mask_name
            image, mask = img_dir / image_name, gt_dir / mask_name
            rid = _stem(image_name)
            if not is_inside(image, src) or not is_inside(mask, src):
                problems.append(Problem("outside_source", where, f"'{mask_name}' resolves outside {src}", rid))
                continue
            if not image.is_file():
                problems.append(Problem("note_without_image", where, f"no image {image}", rid))
                continue
            used.add(image.resolve())
            split = "test" if part == "test" else ("train" if i < n_train else "val")
            if not mask.is_file():
                problems.append(Problem("missing_mask", str(mask), f"no mask for image {image}", rid))
            if not note:
                problems.append(Problem("empty_note", where, f"empty note for image '{image_name}'", rid))
            records.append(Record(rid, split, image, mask if mask.is_file() else None, note,
                                  str(image.relative_to(src))))
        for p in _files(img_dir, RASTER_EXTS).values():
            if p.resolve() not in used:
                problems.append(Problem("image_without_note", str(p), f"image has no row in {sheet.name}",
                                        _stem(p.name)))
    _dedupe(records, problems)
    return Scan("ariadne", src, records, problems, rule or "prompt/test.csv -> test", [str(prompt)])


# --------------------------------------------------------------------------------------------------
# Plain folder and volume layouts (notes.csv)
# --------------------------------------------------------------------------------------------------


def _notes_csv(src: Path) -> Path:
    for name in ("notes.csv", "notes.xlsx"):
        if (src / name).is_file():
            return src / name
    raise DataError(f"{src}: no notes.csv (columns image, note, optional mask, split)")


def _resolve(src: Path, sub: str, value: str) -> Path:
    """A CSV path: relative to SRC/<sub>/ when it exists there, else to SRC."""
    cand = src / sub / value
    return cand if cand.exists() else src / value


def find_companion(folder: Path, image: Path, exts: tuple[str, ...]) -> Path | None:
    """The file in ``folder`` that belongs to ``image``: same name, same stem with one of ``exts``,
    ``mask_<name>`` or ``<stem>_mask<ext>`` (masks, lung masks)."""
    stem = _stem(image.name)
    for cand in (folder / image.name, *(folder / f"{stem}{e}" for e in exts), folder / f"mask_{image.name}",
                 *(folder / f"{stem}_mask{e}" for e in exts)):
        if cand.exists():
            return cand
    return None


def _auto_mask(src: Path, image: Path, exts: tuple[str, ...]) -> Path | None:
    return find_companion(src / "masks", image, exts)


def _read_notes_layout(src: Path, layout: str, image_ok: Callable[[Path], bool], mask_exts: tuple[str, ...],
                       list_images: Callable[[Path], list[Path]], notes_optional: bool = False) -> Scan:
    if notes_optional and not any((src / n).is_file() for n in ("notes.csv", "notes.xlsx")):
        sheet, df = src / "notes.csv", pd.DataFrame(columns=["image", "note"])
    else:
        sheet = _notes_csv(src)
        df = read_table(sheet)
    c_img = _column(df, sheet, "image", "volume", "series")
    c_note = _column(df, sheet, "note", "description", "text")
    c_mask = _column(df, sheet, "mask", required=False)
    c_split = _column(df, sheet, "split", required=False)
    c_slice = _column(df, sheet, "slice", required=False) if layout in ("nifti", "dicom") else None
    problems: list[Problem] = []
    by_id: dict[str, Record] = {}
    records: list[Record] = []
    used: set[Path] = set()
    for i, row in enumerate(df.to_dict("records")):
        where = f"{sheet}:row {i + 2}"
        name = _clean(row[c_img])
        note = _clean(row[c_note])
        if not name:
            problems.append(Problem("note_without_image", where, "empty 'image' cell"))
            continue
        image = _resolve(src, "images", name)
        rid = _stem(Path(name).name) if layout == "folder" else _stem(Path(name.rstrip("/")).name)
        if not is_inside(image, src):
            problems.append(Problem("outside_source", where, f"image '{name}' resolves outside {src}", rid))
            continue
        if not image.exists() or not image_ok(image):
            problems.append(Problem("note_without_image", where, f"no image {image}", rid))
            continue
        used.add(image.resolve())
        split_raw = _clean(row[c_split]) if c_split else ""
        split = _norm_split(split_raw) if split_raw else hash_split(rid)
        if split is None:
            problems.append(Problem("bad_split", where, f"split '{split_raw}' is not train, val or test", rid))
            split = "train"
        mask_raw = _clean(row[c_mask]) if c_mask else ""
        mask: Path | None = _resolve(src, "masks", mask_raw) if mask_raw else _auto_mask(src, image, mask_exts)
        if mask is not None and not is_inside(mask, src):
            problems.append(Problem("outside_source", where, f"mask '{mask_raw}' resolves outside {src}", rid))
            continue
        if mask is None or not mask.exists():
            expected = mask if mask is not None else src / "masks" / image.name
            problems.append(Problem("missing_mask", str(expected), f"no mask for image {image}", rid))
            mask = None
        slice_raw = _clean(row[c_slice]) if c_slice else ""
        if c_slice is not None and slice_raw:
            try:
                z = int(float(slice_raw))
            except ValueError:
                problems.append(Problem("note_without_image", where, f"slice '{slice_raw}' is not an integer", rid))
                continue
            if not note:
                problems.append(Problem("empty_note", where, f"empty note for slice {z} of {image.name}",
                                        f"{rid}_s{z:03d}"))
            rec = by_id.get(rid)
            if rec is None:
                rec = Record(rid, split, image, mask, "", str(image.relative_to(src)))
                by_id[rid] = rec
                records.append(rec)
            if z in rec.slice_notes:
                problems.append(Problem("duplicate_id", where, f"slice {z} of {image.name} has two notes",
                                        f"{rid}_s{z:03d}"))
            rec.slice_notes[z] = note
            continue
        if not note:
            problems.append(Problem("empty_note", where, f"empty note for image '{name}'", rid))
        if layout in ("nifti", "dicom") and rid in by_id and not by_id[rid].note:
            by_id[rid].note = note  # volume-wide note next to per-slice rows
            continue
        rec = Record(rid, split, image, mask, note, str(image.relative_to(src)))
        by_id.setdefault(rid, rec)
        records.append(rec)
    for p in list_images(src):
        if p.resolve() in used:
            continue
        if notes_optional:  # an image with a mask but no note is what `reclmis notes` is for
            rid = _stem(p.name)
            mask = _auto_mask(src, p, mask_exts)
            if mask is None:
                problems.append(Problem("missing_mask", str(src / "masks" / p.name), f"no mask for image {p}", rid))
            records.append(Record(rid, hash_split(rid), p, mask, "", str(p.relative_to(src))))
            continue
        problems.append(Problem("image_without_note", str(p), f"image has no row in {sheet.name}", _stem(p.name)))
    _dedupe(records, problems)
    rule = "split column of notes" if c_split else HASH_SPLIT_RULE
    if layout in ("nifti", "dicom") and not c_split:
        rule += " (per volume, so slices of one scan stay in one split)"
    return Scan(layout, src, records, problems, rule, [str(sheet)])


def read_folder(src: Path, notes_optional: bool = False) -> Scan:
    """``images/``, ``masks/`` (same name, ``mask_<name>`` or ``<stem>_mask``), ``notes.csv``.

    With ``notes_optional`` (``reclmis notes``) the notes file may be absent, and images without a row
    become records with an empty note instead of problems.
    """
    if not (src / "images").is_dir():
        raise DataError(f"{src}: no images/ folder (folder layout: images/, masks/, notes.csv)")
    exts = RASTER_EXTS + DICOM_EXTS
    return _read_notes_layout(
        src, "folder", lambda p: p.is_file(), exts, lambda s: list(_files(s / "images", exts).values()),
        notes_optional,
    )


def _dicom_series_dirs(src: Path) -> list[Path]:
    images = src / "images"
    if not images.is_dir():
        return []
    return [p for p in sorted(images.iterdir()) if p.is_dir() and any(is_dicom(f) for f in p.iterdir())]


def read_volumes(src: Path, layout: str, notes_optional: bool = False) -> Scan:
    """``nifti``: ``images/*.nii[.gz]``; ``dicom``: ``images/<series folder>/``; masks in ``masks/`` (NIfTI,
    DICOM SEG ``.dcm`` or a DICOM series folder) and ``notes.csv`` (image, note, optional mask, split, slice)."""
    if not (src / "images").is_dir():
        raise DataError(f"{src}: no images/ folder ({layout} layout: images/, masks/, notes.csv)")
    mask_exts = (".nii.gz", ".nii", ".dcm")
    if layout == "nifti":
        def ok(p: Path) -> bool:
            return p.is_file() and is_nifti(p)

        def listing(s: Path) -> list[Path]:
            return [p for p in sorted((s / "images").iterdir()) if ok(p)]
    else:
        def ok(p: Path) -> bool:
            return p.is_dir() or is_dicom(p)

        def listing(s: Path) -> list[Path]:
            return _dicom_series_dirs(s)
    return _read_notes_layout(src, layout, ok, mask_exts, listing, notes_optional)


# --------------------------------------------------------------------------------------------------
# Auto-detection
# --------------------------------------------------------------------------------------------------


def detect_layout(src: Path) -> str:
    """Guess the layout of ``src``; DataError listing what was expected when nothing fits."""
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    root = find_lvit_root(src)
    if root is not None:
        if "mosmed" in root.name.lower() or "mosmed" in src.name.lower():
            return "mosmed"
        names = [n for d in _split_dirs(root).values() for n in _files(d / "labelcol", RASTER_EXTS)]
        prefixed = sum(n.lower().startswith("mask_") for n in names)
        return "qata" if not names or prefixed * 2 >= len(names) else "mosmed"
    if (src / "prompt").is_dir():
        return "ariadne"
    if (src / "images").is_dir():
        entries = list((src / "images").iterdir())
        if any(is_nifti(p) for p in entries):
            return "nifti"
        if _dicom_series_dirs(src):
            return "dicom"
        return "folder"
    raise DataError(
        f"{src}: cannot detect the layout (expected Train_Folder/... for qata/mosmed, prompt/ for ariadne, or "
        "images/ + notes.csv for folder/nifti/dicom); pass --layout"
    )


def scan_source(src: str | Path, layout: str = "auto", notes_optional: bool = False) -> Scan:
    """Read the source folder in the given (or detected) layout. Structural problems are in ``scan.problems``.

    ``notes_optional``: folder/nifti/dicom sources may lack notes.csv or some of its rows (``reclmis notes``
    writes them); images without a note become records with an empty note.
    """
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: source folder not found")
    if layout == "auto":
        layout = detect_layout(src)
        log.info("detected layout: %s", layout)
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout '{layout}'; choose one of auto, {', '.join(LAYOUTS)}")
    if layout in ("qata", "mosmed"):
        return read_lvit(src, layout)
    if layout == "ariadne":
        return read_ariadne(src)
    if layout == "folder":
        return read_folder(src, notes_optional)
    return read_volumes(src, layout, notes_optional)
