"""Billed deals compared three ways (pure): the opportunity, the Stripe billing, the NetSuite invoice."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sync_pipeline.mapping import deal_reconciliation as deals
from sync_pipeline.mapping.deal_reconciliation import Deal, NetSuiteInvoice

OPPORTUNITY = "006A000000000001"


def _opportunity(**fields) -> dict:
    return {
        "Id": OPPORTUNITY,
        "Amount": Decimal("2400.00"),
        "CurrencyIsoCode": "USD",
        "Stripe_Subscription_Id__c": "sub_1",
        "Stripe_Invoice_Id__c": "in_1",
        "NetSuite_Invoice_Id__c": "501",
        "Billing_Status__c": "Invoiced",
        **fields,
    }


def _invoice(lines: list[int], total: int | None = None, currency: str = "usd", **fields) -> dict:
    return {
        "id": "in_1",
        "currency": currency,
        "status": "open",
        "lines": {"data": [{"amount": amount} for amount in lines], "has_more": False},
        "total": sum(lines) if total is None else total,
        "billing_reason": "subscription_create",
        **fields,
    }


def _deal(
    opportunity: dict | None = None,
    invoice: dict | None = None,
    netsuite: NetSuiteInvoice | None = None,
    status: str = "Invoiced",
    precision: int = 2,
    billed: dict | None = None,
) -> Deal:
    invoice = invoice if invoice is not None else _invoice([120000, 120000])
    return Deal(
        opportunity=opportunity or _opportunity(),
        billed=billed if billed is not None else {"id": "sub_1", "currency": invoice["currency"], "metadata": {}},
        invoice=invoice,
        stripe_status=status,
        netsuite=netsuite,
        netsuite_precision=precision,
    )


def _booked(total: str, currency: str = "USD") -> NetSuiteInvoice:
    return NetSuiteInvoice(internal_id="501", total=Decimal(total), currency=currency)


def test_a_deal_billed_and_booked_as_sold_has_no_difference():
    assert deals.compare_deal(_deal(netsuite=_booked("2400.00"))) == []


def test_tax_and_discounts_in_stripe_are_no_difference_with_the_opportunity():
    """The opportunity equals the invoice's lines (unit price × quantity): a coupon and exclusive tax change the
    total, not the lines, and NetSuite books the total, so neither leg differs."""
    discounted = _invoice(
        [120000, 120000],
        total=216000 + 17280,  # 10 % off, then 8 % tax on what is left
        total_discount_amounts=[{"amount": 24000, "discount": "di_1"}],
        total_taxes=[{"amount": 17280, "tax_behavior": "exclusive"}],
    )

    assert deals.compare_deal(_deal(invoice=discounted, netsuite=_booked("2332.80"))) == []


def test_an_amount_changed_after_billing_is_listed_with_both_amounts_and_the_difference():
    changed = _opportunity(Amount=Decimal("2700"), Billing_Status__c="Needs review")

    [row] = deals.compare_deal(_deal(opportunity=changed, netsuite=_booked("2400.00")))

    assert row == {
        "opportunity": OPPORTUNITY,
        "field": deals.AMOUNT_OPPORTUNITY_STRIPE,
        "currency": "USD",
        "salesforce": "2700.00",
        "stripe": "2400.00",
        "netsuite": "",
        "difference": "300.00",
        "stripe_id": "sub_1",
    }


def test_a_netsuite_total_edited_behind_the_pipelines_back_is_listed_at_netsuites_precision():
    [row] = deals.compare_deal(_deal(netsuite=_booked("2399.9")))

    assert (row["field"], row["stripe"], row["netsuite"], row["difference"]) == (
        deals.AMOUNT_STRIPE_NETSUITE,
        "2400.00",
        "2399.90",
        "0.10",
    )


@pytest.mark.parametrize(
    ("currency", "amount", "lines", "shown"),
    [
        ("JPY", Decimal("250001"), [250000], ("250001", "250000", "1")),
        ("KWD", Decimal("12.341"), [12340], ("12.341", "12.340", "0.001")),
        ("USD", Decimal("2400.5"), [240000], ("2400.50", "2400.00", "0.50")),
    ],
)
def test_amounts_are_text_at_each_currencys_precision(currency, amount, lines, shown):
    opportunity = _opportunity(Amount=amount, CurrencyIsoCode=currency, NetSuite_Invoice_Id__c=None)
    invoice = _invoice(lines, currency=currency.lower())

    [row] = deals.compare_deal(_deal(opportunity=opportunity, invoice=invoice))

    assert (row["salesforce"], row["stripe"], row["difference"]) == shown


def test_a_three_decimal_currency_is_compared_with_netsuite_at_its_two_decimals():
    opportunity = _opportunity(Amount=Decimal("12.345"), CurrencyIsoCode="KWD", NetSuite_Invoice_Id__c=None)
    invoice = _invoice([12345], currency="kwd")

    assert deals.compare_deal(_deal(opportunity, invoice, netsuite=_booked("12.34", "KWD"))) == []


def test_the_written_back_status_is_compared_with_stripes_but_needs_review_is_left_to_the_exceptions():
    [row] = deals.compare_deal(_deal(netsuite=_booked("2400.00"), status="Paid"))
    assert (row["field"], row["salesforce"], row["stripe"]) == (deals.BILLING_STATUS, "Invoiced", "Paid")

    review = _opportunity(Billing_Status__c="Needs review")
    assert deals.compare_deal(_deal(opportunity=review, netsuite=_booked("2400.00"), status="Paid")) == []


def test_a_currency_that_differs_is_one_row_and_the_amounts_are_not_compared_across_currencies():
    invoice = _invoice([220000], currency="eur")

    rows = deals.compare_deal(_deal(invoice=invoice, netsuite=_booked("2200.00", "EUR")))

    assert [(r["field"], r["salesforce"], r["stripe"], r["netsuite"]) for r in rows] == [
        (deals.CURRENCY, "USD", "EUR", "EUR")
    ]


def test_an_invoice_not_in_netsuite_waits_for_its_day_unless_salesforce_names_its_netsuite_invoice():
    waiting = _deal(opportunity=_opportunity(NetSuite_Invoice_Id__c=None))
    assert deals.compare_deal(waiting) == [] and deals.awaiting_netsuite(waiting)

    [row] = deals.compare_deal(_deal())
    assert (row["field"], row["stripe"], row["netsuite"], row["difference"]) == (
        deals.AMOUNT_STRIPE_NETSUITE,
        "2400.00",
        deals.NOT_IN_NETSUITE,
        "2400.00",
    )
    assert deals.compare_deal(_deal(invoice=_invoice([240000], status="draft"))) == []


def test_a_netsuite_invoice_id_written_back_that_is_not_netsuites_is_listed():
    [row] = deals.compare_deal(
        _deal(opportunity=_opportunity(NetSuite_Invoice_Id__c="499"), netsuite=_booked("2400.00"))
    )
    assert (row["field"], row["salesforce"], row["netsuite"]) == (deals.NETSUITE_ID, "499", "501")
    # The id names the current invoice's record: a subscription billing a later invoice is not compared.
    renewal = _opportunity(NetSuite_Invoice_Id__c="499", Stripe_Invoice_Id__c="in_2")
    assert deals.compare_deal(_deal(opportunity=renewal, netsuite=_booked("2400.00"))) == []


def test_a_stripe_id_stripe_does_not_know_or_that_bills_another_deal_is_listed():
    missing = Deal(_opportunity(), None, None, "", None)
    assert [(r["field"], r["salesforce"], r["stripe"]) for r in deals.compare_deal(missing)] == [
        (deals.STRIPE_ID, "sub_1", deals.NOT_IN_STRIPE)
    ]

    copied = _deal(netsuite=_booked("2400.00"), billed={"id": "sub_1", "metadata": {"salesforce_opportunity_id": "X"}})
    assert [r["stripe"] for r in deals.compare_deal(copied)] == ["bills opportunity X"]


def test_a_subscription_without_an_invoice_yet_compares_only_its_status_and_currency():
    deal = Deal(
        _opportunity(Billing_Status__c="Not Billed"), {"id": "sub_1", "currency": "usd"}, None, "Not Billed", None
    )

    assert deals.compare_deal(deal) == [] and not deals.awaiting_netsuite(deal)


def test_the_first_invoice_is_the_one_the_subscriptions_creation_billed_not_a_renewal():
    def invoice(invoice_id: str, created: int, reason: str, subscription: str = "sub_1") -> dict:
        parent = {"subscription_details": {"subscription": subscription}}
        return {"id": invoice_id, "created": created, "billing_reason": reason, "parent": parent}

    invoices = [
        invoice("in_renewal", 300, "subscription_cycle"),
        invoice("in_other", 50, "subscription_create", "sub_2"),
        invoice("in_first", 100, "subscription_create"),
    ]

    assert deals.first_invoice(invoices, "sub_1")["id"] == "in_first"
    assert deals.first_invoice(invoices[:1], "sub_1")["id"] == "in_renewal"
    assert deals.first_invoice(invoices, "sub_3") is None


def test_compare_deals_counts_the_deals_compared_differing_and_waiting():
    comparison = deals.compare_deals(
        [
            _deal(netsuite=_booked("2400.00")),
            _deal(opportunity=_opportunity(Amount=Decimal("1.00")), netsuite=_booked("2300.00"), status="Paid"),
            _deal(opportunity=_opportunity(NetSuite_Invoice_Id__c=None)),
        ]
    )

    assert (comparison.compared, comparison.deals_differing, len(comparison.rows)) == (3, 1, 3)
    assert comparison.awaiting_netsuite == [OPPORTUNITY]
    assert all(isinstance(value, str) for row in comparison.rows for value in row.values())
