"""The writers of ``export_model``: one function per export format (ONNX graphs, torch.export programs, inference
safetensors), each writing its files and the artefact's document (``reclmis_export.json`` or ``config.json``) with
the model's preprocessor into an empty folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..version import __version__
from ..artefacts import ARTEFACTS, write_checkpoint_document, write_sidecar
from ..config import RunConfig, config_to_dict
from ..data.preprocessor import Preprocessor
from .onnx import _dims, export_onnx, onnx_initializer_params
from .samples import SAMPLE_NOTES, sample_images


def numel(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------------------
# Sidecar
# --------------------------------------------------------------------------------------------------


def _sidecar(fmt: str, inf: Any, cfg: RunConfig, source: str | None, pre: Preprocessor, body: dict[str, Any]
             ) -> dict[str, Any]:
    return {
        "format": ARTEFACTS.get(fmt).sidecar_format,
        "format_version": 1,
        "reclmis_version": __version__,
        "torch_version": torch.__version__,
        "opset": body.get("opset"),
        "graphs": body["graphs"],
        "text": body.get("text"),
        "note_optional": inf.seg.uses_text and cfg.train.note_dropout > 0,
        "preprocessing": pre.describe(),
        "postprocessing": {"output": "logits", "activation": "sigmoid", "threshold": cfg.infer.threshold,
                           "mirror": cfg.infer.mirror},
        "params": {"segmentation": numel(inf.seg), "text_encoder": numel(inf.text_encoder)},
        "source": {"checkpoint": source, "preset": cfg.preset, "name": cfg.name},
        "model_config": config_to_dict(cfg.model),
    }


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------


def write_onnx(inf: Any, cfg: RunConfig, folder: Path, source: str | None, opset: int, pre: Preprocessor
                ) -> dict[str, Any]:
    body = export_onnx(inf, folder, sample_images(cfg, 2, seed=1), SAMPLE_NOTES[:2], opset)
    doc = _sidecar("onnx", inf, cfg, source, pre, body)
    write_sidecar(folder, doc)
    names = {n for n, _ in inf.seg.named_parameters()}
    count, _ = onnx_initializer_params(folder / body["graphs"]["segmentation"]["file"], names)
    if inf.text_encoder is not None:
        tnames = {n for n, _ in inf.text_encoder.named_parameters()}
        tcount, _ = onnx_initializer_params(folder / body["graphs"]["text_encoder"]["file"], tnames)
        count += tcount
    exporters = {k: v["exporter"] for k, v in body["graphs"].items()}
    return {"params_exported": count, "opset": opset, "exporters": exporters}


def _export_program(module: torch.nn.Module, args: tuple[Tensor, ...], dynamic_shapes: dict[str, Any]) -> Any:
    with torch.no_grad():
        return torch.export.export(module, args, dynamic_shapes=dynamic_shapes)


def _program_params(program: Any) -> int:
    sig = program.graph_signature
    return sum(program.state_dict[name].numel() for name in sig.parameters)


def write_torch_export(inf: Any, cfg: RunConfig, folder: Path, source: str | None, opset: int, pre: Preprocessor
                        ) -> dict[str, Any]:
    images = sample_images(cfg, 2, seed=1)
    batch_dim, len_dim = _dims(max(2, inf.max_length))
    graphs: dict[str, Any] = {}
    text = None
    count = 0
    if inf.seg.uses_text:
        tok = inf.tokenize(SAMPLE_NOTES[:2])
        with torch.no_grad():
            feats = inf.text_encoder(tok.input_ids, tok.attention_mask)
        tprog = _export_program(inf.text_encoder, (tok.input_ids, tok.attention_mask),
                                {"input_ids": {0: batch_dim, 1: len_dim}, "attention_mask": {0: batch_dim, 1: len_dim}})
        torch.export.save(tprog, str(folder / "text_encoder.pt2"))
        count += _program_params(tprog)
        graphs["text_encoder"] = {"file": "text_encoder.pt2", "inputs": ["input_ids", "attention_mask"],
                                  "outputs": ["text_features"], "dynamic_axes": {"input_ids": {"0": "batch", "1": "text_len"},
                                  "attention_mask": {"0": "batch", "1": "text_len"}}}
        sprog = _export_program(inf.seg, (images, feats, tok.attention_mask),
                                {"image": {0: batch_dim}, "text_features": {0: batch_dim, 1: len_dim},
                                 "text_mask": {0: batch_dim, 1: len_dim}})
        from ..models.text import tokenizer_description

        text = {"encoder": type(inf.text_encoder).__name__, "dim": int(inf.text_encoder.dim),
                "max_length": int(inf.max_length), "pad_to_max": bool(inf.pad_to_max), "eof_fill": int(inf.eof_fill),
                "tokenizer": tokenizer_description(inf.text_encoder.tokenizer, folder)}
        seg_inputs = ["image", "text_features", "text_mask"]
    else:
        sprog = _export_program(inf.seg, (images,), {"image": {0: batch_dim}, "text_features": None, "text_mask": None})
        seg_inputs = ["image"]
    torch.export.save(sprog, str(folder / "segmentation.pt2"))
    count += _program_params(sprog)
    graphs["segmentation"] = {"file": "segmentation.pt2", "inputs": seg_inputs, "outputs": ["logits"],
                              "dynamic_axes": {n: ({"0": "batch"} if n == "image" else {"0": "batch", "1": "text_len"})
                                               for n in seg_inputs}}
    doc = _sidecar("torch-export", inf, cfg, source, pre, {"graphs": graphs, "text": text, "opset": None})
    write_sidecar(folder, doc)
    return {"params_exported": count, "opset": None, "exporters": {k: "torch.export" for k in graphs}}


def write_safetensors(inf: Any, cfg: RunConfig, folder: Path, source: str | None, opset: int, pre: Preprocessor
                       ) -> dict[str, Any]:

    # The same checkpoint layout with the training-only branches switched off: build_model() then builds exactly
    # the inference modules, so load_checkpoint() reads this folder and strict key checks still hold.
    model_cfg = dataclasses.replace(cfg.model, use_cvr=False, use_clr=False, use_ccl=False)
    run_cfg = dataclasses.replace(cfg, model=model_cfg)
    state = {}
    for prefix, module in (("seg.", inf.seg), ("text_encoder.", inf.text_encoder)):
        if module is not None:
            state.update({prefix + k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()})
    tower = inf.text_encoder
    excluded = tower is not None and tower.pretrained and not any(p.requires_grad for p in tower.parameters())
    if excluded:  # frozen verified pretrained weights are reloaded from their source, as in checkpoints
        state = {k: v for k, v in state.items() if not k.startswith("text_encoder.")}
    meta = {"export": "inference weights only (no CVR/CLR/W heads)", "source_checkpoint": source,
            "preprocessing": pre.to_dict()}
    write_checkpoint_document(folder, state, config_to_dict(run_cfg), max_length=inf.max_length, excluded=excluded,
                              text_state={} if tower is None else tower.extra_state(), meta=meta,
                              weights_metadata={"reclmis_export": "inference"})
    params = {n for n, _ in inf.named_parameters()}
    count = sum(v.numel() for k, v in state.items() if k in params)
    if excluded:
        count += numel(tower)
    return {"params_exported": count, "opset": None, "exporters": {"model": "safetensors"}}
