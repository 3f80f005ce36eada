"""Billed opportunities -> the Salesforce records that show their billing: ids and `Billing_Status__c`.

Pure module: no HTTP, no Dagster. `billing_status` says what an opportunity's `Billing_Status__c` is
for its Stripe invoice's state; `opportunity_writeback` and `account_writeback` build the records
upserted onto Salesforce; `duplicate_ids` reads a collection error. How the opportunity was billed is
`stripe_billing.py`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Ledger target of the write-back (record type = the sObject, external id = the Salesforce record id).
SALESFORCE_TARGET = "salesforce"

# Billing_Status__c values (the org's picklist labels).
NOT_BILLED, INVOICED, PAID, PAST_DUE = "Not Billed", "Invoiced", "Paid", "Past Due"
PARTIALLY_REFUNDED, REFUNDED, VOID = "Partially Refunded", "Refunded", "Void"
FINAL_STATUSES = frozenset({REFUNDED, VOID})


def billing_status(invoice: Mapping[str, Any], refunded_minor: int, now: int) -> str:
    """Billing_Status__c for a Stripe invoice's current state and what was refunded of its payments."""
    status = invoice.get("status")
    if status == "paid":
        paid = int(invoice.get("amount_paid") or 0)
        if refunded_minor and paid and refunded_minor >= paid:
            return REFUNDED
        return PARTIALLY_REFUNDED if refunded_minor else PAID
    if status == "void":
        return VOID
    if status == "uncollectible":
        return PAST_DUE
    if status == "open":
        due = invoice.get("due_date")
        return PAST_DUE if due is not None and int(due) < now else INVOICED
    return NOT_BILLED


def opportunity_writeback(
    opportunity_id: str,
    stripe_id: str,
    status: str,
    netsuite_invoice_id: str | None,
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """The opportunity's Stripe ids and status; a subscription's also names the invoice the status is about
    (its first invoice, with the one-time fees, until it renews), so sales can open it from Salesforce."""
    field_name = "Stripe_Subscription_Id__c" if stripe_id.startswith("sub_") else "Stripe_Invoice_Id__c"
    record: dict[str, Any] = {"Id": opportunity_id, field_name: stripe_id, "Billing_Status__c": status}
    if stripe_id.startswith("sub_") and invoice_id:
        record["Stripe_Invoice_Id__c"] = invoice_id
    if netsuite_invoice_id:
        record["NetSuite_Invoice_Id__c"] = netsuite_invoice_id
    return record


def account_writeback(account_id: str, stripe_customer_id: str, netsuite_customer_id: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"Id": account_id, "Stripe_Customer_Id__c": stripe_customer_id}
    if netsuite_customer_id:
        record["NetSuite_Customer_Id__c"] = netsuite_customer_id
    return record


def duplicate_ids(errors: Sequence[Mapping[str, Any]]) -> list[str]:
    """The record ids in a collection's DUPLICATE_EXTERNAL_ID error ("... field: [001A, 001B]")."""
    ids: list[str] = []
    for error in errors:
        message = str(error.get("message") or "")
        if "[" in message and "]" in message:
            inside = message[message.rindex("[") + 1 : message.rindex("]")]
            ids.extend(part.strip().rsplit("/", 1)[-1] for part in inside.split(",") if part.strip())
    return ids
