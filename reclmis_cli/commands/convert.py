"""`reclmis convert-clip`: one-time conversion of OpenAI's TorchScript CLIP archive to safetensors."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import handle_errors, print_table, quiet_mode, say
from ..options import config_option, configurable, quiet_option, set_option


@handle_errors
@configurable("convert-clip")
def convert_clip(
    archive: Path = typer.Argument(..., help="OpenAI CLIP TorchScript archive, e.g. ViT-B-32.pt."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write model.safetensors + config.json into."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Convert OpenAI's CLIP archive to a safetensors text tower, once.

    WARNING: a TorchScript archive contains code, and loading it runs that code. Convert only files you trust
    (e.g. downloaded from OpenAI yourself). Nothing else in reclmis loads TorchScript or pickles; afterwards use
    `--text-encoder clip:OUT`.
    """
    from reclmis_core.models.text.convert import convert_openai_clip

    quiet_mode(quiet)
    folder = convert_openai_clip(archive, out)
    say(f"wrote CLIP text tower to {folder} (use --text-encoder clip:{folder})")


@handle_errors
@configurable("convert-reference")
def convert_reference(
    checkpoint: Path = typer.Argument(..., help="File written by the public RecLMIS code, e.g. best_model-RecLMIS.pth.tar."),
    out_dir: Path = typer.Option(..., "--out", "-o", help="reclmis checkpoint folder to write (CLIP text tower included)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Convert a checkpoint of the public RecLMIS code into a reclmis checkpoint in reference-exact mode.

    The file is read with torch.load(weights_only=True) only: a file that needs code to load is refused.
    """
    from reclmis_core.engine.convert_reference import convert_reference_checkpoint

    quiet = quiet_mode(quiet)
    rep = convert_reference_checkpoint(checkpoint, out_dir, overwrite=overwrite)
    if quiet:
        return
    rows = [("output", rep.out)]
    rows.append(("tensors mapped", f"{rep.tensors_mapped} (every tensor of the reclmis model, CLIP text tower included)"))
    rows.append(("reconstruction layers", f"{rep.recon_layers} (reference config: {rep.dataset})"))
    rows.append(("DataParallel prefix", "stripped" if rep.data_parallel else "none"))
    if rep.epoch is not None:
        rows.append(("reference epoch", str(rep.epoch)))
    rows += [("left out", line) for line in rep.left_out_lines()]
    rows.append(("mode", "reference-exact: ci_order=reference, text_padding=raw, 18 tokens, OpenCV preprocessing"))
    print_table("reclmis convert-reference", ["what", "value"], rows, show_header=False)
