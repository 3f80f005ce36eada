"""Extract assets: one UTC day of Stripe root documents (invoices, invoice-less charges) in their current state.

Each row holds a whole document tree as JSON (the invoice with its customer, payments, charges and
refunds), so the mapping sees one consistent snapshot and never calls Stripe itself.
"""

import contextvars
import itertools
import zlib
from collections.abc import Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipeline import exact_json
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.event_scope import (
    CHARGE_PREFIXES,
    CUSTOMER_PREFIXES,
    INVOICE_PREFIXES,
    EventScope,
    scope_metadata,
)
from sync_pipeline.mapping.stripe_refs import id_of
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS, partition_window
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import Ledger, LedgerResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.netsuite import TARGET as NETSUITE_TARGET

# One list call brings each invoice with its customer, payments and the charge behind each payment.
INVOICE_EXPAND = ("data.customer", "data.payments", "data.payments.data.payment.payment_intent.latest_charge")
CHARGE_EXPAND = ("data.refunds",)
# Look-ups per document (refunds of a refunded charge, the invoice behind a charge) run in parallel,
# well under Stripe's 100 read requests/s.
STRIPE_LOOKUP_THREADS = 8

TREE_COLUMNS = ["id", "created", "customer_id", "currency", "status", "amount_minor", "tree"]


def _payments(invoice: dict) -> list[dict]:
    payments = invoice.get("payments")
    return list(payments.get("data") or []) if isinstance(payments, dict) else []


def _charge_of_payment(invoice_payment: dict) -> dict | None:
    payment = invoice_payment.get("payment") or {}
    if isinstance(payment.get("charge"), dict):
        return payment["charge"]
    intent = payment.get("payment_intent")
    if isinstance(intent, dict) and isinstance(intent.get("latest_charge"), dict):
        return intent["latest_charge"]
    return None


def _refunds_of(stripe: StripeResource, charge: dict) -> list[dict]:
    """A charge's refunds; asked for only when the charge says money went back."""
    refunds = charge.get("refunds")
    if isinstance(refunds, dict) and not refunds.get("has_more") and refunds.get("data") is not None:
        listed = list(refunds["data"])
        if sum(r.get("amount", 0) for r in listed if r.get("status") == "succeeded") >= charge.get(
            "amount_refunded", 0
        ):
            return listed
    if not charge.get("amount_refunded"):
        return []
    return list(stripe.list_refunds(charge=charge["id"]))


def _disputes_of(stripe: StripeResource, charges: Iterable[dict]) -> list[dict]:
    """The disputes of the charges that say they were disputed (each with its balance transactions)."""
    return [d for c in charges if c.get("disputed") for d in stripe.list_disputes(charge=c["id"])]


def _may_have_credit_notes(invoice: dict) -> bool:
    # Only these can carry credit notes: an invoice with credit-note amounts, or an open one (a credit note
    # voided on it leaves its amounts at zero again). Asking only for them keeps the extract at one list call
    # per few hundred invoices.
    credited = (invoice.get("pre_payment_credit_notes_amount") or 0) + (
        invoice.get("post_payment_credit_notes_amount") or 0
    )
    return bool(credited) or invoice.get("status") == "open"


def _credit_notes_of(stripe: StripeResource, invoice: dict, booked: bool = False) -> list[dict]:
    """The invoice's credit notes (issued and void), each with all its lines. `booked`: a memo of one of them is
    in NetSuite already, so it is looked up whatever the invoice says (a note voided since, on an invoice paid
    since, shows nothing on the invoice, yet its memo must now be reversed)."""
    if not (booked or _may_have_credit_notes(invoice)):
        return []
    return [with_all_lines(stripe, note) for note in stripe.list_credit_notes(invoice=invoice["id"])]


def with_all_lines(stripe: StripeResource, document: dict) -> dict:
    """An invoice or credit note with every line: Stripe embeds the first ten and says `has_more`; the rest are
    paged from its /lines (a partial list would under-state the document, so the mapping refuses one)."""
    lines = document.get("lines")
    if not (isinstance(lines, dict) and lines.get("has_more")):
        return document
    paged = stripe.list_credit_note_lines if document.get("object") == "credit_note" else stripe.list_invoice_lines
    return {**document, "lines": {**lines, "data": list(paged(document["id"])), "has_more": False}}


def uses_customer_balance(invoice: dict) -> bool:
    """Whether finalizing the invoice took from the customer's balance: credit that paid part of it, or a debit
    added to its amount due (Stripe's starting_balance: negative a credit, positive a debit)."""
    starting = invoice.get("starting_balance") or 0
    return starting != 0 and (invoice.get("ending_balance") or 0) != starting


def _balance_transactions_of(stripe: StripeResource, invoice: dict) -> list[dict]:
    """The customer's balance history, oldest first, for an invoice that used its balance: it says which credits
    (credit notes, negative invoices, adjustments) paid it, or which debits its amount due carried."""
    customer = id_of(invoice.get("customer"))
    if not customer or not uses_customer_balance(invoice):
        return []
    return sorted(stripe.list_customer_balance_transactions(customer), key=lambda t: (t.get("created") or 0, t["id"]))


def _collapse(obj: dict | None) -> dict | str | None:
    return obj["id"] if isinstance(obj, dict) and obj.get("id") else obj


def invoices_with_booked_credit_notes(stripe: StripeResource, ledger: Ledger, partition_key: str) -> set[str]:
    """The partition's invoices with a credit note whose credit memo the ledger says is in NetSuite."""
    notes = sorted(
        {
            e.source_id
            for e in ledger.entries(target=NETSUITE_TARGET, partition_key=partition_key)
            if e.record_type == "creditMemo" and (e.source_id or "").startswith("cn_")
        }
    )
    return {id_of(note.get("invoice")) for note in in_parallel(stripe.retrieve_credit_note, notes)} - {None}


def with_settlement(stripe: StripeResource, obj: dict, settles_in: Collection[str]) -> dict:
    """A charge or refund presented in a currency Stripe settles in another (field_mapping `payouts.settles_in`),
    with its balance transaction expanded: its exchange rate goes on the NetSuite payment or refund, so the
    payout's deposit (in the settlement currency) takes it in at Stripe's amount."""
    txn = obj.get("balance_transaction")
    if str(obj.get("currency") or "").upper() not in settles_in or not isinstance(txn, str):
        return obj
    return {**obj, "balance_transaction": stripe.retrieve_balance_transaction(txn)}


def invoice_tree(
    stripe: StripeResource, invoice: dict, credit_notes_booked: bool = False, settles_in: Collection[str] = ()
) -> dict:
    """The invoice with everything the mapping needs: customer, payments, their charges and refunds, credit notes.

    Each object appears once (expanded copies inside the invoice are replaced by their ids), which
    halves what a partition of tens of thousands of invoices holds in memory and on disk.
    """
    invoice = with_all_lines(stripe, invoice)
    payments = _payments(invoice)
    charges = [with_settlement(stripe, c, settles_in) for c in (_charge_of_payment(p) for p in payments) if c]
    refunds = [with_settlement(stripe, r, settles_in) for c in charges for r in _refunds_of(stripe, c)]
    customer = invoice.get("customer") if isinstance(invoice.get("customer"), dict) else None
    slim_payments = []
    for invoice_payment in payments:
        payment = dict(invoice_payment.get("payment") or {})
        for field in ("payment_intent", "charge"):
            payment[field] = _collapse(payment.get(field))
        slim_payments.append({**invoice_payment, "payment": payment})
    slim_invoice = {**invoice, "customer": _collapse(invoice.get("customer")), "payments": None}
    return {
        "invoice": slim_invoice,
        "customer": customer,
        "invoice_payments": slim_payments,
        "charges": charges,
        "refunds": refunds,
        "credit_notes": _credit_notes_of(stripe, invoice, credit_notes_booked),
        "customer_balance_transactions": _balance_transactions_of(stripe, invoice),
        "disputes": _disputes_of(stripe, charges),
    }


def pack_tree(tree: dict) -> bytes:
    """A document tree as compressed exact JSON: a partition of 20,000 invoices stays well under 1 GiB."""
    return zlib.compress(exact_json.dumps(tree).encode(), 1)


def unpack_tree(cell: bytes) -> dict:
    return exact_json.loads(zlib.decompress(cell))


def read_trees(frame: pd.DataFrame) -> Iterator[dict]:
    """The document trees of an extract asset's frame, one at a time."""
    return (unpack_tree(cell) for cell in frame["tree"])


def _tree_rows(trees: Iterable[dict], root: str, amount_field: str) -> pd.DataFrame:
    rows = []
    for tree in trees:
        doc = tree[root]
        rows.append(
            {
                "id": doc["id"],
                "created": int(doc["created"]),
                "customer_id": id_of(doc.get("customer")),
                "currency": (doc.get("currency") or "").upper(),
                "status": doc.get("status"),
                "amount_minor": int(doc.get(amount_field) or 0),
                "tree": pack_tree(tree),
            }
        )
    return pd.DataFrame(rows, columns=TREE_COLUMNS)


def in_parallel(fn, items: Iterable, threads: int = STRIPE_LOOKUP_THREADS, chunk: int = 200) -> Iterator:
    """`map(fn, items)` on a few threads, a chunk at a time, so a large partition is never all in memory."""
    # Each call runs in a copy of the caller's context: external ids made there carry the caller's Stripe account.
    context = contextvars.copy_context()

    def call(item):
        return context.copy().run(fn, item)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stripe") as pool:
        batch: list = []
        for item in items:
            batch.append(item)
            if len(batch) >= chunk:
                yield from pool.map(call, batch)
                batch = []
        yield from pool.map(call, batch)


def _summary(frame: pd.DataFrame, scope: EventScope, day: str) -> dict[str, Any]:
    by_status = frame.groupby("status").size().to_dict() if len(frame) else {}
    return {
        "documents": len(frame),
        "by_status": dg.MetadataValue.json({k: int(v) for k, v in by_status.items()}),
        **scope_metadata(scope, len(frame), day),
    }


def _in_window(obj: dict | None, start: int, end: int, field: str = "created") -> bool:
    return obj is not None and start <= int(obj.get(field) or 0) < end


def by_id(stripe: StripeResource, collection: str, ids: Iterable[str], expand: Sequence[str]) -> list[dict]:
    """The objects with these ids (as their list call gives them; ones Stripe no longer has are left out)."""
    return [o for o in in_parallel(lambda i: stripe.retrieve_as_listed(collection, i, expand), ids) if o]


def _invoice_of_charge(stripe: StripeResource, charge_id: str) -> str | None:
    charge = stripe.retrieve_as_listed("charges", charge_id)
    intent = id_of(charge.get("payment_intent")) if charge else None
    payment = next(iter(stripe.list_invoice_payments(payment_intent=intent)), None) if intent else None
    return id_of(payment.get("invoice")) if payment else None


def scoped_invoices(stripe: StripeResource, scope: EventScope, start: int, end: int) -> list[dict]:
    """A partial run's invoices of the day: those named, those the named charges pay, the named customers'."""
    named = scope.ids(INVOICE_PREFIXES) or []
    # A charge the sensor could not tie to its invoice: asked here (an invoice-less one is stripe_charges').
    named += [i for i in in_parallel(lambda c: _invoice_of_charge(stripe, c), scope.ids(CHARGE_PREFIXES) or []) if i]
    found = {inv["id"]: inv for inv in by_id(stripe, "invoices", dict.fromkeys(named), INVOICE_EXPAND)}
    for customer in scope.ids(CUSTOMER_PREFIXES) or []:
        listed = stripe.list_invoices(created_gte=start, created_lt=end, expand=INVOICE_EXPAND, customer=customer)
        found.update((inv["id"], inv) for inv in listed)
    return [inv for inv in found.values() if _in_window(inv, start, end)]


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="Stripe invoices created on the partition's UTC day, current state, with customer, payments, "
    "charges, refunds, disputes and credit notes.",
)
@each_day
@scoped
def stripe_invoices(
    context: dg.AssetExecutionContext,
    config: EventScope,
    stripe: StripeResource,
    ledger: LedgerResource,
    field_mapping: FieldMappingResource,
) -> pd.DataFrame:
    start, end = partition_window(context.partition_key)
    settles_in = field_mapping.load().payouts.settles_in
    if config.partial:
        # A sensor run: only the documents its events name. Their credit notes are asked for whatever the invoice
        # says (one list call each), rather than reading the whole day's memos from the ledger.
        invoices: Iterable[dict] = scoped_invoices(stripe, config, start, end)
        booked: Collection[str] = {inv["id"] for inv in invoices}
    else:
        booked = invoices_with_booked_credit_notes(stripe, ledger.get_ledger(), context.partition_key)
        # Streamed: each page's invoices become JSON rows and are dropped before the next pages arrive.
        invoices = stripe.list_invoices(created_gte=start, created_lt=end, expand=INVOICE_EXPAND)
    frame = _tree_rows(
        in_parallel(lambda inv: invoice_tree(stripe, inv, inv["id"] in booked, settles_in), invoices),
        "invoice",
        "total",
    )
    context.add_output_metadata(_summary(frame, config, context.partition_key))
    return frame


def _belongs_to_an_invoice(stripe: StripeResource, charge: dict) -> bool:
    # Since 2025-03-31.basil a Charge no longer names its invoice: ask the invoice payments.
    intent = id_of(charge.get("payment_intent"))
    if not intent:
        return False
    return next(iter(stripe.list_invoice_payments(payment_intent=intent)), None) is not None


def _payment_intents_of(stripe_invoices: pd.DataFrame) -> set[str]:
    intents = set()
    for tree in read_trees(stripe_invoices):
        for invoice_payment in tree.get("invoice_payments") or ():
            intent = id_of((invoice_payment.get("payment") or {}).get("payment_intent"))
            if intent:
                intents.add(intent)
    return intents


def scoped_charges(stripe: StripeResource, scope: EventScope, start: int, end: int) -> list[dict]:
    """A partial run's charges of the day: those named and the named customers' (invoiced ones are dropped next)."""
    found = {c["id"]: c for c in by_id(stripe, "charges", scope.ids(CHARGE_PREFIXES) or [], CHARGE_EXPAND)}
    for customer in scope.ids(CUSTOMER_PREFIXES) or []:
        listed = stripe.list_charges(created_gte=start, created_lt=end, expand=CHARGE_EXPAND, customer=customer)
        found.update((c["id"], c) for c in listed)
    return [c for c in found.values() if _in_window(c, start, end)]


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="Stripe charges created on the partition's UTC day that belong to no invoice, with refunds and "
    "disputes.",
)
@each_day
@scoped
def stripe_charges(
    context: dg.AssetExecutionContext,
    config: EventScope,
    stripe: StripeResource,
    stripe_invoices: pd.DataFrame,
    field_mapping: FieldMappingResource,
) -> pd.DataFrame:
    settles_in = field_mapping.load().payouts.settles_in
    start, end = partition_window(context.partition_key)
    # Charges paying this day's invoices are known from the invoices already read and are dropped as they
    # stream by; only the others (invoice-less, or paying an older invoice after a failed attempt) need a
    # look-up each.
    same_day = _payment_intents_of(stripe_invoices)
    listed = 0
    unknown = []
    charges = (
        scoped_charges(stripe, config, start, end)
        if config.partial
        else stripe.list_charges(created_gte=start, created_lt=end, expand=CHARGE_EXPAND)
    )
    for charge in charges:
        listed += 1
        if id_of(charge.get("payment_intent")) not in same_day:
            unknown.append(charge)
    invoiced_elsewhere = list(in_parallel(lambda c: _belongs_to_an_invoice(stripe, c), unknown))
    standalone = [c for c, is_invoiced in zip(unknown, invoiced_elsewhere, strict=True) if not is_invoiced]
    customer_ids = sorted({id_of(c.get("customer")) for c in standalone} - {None})
    customers = dict(zip(customer_ids, in_parallel(stripe.retrieve_customer, customer_ids), strict=True))
    trees = list(
        in_parallel(
            lambda c: {
                "charge": with_settlement(stripe, c, settles_in),
                "customer": customers.get(id_of(c.get("customer"))),
                "refunds": [with_settlement(stripe, r, settles_in) for r in _refunds_of(stripe, c)],
                "disputes": _disputes_of(stripe, [c]),
            },
            standalone,
        )
    )
    frame = _tree_rows(trees, "charge", "amount")
    context.add_output_metadata(
        {
            **_summary(frame, config, context.partition_key),
            "invoiced_charges_left_to_their_invoice": listed - len(standalone),
        }
    )
    return frame


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="The Stripe customers the partition's invoices and charges belong to (current state).",
)
@each_day
@scoped
def stripe_customers(
    context: dg.AssetExecutionContext, stripe_invoices: pd.DataFrame, stripe_charges: pd.DataFrame
) -> pd.DataFrame:
    customers: dict[str, dict] = {}
    for tree in itertools.chain(read_trees(stripe_invoices), read_trees(stripe_charges)):
        customer = tree.get("customer")
        if isinstance(customer, dict) and customer.get("id"):
            customers[customer["id"]] = customer
    frame = pd.DataFrame(
        [
            {
                "id": c["id"],
                "email": c.get("email"),
                "name": c.get("name"),
                "created": int(c.get("created") or 0),
                "netsuite_customer_id": (c.get("metadata") or {}).get("netsuite_customer_id"),
                "payload": exact_json.dumps(c),
            }
            for c in customers.values()
        ],
        columns=["id", "email", "name", "created", "netsuite_customer_id", "payload"],
    )
    context.add_output_metadata({"customers": len(frame)})
    return frame
