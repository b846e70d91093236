"""Writing one prediction: the mask in the input's own format and geometry, overlay, probabilities, explanation,
and the per-input entry of ``predictions.json`` (lesion area, volume, count).

Mask writers are a registry (:data:`MASK_WRITERS`: format -> writer); ``resolve_format`` picks one per input.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..choices import FORMATS
from ..data.meta import ImageMeta
from ..data.writers import write_map_png
from ..errors import ConfigError, DataError, ReclmisError
from ..metrics.components import count_components
from ..registry import Registry
from .explain import render_explanation
from .inputs import Failure, InputSpec
from .predictor import Prediction
from .restore import (
    SHAPE_ORDER,
    OutputSet,
    overlay_figure,
    prob_to_uint8,
    view_slice,
    volume_prob_in_stored_order,
    write_npy,
    write_png,
    write_png_mask,
    write_volume_mask,
)


@dataclass
class PredictOptions:
    threshold: float | None = None  # (float) probability above which a pixel is foreground; None = checkpoint's
    format: str = "auto"  # (str) auto | png | nifti | dicom-seg
    overlay: bool = False  # (bool) write <stem>_overlay.png
    save_prob: bool = False  # (bool) write <stem>_prob.png (2-D) / <stem>_prob.npy (volumes)
    seg_description: str | None = None  # (str) DICOM SEG SeriesDescription; None = fixed text (never the note)



def is_frame_stack(meta: ImageMeta) -> bool:
    """A multi-frame DICOM file or a multi-page TIFF: frames without a volume's patient geometry."""
    return bool(meta.is_volume and meta.kind in ("raster", "dicom"))


def format_error(fmt: str, path: str | Path, kind: str, is_volume: bool | None = None,
                 frames: bool = False) -> str | None:
    """Why ``fmt`` cannot hold the mask of an input of this ``kind`` (None if it can). ``is_volume=None``: the
    input is not read yet (only what its kind decides is checked). ``frames``: a multi-frame file (one PNG per
    frame)."""
    if fmt == "png" and is_volume and not frames:
        return f"{path}: is a volume; a PNG mask holds one 2-D image (use --format nifti or auto)"
    if fmt == "nifti" and kind not in ("nifti", "dicom-series"):
        what = "multi-frame" if frames else kind
        return (f"{path}: --format nifti needs a NIfTI or DICOM-series input, got a {what} image "
                f"(use --format png{' (one PNG per frame)' if frames else ''} or auto)")
    if fmt == "dicom-seg" and kind not in ("dicom", "dicom-series"):
        return f"{path}: --format dicom-seg needs a DICOM input, got {kind} (use --format auto)"
    return None


def check_formats(specs: Sequence[InputSpec], fmt: str) -> tuple[list[InputSpec], list[Failure]]:
    """Split inputs into those ``fmt`` can hold and Failures, before any model is loaded or run."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    ok, bad = [], []
    for spec in specs:
        error = format_error(fmt, spec.path, spec.kind)
        if error is None:
            ok.append(spec)
        else:
            bad.append(Failure(spec.given, error, spec.stem))
    return ok, bad


def resolve_format(fmt: str, meta: ImageMeta) -> str:
    """The mask format for one input; DataError if ``fmt`` cannot hold it.

    ``auto``: PNG for 2-D images, NIfTI for volumes (NIfTI, DICOM series), DICOM SEG for a multi-frame DICOM
    a SEG can reference (a Frame of Reference and per-frame plane positions: enhanced CT/MR), else one PNG per
    frame (other multi-frame DICOM, multi-page TIFF)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    frames = is_frame_stack(meta)
    seg_problem = _seg_problem(meta) if meta.kind in ("dicom", "dicom-series") else None
    if fmt == "auto":
        if frames:
            return "dicom-seg" if meta.kind == "dicom" and seg_problem is None else "png"
        return "nifti" if meta.is_volume else "png"
    error = format_error(fmt, meta.path, meta.kind, meta.is_volume, frames)
    if error is None and fmt == "dicom-seg" and seg_problem is not None:
        error = f"{meta.path}: {seg_problem}, which a DICOM SEG needs (use --format png or auto)"
    if error is not None:
        raise DataError(error)
    return fmt


def _seg_problem(meta: ImageMeta) -> str | None:
    """What a DICOM input lacks for a DICOM SEG over it (None: nothing)."""
    ref = meta.dicom
    if ref is None or not ref.frame_of_reference_uid:
        return "has no FrameOfReferenceUID"
    if is_frame_stack(meta) and not ref.per_frame_positions:
        return "is a multi-frame file without per-frame plane positions"
    return None


def _area_stats(mask: np.ndarray, meta: ImageMeta) -> dict[str, Any]:
    px = int(mask.sum())
    out: dict[str, Any] = {
        "foreground_fraction": round(float(mask.mean()), 6),
        "lesion_area_px": px,
        "lesion_area_mm2": None,
        "pixel_spacing_mm": list(meta.spacing) if meta.spacing else None,
    }
    if meta.spacing:
        out["lesion_area_mm2"] = round(px * float(meta.spacing[0]) * float(meta.spacing[1]), 3)
    if mask.ndim == 2:
        out["lesion_count"] = count_components(mask > 0)  # connected regions, 8-connectivity
    if mask.ndim == 3:
        out["lesion_voxels"] = px
        out["slices_with_lesion"] = int(mask.reshape(mask.shape[0], -1).any(axis=1).sum())
        out["lesion_volume_mm3"] = (
            round(out["lesion_area_mm2"] * float(meta.slice_spacing), 3)
            if out["lesion_area_mm2"] is not None and meta.slice_spacing
            else None
        )
    return out


# Mask writers by --format (``auto`` resolves to one of them per input), each returning the file's own shape;
# FORMATS in reclmis_core.choices lists the same names for the CLI help (a test keeps the two equal).
MASK_WRITERS: Registry[Callable[[OutputSet, np.ndarray, ImageMeta, PredictOptions], tuple[int, ...]]] = Registry(
    "mask format")


@MASK_WRITERS.register("png")
def _png(outs: OutputSet, mask: np.ndarray, meta: ImageMeta, opts: PredictOptions) -> tuple[int, ...]:
    if mask.ndim == 3:  # a multi-frame file: <stem>_mask_0001.png ... (1-based, as DICOM numbers frames)
        for i, frame in enumerate(mask):
            write_png_mask(outs.path(f"mask_{i + 1:04d}", f"_mask_{i + 1:04d}.png"), frame, meta)
        return tuple(int(n) for n in mask.shape)
    return write_png_mask(outs.path("mask", "_mask.png"), mask, meta)


@MASK_WRITERS.register("nifti")
def _nifti(outs: OutputSet, mask: np.ndarray, meta: ImageMeta, opts: PredictOptions) -> tuple[int, ...]:
    return write_volume_mask(outs.path("mask", "_mask.nii.gz"), mask, meta)


@MASK_WRITERS.register("dicom-seg")
def _dicom_seg(outs: OutputSet, mask: np.ndarray, meta: ImageMeta, opts: PredictOptions) -> tuple[int, ...]:
    from .dicom_seg import write_dicom_seg

    return write_dicom_seg(outs.path("seg", "_seg.dcm"), mask, meta, opts.seg_description)


def write_prediction(pred: Prediction, out_dir: Path, opts: PredictOptions) -> dict[str, Any]:
    """Write one input's files (each atomically); on any error remove what was written and re-raise."""
    meta = pred.meta
    fmt = resolve_format(opts.format, meta)
    if opts.threshold is None:
        raise ConfigError("write_prediction needs a threshold (run_predict fills in the checkpoint's)")
    mask = pred.mask(opts.threshold)
    outs = OutputSet(out_dir, pred.spec.stem)
    entry: dict[str, Any] = {
        "input": str(pred.spec.path),
        "stem": pred.spec.stem,
        "kind": meta.kind,
        "modality": meta.modality,
        "shape": list(mask.shape),
        "shape_order": SHAPE_ORDER[mask.ndim],
        "note": pred.note,
        **({"note_read": pred.note_read} if pred.note_read is not None else {}),
        "threshold": opts.threshold,
        "format": fmt,
    }
    entry.update(_area_stats(mask, meta))
    # the slice shown in 2-D views of a volume: the one with the largest lesion (middle one if none)
    if pred.is_volume:
        z = view_slice(mask)
        img2d, mask2d = pred.image8[z], mask[z]
        entry["view_slice"] = z
    else:
        z, img2d, mask2d = 0, pred.image8, mask
    try:
        file_shape = MASK_WRITERS.get(fmt)(outs, mask, meta, opts)
        entry["file_shape"] = list(file_shape)  # the mask file's own axis order (nib.load(f).shape for NIfTI)
        if opts.overlay:
            fig = overlay_figure(pred.image8, mask, pred.note, opts.threshold, z)
            write_png(outs.path("overlay", "_overlay.png"), fig)
        if opts.save_prob:
            if pred.is_volume:
                write_npy(outs.path("prob", "_prob.npy"), volume_prob_in_stored_order(pred.prob, meta))
            else:
                write_map_png(outs.path("prob", "_prob.png"), prob_to_uint8(pred.prob), meta)
        if pred.explanations is not None:
            exp = pred.explanations[z]
            fig = render_explanation(img2d, mask2d, exp, pred.geometry, pred.note)
            write_png(outs.path("explain", "_explain.png"), fig)
            entry["word_weights"] = exp.word_weights()
            entry["top_words"] = exp.top_words()
            entry["patch_grid"] = list(exp.w_poi.shape)
    except (ReclmisError, OSError) as exc:
        outs.discard()
        if isinstance(exc, OSError):
            raise DataError(f"{pred.spec.path}: cannot write outputs to {out_dir} ({exc})") from None
        raise
    except BaseException:
        outs.discard()
        raise
    entry["outputs"] = {k: str(p.resolve()) for k, p in outs.files.items()}
    entry["seconds"] = round(pred.seconds, 4)
    return entry
