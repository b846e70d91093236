"""The :class:`Preprocessor`: the one object that turns a file (or an array) into model input, and back.

Built once (from the training data and config), stored in the checkpoint's ``meta.preprocessing`` and every
export sidecar's ``preprocessing`` section (:meth:`Preprocessor.to_dict`), and rebuilt from there
(:meth:`Preprocessor.from_dict`); the Dataset (train, eval, bench, int8 calibration), the Predictor and the ONNX
runtime wrapper all call it, so the same file gives the same model-input pixels everywhere.

Its steps, for one input::

    pixels, meta = pre.load(path_or_array)           # uint8 (n, H, W[, 3]) slices, in the kind's channel order
    geom = pre.geometry(pixels.shape[1:3], meta)     # what to_model does, so that restore can undo it
    model_px = pre.to_model(pixels[0], geom)         # uint8 (S, S[, 3]): geometry, resize, channels
    x = pre.to_tensor(model_px[None])                # float32 (1, C, S, S)
    prob = pre.restore(model_output, geom)           # float32 (H, W) on the input's own pixel grid

Kinds (:data:`PREPROCESSORS`, the config's ``data.preprocessing``):

- ``reclmis``: :mod:`reclmis_core.data.preprocess` (8-bit display image, square pixels and a zero-padded
  square field of view when the spacing is known, PIL bilinear resize, luminance unless colour,
  ``(x / 255 - mean) / std``);
- ``reference``: the public RecLMIS code's input pipeline (:mod:`reclmis_core.data.reference`: raster files read
  with ``cv2.imread`` in BGR order, ``cv2.resize``, ``x / 255``). DICOM and NIfTI, which the reference cannot
  read, go in as their 8-bit display slices with the same square-pixel geometry as ``reclmis``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ConfigError, DataError
from ..registry import Registry
from .intensity import to_uint8
from .meta import ImageMeta
from .readers.base import ReadOptions
from .preprocess import (
    Geometry,
    input_spacing,
    luminance,
    normalise_batch,
    plan_geometry,
    restore_map,
    to_model_pixels,
    to_native_pixels,
)
from .reference import SIDECAR_DESCRIPTION, bgr_to_rgb, read_reference_image, reference_pixels, reference_tensor

#: Preprocessor kinds by name (``data.preprocessing``); a kind is a subclass of :class:`Preprocessor`.
PREPROCESSORS: Registry[type[Preprocessor]] = Registry("preprocessing kind")


@dataclass(frozen=True)
class Preprocessor:
    """The preprocessing a model was trained with (kind ``reclmis``; see the module docstring).

    Example:
        >>> pre = Preprocessor(image_size=224, in_channels=3, mean=0.5, std=0.25)
        >>> pixels, meta = pre.load("scan.dcm")
        >>> x = pre.to_tensor(np.stack([pre.to_model(p, pre.geometry(p.shape[:2], meta)) for p in pixels]))
    """

    image_size: int  # (int) model input side in pixels
    in_channels: int  # (int) 1 or 3
    mean: float  # (float) normalisation mean on the 0..1 scale
    std: float  # (float) normalisation std on the 0..1 scale
    colour: bool = False  # (bool) trained on colour images (kept with 3 channels); else luminance

    kind: ClassVar[str] = "reclmis"
    description: ClassVar[dict[str, str]] = {
        "layout": "NCHW float32",
        "scale": "x / 255",
        "normalise": "(x / 255 - mean) / std",
        "grayscale": "repeated to in_channels",
        "colour_to_gray": "luminance, ITU-R 601 (PIL convert('L')), unless colour is true",
        "geometry": "known pixel spacing: square pixels, zero-pad to a square; then bilinear resize to "
                    "image_size x image_size; undo on the output",
    }

    # -- construction -------------------------------------------------------------------------------

    @staticmethod
    def build(kind: str, image_size: int, in_channels: int, mean: float, std: float, colour: bool = False
              ) -> Preprocessor:
        """The preprocessor of ``kind`` (ConfigError naming the kinds for an unknown one)."""
        return PREPROCESSORS.get(kind)(int(image_size), int(in_channels), float(mean), float(std), bool(colour))

    @staticmethod
    def from_config(cfg: Any, colour: bool = False) -> Preprocessor:
        """From a ``RunConfig``: data.preprocessing, model.image_size, model.in_channels, data.mean, data.std."""
        return Preprocessor.build(cfg.data.preprocessing, cfg.model.image_size, cfg.model.in_channels,
                                  cfg.data.mean, cfg.data.std, colour)

    @staticmethod
    def from_dict(d: dict[str, Any], default_kind: str = "reclmis") -> Preprocessor:
        """From :meth:`to_dict` (a sidecar's or checkpoint's ``preprocessing``; extra keys are descriptions)."""
        try:
            return Preprocessor.build(str(d.get("kind", default_kind)), d["image_size"], d["in_channels"],
                                      d["mean"], d["std"], bool(d.get("colour", False)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"preprocessing section {d!r} is incomplete or invalid ({exc})") from None

    @staticmethod
    def from_checkpoint(cfg: Any, doc: dict[str, Any]) -> Preprocessor:
        """From a checkpoint's config and its ``config.json`` document (``meta.preprocessing``; checkpoints
        written before it was stored: the config and ``meta.colour``)."""
        meta = doc.get("meta") or {}
        stored = meta.get("preprocessing")
        if isinstance(stored, dict):
            return Preprocessor.from_dict(stored, default_kind=cfg.data.preprocessing)
        return Preprocessor.from_config(cfg, bool(meta.get("colour", False)))

    def to_dict(self) -> dict[str, Any]:
        """``kind`` and the numbers (what :meth:`from_dict` reads)."""
        return {"kind": self.kind, **asdict(self)}

    def describe(self) -> dict[str, Any]:
        """:meth:`to_dict` plus words on each step, for export sidecars (read by people and other runtimes)."""
        return {**self.to_dict(), **self.description}

    @property
    def keeps_colour(self) -> bool:
        """:meth:`to_model` returns (S, S, 3) (colour kept) rather than (S, S)."""
        return self.colour and self.in_channels == 3

    def check_config(self) -> None:
        """ConfigError (naming the config fields) when this kind cannot feed a model with these numbers."""

    def resized_source_note(self, n_resized: int, n: int) -> str | None:
        """A warning for data whose sources ``prepare --size`` resized (``n_resized`` of ``n``), or None when
        that is no concern for this kind."""
        return None

    # -- steps --------------------------------------------------------------------------------------

    def load(self, source: str | Path | np.ndarray, window: Any = None, allow_uneven_slices: bool = False,
             options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
        """A file (2-D image, DICOM file or series folder, NIfTI volume) or an 8-bit array (H, W[, 3]) ->
        (uint8 slices (n, H, W[, 3]), meta); a 2-D input is one slice. ``window`` for DICOM/NIfTI (see
        :func:`reclmis_core.data.intensity.to_uint8`); ``options`` the reader options (a DICOMDIR series' files,
        a series UID)."""
        if isinstance(source, np.ndarray):
            return self._array(source)
        from .readers import read_image

        arr, meta = read_image(source, allow_uneven_slices, options)
        img8 = to_uint8(arr, meta, window)
        if meta.is_volume and img8.ndim != 3:
            raise DataError(f"{source}: unsupported volume layout {img8.shape}")
        return (img8 if meta.is_volume else img8[None]), meta

    def _array(self, image: np.ndarray) -> tuple[np.ndarray, ImageMeta]:
        img = np.asarray(image)
        if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (3, 4)):
            raise DataError(f"expected an 8-bit (H, W) or (H, W, 3) image, got {img.dtype} {img.shape}")
        img = img[..., :3] if img.ndim == 3 else img
        meta = ImageMeta(path="<array>", kind="raster", shape=img.shape, original_shape=img.shape, dtype="uint8",
                         mode="gray" if img.ndim == 2 else "rgb")
        return img[None], meta

    def display(self, pixels: np.ndarray, meta: ImageMeta) -> np.ndarray:
        """The 8-bit display image of :meth:`load`'s slices, RGB order: (H, W[, 3]) or (Z, H, W) for volumes."""
        return pixels if meta.is_volume else pixels[0]

    def geometry(self, shape: tuple[int, int], meta: ImageMeta | None = None) -> Geometry:
        """What :meth:`to_model` does to a (H, W) slice of ``meta``'s input (its pixel spacing, if known)."""
        return plan_geometry(shape, None if meta is None else input_spacing(meta), self.image_size)

    def to_model(self, pixels: np.ndarray, geom: Geometry, nearest: bool = False) -> np.ndarray:
        """One uint8 slice (H, W[, 3]) -> uint8 (S, S, 3) when colour is kept, else (S, S) luminance;
        ``nearest``: a mask or label map (no channel work)."""
        out = to_model_pixels(pixels, geom, nearest)
        if nearest:
            return out
        if self.keeps_colour:
            return np.ascontiguousarray(np.repeat(out[..., None], 3, axis=2)) if out.ndim == 2 else out
        return luminance(out) if out.ndim == 3 else out

    def to_tensor(self, batch: np.ndarray) -> np.ndarray:
        """uint8 model pixels (B, S, S[, 3]) -> float32 (B, in_channels, S, S), normalised."""
        x = np.asarray(batch)
        x = x[:, None] if x.ndim == 3 else np.moveaxis(x, -1, 1)
        return normalise_batch(x, self.in_channels, self.mean, self.std, self.colour)

    def restore(self, values: np.ndarray, geom: Geometry) -> np.ndarray:
        """A float map on the model grid (any square size) -> float32 (H, W) on the input's pixel grid."""
        return restore_map(values, geom)

    # -- compatibility ------------------------------------------------------------------------------

    def normalise(self, pixels: np.ndarray) -> np.ndarray:
        """One model-pixel image (S, S[, C]) -> float32 (in_channels, S, S): :meth:`to_tensor` of one."""
        return self.to_tensor(np.asarray(pixels)[None])[0]


@dataclass(frozen=True)
class ReferencePreprocessor(Preprocessor):
    """The public RecLMIS code's input pipeline (``data.preprocessing=reference``): raster files through
    ``cv2.imread`` (3 channels, BGR order), ``cv2.resize`` to the model side, ``x / 255``."""

    kind: ClassVar[str] = "reference"
    description: ClassVar[dict[str, str]] = SIDECAR_DESCRIPTION

    @property
    def keeps_colour(self) -> bool:
        return True  # always 3 channels, B, G, R

    def check_config(self) -> None:
        if self.in_channels != 3 or self.mean != 0.0 or self.std != 1.0:
            raise ConfigError(
                "data.preprocessing=reference feeds 3-channel BGR images scaled by 1/255: it needs model.in_channels=3, "
                f"data.mean=0 and data.std=1 (got {self.in_channels}, {self.mean}, {self.std})"
            )

    def resized_source_note(self, n_resized: int, n: int) -> str | None:
        return (f"{n_resized} of {n} images were not {self.image_size} px in the source; prepare resized them "
                "(PIL), so their pixels are not exactly what the reference code reads from the originals")

    def load(self, source: str | Path | np.ndarray, window: Any = None, allow_uneven_slices: bool = False,
             options: ReadOptions | None = None) -> tuple[np.ndarray, ImageMeta]:
        """As :meth:`Preprocessor.load`, but a raster file is read with ``cv2.imread`` (BGR) and a 3-channel
        array is taken as BGR, as ``cv2.imread`` returns it."""
        if isinstance(source, np.ndarray):
            return self._array(source)
        pixels, meta = super().load(source, window, allow_uneven_slices, options)
        if meta.kind == "raster":
            pixels = read_reference_image(source)[None]
        return pixels, meta

    def display(self, pixels: np.ndarray, meta: ImageMeta) -> np.ndarray:
        image = super().display(pixels, meta)
        return bgr_to_rgb(image) if image.ndim == 3 and not meta.is_volume else image

    def to_model(self, pixels: np.ndarray, geom: Geometry, nearest: bool = False) -> np.ndarray:
        if nearest:
            return to_model_pixels(pixels, geom, nearest=True)
        return reference_pixels(to_native_pixels(pixels, geom), self.image_size)

    def to_tensor(self, batch: np.ndarray) -> np.ndarray:
        return reference_tensor(np.asarray(batch))


PREPROCESSORS.register("reclmis")(Preprocessor)
PREPROCESSORS.register("reference")(ReferencePreprocessor)

#: The former name of :class:`Preprocessor` (a record of the numbers; now the object that applies them).
PreprocessPlan = Preprocessor

__all__ = ["PREPROCESSORS", "Geometry", "PreprocessPlan", "Preprocessor", "ReferencePreprocessor"]
