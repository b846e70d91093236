"""Table II, measured: parameters, MACs/FLOPs, latency per backend, training throughput.

``run_benchmark(BenchConfig(...)) -> BenchReport``; ``BenchReport.to_json()`` gives the contract's keys. Nothing
here prints; the CLI renders the report.

Conventions (also in ``BenchReport.convention``):

- MACs are multiply-accumulates of convolutions, linear layers, matmuls and attention, counted by
  ``torch.utils.flop_counter.FlopCounterMode`` (2 FLOPs per MAC). Attention counts too: our layers write it as
  matmul + softmax, Hugging Face towers are built with eager attention, and a formula is registered for
  ``aten._scaled_dot_product_flash_attention_for_cpu`` (torch 2.13 counts that CPU kernel as 0). Element-wise
  ops, norms, pooling and softmax are not counted (as in the reference's counters).
- The RecLMIS paper's "24.1 GFLOPs" is MACs; its LViT "54.1 GFLOPs" is 2 x MACs. The report gives both
  ``gmacs_*`` and ``gflops_* = 2 x gmacs_*`` so like is compared with like.
- Latency is milliseconds per image (time of a batch / batch size): median and 90th percentile over ``runs`` timed
  runs after ``warmup`` untimed ones; with the text encoder outside the timed region (features precomputed, the
  deployment case of a note reused across images) and inside it (one note per image, encoded in the timed
  region). On CUDA, CUDA events with synchronisation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import RunConfig, build_config
from ..data.preprocessor import Preprocessor
from ..device import apply_threads, resolve_device
from ..errors import ConfigError, DataError
from ..utils import drop_log_messages
from ..device import bf16_support, cpu_name
from ..export.samples import SAMPLE_NOTES, sample_images
from ..runtime.backends import BENCH_BACKENDS, TABLE_II_BACKENDS, backend_spec
from .bench_config import BenchConfig
from .counting import _m, _reconciliation, count_flops, count_params
from .latency import BenchContext, LatencyRow, measure_latency, note_tokens, time_fn

log = logging.getLogger(__name__)

BACKENDS = BENCH_BACKENDS
DEFAULT_BACKENDS = TABLE_II_BACKENDS  # the full Table II run on a CPU (GPU_BACKENDS on CUDA)

CONVENTION = (
    "MACs = multiply-accumulates of conv/linear/matmul/attention (FlopCounterMode; attention included, "
    "elementwise/norm/softmax not counted); FLOPs = 2 x MACs. The RecLMIS paper's '24.1 GFLOPs' is MACs "
    "(compare with GMACs); its LViT '54.1 GFLOPs' is 2 x MACs (compare with GFLOPs)."
)

@dataclass
class BenchReport:
    source: str
    image_size: int
    text_len: int
    params_total_m: float
    params_trainable_m: float
    params_infer_m: float
    params_text_encoder_m: float
    params_recon_m: float
    params_train_only_m: float
    gmacs_infer: float
    gflops_infer: float
    gmacs_infer_with_text: float
    gflops_infer_with_text: float
    gmacs_train_fwd: float
    gflops_train_fwd: float
    latency: list[LatencyRow] = field(default_factory=list)
    train_images_per_s: float | None = None
    train_images_per_s_bf16: float | None = None  # bf16 autocast, where the device has bf16 (else None)
    train_batch: int = 0
    device_name: str = ""
    device: str = "cpu"
    torch_version: str = torch.__version__
    threads: int = 1
    cpu_capability: str = ""
    convention: str = CONVENTION
    reconciliation: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    dice_by_backend: dict[str, float] = field(default_factory=dict)  # with --data: mean per-image Dice
    load_average: list[float] = field(default_factory=list)  # 1-min load average before and after the latency runs
    data: str | None = None
    complete: bool = False  # False while measuring (a report written on the way, or cut by Ctrl-C)

    def to_json(self) -> dict[str, Any]:
        """The contract's keys (plus extras: source, conventions, reconciliation, per-row details)."""
        return dataclasses.asdict(dataclasses.replace(self, latency=list(self.latency)))


# --------------------------------------------------------------------------------------------------
# Model and inputs
# --------------------------------------------------------------------------------------------------


# The text tower's random-init warning suggests a training option (--text-encoder) that means nothing to bench,
# whose counts and timings do not depend on the weights.
_RANDOM_INIT = {name: ("RANDOMLY INITIALISED",)
                for name in ("reclmis_core.models.text.clip", "reclmis_core.models.text")}


def load_bench_model(cfg: BenchConfig) -> tuple[Any, RunConfig, Preprocessor, str]:
    """-> (training model in eval mode, run config, its preprocessor, source description)."""
    if cfg.checkpoint:
        from ..checkpoint import load_checkpoint

        model, run_cfg, doc = load_checkpoint(cfg.checkpoint)
        return model, run_cfg, Preprocessor.from_checkpoint(run_cfg, doc), f"checkpoint {cfg.checkpoint}"
    from ..models import build_model

    run_cfg = build_config(cfg.preset or "paper")
    corpus = SAMPLE_NOTES if run_cfg.model.text.encoder == "scratch" else None
    with drop_log_messages(_RANDOM_INIT):  # random weights are what bench wants; the report notes it
        model = build_model(run_cfg.model, corpus=corpus)
    init = "random init"
    return model.eval(), run_cfg, Preprocessor.from_config(run_cfg), f"preset {run_cfg.preset} ({init})"


# --------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


class _Rows(list):
    """The report's latency rows; every append also hands the report so far to ``on_update``."""

    def __init__(self, on_append: Callable[[], None]) -> None:
        super().__init__()
        self._on_append = on_append

    def append(self, row: Any) -> None:
        super().append(row)
        self._on_append()


REFERENCE_TEXT_LEN = 18  # tokens per note in the reference code (and the paper's Table II)


def run_benchmark(cfg: BenchConfig, progress: Callable[[str], None] | None = None,
                  on_update: Callable[[BenchReport], None] | None = None) -> BenchReport:
    """Count parameters and MACs, time every requested backend, measure a training step.

    Args:
        cfg: what to measure (see ``BenchConfig``).
        progress: optional callback receiving one short line per step (the CLI logs it).
        on_update: optional callback receiving the report after the counts and after every latency row
            (``complete`` False until the end), so a caller can write what was measured as it comes.

    Returns:
        BenchReport (``to_json()`` gives the contract keys).
    """
    say = progress or (lambda msg: log.info("%s", msg))
    for name in cfg.backends:  # an unknown name: ConfigError listing the available ones, before any work
        backend_spec(name)
    if any(b < 1 for b in cfg.batch_sizes) or not cfg.batch_sizes:
        raise ConfigError(f"--batch-sizes must be positive integers, got {cfg.batch_sizes}")
    device = resolve_device(cfg.device)
    if cfg.runs < 1 or cfg.warmup < 0:
        raise ConfigError("--runs must be >= 1 and --warmup >= 0")
    if cfg.data:  # before any expensive work
        _check_split(cfg)
    update = on_update or (lambda report: None)

    say("building the model")
    model, run_cfg, pre, source = load_bench_model(cfg)
    apply_threads(cfg.threads or None, run_cfg.model)
    inf = model.for_inference()
    size = run_cfg.model.image_size
    uses_text = inf.seg.uses_text
    if cfg.text_len is None:  # the reference's 18 tokens, unless the model cuts its notes shorter
        length = min(REFERENCE_TEXT_LEN, inf.max_length) if uses_text else REFERENCE_TEXT_LEN
        cfg = dataclasses.replace(cfg, text_len=length)

    # -- parameters --------------------------------------------------------------------------------
    p_total = count_params(model)
    p_train = count_params(model, trainable_only=True)
    p_infer = count_params(inf.seg)
    p_text = count_params(inf.text_encoder)
    p_recon = count_params(model.cvr) + count_params(model.clr)
    p_train_only = p_total - p_infer - p_text

    # -- compute (batch 1, CPU, fp32) --------------------------------------------------------------
    say("counting MACs")
    image = sample_images(run_cfg, 1, seed=3)
    ids = mask = feats = None
    if uses_text:
        ids, mask = note_tokens(inf, cfg.text_len, 1)
        with torch.inference_mode():
            feats = inf.text_encoder(ids, mask)
    with torch.inference_mode():
        f_infer = count_flops(lambda: inf.seg(image, feats, mask) if uses_text else inf.seg(image))
        f_text = count_flops(lambda: inf.text_encoder(ids, mask)) if uses_text else 0
    model.train()
    with torch.no_grad():
        f_train = count_flops(lambda: model(image, ids, mask, generator=torch.Generator().manual_seed(0)))
    model.eval()
    g = lambda f: round(f / 2e9, 3)  # noqa: E731
    report = BenchReport(
        source=source, image_size=size, text_len=cfg.text_len if uses_text else 0,
        params_total_m=_m(p_total), params_trainable_m=_m(p_train), params_infer_m=_m(p_infer),
        params_text_encoder_m=_m(p_text), params_recon_m=_m(p_recon), params_train_only_m=_m(p_train_only),
        gmacs_infer=g(f_infer), gflops_infer=round(f_infer / 1e9, 3),
        gmacs_infer_with_text=g(f_infer + f_text), gflops_infer_with_text=round((f_infer + f_text) / 1e9, 3),
        gmacs_train_fwd=g(f_train), gflops_train_fwd=round(f_train / 1e9, 3),
        device=str(device), threads=torch.get_num_threads(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_name()} ({torch.get_num_threads()} threads)",
    )
    if uses_text:
        report.reconciliation = _reconciliation(model, run_cfg, p_infer, p_text, report.gmacs_infer_with_text,
                                                report.gmacs_infer, cfg.text_len)
    report.notes.append(
        "gmacs_train_fwd: one training forward (text encoder, segmentation path, W heads, CVR+CLR) at batch 1; "
        "the loss terms (incl. the CCL similarity) are not counted"
    )
    if "random init" in source:
        report.notes.append("weights are randomly initialised: counts and timings are exact, predictions are not meaningful")

    update(report)

    # -- latency -----------------------------------------------------------------------------------
    report.latency = _Rows(lambda: update(report))
    if cfg.latency:
        report.load_average.append(_load())
        model.to(device)
        with tempfile.TemporaryDirectory(prefix="reclmis-bench-") as tmp:
            ctx = BenchContext(model, run_cfg, pre, device, Path(tmp), threads=torch.get_num_threads(),
                               calib=cfg.data, checkpoint=cfg.checkpoint or None)
            split = _load_split(cfg, run_cfg, pre) if cfg.data else None
            measure_latency(ctx, cfg, say, split, rows=report.latency)
        if split is not None:
            report.data = f"{cfg.data} ({cfg.split}, {len(split[2])} images)"
            report.dice_by_backend = {r.backend: r.dice for r in report.latency if r.dice is not None}
        model.cpu()
        report.load_average.append(_load())
        cores = os.cpu_count() or 1
        if device.type == "cpu" and max(report.load_average) > 1.25 * cores:
            report.notes.append(
                f"the machine was shared while timing (1-min load average {max(report.load_average):.1f} on {cores} "
                "CPUs): absolute ms are inflated; eager PyTorch (OpenMP spin-waiting) suffers more from contention "
                "than ONNX Runtime, so speed-ups over eager are overstated - rerun on an idle machine"
            )
    # -- training throughput -----------------------------------------------------------------------
    if cfg.train_batch > 0:
        say(f"timing training steps (batch {cfg.train_batch})")
        report.train_batch = cfg.train_batch
        report.train_images_per_s = _train_throughput(model, run_cfg, cfg, device)
        ok, why = bf16_support(device.type)
        if ok:
            say(f"timing training steps in bf16 (batch {cfg.train_batch})")
            report.train_images_per_s_bf16 = _train_throughput(model, run_cfg, cfg, device, torch.bfloat16)
        else:
            report.notes.append(f"train_images_per_s_bf16 not measured: {why}")
    report.latency = list(report.latency)
    report.complete = True
    update(report)
    return report


def _check_split(cfg: BenchConfig) -> None:
    """``--data`` is a prepared folder with images in ``--split`` (ConfigError/DataError otherwise)."""
    from ..data.dataset import read_manifest
    from ..data.folders import check_data_dir

    check_data_dir(cfg.data)
    n = int((read_manifest(cfg.data)["split"] == cfg.split).sum())
    if n == 0:
        raise DataError(f"--data {cfg.data} has no '{cfg.split}' images; pick another --split (train, val, test)")


def _load_split(cfg: BenchConfig, run_cfg: RunConfig, pre: Preprocessor) -> tuple[Tensor, np.ndarray, list[str]]:
    """(images through the model's preprocessor, masks bool (N,H,W), notes) of ``cfg.split`` of ``cfg.data``."""
    from ..data.dataset import ManifestDataset

    ds = ManifestDataset(cfg.data, cfg.split, data_cfg=run_cfg.data, preprocessor=pre)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    masks = torch.stack([it["mask"] for it in items]).squeeze(1).numpy() > 0.5
    return images, masks, [it["note"] for it in items]


def _train_throughput(model: Any, run_cfg: RunConfig, cfg: BenchConfig, device: torch.device,
                      autocast: torch.dtype | None = None) -> float | None:
    from ..engine.objective import RecLMISObjective

    b = cfg.train_batch
    images = sample_images(run_cfg, b, seed=21).to(device)
    masks = (images[:, :1] > images[:, :1].mean()).float()
    ids = mask = None
    if model.seg.uses_text:
        ids, mask = note_tokens(model, cfg.text_len, b)
        ids, mask = ids.to(device), mask.to(device)
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=run_cfg.train.lr, weight_decay=run_cfg.train.weight_decay)
    objective = RecLMISObjective(run_cfg.loss, run_cfg.model)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast) if autocast else contextlib.nullcontext():
            out = model(images, ids, mask)
            loss = objective(out, masks, model.logit_scale)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    try:
        times = time_fn(step, max(1, cfg.train_steps), 1, device)
    finally:
        model.eval().cpu()
    return round(b / (statistics.median(times) / 1e3), 3)


def _load() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return 0.0


__all__ = [
    "BACKENDS",
    "BenchConfig",
    "BenchReport",
    "LatencyRow",
    "count_flops",
    "run_benchmark",
]

