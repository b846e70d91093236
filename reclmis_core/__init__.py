"""reclmis_core: language-guided medical image segmentation (RecLMIS) as a library.

The Python API, in the manner of Ultralytics::

    import reclmis_core
    model = reclmis_core.load("runs/sample-tiny/best")      # a checkpoint, an ONNX export or a hub id
    result = model.predict("scan.png", "bilateral lower lung infection")[0]
    result.mask, result.prob, result.geometry, result.areas()

``reclmis_core.train(...)`` trains a model; ``model.evaluate/export/bench`` mirror the commands (docs/python.md).
The CLI lives in ``reclmis_cli``; nothing here imports typer or prints. ``import reclmis_core`` stays light: the
API's modules (torch, ...) load on first use.
"""

from __future__ import annotations

from typing import Any

from .version import __version__

__all__ = ["Model", "Result", "__version__", "load", "train"]


def __getattr__(name: str) -> Any:
    if name in ("Model", "Result", "load", "train", "prepare_table"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'reclmis_core' has no attribute '{name}'")
