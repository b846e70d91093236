"""`reclmis app`: try a model in a browser (Gradio, extra `app`): upload, note, threshold -> overlay, W_poi, areas."""

from __future__ import annotations

import logging
from pathlib import Path

import typer
from rich.markup import escape

from ..console import handle_errors, quiet_mode, say
from ..options import checkpoint_option, config_option, configurable, device_option, quiet_option, set_option

log = logging.getLogger(__name__)


@handle_errors
@configurable("app")
def app_(
    checkpoint: Path | None = checkpoint_option("; or an ONNX export folder"),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on (127.0.0.1: this machine only; "
                             "0.0.0.0 makes the page reachable from the network)."),
    port: int = typer.Option(7860, "--port", help="Port to listen on."),
    device: str = device_option(),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Serve a page to try a model: upload a PNG/JPEG/DICOM/NIfTI, type a note, see the mask, W_poi and areas."""
    from reclmis_core.api import load
    from reclmis_core.app import serve
    from reclmis_core.checkpoint import checkpoint_or_latest
    from reclmis_core.artefacts import SIDECAR

    quiet_mode(quiet)
    ckpt = checkpoint_or_latest(checkpoint)
    model = load(ckpt, device=device, explain=not (Path(ckpt) / SIDECAR).is_file())
    demo, _, url = serve(model, host, port)
    say(f"[green]serving[/] {escape(str(ckpt))} at {url} (one request at a time; Ctrl-C stops)")
    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this machine can use the page", host)
    try:
        demo.block_thread()
    finally:
        demo.close()
