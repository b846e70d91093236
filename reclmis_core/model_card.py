"""Model cards: the ``README.md`` with Hugging Face YAML metadata that every checkpoint and export folder carries.

It says what the model does (task), on what it was trained (the DATA_DIR's ``dataset.json``), how well (the run's
``results.json``, else the checkpoint's own record), what it is for and what it is not for. Written by one call
where checkpoints (:func:`reclmis_core.engine.checkpoint.write_checkpoint_files`), run reports
(:func:`reclmis_core.engine.report.write_run_report`) and exports (:func:`reclmis_core.export.export_model`) are
written; the Hugging Face hub renders it as the model page.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import yaml

from .version import __version__
from .utils import atomic_write_text

log = logging.getLogger(__name__)

CARD = "README.md"
RESULTS = "results.json"

INTENDED_USE = (
    "Research on language-guided segmentation of lesions in chest radiographs and CT slices: given an image and a "
    "radiologist's note (e.g. \"bilateral lower lung infection\"), it marks the pixels the note describes. Use "
    "it to study, benchmark or prototype; a person checks every mask.")
LIMITS = [
    "Not a medical device: it has not been validated clinically, and its masks must not guide diagnosis or "
    "treatment.",
    "It knows the images, notes and lesions of its training data only (see Training data). Other scanners, "
    "populations, languages or note styles, and findings absent from training, give unreliable masks.",
    "The note steers the mask: a note that names the wrong side or level gives a wrong mask without warning.",
    "Scores are on the validation split of the training data (and on phantoms for the bundled sample); they do "
    "not predict performance on other data.",
]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _data_summary(root: str | None) -> dict[str, Any]:
    """What the DATA_DIR says of itself (``dataset.json``); only its folder name when that is all there is."""
    if not root:
        return {"name": "unknown"}
    info = _read_json(Path(root) / "dataset.json") or {}
    name = "/".join(Path(root).parts[-2:])  # the folder and its parent: "sample/data" says more than "data"
    if info.get("synthetic"):
        name = f"{name} (synthetic phantoms)"
    return {"name": name, "layout": info.get("layout"), "counts": info.get("counts"), "size": info.get("size")}


def _metrics(meta: dict[str, Any], results: dict[str, Any] | None) -> dict[str, Any]:
    if results:
        return {"source": RESULTS, "epochs": results.get("epochs_done"), "best_epoch": results.get("best_epoch"),
                "val_dice": results.get("best_val_dice"), "val_miou": results.get("best_val_miou")}
    if "val_dice" in meta:
        return {"source": "checkpoint", "epochs": meta.get("epoch"), "best_epoch": meta.get("best_epoch"),
                "val_dice": meta.get("best_dice", meta.get("val_dice")), "val_miou": meta.get("val_miou")}
    return {}


def card_text(config: dict[str, Any], meta: dict[str, Any] | None = None, results: dict[str, Any] | None = None,
              export: dict[str, Any] | None = None, name: str = "") -> str:
    """The card of a model whose resolved RunConfig is ``config`` (a dict), ``meta`` the checkpoint's record,
    ``results`` its run's ``results.json``, ``export`` what an export folder holds (format, files)."""
    meta = meta or {}
    model = config.get("model", {})
    data = _data_summary(config.get("data", {}).get("root"))
    scores = _metrics(meta, results)
    text = model.get("text", {}).get("encoder", "none")
    name = name or config.get("name") or "reclmis model"
    front: dict[str, Any] = {
        "library_name": "reclmis",
        "pipeline_tag": "image-segmentation",
        "license": "other",
        "tags": ["medical-imaging", "image-segmentation", "text-guided-segmentation", "reclmis",
                 *(["onnx"] if export and export.get("format") == "onnx" else [])],
    }
    metric_rows = [{"type": "dice", "name": "val Dice (per-image mean)", "value": round(float(scores["val_dice"]), 4)}
                   ] if scores.get("val_dice") is not None else []
    if scores.get("val_miou") is not None:
        metric_rows.append({"type": "mean_iou", "name": "val mIoU (per-image mean)",
                            "value": round(float(scores["val_miou"]), 4)})
    if metric_rows:
        front["model-index"] = [{"name": name, "results": [{
            "task": {"type": "image-segmentation", "name": "Language-guided lesion segmentation"},
            "dataset": {"name": data["name"], "type": data["name"], "split": "val"},
            "metrics": metric_rows}]}]
    lines = ["---", yaml.safe_dump(front, sort_keys=False).rstrip(), "---", "", f"# {name}", "",
             "RecLMIS language-guided segmentation: an image and a clinical note in, a lesion mask out "
             f"(reclmis {__version__}).", "", "## Model", "",
             f"- preset: {config.get('preset', '?')}{' / recipe ' + config['recipe'] if config.get('recipe') else ''}",
             f"- image encoder: {model.get('image_encoder', 'unet')}, input {model.get('image_size', '?')} px",
             f"- text encoder: {text}" + (" (image-only model: the note is ignored)" if text == "none" else ""),
             f"- threshold: {config.get('infer', {}).get('threshold', 0.5)}"]
    if export:
        lines.append(f"- this folder: an export as {export.get('format')} ({', '.join(export.get('files', []))}) of "
                     f"{export.get('source') or 'an in-memory model'}")
    counts = data.get("counts") or {}
    lines += ["", "## Training data", "", f"- data: {data['name']}" + (f", layout {data['layout']}" if data.get(
        "layout") else "") + (f", {data['size']} px" if data.get("size") else "")]
    if counts:
        lines.append("- images: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    lines += ["", "## Metrics", ""]
    if scores:
        lines += [f"- validation Dice (per-image mean): {scores['val_dice']:.4f}" if scores.get("val_dice") is not None
                  else "- validation Dice: not recorded",
                  f"- validation mIoU (per-image mean): {scores['val_miou']:.4f}" if scores.get("val_miou") is not None
                  else "- validation mIoU: not recorded",
                  f"- best epoch {scores.get('best_epoch')} of {scores.get('epochs')} (from {scores['source']})"]
    else:
        lines.append("- not recorded (this checkpoint was not written by `reclmis train`); run `reclmis eval`.")
    lines += ["", "## Intended use", "", INTENDED_USE, "", "## Limits", "", *(f"- {x}" for x in LIMITS), "",
              "## Use", "", "```python", "import reclmis_core", "", 'model = reclmis_core.load("<this folder or '
              'hub id>")', 'result = model.predict("scan.png", "bilateral lower lung infection")[0]',
              "result.mask  # uint8, the input's own size", "```", ""]
    return "\n".join(lines)


def write_model_card(folder: str | Path, config: dict[str, Any], meta: dict[str, Any] | None = None,
                     results: dict[str, Any] | None = None, export: dict[str, Any] | None = None,
                     name: str = "") -> Path:
    """Write ``folder/README.md`` (atomically)."""
    path = Path(folder) / CARD
    atomic_write_text(path, card_text(config, meta, results, export, name))
    return path


def checkpoint_card(folder: str | Path, config: dict[str, Any], meta: dict[str, Any] | None,
                    run_dir: str | Path | None = None) -> Path:
    """The card of a checkpoint being written into ``folder``; ``run_dir`` holds its ``results.json``."""
    run_dir = Path(run_dir) if run_dir is not None else Path(folder).parent
    name = f"{run_dir.name}/{Path(folder).name.lstrip('.').split('.tmp')[0]}"
    return write_model_card(folder, config, meta, _read_json(run_dir / RESULTS), name=name)


def refresh_run_cards(run_dir: str | Path) -> None:
    """Rewrite the cards of ``run_dir/best`` and ``run_dir/last`` with the run's current ``results.json``."""
    for sub in ("best", "last"):
        doc = _read_json(Path(run_dir) / sub / "config.json")
        if doc is not None:
            checkpoint_card(Path(run_dir) / sub, doc.get("config", {}), doc.get("meta"), run_dir)


def export_card(folder: str | Path, config: dict[str, Any], source: str | None, fmt: str,
                files: list[str]) -> Path:
    """The card of an export folder: its checkpoint's record and run results, and what the folder holds."""
    meta, results, name = None, None, f"{fmt} export"
    if source:
        doc = _read_json(Path(source) / "config.json") or {}
        meta = doc.get("meta")
        results = _read_json(Path(source).parent / RESULTS)
        name = f"{Path(source).parent.name}/{Path(source).name} ({fmt} export)"
    return write_model_card(folder, config, meta, results, {"format": fmt, "files": files, "source": source}, name)
