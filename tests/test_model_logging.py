"""The pyfunc model: every kind logs, registers with tags and loads back with the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from intent_pipeline.classifier import (
    MANIFEST_FILE,
    PACKAGED_MINILM,
    EnsembleClassifier,
    FineTunedClassifier,
    LinearClassifier,
    ZeroShotEmbeddingClassifier,
    ZeroShotNLIClassifier,
)
from intent_pipeline.model_logging import (
    load_classifier_from_mlflow,
    log_classifier,
    pinned_requirements,
    predictions_frame,
)

TINY_LABELS = ["chitchat", "calculator", "theoretical_definition"]  # as in tests/conftest.py
DESCRIPTIONS = {"chitchat": "saluti e conversazione", "calculator": "calcolo di imposte",
                "theoretical_definition": "definizione di un concetto fiscale"}
QUERIES = ["ciao", "calcola l'IVA su 1200 euro", "cos'è il regime forfettario?"]
MODEL_NAME = "intent-classifier"


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory, packaged_minilm_path) -> Path:
    """A random tiny BERT with NLI labels, the stand-in for mDeBERTa."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(2)
    directory = tmp_path_factory.mktemp("tiny_nli")
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path)
    id2label = {0: "entailment", 1: "neutral", 2: "contradiction"}
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        id2label=id2label, label2id={v: k for k, v in id2label.items()})
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def linear_pipeline():
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    texts = ["ciao", "buongiorno", "calcola l'IRPEF", "quanto pago di IVA", "cos'è l'IRAP",
             "definizione di reddito"]
    labels = ["chitchat", "chitchat", "calculator", "calculator", "theoretical_definition",
              "theoretical_definition"]
    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)),
                         LogisticRegression(max_iter=500)).fit(texts, labels)


def _build(kind, tiny_bert_dir, tiny_nli_dir, linear_pipeline):
    if kind == "fine_tuned":
        return FineTunedClassifier.from_pretrained(tiny_bert_dir)
    if kind == "linear":
        return LinearClassifier(linear_pipeline, TINY_LABELS, DESCRIPTIONS)
    if kind == "zero_shot_embedding":
        return ZeroShotEmbeddingClassifier.from_pretrained(PACKAGED_MINILM, TINY_LABELS, DESCRIPTIONS)
    if kind == "zero_shot_nli":
        return ZeroShotNLIClassifier.from_pretrained(tiny_nli_dir, TINY_LABELS, DESCRIPTIONS)
    if kind == "ensemble":
        return EnsembleClassifier([FineTunedClassifier.from_pretrained(tiny_bert_dir),
                                   LinearClassifier(linear_pipeline, TINY_LABELS)], [0.4, 0.6])
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli", "ensemble"])
def test_pyfunc_round_trip_gives_the_in_memory_predictions(kind, mlflow_tracking, tiny_bert_dir, tiny_nli_dir,
                                                           linear_pipeline):
    import mlflow

    classifier = _build(kind, tiny_bert_dir, tiny_nli_dir, linear_pipeline)
    expected = predictions_frame(classifier, QUERIES)
    with mlflow.start_run():
        info = log_classifier(classifier, input_example=QUERIES[:1])
    assert info.registered_model_version is None

    pyfunc = mlflow.pyfunc.load_model(info.model_uri)
    from_frame = pyfunc.predict(pd.DataFrame({"text": QUERIES}))
    from_list = pyfunc.predict(QUERIES)
    for got in (from_frame, from_list):
        assert list(got.columns) == ["intent", "confidence", "ranking"]
        assert got["intent"].tolist() == expected["intent"].tolist()
        np.testing.assert_allclose(got["confidence"], expected["confidence"], atol=1e-12)
        for got_ranking, expected_ranking in zip(got["ranking"], expected["ranking"], strict=True):
            got_ranking, expected_ranking = json.loads(got_ranking), json.loads(expected_ranking)
            assert [e["intent"] for e in got_ranking] == [e["intent"] for e in expected_ranking]
            assert [e["score"] for e in got_ranking] == pytest.approx([e["score"] for e in expected_ranking],
                                                                      abs=1e-12)

    raw = load_classifier_from_mlflow(info.model_uri)
    assert (raw.kind, raw.labels) == (kind, classifier.labels)
    np.testing.assert_allclose(raw.predict_proba(QUERIES), classifier.predict_proba(QUERIES), atol=1e-12)


def test_logged_model_carries_pinned_requirements_and_its_code(mlflow_tracking, linear_pipeline, tmp_path):
    import mlflow

    requirements = pinned_requirements()
    names = [line.split("==")[0] for line in requirements]
    assert names == ["mlflow", "torch", "transformers", "scikit-learn", "numpy", "pandas", "joblib"]
    assert all("+" not in line for line in requirements)  # e.g. torch 2.13.0+cpu is pinned as 2.13.0

    with mlflow.start_run() as run:
        info = log_classifier(LinearClassifier(linear_pipeline, TINY_LABELS))
    assert load_classifier_from_mlflow(f"runs:/{run.info.run_id}/model").labels == TINY_LABELS
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=str(tmp_path)))
    assert (local / "requirements.txt").read_text().split() == requirements
    # `mlflow models serve` imports intent_pipeline from the model's own code copy.
    assert (local / "code" / "intent_pipeline" / "classifier.py").exists()
    assert (local / "code" / "intent_pipeline" / "model_logging.py").exists()
    assert not list((local / "code").rglob("__pycache__"))


def test_registration_sets_the_version_tags(mlflow_tracking, linear_pipeline):
    import mlflow

    classifier = LinearClassifier(linear_pipeline, TINY_LABELS)
    tags = {"kind": "linear", "data_version": "d41d8cd9", "git_commit": "abc123", "params_hash": 42}
    with mlflow.start_run():
        first = log_classifier(classifier, registered_model_name=MODEL_NAME, tags=tags)
        second = log_classifier(classifier, registered_model_name=MODEL_NAME, tags={"kind": "linear"})
    assert (str(first.registered_model_version), str(second.registered_model_version)) == ("1", "2")

    client = mlflow.MlflowClient()
    assert client.get_model_version(MODEL_NAME, "1").tags == {key: str(value) for key, value in tags.items()}
    assert client.get_model_version(MODEL_NAME, "2").tags == {"kind": "linear"}
    client.set_registered_model_alias(MODEL_NAME, "production", "1")
    loaded = load_classifier_from_mlflow(f"models:/{MODEL_NAME}@production")
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), classifier.predict_proba(QUERIES))
    assert load_classifier_from_mlflow(f"models:/{MODEL_NAME}/2").labels == TINY_LABELS


def test_missing_uri_is_a_clear_error(mlflow_tracking, linear_pipeline):
    import mlflow

    with mlflow.start_run():
        log_classifier(LinearClassifier(linear_pipeline, TINY_LABELS), registered_model_name=MODEL_NAME)
    with pytest.raises(FileNotFoundError, match=rf"models:/{MODEL_NAME}/9"):
        load_classifier_from_mlflow(f"models:/{MODEL_NAME}/9")
    with pytest.raises(FileNotFoundError, match="models:/nobody@production"):
        load_classifier_from_mlflow("models:/nobody@production")


def test_a_model_that_is_not_an_intent_classifier_is_refused(mlflow_tracking):
    import mlflow

    class Echo(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
            return model_input

    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="echo", python_model=Echo())
    with pytest.raises(ValueError, match="not an intent classifier"):
        load_classifier_from_mlflow(info.model_uri)


def test_corrupt_classifier_files_name_the_uri(mlflow_tracking, linear_pipeline):
    import mlflow
    from mlflow.utils.file_utils import local_file_uri_to_path

    with mlflow.start_run():
        info = log_classifier(LinearClassifier(linear_pipeline, TINY_LABELS),
                              registered_model_name=MODEL_NAME)
    stored = Path(local_file_uri_to_path(mlflow.get_logged_model(info.model_id).artifact_location))
    (stored / "artifacts" / "classifier" / MANIFEST_FILE).write_text("{broken", encoding="utf-8")
    with pytest.raises(ValueError, match=rf"models:/{MODEL_NAME}/1.*invalid JSON at line 1"):
        load_classifier_from_mlflow(f"models:/{MODEL_NAME}/1")
