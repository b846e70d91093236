"""`reclmis export`: the inference graph (no CVR/CLR) as onnx, torch-export or safetensors."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from ..console import handle_errors, print_table, quiet_mode
from ..options import checkpoint_option, config_option, configurable, quiet_option, set_option

log = logging.getLogger("reclmis_cli.export")


@handle_errors
@configurable("export")
def export(
    checkpoint: Path | None = checkpoint_option(),
    format: str = typer.Option(..., "--format", "-f", help="onnx | torch-export | safetensors"),  # noqa: A002
    out_path: Path = typer.Option(..., "--out", "-o", help="Output folder (must not exist, unless --overwrite)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out (once the export "
                                   "succeeded)."),
    verify: bool = typer.Option(
        False, "--verify", help="Compare with eager PyTorch at batch 1 and 3 (different notes); fail if > 1e-4."
    ),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (onnx only)."),
    int8: bool = typer.Option(False, "--int8", help="onnx: static int8 segmentation graph (predict --backend onnx "
                              "runs it)."),
    calib: Path | None = typer.Option(None, "--calib", help="Prepared DATA_DIR whose images calibrate --int8 "
                                      "(default: phantoms, with a warning)."),
    calib_images: int = typer.Option(32, "--calib-images", help="Calibration images taken from --calib."),
    int8_min_dice: float = typer.Option(0.98, "--int8-min-dice", help="Refuse an int8 graph whose masks agree with "
                                        "fp32's below this mean Dice on held-out images (0: accept any, stated in "
                                        "the sidecar)."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Export the inference graph of a checkpoint (the reconstruction modules are left out)."""
    from reclmis_core.checkpoint import checkpoint_or_latest
    from reclmis_core.export import export_model

    quiet_mode(quiet)
    ckpt = checkpoint_or_latest(checkpoint)
    res = export_model(ckpt, format, out_path, verify=verify, opset=opset, overwrite=overwrite, int8=int8,
                       calib=calib, calib_images=calib_images, int8_min_dice=int8_min_dice)
    rows = [["output", res.path], ["files", ", ".join(res.files)], ["size", f"{res.size_mb:.1f} MB"],
            ["parameters", f"{res.params_exported / 1e6:.3f} M (inference model: {res.params_inference / 1e6:.3f} M)"]]
    if res.opset:
        rows.append(["opset", str(res.opset)])
    for graph, how in res.exporters.items():
        rows.append([f"exporter ({graph})", how])
    if res.verify is not None:
        cases = "; ".join(f"batch {c.batch}: {c.max_abs_diff:.2e}" for c in res.verify.cases)
        rows.append(["verify", f"passed, max |diff| {res.verify.max_abs_diff:.2e} <= {res.verify.tolerance:g} "
                               f"({res.verify.backend}; {cases})"])
    if res.int8 is not None:
        q = res.int8
        rows.append(["int8", f"{q['kind']}, {q['ops'][0]} layers; calibration: {q['calibration']}"])
        dice = q["mask_dice_vs_fp32"]
        agree = ("unknown (every held-out mask empty in both)" if dice is None else
                 f"mask Dice {dice:.4f} (min {q['min_mask_dice_vs_fp32']:.4f})")
        rows.append(["int8 vs fp32", f"{agree}, max |prob diff| {q['max_prob_diff_vs_fp32']:.3f} on "
                                     f"{q['agreement_images']}; {q['agreement_gate']}"])
    rows.append(["time", f"{res.seconds:.1f} s"])
    print_table(f"reclmis export --format {res.format}", ["what", "value"], rows, left=["value"], show_header=False)
