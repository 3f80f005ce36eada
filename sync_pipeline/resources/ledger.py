"""The sync ledger, the webhook inbox, the exceptions table and cursors, on SQLAlchemy.

SQLite by default (one file beside Dagster's storage), PostgreSQL in production
(`SYNC_DATABASE_URL=postgresql+psycopg2://...`). The ledger is layer 2 of the idempotency design:
a record whose content hash (`mapping/content_hash.py`) is unchanged is not written again, and it
is written only after the target accepted the upsert, so a crash in between costs one harmless
repeat upsert.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import PrivateAttr
from sqlalchemy.dialects import postgresql, sqlite

from sync_pipeline import settings
from sync_pipeline.mapping.external_ids import account_of_external_id

metadata = sa.MetaData()

sync_ledger = sa.Table(
    "sync_ledger",
    metadata,
    sa.Column("target", sa.String(32), primary_key=True),
    sa.Column("record_type", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.String(255), primary_key=True),
    sa.Column("internal_id", sa.String(64), nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("source_id", sa.String(255)),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("synced_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(64)),
    # Event routing asks "which partition holds this Stripe object?" on every sensor tick.
    sa.Index("ix_sync_ledger_source_id", "source_id"),
)

sync_exceptions = sa.Table(
    "sync_exceptions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("target", sa.String(32), nullable=False),
    sa.Column("record_type", sa.String(64), nullable=False),
    sa.Column("external_id", sa.String(255), nullable=False),
    sa.Column("source_id", sa.String(255)),
    sa.Column("partition_key", sa.String(32)),
    sa.Column("field", sa.String(128), nullable=False, server_default=""),
    sa.Column("value", sa.Text),
    sa.Column("error_code", sa.String(64), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("fix", sa.Text, nullable=False),
    sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("occurrences", sa.Integer, nullable=False, server_default="1"),
    sa.Column("run_id", sa.String(64)),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    # The Stripe side of the problem, for the worklist: whose money and how much (minor units, never a float).
    # Null when the writer that booked it did not know them; the worklist asset fills them in from Stripe.
    sa.Column("stripe_customer", sa.String(255)),
    sa.Column("currency", sa.String(8)),
    sa.Column("amount_minor", sa.BigInteger),
    # One open row per problem: a record failing the same way on every run is one exception, counted.
    sa.UniqueConstraint("target", "record_type", "external_id", "error_code", "field", name="uq_sync_exception"),
)

webhook_inbox = sa.Table(
    "webhook_inbox",
    metadata,
    sa.Column("event_id", sa.String(255), primary_key=True),
    sa.Column("event_type", sa.String(128), nullable=False),
    sa.Column("event_created", sa.BigInteger, nullable=False),
    sa.Column("object_id", sa.String(255)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("processed_at", sa.DateTime(timezone=True)),
    sa.Column("run_key", sa.String(255)),
    # The Stripe account whose endpoint received the event (SYNC_STRIPE_ACCOUNTS); NULL: the default account, as
    # every event stored before several accounts was. Each account's sensor drains its own.
    sa.Column("account", sa.String(16)),
    sa.Index("ix_webhook_inbox_unprocessed", "processed_at", "event_created"),
)

# 1970-01-01 to 2100-01-01 UTC in seconds. `created` picks the event's partition; a value outside this is a
# timestamp in milliseconds or garbage, and one beyond 64 bits cannot even be bound (SQLite OverflowError).
EVENT_CREATED_RANGE = (0, 4_102_444_800)


def _event_object(event: dict) -> dict:
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def _text_problem(value: Any, column: sa.Column, *, required: bool = True) -> str | None:
    """Why `value` cannot go into `column` on SQLite and PostgreSQL alike (None when it can)."""
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        return "must be a non-empty string" if required else "must be a string when present"
    if len(value) > column.type.length:
        # PostgreSQL enforces VARCHAR(n) and would fail the insert; SQLite would store it silently.
        return f"is longer than {column.type.length} characters"
    if "\x00" in value:
        return "contains a NUL character (PostgreSQL text cannot hold one)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode (a lone surrogate escape such as \\ud800)"
    return None


def inbox_event_problem(event: Any) -> str | None:
    """None when the inbox can store `event`, else what is wrong, in words (for a 400 answer).

    Checked before the insert, so a malformed event is refused the same way on SQLite and PostgreSQL
    instead of surfacing as a driver error.
    """
    if not isinstance(event, dict):
        return "the event is not a JSON object"
    checks = (
        ("id", _text_problem(event.get("id"), webhook_inbox.c.event_id)),
        ("type", _text_problem(event.get("type"), webhook_inbox.c.event_type)),
        ("data.object.id", _text_problem(_event_object(event).get("id"), webhook_inbox.c.object_id, required=False)),
    )
    for field, problem in checks:
        if problem:
            return f"the event's {field} {problem}"
    created, (low, high) = event.get("created"), EVENT_CREATED_RANGE
    if not isinstance(created, int) or isinstance(created, bool) or not low <= created < high:
        return f"the event's created must be a whole number of seconds from {low} to {high - 1}"
    return None


sync_cursors = sa.Table(
    "sync_cursors",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class LedgerEntry:
    target: str
    record_type: str
    external_id: str
    internal_id: str
    content_hash: str
    source_id: str | None = None
    partition_key: str | None = None
    run_id: str | None = None
    synced_at: dt.datetime | None = None


def _ledger_row(entry: LedgerEntry, now: dt.datetime) -> dict[str, Any]:
    """The `sync_ledger` row of an entry (stamped `now` unless it carries its own time)."""
    return {
        "target": entry.target,
        "record_type": entry.record_type,
        "external_id": entry.external_id,
        "internal_id": entry.internal_id,
        "content_hash": entry.content_hash,
        "source_id": entry.source_id,
        "partition_key": entry.partition_key,
        "run_id": entry.run_id,
        "synced_at": entry.synced_at or now,
    }


@dataclass(frozen=True)
class ExceptionRow:
    """What the exceptions table holds of one problem (the catalogue in errors.py produces these)."""

    target: str
    record_type: str
    external_id: str
    error_code: str
    message: str
    fix: str
    field: str = ""
    value: str | None = None
    source_id: str | None = None
    stripe_customer: str | None = None
    currency: str | None = None
    amount_minor: int | None = None


# Columns added to `sync_exceptions` after its first release: a database created before them gets them on open
# (all nullable, so ADD COLUMN is enough on SQLite and PostgreSQL, and old rows read as "not known").
ADDED_EXCEPTION_COLUMNS = ("stripe_customer", "currency", "amount_minor")
# The same for every table: columns added after its first release, nullable, added on open.
ADDED_COLUMNS = {sync_exceptions: ADDED_EXCEPTION_COLUMNS, webhook_inbox: ("account",)}
# What the Stripe side of an exception can be filled in with (`Ledger.set_exception_context`).
EXCEPTION_CONTEXT = ("stripe_customer", "currency", "amount_minor")


class InboxConflict(Exception):
    """An event id already in the inbox for another Stripe account (no payload in the message)."""

    def __init__(self, event_id: str, stored: str | None, received: str | None):
        super().__init__(
            f"event {event_id} is already in the inbox for Stripe account {stored or '(default)'}, not "
            f"{received or '(default)'}: check that each account's webhook endpoint points at its own path"
        )


@dataclass(frozen=True)
class InboxStatus:
    depth: int
    oldest_unprocessed: dict | None
    last_processed: dict | None


# A ledger not scoped to a Stripe account sees every account's rows (the CLI, the Salesforce leg, the tests).
_EVERY_ACCOUNT = object()


class Ledger:
    """All reads and writes of the pipeline's own tables."""

    # With several Stripe accounts the rows of each are told apart by their external ids (`stripe-eu-...`), so the
    # tables need no account column and a deployment's rows from before several accounts stay the default's.
    scope: object = _EVERY_ACCOUNT

    def __init__(self, url: str, *, create: bool = True, engine: sa.Engine | None = None):
        self.url = url
        try:
            self.engine = engine or create_ledger_engine(url)
            if create:
                _create_tables(self.engine)
        except (sa.exc.SQLAlchemyError, ValueError) as exc:
            # One line naming SYNC_DATABASE_URL, password hidden, instead of a driver traceback.
            raise settings.ConfigError(settings.database_open_problem(url, _reason(exc))) from None

    def for_account(self, account: str | None) -> Ledger:
        """The same tables as one Stripe account's assets see them (None: the default account): its records and
        exceptions only, so a day's reads never mix two entities."""
        view = copy.copy(self)
        view.scope = account or None
        return view

    def _mine(self, external_id: str | None) -> bool:
        return self.scope is _EVERY_ACCOUNT or account_of_external_id(external_id or "") == self.scope

    # -- helpers -------------------------------------------------------------------------------
    def _insert(self, table: sa.Table):
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    # -- the ledger ----------------------------------------------------------------------------
    def lookup(self, target: str, record_type: str, external_ids: Iterable[str]) -> dict[str, LedgerEntry]:
        ids = list(dict.fromkeys(external_ids))
        found: dict[str, LedgerEntry] = {}
        with self.engine.connect() as conn:
            # Chunked: SQLite caps bound parameters, and partitions can hold tens of thousands.
            for start in range(0, len(ids), 900):
                rows = conn.execute(
                    sa.select(sync_ledger).where(
                        sync_ledger.c.target == target,
                        sync_ledger.c.record_type == record_type,
                        sync_ledger.c.external_id.in_(ids[start : start + 900]),
                    )
                )
                for row in rows.mappings():
                    found[row["external_id"]] = LedgerEntry(**row)
        return found

    def synced_external_ids(self, target: str, record_types: Sequence[str], external_ids: Iterable[str]) -> set[str]:
        """Which of these external ids the ledger holds as any of `record_types`: only the ids read, for a question
        over a customer's whole history (thousands of ids a day) that `lookup`'s full entries would make slow."""
        ids = list(dict.fromkeys(external_ids))
        found: set[str] = set()
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 900):  # SQLite caps bound parameters
                found.update(
                    conn.execute(
                        sa.select(sync_ledger.c.external_id).where(
                            sync_ledger.c.target == target,
                            sync_ledger.c.record_type.in_(list(record_types)),
                            sync_ledger.c.external_id.in_(ids[start : start + 900]),
                        )
                    ).scalars()
                )
        return found

    def record_synced(self, entries: Sequence[LedgerEntry]) -> None:
        if not entries:
            return
        now = utcnow()
        rows = [_ledger_row(e, now) for e in entries]
        stmt = self._insert(sync_ledger)
        stmt = stmt.on_conflict_do_update(
            index_elements=["target", "record_type", "external_id"],
            set_={
                c: stmt.excluded[c]
                for c in ("internal_id", "content_hash", "source_id", "partition_key", "run_id", "synced_at")
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, rows)
        # A record that synced is no longer an exception: a fixed record needs no manual step.
        by_type: dict[tuple[str, str], list[str]] = {}
        for e in entries:
            by_type.setdefault((e.target, e.record_type), []).append(e.external_id)
        for (target, record_type), ids in by_type.items():
            self.resolve_exceptions(target, record_type, ids)

    def claim(self, entry: LedgerEntry) -> bool:
        """Record `entry` unless its key is recorded already; True when this call recorded it.

        Two runs racing to record the same write (both got the one object Stripe made for an Idempotency-Key)
        learn here which of them reports it as its own: exactly one does.
        """
        stmt = (
            self._insert(sync_ledger)
            .values(_ledger_row(entry, utcnow()))
            .on_conflict_do_nothing(index_elements=["target", "record_type", "external_id"])
        )
        with self.engine.begin() as conn:
            claimed = conn.execute(stmt).rowcount == 1
        if claimed:
            self.resolve_exceptions(entry.target, entry.record_type, [entry.external_id])
        return claimed

    def entries(self, target: str | None = None, partition_key: str | None = None) -> list[LedgerEntry]:
        query = sa.select(sync_ledger)
        if target:
            query = query.where(sync_ledger.c.target == target)
        if partition_key:
            query = query.where(sync_ledger.c.partition_key == partition_key)
        with self.engine.connect() as conn:
            return [LedgerEntry(**row) for row in conn.execute(query).mappings() if self._mine(row["external_id"])]

    def partitions_of_sources(self, source_ids: Iterable[str]) -> dict[str, str]:
        """The partition that last synced each Stripe object (by `source_id`), for routing events."""
        ids = list(dict.fromkeys(source_ids))
        found: dict[str, str] = {}
        query = sa.select(sync_ledger.c.source_id, sync_ledger.c.partition_key, sync_ledger.c.external_id).order_by(
            sync_ledger.c.synced_at
        )
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 900):
                chunk = query.where(
                    sync_ledger.c.source_id.in_(ids[start : start + 900]), sync_ledger.c.partition_key.is_not(None)
                )
                for source_id, partition_key, external_id in conn.execute(chunk):
                    if self._mine(external_id):
                        found[source_id] = partition_key  # newest sync wins (ordered by synced_at)
        return found

    # -- exceptions ----------------------------------------------------------------------------
    def record_exceptions(
        self, rows: Sequence[ExceptionRow], partition_key: str | None = None, run_id: str | None = None
    ) -> None:
        if not rows:
            return
        now = utcnow()
        values = [
            {
                "target": r.target,
                "record_type": r.record_type,
                "external_id": r.external_id,
                "source_id": r.source_id,
                "partition_key": partition_key,
                "field": r.field or "",
                "value": r.value,
                "error_code": r.error_code,
                "message": r.message,
                "fix": r.fix,
                "first_seen_at": now,
                "last_seen_at": now,
                "occurrences": 1,
                "run_id": run_id,
                "resolved_at": None,
                "stripe_customer": r.stripe_customer,
                "currency": r.currency,
                "amount_minor": r.amount_minor,
            }
            for r in rows
        ]
        stmt = self._insert(sync_exceptions)
        stmt = stmt.on_conflict_do_update(
            index_elements=["target", "record_type", "external_id", "error_code", "field"],
            set_={
                "value": stmt.excluded.value,
                "message": stmt.excluded.message,
                "fix": stmt.excluded.fix,
                "last_seen_at": stmt.excluded.last_seen_at,
                "run_id": stmt.excluded.run_id,
                "partition_key": stmt.excluded.partition_key,
                "resolved_at": None,
                "occurrences": sync_exceptions.c.occurrences + 1,
                # A writer that does not know the customer or amount keeps what an earlier one (or Stripe) said.
                **{c: sa.func.coalesce(stmt.excluded[c], sync_exceptions.c[c]) for c in EXCEPTION_CONTEXT},
            },
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, values)

    def resolve_exceptions(self, target: str, record_type: str, external_ids: Sequence[str]) -> int:
        resolved = 0
        with self.engine.begin() as conn:
            for start in range(0, len(external_ids), 900):
                result = conn.execute(
                    sa.update(sync_exceptions)
                    .where(
                        sync_exceptions.c.target == target,
                        sync_exceptions.c.record_type == record_type,
                        sync_exceptions.c.external_id.in_(list(external_ids[start : start + 900])),
                        sync_exceptions.c.resolved_at.is_(None),
                    )
                    .values(resolved_at=utcnow())
                )
                resolved += result.rowcount
        return resolved

    def open_exceptions(
        self, partition_key: str | None = None, target: str | None = None, without_partition: bool = False
    ) -> list[dict]:
        """Open exceptions, newest first: all, one day's (`partition_key`), or those of no day (`without_partition`:
        Salesforce → Stripe billing and the write-back)."""
        query = sa.select(sync_exceptions).where(sync_exceptions.c.resolved_at.is_(None))
        if partition_key:
            query = query.where(sync_exceptions.c.partition_key == partition_key)
        if without_partition:
            query = query.where(sync_exceptions.c.partition_key.is_(None))
        if target:
            query = query.where(sync_exceptions.c.target == target)
        query = query.order_by(sync_exceptions.c.last_seen_at.desc(), sync_exceptions.c.id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings() if self._mine(row["external_id"])]

    def exceptions(self, *, open_only: bool = True, error_code: str | None = None) -> list[dict]:
        """Exceptions of every day and of none, oldest problem first (the worklist's order): open ones only, or
        resolved ones too; of one error code when `error_code` is given (any letter case)."""
        query = sa.select(sync_exceptions)
        if open_only:
            query = query.where(sync_exceptions.c.resolved_at.is_(None))
        if error_code:
            query = query.where(sync_exceptions.c.error_code == error_code.upper())
        query = query.order_by(sync_exceptions.c.first_seen_at, sync_exceptions.c.id)
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(query).mappings() if self._mine(row["external_id"])]

    def set_exception_context(self, exception_id: int, **context: Any) -> None:
        """Fill in the Stripe customer, currency and amount (minor units) of an exception, as Stripe gives them."""
        unknown = set(context) - set(EXCEPTION_CONTEXT)
        if unknown:
            raise ValueError(f"set_exception_context takes {', '.join(EXCEPTION_CONTEXT)}; got {', '.join(unknown)}")
        with self.engine.begin() as conn:
            conn.execute(sa.update(sync_exceptions).where(sync_exceptions.c.id == exception_id).values(**context))

    # -- webhook inbox (layer 3: the Stripe event id is the primary key) ----------------------
    def add_event(self, event: dict, payload: str | None = None) -> bool:
        """Store a Stripe event once, as received by this ledger's account (`for_account`; unscoped: the default
        account's); returns False when it was already in the inbox.

        Raises ValueError (naming the field, never echoing its value) for an event the inbox cannot hold, and
        InboxConflict when another account's endpoint already stored an event with this id.
        """
        problem = inbox_event_problem(event)
        if problem:
            raise ValueError(f"not stored in the webhook inbox: {problem}")
        obj = _event_object(event)
        account = None if self.scope is _EVERY_ACCOUNT else self.scope
        stmt = (
            self._insert(webhook_inbox)
            .values(
                event_id=event["id"],
                event_type=event["type"],
                event_created=int(event["created"]),
                object_id=obj.get("id"),
                payload=payload if payload is not None else json.dumps(event),
                received_at=utcnow(),
                account=account,
            )
            .on_conflict_do_nothing(index_elements=["event_id"])
        )
        with self.engine.begin() as conn:
            if conn.execute(stmt).rowcount == 1:
                return True
            stored = conn.execute(
                sa.select(webhook_inbox.c.account).where(webhook_inbox.c.event_id == event["id"])
            ).scalar()
        # Stripe's event ids are unique across accounts; the same id from two accounts' endpoints is a
        # misrouted endpoint or a replay, and storing it once for the first would lose it for the other.
        if stored != account:
            raise InboxConflict(event["id"], stored, account)
        return False

    def _inbox_scoped(self, query):
        """`query` on the inbox rows of this ledger's account (all of them when unscoped)."""
        if self.scope is _EVERY_ACCOUNT:
            return query
        if self.scope is None:
            return query.where(webhook_inbox.c.account.is_(None))
        return query.where(webhook_inbox.c.account == self.scope)

    def unprocessed_events(self, limit: int = 1000) -> list[dict]:
        query = (
            sa.select(webhook_inbox)
            .where(webhook_inbox.c.processed_at.is_(None))
            .order_by(webhook_inbox.c.event_created, webhook_inbox.c.event_id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(row) for row in conn.execute(self._inbox_scoped(query)).mappings()]

    def mark_processed(self, event_ids: Sequence[str], run_key: str | None = None) -> None:
        with self.engine.begin() as conn:
            for start in range(0, len(event_ids), 900):
                conn.execute(
                    self._inbox_scoped(sa.update(webhook_inbox))
                    .where(webhook_inbox.c.event_id.in_(list(event_ids[start : start + 900])))
                    .values(processed_at=utcnow(), run_key=run_key)
                )

    def inbox_status(self) -> InboxStatus:
        cols = (
            webhook_inbox.c.event_id,
            webhook_inbox.c.event_type,
            webhook_inbox.c.event_created,
            webhook_inbox.c.received_at,
            webhook_inbox.c.processed_at,
        )
        with self.engine.connect() as conn:
            depth = conn.execute(
                self._inbox_scoped(sa.select(sa.func.count()).select_from(webhook_inbox)).where(
                    webhook_inbox.c.processed_at.is_(None)
                )
            ).scalar_one()
            oldest = (
                conn.execute(
                    self._inbox_scoped(sa.select(*cols))
                    .where(webhook_inbox.c.processed_at.is_(None))
                    .order_by(webhook_inbox.c.event_created)
                    .limit(1)
                )
                .mappings()
                .first()
            )
            last = (
                conn.execute(
                    self._inbox_scoped(sa.select(*cols))
                    .where(webhook_inbox.c.processed_at.is_not(None))
                    .order_by(webhook_inbox.c.processed_at.desc())
                    .limit(1)
                )
                .mappings()
                .first()
            )
        return InboxStatus(depth, dict(oldest) if oldest else None, dict(last) if last else None)

    # -- cursors (high-water marks) ------------------------------------------------------------
    def get_cursor(self, name: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sync_cursors.c.value).where(sync_cursors.c.name == name)).scalar()

    def set_cursor(self, name: str, value: str) -> None:
        stmt = self._insert(sync_cursors).values(name=name, value=value, updated_at=utcnow())
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"value": stmt.excluded.value, "updated_at": stmt.excluded.updated_at}
        )
        with self.engine.begin() as conn:
            conn.execute(stmt)


def _create_tables(engine: sa.Engine, attempts: int = 5) -> None:
    # Two processes starting at once (a sensor run and a scheduled run) may both see the tables missing;
    # the loser's CREATE fails with "already exists", and a second look finds them.
    for attempt in range(attempts):
        try:
            metadata.create_all(engine)
            _add_missing_columns(engine)
            return
        except (sa.exc.OperationalError, sa.exc.ProgrammingError, sa.exc.IntegrityError):
            if attempt == attempts - 1:
                raise


def _add_missing_columns(engine: sa.Engine) -> None:
    """Bring tables created by an earlier release up to date (create_all adds no column): `ADDED_COLUMNS`.

    Two processes upgrading at once: the loser's ADD COLUMN fails with "duplicate column", and the caller's
    next attempt finds the column there."""
    inspector = sa.inspect(engine)
    missing = []
    for table, added in ADDED_COLUMNS.items():
        present = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [table.c[name] for name in added if name not in present]
    if not missing:
        return
    with engine.begin() as conn:
        for column in missing:
            kind = column.type.compile(dialect=engine.dialect)
            conn.execute(sa.text(f"ALTER TABLE {column.table.name} ADD COLUMN {column.name} {kind}"))


def create_ledger_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            # WAL lets the webhook receiver write while a run reads; busy_timeout rides out short locks.
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


def _reason(exc: Exception) -> str:
    # The driver's own words, without SQLAlchemy's wrapping (statement, background link).
    return str(getattr(exc, "orig", None) or exc)


def check_database(url: str) -> list[str]:
    """Why the database at `url` cannot be opened (one line, password hidden), or []. Creates nothing."""
    try:
        if url.startswith("sqlite"):
            _probe_sqlite(sa.engine.make_url(url).database)
        else:
            engine = sa.create_engine(url, connect_args={"connect_timeout": 10})
            try:
                engine.connect().close()
            finally:
                engine.dispose()
    except (sa.exc.SQLAlchemyError, sqlite3.Error, ValueError) as exc:
        return [settings.database_open_problem(url, _reason(exc))]
    return []


def _probe_sqlite(database: str | None) -> None:
    if database in (None, "", ":memory:"):
        return
    path = Path(database).absolute()
    if path.exists():
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
            conn.execute("PRAGMA schema_version")  # reads the header: a file that is no database fails here
    elif not path.parent.is_dir():
        # The first run creates the file, but not its folder.
        raise ValueError(f"{path.parent} is not a directory")


class LedgerResource(dg.ConfigurableResource):
    """The ledger database. `database_url` comes from SYNC_DATABASE_URL (a SQLite file by default)."""

    database_url: str

    # One engine (and one create_all) per resource, not per asset: Dagster builds the resource once per run
    # (once per step process) and per sensor tick, and its engine is disposed with it.
    _ledger: Ledger | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def for_account(self, account: str | None) -> AccountLedgerResource:
        """The ledger as one Stripe account's assets see it (None: the default account): its records only."""
        return AccountLedgerResource(self, account)

    def get_ledger(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                self._ledger = Ledger(self.database_url)
            return self._ledger

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._ledger is not None:
            self._ledger.engine.dispose()


class AccountLedgerResource:
    """`LedgerResource.get_ledger()` for one Stripe account (see `Ledger.for_account`)."""

    def __init__(self, resource: LedgerResource, account: str | None):
        self.resource = resource
        self.account = account

    def get_ledger(self) -> Ledger:
        return self.resource.get_ledger().for_account(self.account)
