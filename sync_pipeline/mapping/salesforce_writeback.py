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

# Billing_Status__c values (the org's picklist labels). `STATUS_MEANINGS` is the one list of them: the
# picklist must hold every key, and the README's table is read from it.
NOT_BILLED, INVOICED, PAID, PAST_DUE = "Not Billed", "Invoiced", "Paid", "Past Due"
PARTIALLY_REFUNDED, REFUNDED, VOID = "Partially Refunded", "Refunded", "Void"
HELD_BACK, NEEDS_REVIEW = "Held back", "Needs review"
STATUS_MEANINGS = {
    HELD_BACK: "Closed Won but not billed: the reason field says what to fix (a product without a Stripe price "
    "in the deal's currency, an empty amount, ...); billed on the first run after the fix",
    NOT_BILLED: "billed in Stripe, but the subscription has no invoice yet",
    INVOICED: "the invoice is open and not yet due",
    PAST_DUE: "the invoice is past its due date, or marked uncollectible",
    PAID: "the invoice is paid",
    PARTIALLY_REFUNDED: "the invoice is paid and part of it was refunded or credited",
    REFUNDED: "the invoice is paid and all of it was refunded or credited (final)",
    VOID: "the invoice was voided in Stripe (final)",
    NEEDS_REVIEW: "billed, then moved out of Closed Won or changed (amount, products, currency, account) in "
    "Salesforce: the reason field says what changed and what to do (cancel or amend in Stripe, or restore "
    "the opportunity); never billed again automatically",
}
FINAL_STATUSES = frozenset({REFUNDED, VOID})
# Why the status is Held back or Needs review (empty otherwise): a custom Text(255) field beside the status.
REASON_FIELD = "Billing_Status_Reason__c"
REASON_LENGTH = 255
# Open billing exceptions that make a billed deal Needs review instead of following its invoice.
REVIEW_CODES = frozenset({"OPPORTUNITY_CHANGED_AFTER_BILLING", "OPPORTUNITY_REOPENED_AFTER_BILLING"})


def status_reason(exceptions: Sequence[Mapping[str, Any]]) -> str:
    """Billing_Status_Reason__c from a deal's open exceptions: the first problem and its fix, cut to fit.

    One problem is spelled out (a sales rep reads a line, not a report); more are counted, and all of them
    are listed by `salesforce_sync_exceptions`.
    """
    if not exceptions:
        return ""
    first = exceptions[0]
    text = f"{first.get('message')}. Fix: {first.get('fix')}"
    if len(exceptions) > 1:
        text = f"{len(exceptions)} problems; first: {text}"
    return text if len(text) <= REASON_LENGTH else text[: REASON_LENGTH - 1] + "…"


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
    reason: str = "",
) -> dict[str, Any]:
    """The opportunity's Stripe ids and status; a subscription's also names the invoice the status is about
    (its first invoice, with the one-time fees, until it renews), so sales can open it from Salesforce.

    The reason is always sent, empty as null, so a status that no longer needs one clears it."""
    field_name = "Stripe_Subscription_Id__c" if stripe_id.startswith("sub_") else "Stripe_Invoice_Id__c"
    record: dict[str, Any] = {
        "Id": opportunity_id,
        field_name: stripe_id,
        "Billing_Status__c": status,
        REASON_FIELD: reason or None,
    }
    if stripe_id.startswith("sub_") and invoice_id:
        record["Stripe_Invoice_Id__c"] = invoice_id
    if netsuite_invoice_id:
        record["NetSuite_Invoice_Id__c"] = netsuite_invoice_id
    return record


def unbilled_writeback(opportunity_id: str, reason: str) -> dict[str, Any]:
    """A deal not billed: Held back with its reason, or (no reason: the problem went away) no status at all."""
    return {"Id": opportunity_id, "Billing_Status__c": HELD_BACK if reason else None, REASON_FIELD: reason or None}


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
