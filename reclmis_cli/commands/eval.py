"""`reclmis eval`: score a checkpoint on a split; JSON (contract keys) + per-image CSV + a rich table."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from reclmis_core.errors import ConfigError
from reclmis_core.utils import atomic_write_text

from ..console import console, handle_errors, out

log = logging.getLogger("reclmis_cli.eval")

_MODE_TEXT = {
    "shuffle": "notes shuffled across images (each image gets another image's note)",
    "empty": "every note blanked",
}


@handle_errors
def eval_(
    checkpoint: Path = typer.Option(..., "--checkpoint", help="Checkpoint folder (e.g. runs/<name>/best)."),
    data: Path = typer.Option(None, "--data", help="Prepared DATA_DIR (default: the one the checkpoint trained on)."),
    dataset: str = typer.Option(None, "--dataset", help="Registered dataset instead of --data (qata|mosmed|sample)."),
    split: str = typer.Option("test", "--split", help="train | val | test."),
    json_out: Path = typer.Option(None, "--json", help="Write the scores as JSON here."),
    per_image: Path = typer.Option(None, "--per-image", help="Write per-image scores as CSV here."),
    text: str = typer.Option("as-is", "--text", help="as-is | shuffle | empty: reliance-on-the-note test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --text shuffle."),
    threshold: float = typer.Option(None, "--threshold", help="Foreground probability threshold (default: the "
                                    "checkpoint's infer.threshold)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per forward pass."),
    compare: bool = typer.Option(True, "--compare/--no-compare",
                                 help="With --text shuffle|empty, also score the notes as-is and report the drop."),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cuda if available)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    """Evaluate a checkpoint: per-image Dice/mIoU (LViT/RecLMIS protocol) and global Dice/IoU."""
    from reclmis_core.engine.checkpoint import load_checkpoint
    from reclmis_core.engine.evaluator import TEXT_MODES, evaluate

    if quiet:
        logging.getLogger("reclmis_core").setLevel(logging.WARNING)
        logging.getLogger("reclmis_cli").setLevel(logging.WARNING)
    if text not in TEXT_MODES:
        raise ConfigError(f"--text must be one of {', '.join(TEXT_MODES)}, got '{text}'")
    if split not in ("train", "val", "test"):
        raise ConfigError(f"--split must be train, val or test, got '{split}'")
    if threshold is not None and not 0.0 < threshold < 1.0:
        raise ConfigError(f"--threshold must lie in (0, 1), got {threshold}")
    model, cfg, _ = load_checkpoint(checkpoint)
    if data is not None and dataset:
        raise ConfigError("pass either --data or --dataset, not both")
    if dataset:
        from reclmis_core.engine.datasets_registry import resolve_dataset

        data = resolve_dataset(dataset, image_size=cfg.model.image_size)
    if data is None:
        if not cfg.data.root:
            raise ConfigError(f"{checkpoint} does not record its data folder; pass --data DATA_DIR")
        data = Path(cfg.data.root)
        log.info("no --data given: using the checkpoint's training data folder %s", data)
    kw = dict(checkpoint=str(checkpoint), seed=seed, batch_size=batch_size, threshold=threshold, device=device)
    result, rows = evaluate(model, data, split, text, cfg, **kw)
    doc = result.to_dict()
    baseline = None
    if text != "as-is" and compare and result.uses_text:
        baseline, _ = evaluate(model, data, split, "as-is", cfg, **kw)
        doc.update(dice_as_is=baseline.dice, miou_as_is=baseline.miou, dice_drop=baseline.dice - result.dice,
                   miou_drop=baseline.miou - result.miou)
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(doc, indent=2) + "\n")
    if per_image is not None:
        cols = ["id", "note", "dice", "iou", "fg_pred", "fg_true"] + (["original_note"] if text != "as-is" else [])
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{r[k]:.6f}" if isinstance(r[k], float) else r[k]) for k in cols})
        atomic_write_text(per_image, buf.getvalue())
    if quiet:
        return
    title = escape(f"{checkpoint} on {data} [{split}], {result.n_images} images, text: {text}")
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column(f"text {text}", justify="right")
    if baseline is not None:
        table.add_column("text as-is", justify="right")
        table.add_column("drop", justify="right")
    for key, label in (("dice", "Dice (per image)"), ("miou", "mIoU (per image)"), ("dice_global", "Dice (global)"),
                       ("iou_global", "IoU (global)")):
        value = getattr(result, key)
        cells = [label, f"{value:.4f}"]
        if baseline is not None:
            ref = getattr(baseline, key)
            cells += [f"{ref:.4f}", f"{ref - value:+.4f}"]
        table.add_row(*cells)
    for key, label, n_key in (
        ("dice_counterfactual", "Dice on counterfactual pairs", "n_counterfactual"),
        ("leak_named_side_unnamed_level", "leakage: named lung, unnamed level", "n_unnamed_lesions_named_side"),
        ("leak_other_side", "leakage: other lung", "n_unnamed_lesions_other_side"),
    ):
        value = getattr(result, key)
        if value is not None:
            cells = [f"{label} (n={getattr(result, n_key)})", f"{value:.3f}"]
            if baseline is not None:
                ref = getattr(baseline, key)
                cells += [f"{ref:.3f}", f"{ref - value:+.3f}"]
            table.add_row(*cells)
    out.print(table)
    if text != "as-is":
        if not result.uses_text:
            console.print("[yellow]reliance test skipped:[/] this checkpoint is image-only, the note is not used")
        else:
            what = _MODE_TEXT[text]
            drop = f" Dice drop {doc['dice_drop']:+.4f}." if "dice_drop" in doc else ""
            console.print(f"[bold]reliance test:[/] {what}.{drop} The drop from 'as-is' measures how much the "
                          "model relies on the note (larger = more reliance).")
    for path, what in ((json_out, "scores"), (per_image, "per-image scores")):
        if path is not None:
            console.print(f"{what} -> {path}")
