"""Latency per backend: each name of the backend table (``reclmis_core.runtime.backends``) built as the runtime
predict and eval use, checked against eager fp32 on sample images, then timed (CUDA events on a GPU)."""

from __future__ import annotations

import copy
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import RunConfig
from ..data.preprocessor import Preprocessor
from ..errors import ConfigError
from ..export.samples import SAMPLE_NOTES, sample_images
from ..metrics.dice import dice_iou_per_image
from ..runtime.backends import backend_spec
from ..runtime.base import Runtime
from ..runtime.open import open_runtime
from .bench_config import BenchConfig


log = logging.getLogger(__name__)


@dataclass
class LatencyRow:
    backend: str
    batch: int
    device: str
    text_encoder: str  # "outside" (features precomputed) | "inside" (encoded in the timed region)
    ms_per_image_median: float | None
    ms_p90: float | None  # 90th percentile, ms per image
    runs: int = 0
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    speedup_vs_eager: float | None = None  # eager fp32 median / this median, same batch and text mode, same run
    max_prob_diff: float | None = None  # vs eager fp32 on the sample images
    mask_dice_vs_eager: float | None = None  # Dice between this backend's and eager fp32's masks
    dice: float | None = None  # mean per-image Dice vs ground truth on --data's split (this backend)
    peak_memory_mb: float | None = None  # CUDA: peak allocated memory while this backend ran


SegFn = Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
TextFn = Callable[[Tensor, Tensor], Tensor] | None


def note_tokens(model: Any, text_len: int, batch: int) -> tuple[Tensor, Tensor]:
    """(input_ids, attention_mask) of ``batch`` notes of exactly ``text_len`` tokens (a real note, cut or cycled)."""
    if text_len > model.max_length:
        raise ConfigError(f"--text-len {text_len} exceeds the model's max note length ({model.max_length} tokens)")
    if text_len < 2:
        raise ConfigError(f"--text-len must be >= 2, got {text_len}")
    rows = []
    for i in range(batch):
        ids = model.tokenize([SAMPLE_NOTES[i % len(SAMPLE_NOTES)]]).input_ids[0].tolist()
        body = ids[1:-1] or ids
        need = text_len - 2
        body = (body * (need // len(body) + 1))[:need]
        rows.append([ids[0], *body, ids[-1]])
    ids = torch.tensor(rows, dtype=torch.long)
    return ids, torch.ones_like(ids)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


class Skip(Exception):
    """A backend is not available here (the reason is reported in the table)."""


@dataclass
class BenchContext:
    model: Any  # the training model (TorchRuntime takes its inference part)
    run_cfg: RunConfig
    preprocessor: Preprocessor  # the model's: in the exports bench writes and in its torch runtimes
    device: torch.device
    tmp: Path  # scratch folder for the exports bench writes
    threads: int = 1
    calib: str | None = None  # prepared DATA_DIR for int8 calibration (bench --data), else phantoms
    checkpoint: str | None = None  # the checkpoint folder (bench --checkpoint): torch backends open it
    exports: dict[str, Path] = field(default_factory=dict)  # artefact kind (onnx, onnx-int8, torch-export) -> folder


def _export(ctx: BenchContext, fmt: str) -> Path:
    """The model exported as artefact ``fmt`` (once per bench run) into the scratch folder."""
    from ..export import export_model

    if fmt not in ctx.exports:
        inf = ctx.model.for_inference()
        cpu_inf = inf if ctx.device.type == "cpu" else copy.deepcopy(inf).cpu()
        try:  # the exporter checks its requirements (onnx, onnxruntime, onnxscript) first
            export_model(cpu_inf, fmt, ctx.tmp / fmt, cfg=ctx.run_cfg, preprocessor=ctx.preprocessor)
        except ConfigError as exc:
            raise Skip(str(exc)) from None
        ctx.exports[fmt] = ctx.tmp / fmt
    return ctx.exports[fmt]


def _int8_export(ctx: BenchContext) -> Path:
    if "onnx-int8" not in ctx.exports:
        from ..export.quantize import calibration_set, quantize_export

        fp32 = _export(ctx, "onnx")
        calib = calibration_set(ctx.run_cfg, ctx.calib, uses_text=ctx.model.seg.uses_text,
                                preprocessor=ctx.preprocessor)
        try:
            quantize_export(fp32, ctx.tmp / "onnx-int8", calib)
        except (ImportError, RuntimeError, ValueError) as exc:
            raise Skip(f"quantization failed: {exc}") from None
        ctx.exports["onnx-int8"] = ctx.tmp / "onnx-int8"
    return ctx.exports["onnx-int8"]


def build_runtime(name: str, ctx: BenchContext) -> Runtime:
    """The runtime the backend table names (Skip when this machine cannot run it): an artefact opened with
    ``open_runtime`` (the checkpoint, or the export bench writes of the model); a preset-only model, which has no
    folder, runs in memory."""
    spec = backend_spec(name)
    if spec.cuda_only and ctx.device.type != "cuda":
        raise Skip(f"{spec.precision} runs on CUDA only")
    if spec.precision == "int8" and ctx.device.type != "cpu":
        raise Skip("int8 QDQ is measured on CPU only")
    try:
        if spec.runtime != "torch":
            folder = _int8_export(ctx) if spec.precision == "int8" else _export(ctx, spec.runtime)
            return open_runtime(folder, str(ctx.device), threads=ctx.threads, backend=spec.runtime)
        if ctx.checkpoint is not None:
            return open_runtime(ctx.checkpoint, str(ctx.device), spec.precision, backend="torch", fast=spec.fast,
                                compile=spec.compile)
        from ..runtime.torch_runtime import TorchRuntime

        return TorchRuntime(ctx.model, ctx.run_cfg, ctx.device, precision=spec.precision, fast=spec.fast,
                            compile=spec.compile, preprocessor=ctx.preprocessor)
    except ConfigError as exc:
        raise Skip(str(exc)) from None


def time_fn(fn: Callable[[], Any], runs: int, warmup: int, device: torch.device) -> list[float]:
    """Milliseconds per call, ``runs`` timed calls after ``warmup`` untimed ones (CUDA events on GPU)."""
    for _ in range(warmup):
        fn()
    times = []
    cuda = device.type == "cuda"
    for _ in range(runs):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def _stats(times: list[float], batch: int) -> tuple[float, float]:
    per = [t / batch for t in times]
    return round(statistics.median(per), 2), round(float(np.percentile(per, 90)), 2)




def _split_dice(seg_fn: SegFn, text_fn: TextFn, tokenize: Callable[[list[str]], Any] | None,
                split: tuple[Tensor, np.ndarray, list[str]], chunk: int, threshold: float) -> float:
    from ..metrics.dice import dice_iou_per_image

    images, masks, notes = split
    preds = []
    for i in range(0, images.shape[0], chunk):
        x = images[i : i + chunk]
        if tokenize is None:
            logits = seg_fn(x, None, None)
        else:
            tok = tokenize(notes[i : i + chunk])
            logits = seg_fn(x, text_fn(tok.input_ids, tok.attention_mask), tok.attention_mask)
        preds.append((torch.sigmoid(logits.float()) > threshold).squeeze(1).cpu().numpy())
    dice, _ = dice_iou_per_image(np.concatenate(preds), masks)
    return round(float(dice.mean()), 5)


def measure_latency(ctx: BenchContext, cfg: BenchConfig, say: Callable[[str], None],
                     split: tuple[Tensor, np.ndarray, list[str]] | None = None,
                     rows: list[LatencyRow] | None = None) -> list[LatencyRow]:
    rows = [] if rows is None else rows
    uses_text = bool(ctx.model.seg.uses_text)
    dev = cfg.device
    n_agree = 4
    agree_images = sample_images(ctx.run_cfg, n_agree, seed=5)
    agree_ids, agree_mask = (note_tokens(ctx.model, cfg.text_len, n_agree) if uses_text else (None, None))
    reference: np.ndarray | None = None
    eager_ms: dict[tuple[int, str], float] = {}
    modes = ["outside", "inside"] if (uses_text and cfg.text_inside) else ["outside"]
    backends = list(cfg.backends)
    if "eager" in backends:  # eager first: the others are compared with it
        backends.remove("eager")
        backends.insert(0, "eager")
    for name in backends:
        say(f"latency: {name} ({backends.index(name) + 1}/{len(backends)}), batch sizes "
            f"{', '.join(map(str, cfg.batch_sizes))}")
        try:
            rt = build_runtime(name, ctx)
        except Skip as exc:
            log.info("backend %s skipped: %s", name, exc)
            rows.append(LatencyRow(name, 0, dev, "-", None, None, status="skipped", note=str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one backend failing must not sink the report
            log.warning("backend %s failed to build: %s", name, exc)
            rows.append(LatencyRow(name, 0, dev, "-", None, None, status="failed", note=_short(exc)))
            continue
        seg_fn, text_fn, note = rt.segment, (rt.encode_ids if uses_text else None), rt.description
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(ctx.device)
        t_first = time.perf_counter()
        try:
            probs, max_diff, dice = _agreement(seg_fn, text_fn, agree_images, agree_ids, agree_mask,
                                               cfg.batch_sizes[0], ctx.run_cfg.infer.threshold, reference)
        except Exception as exc:  # noqa: BLE001 - e.g. torch.compile failing on this machine
            log.warning("backend %s failed on its first run: %s", name, _short(exc))
            rows.append(LatencyRow(name, 0, dev, "-", None, None, status="failed", note=_short(exc)))
            continue
        if name.startswith("compile"):
            note += f"; first call (compilation) {time.perf_counter() - t_first:.0f} s"
        if name == "eager":
            reference = probs
        split_dice = None
        if split is not None:
            say(f"  scoring {name} on {cfg.split} ({len(split[2])} images)")
            split_dice = _split_dice(seg_fn, text_fn, ctx.model.tokenize if uses_text else None, split,
                                     cfg.batch_sizes[0], ctx.run_cfg.infer.threshold)
        for batch in cfg.batch_sizes:
            images = sample_images(ctx.run_cfg, batch, seed=batch)
            ids = mask = feats = None
            if uses_text:
                ids, mask = note_tokens(ctx.model, cfg.text_len, batch)
                feats = text_fn(ids, mask)
            for mode in modes:
                if mode == "outside":
                    fn = (lambda: seg_fn(images, feats, mask))  # noqa: E731
                else:
                    fn = (lambda: seg_fn(images, text_fn(ids, mask), mask))  # noqa: E731
                try:
                    times = time_fn(fn, cfg.runs, cfg.warmup, ctx.device)
                except Exception as exc:  # noqa: BLE001
                    log.warning("backend %s failed at batch %d: %s", name, batch, exc)
                    rows.append(LatencyRow(name, batch, dev, mode, None, None, status="failed", note=_short(exc)))
                    continue
                med, p90 = _stats(times, batch)
                peak = (round(torch.cuda.max_memory_allocated(ctx.device) / 2**20, 1)
                        if ctx.device.type == "cuda" else None)
                if name == "eager":
                    eager_ms[(batch, mode)] = med
                base = eager_ms.get((batch, mode))
                rows.append(LatencyRow(
                    name, batch, dev, mode, med, p90, runs=len(times), note=note,
                    speedup_vs_eager=round(base / med, 2) if base and med else None,
                    max_prob_diff=None if max_diff is None else round(max_diff, 6),
                    mask_dice_vs_eager=None if dice is None else round(dice, 5), dice=split_dice,
                    peak_memory_mb=peak,
                ))
                say(f"  {name} batch {batch} text {mode}: {med:.1f} ms/image (p90 {p90:.1f})")
    return rows


def _agreement(
    seg_fn: SegFn, text_fn: TextFn, images: Tensor, ids: Tensor | None, mask: Tensor | None, chunk: int,
    threshold: float, reference: np.ndarray | None,
) -> tuple[np.ndarray, float | None, float | None]:
    """Probabilities on the agreement images, and max |diff| / mask Dice vs the eager fp32 reference."""
    outs = []
    for i in range(0, images.shape[0], chunk):
        sl = slice(i, i + chunk)
        if ids is None:
            outs.append(seg_fn(images[sl], None, None))
        else:
            outs.append(seg_fn(images[sl], text_fn(ids[sl], mask[sl]), mask[sl]))
    probs = torch.sigmoid(torch.cat(outs).float().cpu()).numpy()
    if reference is None:
        return probs, None, None
    dice, _ = dice_iou_per_image(probs[:, 0] > threshold, reference[:, 0] > threshold)
    return probs, float(np.abs(probs - reference).max()), float(dice.mean())
