"""Alias moves against a real sqlite MLflow registry: promote, rollback, history, outside-CLI detection."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from intent_pipeline import registry
from intent_pipeline.registry import (
    DEFAULT_MODEL_NAME,
    MAX_REASON_CHARS,
    PRODUCTION,
    STAGING,
    AliasMove,
    PromotionRefused,
    RegistryError,
    RollbackImpossible,
    alias_history,
    find_zero_shot_version,
    get_client,
    move_alias,
    previous_production_version,
    production_lineage,
    promote,
    registry_status,
    rollback,
)


def register_versions(client, source_dir, specs, name=DEFAULT_MODEL_NAME) -> list[int]:
    """Register one cheap version per (kind, gate_passed) spec; gate None leaves the tag off."""
    source_dir.mkdir(exist_ok=True)
    try:
        client.get_registered_model(name)
    except Exception:
        client.create_registered_model(name)
    numbers = []
    for index, (kind, gate) in enumerate(specs):
        tags = {"kind": kind, "accuracy": f"{0.90 + index / 100:.2f}",
                "macro_f1": f"{0.88 + index / 100:.2f}"}
        if gate is not None:
            tags["gate_passed"] = gate
        numbers.append(int(client.create_model_version(name, source=str(source_dir), tags=tags).version))
    return numbers


@pytest.fixture()
def client(mlflow_tracking):
    return get_client()


@pytest.fixture()
def versions(client, tmp_path) -> list[int]:
    """v1 zero-shot (gate failed), v2 linear (passed), v3 fine-tuned (passed), v4 fine-tuned (failed)."""
    return register_versions(client, tmp_path / "model_src", [
        ("zero_shot_embedding", "false"), ("linear", "true"), ("fine_tuned", "true"), ("fine_tuned", "false"),
    ])


def production_of(client) -> int | None:
    value = client.get_registered_model(DEFAULT_MODEL_NAME).aliases.get(PRODUCTION)
    return int(value) if value is not None else None


def test_tracking_uri_reads_env_else_sqlite_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert registry.tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.team:5000")
    assert registry.tracking_uri() == "http://mlflow.team:5000"
    assert get_client().tracking_uri == "http://mlflow.team:5000"


def test_promote_from_staging_records_who_when_from_to_reason(client, versions):
    move_alias(client, STAGING, 2, reason="best macro_f1", who="evaluation-bot", via="evaluation")
    before = datetime.now(UTC) - timedelta(seconds=2)

    move = promote(client, who="alice", reason="weekly release")

    assert production_of(client) == 2
    assert (move.alias, move.action, move.from_version, move.to_version) == (PRODUCTION, "promote", None, 2)
    assert (move.who, move.reason, move.via) == ("alice", "weekly release", "cli")
    assert before <= datetime.fromisoformat(move.when) <= datetime.now(UTC) + timedelta(seconds=2)
    history = alias_history(client, DEFAULT_MODEL_NAME)
    assert [(m.number, m.alias, m.who, m.via) for m in history] == [
        (1, STAGING, "evaluation-bot", "evaluation"), (2, PRODUCTION, "alice", "cli"),
    ]
    model = client.get_registered_model(DEFAULT_MODEL_NAME)
    assert model.tags["alias_moves.count"] == "2"
    assert json.loads(model.tags["alias_move.000002"])["to"] == 2
    # The version the alias moved to carries the same record, so its page in the MLflow UI shows it.
    assert client.get_model_version(DEFAULT_MODEL_NAME, "2").tags["alias_move.000002"] == \
        model.tags["alias_move.000002"]


def test_promote_without_reason_from_alias_says_where_it_came_from(client, versions):
    move_alias(client, STAGING, 3, reason=None, via="evaluation")
    move = promote(client)
    assert move.to_version == 3
    assert move.reason == "promoted from 'staging'"
    assert move.who  # the OS user by default


def test_promote_refuses_a_version_whose_gate_failed(client, versions):
    with pytest.raises(PromotionRefused,
                       match=r"version 4 .*did not pass.*gate_passed=false.*--force --reason"):
        promote(client, version=4)
    assert production_of(client) is None
    assert alias_history(client, DEFAULT_MODEL_NAME) == []


def test_promote_refuses_a_version_with_no_gate_result(client, versions, tmp_path):
    (ungated,) = register_versions(client, tmp_path / "model_src", [("linear", None)])
    with pytest.raises(PromotionRefused, match="gate_passed=missing"):
        promote(client, version=ungated)


def test_force_needs_a_reason_and_then_promotes_a_failed_version(client, versions):
    with pytest.raises(PromotionRefused, match="--force needs a non-empty --reason"):
        promote(client, version=4, force=True, reason="   ")
    assert production_of(client) is None

    move = promote(client, version=4, force=True, reason="hotfix: only model with the new label", who="bob")

    assert production_of(client) == 4
    assert move.action == "force_promote"
    assert alias_history(client, DEFAULT_MODEL_NAME)[-1].reason == "hotfix: only model with the new label"


def test_promote_errors_are_clear(client, versions):
    with pytest.raises(PromotionRefused, match="no version of 'intent-classifier' holds the alias 'staging'"):
        promote(client)
    with pytest.raises(RegistryError, match="version 99 of 'intent-classifier' does not exist"):
        promote(client, version=99)
    promote(client, version=2)
    with pytest.raises(PromotionRefused, match="already holds 'production'"):
        promote(client, version=2)
    with pytest.raises(RegistryError, match="no registered model named 'other-model'"):
        promote(client, version=1, name="other-model")


def test_rollback_walks_back_through_previous_production_versions(client, versions):
    promote(client, version=2)
    promote(client, version=3)
    promote(client, version=4, force=True, reason="try it")

    first = rollback(client, reason="latency regression", who="carol")
    assert (first.from_version, first.to_version, first.action, first.reason) == (4, 3, "rollback",
                                                                                  "latency regression")
    second = rollback(client)
    assert (second.from_version, second.to_version) == (3, 2)
    assert second.reason == "default target: the previous production version"
    assert production_of(client) == 2
    # Both versions involved in a move carry its record.
    key = f"alias_move.{second.number:06d}"
    assert key in client.get_model_version(DEFAULT_MODEL_NAME, "3").tags
    assert key in client.get_model_version(DEFAULT_MODEL_NAME, "2").tags
    # Rolling back again does not bounce to the versions just rolled away from: with no earlier production
    # version left, the zero-shot version is the target that always exists.
    third = rollback(client)
    assert (third.from_version, third.to_version) == (2, 1)
    assert "fell back to the zero-shot version" in third.reason
    with pytest.raises(RollbackImpossible, match="nothing to roll back to.*use --to N"):
        rollback(client)


def test_first_rollback_on_a_fresh_project_goes_to_zero_shot(client, versions):
    move_alias(client, STAGING, 2, reason="champion", via="evaluation")
    promote(client)
    status = registry_status(client, DEFAULT_MODEL_NAME)
    assert status["rollback_target"] == 1
    assert "zero-shot" in status["rollback_target_reason"]
    assert rollback(client).to_version == 1


def test_rollback_after_a_new_promote_goes_to_the_last_good_version(client, versions):
    promote(client, version=2)
    promote(client, version=3)
    rollback(client)  # 3 -> 2
    promote(client, version=4, force=True, reason="second try")
    assert previous_production_version(client, DEFAULT_MODEL_NAME) == 2
    assert rollback(client).to_version == 2


def test_rollback_skips_deleted_versions(client, versions):
    promote(client, version=2)
    promote(client, version=3)
    promote(client, version=4, force=True, reason="x")
    client.delete_model_version(DEFAULT_MODEL_NAME, "3")
    assert rollback(client).to_version == 2


def test_rollback_to_a_version_number(client, versions):
    promote(client, version=3)
    move = rollback(client, to="2", reason="pin the linear baseline")
    assert (move.from_version, move.to_version) == (3, 2)
    with pytest.raises(RegistryError, match="version 42 .*does not exist"):
        rollback(client, to=42)
    with pytest.raises(RollbackImpossible, match="version number or 'zero-shot', got 'latest'"):
        rollback(client, to="latest")
    with pytest.raises(RollbackImpossible, match="already holds"):
        rollback(client, to=2)


def test_rollback_to_zero_shot_picks_the_newest_zero_shot_version(client, versions, tmp_path):
    (newer_zero_shot,) = register_versions(client, tmp_path / "model_src", [("zero_shot_nli", "false")])
    promote(client, version=3)

    move = rollback(client, to="zero-shot")

    assert move.to_version == newer_zero_shot == 5
    assert int(find_zero_shot_version(client, DEFAULT_MODEL_NAME).version) == 5


def test_rollback_to_zero_shot_without_one_is_a_clear_error(client, tmp_path):
    register_versions(client, tmp_path / "model_src", [("linear", "true")])
    with pytest.raises(RollbackImpossible,
                       match="no version of 'intent-classifier' has a kind starting with"):
        rollback(client, to="zero-shot")
    promote(client, version=1)
    with pytest.raises(RollbackImpossible, match="nothing to roll back to"):
        rollback(client)


def test_alias_moved_with_mlflowclient_shows_as_outside_the_cli(client, versions):
    promote(client, version=2)
    client.set_registered_model_alias(DEFAULT_MODEL_NAME, PRODUCTION, "3")  # as the MLflow UI would

    outside = alias_history(client, DEFAULT_MODEL_NAME)[-1]
    assert (outside.outside_cli, outside.recorded) == (True, False)
    assert (outside.alias, outside.from_version, outside.to_version, outside.who) == (PRODUCTION, 2, 3, None)
    status = registry_status(client, DEFAULT_MODEL_NAME)
    assert [(m["alias"], m["from_version"], m["to_version"]) for m in status["outside_moves"]] == [
        (PRODUCTION, 2, 3)]
    # The default rollback undoes the hand-made move.
    assert status["rollback_target"] == 2


def test_next_recorded_move_writes_the_outside_move_into_the_log_first(client, versions):
    promote(client, version=2)
    client.set_registered_model_alias(DEFAULT_MODEL_NAME, PRODUCTION, "3")

    move = rollback(client)

    assert (move.from_version, move.to_version) == (3, 2)
    history = alias_history(client, DEFAULT_MODEL_NAME)
    assert [(m.number, m.action, m.from_version, m.to_version, m.via, m.recorded) for m in history] == [
        (1, "promote", None, 2, "cli", True),
        (2, "outside", 2, 3, "outside_cli", True),
        (3, "rollback", 3, 2, "cli", True),
    ]
    assert registry_status(client, DEFAULT_MODEL_NAME)["outside_moves"] == []


def test_alias_set_by_hand_and_never_recorded_and_alias_deleted_by_hand(client, versions):
    client.set_registered_model_alias(DEFAULT_MODEL_NAME, "canary", "4")
    promote(client, version=2)
    client.delete_registered_model_alias(DEFAULT_MODEL_NAME, PRODUCTION)

    outside = {m.alias: m for m in alias_history(client, DEFAULT_MODEL_NAME) if not m.recorded}
    assert (outside["canary"].from_version, outside["canary"].to_version) == (None, 4)
    assert (outside[PRODUCTION].from_version, outside[PRODUCTION].to_version) == (2, None)


def test_reason_is_bounded_so_tags_stay_under_mlflow_limits(client, versions):
    move = promote(client, version=2, reason="x" * 50_000)
    assert len(move.reason) == MAX_REASON_CHARS
    stored = client.get_registered_model(DEFAULT_MODEL_NAME).tags[f"alias_move.{move.number:06d}"]
    assert len(stored) < 5000  # also fits registries on older schemas (5000-char tag columns)


def test_move_alias_rejects_an_unknown_via(client, versions):
    with pytest.raises(ValueError, match="via must be one of"):
        move_alias(client, STAGING, 2, reason=None, via="ui")


def test_registry_status_lists_versions_aliases_and_history(client, versions):
    move_alias(client, STAGING, 3, reason="champion", via="evaluation")
    promote(client, who="dave")

    status = registry_status(client, DEFAULT_MODEL_NAME)

    assert status["registered"] is True
    assert status["aliases"] == {PRODUCTION: 3, STAGING: 3}
    by_number = {v["version"]: v for v in status["versions"]}
    assert sorted(by_number) == [1, 2, 3, 4]
    assert by_number[3]["aliases"] == [PRODUCTION, STAGING]
    assert (by_number[1]["kind"], by_number[1]["gate_passed"]) == ("zero_shot_embedding", "false")
    assert by_number[2]["accuracy"] == pytest.approx(0.91)
    assert by_number[2]["macro_f1"] == pytest.approx(0.89)
    assert datetime.fromisoformat(by_number[2]["created"]).tzinfo is not None
    assert [(m["alias"], m["who"]) for m in status["history"]] == [(STAGING, registry.current_user()),
                                                                   (PRODUCTION, "dave")]
    json.dumps(status)  # `status --json` must be able to print it


def test_registry_status_of_a_fresh_registry(client):
    status = registry_status(client, DEFAULT_MODEL_NAME)
    assert (status["registered"], status["versions"], status["history"]) == (False, [], [])


def _move(alias, action, from_version, to_version) -> AliasMove:
    return AliasMove(number=0, alias=alias, action=action, from_version=from_version, to_version=to_version,
                     who="x", when=None, reason=None, via="cli")


def test_production_lineage_pushes_promotes_and_pops_rollbacks():
    history = [
        _move(STAGING, "set", None, 7),  # other aliases do not count
        _move(PRODUCTION, "promote", None, 1),
        _move(PRODUCTION, "promote", 1, 2),
        _move(PRODUCTION, "promote", 2, 3),
        _move(PRODUCTION, "rollback", 3, 1),  # drops 2 and 3
        _move(PRODUCTION, "promote", 1, 4),
        _move(PRODUCTION, "rollback", 4, 9),  # to a version never in production (zero-shot): replaces 4
    ]
    assert production_lineage(history) == [1, 9]
