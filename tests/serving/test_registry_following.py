"""The server follows the `production` alias: swaps, survives a corrupt version, waits for the registry."""

from __future__ import annotations

from fastapi.testclient import TestClient
from serving_helpers import ADMIN_TOKEN, linear_classifier, wait_for

from intent_pipeline.serving.app import create_app

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def serving_version(client: TestClient) -> str | None:
    return client.post("/v1/classify", json={"text": "quanto pago di IVA su 1200 euro?"}).json()["model"][
        "version"
    ]


def test_follows_the_alias_and_keeps_serving_when_the_new_version_is_corrupt(
    registry, make_settings, tiny_examples
):
    first = registry.register(linear_classifier(tiny_examples), tags={"low_confidence_threshold": "0.9"})
    registry.promote(first)
    settings = make_settings(tracking_uri=registry.uri)
    with TestClient(create_app(settings)) as client:
        info = client.get("/v1/model").json()
        assert (info["ready"], info["version"], info["alias"], info["kind"]) == (
            True,
            first,
            "production",
            "linear",
        )
        assert info["low_confidence_threshold"] == 0.9  # from the version's tag

        broken = registry.register(linear_classifier(tiny_examples))
        registry.corrupt(broken)
        registry.promote(broken)
        info = wait_for(
            lambda: (i := client.get("/v1/model").json())["last_error"] and i,
            what="the corrupt version to be reported",
        )
        assert f"version {broken} of intent-classifier failed" in info["last_error"]
        assert f"still serving version {first}" in info["last_error"]
        assert info["version"] == first and info["reload_failures"] == 1
        assert serving_version(client) == first
        assert client.get("/ready").status_code == 200
        metrics = client.get("/metrics").text
        assert 'intent_model_reloads_total{outcome="failure"} 1.0' in metrics
        assert f"intent_model_version {float(first)}" in metrics

        # A forced reload retries the bad version, fails again, and says so with a 502.
        retry = client.post("/v1/admin/reload", headers=ADMIN)
        assert retry.status_code == 502 and retry.json()["outcome"] == "failed"
        assert serving_version(client) == first

        fixed = registry.register(linear_classifier(tiny_examples, drop_label="chitchat"))
        registry.promote(fixed)
        wait_for(lambda: serving_version(client) == fixed, what=f"version {fixed} to serve")
        info = client.get("/v1/model").json()
        assert info["last_error"] is None
        assert info["low_confidence_threshold"] == 0.5  # no tag on this version: the default


def test_reload_answers_at_once_without_waiting_for_the_poll(registry, make_settings, tiny_examples):
    first = registry.register(linear_classifier(tiny_examples))
    registry.promote(first)
    with TestClient(create_app(make_settings(tracking_uri=registry.uri, poll_interval_s=3600))) as client:
        assert serving_version(client) == first
        unchanged = client.post("/v1/admin/reload", headers=ADMIN).json()
        assert unchanged == {"outcome": "unchanged", "version": first, "error": None}
        registry.client().set_model_version_tag("intent-classifier", first, "low_confidence_threshold", "0.8")
        client.post("/v1/admin/reload", headers=ADMIN)
        assert client.get("/v1/model").json()["low_confidence_threshold"] == 0.8  # re-tagged, not reloaded
        second = registry.register(linear_classifier(tiny_examples))
        registry.promote(second)
        swapped = client.post("/v1/admin/reload", headers=ADMIN).json()
        assert swapped == {"outcome": "swapped", "version": second, "error": None}
        assert serving_version(client) == second


def test_unreachable_registry_then_missing_alias_then_ready_by_itself(
    late_registry, make_settings, tiny_examples
):
    import os

    registry, empty_db, connect = late_registry
    served_uri = os.environ["MLFLOW_TRACKING_URI"]
    with TestClient(create_app(make_settings(tracking_uri=served_uri))) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert f"registry {served_uri} unreachable" in ready.json()["reason"]
        assert client.post("/v1/classify", json={"text": "ciao"}).status_code == 503

        registry.create(empty_db)  # built beside the served path, with a version but no production alias
        version = registry.register(linear_classifier(tiny_examples))
        connect()
        reason = wait_for(
            lambda: "holds the alias" in (r := client.get("/ready").json().get("reason", "")) and r,
            what="the missing alias to be reported",
        )
        assert "no version of 'intent-classifier' holds the alias 'production'" in reason

        registry.promote(version)
        wait_for(lambda: client.get("/ready").status_code == 200, what="the server to become ready")
        assert serving_version(client) == version
        assert client.get("/v1/model").json()["last_error"] is None


def test_auto_acceleration_serves_int8_only_for_a_version_whose_int8_copy_passed_evaluation(
    registry, make_settings, tiny_bert_dir
):
    from intent_pipeline.classifier import load_classifier

    bert = load_classifier(tiny_bert_dir)
    passed = registry.register(bert, tags={"serving_acceleration": "onnx-int8"})
    registry.promote(passed)
    with TestClient(create_app(make_settings(tracking_uri=registry.uri, acceleration="auto"))) as client:
        assert client.get("/v1/model").json()["acceleration"] == "onnx-int8"
        not_judged = registry.register(bert)
        registry.promote(not_judged)
        wait_for(lambda: serving_version(client) == not_judged, what=f"version {not_judged} to serve")
        assert client.get("/v1/model").json()["acceleration"] == "onnx"
