"""Writing billing back onto Salesforce: Stripe ids, NetSuite ids and `Billing_Status__c` (Stripe → Salesforce).

What each billed opportunity and its account should show is planned from the ledger and Stripe's
current invoice; only what changed since the ledger last saw it is sent, as external-id upserts in
sObject collections.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sync_pipeline.errors import SyncIssue, make_issue
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping import salesforce_writeback as writeback
from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.external_ids import netsuite_external_id
from sync_pipeline.resources.ledger import ExceptionRow, Ledger, LedgerEntry
from sync_pipeline.resources.salesforce import SalesforceResource, SaveResult
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.writers.netsuite import TARGET as NETSUITE_TARGET
from sync_pipeline.writers.report import Action, Outcome, Report, exception_row

# The write-back report's own columns, beside the outcome's.
DETAIL_COLUMNS = ("billing_status", "netsuite_id")


@dataclass(frozen=True)
class _Writeback:
    sobject: str
    record_id: str
    by_field: str  # the external-id field the upsert matches on
    record: dict[str, Any]
    stripe_id: str
    status: str | None = None
    netsuite_id: str | None = None

    def outcome(self, action: Action, internal_id: str | None = None, issue: SyncIssue | None = None) -> Outcome:
        return Outcome(
            self.sobject,
            self.record_id,
            action,
            source_id=self.stripe_id or None,
            internal_id=internal_id,
            issue=issue,
            detail={"billing_status": self.status, "netsuite_id": self.netsuite_id},
        )


def refunded_minor(invoice: Mapping[str, Any]) -> int:
    refunded = 0
    for payment in (invoice.get("payments") or {}).get("data") or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        charge = intent.get("latest_charge") if isinstance(intent, dict) else None
        if isinstance(charge, dict):
            refunded += int(charge.get("amount_refunded") or 0)
    return max(refunded, int(invoice.get("post_payment_credit_notes_amount") or 0))


def current_invoice(stripe: StripeResource, stripe_id: str) -> dict[str, Any] | None:
    """The invoice whose state the opportunity shows: its own, or its subscription's latest."""
    invoice_id = stripe_id
    if stripe_id.startswith("sub_"):
        latest = stripe.retrieve_subscription(stripe_id).get("latest_invoice")
        invoice_id = latest.get("id") if isinstance(latest, dict) else latest
        if not invoice_id:
            return None
    return stripe.retrieve_invoice(invoice_id, expand=["payments.data.payment.payment_intent.latest_charge"])


def _netsuite_ids(ledger: Ledger, record_type: str, stripe_ids: Iterable[str]) -> dict[str, str]:
    external = {netsuite_external_id(s): s for s in stripe_ids if s}
    found = ledger.lookup(NETSUITE_TARGET, record_type, list(external))
    return {external[e]: entry.internal_id for e, entry in found.items()}


def writeback_hash(record: Mapping[str, Any], record_id: str) -> str:
    """The ledger hash of a write-back, the same whichever field the upsert matched on."""
    return content_hash({**record, "Id": record_id})


def _settled(entry: LedgerEntry, written: Mapping[str, LedgerEntry], netsuite_invoices: Mapping[str, str]) -> bool:
    """A one-off invoice Salesforce already shows as refunded or void cannot change again: Stripe need not be asked."""
    known = written.get(entry.external_id)
    if known is None or not entry.internal_id.startswith("in_"):
        return False
    netsuite_id = netsuite_invoices.get(entry.internal_id)
    return any(
        writeback_hash(
            writeback.opportunity_writeback(entry.external_id, entry.internal_id, status, netsuite_id),
            entry.external_id,
        )
        == known.content_hash
        for status in writeback.FINAL_STATUSES
    )


def _open_by_opportunity(ledger: Ledger) -> dict[str, list[dict]]:
    """The open billing exceptions of each opportunity, oldest first (the reason names the first)."""
    by_id: dict[str, list[dict]] = {}
    for row in reversed(ledger.open_exceptions(target=billing.STRIPE_TARGET)):
        if row["record_type"] == billing.BILLED_OPPORTUNITY:
            by_id.setdefault(row["external_id"], []).append(row)
    return by_id


def plan_writebacks(ledger: Ledger, stripe: StripeResource, now: int) -> list[_Writeback]:
    """What Salesforce should show for every billed opportunity and its account, from Stripe's current state,
    and for every deal held back from billing (or no longer held back), from the open exceptions."""
    stripe_entries = ledger.entries(target=billing.STRIPE_TARGET)
    billed = [e for e in stripe_entries if e.record_type == billing.BILLED_OPPORTUNITY]
    customers = [e for e in stripe_entries if e.record_type == billing.STRIPE_CUSTOMER]
    written = {
        e.external_id: e for e in ledger.entries(target=writeback.SALESFORCE_TARGET) if e.record_type == "Opportunity"
    }
    problems = _open_by_opportunity(ledger)
    review = {i: [r for r in rows if r["error_code"] in writeback.REVIEW_CODES] for i, rows in problems.items()}
    one_off = [e.internal_id for e in billed if e.internal_id.startswith("in_")]
    netsuite_invoices = _netsuite_ids(ledger, ns.INVOICE, one_off)
    active = [e for e in billed if review.get(e.external_id) or not _settled(e, written, netsuite_invoices)]
    invoices = {e.external_id: current_invoice(stripe, e.internal_id) for e in active}
    netsuite_invoices.update(
        _netsuite_ids(
            ledger, ns.INVOICE, [i["id"] for i in invoices.values() if i and i["id"] not in netsuite_invoices]
        )
    )
    netsuite_customers = _netsuite_ids(ledger, ns.CUSTOMER, [e.internal_id for e in customers])
    plans = []
    for entry in active:
        invoice = invoices[entry.external_id]
        status = writeback.billing_status(invoice, refunded_minor(invoice), now) if invoice else writeback.NOT_BILLED
        # Reopened or changed after billing: the invoice's state would read as if all were well.
        reason = writeback.status_reason(review.get(entry.external_id) or [])
        if reason:
            status = writeback.NEEDS_REVIEW
        netsuite_id = netsuite_invoices.get(invoice["id"]) if invoice else None
        record = writeback.opportunity_writeback(
            entry.external_id, entry.internal_id, status, netsuite_id, invoice["id"] if invoice else None, reason
        )
        by_field = "Id"
        known = written.get(entry.external_id)
        if known is not None and known.source_id == entry.internal_id:
            # The opportunity holds its Stripe id already: match on it, as an external id. (Not after a Held
            # back write only: an upsert on a Stripe id no record holds yet would create an opportunity.)
            by_field = next(k for k in record if k.startswith("Stripe_"))
            record.pop("Id")
        plans.append(
            _Writeback("Opportunity", entry.external_id, by_field, record, entry.internal_id, status, netsuite_id)
        )
    billed_ids = {e.external_id for e in billed}
    # Held back: not billed, with open exceptions. Written before but with none now (fixed, reopened, before the
    # start date): the status is cleared; an unchanged record is skipped by its hash like any other.
    cleared = {i for i, e in written.items() if not e.source_id}  # written as Held back, never as billed
    unbilled = sorted((set(problems) | cleared) - billed_ids)
    for opportunity_id in unbilled:
        reason = writeback.status_reason(problems.get(opportunity_id) or [])
        record = writeback.unbilled_writeback(opportunity_id, reason)
        plans.append(_Writeback("Opportunity", opportunity_id, "Id", record, "", record["Billing_Status__c"]))
    for entry in customers:
        netsuite_id = netsuite_customers.get(entry.internal_id)
        plans.append(
            _Writeback(
                "Account",
                entry.external_id,
                "Id",
                writeback.account_writeback(entry.external_id, entry.internal_id, netsuite_id),
                entry.internal_id,
                None,
                netsuite_id,
            )
        )
    return plans


def _writeback_issue(item: _Writeback, result: SaveResult) -> SyncIssue:
    record_type = item.sobject.lower()
    codes = {str(e.get("statusCode") or e.get("errorCode")) for e in result.errors}
    if "DUPLICATE_EXTERNAL_ID" in codes and item.by_field != "Id":
        ids = writeback.duplicate_ids(result.errors)
        return make_issue(
            "SALESFORCE_DUPLICATE_MATCH",
            record_type=record_type,
            external_id=item.record_id,
            source_id=item.stripe_id or None,
            field=f"{item.sobject}.{item.by_field}",
            value=item.stripe_id,
            record_ids=", ".join(ids) or "ids not given",
        )
    detail = "; ".join(f"{e.get('statusCode') or e.get('errorCode')}: {e.get('message')}" for e in result.errors)
    return make_issue(
        "SALESFORCE_WRITE_REJECTED",
        record_type=record_type,
        external_id=item.record_id,
        source_id=item.stripe_id or None,
        detail=detail or "no detail",
    )


def write_back(
    salesforce: SalesforceResource,
    ledger: Ledger,
    stripe: StripeResource,
    *,
    run_id: str | None = None,
    now: int | None = None,
) -> Report:
    """Upsert the Stripe ids, NetSuite ids and billing status onto Salesforce; unchanged records are skipped."""
    report = Report("salesforce write-back", detail_columns=DETAIL_COLUMNS)
    plans = plan_writebacks(ledger, stripe, int(now if now is not None else time.time()))
    done = {(e.record_type, e.external_id): e for e in ledger.entries(target=writeback.SALESFORCE_TARGET)}
    groups: dict[tuple[str, str], list[_Writeback]] = {}
    for item in plans:
        known = done.get((item.sobject, item.record_id))
        if known is not None and known.content_hash == writeback_hash(item.record, item.record_id):
            report.add(item.outcome(Action.UNCHANGED, known.internal_id))
            continue
        groups.setdefault((item.sobject, item.by_field), []).append(item)
    exceptions: list[ExceptionRow] = []
    synced: list[LedgerEntry] = []
    for (sobject, by_field), items in groups.items():
        # sObject collections: 200 records a request, one SaveResult per record.
        results = salesforce.upsert_many(sobject, by_field, [item.record for item in items])
        for item, result in zip(items, results, strict=True):
            if result.success:
                report.writes += 1
                internal_id = result.id or item.record_id
                synced.append(
                    LedgerEntry(
                        writeback.SALESFORCE_TARGET,
                        sobject,
                        item.record_id,
                        internal_id,
                        writeback_hash(item.record, item.record_id),
                        source_id=item.stripe_id or None,
                        run_id=run_id,
                    )
                )
                report.add(item.outcome(Action.CREATED if result.created else Action.UPDATED, internal_id))
            else:
                issue = _writeback_issue(item, result)
                exceptions.append(exception_row(issue, writeback.SALESFORCE_TARGET))
                report.add(item.outcome(Action.QUARANTINED, issue=issue))
    ledger.record_synced(synced)
    ledger.record_exceptions(exceptions, run_id=run_id)
    return report
