"""A CT series written from pydicom's bundled CT_small.dcm, for the tests that read DICOM series."""

from __future__ import annotations

from pathlib import Path


def write_ct_series(folder: Path, n: int = 3, reverse_file_order: bool = False) -> list[str]:
    """``n`` slices 5 mm apart in ``folder`` (created), one new series; returns the SOP instance UIDs in slice
    order. ``reverse_file_order`` names the files against the slice order (``slice{n - z}.dcm``)."""
    import pydicom
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    folder.mkdir()
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    series = generate_uid()
    pos = [float(v) for v in base.ImagePositionPatient]  # read once: base.copy() shares elements with base
    uids = []
    for z in range(n):
        ds = base.copy()
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = z + 1
        ds.ImagePositionPatient = [pos[0], pos[1], pos[2] + 5.0 * z]
        ds.save_as(folder / f"slice{(n - z) if reverse_file_order else (z + 1)}.dcm")
        uids.append(ds.SOPInstanceUID)
    return uids
