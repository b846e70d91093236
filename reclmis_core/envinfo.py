"""What this machine offers reclmis: versions, devices, CPU features, threads, optional extras (``reclmis env``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from typing import Any

from .version import __version__

PACKAGES = ("torch", "onnxruntime", "onnx", "onnxscript", "transformers", "accelerate", "tokenizers",
            "safetensors", "numpy", "pandas", "pydicom", "highdicom", "nibabel", "pillow", "typer", "rich")
#: extra -> the modules it installs (pyproject.toml's optional-dependencies)
EXTRAS = {"export": ("onnx", "onnxruntime", "onnxscript"), "dicom": ("highdicom",), "test": ("pytest",)}
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile")


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment_report() -> dict[str, Any]:
    """A JSON-friendly description of the environment (imports torch and, if installed, onnxruntime)."""
    import torch

    from .device import cpu_flags, cpu_name
    from .device import default_threads, physical_cores

    flags = cpu_flags()
    cuda = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda.append({"device": f"cuda:{i}", "name": p.name, "memory_gb": round(p.total_memory / 2**30, 1),
                         "capability": f"{p.major}.{p.minor}"})
    ort_providers = None
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime as ort

        ort_providers = ort.get_available_providers()
    return {
        "reclmis": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "torch_build": {"cuda": torch.version.cuda, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                        "mkldnn": torch.backends.mkldnn.is_available()},
        "cuda_devices": cuda,
        "onnxruntime_providers": ort_providers,
        "cpu": {"name": cpu_name(), "logical_cores": os.cpu_count(), "physical_cores": physical_cores(),
                "features": {f: f in flags for f in CPU_FEATURES}},
        "threads": {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads(),
                    "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
                    "default_small_model": 1, "default_large_model": default_threads(None)},
        "extras": {name: all(importlib.util.find_spec(m) is not None for m in mods) for name, mods in EXTRAS.items()},
    }
