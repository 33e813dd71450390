"""The labeled export: labeled items as JSONL (the training data contract) or CSV.

Contract (ARCHITECTURE.md, "Data contract: the labeled export"): one JSON object per line with
`text` and `label`, plus `id` (the labeling item id), `labeled_by`, `labeled_at` (ISO 8601, UTC),
`predicted_label` (what the serving model said), `confidence` and `source` ("labeling").
Used by the API (`GET /api/v1/labeling/export`) and by `intent-pipeline export --out data/01_raw/x.jsonl`,
whose file the data_engineering pipeline reads beside the bundled one.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Collection, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from intent_pipeline.labeling.store import LabelingStore, SchemaTooNewError

logger = logging.getLogger(__name__)

EXPORT_FIELDS = ("text", "label", "id", "labeled_by", "labeled_at", "predicted_label", "confidence", "source")
EXPORT_SOURCE = "labeling"
ExportFormat = Literal["jsonl", "csv"]
MEDIA_TYPES = {"jsonl": "application/x-ndjson; charset=utf-8", "csv": "text/csv; charset=utf-8"}


class LabelingStoreUnavailable(OSError):
    """The labeling store could not be opened or read (missing file, database down, bad URL)."""


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def export_record(item: dict[str, Any]) -> dict[str, Any]:
    """A labeled store item as one export-contract record (fields in EXPORT_FIELDS order)."""
    return {
        "text": item["text"], "label": item["label"], "id": item["id"], "labeled_by": item["labeled_by"],
        "labeled_at": _iso(item["labeled_at"]), "predicted_label": item["predicted_intent"],
        "confidence": item["confidence"], "source": EXPORT_SOURCE,
    }


def iter_export_lines(items: Iterable[dict[str, Any]], fmt: ExportFormat) -> Iterator[str]:
    """The export file as lines: JSONL (UTF-8 text, no ASCII escaping) or CSV with a header row."""
    if fmt == "jsonl":
        for item in items:
            yield json.dumps(export_record(item), ensure_ascii=False) + "\n"
    elif fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=EXPORT_FIELDS)
        writer.writeheader()
        for item in items:
            writer.writerow(export_record(item))
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
        yield buffer.getvalue()  # only the header when nothing was labeled
    else:
        raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")


def _redacted(store_url: str) -> str:
    """The URL without its password, for messages."""
    try:
        return make_url(store_url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - a malformed URL: say nothing of it rather than leak it
        return "<labeling store URL>"


def _check_sqlite_file_exists(store_url: str) -> None:
    """An export from a SQLite path that does not exist would silently create an empty store: refuse."""
    try:
        url = make_url(store_url)
    except Exception as error:  # noqa: BLE001 - sqlalchemy raises ArgumentError for a malformed URL
        raise ValueError(f"not a database URL ({type(error).__name__}): set LABELING_STORE_URL or "
                         "--store-url to e.g. sqlite:///labeling.db") from None
    database = url.database or ""
    if url.get_backend_name() != "sqlite" or database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise FileNotFoundError(
            f"labeling store not found: {Path(database).resolve()} (from {_redacted(store_url)}); "
            "set LABELING_STORE_URL or --store-url to the server's store"
        )


def export_labels(store_url: str, out_path: str | Path, fmt: str = "jsonl", *,
                  labels: Collection[str] | None = None) -> int:
    """Write every labeled item of the store to `out_path` (atomically); return the number of rows written.

    `labels`, when given, keeps only rows whose label is in that set (the rest are counted and logged),
    so a file written into data/01_raw passes data_engineering after a change of the label set.
    """
    if fmt not in MEDIA_TYPES:
        raise ValueError(f"export format must be 'jsonl' or 'csv', got {fmt!r}")
    _check_sqlite_file_exists(store_url)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    allowed = None if labels is None else set(labels)
    rows = outside = 0

    def kept(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        nonlocal rows, outside
        for item in items:
            if allowed is not None and item["label"] not in allowed:
                outside += 1
                continue
            rows += 1
            yield item

    # Written beside the target and renamed: a reader of data/01_raw/*.jsonl never sees half a file.
    partial = out_path.with_name(f".{out_path.name}.{os.getpid()}.partial")
    try:
        store = LabelingStore(store_url)
        try:
            with partial.open("w", encoding="utf-8", newline="") as handle:
                handle.writelines(iter_export_lines(kept(store.iter_labeled()), fmt))  # type: ignore[arg-type]
        finally:
            store.close()
        os.replace(partial, out_path)
    except (SQLAlchemyError, ImportError, SchemaTooNewError) as error:  # down, driver missing, newer schema
        raise LabelingStoreUnavailable(f"cannot read the labeling store {_redacted(store_url)}: "
                                       f"{(str(error).splitlines() or [''])[0]}") from error
    finally:
        partial.unlink(missing_ok=True)
    if outside:
        logger.warning("%d labeled rows left out of %s: their label is not in the label set %s",
                       outside, out_path, sorted(allowed or ()))
    logger.info("exported %d labeled rows to %s (%s)", rows, out_path, fmt)
    return rows
