"""Labeling test fixtures: a SQLite-file store, a seeded queue, a client of an app with the labeling API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from labeling_helpers import make_app, seed

from intent_pipeline.labeling.store import LabelingStore


@pytest.fixture()
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'labeling.db'}"


@pytest.fixture()
def store(store_url: str) -> Iterator[LabelingStore]:
    labeling_store = LabelingStore(store_url)
    yield labeling_store
    labeling_store.close()


@pytest.fixture()
def seeded(store: LabelingStore) -> dict[str, int]:
    return seed(store)


@pytest.fixture()
def client(store: LabelingStore) -> TestClient:
    return TestClient(make_app(store))
