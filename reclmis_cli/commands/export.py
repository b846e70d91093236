"""`reclmis export`: the inference graph (no CVR/CLR) as onnx, torch-export or safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.table import Table

from ..console import handle_errors, out

log = logging.getLogger("reclmis_cli.export")


@handle_errors
def export(
    checkpoint: Path | None = typer.Option(
        None, "--checkpoint", "-c", help="Checkpoint folder (default: the newest runs/*/best)."
    ),
    format: str = typer.Option(..., "--format", "-f", help="onnx | torch-export | safetensors"),  # noqa: A002
    out_path: Path = typer.Option(..., "--out", "-o", help="Output folder (replaced only if the export succeeds)."),
    verify: bool = typer.Option(
        False, "--verify", help="Compare with eager PyTorch at batch 1 and 3 (different notes); fail if > 1e-4."
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (onnx only)."),
) -> None:
    """Export the inference graph of a checkpoint (the reconstruction modules are left out)."""
    from reclmis_core.engine.checkpoint import find_latest_checkpoint
    from reclmis_core.export import export_model

    ckpt = checkpoint if checkpoint is not None else find_latest_checkpoint()
    if checkpoint is None:
        log.info("using the newest checkpoint: %s", ckpt)
    res = export_model(ckpt, format, out_path, verify=verify, opset=opset)
    table = Table(title=f"reclmis export --format {res.format}", show_header=False)
    table.add_row("output", res.path)
    table.add_row("files", ", ".join(res.files))
    table.add_row("size", f"{res.size_mb:.1f} MB")
    table.add_row("parameters", f"{res.params_exported / 1e6:.3f} M (inference model: {res.params_inference / 1e6:.3f} M)")
    if res.opset:
        table.add_row("opset", str(res.opset))
    for graph, how in res.exporters.items():
        table.add_row(f"exporter ({graph})", how)
    if res.verify is not None:
        cases = "; ".join(f"batch {c.batch}: {c.max_abs_diff:.2e}" for c in res.verify.cases)
        table.add_row("verify", f"passed, max |diff| {res.verify.max_abs_diff:.2e} <= {res.verify.tolerance:g} "
                                f"({res.verify.backend}; {cases})")
    table.add_row("time", f"{res.seconds:.1f} s")
    out.print(table)
