"""Registered datasets: a name maps to a prepared DATA_DIR, a preset and a default training recipe.

``qata`` and ``mosmed`` are the paper's benchmarks (prepared with ``reclmis prepare`` into
``$RECLMIS_DATA/<name>``, default ``./data/<name>``); ``sample`` is the bundled ``reclmis_core/sample_data/``
(QaTa layout, package data, so it is in the wheel), prepared on first use into ``$RECLMIS_DATA/sample`` at the
run's ``model.image_size`` (re-prepared when a run asks for another size; never into the installed package).

Training recipes (``paper-qata``, ``reference-mosmed``, ...) live in :mod:`reclmis_core.recipes`; a dataset names
its default one (``paper``), which applies only with the dataset's own preset. ``reclmis train --recipe NAME``
picks another.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, DataError
from ..registry import Registry

log = logging.getLogger(__name__)

DATA_ENV = "RECLMIS_DATA"
SAMPLE_ENV = "RECLMIS_SAMPLE_DATA"
# The 40 bundled training images are too few to learn which lesion a note names (val Dice 0.16 with them
# alone); the sample's training split is topped up with phantoms from the same generator (another seed).
SAMPLE_EXTRA_PHANTOMS = 280
SAMPLE_PHANTOM_SEED = 1


@dataclass(frozen=True)
class RegisteredDataset:
    """A registered dataset: where it lives and how it is trained by default."""

    name: str  # (str) registry name, also the default folder name under $RECLMIS_DATA
    preset: str  # (str) preset used when --preset is not given
    recipe: str | None = None  # (str) short name of its default recipe (reclmis_core.recipes): <recipe>-<name>
    description: str = ""  # (str) one line for --help and logs
    bundled: bool = False  # (bool) ships with the package (sample_data/), prepared on first use


DATASETS: Registry[RegisteredDataset] = Registry(
    "dataset", error=ConfigError, hint="or pass --data DATA_DIR for a folder made by 'reclmis prepare'"
)


def register_dataset(entry: RegisteredDataset) -> RegisteredDataset:
    """Add ``entry`` under its name (``train --dataset NAME``); a name registered twice raises ValueError."""
    return DATASETS.register(entry.name)(entry)


register_dataset(RegisteredDataset(
    "qata", "paper", "paper", "QaTa-COV19 chest X-rays with notes (paper recipe: 200 epochs)"))
register_dataset(RegisteredDataset(
    "mosmed", "paper", "paper", "MosMedData+ CT slices with notes (paper recipe: 500 epochs)"))
register_dataset(RegisteredDataset(
    "sample", "tiny", "quick", "bundled sample data (QaTa layout), tiny preset, 60 epochs; trains in minutes on a CPU",
    bundled=True))


def dataset_names() -> tuple[str, ...]:
    return DATASETS.names()


def get_dataset(name: str) -> RegisteredDataset:
    """The registered dataset ``name``; ConfigError naming the registered ones (and the nearest) otherwise."""
    return DATASETS.get(name)


def data_root() -> Path:
    """Folder holding registered datasets: ``$RECLMIS_DATA`` or ``./data``."""
    return Path(os.environ.get(DATA_ENV) or "data")


def sample_source() -> Path:
    """The bundled sample data, package data of ``reclmis_core`` (``$RECLMIS_SAMPLE_DATA`` overrides)."""
    env = os.environ.get(SAMPLE_ENV)
    if env:
        return Path(env)
    here = Path(__file__).resolve().parents[1] / "sample_data"  # reclmis_core/sample_data
    if not here.is_dir():
        raise DataError(f"the bundled sample data is missing from this installation ({here}); reinstall reclmis "
                        f"or set {SAMPLE_ENV} to a sample_data folder")
    return here


def _prepared_size(folder: Path) -> int | None:
    """The ``size`` a DATA_DIR was prepared at (from its dataset.json), None if unknown."""
    import json

    try:
        return int(json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def resolve_dataset(name: str, root: str | Path | None = None, main_process_first: Any = None,
                    image_size: int | None = None) -> Path:
    """Path of a registered dataset's prepared DATA_DIR; prepares the bundled sample on first use.

    Args:
        name: registered name (see :data:`DATASETS`).
        root: folder of registered datasets; default :func:`data_root`.
        main_process_first: optional context manager factory (``PartialState().main_process_first``) so only
            one process prepares the sample when several are launched.
        image_size: the run's ``model.image_size``; the bundled sample is prepared at this size (default 96,
            the tiny preset's).
    """
    entry = get_dataset(name)
    folder = Path(root) if root is not None else data_root()
    folder = folder / name
    size = int(image_size or 96)

    def ready() -> bool:
        return (folder / "manifest.csv").is_file() and (not entry.bundled or _prepared_size(folder) == size)

    if ready():
        return folder
    if not entry.bundled:
        raise DataError(
            f"dataset '{name}' is not prepared: {folder / 'manifest.csv'} not found. Download it, then run "
            f"'reclmis prepare <source> --out {folder}' (or set {DATA_ENV} to the folder holding '{name}/')"
        )
    ctx = main_process_first() if main_process_first is not None else nullcontext()
    with ctx:
        if not ready():
            prepare_sample(folder, size=size)
    return folder


def prepare_sample(folder: Path, size: int, extra_phantoms: int = SAMPLE_EXTRA_PHANTOMS) -> None:
    """The bundled sample prepared into ``folder``, its training split topped up with generated phantoms.

    Written into a staging folder and renamed, so an interrupted first use leaves nothing half-made.
    """
    import pandas as pd

    from .data_dir import commit_staging_dir, make_staging_dir, write_dataset_json, write_manifest
    from .prepare import PrepareOptions, prepare_dataset
    from .synthetic import SyntheticConfig, write_synthetic

    src = sample_source()
    log.info("preparing the bundled sample data %s -> %s at %d px with %d extra training phantoms", src, folder,
             size, extra_phantoms)
    staging = make_staging_dir(folder)
    try:
        prepare_dataset(src, staging, PrepareOptions(layout="auto", size=size, overwrite=True, workers=1))
        if extra_phantoms > 0:
            info = write_synthetic(staging / "phantoms", SyntheticConfig(
                n_train=extra_phantoms, n_val=0, n_test=0, size=size, seed=SAMPLE_PHANTOM_SEED), workers=1)
            def rows(folder: Path) -> list[dict[str, str]]:  # as written: paths relative to their DATA_DIR
                return pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False).to_dict("records")

            extra = rows(staging / "phantoms")
            for r in extra:
                r.update({c: f"phantoms/{r[c]}" for c in ("image", "mask", "lesion_labels")}, id=f"phantom_{r['id']}")
            write_manifest(staging, rows(staging) + extra)
            doc = json.loads((staging / "dataset.json").read_text(encoding="utf-8"))
            doc["counts"]["train"] = doc["counts"].get("train", 0) + int(info["counts"]["train"])
            doc["n_images"] = sum(doc["counts"].values())
            doc["extra_phantoms"] = {"n_train": extra_phantoms, "seed": SAMPLE_PHANTOM_SEED, "folder": "phantoms"}
            write_dataset_json(staging, doc)
        commit_staging_dir(staging, folder)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
