"""Project pipelines: the default job runs data_engineering -> training -> evaluation."""

from kedro.pipeline import Pipeline

from intent_pipeline.pipelines import data_engineering, evaluation, training


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines; `__default__` is the whole lifecycle."""
    pipelines = {
        "data_engineering": data_engineering.create_pipeline(),
        "training": training.create_pipeline(),
        "evaluation": evaluation.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
