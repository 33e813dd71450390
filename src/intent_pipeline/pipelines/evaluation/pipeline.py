"""Evaluation pipeline: score every candidate on the test split, gate it, give `staging` to the champion."""

from kedro.pipeline import Node, Pipeline

from intent_pipeline.pipelines.evaluation.nodes import (
    apply_gates,
    enforce_strict_mode,
    evaluate_candidates,
    evaluate_production_model,
    select_staging_champion,
    validate_evaluation_parameters,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Check parameters, score candidates and production, gate, stage the champion, summarise."""
    return Pipeline(
        [
            # Depends on parameters only, so it runs in the first group of `kedro run`: a typo fails at once.
            Node(validate_evaluation_parameters, "params:evaluation", "evaluation_parameters",
                 name="validate_evaluation_parameters"),
            Node(evaluate_candidates,
                 ["trained_candidates", "test_split", "val_split", "intent_label_set",
                  "evaluation_parameters"],
                 "candidate_evaluations", name="evaluate_candidates"),
            Node(evaluate_production_model,
                 ["trained_candidates", "test_split", "intent_label_set", "evaluation_parameters"],
                 "production_evaluation", name="evaluate_production_model"),
            Node(apply_gates, ["candidate_evaluations", "production_evaluation", "evaluation_parameters"],
                 "gated_candidate_evaluations", name="apply_gates"),
            Node(select_staging_champion,
                 ["gated_candidate_evaluations", "production_evaluation", "evaluation_parameters"],
                 "evaluation_summary", name="select_staging_champion"),
            # A node of its own so the summary is saved (and logged) before a strict run fails.
            Node(enforce_strict_mode, ["evaluation_summary", "evaluation_parameters"], None,
                 name="enforce_strict_mode"),
        ]
    )
