"""The reader registry: each input format registers how to recognise a path and how to read it.

A reader is a function ``read(path, options) -> (array, ImageMeta)``; :func:`register_reader` files it under
the name it writes into ``ImageMeta.kind`` (nnU-Net keeps a list of reader classes with their
``supported_file_endings`` for the same purpose).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ...errors import DataError
from ...registry import Registry
from ..meta import ImageMeta


@dataclass(frozen=True)
class ReadOptions:
    """What a caller may ask of any reader; each reader uses the fields that concern its format."""

    allow_uneven_slices: bool = False  # (bool) DICOM series: accept a gap/uneven spacing (warning, approximate affine)
    files: Sequence[Path] | None = None  # (list) DICOM series: its files when not all of the folder's (a DICOMDIR's)
    series_uid: str | None = None  # (str) DICOM series: the SeriesInstanceUID to read when the folder holds several


ReadFn = Callable[[Path, ReadOptions], tuple[np.ndarray, ImageMeta]]


@dataclass(frozen=True)
class ReaderSpec:
    """One input format in the registry."""

    read: ReadFn  # (callable) read(path, options) -> (array, ImageMeta)
    describe: str  # (str) the format as error messages name it, e.g. "PNG/JPEG/TIFF"
    suffixes: tuple[str, ...] = ()  # (tuple) lower-case name endings it reads, e.g. ".nii.gz"
    sniff: Callable[[Path], bool] | None = None  # (callable) content check: a file (or folder) it reads
    folder: bool = False  # (bool) reads a folder (a DICOM series) instead of a file

    def claims_suffix(self, name: str) -> int:
        """Length of the longest of its suffixes the file name ``name`` ends with (0: none)."""
        lower = name.lower()
        return max((len(s) for s in self.suffixes if lower.endswith(s)), default=0)


READERS: Registry[ReaderSpec] = Registry("input format", error=DataError)


def register_reader(
    name: str,
    *,
    describe: str,
    suffixes: tuple[str, ...] = (),
    sniff: Callable[[Path], bool] | None = None,
    folder: bool = False,
) -> Callable[[ReadFn], ReadFn]:
    """Decorator registering a reader function under ``name`` (the ``ImageMeta.kind`` it returns).

    Example:
        >>> @register_reader("mha", describe="MetaImage .mha", suffixes=(".mha",))
        ... def read_mha(path: Path, options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]: ...
    """

    def add(fn: ReadFn) -> ReadFn:
        READERS.register(name)(ReaderSpec(fn, describe, tuple(s.lower() for s in suffixes), sniff, folder))
        return fn

    return add


def require_finite(arr: np.ndarray, path: str | Path) -> None:
    """DataError when a float array holds NaN or inf: windowing and scaling would turn them into garbage."""
    if arr.dtype.kind not in "fc":
        return
    finite = np.isfinite(arr)
    if finite.all():
        return
    n_nan = int(np.isnan(arr).sum())
    n_inf = int(finite.size - finite.sum()) - n_nan
    raise DataError(
        f"{path}: {n_nan} NaN and {n_inf} inf value(s) in the pixel data; replace them with a finite value "
        "(e.g. the background intensity) and retry"
    )
