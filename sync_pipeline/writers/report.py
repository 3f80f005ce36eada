"""What a writer did with each record, the report of one writer's run, and the open exceptions view.

Every writer (NetSuite upserts, Stripe billing, the Salesforce write-back) books its records as
`Outcome`s in one `Report`, so an asset's counts, output frame and exceptions table mean the same
thing whichever system it writes to. `open_exceptions_output` is the one shape of the ledger's open
exceptions as an asset shows them (`sync_exceptions`, `salesforce_sync_exceptions`).
"""

from __future__ import annotations

import enum
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
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


def exception_row(issue: SyncIssue, target: str) -> ExceptionRow:
    """The `sync_exceptions` row of an issue found while writing to `target`."""
    return ExceptionRow(target=target, **issue.exception_fields())


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
