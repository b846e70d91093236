"""Evaluate a model on one split of a prepared DATA_DIR: per-image Dice/IoU (LViT/RecLMIS protocol) and global.

Text modes measure how much the model relies on the note:

- ``as-is``: each image with its own note (the benchmark number);
- ``shuffle``: each image gets another image's note (a seeded derangement; where the split allows it, the
  note it gets also differs in text from its own);
- ``empty``: every note is blank.

The drop in Dice from ``as-is`` to ``shuffle``/``empty`` is the measure of reliance on the note.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import RunConfig
from ..device import resolve_device
from ..errors import ConfigError
from ..metrics.dice import ScoreAccumulator
from ..metrics.leakage import LeakageAccumulator, PairLeakageAccumulator
from ..data.preprocessor import Preprocessor
from ..models.reclmis import RecLMIS
from ..runtime.base import Runtime

log = logging.getLogger(__name__)

TEXT_MODES = ("as-is", "shuffle", "empty")

#: ``progress(done, total)`` in images, main process.
EvalProgressFn = Callable[[int, int], None]


@dataclass
class EvalResult:
    """Scores of one split; :meth:`to_dict` gives the JSON of ``reclmis eval`` (keys fixed by the contract)."""

    dice: float  # per-image mean Dice, 0..1
    miou: float  # per-image mean IoU, 0..1
    dice_global: float  # Dice from pixel counts pooled over the split
    iou_global: float
    n_images: int
    split: str
    checkpoint: str
    text: str  # as-is | shuffle | empty
    threshold: float = 0.5
    uses_text: bool = True  # False for an image-only checkpoint (text mode then has no effect)
    mirror: bool = False  # test-time mirroring was on (infer.mirror / --mirror)
    # Leakage (only when the manifest has lesion_labels): share of lesions the note does not name that are
    # predicted anyway, on a named lung at an unnamed level, and on the other lung (see metrics/leakage.py).
    leak_named_side_unnamed_level: float | None = None
    leak_other_side: float | None = None
    n_unnamed_lesions_named_side: int | None = None
    n_unnamed_lesions_other_side: int | None = None
    # Counterfactual pairs (manifest column `pair`: same pixels, two notes, two masks): mean Dice over them.
    dice_counterfactual: float | None = None
    n_counterfactual: int | None = None
    # Selection on the pairs (no zone labels needed, see metrics/leakage.PairLeakageAccumulator): share of the
    # pixels of the lesions a note does not name that its mask covers, and of those it names.
    pair_leakage: float | None = None
    pair_named_recall: float | None = None
    n_pairs: int | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        optional = ("leak_", "n_unnamed", "dice_counterfactual", "n_counterfactual", "pair_", "n_pairs")
        return {k: v for k, v in out.items() if v is not None or not k.startswith(optional)}


def shuffled_notes(notes: Sequence[str], seed: int = 0) -> list[str]:
    """A seeded derangement: item ``i`` gets the note of some ``j != i``, whose text also differs where possible.

    Deterministic for a given ``seed`` and list. With fewer than two distinct notes, texts cannot all differ; with
    one note, it is returned unchanged.
    """
    n = len(notes)
    if n < 2:
        return list(notes)
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)

    def bad(i: int) -> bool:
        return perm[i] == i or (notes[perm[i]] == notes[i] and len(set(notes)) > 1)

    for _ in range(3):
        for i in range(n):
            if not bad(i):
                continue
            # swap with a partner so that both positions become good
            for j in rng.permutation(n):
                if j == i:
                    continue
                pi, pj = perm[j], perm[i]
                ok_i = pi != i and notes[pi] != notes[i]
                ok_j = pj != j and notes[pj] != notes[j]
                if ok_i and ok_j:
                    perm[i], perm[j] = pi, pj
                    break
            else:  # no fully good swap: at least avoid keeping its own note
                for j in range(n):
                    if j != i and perm[j] != i and perm[i] != j:
                        perm[i], perm[j] = perm[j], perm[i]
                        break
        if not any(bad(i) for i in range(n)):
            break
    same_text = sum(notes[perm[i]] == notes[i] for i in range(n))
    if same_text:
        log.info("text shuffle: %d of %d images kept a note with the same text (the split has too few distinct notes)",
                 same_text, n)
    return [notes[int(perm[i])] for i in range(n)]


def notes_for_mode(notes: Sequence[str], mode: str, seed: int = 0) -> list[str]:
    """Notes to feed the model under a text mode."""
    if mode == "as-is":
        return list(notes)
    if mode == "shuffle":
        return shuffled_notes(notes, seed)
    if mode == "empty":
        return [""] * len(notes)
    raise ConfigError(f"text mode must be one of {', '.join(TEXT_MODES)}, got '{mode}'")


def _device(device: str | torch.device | None) -> torch.device:
    return resolve_device(device)


@torch.no_grad()
def evaluate(
    model: RecLMIS | Runtime,
    data_dir: str | Path,
    split: str = "test",
    text_mode: str = "as-is",
    cfg: RunConfig | None = None,
    *,
    preprocessor: Preprocessor | None = None,
    checkpoint: str = "",
    seed: int = 0,
    batch_size: int | None = None,
    threshold: float | None = None,
    device: str | torch.device | None = None,
    progress: EvalProgressFn | None = None,
) -> tuple[EvalResult, list[dict[str, Any]]]:
    """Score ``model`` on ``split`` of ``data_dir``.

    Args:
        model: a :class:`~reclmis_core.runtime.base.Runtime` (``open_runtime``: a checkpoint or an export, with
            the preprocessor it was trained with), or an in-memory ``RecLMIS`` (its inference part is used).
        data_dir: prepared folder with ``manifest.csv``.
        split: train, val or test.
        text_mode: as-is, shuffle or empty (see the module docstring).
        cfg: the run config (threshold, batch size, loader workers); default the runtime's (a checkpoint's).
        preprocessor: for an in-memory model, the preprocessing it was trained with (default: from ``cfg``, gray,
            as ``Predictor.from_model``); a runtime brings its own.
        checkpoint: label stored in the result.
        seed: seed of the shuffle derangement.

    Returns:
        ``(EvalResult, rows)``; one row per image: id, note (as fed), dice, iou, fg_pred, fg_true
        (+ original_note when the notes were changed).
    """
    from ..data.dataset import ManifestDataset, collate_fn

    if text_mode not in TEXT_MODES:
        raise ConfigError(f"text mode must be one of {', '.join(TEXT_MODES)}, got '{text_mode}'")
    if isinstance(model, Runtime):
        rt = model
    else:
        from ..runtime.torch_runtime import TorchRuntime

        rt = TorchRuntime(model, cfg or RunConfig(), _device(device), preprocessor=preprocessor)
    cfg = cfg or rt.cfg or RunConfig()
    thr = rt.threshold if threshold is None else threshold
    # the runtime's preprocessor (the checkpoint's): the pixels predict feeds for the same file
    ds = ManifestDataset(data_dir, split, data_cfg=cfg.data, preprocessor=rt.preprocessor)
    uses_text = rt.uses_text
    if not uses_text and text_mode != "as-is":
        log.warning("this checkpoint is image-only: --text %s has no effect", text_mode)
    fed = dict(zip(ds.ids, notes_for_mode(ds.notes, text_mode, seed)))
    original = dict(zip(ds.ids, ds.notes))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=batch_size or cfg.infer.batch_size, shuffle=False, collate_fn=collate_fn,
        num_workers=cfg.data.num_workers,
    )
    scores = ScoreAccumulator()
    leakage = LeakageAccumulator() if ds.has_lesion_labels else None
    pairs = PairLeakageAccumulator(dict(zip(ds.ids, ds.frame["pair"])) if "pair" in ds.frame.columns else {})
    rows = _score(rt, loader, fed, original if text_mode != "as-is" else None, thr, (scores, leakage, pairs),
                  progress)
    res = scores.result()
    result = EvalResult(res.dice, res.miou, res.dice_global, res.iou_global, res.n_images, split, checkpoint,
                        text_mode, thr, uses_text, rt.mirror)
    _add_pairs_and_leakage(result, ds, rows, leakage, pairs)
    log.info("%s split (%d images, text %s): Dice %.4f, mIoU %.4f", split, res.n_images, text_mode, res.dice,
             res.miou)
    return result, rows


def _score(rt: Runtime, loader: Any, fed: dict[str, str], original: dict[str, str] | None, thr: float,
           accumulators: tuple[ScoreAccumulator, LeakageAccumulator | None, PairLeakageAccumulator],
           progress: EvalProgressFn | None) -> list[dict[str, Any]]:
    """Run ``rt`` over the loader's batches with the ``fed`` notes into the (scores, leakage, pairs)
    ``accumulators``; one row per image (``original`` notes added when the text mode changed them)."""
    scores, leakage, pairs = accumulators
    rows: list[dict[str, Any]] = []
    total = len(loader.dataset)
    for batch in loader:
        notes = [fed[i] for i in batch["id"]]
        logits = rt.forward(batch["image"], notes)[0]
        pred = (torch.sigmoid(logits.float()) > thr).squeeze(1).cpu().numpy()
        target = (batch["mask"] > 0.5).squeeze(1).numpy()
        dice, iou = scores.update(pred, target)
        k = len(dice)
        for j, rid in enumerate(batch["id"]):
            row = {"id": rid, "note": notes[j], "dice": float(dice[j]), "iou": float(iou[j]),
                   "fg_pred": scores.fg_pred[-k + j], "fg_true": scores.fg_true[-k + j]}
            if original is not None:
                row["original_note"] = original[rid]
            pairs.update(rid, pred[j], target[j])
            if leakage is not None:
                leaks = leakage.update(pred[j], target[j], batch["lesion_labels"][j].numpy())
                row["leaked_named_side"], row["leaked_other_side"] = leaks["same"][1], leaks["other"][1]
            rows.append(row)
        if progress is not None:
            progress(len(rows), total)
    return rows


def _add_pairs_and_leakage(result: EvalResult, ds: Any, rows: list[dict[str, Any]],
                           leakage: LeakageAccumulator | None, pairs: PairLeakageAccumulator) -> None:
    """Counterfactual-pair Dice and pair leakage (manifest column ``pair``) and zone leakage (``lesion_labels``)
    into ``result``."""
    if "pair" in ds.frame.columns:
        in_pair = {i for i, p in zip(ds.ids, ds.frame["pair"]) if isinstance(p, str) and p}
        cf = [r["dice"] for r in rows if r["id"] in in_pair]
        if cf:
            result.dice_counterfactual, result.n_counterfactual = float(np.mean(cf)), len(cf)
    paired = pairs.result()
    if paired is not None:
        result.pair_leakage, result.pair_named_recall = paired.pair_leakage, paired.pair_named_recall
        result.n_pairs = paired.n_pairs
    if leakage is not None:
        leak = leakage.result()
        result.leak_named_side_unnamed_level = leak.leak_named_side_unnamed_level
        result.leak_other_side = leak.leak_other_side
        result.n_unnamed_lesions_named_side = leak.n_named_side_unnamed_level
        result.n_unnamed_lesions_other_side = leak.n_other_side


def evaluate_checkpoint(
    checkpoint: str | Path,
    data_dir: str | Path,
    split: str = "test",
    text_mode: str = "as-is",
    *,
    device: str | torch.device | None = None,
    **kwargs: Any,
) -> tuple[EvalResult, list[dict[str, Any]]]:
    """Open a checkpoint folder or an export (:func:`~reclmis_core.runtime.open_runtime`, with its stored
    preprocessor) and :func:`evaluate` it."""
    from ..runtime.open import open_runtime

    rt = open_runtime(checkpoint, device="auto" if device is None else str(device))
    return evaluate(rt, data_dir, split, text_mode, checkpoint=str(checkpoint), **kwargs)
