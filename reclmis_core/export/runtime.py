"""The numpy-level ONNX Runtime API for users, ``OnnxSegmenter`` (defined in
:mod:`reclmis_core.runtime.onnx_segmenter`, beside the runtime that wraps it); these names stay importable from
here."""

from ..artefacts import read_sidecar
from ..models.text import build_tokenizer
from ..runtime.onnx_segmenter import OnnxSegmenter
from .onnx import SEG_FILE, TEXT_FILE

__all__ = ["OnnxSegmenter", "build_tokenizer", "read_sidecar", "SEG_FILE", "TEXT_FILE"]
