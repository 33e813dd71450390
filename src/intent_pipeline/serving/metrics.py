"""Prometheus metrics of one app, in its own CollectorRegistry (tests create many apps in one process)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

# Per-query latency goal is a few ms: the buckets resolve 1-10 ms, then the tail.
LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONFIDENCE_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)
UNMATCHED_ROUTE = "unmatched"


class CaptureCounters(Protocol):
    """What /metrics reads from the labeling capture queue."""

    dropped: int
    failed: int
    written: int


class _CaptureCollector(Collector):
    """Reads the capture queue's own counters at scrape time (the queue counts in its worker thread)."""

    def __init__(self, queue: CaptureCounters) -> None:
        self._queue = queue

    def collect(self) -> Iterable[Any]:
        for attribute, documentation in (
            ("dropped", "Low-confidence captures dropped because the capture queue was full"),
            ("failed", "Low-confidence captures the labeling store failed to write"),
            ("written", "Low-confidence captures written to the labeling store"),
        ):
            family = CounterMetricFamily(f"intent_capture_{attribute}", documentation)
            family.add_metric([], float(getattr(self._queue, attribute, 0) or 0))
            yield family
        pending = getattr(self._queue, "pending", None)
        if isinstance(pending, int):
            gauge = GaugeMetricFamily("intent_capture_queue_depth", "Captures waiting to be written")
            gauge.add_metric([], float(pending))
            yield gauge


class ServingMetrics:
    """Every metric the server exports; `registry` is what /metrics renders."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "intent_http_requests",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "intent_http_request_duration_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.predictions = Counter(
            "intent_predictions", "Predictions by predicted intent", ["intent"], registry=r
        )
        self.confidence = Histogram(
            "intent_prediction_confidence",
            "Confidence of the predicted intent",
            buckets=CONFIDENCE_BUCKETS,
            registry=r,
        )
        self.low_confidence = Counter(
            "intent_low_confidence_predictions",
            "Predictions under the serving version's low-confidence threshold",
            registry=r,
        )
        self.cache_hits = Counter(
            "intent_prediction_cache_hits", "Texts answered from the prediction cache", registry=r
        )
        self.cache_misses = Counter("intent_prediction_cache_misses", "Texts sent to the model", registry=r)
        self.model_info = Info("intent_model", "The model being served", registry=r)
        self.model_version = Gauge(
            "intent_model_version",
            "Registry version being served (-1: none loaded or not a registry version)",
            registry=r,
        )
        self.model_loaded = Gauge("intent_model_loaded", "1 when a model is loaded and serving", registry=r)
        self.model_loaded_at = Gauge(
            "intent_model_loaded_timestamp_seconds", "Unix time the serving model was swapped in", registry=r
        )
        self.reloads = Counter(
            "intent_model_reloads", "Model loads by outcome (success, failure)", ["outcome"], registry=r
        )
        self.polls = Counter(
            "intent_registry_polls", "Alias polls by outcome (ok, error)", ["outcome"], registry=r
        )
        self.model_version.set(-1)
        for outcome in ("success", "failure"):
            self.reloads.labels(outcome)  # export zeros before the first reload
        for outcome in ("ok", "error"):
            self.polls.labels(outcome)

    def watch_capture(self, queue: CaptureCounters) -> None:
        """Export the capture queue's dropped/failed/written counters."""
        self.registry.register(_CaptureCollector(queue))

    def model_swapped(
        self, *, name: str, version: str | None, alias: str | None, kind: str, acceleration: str = "none"
    ) -> None:
        """Record that a model was loaded and put in service."""
        self.reloads.labels("success").inc()
        self.model_info.info(
            {
                "name": name,
                "version": version or "",
                "alias": alias or "",
                "kind": kind,
                "acceleration": acceleration,
            }
        )
        self.model_version.set(float(version) if version and version.isdigit() else -1)
        self.model_loaded.set(1)
        self.model_loaded_at.set(time.time())

    def observe_predictions(
        self, intents: Iterable[str], confidences: Iterable[float], low_count: int
    ) -> None:
        """Count one request's predictions."""
        for intent, confidence in zip(intents, confidences, strict=True):
            self.predictions.labels(intent).inc()
            self.confidence.observe(confidence)
        if low_count:
            self.low_confidence.inc(low_count)
