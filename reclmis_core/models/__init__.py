"""Model components; ``build_model(cfg.model)`` is the entry point."""

from .reclmis import RecLMIS, RecLMISInference, RecLMISOutput, SegmentationNet, build_model

__all__ = ["RecLMIS", "RecLMISInference", "RecLMISOutput", "SegmentationNet", "build_model"]
