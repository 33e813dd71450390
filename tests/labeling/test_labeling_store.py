"""The labeling store: dedup by normalised text, queue order and paging, decisions, races, migrations."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import numpy as np
import pytest
from labeling_helpers import SEED_QUERIES, T0, record
from sqlalchemy import create_engine, inspect, text

from intent_pipeline.labeling import store as store_module
from intent_pipeline.labeling.capture import CaptureRecord
from intent_pipeline.labeling.store import (
    CapturedQuery,
    ItemConflict,
    ItemNotFound,
    LabelingStore,
    SchemaTooNewError,
)
from intent_pipeline.text import normalise_text


def test_capture_dedups_by_normalised_text_and_counts(store):
    decomposed = "perche\u0301 pago l'IMU?"  # e + combining acute: NFC makes it one character
    store.record_captures([record("Perché  pago l'IMU?", "calculator", 0.40, at=T0)])
    store.record_captures([record(f"  {decomposed.upper()}\n", "technical_research", 0.30,
                                  at=T0 + timedelta(hours=1), version="2")])
    store.record_captures([record("perché pago\tl'imu?", "calculator", 0.35, at=T0 + timedelta(hours=2))])

    page = store.queue()
    assert page.total == 1
    (item,) = page.items
    assert item["text"] == "Perché pago l'IMU?"  # the first capture's normalised text, case kept
    assert item["count"] == 3
    assert item["first_seen"] == T0
    assert item["last_seen"] == T0 + timedelta(hours=2)
    assert (item["predicted_intent"], item["confidence"], item["model_version"]) == ("calculator", 0.35, "1")


def test_one_batch_with_repeats_adds_up_and_keeps_latest_prediction(store):
    store.record_captures([record("IVA al 22%", "calculator", 0.2, at=T0 + timedelta(minutes=5)),
                           record("iva al 22%", "chitchat", 0.1, at=T0),
                           record("ciao", "chitchat", 0.3, at=T0)])
    by_text = {item["text"]: item for item in store.queue().items}
    assert by_text["IVA al 22%"]["count"] == 2
    assert by_text["IVA al 22%"]["first_seen"] == T0
    assert by_text["IVA al 22%"]["predicted_intent"] == "calculator"  # the later of the two
    assert by_text["ciao"]["count"] == 1


def test_a_labeled_text_captured_again_keeps_its_label(store):
    store.record_captures([record("cos'è l'IRAP")])
    item_id = store.queue().items[0]["id"]
    store.label_item(item_id, "theoretical_definition", "anna")
    store.record_captures([record("COS'È L'IRAP", "chitchat", 0.1, at=T0 + timedelta(days=1))])
    item = store.get_item(item_id)
    assert (item["status"], item["label"], item["count"]) == ("labeled", "theoretical_definition", 2)
    assert store.queue().total == 0


def test_empty_texts_are_not_captured(store):
    assert store.record_captures([record("   "), record("")]) == 0
    assert store.queue().total == 0


def test_ranking_accepts_json_strings_and_numpy_scalars(store):
    store.record_captures([
        record("uno", confidence=np.float32(0.25)),
        CaptureRecord("due", "calculator", 0.5, json.dumps([{"intent": "calculator", "score": 0.5}]), "1"),
        CaptureRecord("tre", "calculator", 0.1, [{"intent": "calculator", "score": np.float64(0.125)}], None),
    ])
    by_text = {item["text"]: item for item in store.queue().items}
    assert by_text["uno"]["confidence"] == pytest.approx(0.25)
    assert by_text["due"]["ranking"] == [{"intent": "calculator", "score": 0.5}]
    assert by_text["tre"]["ranking"] == [{"intent": "calculator", "score": 0.125}]
    assert by_text["tre"]["model_version"] is None


def test_queue_orders_by_confidence_or_frequency_and_pages(store, seeded):
    by_confidence = [item["text"] for item in store.queue(order="confidence").items]
    assert by_confidence == [q[0] for q in sorted(SEED_QUERIES, key=lambda q: q[2])]
    by_frequency = [item["text"] for item in store.queue(order="frequency").items]
    assert by_frequency == [q[0] for q in sorted(SEED_QUERIES, key=lambda q: -q[3])]

    first, second, beyond = (store.queue(limit=2, offset=o, order="frequency") for o in (0, 2, 4))
    assert [i["text"] for i in first.items + second.items] == by_frequency
    assert beyond.items == []
    assert first.total == second.total == beyond.total == len(SEED_QUERIES)
    with pytest.raises(ValueError, match="order"):
        store.queue(order="alphabetical")


def test_label_and_skip_leave_the_queue(store, seeded):
    text_labeled, text_skipped = SEED_QUERIES[0][0], SEED_QUERIES[1][0]
    labeled = store.label_item(seeded[text_labeled], "calculator", "anna")
    skipped = store.skip_item(seeded[text_skipped], "bruno")
    assert (labeled["status"], labeled["label"], labeled["labeled_by"]) == ("labeled", "calculator", "anna")
    assert labeled["labeled_at"] is not None and labeled["labeled_at"].tzinfo is not None
    assert (skipped["status"], skipped["label"], skipped["labeled_by"]) == ("skipped", None, "bruno")
    remaining = {item["text"] for item in store.queue().items}
    assert remaining == {q[0] for q in SEED_QUERIES} - {text_labeled, text_skipped}
    assert [item["text"] for item in store.iter_labeled()] == [text_labeled]
    assert store.counts() == {"pending": 2, "labeled": 1, "skipped": 1}


def test_second_decision_conflicts_and_unknown_id_is_not_found(store, seeded):
    item_id = seeded[SEED_QUERIES[0][0]]
    store.label_item(item_id, "calculator", "anna")
    with pytest.raises(ItemConflict) as conflict:
        store.label_item(item_id, "chitchat", "bruno")
    assert (conflict.value.current["label"], conflict.value.current["labeled_by"]) == ("calculator", "anna")
    with pytest.raises(ItemConflict):
        store.skip_item(item_id, "bruno")
    assert store.get_item(item_id)["label"] == "calculator"
    with pytest.raises(ItemNotFound):
        store.label_item(999_999, "calculator", "anna")


def test_two_replicas_labeling_one_item_at_once_agree_on_one_label(store_url, seeded):
    """Two stores (two engines, as two server replicas) race on each item from two threads."""
    replicas = [LabelingStore(store_url), LabelingStore(store_url)]
    choices = ["calculator", "chitchat"]
    outcomes: dict[int, list[tuple[str, str]]] = {item_id: [] for item_id in seeded.values()}
    lock = threading.Lock()

    def expert(index: int, item_id: int, barrier: threading.Barrier) -> None:
        barrier.wait()
        try:
            replicas[index].label_item(item_id, choices[index], f"expert{index}")
            outcome = ("won", choices[index])
        except ItemConflict as conflict:
            outcome = ("lost", conflict.current["label"])
        with lock:
            outcomes[item_id].append(outcome)

    for item_id in seeded.values():
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=expert, args=(i, item_id, barrier)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)

    reader = LabelingStore(store_url)
    for item_id, results in outcomes.items():
        assert sorted(kind for kind, _ in results) == ["lost", "won"], results
        winner_label = next(label for kind, label in results if kind == "won")
        loser_saw = next(label for kind, label in results if kind == "lost")
        stored = reader.get_item(item_id)
        assert stored["label"] == winner_label == loser_saw
        assert stored["labeled_by"] == f"expert{choices.index(winner_label)}"
    for each in (*replicas, reader):
        each.close()


def test_fresh_database_matches_the_orm_model(store):
    """A model change without its migration fails here."""
    inspector = inspect(store.engine)
    columns = {c["name"] for c in inspector.get_columns("captured_queries")}
    assert columns == set(CapturedQuery.__table__.columns.keys())
    assert {i["name"] for i in inspector.get_indexes("captured_queries")} >= {
        "ix_captured_queries_status_confidence", "ix_captured_queries_status_count"}
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT version FROM schema_version")).scalar_one() == len(
            store_module.MIGRATIONS)


def test_reopening_keeps_data_and_an_appended_migration_runs_once(store_url, store, seeded, monkeypatch):
    def add_reviewer_note(connection):
        connection.execute(text("ALTER TABLE captured_queries ADD COLUMN reviewer_note VARCHAR(200)"))

    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, add_reviewer_note])
    upgraded = LabelingStore(store_url)
    again = LabelingStore(store_url)  # already at version 2: the ALTER must not run twice
    assert upgraded.schema_version == again.schema_version == 2
    assert "reviewer_note" in {c["name"] for c in inspect(upgraded.engine).get_columns("captured_queries")}
    assert upgraded.queue().total == len(SEED_QUERIES)
    upgraded.close()
    again.close()


def test_a_database_newer_than_the_code_refuses_to_open(store_url, store):
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE schema_version SET version = 99"))
    engine.dispose()
    with pytest.raises(SchemaTooNewError, match="99"):
        LabelingStore(store_url)


def test_capture_dedups_texts_the_way_training_does(store):
    """Capture and training must agree on 'the same text': NFC, whitespace and case."""
    store.record_captures([record("  Perche\u0301\u00a0 NO\n"), record("perch\u00e9 no")])
    page = store.queue(limit=10, offset=0, order="frequency")
    assert page.total == 1 and page.items[0]["count"] == 2
    assert page.items[0]["text"] == normalise_text("  Perche\u0301\u00a0 NO\n")


def test_last_seen_never_moves_back_when_an_older_capture_arrives_late(store):
    store.record_captures([record("ritardo", at=T0 + timedelta(hours=3))])
    store.record_captures([record("ritardo", at=T0)])  # e.g. flushed late by another replica
    (item,) = store.queue().items
    assert (item["count"], item["last_seen"]) == (2, T0 + timedelta(hours=3))


def test_the_portable_update_then_insert_path_gives_the_same_rows(store, monkeypatch):
    monkeypatch.setattr(store_module, "upsert_statement", lambda dialect, row: None)
    store.record_captures([record("Ciao", at=T0)])
    store.record_captures([record("ciao ", at=T0 + timedelta(minutes=1)), record("altro", at=T0)])
    by_text = {item["text"]: item for item in store.queue().items}
    assert (by_text["Ciao"]["count"], by_text["Ciao"]["last_seen"]) == (2, T0 + timedelta(minutes=1))
    assert by_text["altro"]["count"] == 1


def test_schema_and_upsert_compile_for_postgresql():
    """No PostgreSQL server here: check the DDL and the ON CONFLICT upsert render for its dialect."""
    from sqlalchemy import create_mock_engine
    from sqlalchemy.dialects import postgresql

    statements: list[str] = []
    engine = create_mock_engine("postgresql://", lambda sql, *a, **k: statements.append(
        str(sql.compile(dialect=engine.dialect))))
    store_module.MIGRATIONS[0](engine)
    ddl = "\n".join(statements)
    assert "CREATE TABLE captured_queries" in ddl and "TIMESTAMP WITH TIME ZONE" in ddl and " JSON" in ddl
    row = {"text_key_hash": "h", "text": "t", "first_seen": T0, "last_seen": T0, "count": 1,
           "status": "pending", "predicted_intent": "calculator", "confidence": 0.5, "ranking": [],
           "model_version": "1"}
    upsert = str(store_module.upsert_statement("postgresql", row).compile(dialect=postgresql.dialect()))
    assert "ON CONFLICT (text_key_hash) DO UPDATE" in upsert
    assert "captured_queries.count + excluded.count" in upsert
