"""``open_runtime``: the one way predict, eval, bench and ``export --verify`` get a model from a folder."""

from __future__ import annotations

from pathlib import Path

from ..artefacts import check_runtime_request, detect_artefact
from ..device import parse_device
from .base import Runtime


def open_runtime(path: str | Path, device: str = "auto", precision: str = "fp32", threads: int | None = None,
                 explain: bool = False, *, backend: str | None = None, fast: bool | None = None,
                 compile: bool = False, mirror: bool | None = None) -> Runtime:
    """The one way to get a model: the runtime of the artefact folder ``path``, chosen by the artefact table
    (``reclmis_core.artefacts.ARTEFACTS``): a checkpoint or safetensors export -> TorchRuntime, an ONNX export
    -> OnnxRuntime, a torch.export export -> TorchExportRuntime.

    Args:
        backend: the runtime the caller expects (``--backend``); ConfigError when the folder is another kind.
        precision, explain, fast, compile: TorchRuntime's (an export runs at the precision it was written with).
        threads: intra-op threads of ONNX Runtime (torch's are set process-wide by ``apply_threads``).
        mirror: test-time mirroring on or off (default: the artefact's ``infer.mirror``).

    Raises:
        CheckpointError: not an artefact folder (naming what is missing); ConfigError: a precision, device or
            backend the artefact's row does not offer.
    """
    spec = detect_artefact(path, backend)
    check_runtime_request(spec, path, backend, precision, parse_device(str(device))[0])
    rt = _open(spec.runtime, path, device, precision, threads, explain, fast, compile)
    if mirror is not None:
        rt.mirror = bool(mirror)
    return rt


def _open(runtime: str, path: str | Path, device: str, precision: str, threads: int | None, explain: bool,
          fast: bool | None, compile: bool) -> Runtime:
    if runtime == "onnx":
        from .onnx_runtime import OnnxRuntime

        return OnnxRuntime(Path(path), device, threads)
    if runtime == "torch-export":
        from .export_runtime import TorchExportRuntime

        return TorchExportRuntime(path, device)
    from .torch_runtime import TorchRuntime

    return TorchRuntime.from_checkpoint(path, device, precision=precision, explain=explain, fast=fast,
                                        compile=compile)
