"""Language-guided prediction on a user's own files: PNG/JPEG/TIFF, DICOM files and series, NIfTI volumes.

:class:`Predictor` runs a :class:`~reclmis_core.runtime.base.Runtime` (a checkpoint through PyTorch at fp32, bf16
or fp16, or an fp32/int8 ONNX export through ONNX Runtime) and turns ``(input, note)`` pairs into probability
maps at each input's own geometry. Reading and preprocessing run in worker threads ahead of the model; 2-D images
and volume slices from consecutive inputs share batches; each distinct note is encoded once (the note cache:
clinical notes repeat). It reports progress through a callback and never prints.
``reclmis_core.inference.run.run_predict`` adds the files and ``predictions.json``.

Example:
    >>> pred = Predictor.from_checkpoint("runs/qata/best")
    >>> specs, bad = collect_inputs(["scans/"])
    >>> for r in pred.predict([(s, "bilateral lower lung infection") for s in specs]):
    ...     print(r.spec.stem, r.foreground_fraction(0.5) if isinstance(r, Prediction) else r.error)
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.intensity import parse_window
from ..data.meta import ImageMeta
from ..data.preprocess import Geometry
from ..data.preprocessor import Preprocessor
from ..data.readers.base import ReadOptions
from ..errors import ConfigError, ReclmisError
from ..runtime.base import Runtime
from .explain import Explanation
from .inputs import Failure, InputSpec

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int, str], None]  # (inputs done, inputs total, stem of the input just finished)


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
    note_read: str | None = None  # what the model read of the note when it reads only the zones (model.text.reader)

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


class Predictor:
    """Batched, note-cached inference at each input's own geometry.

    Args:
        runtime: a :class:`~reclmis_core.runtime.base.Runtime` (or use :meth:`open`, :meth:`from_checkpoint`,
            :meth:`from_onnx`).
        batch_size: 2-D images / slices per forward pass.
        note_cache: encode each distinct note once (keyed by its text); off re-encodes per batch.
        window: intensity window for DICOM/NIfTI (preset name, ``"C,W"`` or a pair); None = the file's own
            window, the lung window for CT, else min..max.
        allow_uneven_slices: accept a DICOM series with a missing slice or uneven spacing (a warning and an
            approximate affine) instead of failing that input.
        workers: threads that read and preprocess inputs ahead of the model (0: in the calling thread).
    """

    def __init__(self, runtime: Runtime, batch_size: int = 8, note_cache: bool = True, window: Any = None,
                 source: str = "", allow_uneven_slices: bool = False, workers: int = 2) -> None:
        if batch_size < 1:
            raise ConfigError(f"infer.batch_size must be >= 1, got {batch_size}")
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        self.runtime = runtime
        self.batch_size = int(batch_size)
        self.note_cache = note_cache
        self.window = window
        self.allow_uneven_slices = allow_uneven_slices
        self.workers = int(workers)
        parse_window(window)  # validate early: a bad --window is a usage error, not a per-input one
        self.source = source
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stats = PredictStats()

    @classmethod
    def open(cls, path: str | Path, device: str = "cpu", *, backend: str | None = None, precision: str = "fp32",
             explain: bool = False, threads: int | None = None, mirror: bool | None = None,
             **kwargs: Any) -> Predictor:
        """Any artefact folder through :func:`~reclmis_core.runtime.open_runtime`: a checkpoint or safetensors
        export (torch; ``precision`` fp32 | bf16 | fp16), an ONNX export (fp32 or int8, as written) or a
        torch.export export. ``backend`` (torch | onnx | torch-export) makes a folder of another kind an error;
        ``mirror`` turns test-time mirroring on or off (default: the artefact's ``infer.mirror``)."""
        from ..runtime.open import open_runtime

        rt = open_runtime(path, device, precision, threads, explain, backend=backend, mirror=mirror)
        if rt.cfg is not None:
            kwargs.setdefault("batch_size", rt.cfg.infer.batch_size)
        return cls(rt, source=str(path), **kwargs)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", explain: bool = False, precision: str = "fp32",
                        **kwargs: Any) -> Predictor:
        """Load a checkpoint folder (``model.safetensors`` + ``config.json``); ``precision`` fp32 | bf16 | fp16."""
        return cls.open(path, device, backend="torch", precision=precision, explain=explain, **kwargs)

    @classmethod
    def from_model(cls, model: Any, cfg: Any, device: str = "cpu", explain: bool = False, colour: bool = False,
                   **kwargs: Any) -> Predictor:
        """Wrap an in-memory ``RecLMIS`` (e.g. right after training, in a notebook)."""
        from ..runtime.torch_runtime import TorchRuntime

        rt = TorchRuntime(model, cfg, device, explain=explain, preprocessor=Preprocessor.from_config(cfg, colour))
        return cls(rt, **kwargs)

    @classmethod
    def from_onnx(cls, folder: str | Path, device: str = "cpu", threads: int | None = None, **kwargs: Any
                  ) -> Predictor:
        """Use exported ONNX graphs (``reclmis export --format onnx [--int8]``) through ONNX Runtime on ``device``."""
        return cls.open(folder, device, backend="onnx", threads=threads, **kwargs)

    # -- properties ---------------------------------------------------------------------------------

    @property
    def uses_text(self) -> bool:
        return self.runtime.uses_text

    @property
    def note_optional(self) -> bool:
        """True when the model was trained to segment without a note as well (``train.note_dropout``)."""
        return self.runtime.note_optional

    @property
    def preprocessor(self) -> Preprocessor:
        """The checkpoint's (or export's) preprocessing."""
        return self.runtime.preprocessor

    @property
    def plan(self) -> Preprocessor:
        """The former name of :attr:`preprocessor`."""
        return self.preprocessor

    @property
    def image_size(self) -> int:
        return self.preprocessor.image_size

    @property
    def threshold(self) -> float:
        """The checkpoint's ``infer.threshold`` (the export sidecar's for ONNX): the default for masks."""
        return self.runtime.threshold

    @property
    def explain(self) -> bool:
        return self.runtime.explain

    # -- text ---------------------------------------------------------------------------------------

    def _check_vocabulary(self, notes: Sequence[str]) -> None:
        """Warn (once per note) when most of a note's tokens are unknown to the tokenizer: the model then sees
        next to nothing of it (e.g. a Chinese note for a tokenizer learned from English notes)."""
        tok = self.runtime.tokenizer
        if tok is None:
            return
        warned = self.__dict__.setdefault("_vocab_checked", set())
        for note in dict.fromkeys(notes):
            if note in warned:
                continue
            warned.add(note)
            n_unk, n = unknown_tokens(tok, note, self.runtime.max_length)
            if n and n_unk / n > UNKNOWN_SHARE_WARN:
                short = note if len(note) <= 40 else note[:37] + "..."
                log.warning("note %r: %d of %d tokens (%.0f%%) are unknown to this checkpoint's tokenizer; the model "
                            "sees next to nothing of it. Write notes in the language and wording of its training "
                            "notes", short, n_unk, n, 100 * n_unk / n)

    def note_read(self, note: str) -> str | None:
        """The text the model read for ``note`` when its tokenizer reads only the zones (None: the note as written)."""
        tok = self.runtime.tokenizer if self.uses_text else None
        return tok.read(note) if tok is not None and tok.reader != "raw" and note else None

    def _text_for(self, notes: list[str]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if not self.uses_text:
            return None, None
        self._check_vocabulary(notes)
        if not self.note_cache:
            self.stats.text_encodes += len(notes)
            return self.runtime.encode(notes)
        missing = [n for n in dict.fromkeys(notes) if n not in self._cache]
        self.stats.cache_hits += len(notes) - len(missing)
        for note in missing:
            # Keep the row as encoded: a note alone has no pads, except with model.text.pad_to_max, where its
            # pad slots carry features that the reference's padding treatment (text_padding=raw) uses.
            feats, mask = self.runtime.encode([note])
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
        tok = self.runtime.tokenizer
        strings: list[str] = []
        if tok is not None:
            try:
                strings = list(tok.token_strings(note, self.runtime.max_length))
            except NotImplementedError:
                strings = []
        if len(strings) != n_valid:
            strings = [f"tok{i}" for i in range(n_valid)]
        return strings

    # -- images -------------------------------------------------------------------------------------

    def _load(self, spec: InputSpec) -> tuple[ImageMeta, np.ndarray, Geometry, np.ndarray]:
        """Read + model pixels through the preprocessor: (meta, display image, geometry, uint8 model pixels
        (n, S, S[, 3]))."""
        pre = self.preprocessor
        options = ReadOptions(self.allow_uneven_slices, spec.files, spec.series)
        slices, meta = pre.load(spec.path, self.window, self.allow_uneven_slices, options)
        geom = pre.geometry(slices.shape[1:3], meta)
        pixels = np.stack([pre.to_model(s, geom) for s in slices])
        return meta, pre.display(slices, meta), geom, pixels

    def _batch_tensor(self, pixels: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(self.preprocessor.to_tensor(np.stack(pixels)))

    def predict_arrays(self, images: Sequence[np.ndarray], notes: Sequence[str]) -> list[np.ndarray]:
        """Probabilities for in-memory 8-bit images (each (H, W) or (H, W, 3)) at their own size; no spacing.
        With ``data.preprocessing=reference`` a 3-channel array is taken as BGR, as ``cv2.imread`` returns it."""
        pre = self.preprocessor
        out = []
        for img, note in zip(images, notes):
            problem = self.note_problem(note)
            if problem is not None:
                raise ConfigError(problem)
            slices, meta = pre.load(np.asarray(img))
            geom = pre.geometry(slices.shape[1:3], meta)
            probs, _, _ = self._run([pre.to_model(slices[0], geom)], [note])
            out.append(pre.restore(probs[0], geom))
        return out

    def _run(self, pixels: list[np.ndarray], notes: list[str]
             ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        t0 = time.perf_counter()
        x = self._batch_tensor(pixels)
        logits, w_poi, w_woi, mask = self.runtime.forward(x, notes, self._text_for)
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        self.stats.images += len(pixels)
        self.stats.model_seconds += time.perf_counter() - t0
        poi = None if w_poi is None else w_poi.float().cpu().numpy()
        woi = None if w_woi is None else w_woi.float().cpu().numpy()
        valid = None if mask is None else mask.cpu().numpy()
        if woi is not None and valid is not None:
            woi = [row[: int(v.sum())] for row, v in zip(woi, valid)]
        return probs, poi, woi

    def note_problem(self, note: str) -> str | None:
        """Why this model cannot take ``note`` (None when it can): a text-guided model needs a note, and a model
        that reads only the zones a note names needs one it can read (unless it was trained to go without) and in
        which it can tell the side of every level named."""
        if not self.uses_text:
            return None
        short = note if len(note) <= 60 else note[:57] + "..."
        skipped = self.runtime.tokenizer.unplaced(note) if note and self.runtime.tokenizer is not None else []
        if skipped:
            return (f"the note {short!r} names {', '.join(repr(w) for w in skipped)} without a side this model's note "
                    "reader can tell (model.text.reader=zones); write the side with it, e.g. 'left upper zone'")
        if self.note_optional:
            return None
        if not note:
            return "no note for this input; the checkpoint is text-guided, give --note TEXT or a --notes CSV row " \
                   "(image,note) for it"
        if self.note_read(note) == "":
            return (f"the note {short!r} names no lung zone (upper/middle/lower, left/right), side or 'no infection' "
                    "that this model reads: it reads only the zones a note names (model.text.reader=zones)")
        return None

    def _load_job(self, spec: InputSpec, note: str) -> Failure | tuple[ImageMeta, np.ndarray, Geometry, np.ndarray]:
        problem = self.note_problem(note)
        if problem is not None:
            return Failure(str(spec.path), f"{spec.path}: {problem}", spec.stem)
        try:
            return self._load(spec)
        except ReclmisError as exc:
            return Failure(str(spec.path), str(exc), spec.stem)

    def _loaded(self, jobs: Sequence[tuple[InputSpec, str]]) -> Iterator[tuple[int, InputSpec, str, float, Any]]:
        """(index, spec, note, start time, loaded input or Failure) in input order; with ``workers`` > 0 the
        inputs are read and preprocessed in threads, at most ``2 x workers`` ahead of the model."""
        items = [(i, spec, (note or "").strip()) for i, (spec, note) in enumerate(jobs)]
        if self.workers == 0:
            for i, spec, note in items:
                t0 = time.perf_counter()
                yield i, spec, note, t0, self._load_job(spec, note)
            return
        ahead: deque[tuple[int, InputSpec, str, float, Future]] = deque()
        todo = iter(items)
        with ThreadPoolExecutor(self.workers, thread_name_prefix="reclmis-read") as pool:
            try:
                while True:
                    while len(ahead) < 2 * self.workers:
                        nxt = next(todo, None)
                        if nxt is None:
                            break
                        i, spec, note = nxt
                        ahead.append((i, spec, note, time.perf_counter(), pool.submit(self._load_job, spec, note)))
                    if not ahead:
                        return
                    i, spec, note, t0, fut = ahead.popleft()
                    yield i, spec, note, t0, fut.result()
            finally:  # a consumer that stops early (Ctrl-C, an error) does not wait for inputs it will not use
                for *_, fut in ahead:
                    fut.cancel()

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
            prob = np.stack([self.preprocessor.restore(s, p.geometry) for s in p.probs])
            if not p.meta.is_volume:
                prob = prob[0]
            return Prediction(p.spec, p.note, p.meta, p.image8, prob, p.geometry,
                              p.exps if self.explain else None, time.perf_counter() - p.started, self.note_read(p.note))

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

        for idx, spec, note, t0, loaded in self._loaded(jobs):
            if isinstance(loaded, Failure):
                done_count += 1
                if progress:
                    progress(done_count, total, spec.stem)
                yield loaded
                continue
            meta, img8, geom, pixels = loaded
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
