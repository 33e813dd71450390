"""ModelHolder: the classifier being served, its version, and the background task that follows the alias.

The serving model is one immutable `LoadedModel` held in one attribute. A request reads that attribute once
and keeps the object, so a swap (one assignment) never changes the model under a request in flight, and a
batch is answered by one version. A new version is loaded and warmed up beside the old one, in a thread;
if anything fails (registry, download, unknown kind, corrupt weights, a warm-up prediction that is not a
probability) the old model keeps serving and the error shows in /v1/model, the log and /metrics.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from intent_pipeline.serving.acceleration import WARMUP_TEXTS, accelerate, describe_error, resolve_mode
from intent_pipeline.serving.metrics import ServingMetrics
from intent_pipeline.serving.settings import ServingSettings
from intent_pipeline.text import normalise_text

logger = logging.getLogger(__name__)

THRESHOLD_TAG = "low_confidence_threshold"
_REGISTRY_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/@]+)|/(?P<version>\d+))$")


class ModelNotReady(RuntimeError):
    """No model is loaded yet; the message says why (loading, registry error, failed load)."""


@dataclass(frozen=True)
class ModelTarget:
    """What the model URI resolves to now: the exact thing to load."""

    load_uri: str  # pinned: models:/name/N, never the alias (it could move between resolve and load)
    name: str
    version: str | None
    alias: str | None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PollOutcome:
    """The result of one poll: swapped, unchanged, skipped (a known-bad version), failed or unreachable."""

    outcome: str
    version: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome in ("swapped", "unchanged")


class PredictionCache:
    """LRU of normalised text -> prediction for one model; used from the event loop thread only."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._entries: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    def put(self, key: str, prediction: dict[str, Any]) -> None:
        if self.maxsize <= 0:
            return
        self._entries[key] = prediction
        self._entries.move_to_end(key)
        while len(self._entries) > self.maxsize:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class LoadedModel:
    """One loaded, warmed-up classifier and where it came from; never mutated after the swap."""

    classifier: Any  # an IntentClassifier; typed loosely so tests can serve a stub
    name: str
    version: str | None
    alias: str | None
    kind: str
    labels: tuple[str, ...]
    threshold: float
    loaded_at: datetime
    source: str
    acceleration: str = "none"
    cache: PredictionCache = field(compare=False, repr=False, default_factory=lambda: PredictionCache(0))

    def describe(self) -> dict[str, Any]:
        """The JSON-ready identity of this model (without the classifier)."""
        return {
            "name": self.name,
            "version": self.version,
            "alias": self.alias,
            "kind": self.kind,
            "labels": list(self.labels),
            "low_confidence_threshold": self.threshold,
            "loaded_at": self.loaded_at.isoformat(timespec="seconds"),
            "source": self.source,
            "acceleration": self.acceleration,
        }


def parse_threshold(value: Any, default: float) -> float:
    """A version tag like "0.62" -> 0.62; anything missing or not a probability -> the default."""
    try:
        threshold = float(value)
    except (TypeError, ValueError):
        return default
    return threshold if 0.0 <= threshold <= 1.0 and math.isfinite(threshold) else default


def _default_mlflow_loader(uri: str) -> Any:
    from intent_pipeline.model_logging import load_classifier_from_mlflow

    return load_classifier_from_mlflow(uri)


def _default_direct_loader(source: str) -> Any:
    from intent_pipeline.classifier import load_classifier

    return load_classifier(source)


def _mdeberta_hint(source: str) -> str:
    if source.strip().lower() != "mdeberta":
        return ""
    return (
        "; HF_INTENT_MODEL=mdeberta is the guide's zero-shot NLI model: put it in the Hugging Face cache, "
        "point HF_INTENT_MODEL at a local copy, or unset HF_INTENT_MODEL and serve the registry's "
        "zero-shot version (`intent-pipeline rollback --to zero-shot`)"
    )



class ModelHolder:
    """Keeps the serving model; follows the registry alias (or loads HF_INTENT_MODEL once)."""

    def __init__(
        self,
        settings: ServingSettings,
        *,
        metrics: ServingMetrics | None = None,
        client_factory: Callable[[str], Any] | None = None,
        mlflow_loader: Callable[[str], Any] | None = None,
        direct_loader: Callable[[str], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServingMetrics()
        self.current: LoadedModel | None = None
        self.last_poll: datetime | None = None
        self.last_error: str | None = None
        self.reload_successes = 0
        self.reload_failures = 0
        self._client_factory = client_factory
        self._mlflow_loader = mlflow_loader or _default_mlflow_loader
        self._direct_loader = direct_loader or _default_direct_loader
        self._client: Any = None
        self._failed_version: str | None = None  # not retried until the alias moves or an admin reload
        self._poll_lock: asyncio.Lock | None = None
        self._task: asyncio.Task | None = None
        self._first_attempt_done: asyncio.Event | None = None
        # One inference thread for batches (torch and ONNX Runtime run their own intra-op threads), so the
        # event loop stays free for /health, /metrics and cache hits; single texts run inline (_infer).
        self._executor: ThreadPoolExecutor | None = None
        match = _REGISTRY_URI.match(settings.model_uri)
        self.registered_name = match["name"] if match else None
        self.alias = match["alias"] if match else None
        self.pinned_version = match["version"] if match else None

    # -- mode -----------------------------------------------------------------------------------------------
    @property
    def mode(self) -> str:
        """'hf' (HF_INTENT_MODEL, loaded once), 'alias' (follows the alias) or 'uri' (fixed, loaded once)."""
        if self.settings.hf_intent_model:
            return "hf"
        return "alias" if self.alias else "uri"

    @property
    def source(self) -> str:
        return self.settings.hf_intent_model or self.settings.model_uri

    @property
    def ready(self) -> bool:
        return self.current is not None

    def labels(self) -> list[str]:
        """The serving model's labels (the labeling API validates labels against them)."""
        model = self.current
        return list(model.labels) if model else []

    def require(self) -> LoadedModel:
        """The serving model, or ModelNotReady saying why there is none."""
        model = self.current
        if model is None:
            raise ModelNotReady(self.not_ready_reason())
        return model

    def not_ready_reason(self) -> str:
        if self.last_error:
            return f"no model loaded: {self.last_error}"
        return f"no model loaded yet: loading {self.source}"

    # -- lifecycle ------------------------------------------------------------------------------------------
    async def start(self, wait_s: float) -> None:
        """Start the background poll task and wait up to `wait_s` for its first load attempt."""
        self._poll_lock = asyncio.Lock()
        self._first_attempt_done = asyncio.Event()
        self._executor = _inference_executor()
        self._task = asyncio.create_task(self._poll_forever(), name="intent-model-poll")
        try:
            await asyncio.wait_for(self._first_attempt_done.wait(), timeout=wait_s)
        except TimeoutError:
            logger.warning(
                "the first load of %s takes over %.0f s; serving /health meanwhile, /ready is 503",
                self.source,
                wait_s,
            )

    async def stop(self) -> None:
        """Stop polling; loads already running in a thread finish in the background."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _poll_forever(self) -> None:
        assert self._first_attempt_done is not None
        while True:
            try:
                await self.poll()
            except Exception:  # noqa: BLE001 - the loop must outlive any bug in one poll
                logger.exception("model poll failed unexpectedly")
            self._first_attempt_done.set()
            if self.mode != "alias" and self.current is not None:
                return  # a fixed source: nothing to follow once loaded
            if self.mode == "hf":
                return  # HF_INTENT_MODEL is loaded once; POST /v1/admin/reload retries
            await asyncio.sleep(self.settings.poll_interval_s)

    # -- polling --------------------------------------------------------------------------------------------
    async def poll(self, *, force: bool = False) -> PollOutcome:
        """Resolve the source; load and swap in a new version when it moved. Never raises for load errors.

        `force` retries a version that failed before and, for HF_INTENT_MODEL, re-reads it from disk.
        """
        if self._poll_lock is None:
            self._poll_lock = asyncio.Lock()
        async with self._poll_lock:
            self.last_poll = datetime.now(UTC)
            try:
                target = await asyncio.to_thread(self._resolve)
            except Exception as error:  # noqa: BLE001 - registry down, alias missing, bad URI: keep serving
                return self._unreachable(error)
            self.metrics.polls.labels("ok").inc()
            current = self.current
            if current is not None and target.version is not None and current.version == target.version:
                self.last_error = None
                self._failed_version = None  # moving the alias back to a bad version later retries it
                threshold = parse_threshold(target.tags.get(THRESHOLD_TAG), current.threshold)
                if threshold != current.threshold:  # evaluation re-tagged the serving version
                    self.current = dataclasses.replace(current, threshold=threshold)
                    logger.info("low-confidence threshold of version %s: %s -> %s", current.version,
                                current.threshold, threshold)
                return PollOutcome("unchanged", current.version)
            if current is not None and self.mode != "alias" and not force:
                return PollOutcome("unchanged", current.version)
            if target.version is not None and target.version == self._failed_version and not force:
                return PollOutcome("skipped", target.version, self.last_error)
            try:
                loaded = await asyncio.to_thread(self._load, target)
            except Exception as error:  # noqa: BLE001 - any failure leaves the old model serving
                return self._load_failed(target, error)
            previous = self.current
            self.current = loaded  # the swap: one assignment
            self._failed_version = None
            self.last_error = None
            self.reload_successes += 1
            self.metrics.model_swapped(
                name=loaded.name,
                version=loaded.version,
                alias=loaded.alias,
                kind=loaded.kind,
                acceleration=loaded.acceleration,
            )
            logger.info(
                "now serving %s version %s (%s, kind %s); was %s",
                loaded.name,
                loaded.version,
                loaded.source,
                loaded.kind,
                previous.version if previous else "nothing",
            )
            return PollOutcome("swapped", loaded.version)

    def _unreachable(self, error: Exception) -> PollOutcome:
        self.metrics.polls.labels("error").inc()
        message = self._resolve_error_message(error)
        serving = self.current
        if serving is not None:
            message += f"; still serving version {serving.version}"
        if message != self.last_error:  # log a persisting problem once, not at every poll
            logger.error("model source %s: %s", self.source, message)
        self.last_error = message
        return PollOutcome("unreachable", serving.version if serving else None, message)

    def _load_failed(self, target: ModelTarget, error: Exception) -> PollOutcome:
        self._failed_version = target.version
        self.reload_failures += 1
        self.metrics.reloads.labels("failure").inc()
        what = f"version {target.version} of {target.name}" if target.version else target.load_uri
        message = f"loading {what} failed: {describe_error(error)}"
        if self.mode == "hf":
            message += _mdeberta_hint(target.load_uri)
        serving = self.current
        message += f"; still serving version {serving.version}" if serving else "; no model is serving"
        logger.error("%s", message, exc_info=not isinstance(error, (OSError, ValueError)))
        self.last_error = message
        return PollOutcome("failed", target.version, message)

    def _resolve_error_message(self, error: Exception) -> str:
        code = getattr(error, "error_code", None)
        where = self.settings.tracking_uri
        text = str(error).lower()
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") and self.alias and "alias" in text:
            return (
                f"no version of '{self.registered_name}' holds the alias '{self.alias}' at {where} "
                "(promote one: `intent-pipeline promote`)"
            )
        if code == "RESOURCE_DOES_NOT_EXIST" and self.pinned_version and "version" in text:
            return f"version {self.pinned_version} of '{self.registered_name}' does not exist at {where}"
        if code == "RESOURCE_DOES_NOT_EXIST":
            return (
                f"no registered model named '{self.registered_name}' at {where} "
                "(train one: `intent-pipeline train`)"
            )
        return f"registry {where} unreachable: {describe_error(error)}"

    # -- blocking work (runs in threads) -------------------------------------------------------------------
    def _get_client(self) -> Any:
        if self._client is None:
            factory = self._client_factory or _registry_client
            self._client = factory(self.settings.tracking_uri)
        return self._client

    def _resolve(self) -> ModelTarget:
        """What to load now; raises when the registry cannot say."""
        if self.mode == "hf":
            source = self.settings.hf_intent_model or ""
            return ModelTarget(load_uri=source, name=source, version=None, alias=None)
        if self.mode == "uri":
            uri = self.settings.model_uri
            if self.pinned_version is None:
                return ModelTarget(load_uri=uri, name=uri, version=None, alias=None)
        try:
            client = self._get_client()
            if self.alias:
                version = client.get_model_version_by_alias(self.registered_name, self.alias)
            else:
                version = client.get_model_version(self.registered_name, self.pinned_version)
        except Exception:
            self._client = None  # a fresh client next time (the store may have appeared)
            raise
        number = str(version.version)
        return ModelTarget(
            load_uri=f"models:/{self.registered_name}/{number}",
            name=self.registered_name or "",
            version=number,
            alias=self.alias,
            tags=dict(version.tags or {}),
        )

    def _load(self, target: ModelTarget) -> LoadedModel:
        """Load and warm up `target`; raises on any problem so the caller keeps the old model."""
        logger.info("loading %s", target.load_uri)
        if self.mode == "hf":
            classifier = self._direct_loader(target.load_uri)
        else:
            _point_mlflow_at(self.settings.tracking_uri)
            classifier = self._mlflow_loader(target.load_uri)
        labels = tuple(str(label) for label in classifier.labels)
        if not labels:
            raise ValueError("the classifier has no labels")
        _warm_up(classifier, labels, self.settings.top_k)
        classifier, acceleration = accelerate(
            classifier, resolve_mode(self.settings.acceleration, target.tags), self.settings.threads()
        )
        metadata = getattr(classifier, "metadata", None) or {}
        threshold = parse_threshold(
            target.tags.get(THRESHOLD_TAG, metadata.get(THRESHOLD_TAG)),
            self.settings.default_low_confidence_threshold,
        )
        return LoadedModel(
            classifier=classifier,
            name=target.name,
            version=target.version,
            alias=target.alias,
            kind=str(getattr(classifier, "kind", "unknown")),
            labels=labels,
            threshold=threshold,
            loaded_at=datetime.now(UTC),
            source=target.load_uri,
            acceleration=acceleration,
            cache=PredictionCache(self.settings.prediction_cache_size),
        )

    # -- inference ---------------------------------------------------------------------------------------
    async def classify(self, texts: Sequence[str]) -> tuple[LoadedModel, list[dict[str, Any]]]:
        """Predictions for `texts` from one model (the one serving when the request started)."""
        model = self.require()
        keys = [normalise_text(text) for text in texts]
        predictions: list[dict[str, Any] | None] = [model.cache.get(key) for key in keys]
        missing = list(dict.fromkeys(key for key, p in zip(keys, predictions, strict=True) if p is None))
        hits = len(keys) - sum(p is None for p in predictions)
        if missing:
            fresh = await self._infer(model.classifier, missing)
            computed = dict(zip(missing, fresh, strict=True))
            for key, prediction in computed.items():
                model.cache.put(key, prediction)
            predictions = [
                p if p is not None else computed[key] for key, p in zip(keys, predictions, strict=True)
            ]
        if hits:
            self.metrics.cache_hits.inc(hits)
        if len(keys) - hits:
            self.metrics.cache_misses.inc(len(keys) - hits)
        return model, predictions  # type: ignore[return-value]

    async def _infer(self, classifier: Any, texts: list[str]) -> list[dict[str, Any]]:
        """Predict `texts`: a few on the event loop thread, more on the inference thread."""
        if len(texts) <= self.settings.inline_max_texts:
            # Waking the inference thread and then the loop again cost 0.2-0.4 ms on 2 vCPUs, a tenth of a
            # single int8 query; inline, the loop is blocked for that one short query only.
            return _predict(classifier, texts, self.settings.top_k)
        if self._executor is None:  # used without start() (a script, a test)
            self._executor = _inference_executor()
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, _predict, classifier, texts, self.settings.top_k
        )

    def info(self) -> dict[str, Any]:
        """What GET /v1/model shows."""
        model = self.current
        return {
            "ready": model is not None,
            "mode": self.mode,
            "model_uri": self.source,
            **(
                model.describe()
                if model
                else {
                    "name": self.registered_name or self.source,
                    "version": None,
                    "alias": self.alias,
                    "kind": None,
                    "labels": [],
                    "low_confidence_threshold": None,
                    "loaded_at": None,
                    "source": None,
                    "acceleration": None,
                }
            ),
            "last_poll": self.last_poll.isoformat(timespec="seconds") if self.last_poll else None,
            "last_error": self.last_error,
            "reload_successes": self.reload_successes,
            "reload_failures": self.reload_failures,
            "poll_interval_s": self.settings.poll_interval_s if self.mode == "alias" else None,
            "inference_threads": self.settings.threads(),
        }


def _inference_executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="intent-inference")


def _predict(classifier: Any, texts: list[str], top_k: int) -> list[dict[str, Any]]:
    return list(classifier.predict(texts, top_k=top_k))


def _warm_up(classifier: Any, labels: tuple[str, ...], top_k: int) -> None:
    """One real prediction before the swap: lazy loading errors and nonsense outputs surface here."""
    predictions = _predict(classifier, list(WARMUP_TEXTS), top_k)
    if len(predictions) != len(WARMUP_TEXTS):
        raise ValueError(f"warm-up: {len(WARMUP_TEXTS)} texts gave {len(predictions)} predictions")
    for prediction in predictions:
        confidence = float(prediction["confidence"])
        if prediction["intent"] not in labels or not (0.0 <= confidence <= 1.0) or math.isnan(confidence):
            raise ValueError(f"warm-up prediction is not a probability over the labels: {prediction!r}")


def _registry_client(uri: str) -> Any:
    from intent_pipeline.registry import get_client

    return get_client(uri)


def _point_mlflow_at(uri: str) -> None:
    """load_classifier_from_mlflow resolves models:/ URIs through mlflow's global registry URI."""
    import mlflow

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)
    if mlflow.get_registry_uri() != uri:
        mlflow.set_registry_uri(uri)
