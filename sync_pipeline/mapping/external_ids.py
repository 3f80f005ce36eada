"""The one external-id rule: which NetSuite `externalId` a Stripe object (or a record derived from it) gets.

Deterministic ids are the first layer of idempotency: every NetSuite write is a `PUT .../eid:<id>`
upsert, so replaying a run can never create a second record. NetSuite allows only letters, digits,
`_` and `-` in external ids, so the separator between a Stripe id and a suffix is `-` (Stripe ids
themselves use `_`).

Several Stripe accounts (legal entities) book into one NetSuite account, and their ids may be equal (a
product `prod_pro` in each, or two stand-ins seeded alike), so the rule takes the Stripe account: the
default account (the only one, or the first of SYNC_STRIPE_ACCOUNTS) keeps `stripe-<id>`, as every
deployment before several accounts wrote it; any other account `eu` gets `stripe-eu-<id>`. An account
name has no `_` and a Stripe id always has one, so the segment after `stripe-` tells them apart
(`account_of_external_id`). The account is given explicitly, or is the one an account's assets run for
(`for_account`, set around each asset of an account by `sync_pipeline.stripe_accounts.scoped`).
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Iterator
from contextlib import contextmanager

PREFIX = "stripe-"
# Lower-case letters and digits, starting with a letter: never mistaken for a Stripe id (which has a `_`).
ACCOUNT_NAME_PATTERN = re.compile(r"[a-z][a-z0-9]{0,15}")
# The non-default account whose records are being mapped; None: the default account.
_CURRENT_ACCOUNT: contextvars.ContextVar[str | None] = contextvars.ContextVar("stripe_account", default=None)
EXTERNAL_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
STRIPE_ID_PATTERN = re.compile(r"[A-Za-z0-9_]+")

# Records derived from one Stripe object, beside the record that object maps to itself.
VOID_CREDIT_MEMO_SUFFIX = "void"  # stripe-in_X-void: the credit memo closing a void/uncollectible invoice
REFUND_CREDIT_MEMO_SUFFIX = "cm"  # stripe-re_X-cm: the credit memo a refund of an invoiced charge needs
OUT_OF_BAND_SUFFIX = "oob"  # stripe-in_X-oob / stripe-cn_X-oob: money paid or refunded outside Stripe
SALE_SUFFIX = "sale"  # stripe-ch_X-sale: the invoice of what a charge without a Stripe invoice paid for
DISPUTE_REINSTATED_SUFFIX = "reinstated"  # stripe-dp_X-reinstated: the payment of a won dispute's reinstated funds
REVERSAL_SUFFIX = "reversal"  # stripe-cn_X-reversal / stripe-in_X-void-reversal: the invoice undoing a credit
RETURNED_SUFFIX = "returned"  # stripe-po_X-returned: the journal entry of a payout that failed after its deposit


class ExternalIdError(ValueError):
    """A value that cannot become a NetSuite external id. `str()` names the value and the fix."""


@contextmanager
def for_account(account: str | None) -> Iterator[None]:
    """External ids made inside the block belong to `account` (None or "": the default account)."""
    if account and not ACCOUNT_NAME_PATTERN.fullmatch(account):
        raise ExternalIdError(f"Stripe account name {account!r} must be lower-case letters and digits")
    token = _CURRENT_ACCOUNT.set(account or None)
    try:
        yield
    finally:
        _CURRENT_ACCOUNT.reset(token)


def current_account() -> str | None:
    return _CURRENT_ACCOUNT.get()


def account_prefix(account: str | None) -> str:
    """`stripe-` for the default account, `stripe-eu-` for account `eu`."""
    return f"{PREFIX}{account}-" if account else PREFIX


def account_of_external_id(external_id: str) -> str | None:
    """The non-default Stripe account an external id of ours belongs to (None: the default account's, or not
    one of ours)."""
    head, _, rest = external_id.removeprefix(PREFIX).partition("-")
    if not external_id.startswith(PREFIX) or not rest:
        return None
    return head if ACCOUNT_NAME_PATTERN.fullmatch(head) else None


def netsuite_external_id(stripe_id: str, suffix: str | None = None, account: str | None = None) -> str:
    """`"in_123"` -> `"stripe-in_123"`; with `suffix="void"` -> `"stripe-in_123-void"`; of account `eu` (given,
    or the one whose assets run: `for_account`) -> `"stripe-eu-in_123"`."""
    if not isinstance(stripe_id, str) or not STRIPE_ID_PATTERN.fullmatch(stripe_id):
        raise ExternalIdError(
            f"Stripe id {stripe_id!r} cannot become a NetSuite external id: NetSuite accepts only letters, "
            "digits, '_' and '-', and a Stripe id has no '-'. Check that the value is a Stripe object id "
            "(like 'in_123') and not a name or an object"
        )
    if suffix is not None and not STRIPE_ID_PATTERN.fullmatch(suffix):
        raise ExternalIdError(f"external-id suffix {suffix!r} may contain only letters, digits and '_'")
    prefix = account_prefix(account or _CURRENT_ACCOUNT.get())
    return f"{prefix}{stripe_id}" + (f"-{suffix}" if suffix else "")


def void_credit_memo_external_id(invoice_id: str) -> str:
    return netsuite_external_id(invoice_id, VOID_CREDIT_MEMO_SUFFIX)


def refund_credit_memo_external_id(refund_id: str) -> str:
    return netsuite_external_id(refund_id, REFUND_CREDIT_MEMO_SUFFIX)


def out_of_band_external_id(stripe_id: str) -> str:
    return netsuite_external_id(stripe_id, OUT_OF_BAND_SUFFIX)


def sale_invoice_external_id(charge_id: str) -> str:
    return netsuite_external_id(charge_id, SALE_SUFFIX)


def reversal_external_id(credit_external_id: str) -> str:
    """The invoice that reverses a credit memo (a voided credit note, a write-off paid after all)."""
    if not EXTERNAL_ID_PATTERN.fullmatch(credit_external_id):
        raise ExternalIdError(f"{credit_external_id!r} is not an external id")
    return f"{credit_external_id}-{REVERSAL_SUFFIX}"


def dispute_reinstated_external_id(dispute_id: str) -> str:
    return netsuite_external_id(dispute_id, DISPUTE_REINSTATED_SUFFIX)


def deposit_external_id(payout_id: str, part: int = 1) -> str:
    """`stripe-po_X`; a payout too large for one deposit continues in `stripe-po_X-2`, `-3`, ..."""
    return netsuite_external_id(payout_id, None if part == 1 else str(part))


def returned_payout_external_id(payout_id: str) -> str:
    """The journal entry taking a failed (or canceled) payout back out of the bank account."""
    return netsuite_external_id(payout_id, RETURNED_SUFFIX)
