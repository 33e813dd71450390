"""The labeling store: captured low-confidence queries and the labels experts give them (SQLAlchemy 2).

One row per normalised text (NFC, whitespace collapsed; identity = the casefolded form), so a query
asked a thousand times is labeled once and its `count` says how often it was seen. SQLite file by
default (`sqlite:///labeling.db`), PostgreSQL by URL (`postgresql+psycopg://user:pw@host/db`).

Schema and migrations
---------------------
The schema is versioned by the `schema_version` table (one row) and the ordered list `MIGRATIONS`
below: migration *i* (0-based) brings a database at version *i* to version *i + 1*. On start the store
runs every migration past the recorded version, each in its own transaction, and records the new
version. To change the schema: edit the ORM model `CapturedQuery`, then APPEND a function to
`MIGRATIONS` that alters a database of the previous version (never edit a released migration; the
first one is a frozen snapshot of version 1, not the ORM model). `tests/labeling/test_store.py`
checks that a freshly migrated database has exactly the ORM model's columns, so a model change
without its migration fails the tests. A database newer than the code refuses to open.

Concurrency
-----------
Two experts labeling one item at once: the label is written by a conditional
`UPDATE ... WHERE id = :id AND status = 'pending'`; the database serialises the two updates, exactly
one matches a row, the other sees zero rows and gets `ItemConflict` with the label that won.
Captures are upserts (`INSERT ... ON CONFLICT DO UPDATE` on SQLite and PostgreSQL), so replicas
capturing the same text at once add to one row.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Column,
    Connection,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    event,
    func,
    inspect,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.engine import Dialect, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool
from sqlalchemy.sql.expression import Executable
from sqlalchemy.types import TypeDecorator

from intent_pipeline.text import dedup_key, normalise_text

if TYPE_CHECKING:
    from intent_pipeline.labeling.capture import CaptureRecord

logger = logging.getLogger(__name__)

STATUSES = ("pending", "labeled", "skipped")
QueueOrder = Literal["confidence", "frequency"]
DEFAULT_STORE_URL = "sqlite:///labeling.db"
_MIGRATION_LOCK_KEY = 0x1AB3_11E6  # any constant: the advisory lock id of labeling-store migrations
_SQLITE_BUSY_TIMEOUT_S = 30  # writers wait for each other instead of failing with "database is locked"


def text_key_hash(text: str) -> str:
    """The identity of a text: sha256 of its normalised, casefolded form (fixed width, indexable anywhere)."""
    return hashlib.sha256(dedup_key(text).encode("utf-8")).hexdigest()


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC datetimes on every backend (SQLite keeps no offset: naive UTC is stored there)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the labeling store; pass a timezone-aware one")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    """Declarative base of the labeling store."""


class CapturedQuery(Base):
    """One captured query (normalised text), its latest prediction and the expert's decision."""

    __tablename__ = "captured_queries"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'labeled', 'skipped')", name="ck_captured_queries_status"),
        Index("ix_captured_queries_status_confidence", "status", "confidence"),
        Index("ix_captured_queries_status_count", "status", "count"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    text_key_hash: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    text: Mapped[str] = mapped_column(Text, nullable=False)
    predicted_intent: Mapped[str | None] = mapped_column(String(200))
    confidence: Mapped[float | None] = mapped_column(Float)
    ranking: Mapped[list | None] = mapped_column(JSON)
    model_version: Mapped[str | None] = mapped_column(String(200))
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
    count: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[str] = mapped_column(String(16), nullable=False, default="pending")
    label: Mapped[str | None] = mapped_column(String(200))
    labeled_by: Mapped[str | None] = mapped_column(String(200))
    labeled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# --- migrations -------------------------------------------------------------------------------------------

_SCHEMA_VERSION_METADATA = MetaData()
schema_version_table = Table(
    "schema_version", _SCHEMA_VERSION_METADATA,
    Column("id", Integer, primary_key=True),  # always 1: one row
    Column("version", Integer, nullable=False),
    Column("migrated_at", UTCDateTime, nullable=False),
)


def _migration_001_initial(connection: Connection) -> None:
    """Version 1: captured_queries. A frozen snapshot: later changes are new migrations, not edits here."""
    metadata = MetaData()
    Table(
        "captured_queries", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("text_key_hash", String(64), nullable=False, unique=True),
        Column("text", Text, nullable=False),
        Column("predicted_intent", String(200)),
        Column("confidence", Float),
        Column("ranking", JSON),
        Column("model_version", String(200)),
        Column("first_seen", UTCDateTime, nullable=False),
        Column("last_seen", UTCDateTime, nullable=False),
        Column("count", Integer, nullable=False),
        Column("status", String(16), nullable=False),
        Column("label", String(200)),
        Column("labeled_by", String(200)),
        Column("labeled_at", UTCDateTime),
        CheckConstraint("status IN ('pending', 'labeled', 'skipped')", name="ck_captured_queries_status"),
        Index("ix_captured_queries_status_confidence", "status", "confidence"),
        Index("ix_captured_queries_status_count", "status", "count"),
    )
    metadata.create_all(connection)


MIGRATIONS: list[Callable[[Connection], None]] = [
    _migration_001_initial,
]


class SchemaTooNewError(RuntimeError):
    """The database was migrated by a newer version of this code."""


def _current_schema_version(connection: Connection) -> int:
    if not inspect(connection).has_table("schema_version"):
        return 0
    version = connection.execute(select(schema_version_table.c.version).where(schema_version_table.c.id == 1))
    return version.scalar_one_or_none() or 0


def migrate(engine: Engine, migrations: Sequence[Callable[[Connection], None]] | None = None) -> int:
    """Run each migration past the recorded schema version, each in one transaction; return the version."""
    migrations = MIGRATIONS if migrations is None else migrations
    target = len(migrations)
    with engine.connect() as connection:
        version = _current_schema_version(connection)
    if version > target:
        raise SchemaTooNewError(
            f"labeling store {engine.url.render_as_string(hide_password=True)} is at schema version "
            f"{version}, this code knows versions up to {target}: upgrade intent_pipeline"
        )
    for index in range(version, target):
        with engine.begin() as connection:
            # Replicas starting together migrate one at a time: SQLite by BEGIN IMMEDIATE (the writer engine),
            # PostgreSQL by a transaction-scoped advisory lock.
            if connection.dialect.name == "postgresql":
                connection.execute(sql_text("SELECT pg_advisory_xact_lock(:key)"),
                                   {"key": _MIGRATION_LOCK_KEY})
            _SCHEMA_VERSION_METADATA.create_all(connection)
            # Re-read under the lock: another replica may have migrated meanwhile.
            if _current_schema_version(connection) > index:
                continue
            migrations[index](connection)
            values = {"version": index + 1, "migrated_at": utcnow()}
            if index == 0 and connection.execute(select(schema_version_table.c.id)).first() is None:
                connection.execute(schema_version_table.insert().values(id=1, **values))
            else:
                connection.execute(schema_version_table.update().where(schema_version_table.c.id == 1)
                                   .values(**values))
        logger.info("labeling store migrated to schema version %d", index + 1)
    return target


# --- the store --------------------------------------------------------------------------------------------

class ItemNotFound(LookupError):
    """No captured query has this id."""


class ItemConflict(RuntimeError):
    """The item was already labeled or skipped (by someone else, or earlier); `current` is its state now."""

    def __init__(self, current: dict[str, Any]):
        super().__init__(f"item {current['id']} is already {current['status']}"
                         + (f" as {current['label']!r}" if current.get("label") else ""))
        self.current = current


@dataclass(frozen=True)
class QueuePage:
    """One page of pending items and the total number pending."""

    items: list[dict[str, Any]]
    total: int


def _plain_ranking(ranking: Any) -> list[dict[str, Any]] | None:
    """The ranking as plain JSON ([{"intent", "score"}]): accepts a JSON string and numpy scalars."""
    if ranking is None:
        return None
    if isinstance(ranking, str | bytes):
        ranking = json.loads(ranking)
    return json.loads(json.dumps(ranking, default=_json_scalar))


def _json_scalar(value: Any) -> Any:
    """numpy scalars -> Python numbers; anything else unknown -> its string form."""
    return value.item() if hasattr(value, "item") else str(value)


def _plain_confidence(confidence: Any) -> float | None:
    if confidence is None:
        return None
    value = float(confidence)
    return value if math.isfinite(value) else None


def _item_dict(row: CapturedQuery) -> dict[str, Any]:
    return {
        "id": row.id, "text": row.text, "predicted_intent": row.predicted_intent,
        "confidence": row.confidence, "ranking": row.ranking, "model_version": row.model_version,
        "count": row.count,
        "first_seen": row.first_seen, "last_seen": row.last_seen, "status": row.status,
        "label": row.label, "labeled_by": row.labeled_by, "labeled_at": row.labeled_at,
    }


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    database = parsed.database or ""
    in_memory = database in ("", ":memory:") or "mode=memory" in database
    kwargs: dict[str, Any] = {"connect_args": {"timeout": _SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False}}
    if in_memory:  # one shared connection, or every thread would see its own empty database
        kwargs["poolclass"] = StaticPool
    engine = create_engine(parsed, **kwargs)

    # pysqlite's own implicit BEGIN skips DDL and SAVEPOINT; SQLAlchemy's documented fix: let the driver
    # autocommit and emit BEGIN ourselves, so a migration and its version bump commit together.
    # Writers ask for BEGIN IMMEDIATE (the write lock up front): read-then-write can never deadlock.
    @event.listens_for(engine, "connect")
    def _driver_autocommit(dbapi_connection, _record) -> None:  # noqa: ANN001
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _explicit_begin(connection: Connection) -> None:
        connection.exec_driver_sql(connection.get_execution_options().get("sqlite_begin", "BEGIN"))

    return engine


def _merge_values(current: Any, new: Any) -> dict[str, Any]:
    """What a repeated capture changes: count added, last_seen only forward, the latest prediction."""
    return {
        "count": current.count + new["count"],
        "last_seen": case((new["last_seen"] > current.last_seen, new["last_seen"]), else_=current.last_seen),
        **{name: new[name] for name in ("predicted_intent", "confidence", "ranking", "model_version")},
    }


def upsert_statement(dialect_name: str, row: dict[str, Any]) -> Executable | None:
    """INSERT ... ON CONFLICT (text_key_hash) DO UPDATE on SQLite and PostgreSQL; None on other databases."""
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        return None
    table = CapturedQuery.__table__
    statement = insert(table).values(**row)
    return statement.on_conflict_do_update(index_elements=[table.c.text_key_hash],
                                           set_=_merge_values(table.c, statement.excluded))


class LabelingStore:
    """Captured queries and their labels in a SQL database; the schema is created/migrated on init."""

    def __init__(self, url: str = DEFAULT_STORE_URL):
        self.engine = _make_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=True)
        # Same pool; on SQLite its transactions take the write lock up front (see _make_engine).
        self._writer = self.engine.execution_options(sqlite_begin="BEGIN IMMEDIATE")
        self.schema_version = migrate(self._writer)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._write_sessions = sessionmaker(self._writer, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"LabelingStore({self.url!r})"

    def close(self) -> None:
        """Release the connection pool."""
        self.engine.dispose()

    # capture ------------------------------------------------------------------------------------------

    def record_captures(self, records: Iterable[CaptureRecord]) -> int:
        """Upsert captured predictions (one row per normalised text: count added, last_seen and the latest
        prediction updated; the label of an already labeled row is kept). Returns the number of texts written.
        Empty texts are ignored."""
        merged: dict[str, dict[str, Any]] = {}
        for record in records:
            text = normalise_text(record.text or "")
            if not text:
                continue
            seen = getattr(record, "captured_at", None) or utcnow()
            key = text_key_hash(text)
            latest = {"predicted_intent": record.predicted_intent,
                      "confidence": _plain_confidence(record.confidence),
                      "ranking": _plain_ranking(record.ranking),
                      "model_version": None if record.model_version is None else str(record.model_version)}
            if key in merged:  # several captures of one text in a batch: one upsert with their sum
                row = merged[key]
                row["count"] += 1
                row["first_seen"] = min(row["first_seen"], seen)
                if seen >= row["last_seen"]:
                    row.update(latest, last_seen=seen)
            else:
                merged[key] = {"text_key_hash": key, "text": text, "first_seen": seen, "last_seen": seen,
                               "count": 1, "status": "pending", **latest}
        if not merged:
            return 0
        with self._writer.begin() as connection:
            for row in merged.values():
                self._upsert(connection, row)
        return len(merged)

    def _upsert(self, connection: Connection, row: dict[str, Any]) -> None:
        statement = upsert_statement(connection.dialect.name, row)
        if statement is not None:
            connection.execute(statement)
            return
        table = CapturedQuery.__table__  # portable fallback: update, insert when no row matched
        changed = connection.execute(update(table).where(table.c.text_key_hash == row["text_key_hash"])
                                     .values(_merge_values(table.c, row)))
        if changed.rowcount == 0:
            connection.execute(table.insert().values(**row))

    # queue and decisions -----------------------------------------------------------------------------

    def queue(self, limit: int = 50, offset: int = 0, order: QueueOrder = "confidence") -> QueuePage:
        """Pending items: least confident first (`confidence`) or most often seen first (`frequency`)."""
        if order == "confidence":
            ordering = (CapturedQuery.confidence.asc().nulls_first(), CapturedQuery.count.desc(),
                        CapturedQuery.id.asc())
        elif order == "frequency":
            ordering = (CapturedQuery.count.desc(), CapturedQuery.last_seen.desc(), CapturedQuery.id.asc())
        else:
            raise ValueError(f"order must be 'confidence' or 'frequency', got {order!r}")
        pending = CapturedQuery.status == "pending"
        with self._sessions() as session:
            total = session.scalar(select(func.count()).select_from(CapturedQuery).where(pending)) or 0
            rows = session.scalars(select(CapturedQuery).where(pending).order_by(*ordering)
                                   .limit(limit).offset(offset)).all()
            return QueuePage(items=[_item_dict(row) for row in rows], total=total)

    def get_item(self, item_id: int) -> dict[str, Any] | None:
        """One item by id, or None."""
        with self._sessions() as session:
            row = session.get(CapturedQuery, item_id)
            return None if row is None else _item_dict(row)

    def label_item(self, item_id: int, label: str, labeled_by: str | None) -> dict[str, Any]:
        """Label a pending item; ItemConflict when it is no longer pending, ItemNotFound when absent."""
        return self._decide(item_id, status="labeled", label=label, labeled_by=labeled_by)

    def skip_item(self, item_id: int, skipped_by: str | None) -> dict[str, Any]:
        """Skip a pending item (it leaves the queue and the export); same conflict rules as labeling."""
        return self._decide(item_id, status="skipped", label=None, labeled_by=skipped_by)

    def _decide(self, item_id: int, *, status: str, label: str | None, labeled_by: str | None
                ) -> dict[str, Any]:
        with self._write_sessions() as session, session.begin():
            # The WHERE status = 'pending' is the whole concurrency story: the loser updates zero rows.
            result = session.execute(
                update(CapturedQuery)
                .where(CapturedQuery.id == item_id, CapturedQuery.status == "pending")
                .values(status=status, label=label, labeled_by=labeled_by, labeled_at=utcnow())
                .execution_options(synchronize_session=False)
            )
            won = result.rowcount == 1
        current = self.get_item(item_id)
        if current is None:
            raise ItemNotFound(f"no labeling item with id {item_id}")
        if not won:
            raise ItemConflict(current)
        return current

    def counts(self) -> dict[str, int]:
        """Number of items per status."""
        with self._sessions() as session:
            rows = session.execute(select(CapturedQuery.status, func.count())
                                   .group_by(CapturedQuery.status)).all()
        return {status: 0 for status in STATUSES} | {status: n for status, n in rows}

    def iter_labeled(self, batch_size: int = 1000) -> Iterator[dict[str, Any]]:
        """Every labeled item in id order, read in keyset-paged batches (no long-held transaction)."""
        last_id = 0
        while True:
            with self._sessions() as session:
                rows = session.scalars(
                    select(CapturedQuery)
                    .where(CapturedQuery.status == "labeled", CapturedQuery.id > last_id)
                    .order_by(CapturedQuery.id).limit(batch_size)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _item_dict(row)
            last_id = rows[-1].id
