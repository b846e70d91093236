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
import copy
import dataclasses
import logging
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import RunConfig, build_config
from ..device import apply_threads, resolve_device
from ..errors import ConfigError, DataError
from ..export.exporter import SAMPLE_NOTES, sample_images

log = logging.getLogger(__name__)

BACKENDS = ("eager", "eager-channels-last", "eager-bf16", "onnx", "onnx-int8", "compile", "compile-bf16")
DEFAULT_BACKENDS = ("eager", "eager-channels-last", "eager-bf16", "onnx", "onnx-int8", "compile")  # Table II
QUICK_BACKENDS = ("eager", "onnx")  # the default run: a few minutes on a laptop CPU

CONVENTION = (
    "MACs = multiply-accumulates of conv/linear/matmul/attention (FlopCounterMode; attention included, "
    "elementwise/norm/softmax not counted); FLOPs = 2 x MACs. The RecLMIS paper's '24.1 GFLOPs' is MACs "
    "(compare with GMACs); its LViT '54.1 GFLOPs' is 2 x MACs (compare with GFLOPs)."
)

# Figures counted on the public reference implementation (core issue); used only for the paper preset's footnote.
REFERENCE = {
    "infer_no_text_m": 18.1,
    "clip_text_m": 63.4,
    "recon_m": {4: 50.5, 3: 37.9},
    "gmacs_infer_with_text": 24.1,
    "ms_infer_no_text": 170.0,
    "ms_infer_with_text": 190.0,
}


@dataclass
class BenchConfig:
    preset: str | None = "paper"  # (str) preset to build when no checkpoint is given
    checkpoint: str | None = None  # (str) checkpoint folder (wins over preset)
    device: str = "auto"  # (str) auto | cpu | cuda | cuda:N (reclmis_core.device.resolve_device)
    batch_sizes: tuple[int, ...] = (1,)  # (tuple) batch sizes for latency (Table II: 1,8)
    backends: tuple[str, ...] = QUICK_BACKENDS  # (tuple) latency backends (Table II: DEFAULT_BACKENDS)
    text_len: int = 18  # (int) tokens per note (incl. special tokens) for MACs and latency
    runs: int = 10  # (int) timed runs per measurement (>= 20 for the report)
    warmup: int = 2  # (int) untimed runs first
    train_batch: int = 2  # (int) batch of the training-step throughput measurement; 0 = skip
    train_steps: int = 3  # (int) timed training steps
    latency: bool = True  # (bool) measure latency (False: counts only)
    text_inside: bool = True  # (bool) also time with the text encoder inside the timed region
    threads: int = 0  # (int) torch/ORT intra-op threads; 0 = reclmis_core.device.apply_threads's default
    data: str | None = None  # (str) prepared DATA_DIR: also score each backend's Dice on its split
    split: str = "test"  # (str) split scored with --data


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


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "RANDOMLY INITIALISED" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init() -> Any:
    """Silence the text tower's random-init warning: it suggests a training option (--text-encoder) that means
    nothing to bench, whose counts and timings do not depend on the weights."""
    flt = _DropRandomInitWarning()
    loggers = [logging.getLogger(n) for n in ("reclmis_core.models.text.clip", "reclmis_core.models.text")]
    for lg in loggers:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(flt)


def load_bench_model(cfg: BenchConfig) -> tuple[Any, RunConfig, str]:
    """-> (training model in eval mode, run config, source description)."""
    if cfg.checkpoint:
        from ..engine.checkpoint import load_checkpoint

        model, run_cfg, _ = load_checkpoint(cfg.checkpoint)
        return model, run_cfg, f"checkpoint {cfg.checkpoint}"
    from ..models import build_model

    run_cfg = build_config(cfg.preset or "paper")
    corpus = SAMPLE_NOTES if run_cfg.model.text.encoder == "scratch" else None
    with _quiet_random_init():  # random weights are what bench wants; the report notes it
        model = build_model(run_cfg.model, corpus=corpus)
    init = "random init"
    return model.eval(), run_cfg, f"preset {run_cfg.preset} ({init})"


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


# --------------------------------------------------------------------------------------------------
# Counting
# --------------------------------------------------------------------------------------------------


def _m(n: int) -> float:
    return round(n / 1e6, 3)


def count_params(module: nn.Module | None, trainable_only: bool = False) -> int:
    if module is None:
        return 0
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _sdpa_cpu_flops(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, **kwargs: Any) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs (2 per MAC) of what ``fn`` runs, CPU SDPA included."""
    from torch.utils.flop_counter import FlopCounterMode

    mapping = {}
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    if op is not None:
        mapping[op] = _sdpa_cpu_flops
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        fn()
    return int(counter.get_total_flops())


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """A copy with every Conv2d directly followed by BatchNorm2d (in a Sequential) fused into one conv (eval)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    module = copy.deepcopy(module).eval()
    for sub in module.modules():
        if isinstance(sub, nn.Sequential):
            for i in range(len(sub) - 1):
                if isinstance(sub[i], nn.Conv2d) and isinstance(sub[i + 1], nn.BatchNorm2d):
                    sub[i] = fuse_conv_bn_eval(sub[i], sub[i + 1])
                    sub[i + 1] = nn.Identity()
    return module


# --------------------------------------------------------------------------------------------------
# Device description
# --------------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support(device: str) -> tuple[bool, str]:
    if device == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "" if ok else "this GPU has no bf16 support"
    flags = cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    mkldnn = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if native and mkldnn:
        return True, "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16"
    return False, "CPU lacks AVX512-BF16/AMX-BF16 (bf16 would be emulated and slower than fp32)"


# --------------------------------------------------------------------------------------------------
# Backends: each returns (seg_fn(images, feats, mask) -> logits tensor, text_fn(ids, mask) -> feats, note)
# --------------------------------------------------------------------------------------------------

SegFn = Callable[[Tensor, Tensor | None, Tensor | None], Tensor]
TextFn = Callable[[Tensor, Tensor], Tensor] | None


class Skip(Exception):
    """A backend is not available here (the reason is reported in the table)."""


@dataclass
class _Ctx:
    inf: Any
    run_cfg: RunConfig
    device: torch.device
    tmp: Path
    onnx_dir: Path | None = None
    threads: int = 1


def _uses_text(ctx: _Ctx) -> bool:
    return ctx.inf.seg.uses_text


def _wrap_seg(seg: nn.Module, ctx: _Ctx, channels_last: bool = False, autocast: torch.dtype | None = None) -> SegFn:
    dev = ctx.device

    def run(images: Tensor, feats: Tensor | None, mask: Tensor | None) -> Tensor:
        x = images.to(dev)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        cm = torch.autocast(dev.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), cm:
            out = seg(x) if feats is None else seg(x, feats.to(dev), mask.to(dev))
        return out.float()

    return run


def _wrap_text(tower: nn.Module | None, ctx: _Ctx, autocast: torch.dtype | None = None) -> TextFn:
    if tower is None:
        return None
    dev = ctx.device

    def run(ids: Tensor, mask: Tensor) -> Tensor:
        cm = torch.autocast(dev.type, dtype=autocast) if autocast else contextlib.nullcontext()
        with torch.inference_mode(), cm:
            return tower(ids.to(dev), mask.to(dev)).float()

    return run


def _backend_eager(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    return _wrap_seg(ctx.inf.seg, ctx), _wrap_text(ctx.inf.text_encoder, ctx), "fp32, model as built (NCHW)"


def _fast_seg(ctx: _Ctx) -> nn.Module:
    return fold_batchnorm(ctx.inf.seg).to(ctx.device, memory_format=torch.channels_last)


def _backend_channels_last(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    return (_wrap_seg(_fast_seg(ctx), ctx, channels_last=True), _wrap_text(ctx.inf.text_encoder, ctx),
            "fp32, Conv+BN folded, channels_last")


def _backend_bf16(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    ok, why = bf16_support(ctx.device.type)
    if not ok:
        raise Skip(why)
    return (_wrap_seg(_fast_seg(ctx), ctx, channels_last=True, autocast=torch.bfloat16),
            _wrap_text(ctx.inf.text_encoder, ctx, autocast=torch.bfloat16),
            f"bf16 autocast ({why}), Conv+BN folded, channels_last")


def _ensure_onnx(ctx: _Ctx) -> Path:
    if ctx.onnx_dir is None:
        import importlib.util

        missing = [m for m in ("onnx", "onnxruntime", "onnxscript") if importlib.util.find_spec(m) is None]
        if missing:
            raise Skip(f"needs {', '.join(missing)} (pip install 'reclmis[export]')")
        from ..export import export_model

        folder = ctx.tmp / "onnx"
        cpu_inf = ctx.inf if ctx.device.type == "cpu" else copy.deepcopy(ctx.inf).cpu()
        export_model(cpu_inf, "onnx", folder, verify=False, cfg=ctx.run_cfg)
        ctx.onnx_dir = folder
    return ctx.onnx_dir


def _ort_fns(ctx: _Ctx, segmentation_file: Path | None = None) -> tuple[SegFn, TextFn]:
    import onnxruntime as ort

    from ..export.runtime import OnnxSegmenter

    providers = ["CPUExecutionProvider"]
    if ctx.device.type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise Skip("this onnxruntime build has no CUDAExecutionProvider (pip install onnxruntime-gpu)")
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    rt = OnnxSegmenter(_ensure_onnx(ctx), providers=providers, threads=ctx.threads, segmentation_file=segmentation_file)

    def seg(images: Tensor, feats: Tensor | None, mask: Tensor | None) -> Tensor:
        x = images.cpu().numpy()
        if feats is None:
            return torch.from_numpy(rt.segment(x))
        return torch.from_numpy(rt.segment(x, np.asarray(feats.cpu()), np.asarray(mask.cpu())))

    def text(ids: Tensor, mask: Tensor) -> Tensor:
        return torch.from_numpy(rt.encode_ids(ids.cpu().numpy(), mask.cpu().numpy()))

    return seg, (text if rt.uses_text else None)


def _backend_onnx(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    seg, text = _ort_fns(ctx)
    return seg, text, "ONNX Runtime fp32, ORT_ENABLE_ALL"


class _Calibration:
    """Feeds sample images (+ sample note features) to the static quantizer."""

    def __init__(self, ctx: _Ctx, n: int = 8) -> None:
        images = sample_images(ctx.run_cfg, n, seed=11).numpy()
        self.items: list[dict[str, np.ndarray]] = []
        inf = ctx.inf
        for i in range(n):
            item = {"image": images[i : i + 1]}
            if _uses_text(ctx):
                tok = inf.tokenize([SAMPLE_NOTES[i % len(SAMPLE_NOTES)]])
                with torch.inference_mode():
                    feats = inf.text_encoder(tok.input_ids.to(ctx.device), tok.attention_mask.to(ctx.device))
                item.update(text_features=feats.float().cpu().numpy(), text_mask=tok.attention_mask.numpy())
            self.items.append(item)
        self._it = iter(self.items)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.items)


def quantize_int8(ctx: _Ctx) -> Path:
    """Static QDQ int8 (per-channel weights, uint8 activations) of the segmentation graph, calibrated on samples."""
    folder = _ensure_onnx(ctx)
    pre = ctx.tmp / "segmentation.pre.onnx"
    out = ctx.tmp / "segmentation.int8.onnx"
    if not out.exists():
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs per-tensor notes on the root logger
        try:
            _quantize(folder, pre, out, ctx)
        finally:
            root.setLevel(level)
    return out


def _quantize(folder: Path, pre: Path, out: Path, ctx: _Ctx) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    quant_pre_process(str(folder / "segmentation.onnx"), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre), str(out), _Calibration(ctx), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv"],
        calibrate_method=CalibrationMethod.MinMax,
    )


def _backend_onnx_int8(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    if ctx.device.type != "cpu":
        raise Skip("int8 QDQ is measured on CPU only")
    try:
        path = quantize_int8(ctx)
    except (ImportError, RuntimeError, ValueError) as exc:
        raise Skip(f"quantization failed: {exc}") from None
    seg, text = _ort_fns(ctx, segmentation_file=path)
    return seg, text, "ONNX Runtime, static QDQ int8 convs (per-channel), fp32 text encoder"


def _compile_fns(ctx: _Ctx, autocast: torch.dtype | None) -> tuple[SegFn, TextFn, str]:
    if autocast is not None:
        ok, why = bf16_support(ctx.device.type)
        if not ok:
            raise Skip(why)
    try:
        import torch._inductor  # noqa: F401
    except ImportError as exc:
        raise Skip(f"inductor unavailable: {exc}") from None
    seg = torch.compile(_fast_seg(ctx), dynamic=False)
    fn = _wrap_seg(seg, ctx, channels_last=True, autocast=autocast)
    text = _wrap_text(ctx.inf.text_encoder, ctx, autocast=autocast)
    kind = "bf16 autocast" if autocast else "fp32"
    return fn, text, f"torch.compile (inductor) {kind} of the segmentation net; text encoder eager"


def _backend_compile(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    return _compile_fns(ctx, None)


def _backend_compile_bf16(ctx: _Ctx) -> tuple[SegFn, TextFn, str]:
    return _compile_fns(ctx, torch.bfloat16)


BACKEND_BUILDERS: dict[str, Callable[[_Ctx], tuple[SegFn, TextFn, str]]] = {
    "eager": _backend_eager,
    "eager-channels-last": _backend_channels_last,
    "eager-bf16": _backend_bf16,
    "onnx": _backend_onnx,
    "onnx-int8": _backend_onnx_int8,
    "compile": _backend_compile,
    "compile-bf16": _backend_compile_bf16,
}


# --------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------


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


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    inter = float(np.logical_and(a, b).sum())
    total = float(a.sum() + b.sum())
    return 1.0 if total == 0 else 2 * inter / total


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _reconciliation(model: Any, run_cfg: RunConfig, params_infer: int, params_text: int, gmacs_text: float,
                    gmacs_no_text: float, text_len: int) -> list[str]:
    m = run_cfg.model
    if not (m.image_size == 224 and m.base_channels == 64 and m.text.encoder == "clip"):
        return ["reference figures (core issue) apply to the paper preset (224 px, base 64, CLIP) only"]
    lines = []
    conv_e = count_params(model.interest.text_conv) if model.interest is not None else 0
    # With the paper's CI order V' does not depend on E', so E''s attention is training-only too.
    attn_e = count_params(model.text_update) if model.text_update is not None else 0
    attn_note = (f" and, with the paper's CI order (V' from E, not E'), the attention that computes E' "
                 f"({attn_e / 1e6:.3f} M)") if attn_e else ""
    lines.append(
        f"inference path without text encoder: ours {params_infer / 1e6:.3f} M; the reference's "
        f"{REFERENCE['infer_no_text_m']} M also counts a Conv-BN-ReLU on E' ({conv_e / 1e6:.3f} M) that only feeds "
        f"W_woi in training (our training-only `interest` module){attn_note}: {params_infer / 1e6:.3f} + "
        f"{(conv_e + attn_e) / 1e6:.3f} = {(params_infer + conv_e + attn_e) / 1e6:.3f} M"
    )
    lines.append(f"CLIP text tower: ours {params_text / 1e6:.3f} M vs reference {REFERENCE['clip_text_m']} M")
    recon = count_params(model.cvr) + count_params(model.clr)
    dim = model.seg.dim
    cross = 4 * dim * dim + 4 * dim
    layers = m.recon_layers
    ref = REFERENCE["recon_m"].get(layers)
    unused = 2 * layers * cross
    lines.append(
        f"reconstructors (CVR+CLR, {layers} layers per stack): ours {recon / 1e6:.2f} M; the reference also builds "
        f"{2 * layers} never-used cross-attentions in its context stacks ({2 * layers} x {cross / 1e6:.4f} M = "
        f"{unused / 1e6:.2f} M): {recon / 1e6:.2f} + {unused / 1e6:.2f} = {(recon + unused) / 1e6:.2f} M"
        + (f" vs reference {ref} M" if ref else "")
    )
    if layers != 4:  # the reference's QaTa config uses 4 layers: count ours at 4 too, without building the model
        from ..models.reconstruction import ConditionedReconstructor

        r4 = 2 * count_params(ConditionedReconstructor(dim, 4, m.recon_heads, m.recon_ffn_ratio, m.dropout,
                                                       m.recon_attention, m.condition_mode, m.recon_causal))
        u4 = 8 * cross
        lines.append(
            f"reconstructors at 4 layers per stack (the reference's QaTa config): ours {r4 / 1e6:.2f} M + 8 unused "
            f"cross-attentions {u4 / 1e6:.2f} M = {(r4 + u4) / 1e6:.2f} M vs reference {REFERENCE['recon_m'][4]} M"
        )
    if text_len == 18:
        ref_g = REFERENCE["gmacs_infer_with_text"]
        lines.append(
            f"inference MACs at 224x224 with an 18-token note: ours {gmacs_text:.2f} G with the text encoder "
            f"({gmacs_no_text:.2f} G without) vs the paper's/reference's {ref_g} G ({100 * (gmacs_text / ref_g - 1):+.1f}%)"
        )
    return lines


class _Rows(list):
    """The report's latency rows; every append also hands the report so far to ``on_update``."""

    def __init__(self, on_append: Callable[[], None]) -> None:
        super().__init__()
        self._on_append = on_append

    def append(self, row: Any) -> None:
        super().append(row)
        self._on_append()


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
    unknown = [b for b in cfg.backends if b not in BACKEND_BUILDERS]
    if unknown:
        raise ConfigError(f"unknown backend(s) {', '.join(unknown)}. Available: {', '.join(BACKEND_BUILDERS)}")
    if any(b < 1 for b in cfg.batch_sizes) or not cfg.batch_sizes:
        raise ConfigError(f"--batch-sizes must be positive integers, got {cfg.batch_sizes}")
    device = resolve_device(cfg.device)
    if cfg.runs < 1 or cfg.warmup < 0:
        raise ConfigError("--runs must be >= 1 and --warmup >= 0")
    if cfg.data:  # before any expensive work
        _check_split(cfg)
    update = on_update or (lambda report: None)

    say("building the model")
    model, run_cfg, source = load_bench_model(cfg)
    apply_threads(cfg.threads or None, run_cfg.model)
    inf = model.for_inference()
    size = run_cfg.model.image_size
    uses_text = inf.seg.uses_text

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
            ctx = _Ctx(inf, run_cfg, device, Path(tmp), threads=torch.get_num_threads())
            split = _load_split(cfg, run_cfg) if cfg.data else None
            _measure_latency(ctx, cfg, say, split, rows=report.latency)
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


def _load_split(cfg: BenchConfig, run_cfg: RunConfig) -> tuple[Tensor, np.ndarray, list[str]]:
    """(images normalised, masks bool (N,H,W), notes) of ``cfg.split`` of ``cfg.data``."""
    from ..data.dataset import ManifestDataset

    ds = ManifestDataset(cfg.data, cfg.split, run_cfg.model.image_size, run_cfg.model.in_channels, run_cfg.data)
    items = [ds[i] for i in range(len(ds))]
    images = torch.stack([it["image"] for it in items])
    masks = torch.stack([it["mask"] for it in items]).squeeze(1).numpy() > 0.5
    return images, masks, [it["note"] for it in items]


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


def _measure_latency(ctx: _Ctx, cfg: BenchConfig, say: Callable[[str], None],
                     split: tuple[Tensor, np.ndarray, list[str]] | None = None,
                     rows: list[LatencyRow] | None = None) -> list[LatencyRow]:
    rows = [] if rows is None else rows
    uses_text = _uses_text(ctx)
    dev = cfg.device
    n_agree = 4
    agree_images = sample_images(ctx.run_cfg, n_agree, seed=5)
    agree_ids, agree_mask = (note_tokens(ctx.inf, cfg.text_len, n_agree) if uses_text else (None, None))
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
            seg_fn, text_fn, note = BACKEND_BUILDERS[name](ctx)
        except Skip as exc:
            log.info("backend %s skipped: %s", name, exc)
            rows.append(LatencyRow(name, 0, dev, "-", None, None, status="skipped", note=str(exc)))
            continue
        except Exception as exc:  # noqa: BLE001 - one backend failing must not sink the report
            log.warning("backend %s failed to build: %s", name, exc)
            rows.append(LatencyRow(name, 0, dev, "-", None, None, status="failed", note=_short(exc)))
            continue
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
            split_dice = _split_dice(seg_fn, text_fn, ctx.inf.tokenize if uses_text else None, split,
                                     cfg.batch_sizes[0], ctx.run_cfg.infer.threshold)
        for batch in cfg.batch_sizes:
            images = sample_images(ctx.run_cfg, batch, seed=batch)
            ids = mask = feats = None
            if uses_text:
                ids, mask = note_tokens(ctx.inf, cfg.text_len, batch)
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
                if name == "eager":
                    eager_ms[(batch, mode)] = med
                base = eager_ms.get((batch, mode))
                rows.append(LatencyRow(
                    name, batch, dev, mode, med, p90, runs=len(times), note=note,
                    speedup_vs_eager=round(base / med, 2) if base and med else None,
                    max_prob_diff=None if max_diff is None else round(max_diff, 6),
                    mask_dice_vs_eager=None if dice is None else round(dice, 5), dice=split_dice,
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
    return probs, float(np.abs(probs - reference).max()), _dice(probs > threshold, reference > threshold)


def _train_throughput(model: Any, run_cfg: RunConfig, cfg: BenchConfig, device: torch.device) -> float | None:
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


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200] if text else ''}"


__all__ = [
    "BACKENDS",
    "BenchConfig",
    "BenchReport",
    "LatencyRow",
    "count_flops",
    "fold_batchnorm",
    "run_benchmark",
]

