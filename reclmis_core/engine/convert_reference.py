"""``reclmis convert-reference``: a checkpoint of the public RecLMIS code -> a reclmis checkpoint folder.

The reference training script writes ``torch.save({"epoch", "best_model", "model", "state_dict", "val_loss",
"optimizer"})`` with the full CLIP model inside ``state_dict`` (a ``module.`` prefix when trained with
DataParallel, storages tagged ``cuda:0``). The file is read with ``torch.load(weights_only=True)`` only, which
builds tensors and plain containers and refuses anything that would run code. Every tensor of the reclmis model
is filled from the file under a strict check (names, shapes); what the file holds beyond that is listed with the
reason it is not needed. The folder is written in reference-exact mode (``REFERENCE_OVERRIDES``): the public
code's CI order, preprocessing, tokenization and padding treatment, so ``predict``/``eval`` give its outputs.
"""

from __future__ import annotations

import logging
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import build_config, deep_merge
from ..data.reference import REFERENCE_EOF_FILL, REFERENCE_TOKENS
from ..errors import CheckpointError
from ..models import build_model
from ..models.text.convert import openai_to_hf_text
from ..checkpoint import load_state_strict, save_checkpoint
from ..utils import strip_ansi

log = logging.getLogger(__name__)

REFERENCE_KEYS = ("epoch", "best_model", "model", "state_dict", "val_loss", "optimizer")

#: The reference-exact switches a converted checkpoint carries (a reclmis-trained model may set them too).
REFERENCE_OVERRIDES: dict[str, Any] = {
    "model": {
        "ci_order": "reference",  # V' = attn(V -> E'), the public code's order
        "text_padding": "raw",  # pad features enter the text Conv1d, CI attends to all 18 slots
        "recon_causal": True,  # training-only: its reconstruction decoders use a future mask
        "recon_target": "reference",  # training-only: V' and raw CLIP features as targets
        "recon_detach": False,
        "ccl_same_note": False,
        "text": {"encoder": "clip", "weights": None, "freeze": True, "max_length": REFERENCE_TOKENS,
                 "pad_to_max": True, "eof_fill": REFERENCE_EOF_FILL},
    },
    "data": {"preprocessing": "reference", "mean": 0.0, "std": 1.0},
}
#: Per reference config, told apart by the reconstruction layer count: QaTa (Config_covid19) 4, MosMed+ 3; the
#: converted checkpoint records that config's training recipe (reclmis_core.recipes, reference-<dataset>).
_DATASET_BY_LAYERS = {4: "qata", 3: "mosmed"}

_LEFT_OUT_REASONS = {
    "clip_visual": "CLIP visual tower (the reference builds all of CLIP; only its text tower runs)",
    "plam_conv_sig": "PLAM conv_sig (built, never called in the reference forward)",
    "context_cross_attention": "cross-attention of the reconstructors' context stacks (built, never called)",
}


@dataclass
class ConversionReport:
    source: str
    out: str
    recon_layers: int
    dataset: str
    tensors_mapped: int
    left_out: dict[str, int] = field(default_factory=dict)  # reason key -> tensor count
    epoch: int | None = None
    val_loss: float | None = None
    data_parallel: bool = False

    def left_out_lines(self) -> list[str]:
        return [f"{n} tensors: {_LEFT_OUT_REASONS[k]}" for k, n in self.left_out.items() if n]


def _unpickling_reason(exc: Exception) -> str:
    """The line of torch's weights-only refusal that names what the file wanted to load (``Unsupported global:
    GLOBAL os.system``), without the ANSI styling and the advice to load it unsafely around it."""
    lines = [line.strip() for line in strip_ansi(str(exc)).splitlines() if line.strip()]
    named = next((line for line in lines if "GLOBAL" in line or "global" in line), None)
    if named is None:
        return lines[0].split(". ")[0].rstrip(".") if lines else type(exc).__name__
    return named.split(": ", 1)[1].rstrip(".") if named.startswith("WeightsUnpickler error") else named.rstrip(".")


def read_reference_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(``state_dict`` with ``module.`` stripped, {data_parallel, epoch, val_loss}) of a reference checkpoint;
    never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"reference checkpoint not found: {path}")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it is not a plain tensor checkpoint; loading it would need code from the file "
            f"({_unpickling_reason(exc)})"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({first})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        keys = sorted(map(str, obj))[:6] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path}: not a RecLMIS reference checkpoint: expected a dict with {', '.join(REFERENCE_KEYS)}, "
            f"got {keys}"
        )
    state = obj["state_dict"]
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: state_dict entry {bad[0]!r} is not a named tensor")
    parallel = bool(state) and all(k.startswith("module.") for k in state)
    if parallel:
        state = {k[len("module."):]: v for k, v in state.items()}
    info: dict[str, Any] = {"data_parallel": parallel}
    for key in ("epoch", "val_loss"):
        value = obj.get(key)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        info[key] = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return dict(state), info


def _layer_count(state: dict[str, torch.Tensor]) -> int:
    counts = {}
    for name in ("rec_img_trans1.decoder1", "rec_img_trans1.decoder2", "rec_text_trans1.decoder1",
                 "rec_text_trans1.decoder2"):
        pat = re.compile(rf"^{re.escape(name)}\.decoder_layers\.(\d+)\.")
        counts[name] = len({int(m.group(1)) for k in state if (m := pat.match(k))})
    values = set(counts.values())
    if len(values) != 1 or 0 in values:
        raise CheckpointError(f"reconstruction stacks have inconsistent or no layers: {counts}")
    return values.pop()


def _split_in_proj(src: str, dst: str, state: dict[str, torch.Tensor], out: dict[str, torch.Tensor],
                   used: set[str]) -> None:
    """nn.MultiheadAttention (in_proj q|k|v, out_proj) -> reclmis Attention (q, kv, out)."""
    w, b = state[f"{src}.in_proj_weight"], state[f"{src}.in_proj_bias"]
    d = w.shape[1]
    out[f"{dst}.q.weight"], out[f"{dst}.kv.weight"] = w[:d], w[d:]
    out[f"{dst}.q.bias"], out[f"{dst}.kv.bias"] = b[:d], b[d:]
    out[f"{dst}.out.weight"] = state[f"{src}.out_proj.weight"]
    out[f"{dst}.out.bias"] = state[f"{src}.out_proj.bias"]
    used.update({f"{src}.in_proj_weight", f"{src}.in_proj_bias", f"{src}.out_proj.weight", f"{src}.out_proj.bias"})


_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def map_reference_state(state: dict[str, torch.Tensor], layers: int) -> tuple[dict[str, torch.Tensor], dict, dict]:
    """Reference names -> reclmis names. Returns (reclmis state, HF CLIP text config, left-out counts)."""
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()

    def take(src: str, dst: str) -> None:
        if src not in state:
            raise CheckpointError(f"not a RecLMIS reference checkpoint: tensor '{src}' is missing")
        out[dst] = state[src]
        used.add(src)

    def conv_bn(src: str, dst_conv: str, dst_bn: str) -> None:
        take(f"{src}.conv.weight", f"{dst_conv}.weight")
        take(f"{src}.conv.bias", f"{dst_conv}.bias")
        for part in _BN:
            take(f"{src}.norm.{part}", f"{dst_bn}.{part}")

    conv_bn("inc", "seg.encoder.inc.0", "seg.encoder.inc.1")
    for k in range(1, 5):
        for j in range(2):
            conv_bn(f"down{k}.nConvs.{j}", f"seg.encoder.down{k}.1.{j}.0", f"seg.encoder.down{k}.1.{j}.1")
    for block, up in enumerate(("up4", "up3", "up2", "up1")):
        dst = f"seg.decoder.blocks.{block}"
        take(f"{up}.pixModule.conv_avg.weight", f"{dst}.plam.conv_avg.weight")
        take(f"{up}.pixModule.conv_max.weight", f"{dst}.plam.conv_max.weight")
        for i in (0, 2):
            take(f"{up}.pixModule.bottleneck.{i}.weight", f"{dst}.plam.gate.{i}.weight")
            take(f"{up}.pixModule.bottleneck.{i}.bias", f"{dst}.plam.gate.{i}.bias")
        for j in range(2):
            conv_bn(f"{up}.nConvs.{j}", f"{dst}.convs.{j}.0", f"{dst}.convs.{j}.1")
    take("outc.weight", "seg.head.weight")
    take("outc.bias", "seg.head.bias")
    take("text_module4.weight", "seg.text_proj.weight")
    take("text_module4.bias", "seg.text_proj.bias")
    take("interact.embeddings.position_embeddings", "seg.interaction.embed.pos")
    take("interact.embeddings.patch_embeddings.weight", "seg.interaction.embed.proj.weight")
    take("interact.embeddings.patch_embeddings.bias", "seg.interaction.embed.proj.bias")
    for src, dst in (("attn_text", "attn_text"), ("attn_img", "attn_image")):
        _need(state, f"interact.{src}.in_proj_weight")
        _split_in_proj(f"interact.{src}", f"seg.interaction.{dst}", state, out, used)
    # training-only modules
    conv_bn("interact.CTBN", "interest.text_conv.0", "interest.text_conv.1")
    for src, dst in (("mlp_visual", "interest.mlp_patch"), ("mlp_woi", "interest.mlp_word")):
        for i in (0, 2):
            take(f"{src}.{i}.weight", f"{dst}.{i}.weight")
            take(f"{src}.{i}.bias", f"{dst}.{i}.bias")
    take("clip.logit_scale", "logit_scale")
    for src, dst in (("rec_img_trans1", "cvr"), ("rec_text_trans1", "clr")):
        for stack, ours in (("decoder1", "context"), ("decoder2", "decoder")):
            for i in range(layers):
                s, d = f"{src}.{stack}.decoder_layers.{i}", f"{dst}.{ours}.{i}"
                _need(state, f"{s}.self_attn.in_proj_weight")
                _split_in_proj(f"{s}.self_attn", f"{d}.self_attn", state, out, used)
                norms = [("self_attn_layer_norm", "norm1"), ("final_layer_norm", "norm3")]
                if ours == "decoder":
                    _need(state, f"{s}.encoder_attn.in_proj_weight")
                    _split_in_proj(f"{s}.encoder_attn", f"{d}.cross_attn", state, out, used)
                    norms.append(("encoder_attn_layer_norm", "norm2"))
                for a, b in norms:
                    take(f"{s}.{a}.weight", f"{d}.{b}.weight")
                    take(f"{s}.{a}.bias", f"{d}.{b}.bias")
                for fc in ("fc1", "fc2"):
                    take(f"{s}.{fc}.weight", f"{d}.ffn.{fc}.weight")
                    take(f"{s}.{fc}.bias", f"{d}.ffn.{fc}.bias")
    # CLIP text tower
    clip = {k[len("clip."):]: v for k, v in state.items()
            if k.startswith("clip.") and not k.startswith("clip.visual.")}
    clip_text = {k: v for k, v in clip.items() if k != "logit_scale"}
    text_state, text_config = openai_to_hf_text(clip_text)
    for k, v in text_state.items():
        out[f"text_encoder.model.{k}"] = v
    used.update(f"clip.{k}" for k in clip_text)
    left: dict[str, int] = {key: 0 for key in _LEFT_OUT_REASONS}
    unknown = []
    for k in state:
        if k in used:
            continue
        if k.startswith("clip.visual."):
            left["clip_visual"] += 1
        elif re.match(r"^up\d\.pixModule\.conv_sig\.", k):
            left["plam_conv_sig"] += 1
        elif re.match(r"^rec_(img|text)_trans1\.decoder1\.decoder_layers\.\d+\.encoder_attn", k):
            left["context_cross_attention"] += 1
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(
            f"not a RecLMIS reference checkpoint this converter knows: {len(unknown)} unexpected tensors "
            f"(e.g. {unknown[0]})"
        )
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}, text_config, left


def _need(state: dict[str, torch.Tensor], key: str) -> None:
    if key not in state:
        raise CheckpointError(f"not a RecLMIS reference checkpoint: tensor '{key}' is missing")


def convert_reference_checkpoint(src: str | Path, out: str | Path, overwrite: bool = False) -> ConversionReport:
    """Convert a reference checkpoint file into a reclmis checkpoint folder at ``out`` (atomic)."""
    src, out = Path(src), Path(out)
    if out.exists() and not overwrite:
        raise CheckpointError(f"{out} exists; pass --overwrite to replace it")
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out} exists and is not a folder")
    state, info = read_reference_file(src)
    layers = _layer_count(state)
    dataset = _DATASET_BY_LAYERS.get(layers, "unknown")
    mapped, text_config, left = map_reference_state(state, layers)
    overrides = deep_merge(REFERENCE_OVERRIDES, {"model": {"recon_layers": layers}, "name": f"reference-{dataset}"})
    recipe = f"reference-{dataset}" if dataset in _DATASET_BY_LAYERS.values() else None
    cfg = build_config("paper", overrides=overrides, recipe=recipe)
    model = build_model(cfg.model, text_state={"config": text_config})
    load_state_strict(model, mapped, src)
    meta = {
        "converted_from": src.name,
        "reference_dataset_guess": dataset,
        "reference_epoch": None if info["epoch"] is None else int(info["epoch"]),
        "reference_val_loss": None if info["val_loss"] is None else float(info["val_loss"]),
        "data_parallel": info["data_parallel"],
        "left_out": {k: n for k, n in left.items() if n},
        "colour": True,
    }
    save_checkpoint(model.eval(), cfg, out, meta)
    report = ConversionReport(str(src), str(out), layers, dataset, len(mapped), left, meta["reference_epoch"],
                              meta["reference_val_loss"], info["data_parallel"])
    for line in report.left_out_lines():
        log.info("left out %s", line)
    return report
