""":class:`Result`: one input's prediction from :meth:`reclmis_core.Model.predict`, in the input's own frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data.meta import ImageMeta
from ..data.preprocess import Geometry
from ..errors import ConfigError
from ..inference.explain import Explanation, interest_map
from ..inference.predictor import Prediction
from ..inference.writers import _area_stats


@dataclass
class Result:
    """What the model found in one input, at the input's own size and orientation.

    Attributes:
        input: the file or folder read (``<array N>`` for an in-memory image).
        note: the note the model was given (``""`` for none).
        prob: float32 lesion probabilities, ``(H, W)`` for an image, ``(Z, H, W)`` for a volume, in the order
            the reader returns slices (the mask files restore the file's own axis order).
        threshold: the probability above which a pixel is lesion.
        geometry: what preprocessing did to one image/slice (how model pixels map back to the input's).
        meta: where the pixels came from: pixel spacing (mm), NIfTI affine, DICOM identifiers, ...
        image8: the 8-bit display image(s) the model saw, before resizing.
        explanations: per slice W_poi/W_woi when the model was loaded with ``explain=True`` (file inputs).
        files: what ``predict(..., out=DIR)`` wrote for this input, by kind (``mask``, ``seg``, ``overlay``, ...).
        entry: this input's entry of ``predictions.json`` (with ``out=``), else None.
        note_read: what the model read of the note when it reads only the zones a note names
            (``model.text.reader=zones``: ``"upper left and lower right lung"``); None when it reads notes as
            written.
    """

    input: str
    note: str
    prob: np.ndarray
    threshold: float
    geometry: Geometry
    meta: ImageMeta
    image8: np.ndarray
    explanations: list[Explanation] | None = None
    files: dict[str, str] = field(default_factory=dict)
    entry: dict[str, Any] | None = None
    note_read: str | None = None

    @classmethod
    def from_prediction(cls, pred: Prediction, threshold: float) -> Result:
        return cls(str(pred.spec.path), pred.note, pred.prob, threshold, pred.geometry, pred.meta, pred.image8,
                   pred.explanations, note_read=pred.note_read)

    @property
    def mask(self) -> np.ndarray:
        """uint8 0/1 lesion mask, the shape of :attr:`prob` (the same mask ``predict(..., out=DIR)`` writes)."""
        return (self.prob > self.threshold).astype(np.uint8)

    @property
    def is_volume(self) -> bool:
        return self.prob.ndim == 3

    @property
    def spacing(self) -> tuple[float, float] | None:
        """(row, column) pixel size in mm; None when the file does not say (PNG/JPEG, arrays)."""
        return self.meta.spacing

    def areas(self) -> dict[str, Any]:
        """Lesion area in pixels (and mm² when the spacing is known), lesion count (2-D) or volume (3-D): the
        numbers ``predictions.json`` holds."""
        return _area_stats(self.mask, self.meta)

    def w_poi(self, slice_index: int | None = None) -> np.ndarray:
        """W_poi, the patch-of-interest weights, on the input's pixel grid ``(H, W)`` (float32, summing to 1
        over the patch grid before upsampling). For a volume, ``slice_index`` picks the slice (default: the
        one with the largest lesion). Needs a model loaded with ``explain=True``."""
        if self.explanations is None:
            raise ConfigError("w_poi needs the interest weights: load the model with reclmis_core.load(path, "
                              "explain=True) (a checkpoint folder; ONNX exports do not carry them), and pass a "
                              "file, not an array")
        z = 0 if not self.is_volume else (self._view_slice() if slice_index is None else slice_index)
        if not 0 <= z < len(self.explanations):
            raise ConfigError(f"slice_index must lie in [0, {len(self.explanations) - 1}], got {slice_index}")
        return interest_map(self.explanations[z].w_poi, self.geometry)

    def word_weights(self, slice_index: int | None = None) -> list[dict[str, float | str]]:
        """W_woi: the weight of each token of the note (``[{"token", "weight"}, ...]``); needs ``explain=True``."""
        if self.explanations is None:
            raise ConfigError("word_weights needs a model loaded with reclmis_core.load(path, explain=True)")
        z = 0 if not self.is_volume else (self._view_slice() if slice_index is None else slice_index)
        return self.explanations[z].word_weights()

    def _view_slice(self) -> int:
        from ..inference.restore import view_slice

        return view_slice(self.mask)

    def __repr__(self) -> str:
        kind = "volume" if self.is_volume else "image"
        return (f"Result({self.input!r}, {kind} {tuple(self.prob.shape)}, threshold={self.threshold}, "
                f"lesion_px={int(self.mask.sum())})")
