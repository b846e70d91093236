"""The ``reclmis app`` page (Gradio): upload, note, threshold, then the overlay, the W_poi map, the lesion areas and
the mask to download. One model, one request at a time (queue with concurrency limit 1), no network use at run
time (analytics off, system fonts instead of web fonts), served on localhost unless asked otherwise."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..api import Model
from ..errors import ConfigError
from .session import AppSession, View

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: no usage reporting

UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".ima", ".nii", ".gz"]
N_EXAMPLES = 5


def _gradio() -> Any:
    try:
        import gradio
    except ImportError:
        raise ConfigError("the app needs Gradio: pip install 'reclmis[app]'") from None
    return gradio


def example_notes(n: int = N_EXAMPLES) -> list[str]:
    """Notes worded as the bundled sample's, offered as examples under the note box."""
    from ..export.samples import SAMPLE_NOTES

    return list(SAMPLE_NOTES[:n])


def page_theme() -> Any:
    """Gradio's default look with the system's fonts (the default theme fetches web fonts from a CDN)."""
    return _gradio().themes.Default(font=["system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


def build_app(model: Model, work_dir: str | Path | None = None) -> tuple[Any, AppSession]:
    """The Gradio Blocks of the page around ``model`` and the :class:`AppSession` that runs it."""
    gr = _gradio()
    work = Path(work_dir) if work_dir is not None else Path(tempfile.mkdtemp(prefix="reclmis-app-"))
    session = AppSession(model, work)

    def outputs(view: View) -> tuple[Any, ...]:
        slider = gr.Slider(minimum=0, maximum=max(view.slices - 1, 1), value=view.slice_index, step=1,
                           visible=view.slices > 1, label=f"Slice (of {view.slices})")
        return view.overlay, view.w_poi, view.summary, view.mask_file, slider, view.token

    def segment(files: list[str] | None, note: str, threshold: float) -> tuple[Any, ...]:
        return outputs(session.run(files, note, threshold))

    def show_slice(token: str, z: float) -> tuple[Any, ...]:
        view = session.view(token, int(z)) if token else View(summary="Upload an image and press Segment first.")
        return view.overlay, view.w_poi, view.summary

    note_needed = model.uses_text and not model.note_optional
    with gr.Blocks(title="RecLMIS: segment what the note describes", analytics_enabled=False,
                   delete_cache=(600, 1800)) as demo:
        gr.Markdown("## RecLMIS: segment what the note describes\nUpload a chest X-ray or CT (PNG, JPEG, DICOM file "
                    "or the files of one DICOM series, NIfTI), describe the finding, press **Segment**. "
                    "Research use only: not a medical device.")
        token = gr.State("")
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(label="Image (PNG, JPEG, DICOM, NIfTI)", file_count="multiple",
                                 file_types=UPLOAD_TYPES, elem_id="upload")
                note = gr.Textbox(label="Note" + (" (required)" if note_needed else " (optional)"), lines=2,
                                  placeholder="e.g. Bilateral pulmonary infection, two infected areas, lower left "
                                  "lung and lower right lung.", elem_id="note")
                gr.Examples(example_notes(), inputs=[note], label="Example notes")
                threshold = gr.Slider(0.05, 0.95, value=round(model.threshold, 2), step=0.01, label="Threshold",
                                      elem_id="threshold")
                run = gr.Button("Segment", variant="primary", elem_id="segment")
            with gr.Column(scale=2):
                summary = gr.Markdown(elem_id="summary")
                slider = gr.Slider(0, 1, value=0, step=1, visible=False, label="Slice", elem_id="slice")
                with gr.Row():
                    overlay = gr.Image(label="Mask over the image", type="numpy", interactive=False,
                                       elem_id="overlay")
                    heat = gr.Image(label="W_poi: where the model looked", type="numpy", interactive=False,
                                    elem_id="wpoi")
                mask_file = gr.File(label="Mask (in the input's format)", interactive=False, elem_id="mask")
        run.click(segment, [upload, note, threshold], [overlay, heat, summary, mask_file, slider, token],
                  api_name="segment", concurrency_limit=1)
        slider.release(show_slice, [token, slider], [overlay, heat, summary], api_name="slice",
                       concurrency_limit=1)
    demo.queue(default_concurrency_limit=1, max_size=256)
    return demo, session


def serve(model: Model, host: str = "127.0.0.1", port: int = 7860, *,
          work_dir: str | Path | None = None) -> tuple[Any, AppSession, str]:
    """Build the page and serve it at ``host:port`` in a background thread; returns (blocks, session, local URL).
    ``blocks.block_thread()`` waits until Ctrl-C; ``blocks.close()`` stops the server."""
    if not 0 < port < 65536:
        raise ConfigError(f"port must lie in 1..65535, got {port}")
    demo, session = build_app(model, work_dir)
    _, url, _ = demo.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                            share=False, show_error=False, ssr_mode=False, mcp_server=False,
                            allowed_paths=[str(session.work_dir)], theme=page_theme(),
                            footer_links=[], run_history=False)  # no run history: nothing saved or sent
    return demo, session, url
