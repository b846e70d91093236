"""What a reader knows about where its array came from: :class:`ImageMeta` (and :class:`DicomRef` for DICOM).

Writers read it back to restore the input's geometry (resolution, affine, header, DICOM references).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

@dataclass
class DicomRef:
    """Identifiers a DICOM SEG writer needs to reference its source (one entry per slice for a series)."""

    study_instance_uid: str | None = None  # (str) StudyInstanceUID
    series_instance_uid: str | None = None  # (str) SeriesInstanceUID
    frame_of_reference_uid: str | None = None  # (str) FrameOfReferenceUID
    sop_class_uid: str | None = None  # (str) SOPClassUID of the source images
    sop_instance_uids: list[str] = field(default_factory=list)  # (list) per returned slice, in slice order
    image_positions: list[tuple[float, float, float]] = field(default_factory=list)  # (list) per slice, mm
    image_orientation: tuple[float, ...] | None = None  # (tuple) ImageOrientationPatient (6 values)
    patient_orientation: tuple[str, ...] | None = None  # (tuple) PatientOrientation (rows, cols), e.g. (L, F)
    per_frame_positions: bool = False  # (bool) multi-frame: per-frame plane positions (enhanced IODs)


@dataclass
class ImageMeta:
    """Where an array came from and what undoes the reader's reorientation.

    ``shape`` is the returned array's shape; ``original_shape`` the array as stored on disk (NIfTI voxel order).
    ``spacing`` is the pixel size (row, col) in mm of the returned images/slices, ``None`` when unknown.
    """

    path: str  # (str) file or folder read
    kind: str  # (str) raster | dicom | dicom-series | nifti
    shape: tuple[int, ...]  # (tuple) shape of the returned array
    original_shape: tuple[int, ...]  # (tuple) shape as stored (before reorientation)
    dtype: str  # (str) dtype as stored (uint8, uint16, int16, ...)
    mode: str = "gray"  # (str) gray | rgb | rgba
    bit_depth: int = 8  # (int) bits per sample as stored
    is_volume: bool = False  # (bool) the returned array is (Z, H, W) axial slices
    spacing: tuple[float, float] | None = None  # (tuple) (row, col) pixel size in mm of the returned slices
    slice_spacing: float | None = None  # (float) distance between slices in mm (volumes)
    modality: str | None = None  # (str) DICOM Modality (CT, CR, DX, ...)
    photometric: str | None = None  # (str) DICOM PhotometricInterpretation as stored
    rescale: tuple[float, float] = (1.0, 0.0)  # (tuple) DICOM (slope, intercept) applied by the reader
    window: tuple[float, float] | None = None  # (tuple) (center, width) stored in the DICOM file, if any
    affine: np.ndarray | None = None  # (ndarray) NIfTI 4x4 voxel-to-world affine of the stored volume
    header: Any = None  # (nibabel header) NIfTI header of the input, reused by write_nifti_mask
    axcodes: tuple[str, ...] | None = None  # (tuple) NIfTI orientation codes of the stored axes, e.g. (L, A, S)
    dicom: DicomRef | None = None  # (DicomRef) source identifiers (DICOM only)
    source_files: list[str] = field(default_factory=list)  # (list) DICOM files of a series, in slice order
    exif_orientation: int = 1  # (int) raster: EXIF Orientation (1-8) the reader applied; writers undo it

    @property
    def display_shape(self) -> tuple[int, int]:
        """(H, W) of one returned 2-D image or slice."""
        return (self.shape[-2], self.shape[-1]) if self.is_volume else (self.shape[0], self.shape[1])

