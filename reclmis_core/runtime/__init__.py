"""One runtime interface for every path that runs a model: predict, eval, bench and ``export --verify``.

A :class:`~reclmis_core.runtime.base.Runtime` encodes notes and segments preprocessed images. Two
implementations: :class:`~reclmis_core.runtime.torch_runtime.TorchRuntime` (a checkpoint; fp32, bf16 or fp16,
optionally Conv+BN folded and channels-last, optionally ``torch.compile``) and
:class:`~reclmis_core.runtime.onnx_runtime.OnnxRuntime` (an ONNX export, fp32 or int8, on the execution provider
of ``--device``). :mod:`~reclmis_core.runtime.backends` is the one table of named backends that bench, predict and
export read.

Example:
    >>> from reclmis_core.runtime import open_runtime
    >>> rt = open_runtime("runs/qata-paper/best")                  # a checkpoint folder -> TorchRuntime
    >>> rt = open_runtime("exports/qata-int8", device="cpu")        # an ONNX export folder -> OnnxRuntime
    >>> feats, mask = rt.encode(["Bilateral pulmonary infection, lower left lung."])
    >>> logits = rt.segment(images, feats, mask)                    # (B, 1, S, S) float32 logits

This module imports no torch until a runtime is asked for (the CLI's help stays fast).
"""

from __future__ import annotations

from typing import Any

from .backends import BACKENDS, BENCH_BACKENDS, PREDICT_BACKENDS, BackendSpec, backend_spec

__all__ = ["BACKENDS", "BENCH_BACKENDS", "PREDICT_BACKENDS", "BackendSpec", "OnnxRuntime", "Runtime",
           "TorchRuntime", "backend_spec", "open_runtime"]


def __getattr__(name: str) -> Any:  # lazy: torch / onnxruntime only when a runtime is used
    if name == "Runtime":
        from .base import Runtime

        return Runtime
    if name == "TorchRuntime":
        from .torch_runtime import TorchRuntime

        return TorchRuntime
    if name == "OnnxRuntime":
        from .onnx_runtime import OnnxRuntime

        return OnnxRuntime
    if name == "open_runtime":
        from .open import open_runtime

        return open_runtime
    raise AttributeError(name)
