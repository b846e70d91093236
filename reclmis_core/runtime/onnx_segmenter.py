"""Run an ONNX export with ONNX Runtime: ``OnnxSegmenter`` (used by ``reclmis predict --backend onnx``).

API::

    from reclmis_core.export.runtime import OnnxSegmenter   # (defined in reclmis_core.runtime.onnx_segmenter)

    seg = OnnxSegmenter("exports/qata_onnx")            # folder written by `reclmis export --format onnx`
    seg.uses_text, seg.image_size, seg.in_channels       # from the sidecar reclmis_export.json
    seg.mean, seg.std, seg.threshold, seg.max_length

    x = seg.preprocess(uint8_images)                     # (B,H,W) or (B,H,W,C) or (B,C,H,W) uint8 (or float
                                                         # 0..255 at image_size) -> (B,C,S,S) float32
    feats, mask = seg.encode_text(["Bilateral pulmonary infection, two infected areas."])
                                                         # (N,L,D) float32, (N,L) int64; encode a note once ...
    logits = seg.segment(x, feats, mask)                 # ... and reuse it: (B,1,S,S) float32 logits
    # feats/mask with N == 1 are broadcast to the B images; otherwise N must equal B.
    probs = seg.predict_proba(x, notes)                  # convenience: one note per image (or one for all),
                                                         # each distinct note encoded once; sigmoid probabilities

Image-only exports: ``uses_text`` is False, ``encode_text`` raises, ``segment(x)`` takes the image only.

The tokenizer is rebuilt from the sidecar with reclmis_core's own tokenizer classes (scratch BPE and WordPiece
vocabularies are embedded in the sidecar, CLIP's BPE comes from ``instant-clip-tokenizer``, Hugging Face
tokenizers are saved in ``tokenizer/`` next to the graphs), so tokenization is identical to training.
Preprocessing is the training one (:class:`reclmis_core.data.preprocessor.Preprocessor`, rebuilt from the
sidecar as ``seg.preprocessor``): ``preprocess`` resizes each image directly to ``image_size`` and applies its
channels and normalisation; for files with a pixel spacing (DICOM, NIfTI) and to restore the input geometry, use
the preprocessor's ``load`` / ``geometry`` / ``to_model`` / ``restore``, as reclmis_core.inference does.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import read_sidecar
from ..data.preprocessor import Preprocessor
from ..data.transforms import flip_note_laterality
from ..errors import CheckpointError
from ..models.text import ExportedTokenizer

log = logging.getLogger(__name__)


def _session(path: Path, providers: Sequence[str] | None, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
    available = ort.get_available_providers()
    chosen = [p for p in (providers or ["CPUExecutionProvider"])
              if (p[0] if isinstance(p, tuple) else p) in available] or ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=opts, providers=chosen)


class OnnxSegmenter:
    """ONNX Runtime inference for a reclmis ONNX export folder (see the module docstring for the API).

    Args:
        folder: export folder with ``segmentation.onnx`` (+ ``text_encoder.onnx``) and ``reclmis_export.json``.
        providers: ONNX Runtime execution providers in order of preference (default CPU); unavailable ones are
            skipped.
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
        segmentation_file: use another segmentation graph of the same signature (e.g. an int8 one made by bench).
    """

    def __init__(
        self,
        folder: str | Path,
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        segmentation_file: str | Path | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.sidecar = read_sidecar(self.folder)
        graphs = self.sidecar["graphs"]
        seg_path = Path(segmentation_file) if segmentation_file else self.folder / graphs["segmentation"]["file"]
        if not seg_path.is_file():
            raise CheckpointError(f"{self.folder}: {seg_path.name} is missing")
        self._seg = _session(seg_path, providers, threads)
        self.providers = self._seg.get_providers()
        text = self.sidecar.get("text")
        self.uses_text = text is not None
        self._text = None
        self.notes: ExportedTokenizer | None = None
        if self.uses_text:
            text_path = self.folder / graphs["text_encoder"]["file"]
            if not text_path.is_file():
                raise CheckpointError(f"{self.folder}: {text_path.name} is missing")
            self._text = _session(text_path, providers, threads)
            self.notes = ExportedTokenizer.from_sidecar(text, self.folder)
        self.tokenizer = None if self.notes is None else self.notes.tokenizer
        self.max_length = 0 if self.notes is None else self.notes.max_length
        self.preprocessor = Preprocessor.from_dict(self.sidecar["preprocessing"])
        self.image_size = self.preprocessor.image_size
        self.in_channels = self.preprocessor.in_channels
        self.mean = self.preprocessor.mean
        self.std = self.preprocessor.std
        self.threshold = float(self.sidecar["postprocessing"]["threshold"])
        self.mirror = bool(self.sidecar["postprocessing"].get("mirror", False))

    # -- preprocessing -------------------------------------------------------------------------------

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        """Images -> normalised float32 (B, C, S, S) through the export's preprocessor, each resized directly to
        ``image_size`` (no pixel spacing).

        Takes (H, W), (H, W, 3), (B, H, W), (B, H, W, C) or (B, C, H, W), uint8 (or float 0..255 already at
        ``image_size``). With reference preprocessing (sidecar ``preprocessing.kind``) a 3-channel image is BGR,
        as ``cv2.imread`` gives it.
        """
        pre = self.preprocessor
        x = np.asarray(images)
        if x.ndim == 2 or (x.ndim == 3 and x.shape[-1] == 3):  # one image
            x = x[None]
        if x.ndim == 4 and x.shape[1] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
            x = np.moveaxis(x, 1, -1)
        if x.ndim == 4:
            x = x[..., 0] if x.shape[-1] == 1 else x[..., :3]
        batch = np.stack([pre.to_model(a, pre.geometry(a.shape[:2])) for a in x])
        out = pre.to_tensor(batch)
        self._check_images(out)
        return out

    def _check_images(self, x: np.ndarray) -> None:
        want = (self.in_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise ValueError(f"expected images of shape (B, {want[0]}, {want[1]}, {want[2]}), got {tuple(x.shape)}")

    # -- text ----------------------------------------------------------------------------------------

    def tokenize(self, notes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Notes -> (input_ids, attention_mask), int64 (N, L), padded to the longest note."""
        if self.notes is None:
            raise ValueError("this export is image-only; it takes no notes")
        batch = self.notes(notes)
        return batch.input_ids.numpy().astype(np.int64), batch.attention_mask.numpy().astype(np.int64)

    def encode_ids(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Token ids + mask (N, L) -> text_features float32 (N, L, D) (the text graph alone)."""
        if self._text is None:
            raise ValueError("this export is image-only; it has no text graph")
        feed = {"input_ids": np.ascontiguousarray(input_ids, dtype=np.int64),
                "attention_mask": np.ascontiguousarray(attention_mask, dtype=np.int64)}
        (feats,) = self._text.run(["text_features"], feed)
        return feats

    def encode_text(self, notes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Notes -> (text_features float32 (N, L, D), text_mask int64 (N, L))."""
        ids, mask = self.tokenize(notes)
        return self.encode_ids(ids, mask), mask

    # -- segmentation --------------------------------------------------------------------------------

    def segment(
        self, images: np.ndarray, features: np.ndarray | None = None, mask: np.ndarray | None = None
    ) -> np.ndarray:
        """Preprocessed images (B, C, S, S) float32 (+ text features/mask) -> logits (B, 1, S, S) float32."""
        x = np.ascontiguousarray(images, dtype=np.float32)
        self._check_images(x)
        if not self.uses_text:
            (logits,) = self._seg.run(["logits"], {"image": x})
            return logits
        if features is None or mask is None:
            raise ValueError("this export is text-guided: pass the features and mask from encode_text()")
        b = x.shape[0]
        if features.shape[0] == 1 and b > 1:
            features = np.repeat(features, b, axis=0)
            mask = np.repeat(mask, b, axis=0)
        if features.shape[0] != b:
            raise ValueError(f"{features.shape[0]} note encodings for {b} images; pass 1 or {b}")
        feed = {"image": x, "text_features": np.ascontiguousarray(features, dtype=np.float32),
                "text_mask": np.ascontiguousarray(mask, dtype=np.int64)}
        (logits,) = self._seg.run(["logits"], feed)
        return logits

    def predict_proba(self, images: np.ndarray, notes: Sequence[str] | str | None = None) -> np.ndarray:
        """Preprocessed images + one note per image (or one note for all) -> probabilities (B, 1, S, S).

        Each distinct note is encoded once; images sharing a note are segmented with the same features. With the
        sidecar's ``postprocessing.mirror`` (:attr:`mirror`), each probability is the mean of the image's and of its
        left-right mirror's, segmented with the note's sides swapped, as ``reclmis predict`` does.
        """
        x = np.ascontiguousarray(images, dtype=np.float32)
        if not self.uses_text:
            probs = _sigmoid(self.segment(x))
            return (probs + _sigmoid(self.segment(_mirrored(x)))[..., ::-1]) / 2 if self.mirror else probs
        if notes is None:
            raise ValueError("this export is text-guided: pass a note")
        notes = [notes] * x.shape[0] if isinstance(notes, str) else list(notes)
        if len(notes) == 1:
            notes = notes * x.shape[0]
        if len(notes) != x.shape[0]:
            raise ValueError(f"{len(notes)} notes for {x.shape[0]} images")
        unique = list(dict.fromkeys(notes))
        out = np.empty((x.shape[0], 1, *x.shape[2:]), dtype=np.float32)
        for note in unique:
            idx = [i for i, n in enumerate(notes) if n == note]
            feats, mask = self.encode_text([note])
            out[idx] = _sigmoid(self.segment(x[idx], feats, mask))
            if self.mirror:
                feats, mask = self.encode_text([flip_note_laterality(note)])
                out[idx] = (out[idx] + _sigmoid(self.segment(_mirrored(x[idx]), feats, mask))[..., ::-1]) / 2
        return out


def _mirrored(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[..., ::-1])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


__all__ = ["OnnxSegmenter"]
