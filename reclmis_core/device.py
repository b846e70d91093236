"""Where and how wide a model runs: the one device resolver and the one thread default of every command.

``resolve_device("auto" | "cpu" | "cuda" | "cuda:N")`` gives a ``torch.device`` or raises ``ConfigError`` (one line,
exit 2 in the CLI) when the device is not there; ``onnx_providers`` is the same decision for ONNX Runtime.
``apply_threads`` sets torch's intra-op threads: one for small models, whose operations are too small to split
(on a busy 2-core machine two threads made a tiny training ~10x slower), all physical cores for paper-size ones.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from .choices import PRECISIONS
from .errors import ConfigError

log = logging.getLogger(__name__)

DEVICES = "auto | cpu | cuda | cuda:N"
_SPEC = re.compile(r"^(auto|cpu|cuda)(?::(\d+))?$")
# Models with less per-image work than this share of the paper model's (224 px, base 64) run on one thread.
SMALL_MODEL_WORK = 0.05


def parse_device(spec: str | None) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``None``/``""`` -> ``("auto", None)``. Checks the spelling only."""
    text = (spec or "auto").strip().lower()
    m = _SPEC.match(text)
    if m is None or (m.group(2) is not None and m.group(1) != "cuda"):
        raise ConfigError(f"--device must be auto, cpu, cuda or cuda:N, got '{spec}'")
    return m.group(1), (int(m.group(2)) if m.group(2) is not None else None)


def resolve_device(spec: str | Any | None = "auto") -> Any:
    """The ``torch.device`` for ``spec``; ConfigError if it names a device this machine does not have."""
    import torch

    if isinstance(spec, torch.device):
        spec = str(spec)
    kind, index = parse_device(spec)
    if kind == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = " (a CPU-only torch build)" if torch.version.cuda is None else ""
        raise ConfigError(f"--device {spec}: no CUDA device is available on this machine{build}; "
                          "use --device cpu or --device auto")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise ConfigError(f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return torch.device("cuda", index) if index is not None else torch.device("cuda")


def onnx_providers(spec: str | None = "auto") -> list[Any]:
    """ONNX Runtime execution providers for ``spec``; ConfigError when CUDA is asked for and not available."""
    import onnxruntime as ort

    kind, index = parse_device(spec)
    available = ort.get_available_providers()
    has_cuda = "CUDAExecutionProvider" in available
    if kind == "cpu" or (kind == "auto" and not has_cuda):
        return ["CPUExecutionProvider"]
    if not has_cuda:
        raise ConfigError(f"--device {spec} with ONNX Runtime needs its CUDA execution provider; this onnxruntime "
                          f"{ort.__version__} has only {', '.join(available)} (install onnxruntime-gpu, or use "
                          "--device cpu)")
    return [("CUDAExecutionProvider", {"device_id": index or 0}), "CPUExecutionProvider"]


def physical_cores() -> int:
    """Physical cores this process may use (hyper-threads do not help convolutions)."""
    logical = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical
    except ImportError:
        physical = logical
    return max(1, min(logical, physical))


def model_work(model_cfg: Any) -> float:
    """Per-image work relative to the paper model (224 px, base 64 channels): conv cost ~ pixels x width^2."""
    return (model_cfg.image_size / 224) ** 2 * (model_cfg.base_channels / 64) ** 2


def default_threads(model_cfg: Any | None = None) -> int:
    """1 for small models (the tiny presets), all physical cores otherwise."""
    if model_cfg is not None and model_work(model_cfg) < SMALL_MODEL_WORK:
        return 1
    return physical_cores()


def apply_threads(threads: int | None, model_cfg: Any | None = None) -> int:
    """Set torch's intra-op threads: ``threads`` if given (> 0), else ``OMP_NUM_THREADS`` if the user set it,
    else :func:`default_threads`. Returns the number in use."""
    import torch

    if threads is not None and threads < 0:
        raise ConfigError(f"--threads must be >= 1 (or 0 for the default), got {threads}")
    if threads:
        n, why = threads, "--threads"
    elif os.environ.get("OMP_NUM_THREADS", "").strip().isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        n, why = int(os.environ["OMP_NUM_THREADS"]), "OMP_NUM_THREADS"
    else:
        n = default_threads(model_cfg)
        why = "small model" if n == 1 and model_cfg is not None else "physical cores"
    if n != torch.get_num_threads():
        torch.set_num_threads(n)
    log.debug("intra-op threads: %d (%s)", n, why)
    return n


# --------------------------------------------------------------------------------------------------
# CPU features and reduced precision
# --------------------------------------------------------------------------------------------------



def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform`` elsewhere)."""
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where not readable)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def bf16_support(device_type: str) -> tuple[bool, str]:
    """(supported, what provides it or why not) for bf16 on ``"cpu"`` or ``"cuda"``. On a CPU without
    AVX512-BF16/AMX-BF16 bf16 is emulated and slower than fp32, so it counts as unsupported."""
    import torch

    if device_type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16" if ok else "this GPU has no bf16 support"
    flags = cpu_flags()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    mkldnn = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    if native and mkldnn:
        return True, "AMX-BF16" if "amx_bf16" in flags else "AVX512-BF16"
    return False, "this CPU lacks AVX512-BF16/AMX-BF16 (bf16 would be emulated and slower than fp32)"


def autocast_dtype(precision: str, device: Any) -> Any:
    """The autocast dtype for ``precision`` on ``device`` (None for fp32); ConfigError where it is not supported
    (bf16 without native support, fp16 off CUDA)."""
    import torch

    if precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    kind = torch.device(device).type
    if precision == "fp32":
        return None
    if precision == "fp16":
        if kind != "cuda":
            raise ConfigError("--precision fp16 runs on CUDA only (CPU fp16 kernels are slow and inexact); use "
                              "--precision bf16 on a CPU with AVX512-BF16/AMX, or fp32")
        return torch.float16
    ok, why = bf16_support(kind)
    if not ok:
        raise ConfigError(f"--precision bf16 on {kind}: {why}; use --precision fp32 (or an int8 ONNX export: "
                          "reclmis export --format onnx --int8)")
    return torch.bfloat16
