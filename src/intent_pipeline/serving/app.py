"""The thin FastAPI server: serves whatever the `production` alias points to and follows it live.

Routes are a few lines each and delegate to the ModelHolder (holder.py). `create_app()` is the factory
(uvicorn `--factory intent_pipeline.serving.app:create_app`); `run_server()` is what `intent-pipeline
serve` calls.
"""

# No `from __future__ import annotations`: FastAPI must see the per-app request class, a local name.
import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import SecretStr

from intent_pipeline.serving.holder import LoadedModel, ModelHolder, ModelNotReady
from intent_pipeline.serving.metrics import UNMATCHED_ROUTE, ServingMetrics
from intent_pipeline.serving.schemas import (
    BatchPredictionOut,
    ModelInfoOut,
    PredictionOut,
    ReloadOut,
    classify_request_model,
    format_validation_errors,
    jsonable_errors,
)
from intent_pipeline.serving.settings import ServingSettings

logger = logging.getLogger(__name__)


def create_app(settings: ServingSettings | None = None) -> FastAPI:
    """The app (settings from the env unless given); model, polling and capture start in the lifespan."""
    settings = settings or ServingSettings()
    metrics = ServingMetrics()
    holder = ModelHolder(settings, metrics=metrics)
    ClassifyRequest = classify_request_model(settings.max_text_length, settings.max_batch_size)  # noqa: N806

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        import torch

        torch.set_num_threads(settings.threads())
        capture = app.state.capture
        if capture is not None:
            capture.start()
        await holder.start(wait_s=settings.startup_wait_s)
        try:
            yield
        finally:
            await holder.stop()
            if capture is not None:
                await asyncio.to_thread(capture.stop)
            store = app.state.labeling_store
            if store is not None and hasattr(store, "close"):
                store.close()

    app = FastAPI(
        title="intent-pipeline classifier",
        description="Classify Italian tax/legal help-desk queries into intents; follows the registry alias",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.holder = holder
    app.state.metrics = metrics
    app.state.capture = None
    app.state.labeling_store = None
    app.add_middleware(_MetricsMiddleware, metrics=metrics)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ModelNotReady, _not_ready)
    _mount_labeling(app, settings, holder, metrics)

    @app.post(
        "/v1/classify",
        response_model=PredictionOut | BatchPredictionOut,
        responses={
            422: {"description": "bad input: the message says what"},
            503: {"description": "no model loaded yet"},
        },
    )
    async def classify(body: ClassifyRequest) -> Response:  # type: ignore[valid-type]
        """Classify one text ({"text"}) or a batch ({"texts"}); a batch is answered by one model version."""
        model, predictions = await holder.classify(body.batch)
        results = _observe(app, model, body.batch, predictions)
        return JSONResponse(results[0] if body.text is not None else {"predictions": results})

    @app.get("/v1/model", response_model=ModelInfoOut)
    async def model_info() -> dict[str, Any]:
        """The serving model (name, version, alias, kind, labels, loaded_at) and the last poll and error."""
        return holder.info()

    @app.get("/health")
    async def health() -> dict[str, str]:
        """The process is alive (says nothing about the model: see /ready)."""
        return {"status": "ok"}

    @app.get("/ready", responses={503: {"description": "no model loaded yet; the body says why"}})
    async def ready() -> JSONResponse:
        """200 once a model serves; 503 before, with the reason."""
        model = holder.current
        if model is None:
            return JSONResponse({"ready": False, "reason": holder.not_ready_reason()}, status_code=503)
        return JSONResponse({"ready": True, "name": model.name, "version": model.version})

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.post(
        "/v1/admin/reload",
        response_model=ReloadOut,
        responses={
            401: {"description": "no bearer token"},
            403: {"description": "wrong token"},
            502: {"description": "the registry or the new version failed; the old model serves"},
        },
    )
    async def reload(request: Request) -> JSONResponse:
        """Poll the registry now (admin token); retries a version that failed to load before."""
        _require_bearer(request, settings.admin_token, "INTENT_ADMIN_TOKEN")
        outcome = await holder.poll(force=True)
        body = {"outcome": outcome.outcome, "version": outcome.version, "error": outcome.error}
        return JSONResponse(body, status_code=200 if outcome.ok else 502)

    return app


def _observe(
    app: FastAPI, model: LoadedModel, texts: list[str], predictions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Build the response items, count them, and queue the low-confidence ones for labeling."""
    reference = {"name": model.name, "version": model.version, "kind": model.kind}
    threshold = model.threshold
    results = [
        {
            "intent": p["intent"],
            "confidence": p["confidence"],
            "low_confidence": p["confidence"] < threshold,
            "ranking": p["ranking"],
            "model": reference,
        }
        for p in predictions
    ]
    low = [i for i, result in enumerate(results) if result["low_confidence"]]
    metrics: ServingMetrics = app.state.metrics
    metrics.observe_predictions(
        (p["intent"] for p in predictions), (p["confidence"] for p in predictions), len(low)
    )
    capture = app.state.capture
    if capture is not None and low:
        _capture(capture, model, texts, predictions, low)
    return results


def _capture(
    capture: Any, model: LoadedModel, texts: list[str], predictions: list[dict[str, Any]], indices: list[int]
) -> None:
    """Hand low-confidence predictions to the capture queue; never blocks, never fails the request."""
    from intent_pipeline.labeling.capture import CaptureRecord

    for i in indices:
        prediction = predictions[i]
        try:
            capture.submit(
                CaptureRecord(
                    text=texts[i],
                    predicted_intent=prediction["intent"],
                    confidence=prediction["confidence"],
                    ranking=prediction["ranking"],
                    model_version=model.version,
                )
            )
        except Exception:  # noqa: BLE001 - capture is best effort by design
            logger.exception("capture submit failed")


def _mount_labeling(
    app: FastAPI, settings: ServingSettings, holder: ModelHolder, metrics: ServingMetrics
) -> None:
    """The labeling API and page, and the capture queue; the server runs without them if the store fails."""
    if not settings.labeling_enabled:
        return
    try:
        from intent_pipeline.labeling.capture import CaptureQueue
        from intent_pipeline.labeling.routes import create_labeling_page_router, create_labeling_router
        from intent_pipeline.labeling.store import LabelingStore
    except ImportError as error:
        logger.warning("labeling is not available (%s): no capture, no labeling routes", error)
        return
    try:
        store = LabelingStore(settings.labeling_store_url)
    except Exception as error:  # noqa: BLE001 - a broken store must not stop classification
        logger.error(
            "labeling store %s unusable, capture and labeling routes are off: %s",
            _redact_url(settings.labeling_store_url),
            error,
        )
        return
    app.include_router(
        create_labeling_router(store, holder.labels, settings.expert_token, settings.admin_token)
    )
    app.include_router(create_labeling_page_router())
    capture = CaptureQueue(store, maxsize=settings.capture_queue_size)
    metrics.watch_capture(capture)
    app.state.capture = capture
    app.state.labeling_store = store


def _redact_url(url: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db (logs carry no secrets)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001
        return url.split("@")[-1]


def _require_bearer(request: Request, expected: SecretStr | None, variable: str) -> None:
    """401 without a bearer token; 403 with a wrong one (constant-time compare) or when none is configured."""
    header = request.headers.get("authorization", "")
    scheme, _, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise HTTPException(
            401, "missing token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"}
        )
    if expected is None:
        raise HTTPException(403, f"admin routes are disabled: set {variable}")
    if not hmac.compare_digest(
        presented.strip().encode("utf-8"), expected.get_secret_value().encode("utf-8")
    ):
        raise HTTPException(403, "wrong token")


async def _validation_error(_request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse(
        status_code=422,
        content=jsonable_encoder(
            {"detail": format_validation_errors(error), "errors": jsonable_errors(error)}
        ),
    )


async def _not_ready(_request: Request, error: Exception) -> JSONResponse:
    return JSONResponse(status_code=503, content={"detail": str(error)}, headers={"Retry-After": "5"})


class _MetricsMiddleware:
    """Pure ASGI middleware (cheaper than BaseHTTPMiddleware): requests and latency by route template."""

    def __init__(self, app: Any, metrics: ServingMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status_holder = [500]

        async def send_with_status(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or UNMATCHED_ROUTE
            self.metrics.requests.labels(template, scope["method"], str(status_holder[0])).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)


def run_server(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, log_level: str = "info") -> None:
    """Run the app with uvicorn; several workers each load the model and poll the alias on their own."""
    import uvicorn

    os.environ["INTENT_WORKERS"] = str(workers)  # each worker sizes its inference threads to its CPU share
    ServingSettings()  # fail here, with pydantic's message, on a bad environment (before forking workers)
    uvicorn.run(
        "intent_pipeline.serving.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        log_config=server_log_config(log_level),
        access_log=False,  # per-request lines cost latency; /metrics counts requests by route and status
    )


def server_log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging config plus the server's own logger (model swaps, registry errors) at `level`."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["intent_pipeline"] = {
        "handlers": ["default"], "level": level.upper(), "propagate": False,
    }
    return config
