"""What ``reclmis bench`` measures (:class:`BenchConfig`), read by the benchmark driver and the latency runner."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.backends import QUICK_BACKENDS


@dataclass
class BenchConfig:
    preset: str | None = "paper"  # (str) preset to build when no checkpoint is given
    checkpoint: str | None = None  # (str) checkpoint folder (wins over preset)
    device: str = "auto"  # (str) auto | cpu | cuda | cuda:N (reclmis_core.device.resolve_device)
    batch_sizes: tuple[int, ...] = (1,)  # (tuple) batch sizes for latency (Table II: 1,8)
    backends: tuple[str, ...] = QUICK_BACKENDS  # (tuple) latency backends (Table II: DEFAULT_BACKENDS)
    text_len: int | None = None  # (int) tokens per note (incl. special tokens) for MACs and latency; None: 18 (the reference's), or the model's max note length when that is shorter
    runs: int = 10  # (int) timed runs per measurement (>= 20 for the report)
    warmup: int = 2  # (int) untimed runs first
    train_batch: int = 2  # (int) batch of the training-step throughput measurement; 0 = skip
    train_steps: int = 3  # (int) timed training steps
    latency: bool = True  # (bool) measure latency (False: counts only)
    text_inside: bool = True  # (bool) also time with the text encoder inside the timed region
    threads: int = 0  # (int) torch/ORT intra-op threads; 0 = reclmis_core.device.apply_threads's default
    data: str | None = None  # (str) prepared DATA_DIR: also score each backend's Dice on its split
    split: str = "test"  # (str) split scored with --data
