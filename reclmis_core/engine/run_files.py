"""What a training run writes and reads back: metrics.csv, the resume state (state/), the progress events and the
result; the trainer's counters (:class:`TrainerState`)."""

from __future__ import annotations

import csv
import io
import json
import logging
import pickle
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import CheckpointError
from ..utils import atomic_write_text
from ..checkpoint import read_checkpoint_config, replace_folder, write_checkpoint_files

log = logging.getLogger(__name__)

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"
METRIC_PARTS = ("loss", "seg", "dice", "bce", "clr", "cvr", "ccl", "poi", "layout")  # the objective's loss parts
# Their names in metrics.csv and the console: losses are named as losses (``dice_loss`` is 1 - soft Dice, next to
# ``val_dice``, the validation Dice score), never a bare ``dice``.
METRIC_COLUMNS = {k: (k if k == "loss" else f"{k}_loss") for k in METRIC_PARTS}


@dataclass
class ProgressEvent:
    """What the progress callback receives (main process only)."""

    kind: str  # "start" | "step" | "val_step" | "epoch" | "end"
    epoch: int  # 1-based epoch in progress (or just finished)
    epochs: int
    step: int = 0  # 1-based step within the epoch
    steps: int = 0  # steps per epoch
    parts: dict[str, float] = field(default_factory=dict)  # running means of the losses this epoch (metrics.csv names)
    images_per_s: float = 0.0
    eta_s: float = 0.0  # seconds left for the whole run
    record: dict[str, float] | None = None  # the metrics.csv row at "epoch"
    best: bool = False  # at "epoch": this epoch beat the run's best val Dice (a resumed run's saved best included)
    message: str = ""


ProgressFn = Callable[[ProgressEvent], None]


@dataclass
class TrainResult:
    run_dir: Path
    best_dice: float
    best_epoch: int
    epochs_done: int
    stopped_early: bool
    skipped_steps: int
    history: list[dict[str, float]]


@dataclass
class TrainerState:
    """Trainer counters saved with every checkpoint (JSON)."""

    epoch: int = 0  # completed epochs
    best_dice: float = -1.0
    best_epoch: int = 0
    bad_epochs: int = 0  # epochs since the best (early stopping)
    skipped_steps: int = 0
    global_step: int = 0


def write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    """metrics.csv: one row per epoch, loss parts named as losses, then val_dice, val_miou, lr, seconds."""
    names = METRIC_COLUMNS.values()
    cols = ["epoch", *[k for k in names if any(k in r for r in history)], "val_dice", "val_miou", "lr", "seconds"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in history:
        writer.writerow({k: (int(r[k]) if k == "epoch" else f"{r[k]:.6g}") for k in cols if k in r})
    atomic_write_text(path, buf.getvalue())


def read_metrics(path: Path) -> list[dict[str, float]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return [{k: (int(v) if k == "epoch" else float(v)) for k, v in row.items() if v not in ("", None)}
                for row in csv.DictReader(fh)]


def save_run_checkpoint(acc: Any, model: Any, cfg: RunConfig, state: TrainerState, dest: Path,
                        meta: dict[str, Any]) -> None:
    """Atomically write weights + config.json + state/ into ``dest`` (every process must call this)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    if acc.is_main_process:
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
    acc.wait_for_everyone()
    acc.save_state(str(tmp / STATE_DIR))
    if acc.is_main_process:
        write_checkpoint_files(model, cfg, tmp, meta)
        atomic_write_text(tmp / STATE_DIR / TRAINER_STATE, json.dumps(vars(state), indent=2))
        replace_folder(tmp, dest)
    acc.wait_for_everyone()


def load_run_state(acc: Any, folder: Path, model: Any, metrics_csv: Path) -> tuple[TrainerState, list[dict[str, float]]]:
    """Restore weights, optimizer, scheduler, RNG states (``acc.load_state``) from ``folder``; return the counters
    and the metrics history up to the saved epoch."""
    state_dir = folder / STATE_DIR
    doc = read_checkpoint_config(folder)
    if not (state_dir / TRAINER_STATE).is_file():
        raise CheckpointError(f"{folder} has no resume state ({state_dir / TRAINER_STATE}); it cannot be resumed")
    saved_procs = len(list(state_dir.glob("random_states_*.pkl")))
    if saved_procs and saved_procs != acc.num_processes:
        log.warning("%s was written by %d process(es), resuming with %d: the data order and random streams "
                    "will differ from an uninterrupted run", folder, saved_procs, acc.num_processes)
    if doc.get("max_length") and model.text_encoder is not None:
        model.max_length = int(doc["max_length"])
    try:
        # accelerate loads optimizer/scheduler/RNG files with torch.load(weights_only=True): a file holding
        # code (a crafted pickle) raises UnpicklingError here instead of running.
        acc.load_state(str(state_dir))
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{state_dir}: the resume state is incomplete, corrupt or not plain tensors ({reason}); refused "
            "without running anything from it. Resume from an intact run or start a new one"
        ) from None
    try:
        state = TrainerState(**json.loads((state_dir / TRAINER_STATE).read_text(encoding="utf-8")))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{state_dir / TRAINER_STATE}: not a reclmis trainer state ({exc})") from None
    history = [r for r in read_metrics(metrics_csv) if r["epoch"] <= state.epoch]
    return state, history
