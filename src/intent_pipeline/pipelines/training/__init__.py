"""The training pipeline."""

from intent_pipeline.pipelines.training.pipeline import create_pipeline

__all__ = ["create_pipeline"]
