"""``export --verify``: run an export through ``open_runtime`` (the runtime predict, eval and bench use for it)
against eager PyTorch on phantom images with different notes at batch 1 and 3; it passes when
max |logits difference| <= ``VERIFY_TOL``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..config import RunConfig
from .onnx import ExportError
from .samples import SAMPLE_NOTES, sample_images

VERIFY_TOL = 1e-4


@dataclass
class VerifyCase:
    batch: int
    notes: list[str]
    max_abs_diff: float


@dataclass
class VerifyResult:
    passed: bool
    tolerance: float
    max_abs_diff: float
    backend: str
    cases: list[VerifyCase] = field(default_factory=list)


def _verify_cases(cfg: RunConfig) -> list[tuple[Tensor, list[str]]]:
    imgs = sample_images(cfg, 4, seed=7)
    return [(imgs[:1], SAMPLE_NOTES[5:6]), (imgs[1:4], [SAMPLE_NOTES[4], SAMPLE_NOTES[1], SAMPLE_NOTES[6]])]


def _eager_logits(inf: Any, images: Tensor, notes: list[str]) -> np.ndarray:
    with torch.no_grad():
        if not inf.seg.uses_text:
            return inf.seg(images).numpy()
        tok = inf.tokenize(notes)
        feats = inf.text_encoder(tok.input_ids, tok.attention_mask)
        return inf.seg(images, feats, tok.attention_mask).numpy()


def _compare(inf: Any, cfg: RunConfig, run: Callable[[Tensor, list[str]], np.ndarray], backend: str) -> VerifyResult:
    cases = []
    for images, notes in _verify_cases(cfg):
        ref = _eager_logits(inf, images, notes)
        got = run(images, notes)
        diff = float(np.max(np.abs(ref - got))) if got.shape == ref.shape else math.inf
        cases.append(VerifyCase(batch=images.shape[0], notes=notes if inf.seg.uses_text else [], max_abs_diff=diff))
    worst = max(c.max_abs_diff for c in cases)
    return VerifyResult(passed=worst <= VERIFY_TOL, tolerance=VERIFY_TOL, max_abs_diff=worst, backend=backend, cases=cases)


def verify_export(inf: Any, cfg: RunConfig, folder: Path) -> VerifyResult:
    """Open the written artefact with the runtime predict, eval and bench use (``open_runtime``, on the CPU) and
    compare its logits with eager PyTorch's."""
    from ..runtime.open import open_runtime

    rt = open_runtime(folder, "cpu")

    def run(images: Tensor, notes: list[str]) -> np.ndarray:
        feats, mask = rt.encode(notes) if rt.uses_text else (None, None)
        return rt.segment(images, feats, mask).cpu().numpy()

    return _compare(inf, cfg, run, f"{rt.name} (cpu)")


def verify_safetensors(inf: Any, cfg: RunConfig, folder: Path) -> VerifyResult:
    """:func:`verify_export`, and the reloaded model must hold no training-only module."""
    from ..checkpoint import load_checkpoint

    model, _, _ = load_checkpoint(folder)
    if any(m is not None for m in (model.cvr, model.clr, model.interest)):
        raise ExportError(f"{folder}: the safetensors export rebuilt training-only modules")
    return verify_export(inf, cfg, folder)
