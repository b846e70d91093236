"""ONNX export of the inference graph as two graphs plus a sidecar JSON.

Layout of an ONNX export folder::

    segmentation.onnx      inputs image (B,C,H,W) float32, text_features (B,L,D) float32, text_mask (B,L) int64
                           -> logits (B,1,H,W); image-only models: input image only
    text_encoder.onnx      inputs input_ids (B,L) int64, attention_mask (B,L) int64 -> text_features (B,L,D)
    reclmis_export.json    sidecar: tokenizer, preprocessing, threshold, opset, names, dynamic axes, source

Why two graphs: a note repeated over many images (a CT volume, a study) is encoded once and its features are
reused by every segmentation call.

Exporter: the dynamo exporter (``torch.onnx.export(..., dynamo=True)``) with ``torch.export.Dim`` for the batch
and the note length. torch 2.13 silently specialises a dimension whose example size is 1, so examples always have
batch 2 and a note length >= 2, and every exported graph is checked afterwards: a static batch/length axis is an
error. If the dynamo exporter fails for a graph, the TorchScript exporter is used for that graph with
``dynamic_axes``; the fallback and its reason are logged as a warning and written into the sidecar
(``graphs.<name>.exporter``), never silent.

Opset: 18 by default (ONNX Runtime >= 1.14 runs it). Graphs are written un-optimised, so the initializers keep the
PyTorch parameter names (the parameter count in an export can be checked by name); ONNX Runtime applies its own
graph optimisations (constant folding, Conv+BN fusion) when it loads them.

External data: ONNX protobufs cannot exceed 2 GB. A graph whose weights exceed 1.8 GB is saved with its tensors
in a ``<graph>.onnx.data`` file next to it (ONNX external data; keep the two files together). The RecLMIS graphs
are far below that (segmentation ~70 MB, CLIP text tower ~250 MB), so they are single files.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..version import __version__
from ..errors import ReclmisError
from ..models.text import tokenizer_description

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
SEG_FILE = "segmentation.onnx"
TEXT_FILE = "text_encoder.onnx"
EXTERNAL_DATA_BYTES = 1_800_000_000  # save weights as external data above this (protobuf limit is 2 GB)

SEG_INPUTS = ["image", "text_features", "text_mask"]
TEXT_INPUTS = ["input_ids", "attention_mask"]
BATCH, TEXT_LEN = "batch", "text_len"


class ExportError(ReclmisError):
    """An export could not be written or did not match eager PyTorch."""


def seg_dynamic_axes(uses_text: bool) -> dict[str, dict[int, str]]:
    axes: dict[str, dict[int, str]] = {"image": {0: BATCH}, "logits": {0: BATCH}}
    if uses_text:
        axes.update(text_features={0: BATCH, 1: TEXT_LEN}, text_mask={0: BATCH, 1: TEXT_LEN})
    return axes


def text_dynamic_axes() -> dict[str, dict[int, str]]:
    return {"input_ids": {0: BATCH, 1: TEXT_LEN}, "attention_mask": {0: BATCH, 1: TEXT_LEN},
            "text_features": {0: BATCH, 1: TEXT_LEN}}


def _dims(max_length: int) -> tuple[Any, Any]:
    from torch.export import Dim

    return Dim(BATCH, min=1, max=4096), Dim(TEXT_LEN, min=1, max=max(2, max_length))


def _graph_io(path: Path) -> dict[str, Any]:
    """Names, dtypes and shapes (ints or axis names) of a saved graph's inputs and outputs."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def describe(values: Any) -> dict[str, Any]:
        out = {}
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
            out[v.name] = {"dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name, "shape": shape}
        return out

    init_names = {i.name for i in model.graph.initializer}
    return {
        "inputs": describe([i for i in model.graph.input if i.name not in init_names]),
        "outputs": describe(model.graph.output),
    }


def _check_dynamic(io: dict[str, Any], axes: dict[str, dict[int, str]], graph: str) -> None:
    """Fail if an axis that must be dynamic came out static (the batch-1 trap of the dynamo exporter)."""
    for group in ("inputs", "outputs"):
        for name, spec in io[group].items():
            for axis in axes.get(name, {}):
                if not isinstance(spec["shape"][axis], str):
                    raise ExportError(
                        f"{graph}: axis {axis} of '{name}' was exported static ({spec['shape']}); expected dynamic"
                    )


def _param_bytes(module: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


def _export_one(
    module: nn.Module,
    args: tuple[Tensor, ...],
    input_names: list[str],
    output_names: list[str],
    axes: dict[str, dict[int, str]],
    dynamic_shapes: dict[str, Any],
    path: Path,
    opset: int,
    graph: str,
) -> dict[str, Any]:
    """Export one graph with the dynamo exporter, falling back (logged) to the TorchScript exporter."""
    external = _param_bytes(module) > EXTERNAL_DATA_BYTES
    info: dict[str, Any] = {"file": path.name, "external_data": f"{path.name}.data" if external else None}
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, args, dynamo=True, input_names=input_names, output_names=output_names,
                dynamic_shapes=dynamic_shapes, opset_version=opset, optimize=False, verbose=False,
            )
            program.save(str(path), external_data=external)
        io = _graph_io(path)
        _check_dynamic(io, axes, graph)
        info["exporter"] = "dynamo"
    except Exception as exc:  # noqa: BLE001 - any exporter failure triggers the documented, logged fallback
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        log.warning("dynamo ONNX export of the %s graph failed (%s); falling back to the TorchScript exporter",
                    graph, reason)
        for stale in (path, path.with_name(path.name + ".data")):
            if stale.exists():
                stale.unlink()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=input_names, output_names=output_names,
                dynamic_axes=axes, opset_version=opset,
            )
        if external:
            import onnx

            proto = onnx.load(str(path))
            onnx.save_model(proto, str(path), save_as_external_data=True, location=f"{path.name}.data")
        io = _graph_io(path)
        _check_dynamic(io, axes, graph)
        info["exporter"] = f"torchscript (fallback: {reason})"
    info.update(io)
    info["dynamic_axes"] = {k: {str(a): n for a, n in v.items()} for k, v in axes.items()}
    return info


def export_onnx(
    model: Any,
    folder: Path,
    example_images: Tensor,
    example_notes: list[str],
    opset: int = DEFAULT_OPSET,
) -> dict[str, Any]:
    """Write the graphs of a ``RecLMISInference`` into ``folder``; return the sidecar's graph/text sections.

    Args:
        model: ``RecLMISInference`` in eval mode (fp32, CPU).
        folder: an existing, empty folder.
        example_images: (B>=2, C, H, W) example images.
        example_notes: B example notes (their tokenized length must be >= 2).
    """
    if example_images.shape[0] < 2:
        raise ValueError("export examples need batch >= 2 (batch 1 makes the batch axis static)")
    seg = model.seg
    batch_dim, len_dim = _dims(max(2, model.max_length))
    graphs: dict[str, Any] = {}
    text: dict[str, Any] | None = None
    if seg.uses_text:
        tok = model.tokenize(example_notes)
        with torch.no_grad():
            feats = model.text_encoder(tok.input_ids, tok.attention_mask)
        graphs["text_encoder"] = _export_one(
            model.text_encoder, (tok.input_ids, tok.attention_mask), TEXT_INPUTS, ["text_features"],
            text_dynamic_axes(), {"input_ids": {0: batch_dim, 1: len_dim}, "attention_mask": {0: batch_dim, 1: len_dim}},
            folder / TEXT_FILE, opset, "text encoder",
        )
        graphs["segmentation"] = _export_one(
            seg, (example_images, feats, tok.attention_mask), SEG_INPUTS, ["logits"], seg_dynamic_axes(True),
            {"image": {0: batch_dim}, "text_features": {0: batch_dim, 1: len_dim}, "text_mask": {0: batch_dim, 1: len_dim}},
            folder / SEG_FILE, opset, "segmentation",
        )
        text = {
            "encoder": type(model.text_encoder).__name__,
            "dim": int(model.text_encoder.dim),
            "max_length": int(model.max_length),
            "pad_to_max": bool(model.pad_to_max),
            "eof_fill": int(model.eof_fill),
            "tokenizer": tokenizer_description(model.text_encoder.tokenizer, folder),
        }
    else:
        graphs["segmentation"] = _export_one(
            seg, (example_images,), ["image"], ["logits"], seg_dynamic_axes(False),
            {"image": {0: batch_dim}}, folder / SEG_FILE, opset, "segmentation",
        )
    return {"graphs": graphs, "text": text, "opset": opset, "reclmis_version": __version__}


def onnx_initializer_params(path: Path, param_names: set[str]) -> tuple[int, list[str]]:
    """(numel of initializers named like a parameter, initializer names that are none of ``param_names``)."""
    import numpy as np
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    count, other = 0, []
    for init in model.graph.initializer:
        if init.name in param_names:
            count += int(np.prod(init.dims)) if len(init.dims) else 1
        else:
            other.append(init.name)
    return count, other
