"""`reclmis prepare`: a source folder (or --synthetic) -> a validated DATA_DIR with manifest.csv."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.markup import escape

from reclmis_core.data.layouts import LAYOUTS
from reclmis_core.errors import ConfigError
from reclmis_core.utils import atomic_write_text

from ..console import ProgressReporter, console, handle_errors, print_table, quiet_mode, say
from ..options import config_option, configurable, quiet_option, set_option

log = logging.getLogger(__name__)


SYNTHETIC_DEFAULT_SIZE = 224


def _summary_table(title: str, counts: dict[str, int], rows: list[tuple[str, str]]) -> None:
    table = [[split, str(counts.get(split, 0))] for split in ("train", "val", "test")]
    table.append(["[bold]total[/]", f"[bold]{sum(counts.values())}[/]"])
    table += [[f"[dim]{escape(key)}[/]", escape(value)] for key, value in rows]
    print_table(title, ["split", "images"], table)


def _write_report(path: Path | None, report) -> None:  # noqa: ANN001 - PrepareReport
    if path is not None:
        atomic_write_text(path, json.dumps(report.to_dict(), indent=2) + "\n")


@handle_errors
@configurable("prepare")
def prepare(
    src: Path | None = typer.Argument(None, help="Source folder (any layout); omit with --synthetic.",
                                      show_default=False),
    out_dir: Path = typer.Option(..., "--out", "-o", help="DATA_DIR to create (manifest.csv, dataset.json, images)."),
    layout: str = typer.Option("auto", "--layout", help=f"auto | {' | '.join(LAYOUTS.names())}."),
    size: int = typer.Option(0, "--size", help="0: keep each image's native size (the Dataset resizes once to the "
                             "model's side); N: resize to N x N. With --synthetic: the side (0 = 224)."),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="Drop rows with problems instead of failing."),
    window: str | None = typer.Option(None, "--window",
                                      help="CT window CENTER,WIDTH or lung|mediastinum|bone (default: lung)."),
    keep_empty: bool = typer.Option(False, "--keep-empty/--drop-empty",
                                    help="Volumes: keep slices without lesion (default: drop them)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty existing --out folder."),
    allow_uneven_slices: bool = typer.Option(False, "--allow-uneven-slices",
                                             help="DICOM series: accept a missing slice or uneven spacing "
                                             "(warning) instead of failing."),
    workers: int = typer.Option(0, "--workers", help="Worker processes (0 = all CPU cores)."),
    report_path: Path | None = typer.Option(None, "--report",
                                            help="Also write the full report (problems included) to this JSON."),
    fail_on_leaks: bool = typer.Option(False, "--fail-on-leaks", help="Exit 2 and write nothing when an image, "
                                       "patient or study appears in more than one split (default: a warning)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Generate phantom chest radiographs instead."),
    synthetic_layout: str = typer.Option("prepared", "--synthetic-layout",
                                         help="With --synthetic: prepared (a DATA_DIR) or qata (source folders)."),
    n_train: int = typer.Option(200, "--n-train", help="With --synthetic: training images."),
    n_val: int = typer.Option(50, "--n-val", help="With --synthetic: validation images."),
    n_test: int = typer.Option(50, "--n-test", help="With --synthetic: test images (half in counterfactual pairs)."),
    seed: int = typer.Option(0, "--seed", help="With --synthetic: random seed."),
    family: str = typer.Option("a", "--family",
                               help="With --synthetic: phantom family, a (QaTa-template notes) or b (another grammar, "
                                    "lesions across zone borders, varied lungs; every test image a counterfactual pair)."),
    pair_share: float = typer.Option(0.5, "--pair-share",
                                     help="With --synthetic --family a: share of test images in counterfactual pairs "
                                          "(1 = a hard test split, every image a pair)."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Turn QaTa-COV19, MosMedData+, Ariadne, plain folders, NIfTI or DICOM data into one validated DATA_DIR.

    Writes DATA_DIR/manifest.csv (id, split, image, mask, note, height, width, source[, lesion_labels]) and
    DATA_DIR/dataset.json. Any problem (missing mask, corrupt file, size mismatch, empty note, duplicate id, ...)
    exits 2 and writes nothing unless --skip-bad.
    """
    from reclmis_core.data.prepare import PrepareError, PrepareOptions, prepare_dataset
    from reclmis_core.data.synthetic import SyntheticConfig, write_synthetic

    quiet_mode(quiet)
    if synthetic:
        if src is not None:
            raise ConfigError("give either SRC or --synthetic, not both")
        size = size or SYNTHETIC_DEFAULT_SIZE
        cfg = SyntheticConfig(n_train=n_train, n_val=n_val, n_test=n_test, size=size, seed=seed, family=family,
                              pair_share=pair_share)
        with ProgressReporter() as bar:
            info = write_synthetic(out_dir, cfg, layout=synthetic_layout, overwrite=overwrite, workers=workers,
                                   progress=bar.stage_callback())
        rows = [("output", str(out_dir)), ("layout", info["layout"]), ("size", f"{size} px"),
                ("counterfactual pairs", str(info["n_counterfactual_pairs"]))]
        _summary_table("synthetic data", info["counts"], rows)
        if synthetic_layout == "qata":
            say(f"prepare it with: reclmis prepare {out_dir} --out DATA_DIR")
        return
    if src is None:
        raise ConfigError("missing SRC: give a source folder, or --synthetic")
    options = PrepareOptions(layout=layout, size=size, skip_bad=skip_bad, window=window, keep_empty=keep_empty,
                             overwrite=overwrite, workers=workers, allow_uneven_slices=allow_uneven_slices,
                             fail_on_leaks=fail_on_leaks)
    try:
        with ProgressReporter() as bar:
            report = prepare_dataset(src, out_dir, options, progress=bar.stage_callback())
    except PrepareError as exc:
        for problem in exc.report.problems:
            style = "red" if problem.fatal else "yellow"
            console.print(f"  [{style}]{problem.kind}[/] {escape(problem.path)}: {escape(problem.message)}",
                          highlight=False, soft_wrap=True)
        _write_report(report_path, exc.report)
        raise
    _write_report(report_path, report)
    rows = [("output", str(out_dir)), ("layout", report.layout),
            ("size", f"{report.size} px" if report.size else "native"),
            ("split rule", report.split_rule), ("seconds", f"{report.seconds:.1f}")]
    if report.warnings:
        rows.append(("warnings", f"{len(report.warnings)} (see dataset.json)"))
    if report.dropped:
        rows.append(("dropped (--skip-bad)", f"{len(report.dropped)} (see dataset.json)"))
    leaks = report.extra.get("leaks")
    if leaks is not None:
        c = leaks["counts"]
        rows.append(("split leaks", f"{c['exact']} exact, {c['near']} near-duplicate, {c['patient']} patient, "
                                    f"{c['study']} study (see dataset.json)" if c["total"] else "none found"))
    _summary_table("prepared data", report.counts, rows)
