"""Billed Closed-Won deals, three ways: the Salesforce opportunity, what Stripe billed, what NetSuite booked.

Pure module: no HTTP, no Dagster. The reads are `sync_pipeline/assets/deal_reconciliation.py`'s; this compares.

The rule for amounts, from how `stripe_billing.py` bills a deal: an opportunity is billed only when its `Amount`
equals the sum of its line items' `TotalPrice` (`lines_add_up_to_amount`), and each line only when its mapped
Stripe price's `unit_amount × quantity` equals that line (`_price_problem`). The subscription's recurring lines
and its one-time lines (`add_invoice_items`), or the one-off invoice's items, all land on one invoice: the
one-off invoice, or the subscription's *first* invoice (`billing_reason: subscription_create`). So:

- **amount: opportunity vs Stripe** is `Amount` against the sum of that invoice's line `amount`s. A line's
  `amount` is `unit_amount × quantity`: before discounts (Stripe gives them as `discount_amounts` beside it) and
  before exclusive tax (separate `taxes`), with inclusive tax inside it as it is inside the price. A coupon or
  tax added in Stripe therefore changes the invoice's `total` but not this sum: no false difference. Renewals
  and upgrades bill later invoices; the first one stays what the deal bought. Compared at the currency's
  precision (JPY 0 decimals, USD 2, KWD 3); skipped when the currencies differ (the currency row says so).
- **amount: Stripe vs NetSuite** is the same invoice's `total` (what the customer owes, tax and discounts
  included) against the NetSuite invoice `stripe-<in_…>`'s total read back, at NetSuite's precision for the
  currency, as the daily reconciliation compares them. An invoice not in NetSuite yet is waiting for its day's
  sync (counted, not a difference) unless Salesforce already names its NetSuite invoice.
- **currency**: `CurrencyIsoCode`, Stripe's currency, NetSuite's (read back, by the field mapping's ids).
- **billing status**: `Billing_Status__c` against the status Stripe's current invoice calls for (the
  write-back's own rule, `salesforce_writeback.billing_status`). `Needs review` is accepted whatever Stripe
  says: it is set from an open exception (changed or reopened after billing) that `salesforce_sync_exceptions`
  lists, and the amount rows show what changed.
- **stripe id**: the written-back id that Stripe does not know, or that bills another opportunity.
- **netsuite id**: the written-back `NetSuite_Invoice_Id__c` of the billing invoice that is not the internal id
  of the NetSuite invoice `stripe-<in_…>` (a record re-created or merged in NetSuite, an id copied by hand).

Amounts people read are Decimal text; the difference is Salesforce − Stripe, or Stripe − NetSuite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_pipeline.mapping import salesforce_writeback as writeback
from sync_pipeline.mapping.money import MoneyError, currency_exponent, to_decimal, to_precision

AMOUNT_OPPORTUNITY_STRIPE = "amount: opportunity vs Stripe"
AMOUNT_STRIPE_NETSUITE = "amount: Stripe vs NetSuite"
CURRENCY = "currency"
BILLING_STATUS = "billing status"
STRIPE_ID = "stripe id"
NETSUITE_ID = "netsuite id"
COLUMNS = ["opportunity", "field", "currency", "salesforce", "stripe", "netsuite", "difference", "stripe_id"]
FIRST_INVOICE_REASON = "subscription_create"
NOT_IN_STRIPE = "(not in Stripe)"
NOT_IN_NETSUITE = "(not in NetSuite)"
NONE = "(none)"


@dataclass(frozen=True)
class NetSuiteInvoice:
    """The NetSuite invoice `stripe-<in_…>` as SuiteQL reads it back."""

    internal_id: str
    total: Decimal
    currency: str  # ISO code through the field mapping's currency ids ("" when the id is not mapped)


@dataclass(frozen=True)
class Deal:
    """One billed Closed-Won opportunity and what each system holds for it."""

    opportunity: Mapping[str, Any]  # Id, Amount, CurrencyIsoCode, Stripe_*_Id__c, NetSuite_Invoice_Id__c, Billing_*
    billed: Mapping[str, Any] | None  # the subscription or one-off invoice under the written-back id; None: not found
    invoice: Mapping[str, Any] | None  # the invoice that bills the deal (one-off, or the first), with all its lines
    stripe_status: str  # the Billing_Status__c Stripe's current invoice calls for
    netsuite: NetSuiteInvoice | None  # None: not in NetSuite
    netsuite_precision: int = 2  # decimals NetSuite keeps for the invoice's currency

    @property
    def opportunity_id(self) -> str:
        return str(self.opportunity.get("Id") or "")

    @property
    def stripe_id(self) -> str:
        """The written-back Stripe id that bills the deal: the subscription's, else the one-off invoice's."""
        o = self.opportunity
        return str(o.get("Stripe_Subscription_Id__c") or o.get("Stripe_Invoice_Id__c") or "")


@dataclass(frozen=True)
class Comparison:
    rows: list[dict[str, str]]  # COLUMNS, every value text
    compared: int  # deals compared
    awaiting_netsuite: list[str]  # opportunities whose invoice is not booked in NetSuite yet (not a difference)

    @property
    def deals_differing(self) -> int:
        return len({row["opportunity"] for row in self.rows})


def billed_lines_minor(invoice: Mapping[str, Any]) -> int:
    """The sum of the invoice's line amounts: what the deal's products bill, before discounts and exclusive tax."""
    lines = (invoice.get("lines") or {}).get("data") or []
    return sum(int(line.get("amount") or 0) for line in lines)


def _code(value: Any) -> str:
    return str(value or "").upper()


def exact_amount(value: Any) -> Decimal | None:
    """An amount as Salesforce or NetSuite sends it (Decimal, int or text) as a Decimal; None when empty."""
    if value is None or value == "":
        return None
    if isinstance(value, float):
        raise TypeError(f"amounts must arrive as Decimal or text, got float {value!r}")
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _at_precision(amount: Decimal, places: int) -> Decimal:
    """`amount` written with `places` decimals (1200 -> 1200.00), unless that would lose digits."""
    shown = amount.quantize(Decimal(1).scaleb(-places))
    return shown if shown == amount else amount


def _currency_places(currency: str) -> int | None:
    try:
        return currency_exponent(currency)
    except MoneyError:
        return None


def _row(deal: Deal, field: str, currency: str, **values: str) -> dict[str, str]:
    row = {"opportunity": deal.opportunity_id, "field": field, "currency": currency, "stripe_id": deal.stripe_id}
    return {column: row.get(column, values.get(column, "")) for column in COLUMNS}


def _stripe_id_rows(deal: Deal) -> list[dict[str, str]]:
    if deal.billed is None:
        return [_row(deal, STRIPE_ID, "", salesforce=deal.stripe_id, stripe=NOT_IN_STRIPE)]
    billed_for = str((deal.billed.get("metadata") or {}).get("salesforce_opportunity_id") or "")
    # Billed by hand (no metadata) is adopted as it is; metadata naming another deal is a copied id.
    if billed_for and billed_for != deal.opportunity_id:
        return [_row(deal, STRIPE_ID, "", salesforce=deal.stripe_id, stripe=f"bills opportunity {billed_for}")]
    return []


def _stripe_currency(deal: Deal) -> str:
    return _code((deal.invoice or deal.billed or {}).get("currency"))


def _currency_rows(deal: Deal) -> list[dict[str, str]]:
    salesforce = _code(deal.opportunity.get("CurrencyIsoCode"))
    stripe = _stripe_currency(deal)
    netsuite = deal.netsuite.currency if deal.netsuite is not None else ""
    if salesforce == stripe and netsuite in ("", stripe):
        return []
    netsuite_text = netsuite or ("(not mapped)" if deal.netsuite is not None else "")
    return [
        _row(deal, CURRENCY, salesforce or stripe, salesforce=salesforce or NONE, stripe=stripe, netsuite=netsuite_text)
    ]


def _opportunity_amount_rows(deal: Deal) -> list[dict[str, str]]:
    currency = _stripe_currency(deal)
    places = _currency_places(currency)
    if deal.invoice is None or places is None or _code(deal.opportunity.get("CurrencyIsoCode")) != currency:
        return []
    stripe = to_decimal(billed_lines_minor(deal.invoice), currency)
    amount = exact_amount(deal.opportunity.get("Amount"))
    if amount is None:
        return [_row(deal, AMOUNT_OPPORTUNITY_STRIPE, currency, salesforce=NONE, stripe=str(stripe))]
    if amount == stripe:
        return []
    salesforce = _at_precision(amount, places)
    difference = _at_precision(amount - stripe, places)
    return [
        _row(
            deal,
            AMOUNT_OPPORTUNITY_STRIPE,
            currency,
            salesforce=str(salesforce),
            stripe=str(stripe),
            difference=str(difference),
        )
    ]


def expects_netsuite(deal: Deal) -> bool:
    """Salesforce already names the NetSuite invoice of the billing invoice: it must be in NetSuite."""
    o = deal.opportunity
    return (
        deal.invoice is not None
        and bool(o.get("NetSuite_Invoice_Id__c"))
        and o.get("Stripe_Invoice_Id__c") == deal.invoice.get("id")
    )


def _netsuite_amount_rows(deal: Deal) -> list[dict[str, str]]:
    currency = _stripe_currency(deal)
    if deal.invoice is None or _currency_places(currency) is None or deal.invoice.get("status") == "draft":
        return []
    stripe = to_precision(int(deal.invoice.get("total") or 0), currency, deal.netsuite_precision)
    if deal.netsuite is None:
        if not expects_netsuite(deal):
            return []
        netsuite_text, difference = NOT_IN_NETSUITE, stripe
    else:
        netsuite = _at_precision(abs(deal.netsuite.total), deal.netsuite_precision)
        if netsuite == stripe:
            return []
        netsuite_text, difference = str(netsuite), _at_precision(stripe - netsuite, deal.netsuite_precision)
    values = {"stripe": str(stripe), "netsuite": netsuite_text, "difference": str(difference)}
    return [_row(deal, AMOUNT_STRIPE_NETSUITE, currency, **values)]


def _netsuite_id_rows(deal: Deal) -> list[dict[str, str]]:
    written = str(deal.opportunity.get("NetSuite_Invoice_Id__c") or "")
    if not expects_netsuite(deal) or deal.netsuite is None or written == deal.netsuite.internal_id:
        return []
    return [_row(deal, NETSUITE_ID, _stripe_currency(deal), salesforce=written, netsuite=deal.netsuite.internal_id)]


def _status_rows(deal: Deal) -> list[dict[str, str]]:
    salesforce = str(deal.opportunity.get("Billing_Status__c") or "")
    if salesforce in (deal.stripe_status, writeback.NEEDS_REVIEW):
        return []
    currency = _stripe_currency(deal)
    return [_row(deal, BILLING_STATUS, currency, salesforce=salesforce or NONE, stripe=deal.stripe_status)]


def awaiting_netsuite(deal: Deal) -> bool:
    """A finalized billing invoice not booked in NetSuite yet, which Salesforce does not claim is booked."""
    return (
        deal.billed is not None
        and deal.invoice is not None
        and deal.invoice.get("status") != "draft"
        and deal.netsuite is None
        and not expects_netsuite(deal)
    )


def compare_deal(deal: Deal) -> list[dict[str, str]]:
    """The differences of one billed deal, one row per field that differs (none when all agree)."""
    if deal.billed is None:
        return _stripe_id_rows(deal)
    return [
        *_stripe_id_rows(deal),
        *_currency_rows(deal),
        *_opportunity_amount_rows(deal),
        *_netsuite_amount_rows(deal),
        *_netsuite_id_rows(deal),
        *_status_rows(deal),
    ]


def compare_deals(deals: Iterable[Deal]) -> Comparison:
    deals = list(deals)
    rows = [row for deal in deals for row in compare_deal(deal)]
    waiting = [deal.opportunity_id for deal in deals if awaiting_netsuite(deal)]
    return Comparison(rows=rows, compared=len(deals), awaiting_netsuite=waiting)


def first_invoice(invoices: Sequence[Mapping[str, Any]], subscription_id: str) -> Mapping[str, Any] | None:
    """The subscription's first invoice among a customer's: the one its creation billed, else its oldest."""
    own = [
        i
        for i in invoices
        if (((i.get("parent") or {}).get("subscription_details") or {}).get("subscription")) == subscription_id
    ]
    created = [i for i in own if i.get("billing_reason") == FIRST_INVOICE_REASON] or own
    return min(created, key=lambda i: (int(i.get("created") or 0), str(i.get("id")))) if created else None
