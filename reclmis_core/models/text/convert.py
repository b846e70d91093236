"""One-time conversion of OpenAI's CLIP TorchScript archive (e.g. ``ViT-B-32.pt``) to safetensors.

OpenAI distributes CLIP as a TorchScript archive. Loading one runs code stored in the file, so reclmis does it
only here, when the user explicitly asks for the conversion of a file they trust; everything else in reclmis
loads safetensors and JSON only. The output is a Hugging Face style folder (``model.safetensors`` +
``config.json``) holding the text tower, loadable with ``--text-encoder clip:<folder>``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import torch

from ...errors import CheckpointError
from ...utils import atomic_path

log = logging.getLogger(__name__)


def openai_to_hf_text(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict]:
    """Map OpenAI CLIP text weights to ``CLIPTextModelWithProjection`` names; returns (state, config)."""
    need = ["token_embedding.weight", "positional_embedding", "ln_final.weight", "text_projection"]
    missing = [k for k in need if k not in state]
    if missing:
        raise CheckpointError(f"not an OpenAI CLIP archive: missing {', '.join(missing)}")
    width = state["ln_final.weight"].shape[0]
    out: dict[str, torch.Tensor] = {
        "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
        "text_model.final_layer_norm.weight": state["ln_final.weight"],
        "text_model.final_layer_norm.bias": state["ln_final.bias"],
        "text_projection.weight": state["text_projection"].t().contiguous(),
    }
    names = {"ln_1": "layer_norm1", "ln_2": "layer_norm2", "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
             "attn.out_proj": "self_attn.out_proj"}
    layers = set()
    pattern = re.compile(r"^transformer\.resblocks\.(\d+)\.(.+)\.(weight|bias)$")
    for key, value in state.items():
        m = pattern.match(key)
        if not m:
            continue
        i, mod, kind = int(m.group(1)), m.group(2), m.group(3)
        layers.add(i)
        prefix = f"text_model.encoder.layers.{i}"
        if mod == "attn" or mod == "attn.in_proj":
            continue
        if mod in names:
            out[f"{prefix}.{names[mod]}.{kind}"] = value
    for i in layers:
        prefix = f"text_model.encoder.layers.{i}.self_attn"
        w = state[f"transformer.resblocks.{i}.attn.in_proj_weight"]
        b = state[f"transformer.resblocks.{i}.attn.in_proj_bias"]
        for name, wt, bs in zip(("q_proj", "k_proj", "v_proj"), w.chunk(3), b.chunk(3)):
            out[f"{prefix}.{name}.weight"] = wt.contiguous()
            out[f"{prefix}.{name}.bias"] = bs.contiguous()
    config = {
        "model_type": "clip_text_model",
        "architectures": ["CLIPTextModelWithProjection"],
        "vocab_size": state["token_embedding.weight"].shape[0],
        "hidden_size": width,
        "intermediate_size": state["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": len(layers),
        "num_attention_heads": width // 64,
        "max_position_embeddings": state["positional_embedding"].shape[0],
        "projection_dim": state["text_projection"].shape[1],
        "hidden_act": "quick_gelu",
        "bos_token_id": 49406,
        "eos_token_id": 49407,
        "pad_token_id": 0,
    }
    return {k: v.float().contiguous() for k, v in out.items()}, config


def convert_openai_clip(archive: str | Path, out_dir: str | Path) -> Path:
    """Convert a trusted OpenAI CLIP TorchScript archive to a safetensors folder. RUNS CODE FROM THE FILE."""
    from safetensors.torch import save_file

    archive = Path(archive)
    if not archive.is_file():
        raise CheckpointError(f"CLIP archive not found: {archive}")
    log.warning("loading TorchScript archive %s: this executes code from the file; only convert files you trust",
                archive)
    try:
        state = torch.jit.load(str(archive), map_location="cpu").state_dict()
    except RuntimeError as exc:
        raise CheckpointError(f"{archive} is not a TorchScript archive: {exc}") from None
    text_state, config = openai_to_hf_text(dict(state))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(text_state, str(tmp), metadata={"format": "pt", "source": archive.name})
    with atomic_path(out / "config.json") as tmp:
        tmp.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return out
