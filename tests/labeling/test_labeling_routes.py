"""The labeling API: auth matrix of every route, queue, decisions (422/404/409), export, the guide's curl."""

from __future__ import annotations

import csv
import io
import json
import re
import shutil
import subprocess
import threading

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from labeling_helpers import ADMIN_TOKEN, EXPERT_TOKEN, LABELS, SEED_QUERIES, bearer, live_server, make_app
from pydantic import SecretStr

from intent_pipeline.labeling.export import EXPORT_FIELDS
from intent_pipeline.labeling.routes import create_labeling_router

EXPORT_URL = "/api/v1/labeling/export?format=jsonl"


def _call(client: TestClient, route: str, item_id: int, headers: dict[str, str]) -> httpx.Response:
    if route == "queue":
        return client.get("/api/v1/labeling/queue", headers=headers)
    if route == "items":
        return client.post(f"/api/v1/labeling/items/{item_id}", json={"label": "calculator"}, headers=headers)
    return client.get(EXPORT_URL, headers=headers)


# (route, credentials, expected status): every route x no token / wrong / bad scheme / admin / expert
AUTH_MATRIX = [
    (route, who, expected)
    for route, expert_ok in (("queue", True), ("items", True), ("export", False))
    for who, expected in (("none", 401), ("wrong", 403), ("basic", 401), ("admin", 200),
                          ("expert", 200 if expert_ok else 403))
]
CREDENTIALS = {"none": {}, "wrong": bearer("not-the-token"),
               "basic": {"Authorization": "Basic " + ADMIN_TOKEN},
               "admin": bearer(ADMIN_TOKEN), "expert": bearer(EXPERT_TOKEN)}


@pytest.mark.parametrize(("route", "who", "expected"), AUTH_MATRIX)
def test_auth_matrix(client, seeded, route, who, expected):
    response = _call(client, route, seeded[SEED_QUERIES[0][0]], CREDENTIALS[who])
    assert response.status_code == expected, response.text
    if expected == 401:
        assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("route", ["queue", "items", "export"])
def test_a_route_without_its_token_configured_answers_503_naming_the_variable(store, seeded, route):
    client = TestClient(make_app(store, expert_token=None, admin_token=None))
    response = _call(client, route, seeded[SEED_QUERIES[0][0]], bearer("anything"))
    assert response.status_code == 503
    assert ("INTENT_ADMIN_TOKEN" if route == "export" else "INTENT_EXPERT_TOKEN") in response.json()["detail"]


def test_admin_only_server_refuses_export_without_admin_token_and_blank_tokens_are_unset(store, seeded):
    client = TestClient(make_app(store, expert_token=SecretStr(EXPERT_TOKEN), admin_token=SecretStr("  ")))
    assert client.get("/api/v1/labeling/queue", headers=bearer(EXPERT_TOKEN)).status_code == 200
    response = client.get(EXPORT_URL, headers={"Authorization": "Bearer   "})
    assert response.status_code == 503 and "INTENT_ADMIN_TOKEN" in response.json()["detail"]


def test_queue_pages_and_orders(client, seeded):
    headers = bearer(EXPERT_TOKEN)
    by_frequency = client.get("/api/v1/labeling/queue?order=frequency&limit=2&offset=1",
                              headers=headers).json()
    expected = [q[0] for q in sorted(SEED_QUERIES, key=lambda q: -q[3])][1:3]
    assert [item["text"] for item in by_frequency["items"]] == expected
    assert (by_frequency["total"], by_frequency["limit"], by_frequency["offset"]) == (len(SEED_QUERIES), 2, 1)
    assert by_frequency["labels"] == LABELS
    by_confidence = client.get("/api/v1/labeling/queue", headers=headers).json()
    confidences = [item["confidence"] for item in by_confidence["items"]]
    assert confidences == sorted(confidences)
    first = by_confidence["items"][0]
    assert set(first) >= {"id", "text", "predicted_intent", "confidence", "ranking", "count", "last_seen"}
    for bad in ("order=random", "limit=0", "limit=100000", "offset=-1"):
        assert client.get(f"/api/v1/labeling/queue?{bad}", headers=headers).status_code == 422


def test_label_and_skip_through_the_api(client, store, seeded):
    labeled_id, skipped_id = seeded[SEED_QUERIES[0][0]], seeded[SEED_QUERIES[1][0]]
    response = client.post(f"/api/v1/labeling/items/{labeled_id}",
                           json={"label": "calculator", "labeled_by": "dott.ssa Rossi"},
                           headers=bearer(EXPERT_TOKEN))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["label"], response.json()["labeled_by"]) == (
        "labeled", "calculator", "dott.ssa Rossi")
    response = client.post(f"/api/v1/labeling/items/{skipped_id}", json={"skip": True},
                           headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["labeled_by"]) == ("skipped", "admin")
    pending = client.get("/api/v1/labeling/queue", headers=bearer(EXPERT_TOKEN)).json()
    assert {item["id"] for item in pending["items"]} == set(seeded.values()) - {labeled_id, skipped_id}
    assert store.get_item(labeled_id)["label"] == "calculator"


def test_labeled_by_defaults_to_the_token_role(client, seeded):
    response = client.post(f"/api/v1/labeling/items/{seeded[SEED_QUERIES[0][0]]}", json={"label": "chitchat"},
                           headers=bearer(EXPERT_TOKEN))
    assert response.json()["labeled_by"] == "expert"


def test_a_label_outside_the_set_is_422_naming_it_and_the_allowed_set(client, store, seeded):
    item_id = seeded[SEED_QUERIES[0][0]]
    response = client.post(f"/api/v1/labeling/items/{item_id}", json={"label": "weather"},
                           headers=bearer(EXPERT_TOKEN))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail["label"] == "weather" and detail["allowed"] == LABELS
    assert "weather" in detail["message"] and all(label in detail["message"] for label in LABELS)
    assert store.get_item(item_id)["status"] == "pending"


@pytest.mark.parametrize("body", [{}, {"label": "calculator", "skip": True}, {"skip": False},
                                  {"label": "calculator", "colour": "red"}, {"label": ""}])
def test_malformed_decisions_are_422(client, seeded, body):
    response = client.post(f"/api/v1/labeling/items/{seeded[SEED_QUERIES[0][0]]}", json=body,
                           headers=bearer(EXPERT_TOKEN))
    assert response.status_code == 422


def test_unknown_item_is_404_and_a_decided_item_is_409_with_its_label(client, seeded):
    headers = bearer(EXPERT_TOKEN)
    missing = client.post("/api/v1/labeling/items/424242", json={"label": "chitchat"}, headers=headers)
    assert missing.status_code == 404
    item_id = seeded[SEED_QUERIES[0][0]]
    client.post(f"/api/v1/labeling/items/{item_id}", json={"label": "calculator", "labeled_by": "anna"},
                headers=headers)
    response = client.post(f"/api/v1/labeling/items/{item_id}", json={"label": "chitchat"}, headers=headers)
    assert response.status_code == 409
    detail = response.json()["detail"]
    assert (detail["label"], detail["labeled_by"], detail["status"]) == ("calculator", "anna", "labeled")
    assert "calculator" in detail["message"]


def test_no_label_set_yet_refuses_labels_but_still_shows_the_queue(store, seeded):
    def no_model():
        raise RuntimeError("no model loaded")

    app = FastAPI()
    app.include_router(create_labeling_router(store, no_model, EXPERT_TOKEN, ADMIN_TOKEN))
    client = TestClient(app)
    queue = client.get("/api/v1/labeling/queue", headers=bearer(EXPERT_TOKEN))
    assert queue.status_code == 200 and queue.json()["labels"] == []
    response = client.post(f"/api/v1/labeling/items/{seeded[SEED_QUERIES[0][0]]}", json={"label": "chitchat"},
                           headers=bearer(EXPERT_TOKEN))
    assert response.status_code == 503


def _label_two(client, seeded) -> list[tuple[str, str]]:
    chosen = [(SEED_QUERIES[0][0], "calculator"), (SEED_QUERIES[2][0], "chitchat")]
    for text, label in chosen:
        client.post(f"/api/v1/labeling/items/{seeded[text]}", json={"label": label, "labeled_by": "anna"},
                    headers=bearer(EXPERT_TOKEN))
    client.post(f"/api/v1/labeling/items/{seeded[SEED_QUERIES[1][0]]}", json={"skip": True},
                headers=bearer(EXPERT_TOKEN))
    return chosen


def test_export_jsonl_follows_the_contract(client, seeded):
    chosen = _label_two(client, seeded)
    response = client.get(EXPORT_URL, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    assert 'filename="intent_training_data.jsonl"' in response.headers["content-disposition"]
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [(row["text"], row["label"]) for row in rows] == chosen  # skipped and pending items are left out
    for row in rows:
        assert list(row) == list(EXPORT_FIELDS)
        assert row["source"] == "labeling" and row["labeled_by"] == "anna" and row["label"] in LABELS
        assert isinstance(row["id"], int) and row["labeled_at"].endswith("+00:00")
    predicted = {q[0]: (q[1], q[2]) for q in SEED_QUERIES}
    assert [(row["predicted_label"], row["confidence"]) for row in rows] == [predicted[t] for t, _ in chosen]


def test_export_csv_has_the_same_rows(client, seeded):
    chosen = _label_two(client, seeded)
    response = client.get("/api/v1/labeling/export?format=csv", headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(row["text"], row["label"], row["source"]) for row in rows] == [
        (text, label, "labeling") for text, label in chosen]
    assert list(rows[0]) == list(EXPORT_FIELDS)
    assert client.get("/api/v1/labeling/export?format=xml", headers=bearer(ADMIN_TOKEN)).status_code == 422


def test_export_of_nothing_labeled_is_empty(client, seeded):
    assert client.get(EXPORT_URL, headers=bearer(ADMIN_TOKEN)).text == ""
    header_only = client.get("/api/v1/labeling/export?format=csv", headers=bearer(ADMIN_TOKEN)).text
    assert header_only.strip() == ",".join(EXPORT_FIELDS)


def test_two_experts_posting_at_once_get_one_200_and_one_409_over_http(store, seeded):
    """Real concurrent HTTP requests (uvicorn, threads) against a SQLite file: one label wins, everywhere."""
    with live_server(make_app(store)) as base_url:
        for item_id in seeded.values():
            barrier = threading.Barrier(2)
            results: dict[str, httpx.Response] = {}

            def post(label: str, item_id: int = item_id, barrier: threading.Barrier = barrier,
                     results: dict[str, httpx.Response] = results) -> None:
                with httpx.Client(base_url=base_url, timeout=30) as http:
                    barrier.wait()
                    results[label] = http.post(f"/api/v1/labeling/items/{item_id}", json={"label": label},
                                               headers=bearer(EXPERT_TOKEN))

            threads = [threading.Thread(target=post, args=(label,)) for label in ("calculator", "chitchat")]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            codes = sorted(r.status_code for r in results.values())
            assert codes == [200, 409], {k: r.text for k, r in results.items()}
            winner = next(label for label, r in results.items() if r.status_code == 200)
            loser = next(r for r in results.values() if r.status_code == 409)
            assert loser.json()["detail"]["label"] == winner
            assert store.get_item(item_id)["label"] == winner


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_guides_curl_command_works_as_written(store, seeded, tmp_path):
    chosen = [(SEED_QUERIES[0][0], "calculator")]
    store.label_item(seeded[chosen[0][0]], "calculator", "anna")
    with live_server(make_app(store)) as base_url:
        # The guide's Step 1, with only the host:port of this test server substituted.
        command = ('curl -sS -H "Authorization: Bearer $TOKEN" '
                   f'"{base_url}/api/v1/labeling/export?format=jsonl" -o intent_training_data.jsonl')
        subprocess.run(["bash", "-c", command], cwd=tmp_path, check=True, timeout=60,
                       env={"TOKEN": ADMIN_TOKEN, "PATH": "/usr/bin:/bin"})
    lines = (tmp_path / "intent_training_data.jsonl").read_text(encoding="utf-8").splitlines()
    assert [(json.loads(line)["text"], json.loads(line)["label"]) for line in lines] == chosen


def test_the_page_is_served_with_its_script_and_no_inline_code(client):
    page = client.get("/expert/labeling")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Esporta Dati" in page.text and 'lang="it"' in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    script = client.get("/expert/labeling/labeling.js")
    assert script.status_code == 200 and "sessionStorage" in script.text
    assert not re.search(r"\.(innerHTML|outerHTML)\s*=|insertAdjacentHTML|document\.write", script.text)
    assert client.get("/expert/labeling/labeling.css").status_code == 200
