"""export_labels (behind `intent-pipeline export`): the file data_engineering reads from data/01_raw."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from labeling_helpers import SEED_QUERIES

from intent_pipeline.labeling.export import EXPORT_FIELDS, LabelingStoreUnavailable, export_labels

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DE_PARAMETERS = PROJECT_ROOT / "conf" / "base" / "parameters_data_engineering.yml"


def configured_labels() -> list[str]:
    """The label set data_engineering validates against (conf/base), the one the server labels with."""
    return list(yaml.safe_load(DE_PARAMETERS.read_text(encoding="utf-8"))["data_engineering"]["labels"])


@pytest.fixture()
def labeled(store, seeded) -> list[tuple[str, str]]:
    """Three labeled items (one with an accent and an apostrophe) and one skipped."""
    labels = configured_labels()
    chosen = [(SEED_QUERIES[0][0], labels[2]), (SEED_QUERIES[1][0], labels[3]),
              (SEED_QUERIES[2][0], labels[0])]
    for text, label in chosen:
        store.label_item(seeded[text], label, "anna")
    store.skip_item(seeded[SEED_QUERIES[3][0]], "anna")
    return chosen


def test_jsonl_export_parses_line_by_line_with_the_contract(store_url, labeled, tmp_path):
    out = tmp_path / "data" / "01_raw" / "labeling_export.jsonl"
    assert export_labels(store_url, out) == len(labeled)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(labeled)
    allowed = set(configured_labels())
    for line in lines:
        row = json.loads(line)
        assert isinstance(row["text"], str) and row["text"].strip()
        assert isinstance(row["label"], str) and row["label"] in allowed
        assert set(row) <= set(EXPORT_FIELDS) and row["source"] == "labeling"
    assert [(json.loads(line)["text"], json.loads(line)["label"]) for line in lines] == labeled
    assert "cos'è" in out.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert [p.name for p in out.parent.iterdir()] == [out.name]  # no partial file left behind


def test_csv_export_has_a_header_and_the_same_rows(store_url, labeled, tmp_path):
    out = tmp_path / "export.csv"
    assert export_labels(store_url, out, fmt="csv") == len(labeled)
    with out.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        rows = list(reader)
    assert reader.fieldnames == list(EXPORT_FIELDS)
    assert [(row["text"], row["label"], row["labeled_by"]) for row in rows] == [
        (text, label, "anna") for text, label in labeled]


def test_data_engineering_accepts_the_export_with_zero_rejects(store_url, labeled, tmp_path):
    nodes = pytest.importorskip("intent_pipeline.pipelines.data_engineering.nodes")
    out = tmp_path / "01_raw" / "labeling_export.jsonl"
    export_labels(store_url, out)
    params = yaml.safe_load(DE_PARAMETERS.read_text(encoding="utf-8"))["data_engineering"]
    partitions = {out.stem: lambda: out.read_text(encoding="utf-8")}
    rows, rejected = nodes.validate_labeled_export(partitions, params)
    assert rejected == []
    assert [(row["text"], row["label"]) for row in rows] == labeled
    assert all(row["source"] == "labeling" for row in rows)


def test_labels_outside_a_given_set_are_left_out(store_url, labeled, tmp_path):
    out = tmp_path / "export.jsonl"
    keep = {labeled[0][1]}
    assert export_labels(store_url, out, labels=keep) == 1
    exported = [json.loads(line)["label"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert exported == [labeled[0][1]]


def test_an_empty_store_exports_an_empty_file(store_url, store, tmp_path):
    out = tmp_path / "empty.jsonl"
    assert export_labels(store_url, out) == 0
    assert out.read_text(encoding="utf-8") == ""


def test_a_missing_sqlite_store_is_an_error_not_a_new_empty_database(tmp_path):
    missing = tmp_path / "nowhere" / "labeling.db"
    with pytest.raises(FileNotFoundError, match="LABELING_STORE_URL"):
        export_labels(f"sqlite:///{missing}", tmp_path / "out.jsonl")
    assert not missing.exists() and not (tmp_path / "out.jsonl").exists()


def test_bad_format_or_url_are_value_errors_and_a_dead_database_is_an_oserror(store_url, store, tmp_path):
    with pytest.raises(ValueError, match="jsonl"):
        export_labels(store_url, tmp_path / "x.xml", fmt="xml")
    with pytest.raises(ValueError, match="LABELING_STORE_URL"):
        export_labels("not a url", tmp_path / "x.jsonl")
    # nothing listens on port 1: the driver may be missing or the connection refused; both are OSErrors
    with pytest.raises(LabelingStoreUnavailable) as error:
        export_labels("postgresql://user:s3cret@127.0.0.1:1/labels", tmp_path / "x.jsonl")
    assert "s3cret" not in str(error.value)
    assert not (tmp_path / "x.jsonl").exists()
