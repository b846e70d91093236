"""ONNX Runtime runtime of an export folder (fp32 or int8), on the execution provider ``--device`` names; the
same interface as the torch one. It wraps ``OnnxSegmenter``, the numpy-level API for users."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..device import onnx_providers
from ..errors import ConfigError
from .base import Runtime


class OnnxRuntime(Runtime):
    """Run ``reclmis export --format onnx`` graphs: the text graph once per note, the segmentation graph per batch.

    Args:
        folder: the export folder (``reclmis_export.json`` + graphs; an int8 export's sidecar names its graph).
        device: ``auto | cpu | cuda | cuda:N``: the CUDA execution provider for cuda (ConfigError when this
            onnxruntime has none or it fails to start: never a silent CPU run).
        threads: intra-op threads (None: ONNX Runtime's default).
        segmentation_file: another segmentation graph of the same signature (e.g. one quantized by other tools).
    """

    name = "onnx"

    def __init__(self, folder: str | Path, device: str = "auto", threads: int | None = None,
                 segmentation_file: str | Path | None = None) -> None:
        try:
            from .onnx_segmenter import OnnxSegmenter
        except ImportError as exc:
            raise ConfigError(f"the ONNX backend is not available in this installation ({exc}); install the "
                              "export extra: pip install 'reclmis[export]'") from None
        providers = onnx_providers(device)
        self.seg = OnnxSegmenter(folder, providers=providers, threads=threads, segmentation_file=segmentation_file)
        wanted = providers[0][0] if isinstance(providers[0], tuple) else providers[0]
        if wanted not in self.seg.providers:  # ONNX Runtime falls back to the CPU when CUDA fails to load
            raise ConfigError(f"--device {device}: ONNX Runtime could not start {wanted} (running on "
                              f"{', '.join(self.seg.providers)}); check the CUDA/cuDNN libraries or use --device cpu")
        self.device = torch.device("cpu")
        self.preprocessor = self.seg.preprocessor
        self.threshold = float(self.seg.threshold)
        self.mirror = self.seg.mirror
        self.uses_text = bool(self.seg.uses_text)
        self.note_optional = bool(self.seg.sidecar.get("note_optional", False))
        self.tokenizer = self.seg.tokenizer
        self.max_length = int(self.seg.max_length)
        quant = self.seg.sidecar.get("quantization") or {}
        self.precision = "int8" if quant else "fp32"  # the sidecar of an int8 export says so
        self.description = (f"ONNX Runtime {self.precision} on {self.seg.providers[0]}"
                            + (f" (calibrated on {quant.get('calibration')})" if quant else ""))

    def tokenize(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.seg.tokenize(notes)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self.seg.encode_ids(ids.cpu().numpy(), mask.cpu().numpy()),
                                           dtype=np.float32))

    def segment(self, images: torch.Tensor, feats: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = images.cpu().numpy()
        if feats is None or mask is None:
            logits = self.seg.segment(x)
        else:
            logits = self.seg.segment(x, feats.cpu().numpy(), mask.cpu().numpy())
        return torch.from_numpy(np.asarray(logits, dtype=np.float32))


