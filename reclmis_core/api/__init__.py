"""The Python API: ``model = reclmis_core.load(path_or_hub_id)``, then ``model.predict(...)``, ``model.evaluate``,
``model.export``, ``model.bench``; ``reclmis_core.train(...)`` trains a new model. See docs/python.md."""

from .model import Model, load
from .result import Result
from .train import prepare_table, train

__all__ = ["Model", "Result", "load", "prepare_table", "train"]
