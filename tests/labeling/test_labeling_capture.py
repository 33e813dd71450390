"""CaptureQueue: submit never blocks or raises, a full queue drops and counts, store failures are counted."""

from __future__ import annotations

import threading

import pytest
from labeling_helpers import record

from intent_pipeline.labeling.capture import CaptureQueue
from intent_pipeline.labeling.store import LabelingStore


class BlockingStore:
    """A store whose write waits until released: the writer thread is stuck, the queue fills up."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        self.batches: list[list] = []

    def record_captures(self, records):
        self.entered.set()
        self.release.wait(30)
        self.batches.append(list(records))
        return len(records)


class FailingStore:
    def __init__(self):
        self.calls = 0

    def record_captures(self, records):
        self.calls += 1
        raise RuntimeError("disk full")


def test_submit_never_blocks_when_full_and_counts_drops():
    store = BlockingStore()
    capture = CaptureQueue(store, maxsize=3, batch_size=1)
    capture.start()
    try:
        assert capture.submit(record("primo")) is True
        assert store.entered.wait(10)  # the writer holds "primo" and is stuck in the store
        accepted = [capture.submit(record(f"testo {i}")) for i in range(10)]
        assert accepted == [True] * 3 + [False] * 7  # would hang here if submit blocked
        assert capture.dropped == 7
        assert capture.pending == 3
    finally:
        store.release.set()
        capture.stop()
    assert capture.written == 4
    assert [r.text for batch in store.batches for r in batch] == ["primo", "testo 0", "testo 1", "testo 2"]


def test_stop_flushes_everything_queued_into_the_store(store):
    capture = CaptureQueue(store, maxsize=1000, batch_size=7)
    capture.start()
    for i in range(50):
        assert capture.submit(record(f"domanda {i % 20}"))
    capture.stop()
    assert (capture.written, capture.dropped, capture.failed) == (50, 0, 0)
    page = store.queue(limit=100)
    assert page.total == 20
    assert sum(item["count"] for item in page.items) == 50
    assert capture.submit(record("dopo lo stop")) is False  # stopped: refused and counted, not raised
    assert capture.dropped == 1


def test_a_read_only_store_counts_failures_and_never_raises(store_url, store):
    store.record_captures([record("già presente")])
    read_only = LabelingStore(store_url.replace("sqlite:///", "sqlite:///file:") + "?mode=ro&uri=true")
    capture = CaptureQueue(read_only, batch_size=2)
    capture.start()
    for i in range(5):
        assert capture.submit(record(f"nuova {i}")) is True
    capture.stop()
    assert (capture.failed, capture.written, capture.dropped) == (5, 0, 0)
    assert not capture.running
    assert store.queue().total == 1  # nothing got in
    read_only.close()


def test_a_store_that_raises_counts_failures_and_keeps_the_writer_alive():
    store = FailingStore()
    capture = CaptureQueue(store, batch_size=1)
    capture.start()
    assert capture.submit(record("uno"))
    assert capture.submit(record("due"))
    capture.stop()
    assert capture.failed == 2 and store.calls == 2  # the second batch was still attempted


def test_records_submitted_before_start_are_written_by_stop(store):
    capture = CaptureQueue(store)
    assert capture.submit(record("prima dell'avvio"))
    capture.stop()
    assert capture.written == 1
    assert store.queue().items[0]["text"] == "prima dell'avvio"


def test_maxsize_must_be_positive(store):
    with pytest.raises(ValueError, match="maxsize"):
        CaptureQueue(store, maxsize=0)
