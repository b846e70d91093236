"""A run's summary: ``results.json`` (best epoch, final scores, the per-epoch history) and ``results.png`` (loss and
validation curves), drawn with Pillow so no plotting library is needed."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..model_card import refresh_run_cards
from ..utils import atomic_write_bytes, atomic_write_text

COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def run_summary(history: Sequence[dict[str, float]], *, best_epoch: int, best_dice: float, stopped_early: bool,
                skipped_steps: int) -> dict[str, Any]:
    """The ``results.json`` document of a run."""
    best = next((r for r in history if int(r["epoch"]) == best_epoch), None)
    last = history[-1] if history else {}
    return {
        "epochs_done": int(last.get("epoch", 0)),
        "best_epoch": best_epoch,
        "best_val_dice": best_dice,
        "best_val_miou": best.get("val_miou") if best else None,
        "last_val_dice": last.get("val_dice"),
        "last_losses": {k: v for k, v in last.items() if k == "loss" or k.endswith("_loss")},
        "stopped_early": stopped_early,
        "skipped_steps": skipped_steps,
        "seconds": round(sum(r.get("seconds", 0.0) for r in history), 2),
        "history": list(history),
    }


def _panel(draw: Any, box: tuple[int, int, int, int], title: str, series: dict[str, list[tuple[float, float]]],
           y_range: tuple[float, float] | None, font: Any) -> None:
    x0, y0, x1, y1 = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((x0, y0 - 16), title, fill=(0, 0, 0), font=font)
    points = [p for pts in series.values() for p in pts]
    if not points:
        return
    xs = [p[0] for p in points]
    lo, hi = y_range or (min(p[1] for p in points), max(p[1] for p in points))
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    xa, xb = min(xs), max(xs)
    xb = xb if xb > xa else xa + 1

    def at(x: float, y: float) -> tuple[float, float]:
        return (x0 + 8 + (x - xa) / (xb - xa) * (x1 - x0 - 16), y1 - 8 - (y - lo) / (hi - lo) * (y1 - y0 - 16))

    for frac in (0.0, 0.5, 1.0):  # y ticks
        y = lo + frac * (hi - lo)
        _, py = at(xa, y)
        draw.line([(x0 - 4, py), (x0, py)], fill=(0, 0, 0))
        draw.text((x0 - 52, py - 6), f"{y:.3g}", fill=(0, 0, 0), font=font)
    for x in (xa, xb):  # x ticks: first and last epoch
        px, _ = at(x, lo)
        draw.text((px - 6, y1 + 4), f"{x:g}", fill=(0, 0, 0), font=font)
    draw.text(((x0 + x1) // 2 - 16, y1 + 4), "epoch", fill=(0, 0, 0), font=font)
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        xy = [at(x, y) for x, y in pts if math.isfinite(y)]
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for px, py in xy:
            draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=colour)
        ly = y0 + 6 + 14 * i  # legend
        draw.line([(x1 - 118, ly + 6), (x1 - 100, ly + 6)], fill=colour, width=3)
        draw.text((x1 - 96, ly), name, fill=(0, 0, 0), font=font)


def render_curves(history: Sequence[dict[str, float]], title: str = "") -> bytes:
    """PNG bytes: losses per epoch (left) and val Dice / mIoU per epoch (right)."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (1000, 420), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((70, 6), title, fill=(0, 0, 0), font=font)
    names = [k for k in (history[0] if history else {}) if k == "loss" or k.endswith("_loss")]
    losses = {k: [(r["epoch"], r[k]) for r in history if k in r] for k in names}
    scores = {k: [(r["epoch"], r[k]) for r in history if k in r] for k in ("val_dice", "val_miou")}
    _panel(draw, (70, 50, 480, 380), "training losses", losses, None, font)
    _panel(draw, (570, 50, 980, 380), "validation (per-image mean)", scores, (0.0, 1.0), font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_run_report(run_dir: str | Path, history: Sequence[dict[str, float]], **summary: Any) -> None:
    """Write ``run_dir/results.json`` and ``run_dir/results.png`` (each atomically)."""
    run_dir = Path(run_dir)
    doc = run_summary(history, **summary)
    atomic_write_text(run_dir / "results.json", json.dumps(doc, indent=2) + "\n")
    title = f"{run_dir.name}: best val Dice {doc['best_val_dice']:.4f} at epoch {doc['best_epoch']}"
    atomic_write_bytes(run_dir / "results.png", render_curves(history, title))
    refresh_run_cards(run_dir)  # the checkpoints' README.md cite results.json
