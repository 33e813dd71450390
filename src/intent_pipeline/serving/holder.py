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
import tempfile
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from intent_pipeline.classifier import IntentClassifier
from intent_pipeline.serving.metrics import ServingMetrics
from intent_pipeline.serving.settings import ServingSettings

logger = logging.getLogger(__name__)

THRESHOLD_TAG = "low_confidence_threshold"
WARMUP_TEXTS = ("ciao", "quanto pago di IVA su una fattura di 1200 euro?")
# Compared between the exported and the original model before an accelerated model may serve.
PROBE_TEXTS = (
    *WARMUP_TEXTS,
    "cos'è il regime forfettario?",
    "calcola l'IRPEF su 35.000 euro di reddito",
    "buongiorno, vorrei sapere se posso detrarre le spese mediche sostenute per un familiare a "
    "carico anche se non convivente, e con quali documenti",
    "TFR",
)
# Encoders whose ONNX export ONNX Runtime's BERT optimizer knows how to fuse.
FUSABLE_MODEL_TYPES = ("bert", "roberta", "xlm-roberta")
# Largest probability difference accepted against the original model (int8 weights move scores a little).
ACCELERATION_TOLERANCE = {"onnx": 1e-3, "onnx-int8": 0.05}
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


def normalise_text(text: str) -> str:
    """Collapse runs of whitespace and strip: the cache key, and what the model sees."""
    return " ".join(text.split())


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


def _describe_error(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}".strip()
    return text if len(text) <= 2000 else text[:1999] + "…"


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
        # One inference thread: torch runs its own intra-op threads, fast tokenizers must not be shared
        # across threads at once, and the event loop stays free for /health, /metrics and cache hits.
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
        message = f"loading {what} failed: {_describe_error(error)}"
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
        return f"registry {where} unreachable: {_describe_error(error)}"

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
            classifier, self.settings.acceleration, self.settings.inference_threads
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
            loop = asyncio.get_running_loop()
            if self._executor is None:  # used without start() (a script, a test)
                self._executor = _inference_executor()
            fresh = await loop.run_in_executor(
                self._executor, _predict, model.classifier, missing, self.settings.top_k
            )
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


# -- acceleration -------------------------------------------------------------------------------------------
# A fine-tuned transformer spends a single query mostly in PyTorch's per-operator overhead and fp32 matmuls.
# ONNX Runtime runs the same graph with fused kernels (MiniLM, 1 thread: 12 ms -> 5 ms, same probabilities
# within 1e-5); int8 weights (dynamic quantisation) cut it to ~2.4 ms but changed 5% of the intents of the
# benchmark model on real queries, hence opt-in. A copy serves only after matching the original on
# PROBE_TEXTS; a few probes catch a broken export, not a small accuracy loss: check int8 with evaluation.


class OnnxSequenceClassifier(IntentClassifier):
    """A fine-tuned classifier exported to ONNX and run by ONNX Runtime; same labels, same `predict`."""

    kind = "fine_tuned"

    def __init__(
        self,
        session: Any,
        tokenizer: Any,
        input_names: list[str],
        *,
        labels: list[str],
        descriptions: dict[str, str] | None,
        metadata: dict[str, Any] | None,
        max_length: int,
        batch_size: int,
    ) -> None:
        super().__init__(labels, descriptions, metadata)
        self.session = session
        self.tokenizer = tokenizer
        self.input_names = input_names
        self.max_length = max_length
        self.batch_size = batch_size

    def predict_proba(self, texts: Any) -> np.ndarray:
        texts = [texts] if isinstance(texts, str) else list(texts)
        probabilities = np.zeros((len(texts), len(self.labels)), dtype=np.float64)
        order = np.argsort([len(text) for text in texts], kind="stable")  # similar lengths pad little
        for start in range(0, len(texts), self.batch_size):
            indices = order[start : start + self.batch_size]
            encoded = self.tokenizer(
                [texts[i] for i in indices],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="np",
            )
            feed = {name: encoded[name].astype(np.int64) for name in self.input_names}
            logits = self.session.run(None, feed)[0].astype(np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            exponentials = np.exp(logits)
            probabilities[indices] = exponentials / exponentials.sum(axis=1, keepdims=True)
        return probabilities

    def _save_model(self, directory: Path) -> None:
        raise NotImplementedError("an accelerated serving copy is not saved; save the original classifier")

    @classmethod
    def _load_saved(cls, directory: Path, manifest: dict[str, Any], device: str) -> IntentClassifier:
        raise NotImplementedError("an accelerated serving copy is built by accelerate(), not loaded")


def accelerate(classifier: Any, mode: str, threads: int | None) -> tuple[Any, str]:
    """(classifier to serve, acceleration): an ONNX copy of a fine-tuned model that matches it, else it."""
    if (
        mode == "none"
        or getattr(classifier, "kind", None) != "fine_tuned"
        or not hasattr(classifier, "model")
    ):
        return classifier, "none"
    if getattr(classifier, "device", "cpu") != "cpu":
        return classifier, "none"  # on a GPU PyTorch is the fast path
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        logger.warning("acceleration %r needs onnxruntime (not installed): serving with PyTorch", mode)
        return classifier, "none"
    try:
        fast = _onnx_copy(classifier, quantize=mode == "onnx-int8", threads=threads)
        difference = float(
            np.abs(fast.predict_proba(PROBE_TEXTS) - classifier.predict_proba(PROBE_TEXTS)).max()
        )
    except Exception as error:  # noqa: BLE001 - an export problem must not stop a good model from serving
        logger.warning(
            "ONNX export of the %s model failed, serving with PyTorch: %s",
            classifier.kind,
            _describe_error(error),
        )
        return classifier, "none"
    if difference > ACCELERATION_TOLERANCE[mode]:
        logger.warning(
            "the %s copy differs from the model by %.4f (> %.4f) on the probe texts: serving with PyTorch",
            mode,
            difference,
            ACCELERATION_TOLERANCE[mode],
        )
        return classifier, "none"
    logger.info(
        "serving through ONNX Runtime (%s); largest probability difference on the probes %.5f",
        mode,
        difference,
    )
    return fast, mode


def _onnx_copy(classifier: Any, *, quantize: bool, threads: int | None) -> OnnxSequenceClassifier:
    """Export `classifier.model` to ONNX (int8 weights when `quantize`) and open it with ONNX Runtime."""
    import onnxruntime
    import torch

    tokenizer = classifier.tokenizer
    names = [
        name
        for name in getattr(tokenizer, "model_input_names", ["input_ids", "attention_mask"])
        if name in ("input_ids", "attention_mask", "token_type_ids")
    ]

    class _Logits(torch.nn.Module):
        """Positional inputs in `names` order -> logits (the exporter traces positional arguments)."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *inputs: Any) -> Any:
            return self.inner(**dict(zip(names, inputs, strict=True))).logits

    sample = tokenizer(list(WARMUP_TEXTS), padding=True, return_tensors="pt")
    model = classifier.model
    fusable = getattr(model.config, "model_type", None) in FUSABLE_MODEL_TYPES
    with tempfile.TemporaryDirectory(prefix="intent-onnx-") as temporary:
        path = Path(temporary) / "model.onnx"
        with (
            warnings.catch_warnings(),
            torch.inference_mode(False),
            torch.no_grad(),
            _eager_attention(model, fusable),
        ):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Logits(model).eval(),
                tuple(sample[name] for name in names),
                str(path),
                input_names=names,
                output_names=["logits"],
                opset_version=17,
                dynamo=False,
                dynamic_axes={
                    **{name: {0: "batch", 1: "sequence"} for name in names},
                    "logits": {0: "batch"},
                },
            )
        if fusable:
            path = _fuse_transformer_ops(path, model.config)
        if quantize:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = Path(temporary) / "model.int8.onnx"
            root = logging.getLogger()
            root.addFilter(_quiet_quantizer)  # one INFO line per tensor and advice, via the root logger
            try:
                quantize_dynamic(
                    str(path),
                    str(quantized),
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    extra_options={"DefaultTensorType": 1},
                )  # 1 = FLOAT, for fused ops
            finally:
                root.removeFilter(_quiet_quantizer)
            path = quantized
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # Idle ORT threads spin by default, burning cores that other processes (and the tokenizer) need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return OnnxSequenceClassifier(
        session,
        tokenizer,
        names,
        labels=list(classifier.labels),
        descriptions=classifier.descriptions,
        metadata=classifier.metadata,
        max_length=int(getattr(classifier, "max_length", 512)),
        batch_size=int(getattr(classifier, "batch_size", 32)),
    )


@contextmanager
def _eager_attention(model: Any, wanted: bool) -> Iterator[None]:
    """Export with eager attention: ONNX Runtime fuses its pattern into one Attention op (not SDPA's)."""
    previous = getattr(model.config, "_attn_implementation", None)
    switch = wanted and previous not in (None, "eager") and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(previous)


def _fuse_transformer_ops(path: Path, config: Any) -> Path:
    """ONNX Runtime's BERT fusions (attention, skip-layer-norm, bias-GELU); the plain export if they fail."""
    try:
        from onnxruntime.transformers.optimizer import optimize_model

        optimized = optimize_model(
            str(path),
            model_type="bert",
            num_heads=int(config.num_attention_heads),
            hidden_size=int(config.hidden_size),
            opt_level=1,
        )
        fused = path.with_name("model.fused.onnx")
        optimized.save_model_to_file(str(fused))
        return fused
    except Exception as error:  # noqa: BLE001 - the unfused graph is still correct, just slower
        logger.warning("ONNX Runtime fusions failed, serving the plain export: %s", _describe_error(error))
        return path


def _quiet_quantizer(record: logging.LogRecord) -> bool:
    return not (record.levelno < logging.ERROR and "onnxruntime" in record.pathname)
