"""The RecLMIS training loop on Accelerate: one code path for one CPU, one GPU and many processes.

``Trainer(cfg, data_dir, run_dir).fit()`` trains, validates every epoch on the ``val`` split (per-image Dice at
``infer.threshold``), and writes into RUN_DIR::

    config.yaml     the resolved RunConfig (text max_length resolved), written before the first step
    metrics.csv     one row per epoch: epoch, losses (loss, dice_loss, ...), val_dice, val_miou, lr (the epoch's
                    last optimizer step's), seconds
    results.json    summary (best epoch and scores, last losses, history); results.png: loss and val curves
    last/           checkpoint after every epoch  (model.safetensors + config.json + state/)
    best/           checkpoint of the best val Dice so far

``state/`` is ``accelerator.save_state`` (optimizer, scheduler, sampler and every process's RNG states; loaded
with ``weights_only=True``, so nothing can run code) plus ``trainer_state.json`` (epoch, best Dice, early-stopping
counter). Resuming from ``last/`` continues at the next epoch and, with ``train.deterministic`` on CPU, ends with
the same weights as an uninterrupted run.

Launch on several processes with ``torchrun --standalone --nproc_per_node N -m reclmis_cli.main train ...`` or
``accelerate launch --multi_gpu --num_processes N -m reclmis_cli.main train ...`` (CPU: gloo; GPU: NCCL).

Subclass and override a hook (``on_train_start``, ``train_step``, ``validation_step``, ``on_epoch_end``,
``save_checkpoint``, ``load_checkpoint``) to change one stage. Progress goes to an optional callback.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import set_seed
from torch import Tensor

from ..config import RunConfig, config_to_dict, flatten, save_yaml
from ..data.note_augment import lexicon_corpus
from ..device import resolve_device
from ..errors import CheckpointError, ConfigError, DataError, NonFiniteLossError
from ..metrics.dice import ScoreAccumulator
from ..models.reclmis import RecLMIS, build_model
from ..models.text.base import truncation_advice
from ..checkpoint import (
    load_checkpoint,
    load_state_strict,
    read_checkpoint_config,
    recover_folder,
)
from .accelerator import configure_determinism, make_accelerator
from .objective import RecLMISObjective
from .report import write_run_report
from .run_files import (
    METRIC_COLUMNS,
    METRIC_PARTS,
    ProgressEvent,
    ProgressFn,
    TrainerState,
    TrainResult,
    load_run_state,
    save_run_checkpoint,
    write_metrics,
)
from .schedule import build_lr_schedule

log = logging.getLogger(__name__)

def resolve_text_length(model: RecLMIS, cfg: RunConfig, notes: list[str]) -> int:
    """Tokens per note: ``cfg.model.text.max_length`` or, when 0, the longest training note plus half of it
    (room for longer notes at inference: reports worded otherwise than the training notes), capped by the tower.

    Sets ``model.max_length`` and returns the value; warns when notes will be cut.
    """
    tower = model.text_encoder
    if tower is None:
        return 0
    counts = [tower.tokenizer.count(n) for n in notes] or [2]
    longest = max(counts)
    want = cfg.model.text.max_length
    if want <= 0:
        length = min(longest + longest // 2, tower.max_positions)
        if longest > tower.max_positions:
            log.warning("%d training notes are longer than the %s encoder's %d positions and will be cut",
                        sum(c > tower.max_positions for c in counts), cfg.model.text.encoder, tower.max_positions)
        log.info("text max_length resolved to %d tokens (longest training note: %d)", length, longest)
    else:
        length = want
        n_cut = sum(c > length for c in counts)
        if n_cut:
            log.warning("%d of %d training notes exceed model.text.max_length=%d tokens and will be cut "
                        "(longest: %d); %s", n_cut, len(counts), length, longest,
                        truncation_advice(cfg.model.text.pad_to_max, length))
    model.max_length = length
    return length


class Trainer:
    """Train RecLMIS on a prepared DATA_DIR.

    Args:
        cfg: the resolved run config.
        data_dir: folder with ``manifest.csv`` (``train`` and ``val`` splits).
        run_dir: output folder.
        resume: continue from ``run_dir/last``.
        exist_ok: overwrite the run files (config.yaml, metrics.csv, best/, last/) of an existing run folder.
        progress: optional callback receiving :class:`ProgressEvent` on the main process.
        cpu: force the CPU even when a GPU is visible (also ``ACCELERATE_USE_CPU=1``); same as ``device="cpu"``.
        device: ``auto | cpu | cuda | cuda:N`` (:func:`reclmis_core.device.resolve_device`); under a multi-process
            launcher each process takes its own GPU.

    Example:
        >>> cfg = build_config("tiny", overrides={"train": {"epochs": 1}})
        >>> Trainer(cfg, "data/sample", "runs/demo").fit().best_dice  # doctest: +SKIP
    """

    def __init__(
        self,
        cfg: RunConfig,
        data_dir: str | Path,
        run_dir: str | Path,
        *,
        resume: bool = False,
        exist_ok: bool = False,
        progress: ProgressFn | None = None,
        cpu: bool = False,
        device: str = "auto",
        init: str | Path | None = None,
    ) -> None:
        run_dir = Path(run_dir)
        if resume and init is not None:
            raise ConfigError("--init starts a new run from a checkpoint's weights and --resume continues a run; "
                              "pass one of them")
        ours = [run_dir / n for n in ("config.yaml", "metrics.csv", "last", "best")]
        if resume:  # a kill -9 between the two renames of a checkpoint write leaves the previous copy aside
            for name in ("last", "best"):
                recover_folder(run_dir / name)
        if resume and not (run_dir / "last").is_dir():
            raise CheckpointError(f"nothing to resume: {run_dir / 'last'} does not exist")
        if not resume and not exist_ok and any(p.exists() for p in ours):
            raise ConfigError(f"run folder {run_dir} already holds a run; pass --resume to continue it, --exist-ok "
                              "to overwrite it, or --out for a new folder")
        self.exist_ok = exist_ok
        self.cfg = cfg
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.progress = progress
        self.cpu = cpu
        self.device = resolve_device("cpu" if cpu else device)  # a device that is not there fails here, at once
        self.init = None if init is None else Path(init)
        self.state = TrainerState()
        self.history: list[dict[str, float]] = []
        self.accelerator: Any = None
        self._step = 0
        self._step_lr = 0.0  # the lr of the latest optimizer step (metrics.csv ``lr``)

    # -- setup --------------------------------------------------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _load_init_weights(self) -> None:
        """``--init``: weights only (strict: the architecture must match); optimizer, schedule and run are new."""
        source, _, _ = load_checkpoint(self.init)
        skip = set(self.raw_model.persistent_keys_excluded())
        load_state_strict(self.raw_model, {k: v for k, v in source.state_dict().items() if k not in skip}, self.init)
        log.info("initialised the weights from %s", self.init)

    def _emit(self, event: ProgressEvent) -> None:
        if self.progress is not None and self.is_main:
            self.progress(event)

    def setup(self) -> None:
        """Accelerator, data, model, optimizer, scheduler; resolves the text length; writes config.yaml."""
        from accelerate.utils import broadcast_object_list

        from ..data.dataset import ManifestDataset, collate_fn, read_manifest

        cfg = self.cfg
        configure_determinism(cfg.train.deterministic)
        acc = self.accelerator = make_accelerator(self.cfg, self.device, self.run_dir)
        set_seed(cfg.train.seed)  # same initial weights on every process

        manifest = read_manifest(self.data_dir)
        splits = manifest["split"].value_counts().to_dict()
        for split in ("train", "val"):
            if not splits.get(split):
                raise DataError(f"{self.data_dir / 'manifest.csv'} has no '{split}' images; training needs train "
                                "and val splits (re-run 'reclmis prepare')")
        train_notes = manifest.loc[manifest["split"] == "train", "note"].fillna("").astype(str).tolist()
        if cfg.data.note_augment > 0:  # the words the augmentation writes join the tokenizer's corpus
            train_notes += lexicon_corpus()

        # One process learns the tokenizer (scratch BPE); the others rebuild it from its state.
        text_state = None
        if self.resume:  # the tokenizer (scratch BPE vocab) of the run being resumed
            text_state = read_checkpoint_config(self.run_dir / "last").get("text_state") or {}
        elif self.init is not None:  # the text tower (and tokenizer) of the checkpoint the weights come from
            text_state = read_checkpoint_config(self.init).get("text_state") or {}
        elif cfg.model.text.encoder == "scratch" and acc.num_processes > 1:
            holder = [build_model(cfg.model, corpus=train_notes).text_state() if self.is_main else None]
            text_state = broadcast_object_list(holder)[0]
            set_seed(cfg.train.seed)
        self.raw_model = build_model(cfg.model, corpus=train_notes, text_state=text_state)
        if self.init is not None:
            self._load_init_weights()
        length = resolve_text_length(self.raw_model, cfg, train_notes)
        if self.raw_model.text_encoder is not None:
            self.cfg = cfg = replace(cfg, model=replace(cfg.model, text=replace(cfg.model.text, max_length=length)))

        size, ch = cfg.model.image_size, cfg.model.in_channels
        with acc.main_process_first():
            train_ds = ManifestDataset(self.data_dir, "train", size, ch, cfg.data, train=True, seed=cfg.train.seed)
            val_ds = ManifestDataset(self.data_dir, "val", data_cfg=cfg.data, preprocessor=train_ds.preprocessor)
        t = cfg.train
        loader_gen = torch.Generator().manual_seed(t.seed)
        train_dl = torch.utils.data.DataLoader(
            train_ds, batch_size=t.batch_size, shuffle=True, num_workers=cfg.data.num_workers,
            collate_fn=collate_fn, generator=loader_gen,
        )
        val_dl = torch.utils.data.DataLoader(
            val_ds, batch_size=max(t.batch_size, cfg.infer.batch_size), shuffle=False,
            num_workers=cfg.data.num_workers, collate_fn=collate_fn,
        )
        params = [p for p in self.raw_model.parameters() if p.requires_grad]
        optimizer = torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
        self.model, self.optimizer, self.train_dl, self.val_dl = acc.prepare(self.raw_model, optimizer, train_dl, val_dl)
        self.steps_per_epoch = len(self.train_dl)  # per process
        # AcceleratedScheduler steps once per process per optimizer step, so count steps over all processes.
        per_epoch = math.ceil(self.steps_per_epoch / t.grad_accum) * acc.num_processes
        self.scheduler = acc.prepare(build_lr_schedule(optimizer, t, per_epoch))
        self.objective = RecLMISObjective(cfg.loss, cfg.model)
        self.n_train, self.n_val = len(train_ds), len(val_ds)
        self.train_ds = train_ds

        if self.resume:
            self.load_checkpoint(self.run_dir / "last")
        elif self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            for old in ("best", "last"):
                if (self.run_dir / old).is_dir():
                    shutil.rmtree(self.run_dir / old)
            (self.run_dir / "metrics.csv").unlink(missing_ok=True)
            save_yaml(cfg, self.run_dir / "config.yaml")
        if t.tensorboard:
            acc.init_trackers("tensorboard", config={
                k: v if isinstance(v, (int, float, str, bool)) else str(v)
                for k, v in flatten(config_to_dict(cfg)).items()})
        acc.wait_for_everyone()
        # Different augmentation/dropout streams per process; the resume state restores them per process.
        if not self.resume:
            set_seed(t.seed + acc.process_index)

    # -- hooks ----------------------------------------------------------------------------------------

    def on_train_start(self) -> None:
        acc = self.accelerator
        n_params = sum(p.numel() for p in self.raw_model.parameters())
        n_train = sum(p.numel() for p in self.raw_model.parameters() if p.requires_grad)
        if self.is_main:
            log.info(
                "training %s on %s: %d train / %d val images, %d epochs x %d steps, batch %d x %d process(es) x "
                "%d accumulation, %s, mixed precision %s, %.2fM params (%.2fM trainable) -> %s",
                self.cfg.preset, self.data_dir, self.n_train, self.n_val, self.cfg.train.epochs,
                self.steps_per_epoch, self.cfg.train.batch_size, acc.num_processes, self.cfg.train.grad_accum,
                acc.device, self.cfg.train.mixed_precision, n_params / 1e6, n_train / 1e6, self.run_dir,
            )
        self._emit(ProgressEvent("start", self.state.epoch + 1, self.cfg.train.epochs, steps=self.steps_per_epoch))

    def _inputs(self, batch: dict[str, Any], notes: list[str] | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
        image = batch["image"]
        if self.raw_model.text_encoder is None:
            return image, None, None
        tokens = self.raw_model.tokenize(notes if notes is not None else batch["note"])
        dev = self.accelerator.device
        return image, tokens.input_ids.to(dev), tokens.attention_mask.to(dev)

    def _notes_and_target(self, batch: dict[str, Any]) -> tuple[list[str], Tensor]:
        """The batch's notes and masks, or, for a ``train.note_dropout`` share of the batches, empty notes and
        every lesion as the target (the image-only answer), so the model also works without a note.

        The draw depends only on (seed, global step), so a resumed run repeats it exactly.
        """
        t = self.cfg.train
        notes = list(batch["note"])
        if t.note_dropout <= 0 or self.raw_model.text_encoder is None:
            return notes, batch["mask"]
        gen = torch.Generator().manual_seed(t.seed * 1_000_003 + self.state.global_step)
        if float(torch.rand((), generator=gen)) >= t.note_dropout:
            return notes, batch["mask"]
        target = batch["mask"]
        labels = batch.get("lesion_labels")  # every lesion, named or not (synthetic data); else the mask
        if labels is not None:
            target = torch.maximum(target, (labels > 0).to(target.dtype).unsqueeze(1))
        return [""] * len(notes), target

    def train_step(self, batch: dict[str, Any]) -> dict[str, float] | None:
        """One forward/backward (and optimizer step at the end of an accumulation cycle).

        Returns the loss parts as floats, or None when the step was skipped for a non-finite loss.
        """
        acc = self.accelerator
        with acc.accumulate(self.model):
            notes, target = self._notes_and_target(batch)
            image, ids, mask = self._inputs(batch, notes)
            out = self.model(image, ids, mask)
            parts = self.objective(out, target, self.raw_model.logit_scale, note_groups(notes, target.device))
            loss = parts["loss"]
            finite = torch.isfinite(loss.detach()).float()
            if acc.num_processes > 1:  # every process must take the same branch (DDP collectives)
                finite = acc.reduce(finite.reshape(1), reduction="min")[0]
            if not bool(finite):
                return self._nonfinite(parts)
            acc.backward(loss)
            self._step_lr = float(self.optimizer.param_groups[0]["lr"])
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        return {k: float(v.detach()) for k, v in parts.items()}

    def _nonfinite(self, parts: dict[str, Tensor]) -> None:
        bad = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
        where = f"epoch {self.state.epoch + 1}, step {self._step}"
        if self.cfg.train.on_nonfinite == "stop":
            raise NonFiniteLossError(
                f"non-finite loss at {where} ({bad}); the last good checkpoint is in {self.run_dir / 'last'}. "
                "Lower train.lr, use train.mixed_precision=no, or pass --set train.on_nonfinite=skip to skip such steps"
            )
        self.state.skipped_steps += 1
        self.optimizer.zero_grad(set_to_none=True)
        if self.is_main:
            log.warning("skipped step at %s: non-finite loss (%s); %d skipped so far", where, bad,
                        self.state.skipped_steps)
        return None

    @torch.no_grad()
    def validation_step(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """Binary predictions and targets (uint8, B x H x W) of one validation batch."""
        image, ids, mask = self._inputs(batch)
        with self.accelerator.autocast():
            logits = self.infer_model(image, ids, mask)
        pred = (torch.sigmoid(logits.float()) > self.cfg.infer.threshold).squeeze(1).to(torch.uint8)
        return pred, (batch["mask"] > 0.5).squeeze(1).to(torch.uint8)

    def validate(self) -> tuple[float, float]:
        """Per-image mean Dice and IoU on the val split, identical on every process."""
        self.model.eval()
        self.infer_model = self.raw_model.for_inference()
        scores = ScoreAccumulator()
        steps = len(self.val_dl)
        for step, batch in enumerate(self.val_dl, start=1):
            pred, target = self.validation_step(batch)
            self._emit(ProgressEvent("val_step", self.state.epoch + 1, self.cfg.train.epochs, step, steps))
            pred, target = self.accelerator.gather_for_metrics((pred, target))
            scores.update(pred.cpu().numpy(), target.cpu().numpy())
        self.model.train()
        res = scores.result()
        return res.dice, res.miou

    def on_epoch_end(self, epoch: int, record: dict[str, float]) -> bool:
        """Checkpoints, metrics.csv, early stopping. Returns True to stop training."""
        st = self.state
        st.epoch = epoch
        improved = record["val_dice"] > st.best_dice
        if improved:
            st.best_dice, st.best_epoch, st.bad_epochs = record["val_dice"], epoch, 0
        else:
            st.bad_epochs += 1
        meta = {"epoch": epoch, "val_dice": record["val_dice"], "val_miou": record["val_miou"],
                "best_epoch": st.best_epoch, "best_dice": st.best_dice,
                "colour": self.train_ds.colour,  # kept for checkpoints read by older versions
                "preprocessing": self.train_ds.preprocessor.to_dict()}  # what predict/eval/export rebuild
        self.save_checkpoint(self.run_dir / "last", meta)
        if improved:
            self.save_checkpoint(self.run_dir / "best", meta)
        self.history.append(record)
        if self.is_main:
            write_metrics(self.run_dir / "metrics.csv", self.history)
            write_run_report(self.run_dir, self.history, best_epoch=st.best_epoch, best_dice=st.best_dice,
                             stopped_early=False, skipped_steps=st.skipped_steps)
        if self.cfg.train.tensorboard:
            self.accelerator.log({f"train/{k}": v for k, v in record.items() if k != "epoch"}, step=epoch)
        patience = self.cfg.train.patience
        if patience and st.bad_epochs >= patience:
            if self.is_main:
                log.info("early stopping after epoch %d: val Dice has not improved for %d epochs (best %.4f at "
                         "epoch %d)", epoch, patience, st.best_dice, st.best_epoch)
            return True
        return False

    def save_checkpoint(self, dest: Path, meta: dict[str, Any]) -> None:
        """Atomically write weights + config.json + state/ (all processes must call this)."""
        save_run_checkpoint(self.accelerator, self.raw_model, self.cfg, self.state, dest, meta)

    def load_checkpoint(self, folder: Path) -> None:
        """Restore weights, optimizer, scheduler, RNG states and counters from a checkpoint with state/."""
        self.state, self.history = load_run_state(self.accelerator, folder, self.raw_model,
                                                  self.run_dir / "metrics.csv")
        if self.is_main:
            log.info("resumed %s after epoch %d (best val Dice %.4f at epoch %d)", folder, self.state.epoch,
                     self.state.best_dice, self.state.best_epoch)

    # -- loop -----------------------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Train until ``train.epochs`` or early stopping; returns the summary."""
        self.setup()
        acc = self.accelerator
        cfg = self.cfg
        self.on_train_start()
        stopped = False
        t_run = time.perf_counter()
        start_epoch = self.state.epoch
        if self.state.epoch >= cfg.train.epochs and self.is_main:
            log.info("nothing to do: %s already finished %d of %d epochs", self.run_dir, self.state.epoch,
                     cfg.train.epochs)
        try:
            for epoch in range(self.state.epoch + 1, cfg.train.epochs + 1):
                t0 = time.perf_counter()
                parts = self.train_epoch(epoch, t_run, start_epoch)
                val_dice, val_miou = self.validate()
                record = {"epoch": epoch, **{METRIC_COLUMNS[k]: parts[k] for k in METRIC_PARTS if k in parts},
                          "val_dice": val_dice, "val_miou": val_miou,
                          "lr": self._step_lr, "seconds": time.perf_counter() - t0}
                stopped = self.on_epoch_end(epoch, record)
                self._emit(ProgressEvent("epoch", epoch, cfg.train.epochs, parts=parts, record=record,
                                         best=self.state.best_epoch == epoch))
                if stopped:
                    break
        finally:
            if cfg.train.tensorboard:
                acc.end_training()
        if stopped and self.is_main:
            write_run_report(self.run_dir, self.history, best_epoch=self.state.best_epoch,
                             best_dice=self.state.best_dice, stopped_early=True,
                             skipped_steps=self.state.skipped_steps)
        self._emit(ProgressEvent("end", self.state.epoch, cfg.train.epochs))
        return TrainResult(self.run_dir, self.state.best_dice, self.state.best_epoch, self.state.epoch, stopped,
                           self.state.skipped_steps, list(self.history))

    def train_epoch(self, epoch: int, t_run: float, start_epoch: int) -> dict[str, float]:
        acc = self.accelerator
        self.model.train()
        self.train_dl.set_epoch(epoch)  # sampler order: seed + epoch
        self.train_ds.set_epoch(epoch)  # augmentation stream: (seed, epoch, index)
        sums: dict[str, float] = {}
        n_ok = 0
        self._step_lr = float(self.optimizer.param_groups[0]["lr"])  # metrics.csv: the epoch's last step's lr
        t0 = time.perf_counter()
        images = 0
        epochs_left = self.cfg.train.epochs - epoch
        for step, batch in enumerate(self.train_dl, start=1):
            self._step = step
            parts = self.train_step(batch)
            images += batch["image"].shape[0] * acc.num_processes
            self.state.global_step += 1
            if parts is not None:
                n_ok += 1
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
            if self.progress is not None and self.is_main:
                dt = time.perf_counter() - t0
                done_epochs = epoch - 1 - start_epoch + step / self.steps_per_epoch
                per_epoch = (time.perf_counter() - t_run) / max(done_epochs, 1e-9)
                eta = per_epoch * (epochs_left + 1 - step / self.steps_per_epoch)
                self._emit(ProgressEvent("step", epoch, self.cfg.train.epochs, step, self.steps_per_epoch,
                                         {METRIC_COLUMNS.get(k, k): v / max(n_ok, 1) for k, v in sums.items()},
                                         images / max(dt, 1e-9), eta))
        means = {k: v / max(n_ok, 1) for k, v in sums.items()}
        self._sync_buffers()
        if acc.num_processes > 1 and means:  # average the epoch's parts over processes
            keys = sorted(means)
            vec = acc.reduce(torch.tensor([means[k] for k in keys], device=acc.device), reduction="mean")
            means = dict(zip(keys, vec.tolist()))
        return means

    def _sync_buffers(self) -> None:
        """Average BatchNorm running statistics over processes, so every rank validates and saves one model."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return
        for buf in self.raw_model.buffers():
            if buf.is_floating_point():
                buf.data.copy_(acc.reduce(buf.data.clone(), reduction="mean"))

def note_groups(notes: list[str], device: torch.device) -> Tensor:
    """(B,) ids, equal where two notes are the same text."""
    index: dict[str, int] = {}
    return torch.tensor([index.setdefault(n, len(index)) for n in notes], device=device)


