"""Serving fixtures: app settings on a tiny model, and a cheap isolated MLflow registry.

Each registry is a copy of the session's migrated empty MLflow database (migrated_mlflow_db).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from serving_helpers import ADMIN_TOKEN, EXPERT_TOKEN, Registry


@pytest.fixture()
def make_settings(tmp_path) -> Callable[..., Any]:
    """ServingSettings with a labeling store in tmp_path and known tokens; keyword overrides."""
    from intent_pipeline.serving.settings import ServingSettings

    def build(**overrides: Any) -> ServingSettings:
        values: dict[str, Any] = {
            "labeling_store_url": f"sqlite:///{tmp_path / 'labeling.db'}",
            "admin_token": ADMIN_TOKEN,
            "expert_token": EXPERT_TOKEN,
            "poll_interval_s": 0.2,
            "acceleration": "none",  # the ONNX path has its own tests; exporting in every test is slow
        }
        values.update(overrides)
        return ServingSettings(**values)

    return build


@pytest.fixture()
def registry(tmp_path, monkeypatch, migrated_mlflow_db) -> Iterator[Registry]:
    """A fresh registry (MLFLOW_TRACKING_URI set, cwd in tmp_path); mlflow's global URIs reset after."""
    import mlflow

    root = tmp_path / "registry"
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    registry = Registry(uri=uri, root=root)
    registry.create(migrated_mlflow_db)
    yield registry
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture()
def late_registry(
    tmp_path, monkeypatch, migrated_mlflow_db
) -> Iterator[tuple[Registry, Path, Callable[[], None]]]:
    """(registry, served_uri_dir, connect): the served path cannot be opened until `connect()` is called.

    The served folder is a symlink to a plain file (so neither sqlite nor MLflow's mkdir can open it); the
    registry is built beside it, and `connect()` swings the symlink onto it in one atomic rename.
    """
    import os

    import mlflow

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("the registry is not here yet")
    served = tmp_path / "registry"
    served.symlink_to(blocker)
    registry = Registry(
        uri=f"sqlite:///{tmp_path / 'real-registry' / 'mlflow.db'}", root=tmp_path / "real-registry"
    )
    monkeypatch.chdir(tmp_path)

    def connect() -> None:
        link = tmp_path / "registry.new"
        link.symlink_to(registry.root, target_is_directory=True)
        os.replace(link, served)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{served / 'mlflow.db'}")
    yield registry, migrated_mlflow_db, connect
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
