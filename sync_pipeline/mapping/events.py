"""Stripe events → the daily partitions they make dirty. Pure functions: no Stripe, no Dagster, no database.

An event only says *which* root document changed; the run then reads that document's current state.
So routing reads from the event nothing but identities that never change (object ids, the parent ids
and `created`), and the order or repetition of events cannot change the outcome.

Roots are what the Stripe assets partition by: an invoice (its creation day) or an invoice-less charge
(its creation day). Children (invoice payments, refunds, disputes, credit notes, charges paying an
invoice) are routed to their root through a `RootLookup`, which the sensor backs with the ledger and,
for documents the ledger has not seen yet, with Stripe.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sync_pipeline.mapping.stripe_refs import id_of
from sync_pipeline.partitions import partition_for_timestamp

# Event families that change what a partition syncs (`charge.` includes `charge.dispute.*` and
# `charge.refund.*`). Matched by prefix on our side: Stripe's `types[]` filter takes at most 20 exact names.
WATCHED_PREFIXES: tuple[str, ...] = (
    "invoice.",
    "invoice_payment.",
    "charge.",
    "refund.",
    "credit_note.",
    "customer.",
    "payout.",
)
# `customer.*` sub-families that change no synced record.
IGNORED_PREFIXES: tuple[str, ...] = (
    "customer.subscription.",
    "customer.source.",
    "customer.tax_id.",
    "customer.discount.",
    "customer.cash_balance",
    "invoice.upcoming",
    "invoice.will_be_due",
    "invoice.overdue",
)

INVOICE = "invoice"
CHARGE = "charge"
PAYMENT_INTENT = "payment_intent"
CUSTOMER = "customer"
PAYOUT = "payout"


@dataclass(frozen=True)
class RootRef:
    """What an event points at: a root document, or a child that leads to one."""

    kind: str  # INVOICE | CHARGE | PAYMENT_INTENT | CUSTOMER | PAYOUT
    id: str | None
    # Creation time of that object when the event carries it (immutable, so safe to take from a snapshot).
    created: int | None = None


class RootLookup(Protocol):
    """Look-ups routing needs; each answers from the current state (ledger first, then Stripe)."""

    def invoice_partition(self, invoice_id: str) -> str | None: ...

    def charge_partition(self, charge_id: str) -> str | None:
        """The partition of the charge's invoice if it pays one, else the charge's own day."""

    def payment_intent_partition(self, payment_intent_id: str) -> str | None: ...

    def customer_partition(self, customer_id: str) -> str | None:
        """The partition that last synced the customer (None: not synced yet, its first document will)."""


@dataclass
class RoutedEvents:
    """The outcome of routing a batch: dirty partitions with their events, oldest first, and the rest."""

    dirty: dict[str, list[str]] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)  # event id -> why no partition
    # The documents the events of each dirty partition name (a run syncs only those); a partition is absent here
    # when one of its events names nothing a run can fetch by id, so its run syncs the whole day.
    documents: dict[str, set[str]] = field(default_factory=dict)
    documents_unknown: set[str] = field(default_factory=set)

    def add(self, partition_key: str, event_id: str, document: str | None = None) -> None:
        ids = self.dirty.setdefault(partition_key, [])
        if event_id not in ids:
            ids.append(event_id)
        self.name_document(partition_key, document)

    def name_document(self, partition_key: str, document: str | None) -> None:
        """Add a document to the partition's scope; None makes the partition a whole day from now on."""
        if document is None:
            self.documents.pop(partition_key, None)
            self.documents_unknown.add(partition_key)
        elif partition_key not in self.documents_unknown:
            self.documents.setdefault(partition_key, set()).add(document)

    def scope(self, partition_key: str) -> set[str] | None:
        """The documents of the partition's run, or None: the whole day."""
        if partition_key in self.documents_unknown:
            return None
        return self.documents.get(partition_key)

    def event_ids(self) -> list[str]:
        return list(dict.fromkeys([*(i for ids in self.dirty.values() for i in ids), *self.ignored]))


def is_watched(event_type: str) -> bool:
    return event_type.startswith(WATCHED_PREFIXES) and not event_type.startswith(IGNORED_PREFIXES)


def _created(obj: dict) -> int | None:
    created = obj.get("created")
    return int(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None


def event_object(event: dict) -> dict:
    data = event.get("data") or {}
    obj = data.get("object") if isinstance(data, dict) else None
    return obj if isinstance(obj, dict) else {}


def root_of(event: dict) -> RootRef | None:
    """The document an event points at, or None when its type changes nothing we sync."""
    event_type = str(event.get("type") or "")
    if not is_watched(event_type):
        return None
    obj = event_object(event)
    if event_type.startswith("invoice."):
        return RootRef(INVOICE, id_of(obj), _created(obj))
    if event_type.startswith(("invoice_payment.", "credit_note.")):
        return RootRef(INVOICE, id_of(obj.get("invoice")))
    if event_type.startswith(("charge.dispute.", "charge.refund.", "refund.")):
        # A dispute or refund belongs to a charge; a refund of a PaymentIntent may name only that.
        charge = id_of(obj.get("charge"))
        if charge:
            return RootRef(CHARGE, charge)
        return RootRef(PAYMENT_INTENT, id_of(obj.get("payment_intent")))
    if event_type.startswith("charge."):
        return RootRef(CHARGE, id_of(obj))
    if event_type.startswith("customer."):
        return RootRef(CUSTOMER, id_of(obj))
    # A payout (and its deposit) belongs to the day it arrives in the bank.
    return RootRef(PAYOUT, id_of(obj), _created({"created": obj.get("arrival_date")}))


@dataclass
class BatchFacts:
    """Immutable facts the batch itself states, so routing needs no look-up for them:
    invoices' creation days, and which PaymentIntent pays which invoice."""

    invoice_partitions: dict[str, str] = field(default_factory=dict)
    invoice_of_intent: dict[str, str] = field(default_factory=dict)
    intent_of_charge: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, events: Iterable[dict]) -> BatchFacts:
        facts = cls()
        for event in events:
            obj, event_type = event_object(event), str(event.get("type") or "")
            if event_type.startswith("invoice.") and id_of(obj) and _created(obj) is not None:
                facts.invoice_partitions[id_of(obj)] = partition_for_timestamp(_created(obj))
            elif event_type.startswith("invoice_payment."):
                intent, invoice = id_of((obj.get("payment") or {}).get("payment_intent")), id_of(obj.get("invoice"))
                if intent and invoice:
                    facts.invoice_of_intent[intent] = invoice
            elif event_type.startswith("charge.") and obj.get("object") == "charge":
                intent = id_of(obj.get("payment_intent"))
                if id_of(obj) and intent:
                    facts.intent_of_charge[id_of(obj)] = intent
        return facts

    def invoice_of_charge(self, charge_id: str) -> str | None:
        return self.invoice_of_intent.get(self.intent_of_charge.get(charge_id, ""))


def partition_of(root: RootRef, lookup: RootLookup, facts: BatchFacts | None = None) -> tuple[str | None, str]:
    """(partition key, how it was found) — the key is None when no partition holds the root."""
    facts = facts or BatchFacts()
    if not root.id:
        return None, f"the event names no {root.kind}"
    if root.kind == INVOICE:
        if root.created is not None:
            return partition_for_timestamp(root.created), "invoice creation day"
        known = facts.invoice_partitions.get(root.id)
        return known or lookup.invoice_partition(root.id), f"creation day of invoice {root.id}"
    if root.kind == CHARGE:
        invoice = facts.invoice_of_charge(root.id)
        if invoice:
            return partition_of(RootRef(INVOICE, invoice), lookup, facts)[0], f"invoice {invoice} paid by {root.id}"
        return lookup.charge_partition(root.id), f"root of charge {root.id}"
    if root.kind == PAYMENT_INTENT:
        return lookup.payment_intent_partition(root.id), f"root of payment intent {root.id}"
    if root.kind == CUSTOMER:
        found = lookup.customer_partition(root.id)
        return found, (
            "partition that last synced it"
            if found
            else f"customer {root.id} is not synced yet; its first document will sync it"
        )
    if root.created is not None:
        return partition_for_timestamp(root.created), "payout arrival day"
    return None, f"payout {root.id} names no arrival date"


def document_of(root: RootRef, facts: BatchFacts | None = None) -> str | None:
    """The id of the document a run must fetch for this root (see `event_scope`), or None when there is none it
    can fetch by id. A charge paying an invoice stands for its invoice when the batch says which; otherwise the
    charge's id goes to the run, whose extract finds its invoice (or keeps it as an invoice-less charge)."""
    facts = facts or BatchFacts()
    if not root.id:
        return None
    if root.kind in (INVOICE, CUSTOMER, PAYOUT):
        return root.id
    if root.kind == CHARGE:
        return facts.invoice_of_charge(root.id) or root.id
    # A PaymentIntent: its invoice when the batch names it; otherwise no id the extract takes.
    return facts.invoice_of_intent.get(root.id)


def route_events(events: Iterable[dict], lookup: RootLookup) -> RoutedEvents:
    """Dirty partitions of a batch of events, each with the ids of the events that made it dirty.

    Events are taken oldest first (created, then id) and each id once, so the same events in any
    order, delivered any number of times, give the same partitions and the same run keys.
    """
    routed = RoutedEvents()
    unique = {str(e["id"]): e for e in events}
    facts = BatchFacts.of(unique.values())
    for event in sorted(unique.values(), key=lambda e: (int(e.get("created") or 0), str(e["id"]))):
        event_id = str(event["id"])
        root = root_of(event)
        if root is None:
            routed.ignored[event_id] = f"{event.get('type')} changes no synced record"
            continue
        partition_key, how = partition_of(root, lookup, facts)
        if partition_key is None:
            routed.ignored[event_id] = how
        else:
            routed.add(partition_key, event_id, document_of(root, facts))
    return routed


def run_key(partition_key: str, event_ids: Sequence[str], catch_up_from: str | None = None) -> str:
    """Partition + newest event id: a replayed batch gets the same key and so no second run.

    A catch-up marks partitions dirty without events: its key names where it caught up from instead.
    """
    newest = event_ids[-1] if event_ids else f"catch-up-{catch_up_from}"
    return f"{partition_key}:{newest}"


def partitions_since(since: int, now: int, first_partition: str | None = None) -> list[str]:
    """Every daily partition from the day of `since` to the day of `now` (Unix seconds), oldest first."""
    first_day = dt.date.fromisoformat(partition_for_timestamp(since))
    if first_partition:
        first_day = max(first_day, dt.date.fromisoformat(first_partition))
    last_day = dt.date.fromisoformat(partition_for_timestamp(now))
    return [(first_day + dt.timedelta(days=n)).isoformat() for n in range((last_day - first_day).days + 1)]


# --- the sensor's cursor ------------------------------------------------------------------------------


@dataclass
class EventCursor:
    """What the sensor remembers between ticks (stored as JSON in Dagster's sensor cursor).

    `event_id`/`event_created`: the newest Events API event already turned into run requests.
    `pending_acks`: inbox events whose runs the previous tick requested; they are marked processed
    by the next tick, once Dagster has committed that tick (a failed tick is re-read, and the same
    run keys make the repeat harmless).
    `deferred`: Events API events of partitions whose previous run had not started yet; they join the
    partition's next run, and `deferred_scope` keeps the documents they name (a partial run reads only its own).
    """

    event_id: str | None = None
    event_created: int | None = None
    evaluated_at: int | None = None
    pending_acks: dict[str, list[str]] = field(default_factory=dict)  # run key -> event ids
    deferred: dict[str, list[str]] = field(default_factory=dict)  # partition key -> event ids
    # partition key -> the documents its deferred events name (None: the whole day)
    deferred_scope: dict[str, list[str] | None] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | None) -> EventCursor:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(
            event_id=raw.get("event_id"),
            event_created=raw.get("event_created"),
            evaluated_at=raw.get("evaluated_at"),
            pending_acks=dict(raw.get("pending_acks") or {}),
            deferred=dict(raw.get("deferred") or {}),
            deferred_scope=dict(raw.get("deferred_scope") or {}),
        )

    def dumps(self) -> str:
        return json.dumps(
            {
                "event_id": self.event_id,
                "event_created": self.event_created,
                "evaluated_at": self.evaluated_at,
                "pending_acks": self.pending_acks,
                "deferred": self.deferred,
                "deferred_scope": self.deferred_scope,
            },
            separators=(",", ":"),
        )


def is_stripe_event(body: Any) -> str | None:
    """None when `body` looks like a Stripe event, else what is wrong with it (for a 400 answer)."""
    if not isinstance(body, dict):
        return "the body is not a JSON object"
    if body.get("object") != "event":
        return 'the body is not a Stripe event (expected "object": "event")'
    if not isinstance(body.get("id"), str) or not body["id"].startswith("evt_"):
        return 'the event has no id starting with "evt_"'
    if not isinstance(body.get("type"), str) or not body["type"]:
        return "the event has no type"
    if not isinstance(body.get("created"), int) or isinstance(body.get("created"), bool):
        return "the event has no integer created timestamp"
    if not event_object(body):
        return "the event has no data.object"
    return None
