"""What a Stripe → NetSuite run would do with each record of a day, before it does it; nothing is written.

One row per record: `create` (NetSuite does not hold it), `update` (with the fields that change, old → new),
`unchanged` (the ledger holds its content hash: a run sends nothing) or `held back` (with the fix). The same
decisions as `writers/netsuite.upsert_records`: references resolved through the ledger, the content hash
compared with the ledger's.

The comparison is pure (`preview_records`, `field_changes`); the reads it needs are apart
(`read_ledger`, `read_current`): the ledger for every record, NetSuite only for the records a run would send
that the ledger knows (a no-op day reads nothing from NetSuite).
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import dagster as dg

from sync_pipeline.errors import SyncIssue
from sync_pipeline.mapping import cash
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.netsuite import NetSuiteRecord
from sync_pipeline.resources.ledger import Ledger, LedgerEntry
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteError
from sync_pipeline.writers.netsuite import TARGET, body_to_send, dependency_internal_ids
from sync_pipeline.writers.report import amounts_markdown

ARROW = "→"
# How a reference to a record this same run creates first is shown (its internal id does not exist yet).
NEW_RECORD = "new {external_id}"
EMPTY = "(empty)"
# The fields that describe a sublist line when it is added or removed, when our own lines name none.
LINE_SUMMARY_FIELDS = ("item", "doc", "account", "amount")
PREVIEW_COLUMNS = ["action", "record_type", "external_id", "source_id", "changes", "fix"]


class PlanAction(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    UNCHANGED = "unchanged"
    HELD_BACK = "held back"


# Rows people read first: what would change, then what is held back, then what stays as it is; within each, the
# record types in the order a run writes them.
ACTION_ORDER = (PlanAction.CREATE, PlanAction.UPDATE, PlanAction.HELD_BACK, PlanAction.UNCHANGED)
WRITE_ORDER = (
    ns.CUSTOMER,
    ns.INVOICE,
    ns.CREDIT_MEMO,
    ns.CUSTOMER_PAYMENT,
    ns.CUSTOMER_REFUND,
    cash.DEPOSIT,
    cash.JOURNAL_ENTRY,
)


@dataclass(frozen=True)
class PreviewRow:
    record_type: str
    external_id: str
    source_id: str | None
    action: PlanAction
    changes: tuple[str, ...] = ()  # `field: old → new`, one per changed field or sublist line
    fix: str = ""  # held back: what to do; otherwise empty
    note: str = ""  # why a row is what it is when the action alone does not say (held back: the problem)

    def as_dict(self) -> dict[str, str]:
        return {
            "action": self.action.value,
            "record_type": self.record_type,
            "external_id": self.external_id,
            "source_id": self.source_id or "",
            "changes": "; ".join(self.changes) if self.changes else self.note,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class Pending:
    """A record as a run would find it after the ledger: the body it would send, and whether it sends it."""

    record: NetSuiteRecord
    action: PlanAction
    body: dict | None = None  # after reference resolution (None when held back)
    issue: SyncIssue | None = None  # held back: why


# -- pure: the ledger's verdict, then the field differences ---------------------------------------------


def compare_with_ledger(
    records: Sequence[NetSuiteRecord], known: Mapping[tuple[str, str], LedgerEntry], internal_ids: Mapping[str, str]
) -> list[Pending]:
    """Each record as `upsert_records` would treat it: held back (a dependency NetSuite lacks and the run does not
    write first), unchanged (the ledger's hash), update (known to the ledger, content changed) or create.

    `known`: the ledger's entries by (record type, external id); `internal_ids`: the internal ids of the
    records depended on. A dependency this run writes first stands for its future id as "new <external id>".
    """
    planned = {r.external_id for r in records}
    ids = {d[1]: NEW_RECORD.format(external_id=d[1]) for r in records for d in r.depends_on if d[1] in planned}
    ids.update(internal_ids)
    pending = []
    for record in records:
        body = body_to_send(record, ids)
        if isinstance(body, SyncIssue):
            pending.append(Pending(record, PlanAction.HELD_BACK, issue=body))
            continue
        entry = known.get((record.record_type, record.external_id))
        if entry is None:
            action = PlanAction.CREATE
        elif entry.content_hash == content_hash(body):
            action = PlanAction.UNCHANGED
        else:
            action = PlanAction.UPDATE
        pending.append(Pending(record, action, body))
    return pending


def to_read(pending: Iterable[Pending]) -> list[tuple[str, str]]:
    """(record type, external id) of the records whose NetSuite state the field differences need: those a run
    would update. Nothing else is read, so a day with nothing to send costs no NetSuite request."""
    return [(p.record.record_type, p.record.external_id) for p in pending if p.action == PlanAction.UPDATE]


def preview_records(
    pending: Sequence[Pending],
    held_back: Iterable[SyncIssue] = (),
    current: Mapping[tuple[str, str], dict | None] | None = None,
) -> list[PreviewRow]:
    """One row per record, sorted creates, updates, held back, unchanged (then by type and external id).

    `held_back`: the issues mapping and validation found (their records are not in `pending`). `current`: NetSuite's
    bodies of the records to update (`to_read`), None for one NetSuite no longer holds (the run creates it again);
    without `current` an update lists no fields (the ledger alone says only that the content changed).
    """
    rows = []
    for p in pending:
        key = (p.record.record_type, p.record.external_id)
        common = {"record_type": key[0], "external_id": key[1], "source_id": p.record.source_id}
        if p.action == PlanAction.HELD_BACK:
            assert p.issue is not None
            rows.append(PreviewRow(**common, action=p.action, fix=p.issue.fix, note=p.issue.message))
        elif p.action != PlanAction.UPDATE:
            rows.append(PreviewRow(**common, action=p.action))
        elif current is None or key not in current:
            rows.append(PreviewRow(**common, action=p.action, note="content changed since the last sync"))
        elif current[key] is None:
            note = "in the ledger but not in NetSuite (deleted there?): the run creates it again"
            rows.append(PreviewRow(**common, action=PlanAction.CREATE, note=note))
        else:
            assert p.body is not None
            changes = tuple(field_changes(p.body, current[key]))
            note = "" if changes else "sent again: NetSuite already holds these values"
            rows.append(PreviewRow(**common, action=p.action, changes=changes, note=note))
    rows += [
        PreviewRow(i.record_type, i.external_id, i.source_id, PlanAction.HELD_BACK, fix=i.fix, note=i.message)
        for i in held_back
    ]
    return sort_rows(rows)


def sort_rows(rows: Iterable[PreviewRow]) -> list[PreviewRow]:
    """Creates, updates, held back, unchanged; each in write order (customers first), then by external id."""
    action_rank = {a: n for n, a in enumerate(ACTION_ORDER)}
    type_rank = {t: n for n, t in enumerate(WRITE_ORDER)}
    return sorted(
        rows,
        key=lambda r: (
            action_rank[r.action],
            type_rank.get(r.record_type, len(type_rank)),
            r.record_type,
            r.external_id,
        ),
    )


def counts(rows: Iterable[PreviewRow]) -> dict[str, int]:
    """Rows per action, every action present (0 when none)."""
    seen = Counter(r.action for r in rows)
    return {a.value: seen.get(a, 0) for a in ACTION_ORDER}


def preview_markdown(rows: Sequence[PreviewRow], partition_key: str, limit: int = 50) -> str:
    """The first `limit` rows as a Markdown table (creates, updates and held back first), every value as its text,
    and where the field differences are: the ledger alone says a record changed, not which fields."""
    if not rows:
        return "Nothing to write: no Stripe document of the day maps to a NetSuite record."
    # Exact text: tabulate would print 17410.50 as 17410.5.
    table = amounts_markdown([r.as_dict() for r in rows[:limit]], PREVIEW_COLUMNS, "")
    more = f"\n\n…and {len(rows) - limit} more." if len(rows) > limit else ""
    return (
        f"{table}{more}\n\nCompared with the ledger only: for the fields each update changes (old → new, read from "
        f"NetSuite) run `sync-pipeline plan --partition {partition_key}`."
    )


def preview_metadata(rows: Sequence[PreviewRow], partition_key: str) -> dict[str, Any]:
    """A plan materialization's preview: a count per action (numbers, for the Plots tab) and the first rows."""
    per_action = counts(rows)
    return {
        **{f"would_{action.replace(' ', '_')}": n for action, n in per_action.items()},
        "preview": dg.MetadataValue.md(preview_markdown(rows, partition_key)),
    }


def field_changes(sent: Mapping[str, Any], held: Mapping[str, Any], prefix: str = "") -> list[str]:
    """`field: old → new` for each field of the body we would send whose value NetSuite holds otherwise.

    Only fields we send count (NetSuite adds its own: totals, status, links). References compare by internal id,
    amounts as exact Decimals, sublists line by line (`item line 2 amount: 10.00 → 12.00`, a line added or
    removed with what it holds); a sublist whose lines name a `doc` (applications) matches lines by that document.
    """
    changes: list[str] = []
    for name, new in sent.items():
        old = held.get(name) if isinstance(held, Mapping) else None
        path = f"{prefix}{name}"
        if _is_sublist(new):
            changes += _sublist_changes(path, new["items"], _items(old))
        elif isinstance(new, Mapping) and not _is_reference(new):
            changes += field_changes(new, old if isinstance(old, Mapping) else {}, f"{path}.")
        elif not _same(new, old):
            changes.append(f"{path}: {render(old)} {ARROW} {render(new)}")
    return changes


def _is_sublist(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("items"), list)


def _items(value: Any) -> list:
    return list(value["items"]) if _is_sublist(value) else []


def _is_reference(value: Any) -> bool:
    return isinstance(value, Mapping) and ("id" in value or "externalId" in value) and not _is_sublist(value)


def _scalar(value: Any) -> Any:
    """What a value is compared by: a reference by its id, a number as a Decimal, text as text."""
    if isinstance(value, Mapping):
        return str(value.get("id", value.get("externalId")))
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):  # never in our bodies; NetSuite's JSON is read as Decimal
        return Decimal(str(value))
    return value


def _same(new: Any, old: Any) -> bool:
    a, b = _scalar(new), _scalar(old)
    if isinstance(a, Decimal) and isinstance(b, str):
        b = _decimal_or_none(b)
    if isinstance(b, Decimal) and isinstance(a, str):
        a = _decimal_or_none(a)
    return a == b or (a in (None, "") and b in (None, ""))


def _decimal_or_none(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except ArithmeticError:
        return None


_PLAIN = re.compile(r"[\w.@:/+-]+")


def render(value: Any) -> str:
    """A value as a person reads it: ids bare, amounts as exact Decimal text, text quoted when it has spaces."""
    if value is None or value == "":
        return EMPTY
    if isinstance(value, Mapping):
        return str(value.get("id") or value.get("externalId") or EMPTY)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (int, float)):
        return format(Decimal(str(value)), "f")
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    text = str(value)
    return text if _PLAIN.fullmatch(text) else '"' + text.replace('"', '\\"') + '"'


def _describe_line(line: Mapping, fields: Sequence[str]) -> str:
    parts = [
        f"{f} {render(line[f])}"
        for f in fields
        if f in line and (not isinstance(line[f], Mapping) or _is_reference(line[f])) and not _is_sublist(line[f])
    ]
    return ", ".join(parts) or "a line"


def _sublist_changes(name: str, sent: Sequence[Mapping], held: Sequence[Mapping]) -> list[str]:
    fields = list(dict.fromkeys(f for line in sent for f in line)) or list(LINE_SUMMARY_FIELDS)
    if sent and all(_is_reference(line.get("doc")) for line in sent):
        return _keyed_sublist_changes(name, sent, held, fields)
    changes = []
    for n in range(max(len(sent), len(held))):
        label = f"{name} line {n + 1}"
        if n >= len(held):
            changes.append(f"{label}: added ({_describe_line(sent[n], fields)})")
        elif n >= len(sent):
            changes.append(f"{label}: removed ({_describe_line(held[n], fields)})")
        else:
            changes += field_changes(sent[n], held[n], f"{label} ")
    return changes


def _keyed_sublist_changes(
    name: str, sent: Sequence[Mapping], held: Sequence[Mapping], fields: Sequence[str]
) -> list[str]:
    """Application lines, matched by the document they apply to (NetSuite may list other open documents)."""
    by_doc = {_scalar(line.get("doc")): line for line in held if isinstance(line.get("doc"), Mapping)}
    changes = []
    for line in sent:
        doc = _scalar(line["doc"])
        label = f"{name} doc {render(line['doc'])}"
        if doc in by_doc:
            changes += field_changes({k: v for k, v in line.items() if k != "doc"}, by_doc.pop(doc), f"{label} ")
        else:
            changes.append(f"{label}: added ({_describe_line(line, fields)})")
    for doc, line in by_doc.items():
        if line.get("apply") is not False:
            changes.append(f"{name} doc {doc}: removed ({_describe_line(line, fields)})")
    return changes


# -- the reads (nothing is written) -----------------------------------------------------------------------


def read_ledger(
    ledger: Ledger, records: Sequence[NetSuiteRecord]
) -> tuple[dict[tuple[str, str], LedgerEntry], dict[str, str]]:
    """The ledger's entries of `records` by (record type, external id), and the internal ids of what they
    depend on. Reads only."""
    known: dict[tuple[str, str], LedgerEntry] = {}
    for record_type in dict.fromkeys(r.record_type for r in records):
        ids = [r.external_id for r in records if r.record_type == record_type]
        known.update({(record_type, e): entry for e, entry in ledger.lookup(TARGET, record_type, ids).items()})
    return known, dependency_internal_ids(records, ledger)


def read_current(
    client: NetSuiteClient,
    keys: Sequence[tuple[str, str]],
    read: Callable[[Callable[[tuple[str, str]], dict | None], Sequence[tuple[str, str]]], Iterable] = map,
) -> dict[tuple[str, str], dict | None]:
    """NetSuite's record (with its sublists) for each key, None for one it does not hold (404). `read` maps the
    GET over the keys (a thread pool's map to read in parallel)."""

    def get(key: tuple[str, str]) -> dict | None:
        try:
            return client.get(key[0], f"eid:{key[1]}", expand_sub_resources=True)
        except NetSuiteError as error:
            if error.status == 404:
                return None
            raise

    return dict(zip(keys, read(get, keys), strict=True))
