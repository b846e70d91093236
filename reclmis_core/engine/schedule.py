"""Learning-rate schedules: one ``LambdaLR`` stepped once per optimizer step, whatever the schedule.

``cosine`` and ``constant`` are transformers' per-step schedules (linear warm-up, then cosine to 0 or flat).
``cosine-restarts`` and ``exponential`` change the rate once per epoch, as the reference code does
(``CosineAnnealingWarmRestarts(T_0=10, eta_min=1e-4)`` for QaTa-COV19, ``LambdaLR(max(0.99**epoch, 0.1))`` for
MosMedData+, both stepped after each epoch's validation): the factor of optimizer step ``s`` is that of epoch
``s // steps_per_epoch``. So there is one scheduler state (its step count), saved and restored with the resume
state, and a resumed run continues the schedule exactly.
"""

from __future__ import annotations

import math
from functools import partial

import torch

from ..config_schema import TrainConfig
from ..errors import ConfigError

#: Schedules whose rate is constant within an epoch.
PER_EPOCH = ("cosine-restarts", "exponential")


def restart_factor(epoch: int, restart_epochs: int, min_ratio: float) -> float:
    """SGDR with T_mult = 1 as a factor of the peak lr: min + (1 - min) (1 + cos(pi (epoch mod T_0) / T_0)) / 2."""
    t_cur = epoch % restart_epochs
    return min_ratio + (1.0 - min_ratio) * (1.0 + math.cos(math.pi * t_cur / restart_epochs)) / 2.0


def exponential_factor(epoch: int, gamma: float, floor: float) -> float:
    """max(gamma ** epoch, floor)."""
    return max(gamma**epoch, floor)


def epoch_factor(cfg: TrainConfig, epoch: int) -> float:
    """The lr factor of 0-based ``epoch`` for a per-epoch schedule (``cfg.scheduler`` in :data:`PER_EPOCH`)."""
    if cfg.scheduler == "cosine-restarts":
        return restart_factor(epoch, cfg.restart_epochs, cfg.restart_min_lr / cfg.lr)
    if cfg.scheduler == "exponential":
        return exponential_factor(epoch, cfg.decay_gamma, cfg.decay_floor)
    raise ConfigError(f"train.scheduler={cfg.scheduler} is not a per-epoch schedule ({', '.join(PER_EPOCH)})")


def _per_epoch_lambda(step: int, *, cfg: TrainConfig, steps_per_epoch: int) -> float:
    return epoch_factor(cfg, step // steps_per_epoch)


def build_lr_schedule(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int
                      ) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule of ``cfg.scheduler`` for ``steps_per_epoch`` scheduler steps per epoch.

    Args:
        optimizer: the optimizer whose lr (``cfg.lr``) the schedule scales.
        cfg: the train section (scheduler, epochs, warm-up and the per-epoch schedules' parameters).
        steps_per_epoch: scheduler steps per epoch (optimizer steps, counted over all processes: Accelerate
            steps a prepared scheduler once per process).
    """
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    per_epoch = max(1, steps_per_epoch)
    if cfg.scheduler in PER_EPOCH:
        fn = partial(_per_epoch_lambda, cfg=cfg, steps_per_epoch=per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    warmup = per_epoch * cfg.warmup_epochs
    if cfg.scheduler == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    if cfg.scheduler == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, per_epoch * cfg.epochs)
    raise ConfigError(f"unknown train.scheduler '{cfg.scheduler}'; use cosine, constant, {', '.join(PER_EPOCH)}")
