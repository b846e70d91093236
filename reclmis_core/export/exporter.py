"""One entry point, one FORMATS table: ``export_model(checkpoint_or_model, fmt, out, verify) -> ExportResult``.

Every format holds the inference graph only (``RecLMIS.for_inference()``): the CVR/CLR reconstructors, the
W_poi/W_woi heads and the CCL temperature are not in it.

=============  ========================================================================================
format         what ``out`` becomes
=============  ========================================================================================
onnx           folder: ``segmentation.onnx``, ``text_encoder.onnx``, ``reclmis_export.json`` (see onnx.py)
torch-export   folder: ``segmentation.pt2``, ``text_encoder.pt2`` (torch.export programs, dynamic batch and
               note length), ``reclmis_export.json``; load with ``torch.export.load(path).module()``
safetensors    folder: ``model.safetensors`` (inference weights) + ``config.json`` (config with the training-only
               branches switched off); ``reclmis_core.checkpoint.load_checkpoint`` reads it
=============  ========================================================================================

Outputs are built in a temporary sibling folder and renamed into place only after (optional) verification
passed, so a failed export or verification leaves nothing behind.

``verify=True`` runs the export (ONNX Runtime CPU for onnx, the loaded program for torch-export, a rebuilt model
for safetensors) against eager PyTorch on phantom chest images with different notes at batch 1 and 3, and raises
``ExportError`` if max |logits diff| > 1e-4.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..artefacts import ARTEFACTS, EXPORT_FORMATS, ArtefactSpec, read_checkpoint_config, replace_folder
from ..config import RunConfig, config_to_dict
from ..data.preprocessor import Preprocessor
from ..errors import ConfigError
from ..model_card import export_card
from ..utils import drop_log_messages
from .onnx import DEFAULT_OPSET, ExportError
from .quantize import DEFAULT_CALIB_IMAGES, DEFAULT_MIN_DICE
from .verify import VerifyResult, verify_export, verify_safetensors
from .writers import numel, write_onnx, write_safetensors, write_torch_export

log = logging.getLogger(__name__)

@dataclass
class ExportResult:
    """What ``export_model`` wrote."""

    format: str
    path: str
    files: list[str]
    size_mb: float
    seconds: float
    params_exported: int  # parameters in the exported artefact (by name)
    params_inference: int  # parameters of RecLMIS.for_inference() (segmentation + text encoder)
    opset: int | None = None
    exporters: dict[str, str] = field(default_factory=dict)  # graph -> "dynamo" or the fallback and its reason
    verify: VerifyResult | None = None
    notes: list[str] = field(default_factory=list)
    int8: dict[str, Any] | None = None  # the sidecar's quantization section (calibration, mask Dice vs fp32)

    def to_dict(self) -> dict[str, Any]:
        import dataclasses

        return dataclasses.asdict(self)


@dataclass(frozen=True)
class ExportFormat:
    """An export format: the artefact kind it writes (``reclmis_core.artefacts.ARTEFACTS``: name, requirements,
    the runtime that runs it) with its writer and verifier."""

    artefact: ArtefactSpec
    writer: Callable[..., dict[str, Any]]
    verifier: Callable[..., VerifyResult]


# --------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------


def resolve_model(
    checkpoint_or_model: Any, cfg: RunConfig | None = None
) -> tuple[Any, Any, RunConfig, str | None]:
    """-> (training model or None, inference model, run config, source checkpoint path or None)."""
    from ..models import RecLMIS, RecLMISInference

    if isinstance(checkpoint_or_model, (str, Path)):
        from ..checkpoint import load_checkpoint

        model, run_cfg, _ = load_checkpoint(checkpoint_or_model)
        return model, model.for_inference(), run_cfg, str(Path(checkpoint_or_model).resolve())
    if isinstance(checkpoint_or_model, RecLMIS):
        run_cfg = cfg or RunConfig(model=checkpoint_or_model.cfg)
        return checkpoint_or_model, checkpoint_or_model.for_inference(), run_cfg, None
    if isinstance(checkpoint_or_model, RecLMISInference):
        if cfg is None:
            raise ConfigError("exporting a RecLMISInference needs its RunConfig (cfg=...)")
        return None, checkpoint_or_model.eval(), cfg, None
    raise ConfigError(f"expected a checkpoint folder or a RecLMIS model, got {type(checkpoint_or_model).__name__}")


def _preprocessor(cfg: RunConfig, source: str | None) -> Preprocessor:
    """The checkpoint's preprocessor (in-memory models: from ``cfg``, gray)."""
    if source is None:
        return Preprocessor.from_config(cfg)
    return Preprocessor.from_checkpoint(cfg, read_checkpoint_config(source))


_WRITERS = {
    "onnx": (write_onnx, verify_export),
    "torch-export": (write_torch_export, verify_export),
    "safetensors": (write_safetensors, verify_safetensors),
}
#: Every artefact kind that export writes (``ARTEFACTS`` rows with ``exported``), with its writer and verifier;
#: each has a runtime, so whatever is exported can be predicted, evaluated and benchmarked.
FORMATS: dict[str, ExportFormat] = {name: ExportFormat(ARTEFACTS.get(name), *_WRITERS[name])
                                    for name in EXPORT_FORMATS}


def _check_requirements(fmt: ExportFormat) -> None:
    import importlib.util

    missing = [m for m in fmt.artefact.requires if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"--format {fmt.artefact.name} needs {', '.join(missing)}; install them with: pip install 'reclmis[export]'"
        )


def _folder_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# Log records that say nothing about the user's export: the ONNX exporter's note that torchvision's detection ops
# are not registered (four lines per graph; reclmis uses none of them) and the note-length warning about the
# export's own test notes (verification feeds fixed sample notes, some longer than the model's max_length).
_NOISE = {
    "torch.onnx._internal.exporter._registration": ("torchvision is not installed",),
    "reclmis_core.models.text.base": ("notes longer than", "%d of %d notes were longer"),
}


def _quiet_export_noise() -> Any:
    return drop_log_messages(_NOISE)


def _check_export_request(fmt: str, out: str | Path, overwrite: bool, int8: bool, calib: str | Path | None,
                          int8_min_dice: float) -> tuple[ExportFormat, Path]:
    """The format's row and the output folder; ConfigError for a request export cannot serve, before any work."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown export format '{fmt}'. Available: {', '.join(FORMATS)}")
    if (int8 or calib is not None) and fmt != "onnx":
        raise ConfigError(f"--int8/--calib are for --format onnx (ONNX Runtime runs the int8 graph), not {fmt}")
    if calib is not None and not int8:
        raise ConfigError("--calib DATA_DIR calibrates an int8 export; add --int8")
    if not 0.0 <= int8_min_dice <= 1.0:
        raise ConfigError(f"--int8-min-dice must lie in [0, 1], got {int8_min_dice}")
    if calib is not None:  # before any expensive work
        from ..data.folders import check_data_dir

        check_data_dir(calib, flag="--calib")
    spec = FORMATS[fmt]
    _check_requirements(spec)
    dest = Path(out)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"--out {dest} is a file; {fmt} exports are written to a folder")
    if dest.exists() and not overwrite:
        raise ConfigError(f"--out {dest} already exists; pass --overwrite to replace it (only once the new export "
                          "succeeded), or choose another folder")
    return spec, dest


def _write_and_verify(spec: ExportFormat, inf: Any, run_cfg: RunConfig, tmp: Path, dest: Path, source: str | None,
                      opset: int, pre: Preprocessor, verify: bool) -> ExportResult:
    """Write the artefact into ``tmp`` and check it: every inference parameter in it and, with ``verify``, its
    runtime's logits against eager PyTorch's (ExportError otherwise)."""
    fmt = spec.artefact.name
    with _quiet_export_noise():
        info = spec.writer(inf, run_cfg, tmp, source, opset, pre)
    result = ExportResult(
        format=fmt, path=str(dest), files=_folder_files(tmp),
        size_mb=sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) / 1e6, seconds=0.0,
        params_exported=int(info["params_exported"]), params_inference=numel(inf.seg) + numel(inf.text_encoder),
        opset=info["opset"], exporters=info["exporters"],
    )
    if result.params_exported != result.params_inference:
        raise ExportError(
            f"the {fmt} export holds {result.params_exported} parameters, the inference model "
            f"{result.params_inference}; refusing to write it"
        )
    if verify:
        log.info("verifying the %s export against eager PyTorch (batch 1 and 3)", fmt)
        with _quiet_export_noise():
            result.verify = spec.verifier(inf, run_cfg, tmp)
        if not result.verify.passed:
            raise ExportError(
                f"--verify failed: the {fmt} export differs from eager PyTorch by max |diff| "
                f"{result.verify.max_abs_diff:.3g} > {result.verify.tolerance:g}; nothing was written to {dest}"
            )
    return result


def export_model(
    checkpoint_or_model: Any,
    fmt: str,
    out: str | Path,
    verify: bool = False,
    *,
    cfg: RunConfig | None = None,
    opset: int = DEFAULT_OPSET,
    overwrite: bool = False,
    int8: bool = False,
    calib: str | Path | None = None,
    calib_images: int = DEFAULT_CALIB_IMAGES,
    int8_min_dice: float = DEFAULT_MIN_DICE,
    preprocessor: Preprocessor | None = None,
) -> ExportResult:
    """Export the inference graph of a checkpoint folder or a built model.

    Args:
        checkpoint_or_model: checkpoint folder, ``RecLMIS`` or ``RecLMISInference`` (then ``cfg`` is needed).
        fmt: a key of ``FORMATS``: ``onnx``, ``torch-export`` or ``safetensors``.
        out: output folder (created; an existing one is replaced only when the export succeeded).
        verify: compare the export against eager PyTorch (batch 1 and 3, different notes); raise ``ExportError``
            if max |diff| > 1e-4.
        cfg: the run config when a model object is given (default: the model's own model config).
        preprocessor: the preprocessing the model was trained with, stored in the export (default: the
            checkpoint's; for a model object, from ``cfg``, gray).
        opset: ONNX opset (onnx only).
        overwrite: replace an existing ``out`` (else ConfigError, checked before any work).
        int8: (onnx) make the segmentation graph static int8 (``reclmis_core.export.quantize``), calibrated on
            ``calib_images`` images of the prepared folder ``calib`` (phantoms when None, with a warning); refuse
            (ExportError, nothing written) when the int8 masks' mean Dice vs fp32 on held-out images (not the
            calibration ones; pairs empty in both not counted) is below ``int8_min_dice`` (0: accept, stated in
            the sidecar).

    Returns:
        ExportResult with the files, size, parameter counts and the verification details.

    Example:
        >>> res = export_model("runs/qata/best", "onnx", "exports/qata", verify=True)
        >>> res.verify.max_abs_diff < 1e-4
        True
    """
    spec, dest = _check_export_request(fmt, out, overwrite, int8, calib, int8_min_dice)
    start = time.perf_counter()
    _, inf, run_cfg, source = resolve_model(checkpoint_or_model, cfg)
    inf = inf.eval()
    pre = preprocessor or _preprocessor(run_cfg, source)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    int8_tmp: Path | None = None
    try:
        log.info("exporting the inference graph as %s to %s", fmt, dest)
        result = _write_and_verify(spec, inf, run_cfg, tmp, dest, source, opset, pre, verify)
        final = tmp
        if int8:
            int8_tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.int8-", dir=dest.parent))
            _quantize_into(int8_tmp, inf, run_cfg, pre, tmp, dest, result, calib, calib_images, int8_min_dice)
            final = int8_tmp
        export_card(final, config_to_dict(run_cfg), source, fmt, result.files)  # README.md, Hugging Face metadata
        replace_folder(final, dest)
    finally:
        for folder in (tmp, int8_tmp):
            if folder is not None and folder.exists():
                shutil.rmtree(folder, ignore_errors=True)
    result.seconds = time.perf_counter() - start
    return result


def _quantize_into(out: Path, inf: Any, cfg: RunConfig, pre: Preprocessor, fp32_dir: Path, dest: Path,
                   result: ExportResult, calib: str | Path | None, n: int, min_dice: float) -> None:
    """Quantize the fp32 export in ``fp32_dir`` into the empty folder ``out`` (gated on agreement with fp32:
    :func:`.quantize.quantize_gated`); fill ``result``."""
    from .quantize import quantize_gated

    with _quiet_export_noise():
        result.int8 = quantize_gated(fp32_dir, out, cfg, calib, n, inf.seg.uses_text, min_dice, dest, pre)
    result.files = _folder_files(out)
    result.size_mb = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6


def list_formats() -> list[tuple[str, str]]:
    return [(name, f.artefact.description) for name, f in FORMATS.items()]

