""":func:`train`: ``reclmis train`` from Python, on a prepared DATA_DIR, a registered dataset or a table of image,
mask and note (a pandas DataFrame), with the same config sections and the same run folder."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError

TABLE_COLUMNS = ("image", "mask", "note")


def prepare_table(table: Any, out: str | Path, *, size: int = 0, overwrite: bool = False) -> Path:
    """Write a DATA_DIR at ``out`` from a table with columns ``image``, ``mask``, ``note`` (paths of 2-D images
    and their masks) and an optional ``split`` (train | val | test; default: a hash of the image name, as
    ``reclmis prepare`` splits). The files are copied into a temporary ``folder`` layout and checked by
    ``reclmis prepare``'s code (one report of every problem: a missing file, an empty note, ...)."""
    from ..data.prepare import PrepareOptions, prepare_dataset

    missing = [c for c in TABLE_COLUMNS if c not in getattr(table, "columns", ())]
    if missing:
        raise DataError(f"data: the table needs columns {', '.join(TABLE_COLUMNS)} (and optionally split); "
                        f"missing: {', '.join(missing)}")
    rows = table.to_dict("records")
    if not rows:
        raise DataError("data: the table has no rows")
    with tempfile.TemporaryDirectory(prefix="reclmis-table-") as tmp:
        src = Path(tmp)
        (src / "images").mkdir()
        (src / "masks").mkdir()
        lines = []
        for i, row in enumerate(rows):
            image, mask = Path(str(row["image"])), Path(str(row["mask"]))
            for what, path in (("image", image), ("mask", mask)):
                if not path.is_file():
                    raise DataError(f"data: row {i}: {what} {path} is not a file")
            name = f"r{i:05d}_{image.name}"  # unique even when two folders hold the same file name
            shutil.copyfile(image, src / "images" / name)
            shutil.copyfile(mask, src / "masks" / (Path(name).stem + mask.suffix))
            split = str(row.get("split") or "").strip()
            lines.append({"image": name, "mask": Path(name).stem + mask.suffix, "note": str(row["note"] or ""),
                          "split": split})
        import pandas as pd

        frame = pd.DataFrame(lines)
        if not frame["split"].any():
            frame = frame.drop(columns="split")
        frame.to_csv(src / "notes.csv", index=False)
        prepare_dataset(src, out, PrepareOptions(layout="folder", size=size, overwrite=overwrite, workers=1))
    return Path(out)


def run_training(data: Any, *, preset: str | None = None, recipe: str | None = None, config: str | Path | None = None,
          out: str | Path | None = None, epochs: int | None = None, batch_size: int | None = None,
          lr: float | None = None, text_encoder: str | None = None, no_text: bool = False, ablate: str | None = None,
          seed: int | None = None, patience: int | None = None, overrides: dict[str, Any] | None = None,
          init: str | Path | None = None, exist_ok: bool = False, device: str = "auto", threads: int = 0,
          size: int = 0, progress: Any = None) -> Path:
    """Train RecLMIS as ``reclmis train`` does; return the best checkpoint's folder (:func:`reclmis_core.train`
    loads it).

    Args:
        data: a DATA_DIR made by ``reclmis prepare``, a registered dataset name (``sample``, ``qata``,
            ``mosmed``), or a pandas DataFrame of ``image``, ``mask``, ``note`` [, ``split``] (2-D images),
            prepared into ``<out>/data`` first.
        preset: ``paper`` | ``tiny`` | ``guided`` | ``guided-tiny`` (default: the dataset's, else paper).
        recipe: a training recipe (``reference``, ...), as ``reclmis train --recipe``.
        config: YAML file with RunConfig sections (``model``, ``data``, ``train``, ...), as ``--config``.
        out: the run folder (default ``runs/<data>-<preset>``; ``runs/dataframe`` for a DataFrame).
        epochs, batch_size, lr, text_encoder, no_text, ablate, seed, patience: as the command's options.
        overrides: nested config overrides, e.g. ``{"model": {"image_size": 64}}`` (``--set``).
        init: start from this checkpoint's weights (``--init``).
        exist_ok: overwrite an existing run folder (and a DataFrame's prepared ``data``).
        device: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N``; threads: intra-op CPU threads (0: the default).
        size: side in pixels a DataFrame's images are prepared at (0: their native size, resized once by the
            Dataset to the model's side, as ``reclmis prepare`` does by default).
        progress: optional callback receiving the trainer's ``ProgressEvent`` objects.
    """
    from ..config import deep_merge
    from ..device import apply_threads, resolve_device
    from ..engine.train_config import flag_overrides
    from ..engine.train_config import resolve_train_config as resolve_run_config
    from ..engine.trainer import Trainer

    resolve_device(device)
    if threads < 0:
        raise ConfigError(f"threads must be >= 0, got {threads}")
    flags = flag_overrides(epochs=epochs, batch_size=batch_size, lr=lr, text_encoder=text_encoder, no_text=no_text,
                           ablate=ablate, seed=seed, deterministic=None, mixed_precision=None, patience=patience,
                           grad_accum=None, tensorboard=None)
    flags = deep_merge(flags, overrides or {})
    dataset = data_dir = None
    if hasattr(data, "to_dict") and hasattr(data, "columns"):
        out = Path(out) if out is not None else Path("runs") / "dataframe"
        data_dir = prepare_table(data, out / "data", size=size, overwrite=exist_ok)
    elif isinstance(data, (str, Path)) and Path(data).is_dir():
        data_dir = Path(data)
    elif isinstance(data, str):
        dataset = data
    else:
        raise ConfigError(f"data must be a DATA_DIR, a dataset name or a DataFrame, got {type(data).__name__}")
    cfg, data_dir, run_name = resolve_run_config(dataset=dataset, data=data_dir, preset=preset,
                                                 config=Path(config) if config else None, sets=[], flags=flags,
                                                 cpu=device == "cpu", init=Path(init) if init else None,
                                                 recipe=recipe)
    run_dir = Path(out) if out is not None else Path("runs") / run_name
    apply_threads(threads, cfg.model)
    result = Trainer(cfg, data_dir, run_dir, exist_ok=exist_ok, progress=progress, device=device,
                     init=init).fit()
    return result.run_dir / "best"
