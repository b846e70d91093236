"""DICOM SEG output (highdicom): one binary segment referencing the source instances frame by frame.

The SEG shares the source's Study and Frame of Reference, has one frame per source slice (in the order the
reader returned them) and each frame references its source SOP instance, so viewers (3D Slicer, OHIF,
Horos) overlay it on the series it came from.

The note that guided the prediction is never written into the SEG: a clinical note can carry patient
information into a new header. SeriesDescription/ContentDescription are fixed texts unless the caller passes
``seg_description`` explicitly (``reclmis predict --seg-description TEXT``). See docs/dicom.md for every attribute.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..version import __version__
from ..data.meta import ImageMeta
from ..errors import DataError
from ..utils import atomic_path

log = logging.getLogger(__name__)

DEFAULT_SERIES_DESCRIPTION = "RecLMIS SEG"
DEFAULT_CONTENT_DESCRIPTION = "RecLMIS segmentation"


def _highdicom():
    try:
        import highdicom
    except ImportError:
        raise DataError(
            "--format dicom-seg needs highdicom: pip install 'reclmis[dicom]' (or pip install highdicom)"
        ) from None
    return highdicom


def _source_datasets(meta: ImageMeta) -> list:
    import pydicom
    from pydicom.errors import InvalidDicomError

    if not meta.source_files:
        raise DataError(f"{meta.path}: no DICOM source files recorded; cannot reference them in a SEG")
    out = []
    for f in meta.source_files:
        try:
            out.append(pydicom.dcmread(f))
        except (InvalidDicomError, OSError, ValueError) as exc:
            raise DataError(f"{f}: cannot re-read the DICOM source for the SEG ({exc})") from None
    return out


def build_dicom_seg(mask: np.ndarray, meta: ImageMeta, seg_description: str | None = None, label: str = "lesion"):
    """A highdicom ``Segmentation`` of ``mask`` over the DICOM input described by ``meta``.

    Args:
        mask: binary mask in the reader's geometry: (H, W) for a single file, (Z, H, W) for a series or a
            multi-frame file (slices in ``meta.source_files`` order).
        meta: the reader's meta of a DICOM file or series.
        seg_description: text the user chose for SeriesDescription and ContentDescription (cut to 64 characters,
            the LO limit); None writes fixed texts. Never pass the note here implicitly.
        label: segment label.
    """
    hd = _highdicom()
    from pydicom.sr.codedict import codes

    if meta.kind not in ("dicom", "dicom-series"):
        raise DataError(f"{meta.path}: --format dicom-seg needs a DICOM input, got {meta.kind}")
    sources = _source_datasets(meta)
    arr = (np.asarray(mask) > 0).astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    frames = sum(int(ds.get("NumberOfFrames", 1) or 1) for ds in sources)
    if arr.shape[0] != frames:
        raise DataError(f"{meta.path}: mask has {arr.shape[0]} slices, the DICOM source has {frames} frames")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="RecLMIS", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    description = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    first = sources[0]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=arr,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=[description],
            series_instance_uid=hd.UID(),
            series_number=int(first.get("SeriesNumber", 0) or 0) + 1000,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="reclmis",
            manufacturer_model_name="RecLMIS",
            software_versions=__version__,
            device_serial_number="0",
            content_description=(seg_description or DEFAULT_CONTENT_DESCRIPTION)[:64],
            content_label="RECLMIS",
            series_description=(seg_description or DEFAULT_SERIES_DESCRIPTION)[:64],
            omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise DataError(f"{meta.path}: cannot build a DICOM SEG for this input ({exc})") from None
    return seg


def write_dicom_seg(path: str | Path, mask: np.ndarray, meta: ImageMeta, seg_description: str | None = None
                    ) -> tuple[int, int, int]:
    """Build the SEG (:func:`build_dicom_seg`) and write it atomically to ``path``; returns its (frames, rows,
    columns)."""
    seg = build_dicom_seg(mask, meta, seg_description)
    with atomic_path(path) as tmp:
        seg.save_as(tmp)
    return int(seg.NumberOfFrames), int(seg.Rows), int(seg.Columns)
