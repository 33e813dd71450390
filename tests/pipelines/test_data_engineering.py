"""data_engineering: every node on tiny fixtures, every rejection reason, the wiring, the bundled dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from intent_pipeline.pipelines.data_engineering import create_pipeline, nodes

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
BUNDLED = Path(__file__).resolve().parents[2] / "data" / "01_raw" / "intent_labels.jsonl"
LABELS = {"chitchat": "saluti", "calculator": "calcoli", "theoretical_definition": "definizioni"}


def params(**overrides) -> dict:
    base = {"labels": dict(LABELS), "max_rejected_fraction": 1.0, "conflict_policy": "drop",
            "min_examples_per_label": 0, "on_too_few_examples": "warn",
            "split": {"val_fraction": 0.2, "test_fraction": 0.2, "seed": 7}}
    base.update(overrides)
    return base


def read_as_kedro_would(path: Path) -> str:
    """What the catalog's TextDataset gives: UTF-8 with surrogateescape."""
    return path.read_bytes().decode("utf-8", errors="surrogateescape")


def partitions(**files: str) -> dict:
    return {name: (lambda text=text: text) for name, text in files.items()}


def jsonl(rows: list[dict]) -> str:
    return "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


def test_each_bad_line_is_rejected_with_its_line_number_and_reason():
    raw = partitions(bad=read_as_kedro_would(FIXTURES / "bad_lines.jsonl"))
    rows, rejected = nodes.validate_labeled_export(raw, params())
    by_line = {r["line"]: r["reason"] for r in rejected}
    assert by_line == {2: "invalid_json", 3: "missing_text", 4: "empty_text", 5: "unknown_label",
                       6: "wrong_type", 7: "invalid_utf8", 8: "not_an_object", 9: "missing_label"}
    assert all(r["file"] == "bad" and r["detail"] for r in rejected)
    assert "astrology" in next(r["detail"] for r in rejected if r["reason"] == "unknown_label")
    assert [r["_line"] for r in rows] == [1, 11]
    assert rows[1]["extra"] == 1 and rows[1]["source"] == "ui"  # unknown and optional fields are kept


def test_rejected_fraction_above_the_limit_fails_naming_the_lines():
    raw = partitions(bad=read_as_kedro_would(FIXTURES / "bad_lines.jsonl"))
    with pytest.raises(nodes.RejectedLinesError, match=r"8 of 10 lines rejected.*bad line 2"):
        nodes.validate_labeled_export(raw, params(max_rejected_fraction=0.5))


def test_no_export_files_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no \\*.jsonl export"):
        nodes.validate_labeled_export({}, params())


def test_without_a_configured_label_set_any_label_is_accepted_and_the_set_is_derived():
    raw = partitions(a=jsonl([{"text": "x", "label": "zeta_label"}, {"text": "y", "label": "alpha"}]))
    rows, rejected = nodes.validate_labeled_export(raw, params(labels=None))
    assert rejected == []
    assert nodes.build_label_set(rows, params(labels=None)) == {"alpha": "alpha", "zeta_label": "zeta label"}
    assert list(nodes.build_label_set(rows, params())) == list(LABELS)


def test_a_typo_in_the_parameters_fails_at_once():
    with pytest.raises(ValueError, match="max_rejected_fractoin"):
        nodes.validate_labeled_export(partitions(a=""), {**params(), "max_rejected_fractoin": 0.1})


def test_normalisation_is_nfc_and_collapses_whitespace():
    decomposed = "cos\u0065\u0300 il  forfettario?\t"
    [row] = nodes.normalise_texts([{"text": decomposed, "label": "chitchat"}])
    assert row["text"] == "cos\u00e8 il forfettario?"


def test_duplicates_are_merged_and_conflicts_dropped_or_voted():
    rows = [{"text": t, "label": lab, "_file": "f", "_line": i} for i, (t, lab) in enumerate([
        ("Ciao", "chitchat"), ("ciao", "chitchat"), ("IVA?", "calculator"), ("iva?", "theoretical_definition"),
        ("iva?", "calculator"), ("cos'è l'IRAP", "theoretical_definition")], start=1)]
    kept, summary = nodes.resolve_duplicates_and_conflicts(rows, params(conflict_policy="drop"))
    assert sorted(r["text"] for r in kept) == ["Ciao", "cos'è l'IRAP"]
    assert summary["duplicates_merged"] == 1 and summary["conflicting_label_rows_dropped"] == 3
    assert summary["conflicting_texts"][0]["labels"] == {"calculator": 2, "theoretical_definition": 1}
    kept, summary = nodes.resolve_duplicates_and_conflicts(rows, params(conflict_policy="majority"))
    assert {(r["text"], r["label"]) for r in kept} >= {("IVA?", "calculator")}
    assert summary["duplicates_merged"] == 2 and summary["conflicting_label_rows_dropped"] == 1


def test_too_few_examples_warns_or_fails_as_configured(caplog):
    rows = [{"text": "ciao", "label": "chitchat"}]
    check = nodes.check_examples_per_label(rows, LABELS, params(min_examples_per_label=2))
    assert check["labels_below_minimum"] == {"chitchat": 1, "calculator": 0, "theoretical_definition": 0}
    assert "below min_examples_per_label=2" in caplog.text
    with pytest.raises(nodes.TooFewExamplesError, match="chitchat \\(1\\)"):
        nodes.check_examples_per_label(rows, LABELS, params(min_examples_per_label=2, on_too_few_examples="fail"))


def test_split_is_stratified_seeded_and_independent_of_input_order(tiny_examples):
    train, val, test = nodes.split_examples(tiny_examples, params())
    for label in LABELS:
        assert [sum(r["label"] == label for r in part) for part in (train, val, test)] == [6, 2, 2]
    again = nodes.split_examples(list(reversed(tiny_examples)), params())
    assert [sorted(r["text"] for r in part) for part in again] == [sorted(r["text"] for r in p) for p in
                                                                    (train, val, test)]
    other_seed = nodes.split_examples(tiny_examples, params(split={"val_fraction": 0.2, "test_fraction": 0.2,
                                                                   "seed": 8}))
    assert sorted(r["text"] for r in other_seed[2]) != sorted(r["text"] for r in test)


def test_new_rows_barely_move_the_previous_split(tiny_examples):
    before = nodes.split_examples(tiny_examples, params())
    added = [{"text": f"nuova domanda numero {i}", "label": "calculator"} for i in range(3)]
    after = nodes.split_examples(tiny_examples + added, params())
    old_train = {r["text"] for r in before[0]}
    new_test = {r["text"] for r in after[2]}
    # Only boundary rows of the calculator label may move; a shuffled re-split would move about a third.
    assert len(old_train & new_test) <= 1
    assert {r["text"] for r in before[2] if r["label"] != "calculator"} == {
        r["text"] for r in after[2] if r["label"] != "calculator"}


def test_split_fractions_must_leave_training_rows():
    with pytest.raises(ValueError, match="must be < 1"):
        nodes.split_examples([], params(split={"val_fraction": 0.5, "test_fraction": 0.5, "seed": 1}))


class KeptMemoryDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so the test can read intermediate outputs."""

    def _release(self) -> None:
        pass


def run_pipeline(raw: dict, parameters: dict) -> DataCatalog:
    pipe = create_pipeline()
    catalog = DataCatalog({name: KeptMemoryDataset() for name in pipe.datasets()})
    catalog["raw_intent_labels"] = raw
    catalog["params:data_engineering"] = parameters
    SequentialRunner().run(pipe, catalog)
    return catalog


def test_pipeline_wiring_accounts_for_every_row(tiny_examples):
    bad = read_as_kedro_would(FIXTURES / "bad_lines.jsonl")
    duplicated = tiny_examples + [{"text": "CIAO ", "label": "chitchat"}, {"text": "ciao", "label": "calculator"}]
    catalog = run_pipeline(partitions(bad=bad, export=jsonl(duplicated)), params())
    report = catalog.load("data_report")
    assert report["rows_in"] == 10 + 32
    assert report["rows_in"] == report["rows_kept"] + sum(report["rows_dropped_by_reason"].values())
    # "ciao" three times as chitchat (bad file line 1, tiny set, "CIAO ") and once as calculator
    assert report["rows_dropped_by_reason"]["conflicting_labels"] == 4
    assert report["rows_dropped_by_reason"]["invalid_utf8"] == 1
    assert report["files"] == ["bad", "export"]
    assert len(report["data_version"]) == 12
    train = catalog.load("train_split")
    assert all(set(row) >= {"text", "label"} and not any(k.startswith("_") for k in row) for row in train)
    assert catalog.load("data_report_metrics")["rows_in"]["value"] == 42.0
    assert "ciao" not in {r["text"].casefold() for r in train + catalog.load("test_split")}


def test_bundled_dataset_passes_validation_with_zero_rejects_and_enough_rows():
    import yaml

    config = yaml.safe_load((BUNDLED.parents[2] / "conf/base/parameters_data_engineering.yml").read_text())
    parameters = config["data_engineering"]
    raw = partitions(intent_labels=read_as_kedro_would(BUNDLED))
    rows, rejected = nodes.validate_labeled_export(raw, parameters)
    assert rejected == []
    examples, summary = nodes.resolve_duplicates_and_conflicts(nodes.normalise_texts(rows), parameters)
    assert summary["conflicting_texts"] == [] and summary["duplicates_merged"] == 0
    counts = nodes.check_examples_per_label(examples, parameters["labels"], parameters)["examples_per_label"]
    assert set(counts) == set(parameters["labels"]) and min(counts.values()) >= 250, counts
