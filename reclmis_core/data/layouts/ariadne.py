"""Ariadne's Thread: ``prompt/{train,test}.csv`` (``Image`` = mask file name, ``Description``) with
``{Train,Test}/{Images,GTs}``; val is the last rows of the training prompts, as Ariadne's Thread splits it."""

from __future__ import annotations

from pathlib import Path

from ...errors import DataError
from ..readers import strip_suffix
from ..readers.raster import RASTER_EXTS
from ..tables import clean, column, read_table
from .base import Problem, Record, Scan, dedupe, is_inside, list_files, register_layout


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
        c_img = column(df, sheet, "Image")
        c_txt = column(df, sheet, "Description", "text")
        names = [clean(v) for v in df[c_img]]
        notes = [clean(v) for v in df[c_txt]]
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
            rid = strip_suffix(image_name)
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
        for p in list_files(img_dir, RASTER_EXTS).values():
            if p.resolve() not in used:
                problems.append(Problem("image_without_note", str(p), f"image has no row in {sheet.name}",
                                        strip_suffix(p.name)))
    dedupe(records, problems)
    return Scan("ariadne", src, records, problems, rule or "prompt/test.csv -> test", [str(prompt)])


@register_layout("ariadne", detect=lambda src: (src / "prompt").is_dir(), expects="prompt/ with train.csv/test.csv")
def scan_ariadne(src: Path, notes_optional: bool = False) -> Scan:
    """Ariadne's Thread: the prompt CSVs are the notes, so ``notes_optional`` does not apply."""
    return read_ariadne(src)
