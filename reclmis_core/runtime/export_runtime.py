"""torch.export runtime of an export folder (``reclmis export --format torch-export``): the ``.pt2`` programs
re-loaded with ``torch.export.load``; the same interface as the torch and ONNX Runtime ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..artefacts import read_sidecar
from ..data.preprocessor import Preprocessor
from ..device import resolve_device
from ..errors import CheckpointError
from ..models.text import ExportedTokenizer
from .base import Runtime


def _program(folder: Path, graph: dict[str, Any], device: torch.device) -> Any:
    path = folder / graph["file"]
    if not path.is_file():
        raise CheckpointError(f"{folder}: {path.name} is missing")
    return torch.export.load(str(path)).module().to(device)


class TorchExportRuntime(Runtime):
    """Run the torch.export programs of an export folder: the text program once per note, the segmentation
    program per batch.

    Args:
        folder: the export folder (``reclmis_export.json`` + ``segmentation.pt2`` [+ ``text_encoder.pt2``]).
        device: ``auto | cpu | cuda | cuda:N``.
    """

    name = "torch-export"

    def __init__(self, folder: str | Path, device: Any = "auto") -> None:
        folder = Path(folder)
        self.sidecar = read_sidecar(folder)
        self.device = resolve_device(device)
        graphs = self.sidecar["graphs"]
        self._seg = _program(folder, graphs["segmentation"], self.device)
        text = self.sidecar.get("text")
        self.uses_text = text is not None
        self.notes = ExportedTokenizer.from_sidecar(text, folder) if text is not None else None
        self._text = _program(folder, graphs["text_encoder"], self.device) if text is not None else None
        self.tokenizer = None if self.notes is None else self.notes.tokenizer
        self.max_length = 0 if self.notes is None else self.notes.max_length
        self.preprocessor = Preprocessor.from_dict(self.sidecar["preprocessing"])
        self.threshold = float(self.sidecar["postprocessing"]["threshold"])
        self.mirror = bool(self.sidecar["postprocessing"].get("mirror", False))
        self.note_optional = bool(self.sidecar.get("note_optional", False))
        self.description = f"torch.export programs on {self.device}"

    def tokenize(self, notes: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.notes is None:
            raise CheckpointError("this export is image-only; it takes no notes")
        batch = self.notes(notes)
        return batch.input_ids.to(self.device), batch.attention_mask.to(self.device)

    @torch.inference_mode()
    def encode_ids(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self._text is None:
            raise CheckpointError("this export is image-only; it has no text program")
        return self._text(ids.to(self.device), mask.to(self.device)).float()

    @torch.inference_mode()
    def segment(self, images: torch.Tensor, feats: torch.Tensor | None = None, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        x = images.to(self.device)
        if feats is None or mask is None:
            return self._seg(x).float()
        return self._seg(x, feats.to(self.device), mask.to(self.device)).float()
