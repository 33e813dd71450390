"""Helpers of the serving tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

MODEL_NAME = "intent-classifier"
ADMIN_TOKEN = "admin-secret-for-tests"
EXPERT_TOKEN = "expert-secret-for-tests"


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.05)


def linear_classifier(examples: list[dict], *, drop_label: str | None = None) -> Any:
    """A TF-IDF + logistic regression LinearClassifier on `examples` (cheap to train, log and load)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from intent_pipeline.classifier import LinearClassifier

    rows = [row for row in examples if row["label"] != drop_label]
    labels = list(dict.fromkeys(row["label"] for row in examples))
    pipeline = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), LogisticRegression(max_iter=500)
    )
    pipeline.fit([row["text"] for row in rows], [row["label"] for row in rows])
    return LinearClassifier(pipeline, labels)


@dataclass
class Registry:
    """An isolated MLflow registry in a test's tmp_path, with the few moves the serving tests need."""

    uri: str
    root: Path
    experiment_id: str | None = None

    def client(self) -> Any:
        from intent_pipeline.registry import get_client

        return get_client(self.uri)

    def create(self, empty_db: Path) -> None:
        """Copy the empty database in and make this test's experiment (artifacts under root/mlruns)."""
        import mlflow

        self.root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_db, self.root / "mlflow.db")
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.experiment_id = self.client().create_experiment(
            "serving-tests", artifact_location=(self.root / "mlruns").as_uri()
        )

    def register(self, classifier: Any, tags: dict[str, str] | None = None, name: str = MODEL_NAME) -> str:
        """Log `classifier` in a run and register it; return the new version number."""
        import mlflow

        from intent_pipeline.model_logging import log_classifier

        with mlflow.start_run(experiment_id=self.experiment_id):
            info = log_classifier(classifier, registered_model_name=name, tags=tags)
        assert info.registered_model_version is not None
        return str(info.registered_model_version)

    def promote(self, version: str, alias: str = "production", name: str = MODEL_NAME) -> None:
        self.client().set_registered_model_alias(name, alias, version)

    def corrupt(self, version: str, name: str = MODEL_NAME) -> None:
        """Overwrite every model file of `version` with garbage, as a bad disk or a broken upload would."""
        client = self.client()
        model_version = client.get_model_version(name, version)
        model_id = getattr(model_version, "model_id", None) or model_version.source.removeprefix("models:/")
        location = Path(client.get_logged_model(model_id).artifact_location.removeprefix("file://"))
        damaged = [path for path in location.rglob("*.joblib")] + list(location.rglob("*.safetensors"))
        assert damaged, f"no model files under {location}"
        for path in damaged:
            path.write_bytes(b"not a model")
