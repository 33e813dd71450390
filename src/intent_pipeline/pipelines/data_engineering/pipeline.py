"""data_engineering: raw labeled exports -> validated, deduplicated, stratified train/val/test + data report."""

from kedro.pipeline import Pipeline, node, pipeline

from intent_pipeline.pipelines.data_engineering import nodes


def create_pipeline(**kwargs) -> Pipeline:
    """Validate, normalise, deduplicate, check counts, split and report."""
    return pipeline([
        node(nodes.validate_labeled_export, ["raw_intent_labels", "params:data_engineering"],
             ["validated_intent_rows", "rejected_intent_rows"], name="validate_labeled_export"),
        node(nodes.normalise_texts, "validated_intent_rows", "normalised_intent_rows", name="normalise_texts"),
        node(nodes.resolve_duplicates_and_conflicts, ["normalised_intent_rows", "params:data_engineering"],
             ["intent_examples", "dedup_summary"], name="resolve_duplicates_and_conflicts"),
        node(nodes.build_label_set, ["intent_examples", "params:data_engineering"], "intent_label_set",
             name="build_label_set"),
        node(nodes.check_examples_per_label, ["intent_examples", "intent_label_set", "params:data_engineering"],
             "label_count_check", name="check_examples_per_label"),
        node(nodes.split_examples, ["intent_examples", "params:data_engineering"],
             ["train_split", "val_split", "test_split"], name="split_examples"),
        node(nodes.build_data_report,
             ["validated_intent_rows", "rejected_intent_rows", "dedup_summary", "label_count_check",
              "intent_label_set", "train_split", "val_split", "test_split"],
             ["data_report", "data_report_metrics"], name="build_data_report"),
    ])
