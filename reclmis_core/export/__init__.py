"""Export the inference graph (no CVR/CLR): ONNX (two graphs + sidecar), torch.export (.pt2), safetensors.

``export_model(checkpoint_or_model, fmt, out, verify)`` is the entry point; ``FORMATS`` lists the formats;
``OnnxSegmenter`` (in ``runtime``) runs an ONNX export with ONNX Runtime.
"""

from .exporter import FORMATS, ExportResult, export_model
from .samples import SAMPLE_NOTES, sample_images
from .verify import VerifyResult
from .onnx import DEFAULT_OPSET, ExportError

__all__ = [
    "DEFAULT_OPSET",
    "FORMATS",
    "SAMPLE_NOTES",
    "ExportError",
    "ExportResult",
    "VerifyResult",
    "export_model",
    "sample_images",
]


def __getattr__(name: str):  # lazy: OnnxSegmenter imports onnxruntime only when asked for
    if name == "OnnxSegmenter":
        from ..runtime.onnx_segmenter import OnnxSegmenter

        return OnnxSegmenter
    raise AttributeError(name)
