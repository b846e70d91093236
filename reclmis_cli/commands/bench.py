"""`reclmis bench`: Table II on this machine (parameters, MACs/FLOPs, latency per backend, training throughput)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from reclmis_core.errors import ConfigError
from reclmis_core.runtime.backends import BENCH_BACKENDS, GPU_BACKENDS, QUICK_BACKENDS, TABLE_II_BACKENDS

from ..console import handle_errors, print_table, quiet_mode, say
from ..options import config_option, configurable, device_option, quiet_option, set_option, threads_option

log = logging.getLogger("reclmis_cli.bench")


def _ints(value: str, flag: str) -> tuple[int, ...]:
    try:
        items = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{flag} takes a comma list of integers, got '{value}'") from None
    if not items:
        raise ConfigError(f"{flag} takes a comma list of integers, got '{value}'")
    return items


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(report) -> None:  # noqa: ANN001 - BenchReport
    """Print the Table II view, the latency table and the footnotes."""
    first = min((x.batch for x in report.latency if x.batch), default=1)
    ok = [r for r in report.latency if r.status == "ok" and r.batch == first]
    best_out = min((r for r in ok if r.text_encoder == "outside"), key=lambda r: r.ms_per_image_median, default=None)
    eager_in = next((r for r in ok if r.backend == "eager" and r.text_encoder == "inside"), None)
    eager_out = next((r for r in ok if r.backend == "eager" and r.text_encoder == "outside"), None)

    title = (f"Table II on this machine: {report.source}, {report.image_size}x{report.image_size}, "
             f"note of {report.text_len} tokens")
    rows = [
        ["training (forward)", f"{report.params_total_m:.2f} (trainable {report.params_trainable_m:.2f})",
         f"{report.gmacs_train_fwd:.2f}", f"{report.gflops_train_fwd:.2f}",
         "-" if report.train_images_per_s is None else f"{1e3 / report.train_images_per_s:.0f} (train step, per image)"],
        ["inference, with text encoder", f"{report.params_infer_m + report.params_text_encoder_m:.2f}",
         f"{report.gmacs_infer_with_text:.2f}", f"{report.gflops_infer_with_text:.2f}",
         f"{_fmt(eager_in and eager_in.ms_per_image_median)} (eager fp32)"],
        ["inference, without text encoder", f"{report.params_infer_m:.2f}", f"{report.gmacs_infer:.2f}",
         f"{report.gflops_infer:.2f}",
         f"{_fmt(eager_out and eager_out.ms_per_image_median)} (eager fp32)"
         + (f"; {best_out.ms_per_image_median:.1f} ({best_out.backend})"
            if best_out is not None and best_out.backend != "eager" else "")],
    ]
    print_table(title, ["phase", "Params (M)", "GMACs", "GFLOPs (2xMACs)", f"ms/img (batch {first})"], rows)
    print_table("parameters (M)", ["total", "trainable", "inference path", "text encoder", "CVR+CLR", "training-only"],
                [[f"{v:.3f}" for v in (report.params_total_m, report.params_trainable_m, report.params_infer_m,
                                       report.params_text_encoder_m, report.params_recon_m,
                                       report.params_train_only_m)]], left=())

    if report.latency:
        has_dice = any(r.dice is not None for r in report.latency)
        cols = ["backend", "batch", "text enc.", "median", "p90", "x eager", "max|dp|", "mask Dice"]
        cols += ["Dice"] if has_dice else []
        how: dict[str, str] = {}
        lrows = []
        for r in report.latency:
            if r.status != "ok":
                how[r.backend] = f"{r.status}: {r.note}"
                continue
            how.setdefault(r.backend, r.note)
            cells = [r.backend, str(r.batch), r.text_encoder, _fmt(r.ms_per_image_median), _fmt(r.ms_p90),
                     _fmt(r.speedup_vs_eager, 2), _fmt(r.max_prob_diff, 5), _fmt(r.mask_dice_vs_eager, 4)]
            lrows.append(cells + ([_fmt(r.dice, 4)] if has_dice else []))
        print_table(f"latency, ms/image ({report.device_name}, torch {report.torch_version})", cols, lrows,
                    left=["backend", "text enc."])
        for backend, text in how.items():
            say(f"  {backend}: {text}")
        say("  text enc. outside = note features precomputed (a note reused across images); inside = encoded "
            "in the timed region; x eager = eager fp32 median / this median, same batch, same run; "
            "max|dp| / mask Dice = vs eager fp32 on sample images")
    if report.dice_by_backend:
        base = report.dice_by_backend.get("eager")
        parts = [f"{k} {v:.4f}" + (f" ({v - base:+.4f})" if base is not None and k != "eager" else "")
                 for k, v in report.dice_by_backend.items()]
        say(f"Dice on {report.data}: " + ", ".join(parts))
    if report.train_images_per_s is not None:
        say(f"training step throughput: {report.train_images_per_s:.2f} images/s (batch {report.train_batch}, "
                  "forward + backward + Adam)")
    say(f"device: {report.device_name}; threads {report.threads}; CPU capability {report.cpu_capability}; "
              f"torch {report.torch_version}")
    say(f"[bold]convention:[/] {report.convention}")
    for line in report.reconciliation:
        say(f"[bold]reconciliation:[/] {line}")
    for line in report.notes:
        say(f"note: {line}")


def _backends(text: str, device_type: str) -> tuple[str, ...]:
    if text.strip() == "all":
        return GPU_BACKENDS if device_type == "cuda" else TABLE_II_BACKENDS
    return tuple(b.strip() for b in text.split(",") if b.strip())


@handle_errors
@configurable("bench")
def bench(
    preset: str | None = typer.Option(None, "--preset", "-p", help="paper | tiny | guided | guided-tiny (default paper)."),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", "-c", help="Benchmark a checkpoint instead of a preset."),
    device: str = device_option(),
    batch_sizes: str = typer.Option("1", "--batch-sizes", help="Comma list of batch sizes for latency "
                                    "(Table II: 1,8)."),
    backends: str = typer.Option(
        ",".join(QUICK_BACKENDS), "--backends",
        help=f"Comma list of {', '.join(BENCH_BACKENDS)}; or all (Table II: {','.join(TABLE_II_BACKENDS)} on a CPU, "
             f"{','.join(GPU_BACKENDS)} on CUDA).",
    ),
    text_len: int | None = typer.Option(
        None, "--text-len", show_default="18",
        help="Tokens per note for MACs and latency (reference: 18; a model that cuts notes shorter: its length)."),
    runs: int = typer.Option(10, "--runs", help="Timed runs per measurement (Table II: 20)."),
    warmup: int = typer.Option(2, "--warmup", help="Untimed warm-up runs (Table II: 3)."),
    train_batch: int = typer.Option(2, "--train-batch", help="Batch of the training-step measurement (0 = skip)."),
    no_latency: bool = typer.Option(False, "--no-latency", help="Only count parameters and MACs."),
    threads: int = threads_option(),
    data: Path | None = typer.Option(None, "--data", help="Prepared DATA_DIR: also score each backend's Dice."),
    split: str = typer.Option("test", "--split", help="Split scored with --data."),
    json_out: Path | None = typer.Option(None, "--json", "--out", "-o",
                                         help="Write the report as JSON (contract keys), updated as results come "
                                         "(a Ctrl-C keeps what was measured; 'complete' tells)."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Measure parameters, MACs/FLOPs, latency and training throughput (the paper's Table II)."""
    from reclmis_core.bench import BenchConfig, run_benchmark
    from reclmis_core.device import resolve_device
    from reclmis_core.utils import atomic_write_text

    quiet_mode(quiet)
    if preset and checkpoint:
        raise ConfigError("pass --preset or --checkpoint, not both")
    cfg = BenchConfig(
        preset=preset or "paper", checkpoint=str(checkpoint) if checkpoint else None, device=device,
        batch_sizes=_ints(batch_sizes, "--batch-sizes"),
        backends=_backends(backends, resolve_device(device).type),
        text_len=text_len, runs=runs, warmup=warmup, train_batch=train_batch, latency=not no_latency,
        threads=threads, data=str(data) if data else None, split=split,
    )

    def write(report) -> None:  # noqa: ANN001 - BenchReport, partial until report.complete
        if json_out is not None:
            atomic_write_text(json_out, json.dumps(report.to_json(), indent=2))

    report = run_benchmark(cfg, progress=lambda msg: log.info("%s", msg), on_update=write)
    render(report)
    if json_out is not None:
        log.info("wrote %s", json_out)
