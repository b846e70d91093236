"""The Accelerate set-up of a training run: one process or many, CPU or GPU, precision, determinism."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from ..config import RunConfig
from ..errors import ConfigError


def configure_determinism(enabled: bool) -> None:
    """Deterministic kernels (tests, exact resume). Costs speed on GPU."""
    if not enabled:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=False)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def make_accelerator(cfg: RunConfig, device: torch.device, run_dir: Path) -> Any:
    """An ``Accelerator`` for ``cfg.train`` on ``device`` (ConfigError for a precision the device lacks)."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration

    t = cfg.train
    cpu = device.type == "cpu" or os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    on_gpu = torch.cuda.is_available() and not cpu
    if on_gpu and device.index is not None and int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        torch.cuda.set_device(device)  # Accelerate's single process uses the current CUDA device
    if t.mixed_precision == "fp16" and not on_gpu:
        raise ConfigError("train.mixed_precision=fp16 needs a CUDA GPU; on the CPU use bf16 or no")
    if t.mixed_precision == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise ConfigError("this GPU does not support bf16; use train.mixed_precision=fp16 or no")
    kwargs: dict[str, Any] = {}
    if t.tensorboard:
        if importlib.util.find_spec("tensorboard") is None:
            raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard")
        kwargs.update(log_with="tensorboard", project_dir=str(run_dir))
    if int(os.environ.get("WORLD_SIZE", "1") or 1) == 1:
        # A single process may train several times (notebooks, tests) with other precision/device settings;
        # Accelerate keeps its state per process, so start from a clean one (never under a launcher).
        from accelerate.state import AcceleratorState

        AcceleratorState._reset_state(reset_partial_state=True)
    return Accelerator(
        cpu=cpu,
        mixed_precision=t.mixed_precision,
        gradient_accumulation_steps=t.grad_accum,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=t.seed),
        step_scheduler_with_optimizer=True,
        **kwargs,
    )
