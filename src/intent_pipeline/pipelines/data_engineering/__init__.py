"""The data_engineering pipeline."""

from intent_pipeline.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
