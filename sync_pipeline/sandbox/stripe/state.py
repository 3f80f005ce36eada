"""In-memory state of the Stripe stand-in: collections, events, idempotency records, clock, ids."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from sync_pipeline.sandbox.stripe.config import API_VERSION, StripeConfig
from sync_pipeline.sandbox.stripe.errors import resource_missing
from sync_pipeline.sandbox.stripe.store import Collection, IdFactory, SandboxClock


def _nested(*path: str):
    def extract(obj: dict[str, Any]) -> Any:
        value: Any = obj
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    return extract


# type -> immutable fields with a secondary index
COLLECTION_INDEXES: dict[str, dict[str, Any]] = {
    "customer": {},
    "customer_balance_transaction": {"customer": _nested("customer")},
    "product": {},
    "price": {"product": _nested("product")},
    "coupon": {},
    "tax_rate": {},
    "payment_method": {"customer": _nested("customer")},
    "invoiceitem": {"customer": _nested("customer"), "invoice": _nested("invoice")},
    "invoice": {
        "customer": _nested("customer"),
        "subscription": _nested("parent", "subscription_details", "subscription"),
    },
    "invoice_payment": {"invoice": _nested("invoice"), "payment_intent": _nested("payment", "payment_intent")},
    "payment_intent": {"customer": _nested("customer")},
    "charge": {"customer": _nested("customer"), "payment_intent": _nested("payment_intent")},
    "refund": {"charge": _nested("charge"), "payment_intent": _nested("payment_intent")},
    "dispute": {"charge": _nested("charge"), "payment_intent": _nested("payment_intent")},
    "balance_transaction": {"source": _nested("source"), "type": _nested("type")},
    "payout": {},
    "credit_note": {"invoice": _nested("invoice"), "customer": _nested("customer")},
    "subscription": {"customer": _nested("customer")},
    "subscription_item": {"subscription": _nested("subscription")},
    "discount": {},
    "event": {"type": _nested("type")},
    "webhook_endpoint": {},
}

# Where an object's creation time lives (line items have none; invoice items use `date`).
CREATED_FIELD = {"invoiceitem": "date", "discount": "start"}


def snapshot(obj: Any) -> Any:
    """A deep copy that later mutations cannot reach (event payloads, idempotent replays)."""
    return orjson.loads(orjson.dumps(obj))


@dataclass
class Ctx:
    """What one API call knows about itself; events record its request id and idempotency key."""

    state: StripeState
    config: StripeConfig
    now: int
    request_id: str | None = None
    idempotency_key: str | None = None

    def automatic(self) -> Ctx:
        """The same moment, but for changes Stripe makes on its own (no request behind them)."""
        return Ctx(self.state, self.config, self.now)

    def request_info(self) -> dict[str, Any]:
        return {"id": self.request_id, "idempotency_key": self.idempotency_key}


@dataclass
class IdempotencyRecord:
    fingerprint: str
    status: int
    body: bytes
    created: int
    path: str


@dataclass
class StripeState:
    seed: int = 0
    clock: SandboxClock = field(default_factory=SandboxClock)
    ids: IdFactory = field(init=False)
    seq: int = 0
    collections: dict[str, Collection] = field(init=False)
    kind_of_id: dict[str, str] = field(default_factory=dict)
    # invoice id -> its line items (Stripe keeps them in invoice order, not by time)
    lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    line_owner: dict[str, str] = field(default_factory=dict)
    credit_note_lines: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    deleted: dict[str, dict[str, Any]] = field(default_factory=dict)
    idempotency: dict[str, IdempotencyRecord] = field(default_factory=dict)
    # events waiting for the webhook dispatcher (filled from any thread, drained in the loop)
    outbox: deque = field(default_factory=deque)
    webhook_deliveries: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    # Bulk seeding turns events off to save memory; everything else records them.
    record_events: bool = True
    # Min-heaps of (time, id): funds becoming available, payouts arriving (rebuilt when None).
    pending_funds: list | None = field(default=None, repr=False)
    next_idempotency_prune: int = field(default=1024, repr=False)
    payouts_in_transit: list | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.ids = IdFactory(self.seed)
        self.collections = {kind: Collection(kind, dict(extractors)) for kind, extractors in COLLECTION_INDEXES.items()}

    # --- objects -------------------------------------------------------------------------------

    def new_id(self, prefix: str) -> str:
        return self.ids.new(prefix)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def insert(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        created = obj.get(CREATED_FIELD.get(kind, "created")) or self.clock.now()
        self.collections[kind].add(obj, created, self.next_seq())
        self.kind_of_id[obj["id"]] = kind
        return obj

    def register(self, kind: str, obj: dict[str, Any]) -> None:
        """Objects without a collection of their own (line items) that ids still resolve to."""
        self.kind_of_id[obj["id"]] = kind

    def find(self, object_id: str) -> dict[str, Any] | None:
        kind = self.kind_of_id.get(object_id)
        if kind is None:
            return None
        if kind == "line_item":
            return self.find_line(object_id)
        return self.collections[kind].get(object_id)

    def find_line(self, line_id: str) -> dict[str, Any] | None:
        invoice_id = self.line_owner.get(line_id)
        for line in self.lines.get(invoice_id, ()):
            if line["id"] == line_id:
                return line
        return None

    def get(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        obj = self.collections[kind].get(object_id) if isinstance(object_id, str) else None
        if obj is None:
            raise resource_missing(
                kind.replace("_", " ") if kind != "invoiceitem" else "invoiceitem", str(object_id), param
            )
        return obj

    def remove(self, kind: str, object_id: str) -> dict[str, Any]:
        obj = self.get(kind, object_id)
        self.collections[kind].remove(object_id)
        stub = {"id": object_id, "object": obj["object"], "deleted": True}
        self.deleted[object_id] = stub
        return stub

    # --- events --------------------------------------------------------------------------------

    def emit(
        self,
        ctx: Ctx | None,
        event_type: str,
        obj: dict[str, Any],
        previous_attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        now = ctx.now if ctx else self.clock.now()
        if not self.record_events:
            return {"id": None, "object": "event", "type": event_type}
        data: dict[str, Any] = {"object": event_view(self, obj)}
        if previous_attributes is not None:
            data["previous_attributes"] = previous_attributes
        event = {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": now,
            # Serialized now: the snapshot later changes cannot reach, and compact to keep.
            "data": orjson.Fragment(orjson.dumps(data)),
            "livemode": False,
            "pending_webhooks": 0,
            "request": ctx.request_info() if ctx else {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        self.insert("event", event)
        self.outbox.append(event)
        return event

    def remember_response(self, key: str, record: IdempotencyRecord, ttl_seconds: int) -> None:
        """Keep a response for replay; expired keys are dropped whenever the table doubles."""
        self.idempotency[key] = record
        if len(self.idempotency) >= self.next_idempotency_prune:
            expired = [k for k, r in self.idempotency.items() if record.created - r.created > ttl_seconds]
            for stale in expired:
                del self.idempotency[stale]
            self.next_idempotency_prune = max(1024, 2 * len(self.idempotency))

    # --- persistence ---------------------------------------------------------------------------

    def to_json(self) -> bytes:
        with self.lock:
            return orjson.dumps(
                {
                    "seed": self.seed,
                    "seq": self.seq,
                    "counters": self.ids.counters,
                    "clock": self.clock.to_dict(),
                    "collections": {
                        kind: [[coll.entries[oid][0], coll.entries[oid][1], obj] for oid, obj in coll.objects.items()]
                        for kind, coll in self.collections.items()
                    },
                    "secondary_extra": self._manual_index_entries(),
                    "lines": self.lines,
                    "credit_note_lines": self.credit_note_lines,
                    "deleted": self.deleted,
                    "idempotency": {
                        key: [rec.fingerprint, rec.status, rec.body.decode(), rec.created, rec.path]
                        for key, rec in self.idempotency.items()
                    },
                }
            )

    def _manual_index_entries(self) -> dict[str, dict[str, dict[str, list]]]:
        # Index entries added after creation (balance transactions by payout, attached payment
        # methods, invoice items attached later) are not re-derivable from the objects alone.
        manual: dict[str, dict[str, dict[str, list]]] = {}
        for kind, coll in self.collections.items():
            for name, by_value in coll.secondary.items():
                if name in coll.extractors:
                    continue
                manual.setdefault(kind, {})[name] = {value: list(index.entries) for value, index in by_value.items()}
        return manual

    @classmethod
    def from_json(cls, raw: bytes | str) -> StripeState:
        data = orjson.loads(raw)
        state = cls(seed=data.get("seed", 0))
        state.seq = data["seq"]
        state.ids.counters = dict(data["counters"])
        state.clock.load(data.get("clock", {}))
        state.lines = data.get("lines", {})
        state.credit_note_lines = data.get("credit_note_lines", {})
        state.deleted = data.get("deleted", {})
        for kind, rows in data["collections"].items():
            coll = state.collections[kind]
            for created, seq, obj in rows:
                coll.add(obj, created, seq)
                state.kind_of_id[obj["id"]] = kind
        for kind, by_name in data.get("secondary_extra", {}).items():
            coll = state.collections[kind]
            for name, by_value in by_name.items():
                for value, entries in by_value.items():
                    for entry in entries:
                        coll.add_to_secondary(name, value, tuple(entry))
        for invoice_id, lines in state.lines.items():
            for line in lines:
                state.kind_of_id[line["id"]] = "line_item"
                state.line_owner[line["id"]] = invoice_id
        for key, (fingerprint, status, body, created, path) in data.get("idempotency", {}).items():
            state.idempotency[key] = IdempotencyRecord(fingerprint, status, body.encode(), created, path)
        relink_shared_objects(state)
        return state

    def save(self, path: str | Path) -> None:
        Path(path).write_bytes(self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> StripeState:
        return cls.from_json(Path(path).read_bytes())

    def reset(self) -> None:
        """Empty everything (ids restart too, so a reset sandbox repeats the same ids)."""
        with self.lock:
            fresh = StripeState(seed=self.seed)
            for name in (
                "ids",
                "seq",
                "collections",
                "kind_of_id",
                "lines",
                "line_owner",
                "credit_note_lines",
                "deleted",
                "idempotency",
            ):
                setattr(self, name, getattr(fresh, name))
            self.outbox.clear()
            self.webhook_deliveries.clear()
            self.pending_funds = self.payouts_in_transit = None
            self.clock.real()


def event_view(state: StripeState, obj: dict[str, Any]) -> dict[str, Any]:
    """Events show a charge with its refunds (the list an API call gets with `expand[]=refunds`)."""
    if obj.get("object") != "charge":
        return obj
    from sync_pipeline.sandbox.stripe.expand import INCLUDABLE

    return {**obj, "refunds": INCLUDABLE["charge"]["refunds"](state, obj)}


def relink_shared_objects(state: StripeState) -> None:
    """After loading, embedded lists must point at the stored line/item dicts again, not copies."""
    from sync_pipeline.sandbox.stripe.invoicing import refresh_credit_note_lines, refresh_invoice_lines
    from sync_pipeline.sandbox.stripe.subscriptions import refresh_subscription_items

    for invoice in state.collections["invoice"].objects.values():
        refresh_invoice_lines(state, invoice)
    for note in state.collections["credit_note"].objects.values():
        refresh_credit_note_lines(state, note)
    for subscription in state.collections["subscription"].objects.values():
        refresh_subscription_items(state, subscription)
