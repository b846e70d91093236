"""The ``notes`` driver: scan the source, describe every record (in worker processes), write notes.csv, and
compare with the source's own notes (``--check``)."""

from __future__ import annotations

import csv
import io
import logging
import time
from pathlib import Path
from typing import Any

from ...errors import DataError
from ...utils import atomic_write_text
from ..layouts import Problem, Record, scan_source
from ..note_text import SIDES, parse_note, zones_field
from ..pool import ProgressFn, pool_map
from .describe import notes_2d, notes_volume
from .options import NoteRow, NotesOptions, NotesResult

log = logging.getLogger(__name__)

#: Columns of notes.csv, in this order (``slice`` only for volume sources described per slice).
NOTES_COLUMNS = ("image", "mask", "note", "zones", "areas", "lungs", "split")


def generate_notes(src: str | Path, options: NotesOptions | None = None,
                   progress: ProgressFn | None = None) -> NotesResult:
    """Notes for every image with a mask in ``src`` (any layout ``prepare`` reads, or images/ + masks/).

    Args:
        src: source folder; its own notes are kept in ``NoteRow.source_note`` (for :func:`check_notes`).
        options: style, lungs, min_area, span_share, empty, volume_mode, window, workers.
        progress: optional ``progress(stage, done, total)``.

    Returns:
        A :class:`NotesResult`; images that could not be read or placed are in ``problems``.
    """
    t0 = time.perf_counter()
    opt = options or NotesOptions()
    opt.validate()
    src = Path(src)
    scan = scan_source(src, opt.layout, notes_optional=True)
    volumes = scan.volumes
    keep = {"missing_mask", "duplicate_id", "outside_source", "unreadable", "image_without_note"}
    problems = [p for p in scan.problems if p.kind in keep]
    bad = {p.id for p in problems if p.id is not None}
    records: list[Record] = [r for r in scan.records if r.mask is not None and r.id not in bad]
    tasks = [{"id": r.id, "split": r.split, "image": str(r.image), "mask": str(r.mask), "note": r.note,
              "slice_notes": dict(r.slice_notes), "style": opt.style, "lungs": opt.lungs,
              "min_area": opt.min_area, "span_share": opt.span_share, "empty": opt.empty,
              "volume_mode": opt.volume_mode, "window": opt.window} for r in records]
    fn = notes_volume if volumes else notes_2d
    rows: list[NoteRow] = []
    empty = 0
    if progress:
        progress("notes", 0, len(tasks))
    step = max(1, len(tasks) // 100)
    for done, res in enumerate(pool_map(fn, tasks, opt.workers, chunksize=16), start=1):
        rows.extend(NoteRow(**r) for r in res["rows"])
        problems.extend(Problem(**p) for p in res["problems"])
        empty += res["empty"]
        if progress and (done % step == 0 or done == len(tasks)):
            progress("notes", done, len(tasks))
    rows.sort(key=lambda r: (r.id, -1 if r.slice is None else r.slice))
    extra = {"style": opt.style, "lungs": opt.lungs, "volume_mode": opt.volume_mode if volumes else None,
             "min_area": opt.min_area, "span_share": opt.span_share}
    return NotesResult(scan.layout, str(src), rows, problems, empty, time.perf_counter() - t0, extra=extra)


def _rel(path: str, base: Path) -> str:
    """``path`` relative to ``base`` when it lies inside it (what ``prepare --layout folder`` needs), else absolute."""
    p = Path(path).resolve()
    try:
        return p.relative_to(base.resolve()).as_posix()
    except ValueError:
        return str(p)


def notes_csv_text(result: NotesResult, out: Path) -> str:
    """The notes.csv text: image/mask relative to the CSV's folder, zones, areas, lungs, split[, slice]."""
    with_slice = any(r.slice is not None for r in result.rows)
    cols = list(NOTES_COLUMNS) + (["slice"] if with_slice else [])
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    writer.writeheader()
    base = out.parent
    for r in result.rows:
        row = {"image": _rel(r.image, base), "mask": _rel(r.mask, base), "note": r.note,
               "zones": zones_field(sorted(r.zones)), "areas": len(r.areas), "lungs": r.lungs, "split": r.split}
        if with_slice:
            row["slice"] = "" if r.slice is None else r.slice
        writer.writerow(row)
    return buf.getvalue()


def write_notes(src: str | Path, out: str | Path, options: NotesOptions | None = None, overwrite: bool = False,
                check: bool = False, progress: ProgressFn | None = None) -> NotesResult:
    """Generate notes for ``src`` and write ``out`` (notes.csv) atomically; see :func:`generate_notes`.

    Raises:
        DataError: ``out`` exists and not ``overwrite``; no note could be generated; unreadable source.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; choose another --out or pass --overwrite")
    if out.is_dir():
        raise DataError(f"{out}: is a folder; --out names the CSV file to write")
    result = generate_notes(src, options, progress)
    if not result.rows:
        first = f"; first problem: {result.problems[0].line()}" if result.problems else ""
        raise DataError(f"{src}: no note could be generated ({len(result.problems)} problems, "
                        f"{result.skipped_empty} empty masks skipped){first}")
    if check:
        result.check = check_notes(result.rows)
    if not Path(src).resolve().is_relative_to(out.parent.resolve()):
        log.warning("%s is not in %s or a folder above it: image paths are written absolute, which "
                    "`prepare --layout folder` refuses; write the CSV into the source folder to prepare it", out, src)
    atomic_write_text(out, notes_csv_text(result, out))
    log.info("wrote %d notes to %s in %.1fs (%d problems, %d empty skipped)", len(result.rows), out,
             result.seconds, len(result.problems), result.skipped_empty)
    return result


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


def check_notes(rows: list[NoteRow], mismatches: int = 50) -> dict[str, Any]:
    """Agreement of generated notes with the source's own notes (parsed with :func:`parse_note`).

    Returns:
        ``n_notes``, ``n_compared`` (source notes that name zones or say "no infection"), ``n_unparsed``,
        ``side`` / ``zones`` / ``count`` (shares of compared notes with the same set of sides, the exact same
        zone set, the same area count; ``count`` over notes that state one), ``n_count_compared`` and the
        first ``mismatches`` disagreements.
    """
    side, zones, count, bad = [], [], [], []
    unparsed = 0
    for r in rows:
        parsed = parse_note(r.source_note) if r.source_note else None
        if parsed is None:
            unparsed += bool(r.source_note)
            continue
        gen_sides = {SIDES[(c - 1) // 3] for c in r.zones}
        ok_side, ok_zones = gen_sides == parsed.sides, r.zones == parsed.zones
        side.append(ok_side)
        zones.append(ok_zones)
        ok_count = True
        if parsed.count is not None:
            ok_count = len(r.areas) == parsed.count
            count.append(ok_count)
        if not (ok_side and ok_zones and ok_count) and len(bad) < mismatches:
            bad.append({"id": r.id, "source_note": r.source_note, "note": r.note,
                        "source_zones": zones_field(sorted(parsed.zones)), "zones": zones_field(sorted(r.zones))})
    return {"n_notes": len(rows), "n_compared": len(side), "n_unparsed": unparsed, "side": _share(side),
            "zones": _share(zones), "count": _share(count), "n_count_compared": len(count), "mismatches": bad}
