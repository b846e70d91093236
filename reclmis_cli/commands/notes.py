"""`reclmis notes`: QaTa-style notes from masks (side, lung zones, number of infected areas) -> notes.csv."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reclmis_core.data.layouts import LAYOUTS
from reclmis_core.data.note_text import STYLES

from ..console import ProgressReporter, console, handle_errors, out, quiet_mode
from ..options import config_option, configurable, quiet_option, set_option

log = logging.getLogger(__name__)


def _check_table(check: dict) -> Table:
    table = Table(title="agreement with the source's notes", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("share", justify="right")
    table.add_column("of", justify="right")
    for key, label, n in (("side", "side(s)", "n_compared"), ("zones", "zone set (exact)", "n_compared"),
                          ("count", "area count", "n_count_compared")):
        value = check[key]
        table.add_row(label, "n/a" if value is None else f"{value:.1%}", str(check[n]))
    table.add_row("[dim]notes not parsed[/]", "", str(check["n_unparsed"]))
    return table


@handle_errors
@configurable("notes")
def notes(
    src: Path = typer.Argument(..., help="Source folder: any layout `prepare` reads, or images/ + masks/.",
                               show_default=False),
    out_csv: Path = typer.Option(..., "--out", "-o", help="notes.csv to write (inside SRC to prepare it as is)."),
    layout: str = typer.Option("auto", "--layout", help=f"auto | {' | '.join(LAYOUTS.names())}."),
    style: str = typer.Option("qata", "--style", help=f"Note wording: {' | '.join(STYLES)}."),
    lungs: str = typer.Option("auto", "--lungs",
                              help="auto (estimate lung fields from the image) | none (image frame) | a folder of "
                                   "lung masks named like the images."),
    min_area: float = typer.Option(0.001, "--min-area",
                                   help="Smallest infected area: pixels, or a share of the image when < 1."),
    span_share: float = typer.Option(0.5, "--span-share",
                                     help="An area also covers a zone holding at least this share of its pixels "
                                          "(0.5: its main zone only; 0.3 names QaTa-style spans more often)."),
    empty: str = typer.Option("note", "--empty", help="Empty masks: note ('No pulmonary infection.') | skip."),
    volume_mode: str = typer.Option("slice", "--volume-mode",
                                    help="Volumes: slice (a note per slice) | volume (one note per volume)."),
    window: str | None = typer.Option(None, "--window", help="CT window for the lung estimate (default: lung)."),
    check: bool = typer.Option(False, "--check", help="Compare with the source's own notes and report agreement."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the --check figures (and problems) to JSON."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out file."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all CPU cores)."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Write a note per image from its mask: side(s), lung zones and number of infected areas.

    Columns of notes.csv: image, mask, note, zones (lower_left;upper_right: level then the patient's side),
    areas, lungs (estimated | given | none), split[, slice]. Images whose mask cannot be placed (no lung
    found) are reported and left out.
    """
    from reclmis_core.data.notes import NotesOptions, write_notes
    from reclmis_core.utils import atomic_write_text

    quiet = quiet_mode(quiet)
    options = NotesOptions(layout=layout, style=style, lungs=lungs, min_area=min_area, span_share=span_share,
                           empty=empty, volume_mode=volume_mode, window=window, workers=workers)
    with ProgressReporter() as bar:
        result = write_notes(src, out_csv, options, overwrite=overwrite, check=check or json_out is not None,
                             progress=bar.stage_callback())
    for problem in result.problems[:20]:
        console.print(f"  [yellow]{problem.kind}[/] {escape(problem.path)}: {escape(problem.message)}",
                      highlight=False, soft_wrap=True)
    if len(result.problems) > 20:
        console.print(f"  ... and {len(result.problems) - 20} more (see --json)", highlight=False)
    if result.problems:
        log.warning("%d image(s) left out of %s (no note written for them)", len(result.problems), out_csv)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2) + "\n")
    if quiet:
        return
    lungs_used = sorted({r.lungs for r in result.rows})
    out.print(f"wrote {len(result.rows)} notes to {escape(str(out_csv))} (layout {result.layout}, lungs "
              f"{'/'.join(lungs_used)}, {result.skipped_empty} empty skipped, {len(result.problems)} problems)",
              highlight=False)
    if result.check is not None:
        out.print(_check_table(result.check))
