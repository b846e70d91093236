"""QaTa-COV19 and MosMedData+ as LViT/RecLMIS distribute them: ``{Train,Val,Test}_Folder/{img,labelcol}`` with
``*_text.xlsx`` sheets (columns ``Image``, ``Description``); QaTa masks are ``mask_<image>``, MosMedData+ masks
share the image's name; QaTa's train and val may share ``Train_Val_text.xlsx``."""

from __future__ import annotations

import logging
import re
from pathlib import Path

from ...errors import DataError
from ..readers import strip_suffix
from ..readers.raster import RASTER_EXTS
from ..tables import clean, column, read_table
from .base import Problem, Record, Scan, dedupe, is_inside, list_files, register_layout

log = logging.getLogger(__name__)

_SPLIT_DIR_RE = re.compile(r"^(train|val|test)[ _-]?folder$", re.IGNORECASE)
_TEXT_RE = re.compile(r"^(train_val|train|val|test)[ _-]?text\.(xlsx|xls|csv)$", re.IGNORECASE)
_DATASET_DIR_NAMES = ("qata-cov19", "qata_cov19", "qatacov19", "covid19", "qata", "mosmeddata+", "mosmeddataplus",
                      "mosmeddata", "mosmed")
_EXPECTS = "Train_Folder/, Val_Folder/, Test_Folder/ with img/, labelcol/ and *_text.xlsx"


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
    imgs = {s: list_files(d / "img", RASTER_EXTS) for s, d in split_dirs.items()}
    masks = {s: list_files(d / "labelcol", RASTER_EXTS) for s, d in split_dirs.items()}
    lesions = {s: list_files(d / "lesion", (".png",)) for s, d in split_dirs.items()}
    for d in split_dirs.values():
        if not (d / "img").is_dir():
            problems.append(Problem("note_without_image", str(d / "img"), "image folder 'img' is missing"))
    used: set[tuple[str, str]] = set()
    rules: list[str] = []

    by_stem = {id(t): {s: {strip_suffix(n): p for n, p in files.items()} for s, files in t.items()}
               for t in (imgs, masks, lesions)}

    def find(split: str, name: str, table: dict[str, dict[str, Path]]) -> Path | None:
        files = table.get(split, {})
        if name in files:
            return files[name]
        # names without (or with another) extension
        return by_stem[id(table)].get(split, {}).get(strip_suffix(name))

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
        c_img = column(df, sheet, "Image", "image", "mask")
        c_txt = column(df, sheet, "Description", "text", "note")
        names = [clean(v) for v in df[c_img]]
        notes = [clean(v) for v in df[c_txt]]
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
            rid = strip_suffix(image.name)
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
                                        strip_suffix(name)))
    dedupe(records, problems)
    if not rules:
        rules.append("splits from the Train/Val/Test folders and their sheets")
    return Scan(flavour, root, records, problems, "; ".join(rules), [str(p) for p in texts.values()])


def lvit_flavour(src: Path) -> str | None:
    """``qata`` or ``mosmed`` for an LViT-style source (by folder name, else by the masks' ``mask_`` prefix)."""
    root = find_lvit_root(src)
    if root is None:
        return None
    if "mosmed" in root.name.lower() or "mosmed" in src.name.lower():
        return "mosmed"
    names = [n for d in _split_dirs(root).values() for n in list_files(d / "labelcol", RASTER_EXTS)]
    prefixed = sum(n.lower().startswith("mask_") for n in names)
    return "qata" if not names or prefixed * 2 >= len(names) else "mosmed"


@register_layout("qata", detect=lambda src: lvit_flavour(src) == "qata", expects=_EXPECTS + " (masks mask_<image>)")
def scan_qata(src: Path, notes_optional: bool = False) -> Scan:
    """QaTa-COV19: the sheets are the notes, so ``notes_optional`` does not apply."""
    return read_lvit(src, "qata")


@register_layout("mosmed", detect=lambda src: lvit_flavour(src) == "mosmed",
                 expects=_EXPECTS + " (masks named as the images)")
def scan_mosmed(src: Path, notes_optional: bool = False) -> Scan:
    """MosMedData+: the sheets are the notes, so ``notes_optional`` does not apply."""
    return read_lvit(src, "mosmed")
