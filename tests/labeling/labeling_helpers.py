"""Labeling test helpers: capture records, seeding, an app with only the labeling routers, a live server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import uvicorn
from fastapi import FastAPI

from intent_pipeline.labeling.capture import CaptureRecord
from intent_pipeline.labeling.routes import create_labeling_page_router, create_labeling_router
from intent_pipeline.labeling.store import LabelingStore

LABELS = ["chitchat", "technical_research", "calculator", "theoretical_definition", "golden_set"]
EXPERT_TOKEN = "expert-secret-token"
ADMIN_TOKEN = "admin-secret-token"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)

# (text, predicted intent, confidence, times asked): confidence order != frequency order on purpose
SEED_QUERIES = [
    ("quanto pago di IMU sulla seconda casa?", "calculator", 0.41, 1),
    ("cos'è il regime forfettario", "theoretical_definition", 0.22, 2),
    ("ciao, come funzioni?", "chitchat", 0.35, 5),
    ("scadenza F24 di giugno", "technical_research", 0.48, 3),
]


def record(text: str, intent: str = "calculator", confidence: float = 0.3, *, at: datetime = T0,
           version: str = "1") -> CaptureRecord:
    """A capture with a ranking shaped like the classifier's output."""
    return CaptureRecord(text=text, predicted_intent=intent, confidence=confidence,
                         ranking=[{"intent": intent, "score": confidence}], model_version=version,
                         captured_at=at)


def seed(store: LabelingStore, queries=SEED_QUERIES) -> dict[str, int]:
    """Capture each query `times` times (one minute apart); return text -> item id."""
    records = [record(text, intent, confidence, at=T0 + timedelta(minutes=i))
               for text, intent, confidence, times in queries for i in range(times)]
    store.record_captures(records)
    page = store.queue(limit=100)
    return {item["text"]: item["id"] for item in page.items}


def make_app(store: LabelingStore, labels: list[str] | None = None, expert_token: str | None = EXPERT_TOKEN,
             admin_token: str | None = ADMIN_TOKEN) -> FastAPI:
    """An app with nothing but the labeling routers (no dependency on serving/app.py)."""
    app = FastAPI()
    router = create_labeling_router(store, lambda: list(labels or LABELS), expert_token, admin_token)
    app.include_router(router)
    app.include_router(create_labeling_page_router())
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """A real uvicorn on a free loopback port (the socket is bound first, so no port race); yields its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
