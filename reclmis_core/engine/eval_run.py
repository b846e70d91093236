"""``run_eval``: what ``reclmis eval`` does, as one call: open the artefact, find the data, score, compare.

Example:
    >>> run = run_eval("runs/qata/best", "data/qata", split="test", text_mode="shuffle")
    >>> run.to_dict()["dice_drop"]                 # Dice as-is minus Dice with shuffled notes
    >>> Path("per_image.csv").write_text(run.per_image_csv())
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..checkpoint import checkpoint_or_latest
from ..data.folders import check_data_dir
from ..device import apply_threads
from ..errors import ConfigError
from ..runtime.base import Runtime
from ..runtime.open import open_runtime
from .evaluator import TEXT_MODES, EvalProgressFn, EvalResult, evaluate

log = logging.getLogger(__name__)


@dataclass
class EvalRun:
    """One ``reclmis eval``: the scores, the per-image rows and, for a text test, the as-is baseline."""

    result: EvalResult
    rows: list[dict[str, Any]]
    checkpoint: Path
    data: Path
    baseline: EvalResult | None = None

    def to_dict(self) -> dict[str, Any]:
        """``eval.json``: the result's contract keys, plus the as-is scores and the drops with a baseline."""
        doc = self.result.to_dict()
        if self.baseline is not None:
            b = self.baseline
            doc.update(dice_as_is=b.dice, miou_as_is=b.miou, dice_drop=b.dice - self.result.dice,
                       miou_drop=b.miou - self.result.miou)
        return doc

    def per_image_csv(self) -> str:
        """``per_image.csv``: id, note, dice, iou, fg_pred, fg_true (+ original_note for a text test)."""
        cols = ["id", "note", "dice", "iou", "fg_pred", "fg_true"]
        cols += ["original_note"] if self.result.text != "as-is" else []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in cols})
        return buf.getvalue()


def check_eval_options(split: str, text_mode: str, threshold: float | None) -> None:
    """ConfigError naming the setting (``split``, ``text``, ``infer.threshold``) for a value eval cannot take."""
    if text_mode not in TEXT_MODES:
        raise ConfigError(f"text must be one of {', '.join(TEXT_MODES)}, got '{text_mode}'")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got '{split}'")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"infer.threshold must lie in (0, 1), got {threshold}")


def _data_for(rt: Runtime, checkpoint: Path, data: str | Path | None, dataset: str | None) -> Path:
    if data is not None and dataset:
        raise ConfigError("pass either a DATA_DIR or a registered dataset, not both")
    if dataset:
        from ..data.datasets_registry import resolve_dataset

        return resolve_dataset(dataset, image_size=rt.preprocessor.image_size)
    if data is not None:
        return check_data_dir(data)
    if rt.cfg is None or not rt.cfg.data.root:
        raise ConfigError(f"{checkpoint} does not record its data folder (data.root); give the DATA_DIR")
    log.info("no data given: using the checkpoint's training data folder %s", rt.cfg.data.root)
    return check_data_dir(rt.cfg.data.root, "the checkpoint's data folder")


def run_eval(checkpoint: str | Path | None, data: str | Path | None = None, split: str = "test",
             text_mode: str = "as-is", *, dataset: str | None = None, seed: int = 0,
             threshold: float | None = None, batch_size: int | None = None, compare: bool = True,
             device: str = "auto", threads: int | None = None, progress: EvalProgressFn | None = None,
             mirror: bool | None = None) -> EvalRun:
    """Score a checkpoint or export folder (the newest ``runs/*/best`` when None) on ``split`` of ``data`` (a
    DATA_DIR), of the registered ``dataset``, or of the checkpoint's own ``data.root``; with ``text_mode``
    shuffle or empty and ``compare``, also as-is, for the drop. ``threads``: torch's intra-op threads (default:
    :func:`reclmis_core.device.apply_threads`'s for the model's size); ``mirror``: test-time mirroring on or off
    (default: the checkpoint's ``infer.mirror``)."""
    check_eval_options(split, text_mode, threshold)
    checkpoint = checkpoint_or_latest(checkpoint)
    rt = open_runtime(checkpoint, device=device, mirror=mirror)  # the checkpoint's (or export's) model, preprocessor
    apply_threads(threads, rt.model_cfg)
    folder = _data_for(rt, Path(checkpoint), data, dataset)
    kw = dict(checkpoint=str(checkpoint), seed=seed, batch_size=batch_size, threshold=threshold, progress=progress)
    result, rows = evaluate(rt, folder, split, text_mode, rt.cfg, **kw)
    baseline = None
    if text_mode != "as-is" and compare and result.uses_text:
        baseline, _ = evaluate(rt, folder, split, "as-is", rt.cfg, **kw)
    return EvalRun(result, rows, Path(checkpoint), folder, baseline)
