"""A real uvicorn process under concurrent clients while `production` moves twice: no request fails."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from serving_helpers import linear_classifier, wait_for

CLIENTS = 4
QUERIES = [
    "quanto pago di IVA su 1200 euro?",
    "ciao",
    "cos'è il regime forfettario?",
    "calcola il 22% di 500",
]


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def server(registry, tmp_path, tiny_examples):
    """uvicorn serving `production` of the test registry (version 1), polling every 0.2 s."""
    first = registry.register(linear_classifier(tiny_examples))
    registry.promote(first)
    port = free_loopback_port()
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": registry.uri,
        "INTENT_POLL_INTERVAL_S": "0.2",
        "LABELING_STORE_URL": f"sqlite:///{tmp_path / 'labeling.db'}",
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    env.pop("HF_INTENT_MODEL", None)
    log = (tmp_path / "uvicorn.log").open("wb")
    process = subprocess.Popen(
        # The product's own command (`intent-pipeline serve`), so the CLI path is what gets measured/tested.
        [sys.executable, "-m", "intent_pipeline", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--log-level", "warning"],
        cwd=tmp_path,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"

    def is_ready() -> bool:
        if process.poll() is not None:
            pytest.fail(f"uvicorn exited with {process.returncode}:\n{Path(log.name).read_text()[-3000:]}")
        try:
            return httpx.get(f"{base_url}/ready", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(is_ready, timeout_s=90, what="uvicorn to serve version 1")
        yield base_url, first
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def test_alias_moves_under_load_switch_versions_without_a_failed_request(server, registry, tiny_examples):
    base_url, first = server
    second = registry.register(linear_classifier(tiny_examples, drop_label="chitchat"))
    third = registry.register(linear_classifier(tiny_examples, drop_label="calculator"))
    stop = threading.Event()
    seen: list[list[str]] = [[] for _ in range(CLIENTS)]
    failures: list[str] = []

    def client_loop(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            n = 0
            while not stop.is_set():
                body = {"text": QUERIES[n % len(QUERIES)]} if n % 3 else {"texts": QUERIES}
                n += 1
                try:
                    response = client.post("/v1/classify", json=body)
                except httpx.HTTPError as error:
                    failures.append(f"client {index}: {type(error).__name__}: {error}")
                    continue
                if response.status_code != 200:
                    failures.append(f"client {index}: {response.status_code} {response.text[:200]}")
                    continue
                payload = response.json()
                versions = {p["model"]["version"] for p in payload.get("predictions", [payload])}
                if len(versions) != 1:
                    failures.append(f"client {index}: one batch answered by versions {versions}")
                seen[index].append(versions.pop())
                stop.wait(0.005)  # a shared machine: pressure, not a flood

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: all(seen), what="every client to get an answer")
        for version in (second, third):
            registry.promote(version)
            wait_for(
                lambda v=version: all(s and s[-1] == v for s in seen),
                what=f"all clients on version {version}",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert failures == []
    order = {first: 0, second: 1, third: 2}
    for versions in seen:
        ranks = [order[v] for v in versions]
        assert ranks == sorted(ranks), "a client went back to an older version"
        assert ranks[0] == 0 and ranks[-1] == 2
    with httpx.Client(base_url=base_url) as client:
        info = client.get("/v1/model").json()
        metrics = client.get("/metrics").text
    assert (info["version"], info["reload_successes"], info["reload_failures"]) == (third, 3, 0)
    assert 'intent_model_reloads_total{outcome="success"} 3.0' in metrics
    assert 'intent_http_requests_total{method="POST",route="/v1/classify",status="200"}' in metrics
