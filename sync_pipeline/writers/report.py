"""What a writer did with each record, the report of one writer's run, and the open exceptions view.

Every writer (NetSuite upserts, Stripe billing, the Salesforce write-back) books its records as
`Outcome`s in one `Report`, so an asset's counts, output frame and exceptions table mean the same
thing whichever system it writes to. `open_exceptions_output` is the one shape of the ledger's open
exceptions as an asset shows them (`sync_exceptions`, `salesforce_sync_exceptions`); `worklist_frame` is
the one shape of the exceptions worklist (the `open_exceptions_worklist` asset and `sync-pipeline exceptions`).
"""

from __future__ import annotations

import datetime as dt
import enum
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipeline.errors import SyncIssue
from sync_pipeline.mapping.money import to_decimal
from sync_pipeline.resources.ledger import ExceptionRow


class Action(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"  # the target already holds it as it is: nothing was sent
    QUARANTINED = "quarantined"  # a data problem, in sync_exceptions with its fix; waits until the data changes
    FAILED = "failed"  # the target did not take it (no answer, an outage): the next run tries again
    SKIPPED = "skipped"  # not this writer's to write (e.g. closed before the billing start date)


# The actions after which the target holds the record as the source has it.
IN_TARGET = (Action.CREATED, Action.UPDATED, Action.UNCHANGED)

COLUMNS = [
    "record_type",
    "external_id",
    "source_id",
    "action",
    "internal_id",
    "error_code",
    "field",
    "message",
    "fix",
    "currency",
    "amount_minor",
]
EXCEPTION_TABLE_COLUMNS = ["record_type", "external_id", "error_code", "field", "fix"]
OPEN_EXCEPTION_COLUMNS = [
    "target",
    "record_type",
    "external_id",
    "source_id",
    "partition_key",
    "field",
    "value",
    "error_code",
    "message",
    "fix",
    "first_seen_at",
    "last_seen_at",
    "occurrences",
    "run_id",
]

# The exceptions worklist, as a person works through it: what is wrong with which record, whose money and how much,
# how long it has waited and how often it failed, and what to change. Every value is text or a whole number, so
# a table, a CSV and JSON show the same characters (amounts as exact Decimal text, never a float).
WORKLIST_COLUMNS = [
    "error_code",
    "record_type",
    "external_id",
    "stripe_object",
    "day",
    "field",
    "value",
    "stripe_customer",
    "amount",
    "age",
    "occurrences",
    "fix",
    "message",
    "target",
    "first_seen_at",
    "last_seen_at",
    "resolved_at",
]
# What the asset and its check show of each row in the UI (the full row is in the asset's table).
WORKLIST_TABLE_COLUMNS = [
    c
    for c in WORKLIST_COLUMNS
    if c not in ("stripe_object", "message", "target", "first_seen_at", "last_seen_at", "resolved_at")
]


@dataclass(frozen=True)
class Outcome:
    """One record a writer handled: what it did, the amount involved and, for a problem, the issue."""

    record_type: str
    external_id: str
    action: Action
    source_id: str | None = None
    internal_id: str | None = None  # the target's id for the record, when it holds it
    currency: str = ""
    amount_minor: int = 0
    issue: SyncIssue | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)  # a writer's own columns (`Report.detail_columns`)

    def row(self) -> dict[str, Any]:
        issue = self.issue
        return {
            "record_type": self.record_type,
            "external_id": self.external_id,
            "source_id": self.source_id,
            "action": self.action.value,
            "internal_id": self.internal_id,
            "error_code": issue.error_code if issue else None,
            "field": issue.field if issue else None,
            "message": issue.message if issue else None,
            "fix": issue.fix if issue else None,
            "currency": self.currency,
            "amount_minor": self.amount_minor,
            **self.detail,
        }


@dataclass
class Report:
    """One writer's run: an outcome per record, the writes it sent and how long it took."""

    subject: str  # what was written: a NetSuite record type, `opportunity` (billing), ...
    detail_columns: tuple[str, ...] = ()
    outcomes: list[Outcome] = field(default_factory=list)
    writes: int = 0
    elapsed_seconds: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)

    def counts(self) -> dict[str, int]:
        counted = Counter(o.action for o in self.outcomes)
        return {action.value: counted.get(action, 0) for action in Action}

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame([o.row() for o in self.outcomes], columns=[*COLUMNS, *self.detail_columns])

    def markdown(self, limit: int = 10) -> str:
        return exceptions_markdown(self.frame(), limit)

    def amounts_by_currency(self) -> dict[str, str]:
        """What the target holds after this run (created, updated or unchanged), per currency, exact."""
        totals: dict[str, int] = defaultdict(int)
        for o in self.outcomes:
            if o.action in IN_TARGET and o.currency:
                totals[o.currency] += int(o.amount_minor)
        return {cur: str(to_decimal(minor, cur)) for cur, minor in sorted(totals.items())}

    def write_rate(self) -> float:
        return round(self.writes / self.elapsed_seconds, 1) if self.elapsed_seconds > 0 else 0.0


def exception_row(
    issue: SyncIssue, target: str, currency: str | None = None, amount_minor: int | None = None
) -> ExceptionRow:
    """The `sync_exceptions` row of an issue found while writing to `target`; with the record's Stripe amount
    (minor units) and currency when the writer knows them, so the worklist shows what is at stake."""
    return ExceptionRow(target=target, **issue.exception_fields(), currency=currency or None, amount_minor=amount_minor)


def plot_metadata(
    rows: Sequence[Mapping[str, Any]], name: str | None = None, columns: tuple[str, str] = ("stripe", "netsuite")
) -> dict[str, dg.MetadataValue]:
    """Per currency (and category, when `name` is None), Stripe's and NetSuite's totals and their difference as
    numbers, `stripe_<name>_<cur>` / `netsuite_…` / `difference_…`, so Dagster's Plots tab draws the daily totals
    side by side. The exact amounts stay in the tables as Decimal text; these are for the chart only."""
    out: dict[str, dg.MetadataValue] = {}
    for row in rows:
        suffix = f"{name or row['category']}_{row['currency'].lower()}"
        stripe, netsuite = Decimal(row[columns[0]]), Decimal(row[columns[1]])
        out[f"stripe_{suffix}"] = dg.MetadataValue.float(float(stripe))
        out[f"netsuite_{suffix}"] = dg.MetadataValue.float(float(netsuite))
        out[f"difference_{suffix}"] = dg.MetadataValue.float(float(stripe - netsuite))
    return out


def amounts_markdown(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], empty: str) -> str:
    """Rows of amounts as a Markdown table, each value as the exact text given. tabulate would otherwise read
    "17410.50" as a number and print 17410.5: people read exact amounts."""
    if not rows:
        return empty
    return pd.DataFrame(list(rows), columns=list(columns)).to_markdown(index=False, disable_numparse=True)


def exceptions_markdown(frame: pd.DataFrame, limit: int = 10) -> str:
    """The first rows of a frame that carry an error (outcomes, a plan, open exceptions) as a table."""
    problems = frame[frame["error_code"].notna()]
    if problems.empty:
        return "No exceptions."
    table = problems.head(limit)[EXCEPTION_TABLE_COLUMNS].to_markdown(index=False)
    return table + (f"\n\n…and {len(problems) - limit} more in `sync_exceptions`." if len(problems) > limit else "")


def open_exceptions_output(rows: list[dict], without_a_day: list[dict] = ()) -> dg.Output[pd.DataFrame]:
    """The ledger's open exception rows as an exceptions report: the table, and counts by error code. A day's
    report also lists the open exceptions of no day (`without_a_day`: billing and write-back), so no open
    exception is missing from wherever exceptions are listed; `open_exceptions` counts them all."""
    frame = pd.DataFrame([*rows, *without_a_day], columns=OPEN_EXCEPTION_COLUMNS)
    by_code = frame.groupby("error_code").size().to_dict() if len(frame) else {}
    return dg.Output(
        frame,
        metadata={
            "open_exceptions": len(frame),
            "of_this_day": len(rows),
            "of_no_day": len(without_a_day),
            "by_error_code": dg.MetadataValue.json({k: int(v) for k, v in by_code.items()}),
            "first_exceptions": dg.MetadataValue.md(exceptions_markdown(frame, limit=20)),
        },
    )


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    # SQLite hands back naive datetimes; the ledger writes UTC.
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def age_text(since: dt.datetime, now: dt.datetime) -> str:
    """How long ago, as a person says it: "40 min", "5 h", "3 d 4 h"."""
    minutes = max(0, int((now - since).total_seconds() // 60))
    days, hours = divmod(minutes // 60, 24)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    return f"{hours} h" if hours else f"{minutes} min"


def amount_text(amount_minor: int | None, currency: str | None) -> str:
    """ "CHF 25.00": the exact amount with its currency code; "" when the exception does not know it."""
    if amount_minor is None or not currency:
        return ""
    return f"{currency.upper()} {to_decimal(int(amount_minor), currency)}"


def worklist_row(row: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """One `sync_exceptions` row as the worklist shows it."""
    first, last, resolved = (_utc(row.get(c)) for c in ("first_seen_at", "last_seen_at", "resolved_at"))
    return {
        "error_code": row["error_code"],
        "record_type": row["record_type"],
        "external_id": row["external_id"],
        "stripe_object": row.get("source_id") or "",
        "day": row.get("partition_key") or "",
        "field": row.get("field") or "",
        "value": "" if row.get("value") is None else str(row["value"]),
        "stripe_customer": row.get("stripe_customer") or "",
        "amount": amount_text(row.get("amount_minor"), row.get("currency")),
        "age": age_text(first, now) if first else "",
        "occurrences": int(row.get("occurrences") or 1),
        "fix": row["fix"],
        "message": row["message"],
        "target": row["target"],
        "first_seen_at": first.isoformat(timespec="seconds") if first else "",
        "last_seen_at": last.isoformat(timespec="seconds") if last else "",
        "resolved_at": resolved.isoformat(timespec="seconds") if resolved else "",
    }


def worklist_frame(rows: Sequence[Mapping[str, Any]], now: dt.datetime | None = None) -> pd.DataFrame:
    """The ledger's exception rows (`Ledger.exceptions`) as the worklist, in the order given (oldest first)."""
    now = now or dt.datetime.now(dt.UTC)
    frame = pd.DataFrame([worklist_row(r, now) for r in rows], columns=WORKLIST_COLUMNS)
    return frame.astype({c: "int64" if c == "occurrences" else "object" for c in WORKLIST_COLUMNS})


def worklist_markdown(frame: pd.DataFrame, limit: int = 50) -> str:
    """The first rows of the worklist as a Markdown table, every value as its exact text."""
    if frame.empty:
        return "No open exceptions."
    rows = frame.head(limit)[WORKLIST_TABLE_COLUMNS].astype(str).to_dict("records")
    table = amounts_markdown(rows, WORKLIST_TABLE_COLUMNS, "")
    more = len(frame) - limit
    return table + (
        f"\n\n…and {more} more in the asset's table (or `sync-pipeline exceptions --open`)." if more > 0 else ""
    )
