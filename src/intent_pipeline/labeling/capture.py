"""Capture of low-confidence predictions: a bounded in-memory queue drained by a daemon thread in batches.

The classify request only calls `CaptureQueue.submit`, which never blocks and never raises: when the
queue is full the record is dropped and counted. Store errors (a read-only database, a lost
PostgreSQL connection) are counted per record and logged, never propagated. The serving app
exposes `dropped`, `failed` and `written` in /metrics.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from intent_pipeline.labeling.store import LabelingStore, utcnow

logger = logging.getLogger(__name__)

_FAILURE_LOG_EVERY = 100  # a broken store logs its first failed batch, then one in this many


@dataclass(frozen=True)
class CaptureRecord:
    """One prediction to capture: the query text and what the serving model said about it."""

    text: str
    predicted_intent: str | None
    confidence: float | None
    ranking: Any  # [{"intent", "score"}...] or its JSON string
    model_version: str | None
    captured_at: datetime = field(default_factory=utcnow)  # when it was asked, not when it was written


class CaptureQueue:
    """A bounded queue of CaptureRecords written to the store in batches by one daemon thread."""

    def __init__(self, store: LabelingStore, maxsize: int = 1000, *, batch_size: int = 100,
                 poll_interval_s: float = 0.2):
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.store = store
        self.maxsize = maxsize
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self._queue: queue.Queue[CaptureRecord] = queue.Queue(maxsize=maxsize)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._dropped = self._failed = self._written = self._failed_batches = 0

    # counters (records, not batches) -------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Records refused because the queue was full (or the queue was stopped)."""
        return self._dropped

    @property
    def failed(self) -> int:
        """Records lost to store write errors."""
        return self._failed

    @property
    def written(self) -> int:
        """Records written to the store."""
        return self._written

    @property
    def pending(self) -> int:
        """Records waiting in the queue."""
        return self._queue.qsize()

    @property
    def running(self) -> bool:
        """Whether the writer thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    # lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer thread (idempotent)."""
        if self.running:
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="labeling-capture-writer", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop accepting records, write what is queued, and join the writer thread."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                logger.warning("capture writer did not finish within %.1fs; %d records still queued",
                               timeout_s, self.pending)
            self._thread = None
        else:  # never started: flush in the caller's thread so nothing submitted is lost silently
            self._drain()

    def submit(self, record: CaptureRecord) -> bool:
        """Queue a record for writing; False (and counted in `dropped`) when the queue is full or stopped."""
        try:
            if self._stopping.is_set():
                raise queue.Full
            self._queue.put_nowait(record)
            return True
        except queue.Full:
            with self._lock:
                self._dropped += 1
            return False
        except Exception:  # noqa: BLE001 - a capture must never fail the request that submitted it
            logger.exception("capture submit failed")
            with self._lock:
                self._dropped += 1
            return False

    # writer ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                first = self._queue.get(timeout=self.poll_interval_s)
            except queue.Empty:
                continue
            self._write([first, *self._take(self.batch_size - 1)])
        self._drain()

    def _take(self, limit: int) -> list[CaptureRecord]:
        batch: list[CaptureRecord] = []
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _drain(self) -> None:
        while batch := self._take(self.batch_size):
            self._write(batch)

    def _write(self, batch: list[CaptureRecord]) -> None:
        try:
            self.store.record_captures(batch)
        except Exception as exc:  # noqa: BLE001 - counted and logged; capture must not take the server down
            with self._lock:
                self._failed += len(batch)
                self._failed_batches += 1
                log_now = self._failed_batches % _FAILURE_LOG_EVERY == 1
            if log_now:  # the error type and message only: query texts stay out of the logs
                logger.warning("labeling store write failed (%d records lost, %d in total): %s: %s",
                               len(batch), self._failed, type(exc).__name__, _first_line(exc))
        else:
            with self._lock:
                self._written += len(batch)


def _first_line(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy puts the SQL and its parameters, i.e. query texts, below it)."""
    return (str(exc).splitlines() or [""])[0][:200]
