"""`reclmis convert-clip`: one-time conversion of OpenAI's TorchScript CLIP archive to safetensors."""

from __future__ import annotations

from pathlib import Path

import typer

from ..console import handle_errors, quiet_mode, say
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
