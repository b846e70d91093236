""":func:`load` and :class:`Model`: one object per trained model, in the manner of Ultralytics' ``YOLO``.

``Model.predict`` runs the code path of ``reclmis predict`` (``Predictor.predict``, and ``run_predict`` when files
are written); ``evaluate``, ``export`` and ``bench`` call what ``reclmis eval/export/bench`` call. Each method
takes ``config=`` (the YAML file the commands read): its section for that command (``predict:``, ``eval:``,
``export:``, ``bench:``) sets the arguments the call does not give.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..errors import CheckpointError, ConfigError, DataError
from .result import Result
from .train import run_training

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def _configurable(command: str) -> Callable[[F], F]:
    """Keyword arguments not given take their value from the ``command:`` section of ``config=`` (as the
    commands' ``--config`` does); a key that names no argument is a ConfigError."""

    def deco(fn: F) -> F:
        names = [n for n, p in inspect.signature(fn).parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and n != "config"]

        @functools.wraps(fn)
        def wrapper(*args: Any, config: str | Path | None = None, **kwargs: Any) -> Any:
            if config is not None:
                from ..config import command_section, load_yaml
                from ..registry import did_you_mean

                for key, value in command_section(load_yaml(config), command, str(config)).items():
                    name = str(key).replace("-", "_")
                    if name not in names:
                        hint = did_you_mean(name, names) or f" Arguments: {', '.join(names)}."
                        raise ConfigError(f"config={config}: '{command}.{key}' is not an argument of "
                                          f"{fn.__qualname__}.{hint}")
                    kwargs.setdefault(name, value)
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return deco


def _resolve_source(path_or_hub_id: str | Path, revision: str | None) -> Path:
    """A local folder as given; a Hugging Face hub id (``owner/name``) downloaded (or read from the local hub
    cache, which is all that ``HF_HUB_OFFLINE=1`` allows)."""
    path = Path(path_or_hub_id)
    if path.exists():
        return path
    text = str(path_or_hub_id)
    if not _HUB_ID.fullmatch(text):
        raise CheckpointError(f"path_or_hub_id: checkpoint not found: {text} (a checkpoint folder, an export "
                              "folder or a Hugging Face hub id owner/name)")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    log.info("%s is not a local folder: fetching it from the Hugging Face hub", text)
    try:
        return Path(snapshot_download(text, revision=revision))
    except (LocalEntryNotFoundError, RepositoryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise CheckpointError(f"path_or_hub_id: {text} is no local folder, and the Hugging Face hub gave no copy "
                              f"of it ({type(exc).__name__}: {exc})") from None


def load(path_or_hub_id: str | Path, *, device: str = "auto", explain: bool = False, precision: str = "fp32",
         threads: int = 0, batch_size: int | None = None, window: str | None = None, workers: int = 2,
         allow_uneven_slices: bool = False, note_cache: bool = True, revision: str | None = None,
         mirror: bool | None = None) -> Model:
    """Load a model once; predict with it many times.

    Args:
        path_or_hub_id: a checkpoint folder (``runs/NAME/best``), an ONNX export folder (``reclmis export
            --format onnx [--int8]``) or a Hugging Face hub id (``owner/name``, fetched only then).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``.
        explain: also compute W_poi/W_woi (:meth:`Result.w_poi`); checkpoints only.
        precision: ``fp32`` | ``bf16`` | ``fp16`` for checkpoints; an export runs at its own.
        threads: intra-op CPU threads (0: the default ``reclmis predict`` uses).
        batch_size: images/slices per forward pass (default: the checkpoint's ``infer.batch_size``).
        window: CT/MR window ``"CENTER,WIDTH"`` or a preset (``lung``, ``mediastinum``, ...); None: the file's.
        workers: threads that read and preprocess inputs ahead of the model (0: none).
        allow_uneven_slices: accept a DICOM series with a gap or uneven spacing (approximate affine).
        note_cache: encode each distinct note once.
        revision: hub revision (branch, tag or commit) for a hub id.
        mirror: test-time mirroring (the left-right mirrored image, its note's sides swapped, averaged in); default:
            the model's ``infer.mirror``.
    """
    from ..choices import PRECISIONS
    from ..device import apply_threads, parse_device
    from ..artefacts import SIDECAR
    from ..inference import Predictor

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    parse_device(device)
    folder = _resolve_source(path_or_hub_id, revision)
    kwargs: dict[str, Any] = {"note_cache": note_cache, "window": window, "workers": workers,
                              "allow_uneven_slices": allow_uneven_slices, "mirror": mirror}
    if batch_size is not None:
        kwargs["batch_size"] = batch_size
    if (folder / SIDECAR).is_file():
        if explain:
            raise ConfigError("explain=True needs a checkpoint folder: W_poi/W_woi come from training-only modules "
                              "that are not in the ONNX graphs")
        if precision != "fp32":
            raise ConfigError(f"precision={precision!r} is for checkpoints; an ONNX export runs at the precision "
                              "it was exported with")
        predictor = Predictor.from_onnx(folder, device=device, threads=threads or None, **kwargs)
        kind = "onnx"
    else:
        predictor = Predictor.from_checkpoint(folder, device=device, explain=explain, precision=precision,
                                              **kwargs)
        apply_threads(threads, predictor.runtime.model_cfg)
        kind = "checkpoint"
    return Model(predictor, folder, kind, str(path_or_hub_id))


def _is_image(item: Any) -> bool:
    from PIL import Image

    return isinstance(item, (np.ndarray, Image.Image))


def _as_array(item: Any, index: int) -> np.ndarray:
    """An in-memory image as the 8-bit (H, W) or (H, W, 3) array ``Predictor.predict_arrays`` takes."""
    if not isinstance(item, np.ndarray):
        item = np.asarray(item.convert("RGB" if item.mode in ("RGB", "RGBA", "P", "CMYK") else "L"))
    if item.dtype != np.uint8:
        raise DataError(f"source[{index}]: an in-memory image must be 8-bit (uint8), got {item.dtype}; scale it "
                        "first, or pass the file (DICOM/NIfTI intensities are windowed by the reader)")
    if item.ndim == 3 and item.shape[2] == 4:
        item = item[..., :3]
    if item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] != 3):
        raise DataError(f"source[{index}]: an in-memory image must be (H, W) or (H, W, 3), got {item.shape}")
    return item


class Model:
    """A trained RecLMIS model: :meth:`predict`, :meth:`train` (fine-tune), :meth:`evaluate`, :meth:`export`,
    :meth:`bench`. Made by :func:`load`; holds one loaded model (not thread-safe: call it from one thread at a
    time, as ``reclmis app`` does)."""

    def __init__(self, predictor: Any, folder: Path, kind: str, name: str) -> None:
        self.predictor = predictor
        self.path = Path(folder)  # the checkpoint or export folder
        self.kind = kind  # checkpoint | onnx
        self.name = name  # as given to load()

    def __repr__(self) -> str:
        return f"Model({self.name!r}, {self.kind}, image_size={self.image_size}, text={self.uses_text})"

    @property
    def uses_text(self) -> bool:
        """The model reads a note."""
        return self.predictor.uses_text

    @property
    def note_optional(self) -> bool:
        """The model was also trained without notes (``train.note_dropout``): an empty note is allowed."""
        return self.predictor.note_optional

    @property
    def threshold(self) -> float:
        """The checkpoint's (or export's) ``infer.threshold``: the default of ``predict(threshold=...)``."""
        return self.predictor.threshold

    @property
    def image_size(self) -> int:
        return self.predictor.image_size

    @property
    def explain(self) -> bool:
        return self.predictor.explain

    # -- predict ------------------------------------------------------------------------------------------

    def _notes(self, sources: list[Any], note: str | Sequence[str] | None) -> list[str]:
        if note is None or isinstance(note, str):
            notes = [note or ""] * len(sources)
        else:
            notes = [n or "" for n in note]
            if len(notes) != len(sources):
                raise ConfigError(f"note: {len(notes)} notes for {len(sources)} sources; give one note for all, or "
                                  "one per source")
        if self.uses_text and not self.note_optional and any(not n.strip() for n in notes):
            raise ConfigError("note is empty: this model is text-guided; describe the finding, e.g. "
                              "note='bilateral lower lung infection'")
        notes = [n.strip() for n in notes]
        problem = next((p for p in map(self.predictor.note_problem, filter(None, notes)) if p), None)
        if problem is not None:
            raise ConfigError(problem)
        return notes

    @_configurable("predict")
    def predict(self, source: Any, note: str | Sequence[str] | None = None, *, threshold: float | None = None,
                out: str | Path | None = None, format: str = "auto", overlay: bool = False,  # noqa: A002
                save_prob: bool = False, seg_description: str | None = None,
                config: str | Path | None = None) -> list[Result]:
        """Segment what ``note`` describes in ``source``; one :class:`Result` per input, in the input's frame.

        Args:
            source: a path (PNG/JPEG/TIFF, DICOM file, DICOM series folder, NIfTI, a folder of them or a glob),
                an 8-bit numpy array ``(H, W)``/``(H, W, 3)``, a PIL image, or a list of these.
            note: one note for every input, or one per item of ``source`` (a list).
            threshold: probability above which a pixel is lesion (default: the model's :attr:`threshold`).
            out: also write what ``reclmis predict --out`` writes (masks in each input's format and geometry,
                ``predictions.json``); file inputs only.
            format: ``auto`` | ``png`` | ``nifti`` | ``dicom-seg`` (with ``out``).
            overlay, save_prob: also write ``<stem>_overlay.png`` / the probability map (with ``out``).
            seg_description: DICOM SEG SeriesDescription (with ``out``; the note is never written into DICOM).
            config: YAML file whose ``predict:`` section sets the arguments not given.

        Raises:
            DataError: an input cannot be read or written (the others' files are still written with ``out``).
            ConfigError: a bad argument (an empty note for a text-guided model, a threshold outside (0, 1), ...).
        """
        from ..choices import FORMATS

        sources = list(source) if isinstance(source, (list, tuple)) else [source]
        if not sources:
            raise ConfigError("source is empty: give a path, an array or a list of them")
        threshold = self.threshold if threshold is None else float(threshold)
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must lie in (0, 1), got {threshold}")
        if format not in FORMATS:
            raise ConfigError(f"format must be one of {', '.join(FORMATS)}, got '{format}'")
        notes = self._notes(sources, note)
        arrays = [i for i, s in enumerate(sources) if _is_image(s)]
        if arrays and out is not None:
            raise ConfigError("out= writes files for file inputs; for an in-memory image use Result.mask")
        results: dict[int, list[Result]] = {}
        for i in arrays:
            results[i] = [self._predict_array(_as_array(sources[i], i), notes[i], threshold, i)]
        files = [(i, str(s)) for i, s in enumerate(sources) if i not in results]
        if files:
            for i, res in self._predict_files(files, notes, threshold, out, format, overlay, save_prob,
                                              seg_description):
                results.setdefault(i, []).append(res)
        return [r for i in sorted(results) for r in results[i]]

    def _predict_array(self, image: np.ndarray, note: str, threshold: float, index: int) -> Result:
        from ..data.meta import ImageMeta

        prob = self.predictor.predict_arrays([image], [note])[0]
        geom = self.predictor.plan.geometry(image.shape[:2], None)
        meta = ImageMeta(f"<array {index}>", "raster", tuple(image.shape), tuple(image.shape), "uint8",
                         mode="rgb" if image.ndim == 3 else "gray")
        return Result(meta.path, note, prob, threshold, geom, meta, image, note_read=self.predictor.note_read(note))

    def _predict_files(self, files: list[tuple[int, str]], notes: list[str], threshold: float,
                       out: str | Path | None, fmt: str, overlay: bool, save_prob: bool,
                       seg_description: str | None) -> list[tuple[int, Result]]:
        from ..inference import Failure, PredictOptions, check_formats, collect_inputs, run_predict

        by_given: dict[str, int] = {}
        for i, text in files:
            if text in by_given and notes[by_given[text]] != notes[i]:
                raise ConfigError(f"source: {text} is given twice with different notes")
            by_given.setdefault(text, i)
        specs, failures = collect_inputs([text for _, text in files])
        specs, bad = check_formats(specs, fmt)
        failures += bad
        if failures and out is None:
            raise DataError("; ".join(f.error for f in failures))
        found: list[tuple[int, Result]] = []

        def keep(pred: Any) -> None:
            found.append((by_given[pred.spec.given], Result.from_prediction(pred, threshold)))

        def note_for(spec: Any) -> str:
            return notes[by_given[spec.given]]

        if out is None:
            for pred in self.predictor.predict([(s, note_for(s)) for s in specs]):
                if isinstance(pred, Failure):  # the input could not be read
                    raise DataError(pred.error)
                keep(pred)
            return found
        opts = PredictOptions(threshold=threshold, format=fmt, overlay=overlay, save_prob=save_prob,
                              seg_description=seg_description)
        report = run_predict(self.predictor, specs, note_for, out, opts, failures, backend=self._backend,
                             on_result=keep)
        entries = {e["input"]: e for e in report.entries}
        for _, res in found:
            res.entry = entries.get(res.input)
            res.files = dict(res.entry["outputs"]) if res.entry else {}
        if report.failures and not report.entries and len(report.failures) == 1:
            raise DataError(report.failures[0].error)
        if report.failures:
            raise DataError(f"{len(report.failures)} of {report.n_ok + len(report.failures)} inputs failed ("
                            + "; ".join(f.error for f in report.failures) + f"); the others are in {out}")
        return [(i, r) for i, r in found if r.entry is not None]

    @property
    def _backend(self) -> str:
        return "onnx" if self.kind == "onnx" else "torch"

    # -- the other commands -------------------------------------------------------------------------------

    def _checkpoint_only(self, what: str) -> Path:
        if self.kind != "checkpoint":
            raise ConfigError(f"{what} needs a checkpoint folder; this model was loaded from an ONNX export "
                              f"({self.path})")
        return self.path

    @_configurable("eval")
    def evaluate(self, data: str | Path | None = None, *, split: str = "test", text: str = "as-is", seed: int = 0,
                 threshold: float | None = None, batch_size: int | None = None, device: str = "auto",
                 config: str | Path | None = None) -> Any:
        """Score the model on a split of a prepared DATA_DIR, as ``reclmis eval`` does; returns its ``EvalResult``
        (``dice``, ``miou``, ``dice_global``, ``to_dict()``, ...).

        Args:
            data: a DATA_DIR made by ``reclmis prepare`` or a registered dataset name (default: the one the
                checkpoint trained on).
            split: ``train`` | ``val`` | ``test``.
            text: ``as-is`` | ``shuffle`` | ``empty`` (the reliance-on-the-note test).
            threshold, batch_size: default: the checkpoint's.
        """
        from ..data.datasets_registry import DATASETS
        from ..data.folders import check_data_dir
        from ..engine.eval_run import run_eval

        ckpt = self._checkpoint_only("evaluate")
        named = data is not None and not Path(str(data)).exists() and str(data) in DATASETS.names()
        if data is not None and not named:
            check_data_dir(data, flag="data=")
        run = run_eval(ckpt, None if named else data, split, text, dataset=str(data) if named else None, seed=seed,
                       threshold=threshold, batch_size=batch_size, compare=False, device=device,
                       mirror=self.predictor.runtime.mirror)
        return run.result

    @_configurable("export")
    def export(self, format: str = "onnx", out: str | Path | None = None, *, verify: bool = False,  # noqa: A002
               opset: int = 18, int8: bool = False, calib: str | Path | None = None, calib_images: int = 32,
               int8_min_dice: float = 0.98, overwrite: bool = False, config: str | Path | None = None) -> Any:
        """Export the inference graph as ``reclmis export`` does (``onnx``, ``torch-export``, ``safetensors``);
        returns its ``ExportResult`` (``path``, ``files``, ``verify``, ...). ``load(result.path)`` runs an ONNX
        export. ``out`` defaults to ``<checkpoint>-<format>`` next to the checkpoint."""
        from ..export import export_model

        ckpt = self._checkpoint_only("export")
        dest = Path(out) if out is not None else ckpt.with_name(f"{ckpt.name}-{format}{'-int8' if int8 else ''}")
        return export_model(ckpt, format, dest, verify=verify, opset=opset, overwrite=overwrite, int8=int8,
                            calib=calib, calib_images=calib_images, int8_min_dice=int8_min_dice)

    @_configurable("bench")
    def bench(self, *, batch_sizes: Sequence[int] = (1,), backends: Sequence[str] | None = None, runs: int = 10,
              warmup: int = 2, train_batch: int = 2, latency: bool = True, data: str | Path | None = None,
              split: str = "test", device: str = "auto", threads: int = 0,
              config: str | Path | None = None) -> Any:
        """Parameters, MACs, latency per backend and training throughput, as ``reclmis bench`` measures them;
        returns its ``BenchReport`` (``to_json()``)."""
        from ..bench import BenchConfig, run_benchmark

        ckpt = self._checkpoint_only("bench")
        extra = {} if backends is None else {"backends": tuple(backends)}
        cfg = BenchConfig(preset=None, checkpoint=str(ckpt), device=device, batch_sizes=tuple(batch_sizes),
                          runs=runs, warmup=warmup, train_batch=train_batch, latency=latency, threads=threads,
                          data=str(data) if data is not None else None, split=split, **extra)
        return run_benchmark(cfg)

    def train(self, data: Any, **kwargs: Any) -> Model:
        """Fine-tune: :func:`reclmis_core.train` starting from this checkpoint's weights (``init``)."""
        return train(data, init=self._checkpoint_only("train"), **kwargs)


def train(data: Any, *, device: str = "auto", threads: int = 0, **kwargs: Any) -> Model:
    """Train RecLMIS as ``reclmis train`` does and return the best checkpoint, loaded. Arguments: those of
    :func:`reclmis_core.api.train.run_training` (``data``, ``preset``, ``epochs``, ``overrides``, ``out``, ...)."""
    best = run_training(data, device=device, threads=threads, **kwargs)
    return load(best, device=device, threads=threads)
