"""`reclmis train`: build the run config (preset < dataset recipe < --config < --set < flags), then Trainer.fit."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import typer

from reclmis_core.config import (
    check_preset,
    deep_merge,
    load_yaml,
    parse_overrides,
    preset_defaults,
    run_sections,
)
from reclmis_core.engine.train_config import flag_overrides, resume_config
from reclmis_core.engine.train_config import resolve_train_config as resolve_run_config
from reclmis_core.errors import ConfigError

from ..console import ProgressReporter, console, handle_errors, is_interactive, quiet_mode
from ..options import device_option, quiet_option, threads_option

log = logging.getLogger("reclmis_cli.train")



class _Progress:
    """Training progress through the one progress adapter: a bar per epoch and one for validation on a
    terminal, plus one row per epoch (epoch, losses, val_dice, val_miou, lr, time); plain log lines when piped."""

    def __init__(self, log_every: int) -> None:
        self.bar = ProgressReporter(transient=True, every=max(1, log_every))
        self.header = False

    def __call__(self, ev: Any) -> None:
        if ev.kind == "start":
            self.bar.__enter__()
        elif ev.kind == "step":
            shown = {k: v for k, v in ev.parts.items() if k in ("loss", "dice_loss")}  # all losses: the epoch row
            info = (" ".join(f"{k} {v:.3f}" for k, v in shown.items())
                    + f" | {ev.images_per_s:.1f} img/s | ETA {_hms(ev.eta_s)}")
            self.bar.update("train", ev.step, ev.steps, info=info, label=f"epoch {ev.epoch}/{ev.epochs}")
        elif ev.kind == "val_step":
            self.bar.update("val", ev.step, ev.steps, label="  validation")
        elif ev.kind == "epoch":
            self.bar.remove("train")
            self.bar.remove("val")
            self._row(ev)
        elif ev.kind == "end":
            self.bar.close()

    def _row(self, ev: Any) -> None:
        r = ev.record
        best = ev.best  # the trainer's decision: on resume it knows the saved best, this console does not
        losses = [k for k in r if k == "loss" or k.endswith("_loss")]
        if is_interactive():  # a table-like row per epoch, as Ultralytics prints
            cols = ["epoch", *losses, "val_dice", "val_miou", "lr", "time"]
            width = {c: max(9, len(c) + 1) for c in cols}
            if not self.header:
                self.header = True
                self.bar.line("".join(c.rjust(width[c]) for c in cols), markup="[bold]" + "".join(
                    c.rjust(width[c]) for c in cols) + "[/]")
            cells = [f"{ev.epoch}/{ev.epochs}", *(f"{r[k]:.4f}" for k in losses), f"{r['val_dice']:.4f}",
                     f"{r['val_miou']:.4f}", f"{r['lr']:.2e}", f"{r['seconds']:.1f}s"]
            text = "".join(c.rjust(width[k]) for c, k in zip(cells, cols)) + ("  best" if best else "")
            self.bar.line(text)
        else:
            parts = " ".join(f"{k} {r[k]:.4f}" for k in losses)
            self.bar.line(f"epoch {ev.epoch}/{ev.epochs}  {parts}  val_dice {r['val_dice']:.4f} val_miou "
                          f"{r['val_miou']:.4f}  lr {r['lr']:.2e}  {r['seconds']:.1f}s{'  [best]' if best else ''}")

    def close(self) -> None:
        self.bar.close()


def _hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


_DEFAULTS = "default: from the preset"


@handle_errors
def train(
    dataset: str = typer.Option(None, "--dataset", help="Registered dataset: qata | mosmed (paper recipe, 200/500 "
                                "epochs) | sample (bundled; the tiny preset)."),
    recipe: str = typer.Option(None, "--recipe", help="Training recipe: paper | reference with --dataset "
                               "qata|mosmed, or in full (paper-qata, reference-qata, reference-mosmed, ...) with any "
                               "data; default: the dataset's (paper)."),
    data: Path = typer.Option(None, "--data", help="A DATA_DIR made by 'reclmis prepare' (instead of --dataset)."),
    preset: str = typer.Option(None, "--preset", "-p", help="paper | tiny | guided | guided-tiny (default: the "
                               "dataset's, else paper)."),
    config: Path = typer.Option(None, "--config", help="YAML config (model, data, train, ... sections)."),
    out: Path = typer.Option(None, "--out", "-o", help="Run folder (default runs/<dataset>-<preset>)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help=f"Training epochs ({_DEFAULTS}: {preset_defaults('epochs')})."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help=f"Images per step per process ({_DEFAULTS}: "
                                   f"{preset_defaults('batch_size')})."),
    lr: float = typer.Option(None, "--lr", help=f"Peak learning rate, Adam ({_DEFAULTS}: {preset_defaults('lr')})."),
    text_encoder: str = typer.Option(None, "--text-encoder",
                                     help="clip | clip:<folder|file|hub-id> | minilm | scratch | hf:<id>."),
    no_text: bool = typer.Option(False, "--no-text", help="Image-only baseline (no text tower)."),
    ablate: str = typer.Option(None, "--ablate", help="Turn branches off, e.g. cvr,clr,ccl."),
    resume: bool = typer.Option(False, "--resume", help="Continue RUN_DIR/last exactly where it stopped (its own "
                                "config: give --out RUN_DIR)."),
    init: Path = typer.Option(None, "--init", help="Start from this checkpoint's weights (new optimizer, new run)."),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Overwrite an existing run folder."),
    seed: int = typer.Option(None, "--seed", help="Global seed (offset by process rank)."),
    set_: list[str] = typer.Option([], "--set", help="Config override key=value (repeatable), e.g. "
                                   "--set train.warmup_epochs=2."),
    deterministic: bool = typer.Option(None, "--deterministic/--no-deterministic",
                                       help="Deterministic kernels (exact resume; slower on GPU)."),
    mixed_precision: str = typer.Option(None, "--mixed-precision", help="no | bf16 | fp16 (fp16 needs a GPU)."),
    patience: int = typer.Option(None, "--patience", help="Early stopping after N epochs without better val Dice."),
    grad_accum: int = typer.Option(None, "--grad-accum", help="Gradient accumulation steps."),
    tensorboard: bool = typer.Option(None, "--tensorboard/--no-tensorboard", help="Log to RUN_DIR (TensorBoard)."),
    workers: int = typer.Option(None, "--workers", "-w", help="DataLoader worker processes (default 0: in the "
                                "main process; data.num_workers)."),
    device: str = device_option(),
    threads: int = threads_option(),
    cpu: bool = typer.Option(False, "--cpu", help="Deprecated: use --device cpu.", hidden=True),
    quiet: bool = quiet_option(),
) -> None:
    """Train RecLMIS; writes RUN_DIR/config.yaml, metrics.csv, best/ and last/."""
    if preset is not None:
        check_preset(preset)  # a typo fails at once, before torch loads or the sample data is prepared
    if recipe is not None and not resume:
        from reclmis_core.recipes import resolve_recipe

        resolve_recipe(recipe, dataset)  # the same for a recipe unknown or not defined for this dataset
    from reclmis_core.device import apply_threads, resolve_device
    from reclmis_core.engine.trainer import Trainer

    if cpu:
        log.warning("--cpu is deprecated and will be removed in the next release; use --device cpu")
        device = "cpu"
    rank0 = int(os.environ.get("RANK", "0") or 0) == 0
    quiet = quiet_mode(quiet or not rank0)
    resolve_device(device)  # a device that is not there: exit 2 before any data is prepared
    flags = flag_overrides(
        epochs=epochs, batch_size=batch_size, lr=lr, text_encoder=text_encoder, no_text=no_text, ablate=ablate,
        seed=seed, deterministic=deterministic, mixed_precision=mixed_precision, patience=patience,
        grad_accum=grad_accum, tensorboard=tensorboard,
    )
    if workers is not None:
        if workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {workers}")
        flags = deep_merge(flags, {"data": {"num_workers": workers}})
    if resume and init is not None:
        raise ConfigError("--init starts a new run from a checkpoint's weights and --resume continues a run; "
                          "pass one of them")
    if resume and exist_ok:
        raise ConfigError("--resume continues a run and --exist-ok overwrites it; pass one of them")
    if resume and not (dataset or data):
        # `reclmis train --resume --out RUN_DIR`: everything comes from the run itself
        if out is None:
            raise ConfigError("--resume continues a run with the config saved in it: pass its folder, "
                              "reclmis train --resume --out RUN_DIR (or the --dataset/--data it was started with)")
        given = run_sections(load_yaml(config)) if config else {}
        if preset:
            given["preset"] = preset
        if recipe:
            given["recipe"] = recipe
        # the run's own config wins; what --preset/--config/--set/flags give must match it (resume_config says which)
        cfg = resume_config(out, deep_merge(deep_merge(given, parse_overrides(set_)), flags))
        data_dir, run_dir = Path(cfg.data.root or ""), out
    else:
        cfg, data_dir, run_name = resolve_run_config(dataset=dataset, data=data, preset=preset, config=config,
                                                     sets=set_, flags=flags, cpu=device == "cpu", init=init,
                                                     recipe=recipe)
        run_dir = out or Path("runs") / run_name
        if resume:
            user = deep_merge(parse_overrides(set_), flags)
            if recipe:
                user["recipe"] = cfg.recipe
            cfg = resume_config(run_dir, deep_merge(user, {"data": {"root": cfg.data.root}}))
    n_threads = apply_threads(threads, cfg.model)
    log.debug("training on %d intra-op thread(s)", n_threads)
    progress = _Progress(cfg.train.log_every)
    t0 = time.perf_counter()
    try:
        result = Trainer(cfg, data_dir, run_dir, resume=resume, exist_ok=exist_ok, progress=progress,
                         device=device, init=init).fit()
    finally:
        progress.close()
    if rank0 and not quiet:
        console.print(
            f"[bold green]done[/] in {_hms(time.perf_counter() - t0)}: best val Dice {result.best_dice:.4f} "
            f"(epoch {result.best_epoch}/{result.epochs_done}{', stopped early' if result.stopped_early else ''}"
            f"{f', {result.skipped_steps} steps skipped' if result.skipped_steps else ''}) -> {run_dir}/best\n"
            f"next: reclmis eval --checkpoint {run_dir}/best --data {data_dir}",
            highlight=False,
        )


__all__ = ["train"]
