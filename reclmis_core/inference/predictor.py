"""Language-guided prediction on a user's own files: PNG/JPEG/TIFF, DICOM files and series, NIfTI volumes.

:class:`Predictor` loads a checkpoint once and turns ``(input, note)`` pairs into probability maps at each
input's own geometry. It batches 2-D images and volume slices together, encodes each distinct note once (the
note cache: clinical notes repeat), reports progress through a callback and never prints.
:func:`run_predict` adds the files: masks/overlays/probabilities/explanations in the input's geometry and
``predictions.json``; a bad input writes nothing and is reported, the good ones are kept.

Example:
    >>> pred = Predictor.from_checkpoint("runs/qata/best")
    >>> specs, bad = collect_inputs(["scans/"])
    >>> for r in pred.predict([(s, "bilateral lower lung infection") for s in specs]):
    ...     print(r.spec.stem, r.foreground_fraction(0.5) if isinstance(r, Prediction) else r.error)
"""

from __future__ import annotations

import dataclasses
import glob
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..choices import BACKENDS, FORMATS  # noqa: F401  (defined there: the CLI help lists them without torch)
from ..data.intensity import parse_window, to_uint8
from ..data.meta import ImageMeta
from ..data.readers import detect_kind, read_image
from ..data.readers.dicom import DICOM_EXTS, is_dicom
from ..data.readers.nifti import NIFTI_EXTS
from ..data.readers.raster import RASTER_EXTS
from ..data.reference import bgr_to_rgb, read_reference_image, reference_pixels, reference_tensor
from ..device import onnx_providers, resolve_device
from ..errors import ConfigError, DataError, ReclmisError
from ..metrics.components import count_components
from ..utils import atomic_write_text
from .explain import Explanation, render_explanation
from ..data.preprocess import Geometry, PreprocessPlan, input_spacing, restore_map
from .restore import (
    OutputSet,
    overlay_image,
    prob_to_uint8,
    volume_prob_in_stored_order,
    write_npy,
    write_png,
    write_png_mask,
    write_volume_mask,
)

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]  # (inputs done, inputs total, stem of the input just finished)


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------


@dataclass
class InputSpec:
    """One thing to predict: a 2-D image, a DICOM file, a DICOM series folder or a NIfTI volume."""

    path: Path  # (Path) file or series folder
    kind: str  # (str) raster | dicom | dicom-series | nifti
    given: str  # (str) the argument it came from (for messages)
    stem: str = ""  # (str) unique output name stem in this run


@dataclass
class Failure:
    """An input that produced nothing, and why (one line)."""

    input: str
    error: str
    stem: str | None = None


def _stem_of(path: Path) -> str:
    name = path.name
    low = name.lower()
    for ext in (".nii.gz", *NIFTI_EXTS, *RASTER_EXTS, *DICOM_EXTS):
        if low.endswith(ext):
            return name[: -len(ext)] or name
    return path.stem or name


def _dicom_folder_kind(folder: Path) -> tuple[str, list[Path]]:
    """``series`` if the DICOM files of ``folder`` form one positioned series, else ``files`` (e.g. CR/DX)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = [p for p in sorted(folder.iterdir()) if p.is_file() and is_dicom(p)]
    if len(files) < 2:
        return "files", files
    uids, positioned, readable = set(), True, 0
    for f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True, force=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, TypeError):
            continue  # a broken file does not decide; it is reported when it is read
        readable += 1
        uids.add(str(ds.get("SeriesInstanceUID", "")))
        positioned &= "ImagePositionPatient" in ds and int(ds.get("NumberOfFrames", 1) or 1) == 1
    return ("series" if readable >= 2 and len(uids) == 1 and positioned else "files"), files


def _expand_folder(folder: Path, given: str) -> list[InputSpec]:
    entries = sorted(folder.iterdir())
    dicoms = [p for p in entries if p.is_file() and is_dicom(p)]
    others = [p for p in entries if p.is_file() and p not in dicoms]
    specs: list[InputSpec] = []
    if dicoms:
        how, files = _dicom_folder_kind(folder)
        if how == "series" and not any(p.suffix.lower() in RASTER_EXTS or _is_nifti(p) for p in others):
            return [InputSpec(folder, "dicom-series", given)]
        specs += [InputSpec(p, "dicom", given) for p in files]
    for p in others:
        if p.name.startswith("."):
            continue
        if p.suffix.lower() in RASTER_EXTS:
            specs.append(InputSpec(p, "raster", given))
        elif _is_nifti(p):
            specs.append(InputSpec(p, "nifti", given))
        else:
            log.debug("skipping %s (not an image type reclmis reads)", p)
    for sub in (p for p in entries if p.is_dir() and not p.name.startswith(".")):
        if any(is_dicom(p) for p in sorted(sub.iterdir())[:50] if p.is_file()):
            specs += _expand_folder(sub, given)
    return sorted(specs, key=lambda s: str(s.path))


def _is_nifti(path: Path) -> bool:
    low = path.name.lower()
    return low.endswith(".nii") or low.endswith(".nii.gz")


def collect_inputs(args: Sequence[str | Path]) -> tuple[list[InputSpec], list[Failure]]:
    """Expand files, folders and glob patterns into input specs with unique stems.

    Folders: images/volumes/DICOM files at the top level (sorted), DICOM series in sub-folders; a folder whose
    DICOM files form one positioned series is one input. A missing path or an empty glob is a failure, as is a
    file of an unknown type named explicitly; unknown files inside folders are skipped.
    """
    specs: list[InputSpec] = []
    failures: list[Failure] = []
    for arg in args:
        text = str(arg)
        paths = [Path(text)]
        if not Path(text).exists() and any(c in text for c in "*?["):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                failures.append(Failure(text, f"{text}: no files match this pattern"))
                continue
            paths = [Path(m) for m in matches]
        for path in paths:
            if path.is_dir():
                found = _expand_folder(path, text)
                if not found:
                    failures.append(Failure(str(path), f"{path}: folder holds no PNG/JPEG/TIFF, DICOM or NIfTI files"))
                specs += found
                continue
            try:
                kind = detect_kind(path)
            except DataError as exc:
                failures.append(Failure(str(path), str(exc)))
                continue
            specs.append(InputSpec(path, kind, text))
    seen: set[Path] = set()
    unique = []
    for s in specs:
        key = s.path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(s)
    assign_stems(unique)
    return unique, failures


def assign_stems(specs: list[InputSpec]) -> None:
    """Give every spec a unique stem: the file's stem; collisions get their parent folders prefixed
    (``a/scan.png`` -> ``a_scan``), then ``_2``, ``_3``... in input order. Deterministic for a given input list."""
    base = [_stem_of(s.path) for s in specs]
    names = list(base)
    for depth in (1, 2, 3):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        if all(c == 1 for c in counts.values()):
            break
        for i, s in enumerate(specs):
            if counts[names[i]] > 1:
                parents = [p.name for p in s.path.resolve().parents][:depth][::-1]
                names[i] = "_".join([*(p for p in parents if p), base[i]])
    used: dict[str, int] = {}
    for i, s in enumerate(specs):
        name = names[i]
        if name in used:
            used[name] += 1
            while f"{name}_{used[name]}" in used:
                used[name] += 1
            name = f"{name}_{used[name]}"
        used.setdefault(name, 1)
        s.stem = name


class NoteTable:
    """Notes per input from a CSV/XLSX with an image column (``image``/``input``/``Image``/``path``) and a note
    column (``note``/``Description``/``text``). Rows match an input by path (relative to the CSV's folder or
    absolute), then by file name, then by stem."""

    IMAGE_COLUMNS = ("image", "input", "path", "file", "Image")
    NOTE_COLUMNS = ("note", "notes", "Description", "description", "text")

    def __init__(self, path: str | Path) -> None:
        import pandas as pd

        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"notes file not found: {self.path}")
        try:
            if self.path.suffix.lower() in (".xlsx", ".xls"):
                df = pd.read_excel(self.path, dtype=str)
            else:
                df = pd.read_csv(self.path, dtype=str, keep_default_na=False, skipinitialspace=True)
        except UnicodeDecodeError as exc:
            from ..data.tables import not_utf8

            raise DataError(f"{self.path}: {not_utf8(exc)}") from None
        except (ValueError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
            raise DataError(f"{self.path}: cannot read the notes table ({exc})") from None
        cols = [str(c).strip() for c in df.columns]
        df.columns = cols
        img_col = next((c for c in self.IMAGE_COLUMNS if c in cols), None)
        note_col = next((c for c in self.NOTE_COLUMNS if c in cols), None)
        if img_col is None or note_col is None:
            raise DataError(
                f"{self.path}: needs columns 'image' and 'note' (found: {', '.join(cols) or 'none'})"
            )
        self.by_path: dict[Path, str] = {}
        by_name: dict[str, list[str]] = {}
        by_stem: dict[str, list[str]] = {}
        for key, note in zip(df[img_col].fillna(""), df[note_col].fillna("")):
            key = str(key).strip()
            if not key:
                continue
            note = str(note).strip()
            p = Path(key)
            full = p if p.is_absolute() else self.path.parent / p
            self.by_path[full.resolve()] = note
            self.by_path.setdefault(Path(key).resolve(), note)  # relative to the working directory too
            by_name.setdefault(p.name.rstrip("/"), []).append(note)
            by_stem.setdefault(_stem_of(p), []).append(note)
        self.by_name = {k: v[0] for k, v in by_name.items() if len(v) == 1}
        self.by_stem = {k: v[0] for k, v in by_stem.items() if len(v) == 1}

    def get(self, spec: InputSpec) -> str | None:
        hit = self.by_path.get(spec.path.resolve())
        if hit is None:
            hit = self.by_name.get(spec.path.name)
        if hit is None:
            hit = self.by_stem.get(_stem_of(spec.path))
        return hit


# --------------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------------


@dataclass
class Prediction:
    """One input's result at its own geometry."""

    spec: InputSpec
    note: str
    meta: ImageMeta
    image8: np.ndarray  # 8-bit display image(s): (H, W[, 3]) or (Z, H, W)
    prob: np.ndarray  # float32 probabilities: (H, W) or (Z, H, W) display slices
    geometry: Geometry  # of one 2-D image / slice
    explanations: list[Explanation] | None = None  # per slice with --explain
    seconds: float = 0.0  # wall time spent on this input (read, preprocess, its share of the model, restore)

    @property
    def is_volume(self) -> bool:
        return self.prob.ndim == 3

    def mask(self, threshold: float) -> np.ndarray:
        return (self.prob > threshold).astype(np.uint8)

    def foreground_fraction(self, threshold: float) -> float:
        return float(self.mask(threshold).mean())


@dataclass
class PredictStats:
    images: int = 0  # 2-D images and slices through the model
    text_encodes: int = 0  # notes through the text encoder
    cache_hits: int = 0  # notes served from the cache
    model_seconds: float = 0.0


@dataclass
class _Pending:
    spec: InputSpec
    note: str
    meta: ImageMeta
    image8: np.ndarray
    geometry: Geometry
    n: int
    probs: list[np.ndarray | None] = field(default_factory=list)
    exps: list[Explanation | None] = field(default_factory=list)
    done: int = 0
    started: float = 0.0


# --------------------------------------------------------------------------------------------------
# Backends: torch (checkpoint) and ONNX Runtime (exported graphs)
# --------------------------------------------------------------------------------------------------


class _TorchBackend:
    def __init__(self, model: Any, cfg: Any, device: torch.device, explain: bool,
                 plan: PreprocessPlan | None = None) -> None:
        self.model = model.to(device).eval()
        self.plan = plan or PreprocessPlan.from_config(cfg)
        self.threshold = float(cfg.infer.threshold)
        self.infer = model.for_inference()
        self.device = device
        self.explain = explain
        self.uses_text = model.seg.uses_text
        self.note_optional = self.uses_text and cfg.train.note_dropout > 0  # trained to work without a note too
        self.model_cfg = cfg.model  # sizes the thread default (reclmis_core.device.apply_threads)
        self.preprocessing = cfg.data.preprocessing  # reclmis | reference (the public code's, see data/reference.py)
        self.max_length = model.max_length
        self.tokenizer = model.tokenizer
        if explain and (not self.uses_text or getattr(model, "interest", None) is None):
            raise ConfigError(
                "--explain needs a text-guided checkpoint trained with its interest-weight module (CVR, CLR or "
                "CCL on); this checkpoint has none, so there are no W_poi/W_woi to show"
            )

    @torch.inference_mode()
    def encode(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        tok = self.infer.tokenize(notes)
        ids, mask = tok.input_ids.to(self.device), tok.attention_mask.to(self.device)
        return self.infer.encode_text(ids, mask).float(), mask

    @torch.inference_mode()
    def segment(self, x: torch.Tensor, feats: torch.Tensor | None, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        x = x.to(self.device)
        if not self.explain:
            return self.infer.seg(x, feats, mask), None, None
        f = self.model.seg.forward_features(x, feats, mask)
        logits = self.model.seg.forward_head(f)
        w_poi, w_woi = self.model.interest_weights(f)
        return logits, w_poi, w_woi


class _OnnxBackend:
    """``reclmis_core.export.runtime.OnnxSegmenter``: text graph once per note, segmentation graph per batch."""

    def __init__(self, folder: Path, device: str = "cpu", threads: int | None = None) -> None:
        try:
            from ..export.runtime import OnnxSegmenter
        except ImportError as exc:
            raise ConfigError(
                f"--backend onnx is not available in this installation ({exc}); install the export extra: "
                "pip install 'reclmis[export]'"
            ) from None
        providers = onnx_providers(device)
        self.seg = OnnxSegmenter(folder, providers=providers, threads=threads)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted not in self.seg.providers:  # ONNX Runtime falls back to the CPU when CUDA fails to load
            raise ConfigError(f"--device {device}: ONNX Runtime could not start {wanted} (running on "
                              f"{', '.join(self.seg.providers)}); check the CUDA/cuDNN libraries or use --device cpu")
        self.device = torch.device("cpu")
        self.plan = self.seg.plan
        self.threshold = float(self.seg.threshold)
        self.uses_text = bool(self.seg.uses_text)
        self.note_optional = bool(self.seg.sidecar.get("note_optional", False))
        self.preprocessing = self.seg.preprocessing
        self.model_cfg = None  # an export carries no model config (the thread default then uses its own rule)
        self.tokenizer = self.seg.tokenizer
        self.max_length = int(self.seg.max_length)
        self.explain = False

    def encode(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        feats, mask = self.seg.encode_text(notes)
        return torch.from_numpy(np.asarray(feats, dtype=np.float32)), torch.from_numpy(np.asarray(mask))

    def segment(self, x: torch.Tensor, feats: torch.Tensor | None, mask: torch.Tensor | None
                ) -> tuple[torch.Tensor, None, None]:
        if feats is None or mask is None:
            logits = self.seg.segment(x.numpy())
        else:
            logits = self.seg.segment(x.numpy(), feats.numpy(), mask.numpy())
        return torch.from_numpy(np.asarray(logits, dtype=np.float32)), None, None


# --------------------------------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------------------------------


class Predictor:
    """Batched, note-cached inference at each input's own geometry.

    Args:
        backend: a loaded backend (use :meth:`from_checkpoint` or :meth:`from_onnx`).
        batch_size: 2-D images / slices per forward pass.
        note_cache: encode each distinct note once (keyed by its text); off re-encodes per batch.
        window: intensity window for DICOM/NIfTI (preset name, ``"C,W"`` or a pair); None = the file's own
            window, the lung window for CT, else min..max.
        allow_uneven_slices: accept a DICOM series with a missing slice or uneven spacing (a warning and an
            approximate affine) instead of failing that input.
    """

    def __init__(self, backend: Any, batch_size: int = 8, note_cache: bool = True, window: Any = None,
                 source: str = "", allow_uneven_slices: bool = False) -> None:
        if batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
        self.backend = backend
        self.batch_size = int(batch_size)
        self.note_cache = note_cache
        self.window = window
        self.allow_uneven_slices = allow_uneven_slices
        parse_window(window)  # validate early: a bad --window is a usage error, not a per-input one
        self.source = source
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stats = PredictStats()

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", explain: bool = False, **kwargs: Any
                        ) -> Predictor:
        """Load a checkpoint folder (``model.safetensors`` + ``config.json``)."""
        from ..engine.checkpoint import load_checkpoint

        model, cfg, doc = load_checkpoint(path)
        backend = _TorchBackend(model, cfg, resolve_device(device), explain, PreprocessPlan.from_checkpoint(cfg, doc))
        kwargs.setdefault("batch_size", cfg.infer.batch_size)
        return cls(backend, source=str(path), **kwargs)

    @classmethod
    def from_model(cls, model: Any, cfg: Any, device: str = "cpu", explain: bool = False, colour: bool = False,
                   **kwargs: Any) -> Predictor:
        """Wrap an in-memory ``RecLMIS`` (e.g. right after training, in a notebook)."""
        plan = PreprocessPlan.from_config(cfg, colour)
        return cls(_TorchBackend(model, cfg, resolve_device(device), explain, plan), **kwargs)

    @classmethod
    def from_onnx(cls, folder: str | Path, device: str = "cpu", threads: int | None = None, **kwargs: Any
                  ) -> Predictor:
        """Use exported ONNX graphs (``reclmis export --format onnx``) through ONNX Runtime on ``device``."""
        return cls(_OnnxBackend(Path(folder), device, threads), source=str(folder), **kwargs)

    # -- properties ---------------------------------------------------------------------------------

    @property
    def uses_text(self) -> bool:
        return self.backend.uses_text

    @property
    def note_optional(self) -> bool:
        """True when the model was trained to segment without a note as well (``train.note_dropout``)."""
        return self.backend.note_optional

    @property
    def plan(self) -> PreprocessPlan:
        """The checkpoint's (or export's) preprocessing."""
        return self.backend.plan

    @property
    def image_size(self) -> int:
        return self.plan.image_size

    @property
    def threshold(self) -> float:
        """The checkpoint's ``infer.threshold`` (the export sidecar's for ONNX): the default for masks."""
        return self.backend.threshold

    @property
    def explain(self) -> bool:
        return self.backend.explain

    # -- text ---------------------------------------------------------------------------------------

    def _check_vocabulary(self, notes: Sequence[str]) -> None:
        """Warn (once per note) when most of a note's tokens are unknown to the tokenizer: the model then sees
        next to nothing of it (e.g. a Chinese note for a tokenizer learned from English notes)."""
        tok = getattr(self.backend, "tokenizer", None)
        if tok is None:
            return
        warned = self.__dict__.setdefault("_vocab_checked", set())
        for note in dict.fromkeys(notes):
            if note in warned:
                continue
            warned.add(note)
            n_unk, n = unknown_tokens(tok, note, self.backend.max_length)
            if n and n_unk / n > UNKNOWN_SHARE_WARN:
                short = note if len(note) <= 40 else note[:37] + "..."
                log.warning("note %r: %d of %d tokens (%.0f%%) are unknown to this checkpoint's tokenizer; the model "
                            "sees next to nothing of it. Write notes in the language and wording of its training "
                            "notes", short, n_unk, n, 100 * n_unk / n)

    def _text_for(self, notes: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.uses_text:
            return None, None
        self._check_vocabulary(notes)
        if not self.note_cache:
            self.stats.text_encodes += len(notes)
            return self.backend.encode(notes)
        missing = [n for n in dict.fromkeys(notes) if n not in self._cache]
        self.stats.cache_hits += len(notes) - len(missing)
        for note in missing:
            # Keep the row as encoded: a note alone has no pads, except with model.text.pad_to_max, where its
            # pad slots carry features that the reference's padding treatment (text_padding=raw) uses.
            feats, mask = self.backend.encode([note])
            self._cache[note] = (feats[0].clone(), mask[0].clone())
            self.stats.text_encodes += 1
        rows = [self._cache[n] for n in notes]
        length = max(r[0].shape[0] for r in rows)
        dim = rows[0][0].shape[1]
        feats = torch.zeros((len(rows), length, dim), dtype=rows[0][0].dtype, device=rows[0][0].device)
        mask = torch.zeros((len(rows), length), dtype=rows[0][1].dtype, device=rows[0][1].device)
        for i, (f, m) in enumerate(rows):
            feats[i, : f.shape[0]] = f
            mask[i, : m.shape[0]] = m
        return feats, mask

    def _tokens(self, note: str, n_valid: int) -> list[str]:
        tok = getattr(self.backend, "tokenizer", None)
        strings: list[str] = []
        if tok is not None:
            try:
                strings = list(tok.token_strings(note, self.backend.max_length))
            except NotImplementedError:
                strings = []
        if len(strings) != n_valid:
            strings = [f"tok{i}" for i in range(n_valid)]
        return strings

    # -- images -------------------------------------------------------------------------------------

    def _load(self, spec: InputSpec) -> tuple[ImageMeta, np.ndarray, Geometry, np.ndarray]:
        """Read + 8-bit + model pixels: (meta, image8, geometry, uint8 model pixels (n, S, S[, 3]))."""
        if spec.kind == "dicom-series":
            from ..data.readers.dicom import read_dicom_series

            arr, meta = read_dicom_series(spec.path, self.allow_uneven_slices)
        else:
            arr, meta = read_image(spec.path)
        img8 = to_uint8(arr, meta, self.window)
        slices = img8 if meta.is_volume else img8[None]
        if meta.is_volume and img8.ndim != 3:
            raise DataError(f"{spec.path}: unsupported volume layout {img8.shape}")
        geom = self.plan.geometry(slices.shape[1:3], input_spacing(meta))
        if self.backend.preprocessing == "reference":
            # The reference reads files with cv2.imread (BGR) and resizes with cv2.resize; volumes and DICOM,
            # which it cannot read, go in as their 8-bit display slices. Padding/resampling for anisotropic
            # spacing (geom) is not part of the reference, so only square-pixel inputs are reference-exact.
            if meta.kind == "raster":
                bgr = read_reference_image(spec.path)
                slices, img8 = bgr[None], bgr_to_rgb(bgr)
            pixels = np.stack([reference_pixels(s, self.plan.image_size) for s in slices])
            return meta, img8, geom, pixels
        pixels = np.stack([self.plan.model_pixels(s, geom) for s in slices])
        return meta, img8, geom, pixels

    def _batch_tensor(self, pixels: list[np.ndarray]) -> torch.Tensor:
        if self.backend.preprocessing == "reference":
            return torch.from_numpy(reference_tensor(np.stack(pixels)))
        return torch.from_numpy(np.stack([self.plan.normalise(p) for p in pixels]))

    def predict_arrays(self, images: Sequence[np.ndarray], notes: Sequence[str]) -> list[np.ndarray]:
        """Probabilities for in-memory 8-bit images (each (H, W) or (H, W, 3)) at their own size; no spacing.
        With ``data.preprocessing=reference`` a 3-channel array is taken as BGR, as ``cv2.imread`` returns it."""
        out = []
        for img, note in zip(images, notes):
            geom = self.plan.geometry(img.shape[:2], None)
            img = np.asarray(img, dtype=np.uint8)
            pixels = (reference_pixels(img, self.plan.image_size) if self.backend.preprocessing == "reference"
                      else self.plan.model_pixels(img, geom))
            probs, _, _ = self._run([pixels], [note])
            out.append(restore_map(probs[0], geom))
        return out

    def _run(self, pixels: list[np.ndarray], notes: list[str]
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        t0 = time.perf_counter()
        x = self._batch_tensor(pixels)
        feats, mask = self._text_for(notes)
        logits, w_poi, w_woi = self.backend.segment(x, feats, mask)
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        self.stats.images += len(pixels)
        self.stats.model_seconds += time.perf_counter() - t0
        poi = None if w_poi is None else w_poi.float().cpu().numpy()
        woi = None if w_woi is None else w_woi.float().cpu().numpy()
        valid = None if mask is None else mask.cpu().numpy()
        if woi is not None and valid is not None:
            woi = [row[: int(v.sum())] for row, v in zip(woi, valid)]
        return probs, poi, woi

    def predict(self, jobs: Iterable[tuple[InputSpec, str]], progress: ProgressFn | None = None,
                total: int | None = None) -> Iterator[Prediction | Failure]:
        """Predict ``(input, note)`` pairs; yields a :class:`Prediction` or a :class:`Failure` per input.

        Images and slices from consecutive inputs share batches. A text-guided model needs a non-empty note
        for each input (a Failure otherwise) unless it was trained with ``train.note_dropout`` (then no note
        gives the image-only answer, every lesion); an image-only model ignores notes.
        """
        jobs = list(jobs)
        total = len(jobs) if total is None else total
        pending: dict[int, _Pending] = {}
        queue: list[tuple[int, int, np.ndarray, str]] = []
        done_count = 0

        def finish(idx: int) -> Prediction:
            p = pending.pop(idx)
            prob = np.stack([restore_map(s, p.geometry) for s in p.probs])
            if not p.meta.is_volume:
                prob = prob[0]
            return Prediction(p.spec, p.note, p.meta, p.image8, prob, p.geometry,
                              p.exps if self.explain else None, time.perf_counter() - p.started)

        def flush(limit: int) -> Iterator[Prediction]:
            nonlocal queue
            while len(queue) >= limit and queue:
                batch, queue = queue[: self.batch_size], queue[self.batch_size :]
                probs, poi, woi = self._run([b[2] for b in batch], [b[3] for b in batch])
                for k, (idx, z, _, note) in enumerate(batch):
                    p = pending[idx]
                    p.probs[z] = probs[k]
                    if poi is not None and woi is not None:
                        g = int(round(math.sqrt(poi.shape[1])))
                        p.exps[z] = Explanation(poi[k].reshape(g, g), self._tokens(note, len(woi[k])), woi[k])
                    p.done += 1
                finished = sorted(i for i, p in pending.items() if p.done == p.n)
                for i in finished:
                    yield finish(i)

        for idx, (spec, note) in enumerate(jobs):
            note = (note or "").strip()
            t0 = time.perf_counter()
            if self.uses_text and not note and not self.note_optional:
                done_count += 1
                if progress:
                    progress(done_count, total, spec.stem)
                yield Failure(str(spec.path), f"{spec.path}: no note for this input; the checkpoint is "
                              "text-guided, give --note TEXT or a --notes CSV row (image,note) for it", spec.stem)
                continue
            try:
                meta, img8, geom, pixels = self._load(spec)
            except ReclmisError as exc:
                done_count += 1
                if progress:
                    progress(done_count, total, spec.stem)
                yield Failure(str(spec.path), str(exc), spec.stem)
                continue
            n = len(pixels)
            pending[idx] = _Pending(spec, note, meta, img8, geom, n, [None] * n, [None] * n, 0, t0)
            queue += [(idx, z, pixels[z], note) for z in range(n)]
            for pred in flush(self.batch_size):
                done_count += 1
                if progress:
                    progress(done_count, total, pred.spec.stem)
                yield pred
        for pred in flush(1):
            done_count += 1
            if progress:
                progress(done_count, total, pred.spec.stem)
            yield pred


# --------------------------------------------------------------------------------------------------
# Files: outputs in the input's geometry + predictions.json
# --------------------------------------------------------------------------------------------------


@dataclass
class PredictOptions:
    threshold: float | None = None  # (float) probability above which a pixel is foreground; None = checkpoint's
    format: str = "auto"  # (str) auto | png | nifti | dicom-seg
    overlay: bool = False  # (bool) write <stem>_overlay.png
    save_prob: bool = False  # (bool) write <stem>_prob.png (2-D) / <stem>_prob.npy (volumes)
    seg_description: str | None = None  # (str) DICOM SEG SeriesDescription; None = fixed text (never the note)


@dataclass
class PredictReport:
    out_dir: Path
    entries: list[dict[str, Any]]
    failures: list[Failure]
    seconds: float
    stats: PredictStats
    json_path: Path

    @property
    def n_ok(self) -> int:
        return len(self.entries)

    @property
    def images_per_s(self) -> float:
        return self.stats.images / self.seconds if self.seconds > 0 else 0.0


UNKNOWN_TOKEN_STRINGS = ("[UNK]", "<unk>", "<|unk|>")
UNKNOWN_SHARE_WARN = 0.5  # warn when more than this share of a note's tokens are unknown


def unknown_tokens(tokenizer: Any, note: str, max_length: int) -> tuple[int, int]:
    """(unknown tokens, tokens) of one note, special tokens excluded; (0, 0) if the tokenizer cannot tell."""
    try:
        strings = list(tokenizer.token_strings(note, max_length))
    except NotImplementedError:
        return 0, 0
    body = strings[1:-1] if len(strings) >= 2 else strings  # BOS/CLS ... EOS/SEP
    return sum(s in UNKNOWN_TOKEN_STRINGS for s in body), len(body)


def format_error(fmt: str, path: str | Path, kind: str, is_volume: bool | None = None) -> str | None:
    """Why ``fmt`` cannot hold the mask of an input of this ``kind`` (None if it can). ``is_volume=None``: the
    input is not read yet (only what its kind decides is checked)."""
    if fmt == "png" and is_volume:
        return f"{path}: is a volume; a PNG mask holds one 2-D image (use --format nifti or auto)"
    if fmt == "nifti" and kind not in ("nifti", "dicom-series"):
        return (f"{path}: --format nifti needs a NIfTI or DICOM-series input, got a {kind} image "
                "(use --format png or auto)")
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
    """The mask format for one input; DataError if ``fmt`` cannot hold it."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{fmt}'")
    if fmt == "auto":
        if meta.kind == "dicom" and meta.is_volume:
            return "dicom-seg"  # multi-frame file: the SEG keeps its frames together
        return "nifti" if meta.is_volume else "png"
    error = format_error(fmt, meta.path, meta.kind, meta.is_volume)
    if error is not None:
        raise DataError(error)
    return fmt


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
        "note": pred.note,
        "threshold": opts.threshold,
        "format": fmt,
    }
    entry.update(_area_stats(mask, meta))
    # the slice shown in 2-D views of a volume: the one with the largest lesion (middle one if none)
    if pred.is_volume:
        areas = mask.reshape(mask.shape[0], -1).sum(axis=1)
        z = int(np.argmax(areas)) if areas.max() > 0 else mask.shape[0] // 2
        img2d, mask2d = pred.image8[z], mask[z]
        entry["view_slice"] = z
    else:
        z, img2d, mask2d = 0, pred.image8, mask
    try:
        if fmt == "png":
            write_png_mask(outs.path("mask", "_mask.png"), mask, meta)
        elif fmt == "nifti":
            write_volume_mask(outs.path("mask", "_mask.nii.gz"), mask, meta)
        else:
            from .dicom_seg import write_dicom_seg

            write_dicom_seg(outs.path("seg", "_seg.dcm"), mask, meta, opts.seg_description)
        if opts.overlay:
            write_png(outs.path("overlay", "_overlay.png"), overlay_image(img2d, mask2d))
        if opts.save_prob:
            if pred.is_volume:
                write_npy(outs.path("prob", "_prob.npy"), volume_prob_in_stored_order(pred.prob, meta))
            else:
                write_png(outs.path("prob", "_prob.png"), prob_to_uint8(pred.prob))
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


def run_predict(
    predictor: Predictor,
    specs: Sequence[InputSpec],
    notes: Callable[[InputSpec], str | None],
    out_dir: str | Path,
    opts: PredictOptions,
    failures: Sequence[Failure] = (),
    progress: ProgressFn | None = None,
    backend: str = "torch",
) -> PredictReport:
    """Predict every input, write its files into ``out_dir`` and ``predictions.json``; never raises for one
    bad input (it becomes a Failure and writes nothing)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot create the output folder ({exc})") from None
    if opts.threshold is None:  # the checkpoint's infer.threshold (the export sidecar's for ONNX), as eval does
        opts = dataclasses.replace(opts, threshold=predictor.threshold)
    if not 0.0 < opts.threshold < 1.0:
        raise ConfigError(f"--threshold must lie in (0, 1), got {opts.threshold}")
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{opts.format}'")
    entries: list[dict[str, Any]] = []
    failed = list(failures)
    t0 = time.perf_counter()
    jobs = [(s, notes(s) or "") for s in specs]
    for res in predictor.predict(jobs, progress=progress):
        if isinstance(res, Failure):
            log.warning("%s", res.error)
            failed.append(res)
            continue
        try:
            entries.append(write_prediction(res, out_dir, opts))
        except ReclmisError as exc:
            log.warning("%s", exc)
            failed.append(Failure(str(res.spec.path), str(exc), res.spec.stem))
    seconds = time.perf_counter() - t0
    order = {s.stem: i for i, s in enumerate(specs)}
    entries.sort(key=lambda e: order.get(e["stem"], len(order)))
    st = predictor.stats
    doc = {
        "reclmis_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": predictor.source,
        "backend": backend,
        "threshold": opts.threshold,
        "format": opts.format,
        "window": predictor.window,
        "n_inputs": len(entries) + len(failed),
        "n_ok": len(entries),
        "n_failed": len(failed),
        "images": st.images,
        "seconds": round(seconds, 3),
        "images_per_s": round(st.images / seconds, 3) if seconds > 0 else None,
        "note_cache": predictor.note_cache,
        "text_encodes": st.text_encodes,
        "inputs": entries,
        "failed": [{"input": f.input, "error": f.error} for f in failed],
    }
    json_path = out_dir / "predictions.json"
    try:
        atomic_write_text(json_path, json.dumps(doc, indent=2))
    except OSError as exc:  # the masks written so far are complete; only the summary is missing
        raise DataError(f"{json_path}: cannot write the results summary ({exc}); {len(entries)} input(s) were "
                        f"written to {out_dir}") from None
    return PredictReport(out_dir, entries, failed, seconds, st, json_path)
