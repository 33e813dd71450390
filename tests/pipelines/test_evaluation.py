"""Evaluation pipeline: metrics, calibration, threshold, gates and champion on crafted predictions; the
wiring on two tiny real candidates in an isolated MLflow registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from intent_pipeline.pipelines.evaluation import create_pipeline
from intent_pipeline.pipelines.evaluation.nodes import (
    ChampionParameters,
    GateParameters,
    LowConfidenceParameters,
    calibration_bins,
    choose_champion,
    classification_metrics,
    compact_gate_report,
    evaluate_gates,
    expected_calibration_error,
    format_int8_line,
    format_summary_table,
    judge_int8_copy,
    low_confidence_threshold,
    parse_evaluation_parameters,
    serving_acceleration,
    split_texts_and_labels,
    worst_class,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
TINY_LABELS = ["chitchat", "calculator", "theoretical_definition"]  # as in tests/conftest.py
LABELS = ["chitchat", "calculator", "definition"]


def _predictions(per_class: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """Gold/predicted lists from {gold label: [predicted label per example]}."""
    gold = [label for label, predicted in per_class.items() for _ in predicted]
    predicted = [p for values in per_class.values() for p in values]
    return gold, predicted


# ----------------------------------------------------------------------------------------------- metrics
def test_classification_metrics_per_class_scores_and_top_confusions():
    gold, predicted = _predictions({
        "chitchat": ["chitchat"] * 8 + ["calculator"] * 2,
        "calculator": ["calculator"] * 7 + ["definition"] * 2 + ["chitchat"],
        "definition": ["definition"] * 10,
    })
    metrics = classification_metrics(gold, predicted, LABELS)

    assert metrics["accuracy"] == pytest.approx(25 / 30)
    calculator = metrics["per_class"]["calculator"]
    assert calculator["recall"] == pytest.approx(0.7)
    assert calculator["precision"] == pytest.approx(7 / 9)
    assert calculator["support"] == 10
    # top confusions, most frequent first
    assert calculator["confused_with"] == [{"label": "definition", "count": 2},
                                           {"label": "chitchat", "count": 1}]
    assert metrics["per_class"]["definition"]["confused_with"] == []
    assert metrics["confusion_matrix"]["labels"] == LABELS
    assert metrics["confusion_matrix"]["matrix"][1] == [1, 7, 2]
    assert worst_class(metrics, "recall") == ("calculator", pytest.approx(0.7))


def test_classification_metrics_keeps_labels_outside_the_label_set():
    metrics = classification_metrics(["chitchat", "calculator"], ["chitchat", "old_label"], LABELS)
    assert metrics["confusion_matrix"]["labels"] == [*LABELS, "old_label"]
    assert metrics["per_class"]["calculator"]["confused_with"] == [{"label": "old_label", "count": 1}]
    assert "old_label" not in metrics["per_class"]  # a predicted-only label is not a class of the test split
    # macro F1 averages the two classes present in the test split only (definition has no example)
    assert metrics["macro_f1"] == pytest.approx(0.5)


def test_split_rows_without_text_or_label_are_named():
    with pytest.raises(ValueError, match=r"test_split: row 1 needs string 'text' and 'label'"):
        split_texts_and_labels([{"text": "ciao", "label": "chitchat"}, {"text": "ciao"}], "test_split")


# ------------------------------------------------------------------------------------------- calibration
def test_ece_on_a_crafted_case():
    # bin (0.5, 0.6]: 4 predictions at 0.55, 2 right -> gap 0.05; bin (0.8, 0.9]: 6 at 0.85, all right -> 0.15
    confidences = [0.55] * 4 + [0.85] * 6
    correct = [True, True, False, False] + [True] * 6
    expected = 0.4 * 0.05 + 0.6 * 0.15
    assert expected_calibration_error(confidences, correct, n_bins=10) == pytest.approx(expected)
    bins = calibration_bins(confidences, correct, n_bins=10)
    assert [b["count"] for b in bins] == [0, 0, 0, 0, 0, 4, 0, 0, 6, 0]
    assert bins[5]["accuracy"] == pytest.approx(0.5)


def test_ece_is_zero_when_confidence_matches_accuracy():
    confidences = [0.75] * 4 + [1.0] * 3
    correct = [True, True, True, False] + [True] * 3
    assert expected_calibration_error(confidences, correct) == pytest.approx(0.0)


# ------------------------------------------------------------------------------- low-confidence threshold
def test_target_precision_threshold_is_the_lowest_confidence_reaching_the_target():
    # sorted by confidence: 0.99 ok, 0.95 ok, 0.90 ok, 0.80 wrong, 0.70 ok, 0.60 wrong, 0.50 wrong
    confidences = [0.99, 0.95, 0.90, 0.80, 0.70, 0.60, 0.50]
    correct = [True, True, True, False, True, False, False]
    settings = LowConfidenceParameters(method="target_precision", target_precision=0.8)
    result = low_confidence_threshold(confidences, correct, settings)
    # at >= 0.70: 4 right of 5 = 0.8 reaches the target; at >= 0.60: 4/6 does not
    assert result["threshold"] == pytest.approx(0.70)
    assert result["precision"] == pytest.approx(0.8)
    assert result["coverage"] == pytest.approx(5 / 7)
    assert result["target_reached"]

    strict = low_confidence_threshold(confidences, correct, LowConfidenceParameters(target_precision=0.95))
    assert strict["threshold"] == pytest.approx(0.90)


def test_target_precision_threshold_keeps_ties_together():
    # the two 0.9 predictions (one wrong) cannot be split: ">= 0.9" takes both
    confidences = [0.95, 0.9, 0.9, 0.5]
    correct = [True, True, False, True]
    result = low_confidence_threshold(confidences, correct, LowConfidenceParameters(target_precision=0.9))
    assert result["threshold"] == pytest.approx(0.95)


def test_target_precision_unreachable_flags_everything():
    settings = LowConfidenceParameters(target_precision=0.99)
    result = low_confidence_threshold([0.9, 0.8], [False, True], settings)
    assert result["threshold"] == 1.0
    assert not result["target_reached"]


def test_quantile_threshold_flags_that_share():
    confidences = np.linspace(0.0, 1.0, 101)
    result = low_confidence_threshold(confidences, [True] * 101, LowConfidenceParameters(method="quantile",
                                                                                          quantile=0.2))
    assert result["threshold"] == pytest.approx(0.2)
    assert result["coverage"] == pytest.approx(81 / 101)


# ------------------------------------------------------------------------------------------------- gates
def _metrics(per_class: dict[str, list[str]]) -> dict:
    gold, predicted = _predictions(per_class)
    return classification_metrics(gold, predicted, LABELS)


GOOD = _metrics({"chitchat": ["chitchat"] * 10,
                 "calculator": ["calculator"] * 9 + ["chitchat"],
                 "definition": ["definition"] * 10})  # accuracy 29/30, worst recall 0.9


def test_all_gates_pass_without_production():
    result = evaluate_gates(GOOD, None, GateParameters())
    assert result["passed"]
    assert result["gates"]["no_regression"]["skipped"]
    report = json.loads(compact_gate_report(result))
    assert report["gates"]["accuracy"] == {"value": 0.9667, "threshold": 0.9, "passed": True}
    assert report["gates"]["per_class"]["worst_class"] == "calculator"


def test_accuracy_gate_fails_below_threshold():
    metrics = _metrics({"chitchat": ["chitchat"] * 9 + ["calculator"],
                        "calculator": ["calculator"] * 9 + ["chitchat"],
                        "definition": ["definition"] * 8 + ["chitchat"] * 2})  # 26/30 = 0.867
    result = evaluate_gates(metrics, None, GateParameters(min_per_class=0.8))
    assert not result["passed"]
    assert not result["gates"]["accuracy"]["passed"]
    assert result["gates"]["per_class"]["passed"]


def test_accuracy_exactly_at_threshold_passes():
    metrics = _metrics({"chitchat": ["chitchat"] * 9 + ["calculator"],
                        "calculator": ["calculator"] * 9 + ["chitchat"],
                        "definition": ["definition"] * 9 + ["chitchat"]})  # 27/30 = 0.9
    assert evaluate_gates(metrics, None, GateParameters())["gates"]["accuracy"]["passed"]


def test_per_class_gate_fails_on_one_weak_class_despite_high_accuracy():
    metrics = _metrics({"chitchat": ["chitchat"] * 40,
                        "calculator": ["calculator"] * 40,
                        "definition": ["definition"] * 8 + ["calculator"] * 2})  # 88/90; recall 0.8
    result = evaluate_gates(metrics, None, GateParameters())
    assert result["gates"]["accuracy"]["passed"]
    assert not result["gates"]["per_class"]["passed"]
    assert result["gates"]["per_class"]["failing_classes"] == ["definition"]
    assert not result["passed"]


def test_per_class_metric_f1_catches_a_class_that_absorbs_others():
    # every recall >= 0.85 but "definition" also takes 6 chitchat queries: precision 10/16, F1 0.77
    metrics = _metrics({"chitchat": ["chitchat"] * 34 + ["definition"] * 6,
                        "calculator": ["calculator"] * 40,
                        "definition": ["definition"] * 10})
    assert evaluate_gates(metrics, None, GateParameters(per_class_metric="recall"))["passed"]
    f1_result = evaluate_gates(metrics, None, GateParameters(per_class_metric="f1"))
    assert f1_result["gates"]["per_class"]["failing_classes"] == ["definition"]


def test_regression_gate_against_production():
    production = {"version": "3", "accuracy": 0.99, "macro_f1": 0.99}
    failed = evaluate_gates(GOOD, production, GateParameters(regression_tolerance=0.01))
    assert not failed["passed"]
    assert failed["gates"]["no_regression"]["production_version"] == "3"
    assert failed["gates"]["no_regression"]["threshold"] == pytest.approx(0.98)

    within_tolerance = evaluate_gates(GOOD, {**production, "accuracy": 0.97}, GateParameters())
    assert within_tolerance["passed"]  # 0.9667 >= 0.97 - 0.01

    by_macro_f1 = evaluate_gates(GOOD, {**production, "accuracy": 0.5},
                                 GateParameters(regression_metric="macro_f1"))
    assert not by_macro_f1["gates"]["no_regression"]["passed"]


def test_regression_gate_fails_when_production_could_not_be_evaluated():
    result = evaluate_gates(GOOD, {"version": "2", "error": "OSError: gone"}, GateParameters())
    assert not result["gates"]["no_regression"]["passed"]
    assert "could not be evaluated" in result["gates"]["no_regression"]["reason"]


# ---------------------------------------------------------------------------------------------- champion
def _evaluation(version: str | None, kind: str, passed: bool, macro_f1: float,
                accuracy: float = 0.95) -> dict:
    return {"candidate_name": kind, "kind": kind, "model_name": "intent-classifier",
            "model_version": version,
            "metrics": {"macro_f1": macro_f1, "accuracy": accuracy, "weighted_f1": macro_f1},
            "gate": {"passed": passed, "gates": {}}}


# ------------------------------------------------------------------------------------------- int8 copy
def test_an_int8_copy_that_keeps_the_gates_and_the_accuracy_is_served():
    int8 = _metrics({"chitchat": ["chitchat"] * 10,
                     "calculator": ["calculator"] * 9 + ["chitchat"],
                     "definition": ["definition"] * 10})  # the same 29/30 as GOOD
    verdict = judge_int8_copy(int8, GOOD, GateParameters(), max_accuracy_drop=0.01)
    assert verdict["serve"] and verdict["failed"] == [] and verdict["accuracy_drop"] == pytest.approx(0.0)
    assert serving_acceleration(verdict) == "onnx-int8"


def test_an_int8_copy_that_loses_accuracy_is_not_served_even_above_the_gates():
    int8 = _metrics({"chitchat": ["chitchat"] * 10,
                     "calculator": ["calculator"] * 9 + ["chitchat"],
                     "definition": ["definition"] * 9 + ["chitchat"]})  # 28/30: still >= 0.90, but -0.033
    verdict = judge_int8_copy(int8, GOOD, GateParameters(), max_accuracy_drop=0.01)
    assert not verdict["serve"] and verdict["failed"] == ["accuracy_drop"]
    assert verdict["accuracy_drop"] == pytest.approx(1 / 30)
    assert serving_acceleration(verdict) == "onnx"
    assert judge_int8_copy(int8, GOOD, GateParameters(), max_accuracy_drop=0.05)["serve"]
    line = format_int8_line({**verdict, "available": True, "agreement": 0.95,
                             "latency": {"n": 5, "median_ms": 2.1}}, {"n": 5, "median_ms": 11.9})
    assert "accuracy 0.933 (-0.033)" in line and "95.0%" in line and "2.1 ms per query vs 11.9 ms" in line
    assert "NOT served by default, fails accuracy_drop" in line


def test_an_int8_copy_failing_a_gate_is_not_served_and_no_copy_means_fp32():
    int8 = _metrics({"chitchat": ["chitchat"] * 10,
                     "calculator": ["calculator"] * 8 + ["chitchat"] * 2,
                     "definition": ["definition"] * 10})  # calculator recall 0.8 < 0.85
    verdict = judge_int8_copy(int8, GOOD, GateParameters(), max_accuracy_drop=0.05)
    assert verdict["failed"] == ["per_class"] and not verdict["serve"]
    assert serving_acceleration(None) == "onnx"


def test_champion_is_the_best_passing_candidate_by_the_metric():
    evaluations = [_evaluation("1", "linear", True, 0.91), _evaluation("2", "fine_tuned", True, 0.94),
                   _evaluation("3", "ensemble", False, 0.97)]
    assert choose_champion(evaluations, ChampionParameters()) == 1
    assert choose_champion(evaluations, ChampionParameters(metric="accuracy")) == 1  # tie -> newer version


def test_zero_shot_is_champion_only_when_allowed():
    evaluations = [_evaluation("1", "linear", False, 0.80),
                   _evaluation("2", "zero_shot_embedding", True, 0.92)]
    assert choose_champion(evaluations, ChampionParameters()) is None
    assert choose_champion(evaluations, ChampionParameters(allow_zero_shot=True)) == 1


def test_no_champion_when_nothing_passes_or_nothing_is_registered():
    assert choose_champion([_evaluation("1", "linear", False, 0.99)], ChampionParameters()) is None
    assert choose_champion([_evaluation(None, "linear", True, 0.99)], ChampionParameters()) is None
    assert choose_champion([], ChampionParameters()) is None


# -------------------------------------------------------------------------------------------- parameters
def test_parameter_typo_names_the_file_and_field():
    with pytest.raises(ValueError, match=r"parameters_evaluation.yml.*evaluation\.gates\.min_acuracy"):
        parse_evaluation_parameters({"gates": {"min_acuracy": 0.9}})
    with pytest.raises(ValueError, match=r"evaluation\.gates\.per_class_metric"):
        parse_evaluation_parameters({"gates": {"per_class_metric": "precision"}})


def test_yaml_defaults_match_the_schema():
    import yaml

    parameters = yaml.safe_load((PROJECT_ROOT / "conf/base/parameters_evaluation.yml").read_text())
    settings = parse_evaluation_parameters(parameters["evaluation"])
    assert settings.gates.per_class_metric == "recall"
    assert (settings.gates.min_accuracy, settings.gates.min_per_class) == (0.90, 0.85)
    assert not settings.champion.allow_zero_shot and not settings.strict


def test_summary_table_lists_every_candidate_and_the_champion():
    summary = {
        "model_name": "intent-classifier", "per_class_metric": "recall", "gates_text": "gates: ...",
        "champion": {"candidate_name": "linear", "version": "4", "metric": "macro_f1", "value": 0.93},
        "no_champion_reason": None,
        "candidates": [
            {"candidate_name": "linear", "kind": "linear", "version": "4", "accuracy": 0.95, "macro_f1": 0.93,
             "worst_class": {"name": "definition", "value": 0.9}, "ece": 0.05, "gate_passed": True,
             "failed_gates": [], "aliases": ["staging"]},
            {"candidate_name": "zero_shot", "kind": "zero_shot_embedding", "version": "5", "accuracy": 0.6,
             "macro_f1": 0.55, "worst_class": {"name": "chitchat", "value": 0.2}, "ece": 0.3,
             "gate_passed": False, "failed_gates": ["accuracy", "per_class"], "aliases": []},
        ],
    }
    lines = format_summary_table(summary).splitlines()
    assert lines[1].split() == ["candidate", "kind", "version", "accuracy", "macro_f1", "worst", "class",
                                "(recall)", "ECE", "gates", "alias"]
    assert lines[3].split() == ["linear", "linear", "4", "0.950", "0.930", "definition", "0.900", "0.050",
                                "PASS", "staging"]
    assert "FAIL accuracy,per_class" in lines[4]
    assert lines[-1].startswith("Champion: linear v4")


# ------------------------------------------------------------------------------------------------ wiring
MODEL_NAME = "intent-classifier"
PNG_ARTIFACTS = {"evaluation/confusion_matrix.png", "evaluation/confidence_histogram.png",
                 "evaluation/reliability_diagram.png"}


class KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can read intermediate outputs."""

    def _release(self) -> None:
        pass


def _register_candidate(classifier, model_dir: Path, candidate_name: str) -> dict:
    """Save, log and register ``classifier`` in its own run, as training does; return its candidate record."""
    import mlflow

    from intent_pipeline.model_logging import log_classifier

    classifier.save(model_dir)
    with mlflow.start_run(run_name=candidate_name) as run:
        info = log_classifier(classifier, registered_model_name=MODEL_NAME, tags={"kind": classifier.kind})
    version = info.registered_model_version
    return {"kind": classifier.kind, "run_id": run.info.run_id, "model_name": MODEL_NAME,
            "model_version": str(version), "model_uri": f"models:/{MODEL_NAME}/{version}",
            "model_dir": str(model_dir), "train_seconds": 0.1, "base_model": None,
            "candidate_name": candidate_name}


def _evaluation_catalog(candidates: list[dict], examples: list[dict], **overrides) -> DataCatalog:
    """An in-memory catalog holding the evaluation inputs (test = val = ``examples``)."""
    catalog = DataCatalog({name: KeptMemoryDataset() for name in create_pipeline().datasets()})
    catalog["trained_candidates"] = candidates
    catalog["test_split"] = examples
    catalog["val_split"] = examples
    catalog["intent_label_set"] = {label: label for label in TINY_LABELS}
    catalog["params:evaluation"] = {"latency_sample_size": 5, **overrides}
    return catalog


def _run_evaluation(candidates: list[dict], examples: list[dict], **overrides) -> DataCatalog:
    """Run the evaluation pipeline with SequentialRunner; return the catalog with every output."""
    catalog = _evaluation_catalog(candidates, examples, **overrides)
    SequentialRunner().run(create_pipeline(), catalog)
    return catalog


@pytest.fixture()
def tiny_candidates(mlflow_tracking, tmp_path, tiny_examples, tiny_bert_dir) -> tuple[dict, dict]:
    """A linear candidate that fits the tiny data and a random tiny BERT that cannot, both registered."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from intent_pipeline.classifier import FineTunedClassifier, LinearClassifier

    linear_pipeline = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)),
                                    LogisticRegression(C=100.0, max_iter=1000))
    linear_pipeline.fit([row["text"] for row in tiny_examples], [row["label"] for row in tiny_examples])
    linear = _register_candidate(LinearClassifier(linear_pipeline, TINY_LABELS), tmp_path / "linear",
                                 "linear")
    bert = _register_candidate(FineTunedClassifier.from_pretrained(tiny_bert_dir), tmp_path / "tiny_bert",
                               "fine_tuned")
    return linear, bert


@pytest.mark.slow
def test_pipeline_gates_tags_logs_and_stages_the_champion(tiny_candidates, tiny_examples, capsys):
    from intent_pipeline import registry

    linear, bert = tiny_candidates
    catalog = _run_evaluation([linear, bert], tiny_examples)
    client = registry.get_client()

    # the linear candidate fits its own examples: it passes and holds staging; the random BERT fails
    linear_tags = client.get_model_version(MODEL_NAME, linear["model_version"]).tags
    bert_tags = client.get_model_version(MODEL_NAME, bert["model_version"]).tags
    assert linear_tags["gate_passed"] == "true"
    assert bert_tags["gate_passed"] == "false"
    bert_gates = json.loads(bert_tags["gate_report"])["gates"]
    assert not bert_gates["accuracy"]["passed"]
    assert bert_gates["no_regression"] == {"metric": "accuracy", "skipped": True, "passed": True,
                                           "reason": "no production version"}
    # the fine-tuned version's int8 copy was judged: it fails the gates like its model, so fp32 ONNX serves
    assert bert_tags["serving_acceleration"] == "onnx" and "serving_acceleration" not in linear_tags
    assert float(linear_tags["accuracy"]) == pytest.approx(1.0)
    assert 0.0 <= float(linear_tags["ece"]) <= 1.0
    assert 0.0 < float(linear_tags["low_confidence_threshold"]) <= 1.0
    assert str(client.get_model_version_by_alias(MODEL_NAME, "staging").version) == linear["model_version"]
    [move] = registry.alias_history(client, MODEL_NAME)  # the move is recorded as made by the evaluation
    assert (move.alias, move.via, str(move.to_version)) == ("staging", "evaluation", linear["model_version"])

    # every candidate's own run holds the plots, the errors and the test metrics
    for candidate in (linear, bert):
        artifacts = {a.path for a in client.list_artifacts(candidate["run_id"], "evaluation")}
        assert PNG_ARTIFACTS | {"evaluation/errors.jsonl", "evaluation/gate_report.json"} <= artifacts
        run_metrics = client.get_run(candidate["run_id"]).data.metrics
        assert {"test_accuracy", "test_f1_macro", "test_ece", "latency_ms_median", "latency_ms_p95",
                "test_recall_calculator"} <= set(run_metrics)
    errors_path = client.download_artifacts(bert["run_id"], "evaluation/errors.jsonl")
    errors = [json.loads(line) for line in Path(errors_path).read_text(encoding="utf-8").splitlines()]
    assert errors and set(errors[0]) == {"text", "gold", "predicted", "confidence"}
    assert all(error["gold"] != error["predicted"] for error in errors)

    summary = catalog.load("evaluation_summary")
    rows = {row["candidate_name"]: row for row in summary["candidates"]}
    assert summary["champion"]["version"] == linear["model_version"]
    assert rows["linear"]["aliases"] == ["staging"] and rows["linear"]["gate_passed"]
    assert rows["fine_tuned"]["aliases"] == [] and "accuracy" in rows["fine_tuned"]["failed_gates"]
    assert rows["fine_tuned"]["worst_class"]["metric"] == "recall"
    assert (rows["fine_tuned"]["serving_acceleration"], rows["linear"]["serving_acceleration"]) == ("onnx", None)

    printed = capsys.readouterr().out
    assert printed.count("Evaluation Results:") == 2
    assert printed.count("int8 serving copy:") == 1  # the fine-tuned candidate only
    assert "Evaluation summary: intent-classifier" in printed
    assert f"Champion: linear v{linear['model_version']}" in printed


@pytest.mark.slow
def test_no_passing_candidate_moves_no_alias_and_strict_fails(tiny_candidates, tiny_examples, capsys):
    from intent_pipeline import registry
    from intent_pipeline.pipelines.evaluation.nodes import NoChampionError

    linear, bert = tiny_candidates
    client = registry.get_client()
    # the linear version is in production (and staging); the BERT candidate must now beat it on the same test
    client.set_registered_model_alias(MODEL_NAME, "production", linear["model_version"])
    client.set_registered_model_alias(MODEL_NAME, "staging", linear["model_version"])
    # a missing model_dir falls back to the registered model URI
    bert_elsewhere = {**bert, "model_dir": str(Path(bert["model_dir"]).with_name("gone"))}

    summary = _run_evaluation([bert_elsewhere], tiny_examples).load("evaluation_summary")
    assert summary["champion"] is None and summary["no_champion_reason"] == "no candidate passed the gates"
    assert summary["production"]["version"] == linear["model_version"]
    assert summary["production"]["accuracy"] == pytest.approx(1.0)
    regression = json.loads(client.get_model_version(MODEL_NAME, bert["model_version"]).tags["gate_report"])[
        "gates"]["no_regression"]
    assert not regression["passed"] and regression["production_version"] == linear["model_version"]
    assert str(client.get_model_version_by_alias(MODEL_NAME, "staging").version) == linear["model_version"]
    assert "No champion: no candidate passed the gates. No alias moved." in capsys.readouterr().out

    strict_catalog = _evaluation_catalog([bert_elsewhere], tiny_examples, strict=True)
    with pytest.raises(NoChampionError, match="no candidate passed the gates.*strict"):
        SequentialRunner().run(create_pipeline(), strict_catalog)
    # the table is printed and the summary saved before the run fails
    assert "Evaluation summary" in capsys.readouterr().out
    assert strict_catalog.load("evaluation_summary")["champion"] is None
