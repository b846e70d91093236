"""The Python API: ``model = reclmis_core.load(path_or_hub_id)``, then ``model.predict(...)``, ``model.evaluate``,
``model.export``, ``model.bench``; ``reclmis_core.train(...)`` trains a new model. See docs/python.md."""

from .model import Model, load, train
from .result import Result
from .train import prepare_table, run_training

__all__ = ["Model", "Result", "load", "prepare_table", "run_training", "train"]
