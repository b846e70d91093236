"""Self-describing checkpoints: ``model.safetensors`` + ``config.json``; never a pickle.

A checkpoint folder holds:
- ``model.safetensors``: weights (frozen pretrained text weights are left out and reloaded from their
  verified source, which ``config.json`` names);
- ``config.json``: format version, model class, the full resolved ``RunConfig``, the text tower's extra state
  (e.g. the BPE vocabulary of the scratch encoder) and free-form ``meta`` (epoch, metrics, ...);
- optionally ``state/`` with the trainer's resume state (optimizer, scheduler, RNG), written by the trainer.

Folders are written to a temporary sibling and renamed into place, so a crash never leaves a half checkpoint.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from .artefacts import (  # noqa: F401  (names callers read from here)
    CONFIG,
    FORMAT_VERSION,
    MODEL_CLASS,
    WEIGHTS,
    checkpoint_run_config,
    read_checkpoint_config,
    recover_folder,
    replace_folder,
    write_checkpoint_document,
)
from .config import RunConfig, config_from_dict, config_to_dict
from .errors import CheckpointError, ReclmisError
from .model_card import checkpoint_card
from .models import RecLMIS, build_model

log = logging.getLogger(__name__)


def write_checkpoint_files(model: RecLMIS, cfg: RunConfig, folder: Path, meta: dict[str, Any] | None = None) -> None:
    """Write weights and config into an existing (temporary) folder."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.checkpoint_state_dict().items()}
    config = config_to_dict(cfg)
    write_checkpoint_document(folder, state, config, max_length=model.max_length,
                              excluded=bool(model.persistent_keys_excluded()), text_state=model.text_state(),
                              meta=meta or {})
    checkpoint_card(folder, config, meta or {})  # README.md with Hugging Face metadata


def save_checkpoint(model: RecLMIS, cfg: RunConfig, dest: str | Path, meta: dict[str, Any] | None = None) -> Path:
    """Atomically write a checkpoint folder at ``dest``."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        write_checkpoint_files(model, cfg, tmp, meta)
        replace_folder(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[RecLMIS, RunConfig, dict[str, Any]]:
    """Rebuild the model from a checkpoint folder and load its weights (safetensors only).

    Returns:
        ``(model in eval mode, run config, config.json document)``.
    """
    folder = Path(path)
    doc = read_checkpoint_config(folder)
    try:
        cfg = config_from_dict(checkpoint_run_config(doc))
    except ReclmisError as exc:
        raise CheckpointError(f"{folder}: its config does not fit this reclmis version: {exc}") from None
    model = build_model(cfg.model, text_state=doc.get("text_state") or {})
    try:
        state = load_file(str(folder / WEIGHTS), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{folder / WEIGHTS} is not a readable safetensors file: {exc}") from None
    load_state_strict(model, state, folder / WEIGHTS)
    model.max_length = int(doc.get("max_length") or model.max_length)
    return model.eval(), cfg, doc


def load_state_strict(model: RecLMIS, state: dict[str, Any], source: Path) -> None:
    """Load ``state`` into ``model``: every tensor it needs (frozen pretrained text weights aside) must be there
    with its shape, and nothing else; ``source`` names the file in the error."""
    expected = {k: v for k, v in model.state_dict().items() if k not in set(model.persistent_keys_excluded())}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and tuple(state[k].shape) != tuple(expected[k].shape)
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append(f"{len(wrong)} tensors differ in shape (e.g. {wrong[0]})")
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
        raise CheckpointError(
            f"{source} does not match the architecture in its config: " + "; ".join(parts)
        )
    model.load_state_dict(state, strict=False)


def find_latest_checkpoint(root: str | Path = "runs") -> Path:
    """The newest ``runs/*/best`` checkpoint (by the time its config.json was written): the one newest-run finder
    that predict, eval and export use when no ``--checkpoint`` is given."""
    root = Path(root)
    found = [p for p in root.glob("*/best") if (p / CONFIG).is_file()]
    if not found:
        raise CheckpointError(
            f"no checkpoint given and none found under {root}/*/best; train one with 'reclmis train' "
            "or pass --checkpoint PATH"
        )
    return max(found, key=lambda p: ((p / CONFIG).stat().st_mtime, str(p)))


def checkpoint_or_latest(checkpoint: str | Path | None) -> Path:
    """``checkpoint`` as given, or (None) the newest ``runs/*/best``, logged: what every command uses."""
    if checkpoint is not None:
        return Path(checkpoint)
    latest = find_latest_checkpoint()
    log.info("using the newest checkpoint: %s", latest)
    return latest
