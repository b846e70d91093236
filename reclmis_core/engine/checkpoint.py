"""Checkpoints moved to :mod:`reclmis_core.checkpoint` (below the runtimes that load them); these names stay
importable from here."""

from ..checkpoint import (  # noqa: F401
    CONFIG,
    FORMAT_VERSION,
    MODEL_CLASS,
    WEIGHTS,
    checkpoint_run_config,
    find_latest_checkpoint,
    load_checkpoint,
    load_state_strict,
    read_checkpoint_config,
    recover_folder,
    replace_folder,
    save_checkpoint,
    write_checkpoint_document,
    write_checkpoint_files,
)
