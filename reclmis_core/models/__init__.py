"""Model components; ``build_model(cfg.model)`` is the entry point."""

# The built-in image encoders register on import, in this order (one import per line, so that a sorter keeps
# it); the registry (image_encoders) does not import its implementations.
from . import unet  # noqa: F401, I001
from . import convnext  # noqa: F401, I001
from .reclmis import RecLMIS, RecLMISInference, RecLMISOutput, SegmentationNet, build_model

__all__ = ["RecLMIS", "RecLMISInference", "RecLMISOutput", "SegmentationNet", "build_model"]
