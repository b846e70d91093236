"""Model artefacts on disk: the one table of kinds, and the one reader/writer of their documents.

An artefact is a folder that a runtime can run (:func:`reclmis_core.runtime.open_runtime`):

===============  =======================================  ==============  ===========================
kind             what the folder holds                    runtime         written by
===============  =======================================  ==============  ===========================
checkpoint       ``model.safetensors`` + ``config.json``  torch           ``reclmis train``
safetensors      the same, inference weights only         torch           ``export --format safetensors``
onnx             ``*.onnx`` + ``reclmis_export.json``     onnx            ``export --format onnx [--int8]``
torch-export     ``*.pt2`` + ``reclmis_export.json``      torch-export    ``export --format torch-export``
===============  =======================================  ==============  ===========================

Every kind that ``reclmis export`` writes has a runtime, so it can be predicted, evaluated and benchmarked; the
exporter's writers and verifiers are keyed by these names (``reclmis_core.export.exporter.FORMATS``).

Plain data and JSON: no torch here (the CLI's help reads this table). Documents:

- ``config.json`` of a checkpoint (:func:`read_checkpoint_config`, :func:`write_checkpoint_document`): format
  version, model class, the resolved ``RunConfig``, the text tower's state and ``meta`` (with
  ``meta.preprocessing``, the model's :class:`~reclmis_core.data.preprocessor.Preprocessor`);
- ``reclmis_export.json`` of an export (:func:`read_sidecar`, :func:`write_sidecar`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .version import __version__
from .config_schema import deep_merge, migrate_renamed_keys
from .errors import CheckpointError, ConfigError
from .registry import Registry

log = logging.getLogger(__name__)

FORMAT_VERSION = 2
MODEL_CLASS = "RecLMIS"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
SIDECAR = "reclmis_export.json"

# Format 1 (reclmis 0.1) had no model.ci_order: its CI always ran the reference order.
_DEFAULTS_BEFORE = {1: {"model": {"ci_order": "reference"}}}


@dataclass(frozen=True)
class ArtefactSpec:
    """One kind of artefact: how to recognise its folder and what runs it."""

    name: str  # (str) checkpoint | safetensors | onnx | torch-export
    description: str  # (str) one line for help texts
    runtime: str  # (str) the runtime that runs it: torch | onnx | torch-export
    precisions: tuple[str, ...]  # (tuple) what --precision may ask of it (an export runs at its own)
    devices: tuple[str, ...] = ("cpu", "cuda")  # (tuple) device types its runtime runs on
    sidecar_format: str | None = None  # (str) the sidecar's "format" value (exports with a sidecar)
    exported: bool = True  # (bool) written by `reclmis export --format NAME`
    requires: tuple[str, ...] = ()  # (tuple) importable modules that writing and running it need


ARTEFACTS: Registry[ArtefactSpec] = Registry("artefact kind")
for _spec in (
    ArtefactSpec("checkpoint", "training checkpoint: model.safetensors + config.json", "torch",
                 ("fp32", "bf16", "fp16"), exported=False),
    ArtefactSpec("safetensors", "inference weights (model.safetensors) + config.json, loadable as a checkpoint",
                 "torch", ("fp32", "bf16", "fp16")),
    ArtefactSpec("onnx", "ONNX graphs (segmentation + text encoder) + sidecar JSON; run with ONNX Runtime", "onnx",
                 ("fp32",), sidecar_format="reclmis-onnx", requires=("onnx", "onnxruntime", "onnxscript")),
    ArtefactSpec("torch-export", "torch.export programs (.pt2, dynamic batch and note length) + sidecar JSON",
                 "torch-export", ("fp32",), sidecar_format="reclmis-torch-export"),
):
    ARTEFACTS.register(_spec.name)(_spec)

#: Export formats (``reclmis export --format``): the artefact kinds that export writes.
EXPORT_FORMATS = tuple(name for name, spec in ARTEFACTS.items() if spec.exported)
#: Runtimes (``reclmis predict --backend``), in table order.
RUNTIMES = tuple(dict.fromkeys(spec.runtime for _, spec in ARTEFACTS.items()))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


def read_sidecar(folder: str | Path) -> dict[str, Any]:
    """``reclmis_export.json`` of an export folder (CheckpointError if absent, invalid or not reclmis')."""
    folder = Path(folder)
    path = folder / SIDECAR
    if not path.is_file():
        raise CheckpointError(f"{folder} is not a reclmis export: {SIDECAR} is missing (create one with "
                              "`reclmis export --format onnx --out FOLDER`)")
    doc = _read_json(path)
    formats = [s.sidecar_format for _, s in ARTEFACTS.items() if s.sidecar_format]
    if not isinstance(doc, dict) or doc.get("format") not in formats:
        raise CheckpointError(f"{path} does not describe a reclmis export")
    return doc


def write_sidecar(folder: Path, doc: dict[str, Any]) -> None:
    (folder / SIDECAR).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def read_checkpoint_config(path: str | Path) -> dict[str, Any]:
    """Read and check ``config.json`` of a checkpoint folder (no weights touched)."""
    folder = Path(path)
    if folder.is_file():
        raise CheckpointError(
            f"{folder} is a file; a reclmis checkpoint is a folder with {WEIGHTS} and {CONFIG}. "
            "reclmis never loads pickled or TorchScript files (they can run code)"
        )
    if not folder.is_dir():
        raise CheckpointError(f"checkpoint not found: {folder}")
    cfg_path = folder / CONFIG
    if (folder / SIDECAR).is_file() and not (folder / WEIGHTS).is_file():
        kind = _sidecar_kind(folder)
        raise CheckpointError(f"{folder} is an {'ONNX' if kind == 'onnx' else kind} export, not a checkpoint: run it "
                              f"with --backend {kind} (reclmis predict --backend {kind} --checkpoint {folder} ...), "
                              "or pass the checkpoint folder it was exported from")
    if not cfg_path.is_file() or not (folder / WEIGHTS).is_file():
        raise CheckpointError(f"{folder} is not a reclmis checkpoint: it needs {WEIGHTS} and {CONFIG}")
    doc = _read_json(cfg_path)
    if not isinstance(doc, dict) or doc.get("model_class") != MODEL_CLASS:
        raise CheckpointError(f"{cfg_path} does not describe a {MODEL_CLASS} checkpoint")
    version = doc.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{folder} has checkpoint format {version!r}, newer than this reclmis supports ({FORMAT_VERSION}); "
            "upgrade reclmis"
        )
    return doc


def write_checkpoint_document(folder: Path, state: dict[str, Any], config: dict[str, Any], *, max_length: int,
                              excluded: bool, text_state: dict[str, Any], meta: dict[str, Any],
                              weights_metadata: dict[str, str] | None = None) -> None:
    """The one writer of a checkpoint folder's two files (checkpoints and ``export --format safetensors``):
    ``state`` (tensors) to ``model.safetensors`` and the ``config.json`` document; ``config`` is the resolved
    run config as a dict. ``meta`` should hold ``preprocessing`` (``Preprocessor.to_dict()``): predict, eval and
    export rebuild the preprocessor from it."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / WEIGHTS), metadata={"format": "pt", "reclmis_format_version": str(FORMAT_VERSION),
                                                     **(weights_metadata or {})})
    doc = {
        "format_version": FORMAT_VERSION,
        "model_class": MODEL_CLASS,
        "reclmis_version": __version__,
        "max_length": max_length,
        "excluded_weights": "text_encoder" if excluded else None,
        "text_state": text_state,
        "config": config,
        "meta": meta,
    }
    (folder / CONFIG).write_text(json.dumps(doc, indent=2), encoding="utf-8")


def _sidecar_kind(folder: Path) -> str:
    """The artefact kind a sidecar names (``onnx`` when it is unreadable: the common export)."""
    try:
        fmt = read_sidecar(folder)["format"]
    except CheckpointError:
        return "onnx"
    return next(name for name, s in ARTEFACTS.items() if s.sidecar_format == fmt)


def replace_folder(tmp: Path, dest: Path) -> None:
    """Move ``tmp`` onto ``dest`` with the old copy removed only after the new one is in place."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def recover_folder(dest: str | Path) -> bool:
    """Undo a :func:`replace_folder` cut short between its two renames (e.g. ``kill -9``), which leaves no
    ``dest`` but the previous, complete copy as ``.<name>.old-<pid>``: move that copy back. Returns True if so."""
    dest = Path(dest)
    if dest.exists():
        return False
    olds = [p for p in dest.parent.glob(f".{dest.name}.old-*") if (p / CONFIG).is_file() and (p / WEIGHTS).is_file()]
    if not olds:
        return False
    newest = max(olds, key=lambda p: (p / CONFIG).stat().st_mtime)
    try:
        os.replace(newest, dest)
    except FileNotFoundError:  # another process of the same run restored it first
        return dest.exists()
    log.warning("%s was missing after an interrupted checkpoint write; restored the previous copy from %s",
                dest, newest.name)
    return True


def checkpoint_run_config(doc: dict[str, Any]) -> dict[str, Any]:
    """The run config of a ``config.json`` document, with the defaults of its format version filled in and keys
    renamed since it was written under their new names (``cvr_condition`` -> ``cvr_attn/loss_condition``)."""
    return migrate_renamed_keys(deep_merge(_DEFAULTS_BEFORE.get(doc.get("format_version"), {}), doc["config"]),
                                warn=False)


def detect_artefact(path: str | Path, runtime: str | None = None) -> ArtefactSpec:
    """The table row of the artefact folder ``path`` (CheckpointError naming what is missing otherwise).
    ``runtime="torch"`` reads it as a checkpoint, so that an export folder is named as such."""
    folder = Path(path)
    if runtime != "torch" and folder.is_dir() and (folder / SIDECAR).is_file() and not (folder / WEIGHTS).is_file():
        fmt = read_sidecar(folder)["format"]
        return next(s for _, s in ARTEFACTS.items() if s.sidecar_format == fmt)
    doc = read_checkpoint_config(folder)
    exported = isinstance(doc.get("meta"), dict) and "export" in doc["meta"]
    return ARTEFACTS.get("safetensors" if exported else "checkpoint")


def check_runtime_request(spec: ArtefactSpec, path: str | Path, runtime: str | None, precision: str,
                          device_type: str) -> None:
    """ConfigError when ``spec`` cannot run as asked: another runtime (``--backend``), a precision or a device
    its row does not list."""
    if runtime is not None and runtime != spec.runtime:
        raise ConfigError(f"{path} is a {spec.name} artefact, run by the {spec.runtime} backend: pass --backend "
                          f"{spec.runtime} (or leave --backend out), not {runtime}")
    if precision not in spec.precisions:
        raise ConfigError(f"--precision {precision} is for the torch backend; a {spec.name} export runs at the "
                          "precision it was exported with (reclmis export --format onnx --int8 for int8)")
    if device_type != "auto" and device_type not in spec.devices:
        raise ConfigError(f"a {spec.name} artefact runs on {' or '.join(spec.devices)}, not {device_type}")


__all__ = ["ARTEFACTS", "CONFIG", "EXPORT_FORMATS", "FORMAT_VERSION", "MODEL_CLASS", "RUNTIMES", "SIDECAR",
           "WEIGHTS", "ArtefactSpec", "check_runtime_request", "detect_artefact", "read_checkpoint_config",
           "checkpoint_run_config", "read_sidecar", "recover_folder", "replace_folder", "write_checkpoint_document",
           "write_sidecar"]
