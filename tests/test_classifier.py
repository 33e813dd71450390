"""IntentClassifier: predictions, save/load round trips, auto-detection and model sources, for every kind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from intent_pipeline.classifier import (
    MANIFEST_FILE,
    MDEBERTA_HUB_ID,
    PACKAGED_MINILM,
    EnsembleClassifier,
    FineTunedClassifier,
    LinearClassifier,
    ZeroShotEmbeddingClassifier,
    ZeroShotNLIClassifier,
    detect_kind,
    load_classifier,
    resolve_device,
    resolve_model_source,
)

TINY_LABELS = ["chitchat", "calculator", "theoretical_definition"]  # as in tests/conftest.py
DESCRIPTIONS = {
    "chitchat": "saluti, ringraziamenti e conversazione informale",
    "calculator": "calcolo di imposte, contributi o importi",
    "theoretical_definition": "definizione o spiegazione di un concetto fiscale",
}
QUERIES = ["ciao", "calcola l'IVA su 1200 euro", "cos'è il regime forfettario?",
           "una domanda molto più lunga delle altre per vedere che il padding non cambia niente " * 3]


def _tiny_bert(directory: Path, tokenizer_source: str, id2label: dict[int, str] | None) -> Path:
    """Save a random 2-layer BERT sequence classifier (labels from id2label, else LABEL_0..2)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source)
    label_kwargs = ({"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label
                    else {"num_labels": 3})
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                        **label_kwargs)
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def tiny_nli_dir(tmp_path_factory, packaged_minilm_path) -> Path:
    """A random tiny BERT whose labels are entailment/neutral/contradiction (what NLI models declare)."""
    return _tiny_bert(tmp_path_factory.mktemp("tiny_nli"), packaged_minilm_path,
                      {0: "entailment", 1: "neutral", 2: "contradiction"})


@pytest.fixture(scope="module")
def linear_pipeline():
    """TF-IDF + logistic regression fitted on a few rows per TINY_LABELS class."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = {"chitchat": ["ciao", "buongiorno", "grazie mille", "salve a tutti"],
            "calculator": ["calcola l'IRPEF", "quanto pago di IVA", "calcola il 22%", "calcola INPS"],
            "theoretical_definition": ["cos'è il forfettario", "definizione di reddito", "cos'è l'IRAP",
                                       "che significa imponibile"]}
    texts = [text for texts in rows.values() for text in texts]
    labels = [label for label, texts in rows.items() for _ in texts]
    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)),
                         LogisticRegression(max_iter=500)).fit(texts, labels)


@pytest.fixture(scope="module")
def minilm_embedding(packaged_minilm_path) -> ZeroShotEmbeddingClassifier:
    return ZeroShotEmbeddingClassifier.from_pretrained(PACKAGED_MINILM, TINY_LABELS, DESCRIPTIONS,
                                                       temperature=0.1, metadata={"base_model": "minilm"})


def _build(kind: str, tiny_bert_dir: Path, tiny_nli_dir: Path, linear_pipeline, minilm_embedding):
    if kind == "fine_tuned":
        return FineTunedClassifier.from_pretrained(tiny_bert_dir, max_length=16,
                                                   metadata={"data_version": "v1"})
    if kind == "linear":
        # labels in another order than the pipeline's sorted classes_
        return LinearClassifier(linear_pipeline, TINY_LABELS, DESCRIPTIONS, metadata={"data_version": "v1"})
    if kind == "zero_shot_embedding":
        return minilm_embedding
    if kind == "zero_shot_nli":
        return ZeroShotNLIClassifier.from_pretrained(tiny_nli_dir, TINY_LABELS, DESCRIPTIONS,
                                                     hypothesis_template="si parla di {}")
    if kind == "ensemble":
        return EnsembleClassifier([FineTunedClassifier.from_pretrained(tiny_bert_dir),
                                   LinearClassifier(linear_pipeline, list(reversed(TINY_LABELS)))],
                                  [0.3, 0.7], metadata={"candidate_name": "ens"})
    raise AssertionError(kind)


ALL_KINDS = ["fine_tuned", "linear", "zero_shot_embedding", "zero_shot_nli", "ensemble"]


@pytest.fixture()
def build(tiny_bert_dir, tiny_nli_dir, linear_pipeline, minilm_embedding):
    return lambda kind: _build(kind, tiny_bert_dir, tiny_nli_dir, linear_pipeline, minilm_embedding)


# ------------------------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_predict_returns_probabilities_and_ranking_best_first(kind, build):
    classifier = build(kind)
    probabilities = classifier.predict_proba(QUERIES)
    assert probabilities.shape == (len(QUERIES), len(TINY_LABELS))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)

    predictions = classifier.predict(QUERIES)
    assert len(predictions) == len(QUERIES)
    for row, prediction in zip(probabilities, predictions, strict=True):
        scores = [entry["score"] for entry in prediction["ranking"]]
        assert scores == sorted(scores, reverse=True)
        assert sorted(entry["intent"] for entry in prediction["ranking"]) == sorted(TINY_LABELS)
        assert prediction["intent"] == TINY_LABELS[int(np.argmax(row))]
        assert prediction["confidence"] == pytest.approx(row.max())
        assert prediction["ranking"][0] == {"intent": prediction["intent"], "score": prediction["confidence"]}

    top_two = classifier.predict(QUERIES[:2], top_k=2)
    assert [len(p["ranking"]) for p in top_two] == [2, 2]
    for short, full in zip(top_two, predictions[:2], strict=False):
        # a different batch pads differently, so scores may move in the last digits
        assert [e["intent"] for e in short["ranking"]] == [e["intent"] for e in full["ranking"][:2]]
        expected_scores = [e["score"] for e in full["ranking"][:2]]
        assert [e["score"] for e in short["ranking"]] == pytest.approx(expected_scores, abs=1e-5)


def test_predict_edge_inputs(linear_pipeline):
    classifier = LinearClassifier(linear_pipeline, TINY_LABELS)
    assert len(classifier.predict("ciao")) == 1  # a bare string is one text, not a list of characters
    assert classifier.predict_proba([]).shape == (0, 3)
    assert len(classifier.predict(["ciao"], top_k=99)[0]["ranking"]) == 3
    with pytest.raises(ValueError, match="top_k"):
        classifier.predict(["ciao"], top_k=0)
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        classifier.predict_proba(["ciao", 3])


def test_linear_columns_follow_labels_not_classes_order(linear_pipeline):
    labels = ["theoretical_definition", "extra_label", "chitchat", "calculator"]
    classifier = LinearClassifier(linear_pipeline, labels)
    raw = linear_pipeline.predict_proba(QUERIES)
    classes = list(linear_pipeline.classes_)
    probabilities = classifier.predict_proba(QUERIES)
    for column, label in enumerate(labels):
        expected = raw[:, classes.index(label)] if label in classes else np.zeros(len(QUERIES))
        np.testing.assert_array_equal(probabilities[:, column], expected)

    with pytest.raises(ValueError, match="not in labels"):
        LinearClassifier(linear_pipeline, ["chitchat", "calculator"])


def test_fine_tuned_matches_plain_transformers_and_batch_order(tiny_bert_dir):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    classifier = FineTunedClassifier.from_pretrained(tiny_bert_dir, max_length=12)
    assert classifier.labels == TINY_LABELS
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    for text in QUERIES:  # one at a time: no padding, truncation to 12 tokens for the long one
        encoded = tokenizer([text], truncation=True, max_length=12, return_tensors="pt")
        with torch.inference_mode():
            expected = model(**encoded).logits.double().softmax(-1).numpy()
        np.testing.assert_allclose(classifier.predict_proba([text]), expected, rtol=1e-6, atol=1e-7)

    # Batches are length-sorted internally; rows must come back in input order.
    singles = np.vstack([classifier.predict_proba([text]) for text in QUERIES])
    np.testing.assert_allclose(classifier.predict_proba(QUERIES[::-1]), singles[::-1], atol=1e-5)
    classifier.batch_size = 2
    np.testing.assert_allclose(classifier.predict_proba(QUERIES), singles, atol=1e-5)


def test_concurrent_predictions_from_threads_match_sequential_ones(tiny_bert_dir):
    from concurrent.futures import ThreadPoolExecutor

    classifier = FineTunedClassifier.from_pretrained(tiny_bert_dir, max_length=12)
    texts = QUERIES * 10
    sequential = [classifier.predict_proba([text]) for text in texts]
    # Server threads share one classifier (and its tokenizer and model).
    with ThreadPoolExecutor(max_workers=4) as pool:
        concurrent = list(pool.map(lambda text: classifier.predict_proba([text]), texts))
    for expected, got in zip(sequential, concurrent, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-6)


def test_ensemble_is_the_weighted_average_of_its_members(tiny_bert_dir, linear_pipeline):
    fine_tuned = FineTunedClassifier.from_pretrained(tiny_bert_dir)
    linear = LinearClassifier(linear_pipeline, list(reversed(TINY_LABELS)))
    ensemble = EnsembleClassifier([fine_tuned, linear], [1.0, 3.0])
    assert ensemble.labels == TINY_LABELS
    expected = 0.25 * fine_tuned.predict_proba(QUERIES) + 0.75 * linear.predict_proba(QUERIES)[:, ::-1]
    np.testing.assert_allclose(ensemble.predict_proba(QUERIES), expected)

    with pytest.raises(ValueError, match="labels"):
        EnsembleClassifier([fine_tuned, LinearClassifier(linear_pipeline, [*TINY_LABELS, "other"])])
    with pytest.raises(ValueError, match="weights"):
        EnsembleClassifier([fine_tuned, linear], [1.0])


def test_zero_shot_embedding_prefers_the_matching_description(minilm_embedding):
    descriptions = {"weather": "the weather forecast, rain and sunshine",
                    "cooking": "recipes and cooking food"}
    classifier = ZeroShotEmbeddingClassifier(minilm_embedding.model, minilm_embedding.tokenizer,
                                             list(descriptions), descriptions)
    assert [p["intent"] for p in classifier.predict(["will it rain tomorrow?", "how do I bake bread?"])] == [
        "weather", "cooking"]


# ---------------------------------------------------------------------------------------- save and load


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_save_and_load_round_trip_gives_identical_probabilities(kind, build, tmp_path):
    classifier = build(kind)
    directory = classifier.save(tmp_path / kind)
    manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    assert (manifest["kind"], manifest["labels"]) == (kind, classifier.labels)
    assert manifest["metadata"] == classifier.metadata

    loaded = load_classifier(directory)
    assert type(loaded) is type(classifier)
    assert (loaded.kind, loaded.labels, loaded.descriptions, loaded.metadata) == (
        classifier.kind, classifier.labels, classifier.descriptions, classifier.metadata)
    np.testing.assert_allclose(loaded.predict_proba(QUERIES), classifier.predict_proba(QUERIES),
                               rtol=0, atol=1e-12)
    assert detect_kind(directory) == kind


def test_kind_settings_survive_the_round_trip(build, tmp_path):
    fine_tuned = load_classifier(build("fine_tuned").save(tmp_path / "ft"))
    assert fine_tuned.max_length == 16
    embedding = load_classifier(build("zero_shot_embedding").save(tmp_path / "emb"))
    assert embedding.temperature == 0.1
    nli = load_classifier(build("zero_shot_nli").save(tmp_path / "nli"))
    assert nli.hypothesis_template == "si parla di {}"
    ensemble = load_classifier(build("ensemble").save(tmp_path / "ens"))
    assert [m.kind for m in ensemble.members] == ["fine_tuned", "linear"]
    assert ensemble.weights == pytest.approx([0.3, 0.7])


def test_zero_shot_categories_can_change_at_load(minilm_embedding, tmp_path):
    directory = minilm_embedding.save(tmp_path / "emb")
    changed = load_classifier(directory, descriptions={"a": "saluti", "b": "calcoli"})
    assert changed.labels == ["a", "b"]
    assert changed.predict_proba(["ciao"]).shape == (1, 2)


def test_saved_fine_tuned_directory_is_a_plain_hugging_face_model(build, tmp_path):
    from transformers import AutoConfig

    directory = build("fine_tuned").save(tmp_path / "ft")
    config = AutoConfig.from_pretrained(directory)
    assert [config.id2label[i] for i in range(3)] == TINY_LABELS
    (directory / MANIFEST_FILE).unlink()  # the guide's HF_INTENT_MODEL=<dir> has no manifest
    assert load_classifier(directory).labels == TINY_LABELS


def test_load_classifier_refuses_a_kind_or_labels_that_contradict_the_manifest(build, tmp_path):
    directory = build("linear").save(tmp_path / "linear")
    with pytest.raises(ValueError, match="'linear' classifier, not 'fine_tuned'"):
        load_classifier(directory, kind="fine_tuned")
    with pytest.raises(ValueError, match="cannot answer"):
        load_classifier(directory, labels=["x", "y"])
    with pytest.raises(ValueError, match="kind must be one of"):
        load_classifier(directory, kind="magic")


def test_a_broken_manifest_is_named_with_its_line(build, tmp_path):
    directory = build("linear").save(tmp_path / "linear")
    (directory / MANIFEST_FILE).write_text('{\n  "kind": "linear",\n  oops\n}', encoding="utf-8")
    with pytest.raises(ValueError, match=rf"{MANIFEST_FILE}: invalid JSON at line 3"):
        load_classifier(directory)
    (directory / MANIFEST_FILE).write_text(json.dumps({"kind": "magic", "labels": ["a"]}), encoding="utf-8")
    with pytest.raises(ValueError, match="field 'kind' must be one of"):
        load_classifier(directory)


def test_corrupt_weights_and_missing_files_name_the_directory(build, tmp_path):
    fine_tuned_dir = build("fine_tuned").save(tmp_path / "ft")
    (fine_tuned_dir / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match=str(fine_tuned_dir)):
        load_classifier(fine_tuned_dir)

    linear_dir = build("linear").save(tmp_path / "linear")
    (linear_dir / "linear_pipeline.joblib").unlink()
    with pytest.raises(FileNotFoundError, match="linear_pipeline.joblib"):
        load_classifier(linear_dir)


# ------------------------------------------------------------------------------ detection and sources


def test_detect_kind_from_hugging_face_configs(tiny_bert_dir, tiny_nli_dir, packaged_minilm_path):
    assert detect_kind(tiny_bert_dir) == "fine_tuned"
    assert detect_kind(tiny_nli_dir) == "zero_shot_nli"
    assert detect_kind(packaged_minilm_path) == "zero_shot_embedding"  # BertModel, sentence-transformers dir
    assert detect_kind(PACKAGED_MINILM) == "zero_shot_embedding"


def test_load_classifier_auto_detects_each_hugging_face_kind(tiny_bert_dir, tiny_nli_dir):
    fine_tuned = load_classifier(str(tiny_bert_dir))
    assert isinstance(fine_tuned, FineTunedClassifier) and fine_tuned.labels == TINY_LABELS

    nli = load_classifier(tiny_nli_dir, descriptions=DESCRIPTIONS)
    assert isinstance(nli, ZeroShotNLIClassifier) and nli.labels == TINY_LABELS
    assert nli.hypothesis_template == "questa domanda riguarda {}"

    embedding = load_classifier(PACKAGED_MINILM, labels=["chitchat", "calculator"])
    assert isinstance(embedding, ZeroShotEmbeddingClassifier)
    assert embedding.description_of("calculator") == "calculator"  # no description: the label's name


def test_zero_shot_model_without_labels_asks_for_them(tiny_nli_dir):
    with pytest.raises(ValueError, match="pass labels"):
        load_classifier(PACKAGED_MINILM)
    with pytest.raises(ValueError, match="pass labels"):
        load_classifier(tiny_nli_dir)


def test_classification_head_with_generic_labels_needs_names(tmp_path, packaged_minilm_path):
    directory = _tiny_bert(tmp_path / "generic", packaged_minilm_path, None)
    assert detect_kind(directory) == "fine_tuned"
    with pytest.raises(ValueError, match="no intent names"):
        load_classifier(directory)
    assert load_classifier(directory, labels=TINY_LABELS).labels == TINY_LABELS


def test_resolve_model_source(packaged_minilm_path):
    assert resolve_model_source(PACKAGED_MINILM) == packaged_minilm_path
    assert resolve_model_source("mdeberta") == MDEBERTA_HUB_ID
    assert resolve_model_source("someone/some-model") == "someone/some-model"
    assert resolve_model_source(Path("/x/y")) == "/x/y"
    with pytest.raises(ValueError, match="not_an_installed_package"):
        resolve_model_source("package:not_an_installed_package")


def test_missing_path_error_names_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        load_classifier(missing)
    with pytest.raises(FileNotFoundError, match=str(missing)):
        detect_kind(str(missing))


def test_hub_id_not_cached_offline_says_so(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=rf"{MDEBERTA_HUB_ID}.*not available offline"):
        load_classifier("mdeberta")


def test_device_choices():
    import torch

    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")
