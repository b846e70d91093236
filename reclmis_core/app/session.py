"""What ``reclmis app`` does per request, without Gradio: run one upload through :meth:`Model.predict` (one model,
one request at a time), keep the last results for the slice slider, and render the page's views.

Errors a user can cause (an unreadable upload, an empty note for a text-guided model) become a message in the
returned :class:`View`, never an exception.
"""

from __future__ import annotations

import logging
import shutil
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..api import Model, Result
from ..errors import ConfigError, ReclmisError

log = logging.getLogger(__name__)

KEEP_RESULTS = 16  # results kept for the slice slider (older ones and their files are dropped: memory stays flat)


@dataclass
class View:
    """What the page shows after a request."""

    overlay: np.ndarray | None = None  # RGB: the mask over the image (the chosen slice of a volume), with a legend
    w_poi: np.ndarray | None = None  # RGB: the W_poi heat map and the word weights (None without explain)
    summary: str = ""  # Markdown: lesion areas, or the message that explains why there is no result
    mask_file: str | None = None  # the mask in the input's format (PNG, NIfTI, DICOM SEG)
    slices: int = 1  # slices of the input (1 for a 2-D image)
    slice_index: int = 0
    token: str = ""  # the result's key for later slice views ("" when the request failed)
    ok: bool = False


def _source(files: list[str], folder: Path) -> tuple[str, str]:
    """(what to predict, mask format) for the uploaded files: one file as it is; several files must be the DICOM
    files of one series, which become one series folder. The mask format is the input's: DICOM SEG for DICOM,
    NIfTI for NIfTI, PNG for 2-D images."""
    from ..data.readers.dicom import is_dicom

    if not files:
        raise ConfigError("no file uploaded: choose a PNG, JPEG, DICOM or NIfTI file")
    paths = [Path(f) for f in files]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ConfigError(f"upload incomplete: {', '.join(missing)}")
    dicom = [is_dicom(p) for p in paths]
    if len(paths) == 1:
        return str(paths[0]), "dicom-seg" if dicom[0] else "auto"
    if not all(dicom):
        raise ConfigError("several files are read as one DICOM series: upload only the DICOM files of one series "
                          "(or one PNG/JPEG/NIfTI file)")
    series = folder / "series"
    series.mkdir(parents=True)
    for i, p in enumerate(paths):
        shutil.copyfile(p, series / f"{i:05d}_{p.name}")
    return str(series), "dicom-seg"


class AppSession:
    """One loaded model serving the page: :meth:`run` predicts (serialised by a lock), :meth:`view` re-renders a
    slice of a kept result."""

    def __init__(self, model: Model, work_dir: str | Path, keep: int = KEEP_RESULTS) -> None:
        self.model = model
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.keep = keep
        self.lock = threading.Lock()  # the model runs one request at a time, whatever the server's threads
        self.results: OrderedDict[str, Result] = OrderedDict()
        self.requests = 0

    def run(self, files: list[str] | None, note: str | None, threshold: float) -> View:
        """Predict the upload with ``note`` at ``threshold``; the View of its most telling slice."""
        token = uuid.uuid4().hex[:12]
        folder = self.work_dir / token
        try:
            source, fmt = _source(list(files or []), folder)
            with self.lock:
                self.requests += 1
                [result] = self.model.predict(source, note or "", threshold=threshold, out=folder / "out",
                                              format=fmt)
        except (ReclmisError, OSError) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            log.info("request failed: %s", exc)
            message = str(exc)
            for f in files or []:  # the upload's name, not where the server keeps it
                message = message.replace(str(f), Path(f).name)
            return View(summary=f"**Cannot segment this upload.** {message}")
        self._remember(token, result)
        z = self._default_slice(result)
        return self.view(token, z)

    def _remember(self, token: str, result: Result) -> None:
        self.results[token] = result
        while len(self.results) > self.keep:
            old, _ = self.results.popitem(last=False)
            shutil.rmtree(self.work_dir / old, ignore_errors=True)

    @staticmethod
    def _default_slice(result: Result) -> int:
        from ..inference.restore import view_slice

        return view_slice(result.mask) if result.is_volume else 0

    def view(self, token: str, slice_index: int | None = None) -> View:
        """The page's View of a kept result at ``slice_index`` (volumes)."""
        from ..inference.explain import render_explanation
        from ..inference.restore import overlay_figure

        result = self.results.get(token)
        if result is None:
            return View(summary="This result is no longer kept on the server; press Segment again.")
        n = result.mask.shape[0] if result.is_volume else 1
        z = int(min(max(slice_index or 0, 0), n - 1))
        image, mask = (result.image8[z], result.mask[z]) if result.is_volume else (result.image8, result.mask)
        overlay = overlay_figure(image, mask, result.note, result.threshold)
        heat = None
        if result.explanations is not None:
            heat = render_explanation(image, mask, result.explanations[z], result.geometry, result.note)
        mask_file = next((result.files[k] for k in ("seg", "mask") if k in result.files), None)
        return View(overlay, heat, self._summary(result, z, n), mask_file, n, z, token, True)

    def _summary(self, result: Result, z: int, n: int) -> str:
        entry: dict[str, Any] = result.entry or result.areas()
        mm2 = entry.get("lesion_area_mm2")
        lines = [f"**Lesion area:** {entry['lesion_area_px']} px" + (f" ({mm2:.1f} mm²)" if mm2 is not None else ""),
                 f"**Foreground:** {100 * entry['foreground_fraction']:.2f}% of the image at threshold "
                 f"{result.threshold:.2f}"]
        if "lesion_count" in entry:
            lines.append(f"**Lesions (connected regions):** {entry['lesion_count']}")
        if result.note_read is not None:
            lines.append(f"**The model read the note as:** {result.note_read or '(nothing)'}")
        if result.is_volume:
            slice_px = int(result.mask[z].sum())
            volume = entry.get("lesion_volume_mm3")
            lines += [f"**Slices with lesion:** {entry.get('slices_with_lesion')} of {n}; slice {z}: {slice_px} px",
                      f"**Lesion volume:** {volume:.1f} mm³" if volume is not None else "**Lesion volume:** unknown "
                      "(no slice spacing)"]
        if result.explanations is None:
            lines.append("_W_poi needs a checkpoint folder (an ONNX export does not carry it)._")
        return "  \n".join(lines)
