"""``run_predict``: predict every input, write its files and ``predictions.json``; a bad input becomes a Failure
and writes nothing, the good ones are kept."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..choices import FORMATS
from ..errors import ConfigError, DataError, ReclmisError
from ..utils import atomic_write_text
from .inputs import Failure, InputSpec
from .predictor import Prediction, PredictStats, Predictor, ProgressFn
from .writers import PredictOptions, write_prediction

log = logging.getLogger(__name__)


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


def _collect(item: tuple[Prediction, Future], entries: list[dict[str, Any]], failed: list[Failure]) -> None:
    res, fut = item
    try:
        entries.append(fut.result())
    except ReclmisError as exc:
        log.warning("%s", exc)
        failed.append(Failure(str(res.spec.path), str(exc), res.spec.stem))


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
        raise ConfigError(f"infer.threshold must lie in (0, 1), got {opts.threshold}")
    if opts.format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got '{opts.format}'")
    entries: list[dict[str, Any]] = []
    failed = list(failures)
    t0 = time.perf_counter()
    jobs = [(s, notes(s) or "") for s in specs]
    # Files are written in a background thread while the model runs on the next batch; a write error fails
    # that input only (write_prediction removes what it wrote).
    writes: list[tuple[Prediction, Future]] = []
    with ThreadPoolExecutor(1, thread_name_prefix="reclmis-write") as writer:
        for res in predictor.predict(jobs, progress=progress):
            if isinstance(res, Failure):
                log.warning("%s", res.error)
                failed.append(res)
                continue
            writes.append((res, writer.submit(write_prediction, res, out_dir, opts)))
            while writes and writes[0][1].done():
                _collect(writes.pop(0), entries, failed)
        for item in writes:
            _collect(item, entries, failed)
    seconds = time.perf_counter() - t0
    order = {s.stem: i for i, s in enumerate(specs)}
    entries.sort(key=lambda e: order.get(e["stem"], len(order)))
    st = predictor.stats
    doc = {
        "reclmis_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": predictor.source,
        "backend": backend,
        "runtime": predictor.runtime.description,
        "precision": predictor.runtime.precision,
        "workers": predictor.workers,
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
