"""PyTorch runtime of a checkpoint: fp32 as built, or fast (Conv+BN folded, channels-last), bf16/fp16 autocast,
``torch.compile``; the same interface as the ONNX Runtime one (:mod:`reclmis_core.runtime.base`)."""

from __future__ import annotations

import contextlib
import copy
import importlib
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.preprocessor import Preprocessor
from ..device import autocast_dtype, resolve_device
from ..errors import ConfigError
from .base import Runtime


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


class TorchRuntime(Runtime):
    """Run a ``RecLMIS`` model (its inference part) on ``device``.

    Args:
        model: the model as loaded from a checkpoint (``load_checkpoint``) or just trained.
        cfg: its ``RunConfig`` (threshold, preprocessing, note dropout).
        device: ``auto | cpu | cuda | cuda:N`` or a ``torch.device``.
        precision: ``fp32`` | ``bf16`` | ``fp16`` (autocast; bf16 where the CPU/GPU has it, fp16 on CUDA only;
            ConfigError otherwise).
        fast: fold Conv+BN and run channels-last (on by default below fp32; at fp32 it changes the logits by
            ~1e-6, so the exact model-as-built path stays the default).
        compile: ``torch.compile`` the segmentation network (inductor).
        explain: also return W_poi/W_woi (needs the training-only interest module).
        preprocessor: the preprocessing (default: from ``cfg``, gray).
    """

    name = "torch"

    def __init__(self, model: Any, cfg: Any, device: Any = "auto", *, precision: str = "fp32",
                 fast: bool | None = None, compile: bool = False, explain: bool = False,
                 preprocessor: Preprocessor | None = None) -> None:
        self.device = resolve_device(device)
        self.dtype = autocast_dtype(precision, self.device)
        self.precision = precision
        self.cfg = cfg
        self.model = model.to(self.device).eval()
        self.infer = model.for_inference()
        self.preprocessor = preprocessor or Preprocessor.from_config(cfg)
        self.threshold = float(cfg.infer.threshold)
        self.mirror = bool(cfg.infer.mirror)
        self.uses_text = bool(model.seg.uses_text)
        self.note_optional = self.uses_text and cfg.train.note_dropout > 0
        self.model_cfg = cfg.model
        self.max_length = model.max_length if self.uses_text else 0
        self.tokenizer = model.tokenizer if self.uses_text else None
        self.explain = explain
        if explain and (not self.uses_text or model.interest is None):
            raise ConfigError(
                "--explain needs a text-guided checkpoint trained with its interest-weight module (CVR, CLR or "
                "CCL on); this checkpoint has none, so there are no W_poi/W_woi to show"
            )
        self.fast = (precision != "fp32") if fast is None else fast
        seg = self.infer.seg
        if self.fast:
            seg = fold_batchnorm(seg).to(self.device, memory_format=torch.channels_last)
        if compile:
            try:
                importlib.import_module("torch._inductor")
            except ImportError as exc:
                raise ConfigError(f"torch.compile is not available here (inductor: {exc})") from None
            seg = torch.compile(seg, dynamic=False)
        self.seg = seg
        self.compiled = compile
        parts = [precision] + (["Conv+BN folded, channels-last"] if self.fast else ["as built"])
        self.description = f"PyTorch {', '.join(parts)}" + (", torch.compile" if compile else "") + f" on {self.device}"

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: Any = "auto", *, precision: str = "fp32",
                        explain: bool = False, fast: bool | None = None, compile: bool = False) -> TorchRuntime:
        """Load a checkpoint folder (``model.safetensors`` + ``config.json``) with its stored preprocessing."""
        from ..checkpoint import load_checkpoint

        model, cfg, doc = load_checkpoint(path)
        return cls(model, cfg, device, precision=precision, explain=explain, fast=fast, compile=compile,
                   preprocessor=Preprocessor.from_checkpoint(cfg, doc))

    def _autocast(self) -> Any:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def tokenize(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.uses_text:
            raise ConfigError("this checkpoint is image-only; it takes no notes")
        tok = self.infer.tokenize(notes)
        return tok.input_ids.to(self.device), tok.attention_mask.to(self.device)

    @torch.inference_mode()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.infer.encode_text(ids.to(self.device), mask.to(self.device)).float()

    def _images(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device)
        return x.contiguous(memory_format=torch.channels_last) if self.fast else x

    @torch.inference_mode()
    def segment(self, images: torch.Tensor, feats: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = self._images(images)
        with self._autocast():
            if feats is None:
                out = self.seg(x)
            else:
                out = self.seg(x, feats.to(self.device), mask.to(self.device))
        return out.float()

    @torch.inference_mode()
    def segment_explain(self, images: torch.Tensor, feats: torch.Tensor | None, mask: torch.Tensor | None
                        ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if not self.explain:
            return self.segment(images, feats, mask), None, None
        x = images.to(self.device)  # the model as built: the interest heads read its features
        with self._autocast():
            f = self.model.seg.forward_features(x, feats.to(self.device), mask.to(self.device))
            logits = self.model.seg.forward_head(f)
            w_poi, w_woi = self.model.interest_weights(f)
        return logits.float(), w_poi.float(), w_woi.float()
