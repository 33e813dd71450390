"""The MLflow pyfunc model shared by every classifier kind: log it, register it, load it back.

The artifact ``classifier`` is the directory written by ``IntentClassifier.save``, so the server and the
evaluation load the raw classifier from it (``load_classifier_from_mlflow``) and ``mlflow.pyfunc`` /
``mlflow models serve`` load the same files through ``IntentClassifierModel``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.models.model import ModelInfo

from intent_pipeline.classifier import MANIFEST_FILE, IntentClassifier, load_classifier

logger = logging.getLogger(__name__)

CLASSIFIER_ARTIFACT = "classifier"
TEXT_COLUMN = "text"
OUTPUT_COLUMNS = ["intent", "confidence", "ranking"]
# What the pyfunc needs at inference, pinned to the versions it was logged with. torchvision is never needed.
REQUIRED_DISTRIBUTIONS = ("mlflow", "torch", "transformers", "scikit-learn", "numpy", "pandas", "joblib")
# Where the pyfunc reads the device when served by `mlflow models serve` ("auto", "cpu" or "cuda").
DEVICE_ENV = "INTENT_CLASSIFIER_DEVICE"
_DEFAULT_EXAMPLE = ["quanto pago di IVA su una fattura da 1200 euro?"]


def pinned_requirements() -> list[str]:
    """``name==version`` for each inference dependency, from the installed versions (local tags dropped)."""
    requirements = []
    for name in REQUIRED_DISTRIBUTIONS:
        version = importlib_metadata.version(name)
        # "2.13.0+cpu" names a wheel of the PyTorch index, which pip on PyPI cannot resolve.
        requirements.append(f"{name}=={version.split('+', 1)[0]}")
    return requirements


def _texts_from_input(model_input: Any) -> list[str]:
    """Accept a DataFrame with a ``text`` column, a list of str, a Series or one str; return the texts."""
    if isinstance(model_input, pd.DataFrame):
        if TEXT_COLUMN in model_input.columns:
            values = model_input[TEXT_COLUMN].tolist()
        elif len(model_input.columns) == 1:  # a list[str] arrives as a one-column frame
            values = model_input.iloc[:, 0].tolist()
        else:
            raise ValueError(
                f"input DataFrame needs a {TEXT_COLUMN!r} column, got {list(model_input.columns)}"
            )
    elif isinstance(model_input, pd.Series):
        values = model_input.tolist()
    elif isinstance(model_input, str):
        values = [model_input]
    elif isinstance(model_input, dict) and TEXT_COLUMN in model_input:
        column = model_input[TEXT_COLUMN]
        values = [column] if isinstance(column, str) else list(column)
    elif isinstance(model_input, Sequence):
        values = list(model_input)
    else:
        raise TypeError(f"input must be a DataFrame with a {TEXT_COLUMN!r} column or a list of str, "
                        f"got {type(model_input).__name__}")
    for index, value in enumerate(values):
        if not isinstance(value, str):
            raise TypeError(f"text at row {index} must be a str, got {type(value).__name__}: {value!r}")
    return values


def predictions_frame(classifier: IntentClassifier, texts: Sequence[str]) -> pd.DataFrame:
    """One row per text: intent, confidence and the full ranking as a JSON string."""
    predictions = classifier.predict(list(texts))
    return pd.DataFrame(
        {
            "intent": [p["intent"] for p in predictions],
            "confidence": [p["confidence"] for p in predictions],
            "ranking": [json.dumps(p["ranking"], ensure_ascii=False) for p in predictions],
        },
        columns=OUTPUT_COLUMNS,
    )


class IntentClassifierModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: loads the saved classifier from the ``classifier`` artifact and predicts with it."""

    def __init__(self) -> None:
        self.classifier: IntentClassifier | None = None

    def load_context(self, context: Any) -> None:
        self.classifier = load_classifier(context.artifacts[CLASSIFIER_ARTIFACT],
                                          device=os.environ.get(DEVICE_ENV, "cpu"))

    # A DataFrame hint is one MLflow derives no schema from: the signature logged with the model applies.
    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        if self.classifier is None:
            raise RuntimeError("IntentClassifierModel.predict called before load_context")
        return predictions_frame(self.classifier, _texts_from_input(model_input))


def _example_frame(classifier: IntentClassifier, input_example: Any) -> pd.DataFrame:
    texts = _DEFAULT_EXAMPLE if input_example is None else _texts_from_input(input_example)
    if not texts:
        raise ValueError("input_example must hold at least one text")
    return pd.DataFrame({TEXT_COLUMN: texts})


def _package_code_copy(destination: Path) -> Path:
    """Copy the ``intent_pipeline`` package (without caches) so the logged model imports it anywhere."""
    package = Path(__file__).resolve().parent
    target = destination / package.name
    shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "static"))
    return target


def log_classifier(classifier: IntentClassifier, *, name: str = "model",
                   registered_model_name: str | None = None, tags: dict[str, Any] | None = None,
                   input_example: Any = None) -> ModelInfo:
    """Log ``classifier`` as a pyfunc model in the active run; register a tagged version when named.

    The input schema is one unnamed string column, so both ``DataFrame({"text": [...]})`` and a plain
    ``list[str]`` pass MLflow's schema check (a named ``text`` column would refuse the list).
    """
    if mlflow.active_run() is None:
        logger.warning("log_classifier: no active MLflow run; the model is logged without one")
    example = _example_frame(classifier, input_example)
    signature = infer_signature(example[TEXT_COLUMN].tolist(),
                                predictions_frame(classifier, example[TEXT_COLUMN].tolist()))
    with tempfile.TemporaryDirectory(prefix="intent-classifier-") as temporary:
        temporary_dir = Path(temporary)
        classifier_dir = classifier.save(temporary_dir / CLASSIFIER_ARTIFACT)
        code_dir = _package_code_copy(temporary_dir / "code")
        info = mlflow.pyfunc.log_model(
            name=name,
            python_model=IntentClassifierModel(),
            artifacts={CLASSIFIER_ARTIFACT: str(classifier_dir)},
            code_paths=[str(code_dir)],
            pip_requirements=pinned_requirements(),
            signature=signature,
            input_example=example,
            registered_model_name=registered_model_name,
            metadata={"intent_classifier_kind": classifier.kind, "labels": classifier.labels},
        )
    version = info.registered_model_version
    if registered_model_name and version is not None:
        client = mlflow.MlflowClient()
        for key, value in (tags or {}).items():
            client.set_model_version_tag(registered_model_name, str(version), key, str(value))
        logger.info("Registered %s version %s (%s) with tags %s", registered_model_name, version,
                    classifier.kind, sorted(tags or {}))
    elif tags:
        logger.warning("log_classifier: tags %s ignored: no registered_model_name was given", sorted(tags))
    return info


def load_classifier_from_mlflow(model_uri: str, *, device: str = "cpu") -> IntentClassifier:
    """Download a logged model (models:/name@alias, models:/name/3, runs:/...) and load its raw classifier."""
    with tempfile.TemporaryDirectory(prefix="intent-classifier-download-", ignore_cleanup_errors=True) as tmp:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        except MlflowException as error:
            raise FileNotFoundError(
                f"MLflow model {model_uri!r} could not be downloaded: {error.message}"
            ) from error
        except OSError as error:
            raise FileNotFoundError(f"MLflow model {model_uri!r} could not be downloaded: {error}") from error
        mlmodel = local / "MLmodel"
        if not mlmodel.exists():
            raise FileNotFoundError(f"MLflow model {model_uri!r} has no MLmodel file (downloaded to {local})")
        try:
            flavor = Model.load(str(mlmodel)).flavors["python_function"]
            relative = flavor["artifacts"][CLASSIFIER_ARTIFACT]["path"]
        except (KeyError, TypeError, MlflowException) as error:
            raise ValueError(
                f"MLflow model {model_uri!r} is not an intent classifier: its MLmodel has no pyfunc artifact "
                f"{CLASSIFIER_ARTIFACT!r} ({error})"
            ) from error
        classifier_dir = local / relative
        if not (classifier_dir / MANIFEST_FILE).exists():
            raise FileNotFoundError(f"MLflow model {model_uri!r}: {relative}/{MANIFEST_FILE} is missing")
        try:
            # Everything is read into memory here (safetensors weights are copied or mapped; on POSIX a
            # mapping outlives the file), so the download can be removed afterwards.
            return load_classifier(classifier_dir, device=device)
        except (OSError, ValueError) as error:
            raise ValueError(f"MLflow model {model_uri!r}: the classifier in {relative} could not be loaded: "
                             f"{error}") from error
