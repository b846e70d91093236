"""`reclmis predict`: masks for a user's own PNG/JPEG/TIFF, DICOM and NIfTI files, guided by a note."""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path

import typer
from rich.markup import escape

from reclmis_core.choices import BACKENDS, FORMATS, PRECISIONS

from ..console import ProgressReporter, console, fail, handle_errors, one_line, quiet_mode, say
from ..options import (
    checkpoint_option,
    config_option,
    configurable,
    device_option,
    quiet_option,
    set_option,
    threads_option,
)

log = logging.getLogger(__name__)


@handle_errors
@configurable("predict")
def predict(
    inputs: list[str] = typer.Argument(..., help="Image files, folders or glob patterns (PNG/JPEG/TIFF, DICOM "
                                       "files or series folders, NIfTI volumes).", show_default=False),
    note: str | None = typer.Option(None, "--note", help="One note for every input."),
    notes: Path | None = typer.Option(None, "--notes", help="CSV/XLSX with columns image,note (one row per input)."),
    checkpoint: Path | None = checkpoint_option("; with --backend onnx, the export folder"),
    out_dir: Path | None = typer.Option(None, "--out", "-o", help="Output folder (default runs/predict/<time>)."),
    threshold: float | None = typer.Option(None, "--threshold", help="Probability above which a pixel is lesion "
                                           "(default: the checkpoint's infer.threshold)."),
    fmt: str = typer.Option("auto", "--format", help=f"Mask format: {' | '.join(FORMATS)} (auto: PNG for 2-D, "
                            "NIfTI for volumes and DICOM series, one PNG per frame of a multi-frame file)."),
    seg_description: str | None = typer.Option(None, "--seg-description",
                                               help="DICOM SEG SeriesDescription (default: a fixed text; the "
                                               "note is never written into DICOM headers)."),
    mirror: bool | None = typer.Option(None, "--mirror/--no-mirror", help="Test-time mirroring: also segment the "
                                       "left-right mirrored image with the note's sides swapped and average (twice "
                                       "the model time; default: the checkpoint's infer.mirror)."),
    overlay: bool = typer.Option(False, "--overlay", help="Also write <stem>_overlay.png (mask over the image)."),
    save_prob: bool = typer.Option(False, "--save-prob", help="Also write the probability map (_prob.png / .npy)."),
    explain: bool = typer.Option(False, "--explain", help="Write W_poi heat map + W_woi word weights (Fig. 13)."),
    backend: str = typer.Option("torch", "--backend", help=f"{' | '.join(BACKENDS)} (onnx, torch-export: an "
                                "export folder from 'reclmis export --format onnx [--int8] | torch-export' as "
                                "--checkpoint)."),
    precision: str = typer.Option("fp32", "--precision", help=f"torch backend: {' | '.join(PRECISIONS)} (bf16 "
                                  "where the CPU/GPU has it, fp16 on CUDA only). An ONNX export runs at its own."),
    workers: int = typer.Option(2, "--workers", help="Threads that read and preprocess inputs ahead of the model "
                                "(0: none)."),
    window: str | None = typer.Option(None, "--window", help="CT/MR window CENTER,WIDTH or lung | mediastinum | "
                                      "soft-tissue | bone | brain (default: the file's own, lung for CT)."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Images/slices per forward pass "
                                          "(default: the checkpoint's infer.batch_size)."),
    device: str = device_option(),
    threads: int = threads_option(),
    series: str | None = typer.Option(None, "--series", help="DICOM: predict only the series with this "
                                      "SeriesInstanceUID (a folder or DICOMDIR holding several series)."),
    allow_uneven_slices: bool = typer.Option(False, "--allow-uneven-slices",
                                             help="DICOM series: accept a missing slice or uneven spacing "
                                             "(warning, approximate affine) instead of failing the input."),
    no_note_cache: bool = typer.Option(False, "--no-note-cache", help="Re-encode the note for every batch "
                                       "(for speed comparisons)."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Segment images guided by a clinical note; writes masks in each input's own geometry + predictions.json."""
    from reclmis_core.device import apply_threads, parse_device
    from reclmis_core.inference.run import check_out_dir, without_earlier_outputs
    from reclmis_core.inference import (
        NoteTable,
        PredictOptions,
        Predictor,
        check_formats,
        collect_inputs,
        run_predict,
    )

    quiet = quiet_mode(quiet)
    if note is not None and notes is not None:
        fail("give either --note TEXT or --notes CSV, not both")
    if note is not None and not note.strip():
        fail("--note is empty; describe the finding, e.g. --note \"bilateral lower lung infection\"")
    if backend not in BACKENDS:
        fail(f"--backend must be one of {', '.join(BACKENDS)}, got '{backend}'")
    if fmt not in FORMATS:
        fail(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if threshold is not None and not 0.0 < threshold < 1.0:
        fail(f"--threshold must lie in (0, 1), got {threshold}")
    if backend != "torch" and explain:
        fail("--explain needs the full checkpoint (W_poi/W_woi come from training-only modules that are not in "
             "the exported graphs); use --backend torch with --checkpoint CKPT")
    if precision not in PRECISIONS:
        fail(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if backend != "torch" and precision != "fp32":
        fail(f"--precision {precision} is for --backend torch; an ONNX export runs at the precision it was exported "
             "with (reclmis export --format onnx --int8 for int8)")
    if workers < 0:
        fail(f"--workers must be >= 0, got {workers}")
    parse_device(device)
    table = NoteTable(notes) if notes is not None else None

    if out_dir is None:
        out_dir = Path("runs") / "predict" / datetime.now().strftime("%Y%m%d-%H%M%S")
    check_out_dir(out_dir)  # a read-only or full disk fails here, before any model is loaded

    # Inputs and their formats first: a bad input fails before any model is loaded.
    specs, failures = collect_inputs(inputs, series=series)
    specs = without_earlier_outputs(specs, out_dir)  # --out inside an input folder: no masks of masks
    specs, bad_format = check_formats(specs, fmt)
    failures += bad_format
    if table is not None:  # an input that several rows match fails alone, before the model loads
        specs, ambiguous = table.check(specs)
        failures += ambiguous
    if not specs and failures:
        if len(failures) == 1:
            fail(failures[0].error)
        for f in failures:
            console.print(f"[red]failed:[/] {escape(one_line(f.error))}", highlight=False, soft_wrap=True)
        fail(f"none of the {len(failures)} inputs can be predicted (listed above)")
    for f in failures:
        log.warning("%s", f.error)

    kwargs = {"note_cache": not no_note_cache, "window": window, "allow_uneven_slices": allow_uneven_slices,
              "workers": workers}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if checkpoint is None and backend != "torch":
        fail(f"--backend {backend} needs --checkpoint EXPORT_DIR (the folder written by 'reclmis export --format "
             f"{backend}')")
    from reclmis_core.checkpoint import checkpoint_or_latest

    checkpoint = checkpoint_or_latest(checkpoint)
    predictor = Predictor.open(checkpoint, device=device, backend=backend, explain=explain, precision=precision,
                               threads=threads or None, mirror=mirror, **kwargs)
    apply_threads(threads, predictor.runtime.model_cfg)
    if predictor.uses_text and note is None and table is None and not predictor.note_optional:
        fail("this checkpoint is text-guided: give --note TEXT (one note for all) or --notes CSV (image,note)")

    def note_for(spec):  # noqa: ANN001, ANN202
        return note if table is None else table.get(spec)

    opts = PredictOptions(threshold=threshold, format=fmt, overlay=overlay, save_prob=save_prob,
                          seg_description=seg_description)
    with ProgressReporter() as bar:
        def progress(done: int, total: int, stem: str) -> None:
            bar.update("predict", done, total, info=stem)

        report = run_predict(predictor, specs, note_for, out_dir, opts, failures, progress, backend)
    st = report.stats
    cache = (f", text encoder ran {st.text_encodes}x" if predictor.uses_text else "")
    say(f"[green]predicted[/] {report.n_ok} input(s), {st.images} image(s)/slice(s) in {report.seconds:.1f}s "
        f"({report.images_per_s:.1f} images/s{cache}) -> {escape(str(report.out_dir))}")
    log.info("results: %s", report.json_path)
    if report.failures:  # each was logged as a warning when it failed
        if report.n_ok == 0 and len(report.failures) == 1:
            fail(f"the input failed (see above and {report.json_path})")
        fail(f"{len(report.failures)} of {report.n_ok + len(report.failures)} inputs failed (listed above and in "
             f"{report.json_path}); the other outputs are complete")
