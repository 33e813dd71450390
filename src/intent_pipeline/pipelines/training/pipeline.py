"""training: validate the parameters, then train, log and register every candidate kind."""

from kedro.pipeline import Pipeline, node, pipeline

from intent_pipeline.pipelines.training import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Validate ``params:training`` first (a typo fails before any training), then train the candidates."""
    return pipeline([
        node(nodes.validate_training_params, "params:training", "training_config",
             name="validate_training_params"),
        node(nodes.train_and_register_candidates,
             ["train_split", "val_split", "intent_label_set", "data_report", "training_config"],
             "trained_candidates", name="train_and_register_candidates"),
    ])
