"""``run_predict``: predict every input, write its files and ``predictions.json``; a bad input becomes a Failure
and writes nothing, the good ones are kept.

``predictions.json`` accumulates: a run into an ``--out`` folder that already holds one merges its entries into
it (an input predicted again replaces its old entry; the others stay), under an exclusive lock on the output
folder (:func:`results_lock`), so that concurrent runs into one folder never lose each other's entries. An
input whose stem an earlier run's different input already used gets a new stem (``scan_2``), so its files do
not replace that input's files. Each run adds its summary (time, checkpoint, counts, speed) to ``runs``. An
interrupted run (Ctrl-C) finishes the files under way, records the inputs done so far (``interrupted: true``)
and then stops.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..version import __version__
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
    on_result: Callable[[Prediction], None] | None = None,
) -> PredictReport:
    """Predict every input, write its files into ``out_dir`` and ``predictions.json``; never raises for one
    bad input (it becomes a Failure and writes nothing). ``on_result`` sees each :class:`Prediction` (the
    Python API keeps them)."""
    out_dir = Path(out_dir)
    check_out_dir(out_dir, create=True)
    json_path = out_dir / RESULTS
    with results_lock(out_dir):
        _avoid_earlier_stems(specs, _read_results(json_path))
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
    interrupted = False
    with ThreadPoolExecutor(1, thread_name_prefix="reclmis-write") as writer:
        try:
            for res in predictor.predict(jobs, progress=progress):
                if isinstance(res, Failure):
                    log.warning("%s", res.error)
                    failed.append(res)
                    continue
                if on_result is not None:
                    on_result(res)
                writes.append((res, writer.submit(write_prediction, res, out_dir, opts)))
                while writes and writes[0][1].done():
                    _collect(writes.pop(0), entries, failed)
        except KeyboardInterrupt:  # Ctrl-C: finish the writes under way and record them, then stop
            interrupted = True
        for item in writes:
            _collect(item, entries, failed)
    seconds = time.perf_counter() - t0
    order = {s.stem: i for i, s in enumerate(specs)}
    entries.sort(key=lambda e: order.get(e["stem"], len(order)))
    st = predictor.stats
    run = {
        "reclmis_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": predictor.source,
        "backend": backend,
        "runtime": predictor.runtime.description,
        "precision": predictor.runtime.precision,
        "workers": predictor.workers,
        "threshold": opts.threshold,
        "mirror": predictor.runtime.mirror,
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
        "interrupted": interrupted,
    }
    failures_doc = [{"input": f.input, "error": f.error, "stem": f.stem} for f in failed]
    try:
        with results_lock(out_dir):
            doc = merge_results(_read_results(json_path), run, entries, failures_doc)
            atomic_write_text(json_path, json.dumps(doc, indent=2))
    except OSError as exc:  # the masks written so far are complete; only the summary is missing
        raise DataError(f"{json_path}: cannot write the results summary ({exc}); {len(entries)} input(s) were "
                        f"written to {out_dir}") from None
    if interrupted:  # the inputs finished so far are complete and listed; the rest were not started
        raise KeyboardInterrupt
    return PredictReport(out_dir, entries, failed, seconds, st, json_path)


RESULTS = "predictions.json"
LOCK = ".predictions.lock"


def check_out_dir(out_dir: Path, create: bool = False) -> None:
    """Check that files can be written to ``out_dir`` (read-only or full file system, a file in the way): DataError
    with one line. The probe goes into ``out_dir`` or, before it exists, its nearest existing parent, so a run that
    stops early leaves no empty folder; ``create`` makes the folder."""
    target = out_dir
    while not target.exists() and target.parent != target:
        target = target.parent
    if not target.is_dir():
        raise DataError(f"{out_dir}: cannot create the output folder ({target} is a file)")
    try:
        with tempfile.TemporaryFile(dir=target, prefix=".reclmis-probe-") as fh:
            fh.write(b"0")
            fh.flush()
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write to the output folder ({exc.strerror or exc})") from None
    if create:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataError(f"{out_dir}: cannot create the output folder ({exc.strerror or exc})") from None


@contextlib.contextmanager
def results_lock(out_dir: Path) -> Iterator[None]:
    """An exclusive advisory lock for reading and rewriting ``predictions.json``: ``fcntl.flock`` on the output
    folder itself (no lock file left behind); on Windows ``msvcrt.locking`` on ``out_dir/.predictions.lock``."""
    if os.name == "nt":
        import msvcrt

        fd = os.open(out_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        lock = lambda: msvcrt.locking(fd, msvcrt.LK_LOCK, 1)  # noqa: E731
    else:
        import fcntl

        fd = os.open(out_dir, os.O_RDONLY)
        lock = lambda: fcntl.flock(fd, fcntl.LOCK_EX)  # noqa: E731
    try:
        lock()
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _read_results(json_path: Path) -> dict[str, Any] | None:
    """The existing ``predictions.json`` (None: none). One that is not a reclmis results file is kept aside
    (``predictions.json.unreadable-<time>``, with a warning) rather than overwritten."""
    if not json_path.exists():
        return None
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and isinstance(doc.get("inputs"), list):
            return doc
        problem = "not a reclmis predictions file"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problem = str(exc)
    aside = json_path.with_name(f"{json_path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    os.replace(json_path, aside)
    log.warning("%s: cannot merge into it (%s); kept it as %s and started a new one", json_path, problem, aside.name)
    return None


def without_earlier_outputs(specs: Sequence[InputSpec], out_dir: Path) -> list[InputSpec]:
    """``specs`` less the files an earlier run wrote into ``out_dir`` (listed in its predictions.json): with
    ``--out`` inside an input folder, a second run would otherwise predict masks of masks."""
    json_path = out_dir / RESULTS
    if not json_path.is_file():
        return list(specs)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
        written = {Path(p).resolve() for e in doc.get("inputs", []) for p in (e.get("outputs") or {}).values()}
    except (OSError, UnicodeDecodeError, ValueError, AttributeError, TypeError):
        return list(specs)  # an unreadable predictions.json is reported (and kept aside) when it is merged
    kept = [s for s in specs if s.path.resolve() not in written]
    if len(kept) < len(specs):
        log.info("skipping %d file(s) an earlier run wrote into %s", len(specs) - len(kept), out_dir)
    return kept


def _avoid_earlier_stems(specs: Sequence[InputSpec], existing: dict[str, Any] | None) -> None:
    """Give an input a new stem when an earlier run's entry used its stem for a different input."""
    if not existing:
        return
    taken = {e.get("stem"): e.get("input") for e in existing.get("inputs", []) if isinstance(e, dict)}
    used = set(taken) | {s.stem for s in specs}
    for spec in specs:
        owner = taken.get(spec.stem)
        if owner is None or owner == str(spec.path):
            continue
        n = 2
        while f"{spec.stem}_{n}" in used:
            n += 1
        log.info("%s: stem %r is taken by %s in %s; writing its files as %s_%d*", spec.path, spec.stem, owner,
                 RESULTS, spec.stem, n)
        spec.stem = f"{spec.stem}_{n}"
        used.add(spec.stem)


def merge_results(existing: dict[str, Any] | None, run: dict[str, Any], entries: list[dict[str, Any]],
                  failed: list[dict[str, Any]]) -> dict[str, Any]:
    """``predictions.json`` after this run: its entries replace earlier ones of the same input or stem, the
    earlier ones stay; the top-level fields describe this run, ``runs`` lists every run's summary."""
    old_inputs = list(existing.get("inputs", [])) if existing else []
    old_failed = list(existing.get("failed", [])) if existing else []
    runs = list(existing.get("runs", [])) if existing else []
    if existing and not runs:  # written by a reclmis before runs were kept: its own summary
        runs = [{k: v for k, v in existing.items() if k not in ("inputs", "failed", "runs")}]
    now_inputs = {e["input"] for e in entries} | {f["input"] for f in failed}
    now_stems = {e["stem"] for e in entries} | {f.get("stem") for f in failed if f.get("stem")}
    kept = [e for e in old_inputs if e.get("input") not in now_inputs and e.get("stem") not in now_stems]
    kept_failed = [f for f in old_failed if f.get("input") not in now_inputs]
    inputs, failures = kept + entries, kept_failed + failed
    runs.append(run)
    return {**run, "n_inputs": len(inputs) + len(failures), "n_ok": len(inputs), "n_failed": len(failures),
            "runs": runs, "inputs": inputs, "failed": failures}
