"""The one table of named backends: which runtime, precision and graph each name means.

``reclmis bench --backends`` takes any name of :data:`BACKENDS`; ``reclmis predict`` reaches the same runtimes
through ``--backend torch|onnx`` and ``--precision`` (an int8 ONNX export is an ``onnx`` folder whose sidecar says
so, written by ``reclmis export --format onnx --int8``). Plain data, no torch: the CLI help lists these names.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..choices import BACKENDS as PREDICT_BACKENDS  # predict's --backend: torch (a checkpoint) | onnx (an export)
from ..registry import Registry



@dataclass(frozen=True)
class BackendSpec:
    name: str
    runtime: str  # torch | onnx | torch-export (reclmis_core.artefacts.RUNTIMES)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (torch) ; fp32 | int8 (onnx segmentation graph)
    fast: bool = False  # torch: Conv+BN folded, channels-last
    compile: bool = False  # torch: torch.compile (inductor) of the segmentation network
    cuda_only: bool = False
    description: str = ""


_SPECS = (
    BackendSpec("eager", "torch", description="PyTorch fp32, the model as built (NCHW)"),
    BackendSpec("eager-channels-last", "torch", fast=True, description="PyTorch fp32, Conv+BN folded, channels-last"),
    BackendSpec("eager-bf16", "torch", "bf16", fast=True,
                description="PyTorch bf16 autocast (AVX512-BF16/AMX or CUDA), Conv+BN folded, channels-last"),
    BackendSpec("eager-fp16", "torch", "fp16", fast=True, cuda_only=True,
                description="PyTorch fp16 autocast (CUDA only), Conv+BN folded, channels-last"),
    BackendSpec("onnx", "onnx", description="ONNX Runtime fp32 (ORT_ENABLE_ALL), CPU or CUDA provider"),
    BackendSpec("onnx-int8", "onnx", "int8",
                description="ONNX Runtime, static QDQ int8 convolutions (per-channel), fp32 text encoder"),
    BackendSpec("torch-export", "torch-export", description="torch.export programs (.pt2) re-loaded, fp32"),
    BackendSpec("compile", "torch", fast=True, compile=True,
                description="torch.compile (inductor) fp32 of the segmentation network; text encoder eager"),
    BackendSpec("compile-bf16", "torch", "bf16", fast=True, compile=True,
                description="torch.compile (inductor) with bf16 autocast"),
)

BACKENDS: Registry[BackendSpec] = Registry("backend")
for _spec in _SPECS:
    BACKENDS.register(_spec.name)(_spec)

BENCH_BACKENDS = BACKENDS.names()
QUICK_BACKENDS = ("eager", "onnx")  # bench's default: a few minutes on a laptop CPU
TABLE_II_BACKENDS = ("eager", "eager-channels-last", "eager-bf16", "onnx", "onnx-int8", "compile")
GPU_BACKENDS = ("eager", "eager-bf16", "eager-fp16", "compile", "compile-bf16", "onnx")


def backend_spec(name: str) -> BackendSpec:
    """The table row of ``name``; ConfigError naming the available ones (and the nearest) otherwise."""
    return BACKENDS.get(name)
__all__ = ["BACKENDS", "BENCH_BACKENDS", "GPU_BACKENDS", "PREDICT_BACKENDS", "QUICK_BACKENDS", "TABLE_II_BACKENDS", "BackendSpec", "backend_spec"]
