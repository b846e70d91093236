"""Static int8 of an ONNX export's segmentation graph, calibrated on the user's own prepared images.

``quantize_export(src, dst, calib)`` reads an fp32 export folder (``reclmis export --format onnx``) and writes an
int8 one beside it: the segmentation graph as static QDQ int8 (per-channel int8 weights, uint8 activations,
MinMax calibration; convolutions only: they are ~95 % of the MACs, and the attention and the text encoder stay
fp32; the first 2-D convolution, which reads the image, the last, which writes the logits, and the note's 1-D
convolution stay fp32 too: they cost <1 % of the MACs, and on a trained tiny model quantizing the first and last
lowered the masks' Dice vs fp32 from 0.994 to 0.980),
the text graph and tokenizer files copied, and the sidecar naming the int8 graph and saying how it was
calibrated and how far its masks are from fp32's on held-out images (``quantization``). Both
``reclmis export --int8`` and ``reclmis bench --backends onnx-int8`` go through it.

Agreement (:func:`mask_agreement`) is measured on images the calibration did not see (:func:`holdout_set`): on
the calibration images themselves the activation ranges fit by construction, which flatters the int8 graph. A
pair of masks that are both empty says nothing about agreement and is not counted (it is reported as
``n_both_empty``); when every pair is empty the agreement is unknown (``None``), never 1.

Calibration images come from a prepared DATA_DIR (``--calib``: its train split, else any split, through the
model's own preprocessing, with their notes); without one, phantom images and sample notes, with a warning.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..artefacts import SIDECAR, read_sidecar, write_sidecar
from ..config import RunConfig
from ..data.preprocessor import Preprocessor
from ..errors import ConfigError, DataError
from ..metrics.dice import dice_iou_per_image
from ..runtime.onnx_segmenter import _sigmoid

log = logging.getLogger(__name__)

INT8_FILE = "segmentation.int8.onnx"
DEFAULT_CALIB_IMAGES = 32
DEFAULT_MIN_DICE = 0.98  # --int8-min-dice: mean mask Dice vs fp32 on held-out images an int8 export needs


@dataclass
class Calibration:
    images: np.ndarray  # (N, C, S, S) float32, preprocessed as the model expects
    notes: list[str]  # one per image ([] for an image-only model)
    source: str  # where they came from (for the sidecar and the report)


def calibration_set(cfg: RunConfig, data_dir: str | Path | None, n: int = DEFAULT_CALIB_IMAGES,
                    uses_text: bool = True, preprocessor: Preprocessor | None = None) -> Calibration:
    """Up to ``n`` images (+ notes) of ``data_dir`` (train split first), evenly spread, through ``preprocessor``
    (the model's; default from ``cfg``, gray); phantoms without ``data_dir``."""
    if n < 1:
        raise ConfigError(f"--calib-images must be >= 1, got {n}")
    if data_dir is None:
        from .samples import SAMPLE_NOTES, sample_images

        log.warning("int8 calibrated on %d phantom images (no --calib DATA_DIR given): the activation ranges may not "
                    "fit your scans; pass --calib with a prepared folder of your own images", n)
        images = sample_images(cfg, n, seed=11).numpy()
        notes = [SAMPLE_NOTES[i % len(SAMPLE_NOTES)] for i in range(n)] if uses_text else []
        return Calibration(images.astype(np.float32), notes, f"{n} phantom images (no --calib given)")
    split, idx, ds = _calibration_indices(cfg, data_dir, n, preprocessor)
    items = [ds[int(i)] for i in idx]
    images = np.stack([it["image"].numpy() for it in items]).astype(np.float32)
    notes = [it["note"] for it in items] if uses_text else []
    return Calibration(images, notes, f"{len(items)} images of {Path(data_dir).resolve()} ({split} split)")


def _calibration_indices(cfg: RunConfig, data_dir: str | Path, n: int, preprocessor: Preprocessor | None = None
                         ) -> tuple[str, np.ndarray, Any]:
    """(split, indices, dataset) of the calibration images of a DATA_DIR: its train split first, evenly spread."""
    from ..data.dataset import ManifestDataset, read_manifest
    from ..data.folders import check_data_dir

    check_data_dir(data_dir, flag="--calib")
    splits = read_manifest(data_dir)["split"].value_counts()
    split = "train" if splits.get("train", 0) else next((s for s in ("val", "test") if splits.get(s, 0)), None)
    if split is None:
        raise DataError(f"--calib {data_dir}: the manifest lists no images")
    ds = ManifestDataset(data_dir, split, data_cfg=cfg.data, preprocessor=preprocessor or Preprocessor.from_config(cfg))
    idx = np.unique(np.linspace(0, len(ds) - 1, num=min(n, len(ds))).round().astype(int))
    return split, idx, ds


def holdout_set(cfg: RunConfig, data_dir: str | Path | None, n: int = DEFAULT_CALIB_IMAGES,
                uses_text: bool = True, preprocessor: Preprocessor | None = None) -> Calibration:
    """Up to ``n`` images (+ notes) that :func:`calibration_set` with the same arguments does not take: the other
    splits of ``data_dir`` first (val, test), then the calibration split's remaining images; phantoms of another
    seed without ``data_dir``. DataError when the DATA_DIR has no image left over."""
    if data_dir is None:
        from .samples import SAMPLE_NOTES, sample_images

        images = sample_images(cfg, n, seed=12).numpy()
        notes = [SAMPLE_NOTES[(i + 1) % len(SAMPLE_NOTES)] for i in range(n)] if uses_text else []
        return Calibration(images.astype(np.float32), notes, f"{n} phantom images (another seed)")
    from ..data.dataset import ManifestDataset, read_manifest

    preprocessor = preprocessor or Preprocessor.from_config(cfg)
    split, idx, ds = _calibration_indices(cfg, data_dir, n, preprocessor)
    counts = read_manifest(data_dir)["split"].value_counts()
    items: list[dict[str, Any]] = []
    where = []
    for other in ("val", "test", "train"):
        if other == split or not counts.get(other, 0) or len(items) >= n:
            continue
        other_ds = ManifestDataset(data_dir, other, data_cfg=cfg.data, preprocessor=preprocessor)
        take = np.unique(np.linspace(0, len(other_ds) - 1, num=min(n - len(items), len(other_ds))).round().astype(int))
        items += [other_ds[int(i)] for i in take]
        where.append(other)
    rest = [i for i in range(len(ds)) if i not in set(idx.tolist())][: max(0, n - len(items))]
    if rest:
        items += [ds[i] for i in rest]
        where.append(f"{split}, not used for calibration")
    if not items:
        raise DataError(f"--calib {data_dir}: no image is left out of the calibration to measure the int8 graph's "
                        f"agreement with fp32 on; lower --calib-images (now {n}) or add a val split")
    images = np.stack([it["image"].numpy() for it in items]).astype(np.float32)
    notes = [it["note"] for it in items] if uses_text else []
    return Calibration(images, notes, f"{len(items)} held-out images of {Path(data_dir).resolve()} "
                                      f"({', '.join(where)})")


def mask_agreement(p32: np.ndarray, p8: np.ndarray, threshold: float) -> dict[str, Any]:
    """Mean and min per-image Dice of the int8 masks vs fp32's over the pairs where at least one is not empty;
    ``None`` when every pair is empty in both (nothing to compare), with the counts."""
    a, b = p32 > threshold, p8 > threshold
    flat = (a.reshape(a.shape[0], -1).any(axis=1)) | (b.reshape(b.shape[0], -1).any(axis=1))
    dice = dice_iou_per_image(a[flat], b[flat])[0] if flat.any() else np.zeros(0)
    return {
        "mask_dice_vs_fp32": round(float(dice.mean()), 5) if dice.size else None,
        "min_mask_dice_vs_fp32": round(float(dice.min()), 5) if dice.size else None,
        "n_compared": int(flat.sum()),
        "n_both_empty": int((~flat).sum()),
        "max_prob_diff_vs_fp32": round(float(np.abs(p32 - p8).max()), 5),
        "threshold": threshold,
    }


class _Reader:
    """Feeds the calibration images (+ their notes' features from the fp32 text graph) to the quantizer."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._it = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)


def _feeds(rt: Any, calib: Calibration) -> list[dict[str, np.ndarray]]:
    feeds = []
    for i in range(calib.images.shape[0]):
        item = {"image": calib.images[i : i + 1]}
        if rt.uses_text:
            feats, mask = rt.encode_text([calib.notes[i]])
            item.update(text_features=feats, text_mask=mask)
        feeds.append(item)
    return feeds


def _probs(rt: Any, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    out = []
    for f in feeds:
        logits = rt.segment(f["image"], f.get("text_features"), f.get("text_mask"))
        out.append(_sigmoid(logits[:, 0]))
    return np.concatenate(out)


def _fp32_convs(path: Path) -> list[str]:
    """Conv nodes kept fp32: the first and the last 2-D convolution (ONNX graphs are topologically sorted) and
    every 1-D one (the note's Conv1d: a few tokens, cheap, and it carries the note)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    rank = {init.name: len(init.dims) for init in graph.initializer}
    convs = [(n.name, rank.get(n.input[1], 4)) for n in graph.node if n.op_type == "Conv"]
    conv2d = [name for name, r in convs if r == 4]
    keep = {name for name, r in convs if r != 4}
    if conv2d:
        keep |= {conv2d[0], conv2d[-1]}
    return sorted(keep)


def quantize_export(src: str | Path, dst: str | Path, calib: Calibration,
                    holdout: Calibration | None = None) -> dict[str, Any]:
    """Write an int8 export of the fp32 export ``src`` into the new folder ``dst``; return its ``quantization``
    sidecar section, with the masks' agreement with fp32 (:func:`mask_agreement`) on ``holdout`` when given."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from ..runtime.onnx_segmenter import OnnxSegmenter

    src, dst = Path(src), Path(dst)
    sidecar = read_sidecar(src)
    if sidecar.get("quantization"):
        raise ConfigError(f"{src} is already an int8 export")
    fp32 = OnnxSegmenter(src, providers=["CPUExecutionProvider"])
    feeds = _feeds(fp32, calib)
    dst.mkdir(parents=True, exist_ok=True)
    seg_name = sidecar["graphs"]["segmentation"]["file"]
    for item in src.iterdir():  # everything but the fp32 segmentation graph (+ its external data)
        if item.name in (SIDECAR, seg_name) or item.name.startswith(seg_name + "."):
            continue
        (shutil.copytree if item.is_dir() else shutil.copy2)(item, dst / item.name)
    pre = dst / "segmentation.pre.onnx"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs per-tensor notes on the root logger
    try:
        quant_pre_process(str(src / seg_name), str(pre), skip_symbolic_shape=True)
        keep = _fp32_convs(pre)
        quantize_static(
            str(pre), str(dst / INT8_FILE), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=keep,
        )
    finally:
        root.setLevel(level)
        for leftover in dst.glob("segmentation.pre.onnx*"):
            leftover.unlink()
    section = {
        "kind": "static QDQ int8 (onnxruntime.quantization)", "weights": "int8, per channel",
        "activations": "uint8, MinMax", "ops": ["Conv"], "fp32_nodes": keep, "calibration": calib.source,
        "n_calibration_images": int(calib.images.shape[0]),
    }
    sidecar = dict(sidecar)
    sidecar["graphs"] = dict(sidecar["graphs"])
    sidecar["graphs"]["segmentation"] = {**sidecar["graphs"]["segmentation"], "file": INT8_FILE}
    sidecar["quantization"] = section
    write_sidecar(dst, sidecar)
    if holdout is not None:
        int8 = OnnxSegmenter(dst, providers=["CPUExecutionProvider"])
        held = _feeds(fp32, holdout)
        thr = float(sidecar["postprocessing"]["threshold"])
        section.update(agreement_images=holdout.source, **mask_agreement(_probs(fp32, held), _probs(int8, held), thr))
        write_sidecar(dst, sidecar)
    return section


def quantize_gated(fp32_dir: Path, out: Path, cfg: RunConfig, calib: str | Path | None, n: int, uses_text: bool,
                   min_dice: float, dest: Path, preprocessor: Preprocessor | None = None) -> dict[str, Any]:
    """Calibrate on ``calib`` (:func:`calibration_set`), quantize ``fp32_dir`` into ``out`` and measure agreement on
    :func:`holdout_set`; return the sidecar's ``quantization`` section. ExportError (the caller writes nothing to
    ``dest``) when the mean mask Dice is below ``min_dice`` or nothing can be compared (every held-out mask empty
    in both); ``min_dice`` 0 accepts any graph and the sidecar says so."""
    from .onnx import ExportError

    calibration = calibration_set(cfg, calib, n, uses_text, preprocessor)
    holdout = holdout_set(cfg, calib, n, uses_text, preprocessor)
    log.info("quantizing the segmentation graph to int8 (calibration: %s; agreement with fp32 on %s)",
             calibration.source, holdout.source)
    section = quantize_export(fp32_dir, out, calibration, holdout=holdout)
    dice = section.get("mask_dice_vs_fp32")
    if min_dice > 0 and (dice is None or dice < min_dice):
        measured = (f"mean Dice {dice:.4f} (min {section['min_mask_dice_vs_fp32']:.4f}, {section['n_compared']} "
                    f"images)" if dice is not None else
                    f"nothing: all {section['n_both_empty']} masks are empty in both (two empty masks are no evidence)")
        raise ExportError(
            f"the int8 graph's masks agree with fp32's at {measured} on {holdout.source}, below --int8-min-dice "
            f"{min_dice:g}; nothing was written to {dest} (calibrate on more or more typical images with --calib, "
            "export fp32, or pass --int8-min-dice 0 to accept it unchecked)"
        )
    section["int8_min_dice"] = min_dice
    section["agreement_gate"] = (f"passed: mean mask Dice {dice:.4f} >= {min_dice:g}" if min_dice > 0 else
                                 "not checked: exported with --int8-min-dice 0, which accepts any agreement")
    if min_dice == 0:
        log.warning("int8 graph accepted without an agreement check (--int8-min-dice 0); its masks agree with "
                    "fp32's at %s", "an unknown Dice (all masks empty)" if dice is None else f"mean Dice {dice:.4f}")
    side = read_sidecar(out)
    side["quantization"] = section
    write_sidecar(out, side)
    return section
