"""`reclmis eval`: score a checkpoint on a split; JSON (contract keys) + per-image CSV + a rich table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from reclmis_core.data.datasets_registry import DATASETS
from reclmis_core.errors import ConfigError
from reclmis_core.utils import atomic_write_text

from ..console import console, handle_errors, print_table, quiet_mode
from ..options import (
    checkpoint_option,
    config_option,
    configurable,
    device_option,
    quiet_option,
    set_option,
    threads_option,
)


_MODE_TEXT = {
    "shuffle": "notes shuffled across images (each image gets another image's note)",
    "empty": "every note blanked",
}


@handle_errors
@configurable("eval")
def eval_(
    checkpoint: Path | None = checkpoint_option(),
    data: Path = typer.Option(None, "--data", help="Prepared DATA_DIR (default: the one the checkpoint trained on)."),
    dataset: str = typer.Option(None, "--dataset", help=f"Registered dataset instead of --data ({'|'.join(DATASETS.names())})."),
    split: str = typer.Option("test", "--split", help="train | val | test."),
    json_out: Path = typer.Option(None, "--json", help="Write the scores as JSON here."),
    per_image: Path = typer.Option(None, "--per-image", help="Write per-image scores as CSV here."),
    out_dir: Path = typer.Option(None, "--out", "-o", help="Folder for eval.json and per_image.csv (instead of "
                                 "--json/--per-image)."),
    text: str = typer.Option("as-is", "--text", help="as-is | shuffle | empty: reliance-on-the-note test."),
    seed: int = typer.Option(0, "--seed", help="Seed of the --text shuffle."),
    threshold: float = typer.Option(None, "--threshold", help="Foreground probability threshold (default: the "
                                    "checkpoint's infer.threshold)."),
    batch_size: int = typer.Option(None, "--batch-size", help="Images per forward pass."),
    mirror: bool | None = typer.Option(None, "--mirror/--no-mirror", help="Test-time mirroring (default: the "
                                       "checkpoint's infer.mirror)."),
    compare: bool = typer.Option(True, "--compare/--no-compare",
                                 help="With --text shuffle|empty, also score the notes as-is and report the drop."),
    device: str = device_option(),
    threads: int = threads_option(),
    quiet: bool = quiet_option(),
    config: Path | None = config_option(),
    set_: list[str] = set_option(),
) -> None:
    """Evaluate a checkpoint: per-image Dice/mIoU (LViT/RecLMIS protocol) and global Dice/IoU."""
    from reclmis_core.data.folders import check_data_dir
    from reclmis_core.device import resolve_device
    from reclmis_core.engine.eval_run import check_eval_options, run_eval

    quiet = quiet_mode(quiet)
    if out_dir is not None:
        json_out = json_out or out_dir / "eval.json"
        per_image = per_image or out_dir / "per_image.csv"
    check_eval_options(split, text, threshold)  # before anything is loaded
    if data is not None and dataset:
        raise ConfigError("pass either --data or --dataset, not both")
    if data is not None:
        check_data_dir(data)
    resolve_device(device)  # a device that is not there: exit 2 before loading anything
    run = run_eval(checkpoint, data, split, text, dataset=dataset, seed=seed, threshold=threshold,
                   batch_size=batch_size, compare=compare, device=device, threads=threads, mirror=mirror)
    result, baseline, doc = run.result, run.baseline, run.to_dict()
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(doc, indent=2) + "\n")
    if per_image is not None:
        atomic_write_text(per_image, run.per_image_csv())
    if quiet:
        return
    title = f"{run.checkpoint} on {run.data} [{split}], {result.n_images} images, text: {text}"
    columns = ["metric", f"text {text}"] + (["text as-is", "drop"] if baseline is not None else [])
    table_rows = []
    for key, label in (("dice", "Dice (per image)"), ("miou", "mIoU (per image)"), ("dice_global", "Dice (global)"),
                       ("iou_global", "IoU (global)")):
        value = getattr(result, key)
        cells = [label, f"{value:.4f}"]
        if baseline is not None:
            ref = getattr(baseline, key)
            cells += [f"{ref:.4f}", f"{ref - value:+.4f}"]
        table_rows.append(cells)
    for key, label, n_key in (
        ("dice_counterfactual", "Dice on counterfactual pairs", "n_counterfactual"),
        ("pair_named_recall", "pairs: named-lesion recall (pixels)", "n_pairs"),
        ("pair_leakage", "pairs: unnamed-lesion leakage (pixels)", "n_pairs"),
        ("leak_named_side_unnamed_level", "leakage: named lung, unnamed level", "n_unnamed_lesions_named_side"),
        ("leak_other_side", "leakage: other lung", "n_unnamed_lesions_other_side"),
    ):
        value = getattr(result, key)
        if value is not None:
            cells = [f"{label} (n={getattr(result, n_key)})", f"{value:.3f}"]
            if baseline is not None:
                ref = getattr(baseline, key)
                cells += [f"{ref:.3f}", f"{ref - value:+.3f}"]
            table_rows.append(cells)
    print_table(title, columns, table_rows)
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
