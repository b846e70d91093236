"""Inference on users' own files: batched, note-cached prediction that keeps each input's geometry."""

from .explain import Explanation, render_explanation
from .inputs import Failure, InputSpec, collect_inputs
from .notes_table import NoteTable
from .predictor import Prediction, Predictor
from .run import PredictReport, run_predict
from .writers import PredictOptions, check_formats, write_prediction
from ..data.preprocess import Geometry, plan_geometry, restore_map, to_model_pixels
from ..data.preprocessor import PreprocessPlan, Preprocessor
from ..checkpoint import find_latest_checkpoint

__all__ = [
    "Explanation",
    "Failure",
    "Geometry",
    "InputSpec",
    "NoteTable",
    "PredictOptions",
    "PredictReport",
    "Prediction",
    "PreprocessPlan",
    "Predictor",
    "Preprocessor",
    "check_formats",
    "collect_inputs",
    "find_latest_checkpoint",
    "plan_geometry",
    "render_explanation",
    "restore_map",
    "run_predict",
    "to_model_pixels",
    "write_prediction",
]
