"""Every route and every validation error through TestClient, on the tiny BERT loaded as HF_INTENT_MODEL."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from serving_helpers import ADMIN_TOKEN, EXPERT_TOKEN, linear_classifier, wait_for

from intent_pipeline.serving.app import create_app
from intent_pipeline.serving.settings import ServingSettings

MAX_TEXT_LENGTH = 40
MAX_BATCH_SIZE = 4


def _settings(store_dir, model_dir, **overrides) -> ServingSettings:
    values = {
        "hf_intent_model": str(model_dir),
        "max_text_length": MAX_TEXT_LENGTH,
        "max_batch_size": MAX_BATCH_SIZE,
        "top_k": 2,
        "admin_token": ADMIN_TOKEN,
        "expert_token": EXPERT_TOKEN,
        "labeling_store_url": f"sqlite:///{store_dir / 'labeling.db'}",
    }
    return ServingSettings(**{**values, **overrides})


@pytest.fixture()
def client(tmp_path, tiny_bert_dir):
    """A fresh app (tests that count metrics)."""
    with TestClient(create_app(_settings(tmp_path, tiny_bert_dir, acceleration="none"))) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def shared_client(tmp_path_factory, tiny_bert_dir):
    """One app for the tests that only look at a response (validation, auth)."""
    settings = _settings(tmp_path_factory.mktemp("serving_app"), tiny_bert_dir)
    with TestClient(create_app(settings)) as test_client:
        yield test_client


def metric_value(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text output (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, sample_labels = sample.partition("{")
        if sample_name == name and ",".join(sorted(sample_labels.rstrip("}").split(","))) == wanted:
            return float(value)
    return 0.0


def test_classify_one_text_returns_ranked_intents_from_the_model(client):
    labels = client.get("/v1/model").json()["labels"]
    response = client.post("/v1/classify", json={"text": "quanto pago di IVA su 1200 euro?"})
    assert response.status_code == 200
    body = response.json()
    assert body["intent"] in labels
    assert len(body["ranking"]) == 2  # top_k
    scores = [item["score"] for item in body["ranking"]]
    assert scores == sorted(scores, reverse=True)
    assert body["ranking"][0] == {"intent": body["intent"], "score": body["confidence"]}
    assert body["low_confidence"] == (body["confidence"] < 0.5)
    assert body["model"] == {
        "name": client.get("/v1/model").json()["name"],
        "version": None,
        "kind": "fine_tuned",
    }


def test_batch_answers_in_order_and_matches_single_queries(shared_client):
    client = shared_client
    texts = ["ciao", "cos'è il regime forfettario?", "calcola il 22% di 500"]
    batch = client.post("/v1/classify", json={"texts": texts}).json()["predictions"]
    singles = [client.post("/v1/classify", json={"text": text}).json() for text in texts]
    assert len(batch) == len(texts)
    for from_batch, single in zip(batch, singles, strict=True):
        assert from_batch["intent"] == single["intent"]
        assert from_batch["confidence"] == pytest.approx(single["confidence"], abs=1e-6)


def test_cache_answers_whitespace_variants_without_the_model(client):
    first = client.post("/v1/classify", json={"text": "grazie mille"}).json()
    again = client.post("/v1/classify", json={"text": "  grazie \n mille "}).json()
    assert again == first
    metrics = client.get("/metrics").text
    assert metric_value(metrics, "intent_prediction_cache_hits_total") == 1
    assert metric_value(metrics, "intent_prediction_cache_misses_total") == 1


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"text": ""}, "body.text: text is empty or only whitespace"),
        ({"text": " \n\t "}, "body.text: text is empty or only whitespace"),
        (
            {"text": "x" * (MAX_TEXT_LENGTH + 1)},
            f"body.text: text too long: String should have at most {MAX_TEXT_LENGTH} characters",
        ),
        ({"texts": ["ok", "y" * (MAX_TEXT_LENGTH + 1)]}, "body.texts.1: text too long: String should have"),
        (
            {"texts": ["a"] * (MAX_BATCH_SIZE + 1)},
            f"body.texts: batch too large: List should have at most {MAX_BATCH_SIZE} items",
        ),
        ({"texts": []}, "body.texts: List should have at least 1 item"),
        ({"texts": ["ok", "  "]}, "body.texts: texts at positions [1] are empty or only whitespace"),
        ({"text": 42}, "body.text: Input should be a valid string"),
        ({"texts": "not a list"}, "body.texts: Input should be a valid list"),
        ({"texts": ["ok", 7]}, "body.texts.1: Input should be a valid string"),
        ({}, "body: give 'text' (one string) or 'texts' (a list of strings)"),
        ({"text": "a", "texts": ["b"]}, "body: give either 'text' or 'texts', not both"),
        ({"txt": "typo"}, "body.txt: Extra inputs are not permitted"),
        (["a list"], "body: Input should be a valid dictionary"),
    ],
)
def test_bad_input_is_a_422_that_says_what_is_wrong(shared_client, body, message):
    response = shared_client.post("/v1/classify", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"]
    assert response.json()["errors"]  # the structured list is kept for programs


def test_invalid_json_and_missing_body_are_422(shared_client):
    client = shared_client
    json_header = {"content-type": "application/json"}
    broken = client.post("/v1/classify", content=b'{"text": "ciao"', headers=json_header)
    assert broken.status_code == 422
    assert broken.json()["detail"].startswith("invalid JSON at character")
    empty = client.post("/v1/classify", content=b"", headers=json_header)
    assert empty.status_code == 422
    assert "the body must be a JSON object" in empty.json()["detail"]


def test_a_long_text_is_not_echoed_back(shared_client):
    client = shared_client
    secret_text = "riservato " * 10
    response = client.post("/v1/classify", json={"text": secret_text})
    assert response.status_code == 422
    assert "riservato" not in response.text


def test_health_ready_and_model_describe_the_loaded_model(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    info = client.get("/v1/model").json()
    assert info["mode"] == "hf"
    assert info["kind"] == "fine_tuned"
    assert info["labels"] == ["chitchat", "calculator", "theoretical_definition"]
    assert info["loaded_at"] and info["last_poll"] and info["last_error"] is None
    assert info["low_confidence_threshold"] == 0.5


def test_metrics_count_requests_predictions_and_the_model(client):
    body = client.post("/v1/classify", json={"texts": ["ciao", "cos'è l'IRAP", "IMU su rendita 800"]}).json()
    client.post("/v1/classify", json={"text": ""})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    classify = {"route": "/v1/classify", "method": "POST"}
    assert metric_value(text, "intent_http_requests_total", **classify, status="200") == 1
    assert metric_value(text, "intent_http_requests_total", **classify, status="422") == 1
    assert metric_value(text, "intent_http_request_duration_seconds_count", route="/v1/classify") == 2
    intents = [p["intent"] for p in body["predictions"]]
    for intent in set(intents):
        assert metric_value(text, "intent_predictions_total", intent=intent) == intents.count(intent)
    assert metric_value(text, "intent_prediction_confidence_count") == 3
    low = sum(p["low_confidence"] for p in body["predictions"])
    assert metric_value(text, "intent_low_confidence_predictions_total") == low
    assert metric_value(text, "intent_model_loaded") == 1
    assert metric_value(text, "intent_model_reloads_total", outcome="success") == 1
    assert metric_value(text, "intent_capture_dropped_total") == 0
    assert re.search(r'intent_model_info\{.*kind="fine_tuned"', text)


def test_unknown_routes_are_counted_under_one_label(client):
    client.get("/no/such/route/123")
    text = client.get("/metrics").text
    unmatched = {"route": "unmatched", "method": "GET", "status": "404"}
    assert metric_value(text, "intent_http_requests_total", **unmatched) == 1
    assert "/no/such/route/123" not in text


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": f"Bearer {EXPERT_TOKEN}"}, 403),
        ({"Authorization": f"Bearer {ADMIN_TOKEN}"}, 200),
    ],
)
def test_reload_needs_the_admin_token(shared_client, headers, status):
    client = shared_client
    response = client.post("/v1/admin/reload", headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 200:
        assert response.json()["outcome"] == "swapped"  # HF_INTENT_MODEL: a reload re-reads the directory


def test_reload_is_refused_when_no_admin_token_is_configured(make_settings, tiny_bert_dir):
    settings = make_settings(hf_intent_model=str(tiny_bert_dir), admin_token=None)
    with TestClient(create_app(settings)) as client:
        response = client.post("/v1/admin/reload", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 403
    assert "INTENT_ADMIN_TOKEN" in response.json()["detail"]


def test_low_confidence_predictions_are_captured_for_labeling(make_settings, tiny_bert_dir):
    from intent_pipeline.labeling.store import LabelingStore

    settings = make_settings(hf_intent_model=str(tiny_bert_dir), default_low_confidence_threshold=1.0)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/classify", json={"texts": ["ciao", "cos'è l'IRAP"]}).json()
        client.post("/v1/classify", json={"text": "ciao"})  # the cache answers; still counted by the store
    assert all(p["low_confidence"] for p in body["predictions"])  # every confidence is < 1.0
    items = {item["text"]: item for item in LabelingStore(settings.labeling_store_url).queue().items}
    assert set(items) == {"ciao", "cos'è l'IRAP"}
    assert items["ciao"]["count"] == 2
    assert items["ciao"]["predicted_intent"] == body["predictions"][0]["intent"]


def test_confident_predictions_are_not_captured(make_settings, tiny_bert_dir):
    from intent_pipeline.labeling.store import LabelingStore

    settings = make_settings(hf_intent_model=str(tiny_bert_dir), default_low_confidence_threshold=0.0)
    with TestClient(create_app(settings)) as client:
        body = client.post("/v1/classify", json={"texts": ["ciao", "cos'è l'IRAP"]}).json()
    assert not any(p["low_confidence"] for p in body["predictions"])
    assert LabelingStore(settings.labeling_store_url).queue().total == 0


def test_a_failing_labeling_store_never_fails_classification(make_settings, tiny_bert_dir, monkeypatch):
    from intent_pipeline.labeling.store import LabelingStore

    def read_only(self, records):
        raise PermissionError("attempt to write a readonly database")

    monkeypatch.setattr(LabelingStore, "record_captures", read_only)
    settings = make_settings(hf_intent_model=str(tiny_bert_dir), default_low_confidence_threshold=1.0)
    with TestClient(create_app(settings)) as client:
        statuses = [client.post("/v1/classify", json={"text": f"domanda {i}"}).status_code for i in range(3)]
        app = client.app

        wait_for(lambda: app.state.capture.failed == 3, timeout_s=10, what="the capture writer to give up")
        text = client.get("/metrics").text
    assert statuses == [200, 200, 200]
    assert metric_value(text, "intent_capture_failed_total") == 3


def test_labeling_routes_are_mounted_with_the_served_labels(shared_client):
    client = shared_client
    page = client.get("/expert/labeling")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert client.get("/api/v1/labeling/queue").status_code == 401


def test_a_missing_model_directory_leaves_the_server_up_and_not_ready(make_settings, tmp_path):
    settings = make_settings(hf_intent_model=str(tmp_path / "no-such-model"))
    with TestClient(create_app(settings)) as client:
        assert client.get("/health").status_code == 200
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert "no-such-model" in ready.json()["reason"]
        classify = client.post("/v1/classify", json={"text": "ciao"})
        assert classify.status_code == 503
        assert "no model loaded" in classify.json()["detail"]
        info = client.get("/v1/model").json()
    assert info["ready"] is False and "no-such-model" in info["last_error"]


def test_mdeberta_offline_says_what_to_do(make_settings, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with TestClient(create_app(make_settings(hf_intent_model="mdeberta"))) as client:
        error = client.get("/v1/model").json()["last_error"]
        assert client.get("/ready").status_code == 503
    assert "not available offline" in error
    assert "rollback --to zero-shot" in error


def test_settings_read_the_documented_environment(monkeypatch):
    monkeypatch.setenv("MODEL_URI", "models:/other-model@staging")
    monkeypatch.setenv("HF_INTENT_MODEL", "")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    monkeypatch.setenv("INTENT_ADMIN_TOKEN", "from-env")
    monkeypatch.setenv("INTENT_EXPERT_TOKEN", "  ")
    monkeypatch.setenv("LABELING_STORE_URL", "sqlite:///captures.db")
    monkeypatch.setenv("INTENT_POLL_INTERVAL_S", "2.5")
    monkeypatch.setenv("INTENT_MAX_BATCH_SIZE", "8")
    settings = ServingSettings()
    assert settings.model_uri == "models:/other-model@staging"
    assert settings.hf_intent_model is None  # blank means unset
    assert settings.tracking_uri == "sqlite:///elsewhere.db"
    assert settings.admin_token is not None and settings.admin_token.get_secret_value() == "from-env"
    assert settings.expert_token is None  # a blank token would let a blank bearer in
    assert settings.labeling_store_url == "sqlite:///captures.db"
    assert (settings.poll_interval_s, settings.max_batch_size) == (2.5, 8)
    assert "from-env" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"poll_intervall_s": 1}, "poll_intervall_s"),
        ({"poll_interval_s": 0}, "poll_interval_s"),
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"model_uri": "intent-classifier@production"}, "model_uri"),
    ],
)
def test_bad_settings_fail_naming_the_field(overrides, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        ServingSettings(**overrides)


@pytest.mark.parametrize(("cpus", "workers", "explicit", "threads"), [
    (2, 1, None, 2),   # a 2-core machine, one worker: both cores
    (8, 1, None, 4),   # more cores than a short query can use: capped
    (8, 3, None, 2),   # workers share the cores
    (2, 4, None, 1),   # never fewer than one
    (8, 1, 1, 1),      # INTENT_INFERENCE_THREADS wins
])
def test_inference_threads_default_to_the_cpus_shared_among_workers(monkeypatch, cpus, workers, explicit,
                                                                    threads):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert ServingSettings(workers=workers, inference_threads=explicit).threads() == threads


def test_serve_tells_every_worker_how_many_workers_share_the_cpus(monkeypatch):
    import os

    import uvicorn

    from intent_pipeline.serving.app import run_server

    started = {}
    monkeypatch.setenv("INTENT_WORKERS", "1")  # restored (unset) after the test; run_server overwrites it
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: started.update(options))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    run_server(workers=3)
    assert started["workers"] == 3 and os.environ["INTENT_WORKERS"] == "3"
    assert ServingSettings().threads() == 2  # what each worker process reads at start


@pytest.fixture(scope="module")
def tiny_bert_classifier(tiny_bert_dir):
    from intent_pipeline.classifier import load_classifier

    return load_classifier(tiny_bert_dir)


@pytest.mark.parametrize(("mode", "tolerance"), [("onnx", 1e-4), ("onnx-int8", 0.05)])
def test_onnx_copy_predicts_what_the_model_predicts(tiny_bert_classifier, mode, tolerance):
    pytest.importorskip("onnxruntime", reason="acceleration needs onnxruntime (a base dependency)")
    from intent_pipeline.serving.acceleration import accelerate

    texts = ["ciao", "quanto pago di IVA su 1200 euro?", "cos'è il regime forfettario? " * 5, "x"]
    fast, used = accelerate(tiny_bert_classifier, mode, threads=1)
    assert used == mode and fast is not tiny_bert_classifier
    assert fast.labels == tiny_bert_classifier.labels and fast.kind == "fine_tuned"
    expected = tiny_bert_classifier.predict_proba(texts)
    assert fast.predict_proba(texts) == pytest.approx(expected, abs=tolerance)
    if mode == "onnx":  # int8 may reorder near-ties of this random head; fp32 must not
        expected_intents = [p["intent"] for p in tiny_bert_classifier.predict(texts)]
        assert [p["intent"] for p in fast.predict(texts)] == expected_intents


def test_the_onnx_copy_tokenizes_like_the_transformers_tokenizer(tiny_bert_classifier):
    pytest.importorskip("onnxruntime", reason="acceleration needs onnxruntime (a base dependency)")
    from intent_pipeline.serving.acceleration import ENCODING_FIELDS, accelerate

    fast, _ = accelerate(tiny_bert_classifier, "onnx", threads=1)
    texts = ["ciao", "", "è à ù", "calcola l'IRPEF su 35.000 euro " * 80]  # padding, empty, accents, truncation
    expected = tiny_bert_classifier.tokenizer(texts, padding=True, truncation=True, max_length=fast.max_length,
                                              return_tensors="np")
    encodings = fast.encoder.encode_batch(texts)
    for name in fast.input_names:
        ours = [getattr(encoding, ENCODING_FIELDS[name]) for encoding in encodings]
        assert ours == expected[name].tolist(), name
    assert len(encodings[-1].ids) == fast.max_length


@pytest.mark.parametrize(("setting", "tags", "mode"), [
    ("auto", {"serving_acceleration": "onnx-int8"}, "onnx-int8"),  # evaluation passed the int8 copy
    ("auto", {"serving_acceleration": "onnx"}, "onnx"),
    ("auto", {}, "onnx"),                                           # never evaluated (or HF_INTENT_MODEL)
    ("auto", {"serving_acceleration": "int4"}, "onnx"),             # unknown value: the safe default
    ("none", {"serving_acceleration": "onnx-int8"}, "none"),        # an explicit setting wins
])
def test_auto_acceleration_follows_the_evaluated_version_tag(setting, tags, mode):
    from intent_pipeline.serving.acceleration import resolve_mode

    assert resolve_mode(setting, tags) == mode


def test_single_texts_run_on_the_event_loop_and_batches_on_the_inference_thread(make_settings):
    import asyncio
    import threading

    from intent_pipeline.serving.holder import ModelHolder

    class ThreadRecorder:
        kind, labels, metadata = "linear", ["a", "b"], {}
        threads: list[str] = []

        def predict(self, texts, top_k=None):
            self.threads.append(threading.current_thread().name)
            return [{"intent": "a", "confidence": 0.9, "ranking": [{"intent": "a", "score": 0.9}]}
                    for _ in texts]

    async def classify_all(holder: ModelHolder) -> str:
        await holder.start(wait_s=10)
        try:
            await holder.classify(["uno"])
            await holder.classify(["due", "tre"])
            await holder.classify(["uno", "quattro"])  # one cached, one new: a single text to predict
        finally:
            await holder.stop()
        return threading.current_thread().name

    recorder = ThreadRecorder()
    warm_up_calls = 1
    holder = ModelHolder(make_settings(hf_intent_model="stub", labeling_enabled=False),
                         direct_loader=lambda source: recorder)
    loop_thread = asyncio.run(classify_all(holder))
    assert recorder.threads[warm_up_calls:][0] == loop_thread
    assert recorder.threads[warm_up_calls:][1].startswith("intent-inference")
    assert recorder.threads[warm_up_calls:][2] == loop_thread

    recorder.threads.clear()
    always_threaded = ModelHolder(make_settings(hf_intent_model="stub", labeling_enabled=False,
                                                inline_max_texts=0), direct_loader=lambda source: recorder)
    asyncio.run(classify_all(always_threaded))
    assert all(name.startswith("intent-inference") for name in recorder.threads[warm_up_calls:])


def test_the_default_server_runs_the_onnx_copy(shared_client):
    pytest.importorskip("onnxruntime", reason="acceleration needs onnxruntime (a base dependency)")
    info = shared_client.get("/v1/model").json()
    assert info["acceleration"] == "onnx"  # auto, and HF_INTENT_MODEL has no evaluated tag
    assert info["inference_threads"] == ServingSettings().threads()
    assert 'acceleration="onnx"' in shared_client.get("/metrics").text


def test_a_failed_export_serves_the_original_model(tiny_bert_classifier, monkeypatch):
    from intent_pipeline.serving import acceleration

    def broken_export(*args, **kwargs):
        raise RuntimeError("Unsupported ONNX opset")

    monkeypatch.setattr(acceleration, "onnx_copy", broken_export)
    served = acceleration.accelerate(tiny_bert_classifier, "onnx-int8", threads=1)
    assert served == (tiny_bert_classifier, "none")


def test_a_copy_that_disagrees_with_the_model_is_not_served(tiny_bert_classifier, monkeypatch):
    import numpy as np

    from intent_pipeline.serving import acceleration

    class WrongCopy:
        def predict_proba(self, texts):
            return np.tile([1.0, 0.0, 0.0], (len(texts), 1))

    monkeypatch.setattr(acceleration, "onnx_copy", lambda *args, **kwargs: WrongCopy())
    assert acceleration.accelerate(tiny_bert_classifier, "onnx", threads=1) == (tiny_bert_classifier, "none")


@pytest.mark.parametrize(("mode", "change", "served"), [
    ("onnx", "sharpen", "none"),            # fp32 must match the probabilities to 1e-3
    ("onnx-int8", "sharpen", "onnx-int8"),  # int8 may move scores (here by up to 0.05), keeping every intent
    ("onnx-int8", "flip", "none"),          # but not move them all onto another intent (fp32 fails too here)
])
def test_a_copy_is_served_only_when_it_keeps_the_intents(tiny_bert_classifier, monkeypatch, mode, change, served):
    import numpy as np

    from intent_pipeline.serving import acceleration

    class ChangedCopy:
        """The model's probabilities, sharpened towards the best label or moved onto the worst one."""

        def predict_proba(self, texts):
            probabilities = tiny_bert_classifier.predict_proba(texts)
            target = probabilities.argmax(axis=1) if change == "sharpen" else probabilities.argmin(axis=1)
            one_hot = np.eye(probabilities.shape[1])[target]
            weight = 0.05 if change == "sharpen" else 1.0
            return (1 - weight) * probabilities + weight * one_hot

    monkeypatch.setattr(acceleration, "onnx_copy", lambda *args, **kwargs: ChangedCopy())
    assert acceleration.accelerate(tiny_bert_classifier, mode, threads=1)[1] == served


def test_an_int8_copy_may_flip_an_unsure_probe_but_a_broken_one_falls_back_to_fp32(tiny_bert_classifier,
                                                                                    monkeypatch):
    import numpy as np

    from intent_pipeline.serving import acceleration

    faithful = acceleration.onnx_copy(tiny_bert_classifier, quantize=False, threads=1)

    class Int8Copy:
        """Moves every probe's probabilities by `shift` towards its second-best label."""

        def __init__(self, shift: float) -> None:
            self.shift = shift

        def predict_proba(self, texts):
            probabilities = tiny_bert_classifier.predict_proba(texts)
            second = np.argsort(-probabilities, axis=1)[:, 1]
            moved = probabilities.copy()
            moved[np.arange(len(texts)), probabilities.argmax(axis=1)] -= self.shift
            moved[np.arange(len(texts)), second] += self.shift
            return moved

    # the random tiny head is unsure of everything: a 0.2 shift flips intents yet stays within 0.25
    near_tie = Int8Copy(0.2)
    assert (near_tie.predict_proba(["ciao"]).argmax() != tiny_bert_classifier.predict_proba(["ciao"]).argmax())
    monkeypatch.setattr(acceleration, "onnx_copy", lambda *a, quantize, **k: near_tie if quantize else faithful)
    assert acceleration.accelerate(tiny_bert_classifier, "onnx-int8", threads=1) == (near_tie, "onnx-int8")

    broken = Int8Copy(0.3)
    monkeypatch.setattr(acceleration, "onnx_copy", lambda *a, quantize, **k: broken if quantize else faithful)
    assert acceleration.accelerate(tiny_bert_classifier, "onnx-int8", threads=1) == (faithful, "onnx")


def test_other_kinds_are_served_as_loaded(tiny_examples):
    from intent_pipeline.serving.acceleration import accelerate

    linear = linear_classifier(tiny_examples)
    assert accelerate(linear, "onnx-int8", threads=1) == (linear, "none")


def test_openapi_documents_the_limits(shared_client):
    schema = shared_client.get("/openapi.json").json()
    request = schema["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert f"at most {MAX_TEXT_LENGTH} characters" in request["text"]["description"]
    assert f"1 to {MAX_BATCH_SIZE} queries" in request["texts"]["description"]
    routes = {"/v1/classify", "/v1/model", "/health", "/ready", "/metrics", "/v1/admin/reload"}
    assert routes <= set(schema["paths"])


def test_captured_queries_reach_the_labeling_api_with_the_served_labels(make_settings, tiny_bert_dir):
    settings = make_settings(hf_intent_model=str(tiny_bert_dir), default_low_confidence_threshold=1.0)
    expert = {"Authorization": f"Bearer {EXPERT_TOKEN}"}
    with TestClient(create_app(settings)) as client:
        client.post("/v1/classify", json={"text": "quanto costa il bollo per 90 kW?"})
        app = client.app
        wait_for(lambda: app.state.capture.written == 1, timeout_s=10, what="the capture to be written")
        queue = client.get("/api/v1/labeling/queue", headers=expert).json()
        assert queue["labels"] == ["chitchat", "calculator", "theoretical_definition"]
        (item,) = queue["items"]
        assert item["text"] == "quanto costa il bollo per 90 kW?" and item["model_version"] is None
        url = f"/api/v1/labeling/items/{item['id']}"
        outside = client.post(url, json={"label": "weather"}, headers=expert)
        assert outside.status_code == 422
        labeled = client.post(url, json={"label": "calculator"}, headers=expert)
        assert labeled.status_code == 200 and labeled.json()["label"] == "calculator"
