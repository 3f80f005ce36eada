"""Stripe -> NetSuite mapping, one test per row of the mapping table (DESIGN.md §4).

Stripe inputs are built from Stripe's own example objects for the pinned API version
(`sync_pipeline_tests/fixtures/stripe-fixtures3.json`), with fields overridden per case, so the tests
track the real shapes. The field mapping is the example `field_mapping.yaml` at the repository root.
"""

from __future__ import annotations

import copy
import datetime as dt
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from sync_pipeline.mapping.field_mapping import FieldMapping, parse_field_mapping
from sync_pipeline.mapping.money import to_decimal
from sync_pipeline.mapping.netsuite import (
    MappingResult,
    apply_defaults,
    map_charge_payment,
    map_customer,
    map_invoice,
    map_invoice_payment,
    map_invoice_tree,
    map_refund,
)
from sync_pipeline_tests.fixtures import stripe_example_objects

EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "field_mapping.yaml"
NOV_2 = int(dt.datetime(2026, 11, 2, 10, 30, tzinfo=dt.UTC).timestamp())
DEC_2 = int(dt.datetime(2026, 12, 2, tzinfo=dt.UTC).timestamp())
NOV_5 = int(dt.datetime(2026, 11, 5, 23, 59, tzinfo=dt.UTC).timestamp())


# -- Stripe objects from the official example shapes ------------------------------------------------


def stripe_object(kind: str, **overrides: Any) -> dict[str, Any]:
    """A deep copy of Stripe's example `kind` object with top-level fields replaced."""
    obj = copy.deepcopy(stripe_example_objects()[kind])
    obj.update(overrides)
    return obj


def tax(amount: int, inclusive: bool = False, rate: str = "txr_vat") -> dict:
    return {
        "amount": amount,
        "tax_behavior": "inclusive" if inclusive else "exclusive",
        "tax_rate_details": {"tax_rate": rate},
        "taxability_reason": "standard_rated",
        "taxable_amount": 0,
        "type": "tax_rate_details",
    }


def line(
    amount: int,
    *,
    price: str | dict | None = "price_pro_monthly",
    product: str | None = "prod_pro",
    proration: bool = False,
    taxes: list | None = None,
    discounts: list | None = None,
    quantity: int = 1,
    line_id: str = "il_1",
) -> dict:
    base = stripe_object("line_item")
    parent = copy.deepcopy(base["parent"])
    parent["type"] = "subscription_item_details"
    parent["subscription_item_details"]["proration"] = proration
    base.update(
        id=line_id,
        amount=amount,
        quantity=quantity,
        description=f"line {line_id}",
        parent=parent,
        pricing={
            "type": "price_details",
            "price_details": {"price": price, "product": product},
            "unit_amount_decimal": str(amount // max(quantity, 1)),
        },
        taxes=taxes or [],
        discount_amounts=discounts or [],
    )
    return base


def invoice(
    lines: list[dict],
    *,
    status: str = "paid",
    currency: str = "usd",
    invoice_id: str = "in_1",
    customer: str | dict = "cus_1",
    total: int | None = None,
    discounts: list | None = None,
    amount_paid: int | None = None,
    **overrides: Any,
) -> dict:
    discount_total = sum(d["amount"] for d in discounts or [])
    exclusive_tax = sum(t["amount"] for item in lines for t in item["taxes"] if t["tax_behavior"] == "exclusive")
    if total is None:
        total = sum(item["amount"] for item in lines) - discount_total + exclusive_tax
    paid = total if amount_paid is None and status == "paid" else (amount_paid or 0)
    # Stripe's own arithmetic: due is the total (no customer balance here), remaining what is not paid, and
    # effective_at the finalization unless a test backdates it.
    defaults = {
        "amount_due": max(total, 0),
        "amount_remaining": 0 if status == "paid" else max(total - paid, 0),
        "effective_at": NOV_2,
        "pre_payment_credit_notes_amount": 0,
        "post_payment_credit_notes_amount": 0,
    }
    overrides = {**defaults, **overrides}
    obj = stripe_object(
        "invoice",
        id=invoice_id,
        status=status,
        currency=currency,
        customer=customer,
        total=total,
        subtotal=sum(item["amount"] for item in lines),
        total_discount_amounts=discounts or [],
        total_taxes=[],
        total_pretax_credit_amounts=[],
        amount_paid=paid,
        number=f"INV-{invoice_id}",
        created=NOV_2,
        due_date=DEC_2,
        **overrides,
    )
    obj["lines"] = {**obj["lines"], "data": lines, "has_more": False}
    obj["status_transitions"] = {**obj["status_transitions"], "finalized_at": NOV_2}
    return obj


def invoice_payment(
    inv: dict,
    *,
    charge: str | None = "ch_1",
    status: str = "paid",
    amount: int | None = None,
    payment_id: str = "inpay_1",
    payment_intent: str | None = None,
) -> dict:
    payment = (
        {"type": "charge", "charge": charge} if charge else {"type": "payment_intent", "payment_intent": payment_intent}
    )
    return stripe_object(
        "invoice_payment",
        id=payment_id,
        invoice=inv["id"],
        currency=inv["currency"],
        amount_paid=(inv["total"] if amount is None else amount) if status == "paid" else None,
        amount_requested=inv["total"],
        status=status,
        payment=payment,
        status_transitions={"canceled_at": None, "paid_at": NOV_5 if status == "paid" else None},
    )


def charge(
    *,
    charge_id: str = "ch_1",
    amount: int = 10000,
    currency: str = "usd",
    customer: str | None = "cus_1",
    status: str = "succeeded",
    **overrides: Any,
) -> dict:
    return stripe_object(
        "charge",
        id=charge_id,
        amount=amount,
        amount_captured=amount if status == "succeeded" else 0,
        captured=status == "succeeded",
        currency=currency,
        customer=customer,
        status=status,
        paid=status == "succeeded",
        created=NOV_5,
        **overrides,
    )


def refund(
    *,
    refund_id: str = "re_1",
    charge_id: str = "ch_1",
    amount: int = 2500,
    currency: str = "usd",
    status: str = "succeeded",
) -> dict:
    return stripe_object(
        "refund", id=refund_id, charge=charge_id, amount=amount, currency=currency, status=status, created=NOV_5
    )


def customer(*, customer_id: str = "cus_1", currency: str | None = "usd", metadata: dict | None = None) -> dict:
    return stripe_object(
        "customer", id=customer_id, currency=currency, name="Acme GmbH", email="ap@acme.test", metadata=metadata or {}
    )


# -- field mappings ----------------------------------------------------------------------------------


def example_mapping_data() -> dict:
    return yaml.safe_load(EXAMPLE_MAPPING.read_text())


@pytest.fixture(scope="module")
def fm() -> FieldMapping:
    return FieldMapping.load(EXAMPLE_MAPPING)


def mapping_with(**changes: Any) -> FieldMapping:
    data = example_mapping_data()
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        target = data
        for key in parents:
            target = target.setdefault(key, {})
        target[last] = value
    return FieldMapping.from_dict(data)


def only(result: MappingResult, record_type: str):
    records = result.of_type(record_type)
    assert len(records) == 1, (record_type, result)
    return records[0]


def line_amounts(record) -> list[Decimal]:
    return [item["amount"] for item in record.body["item"]["items"]]


# -- paid invoice: invoice + payment applied to it ---------------------------------------------------


def test_paid_invoice_gives_invoice_and_payment_applied_to_the_cent(fm):
    inv = invoice([line(12345)], customer="cus_1")
    result = map_invoice_tree(
        inv, fm, customer=customer(), invoice_payments=[invoice_payment(inv)], charges=[charge(amount=12345)]
    )
    assert not result.issues
    assert [r.record_type for r in result.records] == ["customer", "invoice", "customerPayment"]

    netsuite_invoice = only(result, "invoice")
    assert netsuite_invoice.external_id == "stripe-in_1"
    assert netsuite_invoice.body["entity"] == {"externalId": "stripe-cus_1"}
    assert netsuite_invoice.body["subsidiary"] == {"id": "1"}
    assert netsuite_invoice.body["currency"] == {"id": "1"}
    assert netsuite_invoice.body["tranDate"] == "2026-11-02"
    assert netsuite_invoice.body["dueDate"] == "2026-12-02"
    assert "INV-in_1" in netsuite_invoice.body["memo"]
    assert netsuite_invoice.body["item"]["items"] == [
        {
            "item": {"id": "101"},
            "quantity": 1,
            "rate": Decimal("123.45"),
            "amount": Decimal("123.45"),
            "description": "line il_1",
        }
    ]
    assert netsuite_invoice.depends_on == (("customer", "stripe-cus_1"),)

    payment = only(result, "customerPayment")
    assert payment.external_id == "stripe-ch_1"
    assert payment.body["customer"] == {"externalId": "stripe-cus_1"}
    assert payment.body["payment"] == Decimal("123.45")
    assert payment.body["account"] == {"id": "1"}  # Undeposited Funds
    assert payment.body["tranDate"] == "2026-11-05"
    assert payment.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-in_1"}, "apply": True, "amount": Decimal("123.45")}
    ]
    assert ("invoice", "stripe-in_1") in payment.depends_on
    assert (payment.amount_minor, payment.currency) == (12345, "USD")


def test_payment_through_a_payment_intent_is_keyed_by_its_charge(fm):
    inv = invoice([line(5000)])
    paid = invoice_payment(inv, charge=None, payment_intent="pi_9")
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[paid],
        charges=[
            charge(charge_id="ch_old", status="failed", payment_intent="pi_9"),
            charge(charge_id="ch_9", amount=5000, payment_intent="pi_9"),
        ],
    )
    assert only(result, "customerPayment").external_id == "stripe-ch_9"


def test_payment_without_a_charge_is_keyed_by_the_invoice_payment(fm):
    inv = invoice([line(5000)])
    result = map_invoice_payment(invoice_payment(inv, charge=None, payment_intent=None), inv, None, fm)
    assert only(result, "customerPayment").external_id == "stripe-inpay_1"


def test_payment_larger_than_the_invoice_applies_what_is_due_and_keeps_the_rest_as_credit(fm):
    # A prior debit balance: Stripe added 10.00 to the amount due, so the card paid 60.00 for a 50.00 invoice.
    inv = invoice([line(5000)], amount_due=6000, starting_balance=1000)
    result = map_invoice_payment(invoice_payment(inv, amount=6000), inv, None, fm)
    assert not result.issues
    payment = only(result, "customerPayment")
    assert payment.body["payment"] == Decimal("60.00")
    assert payment.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-in_1"}, "apply": True, "amount": Decimal("50.00")}
    ]
    assert "10.00 USD beyond the invoice" in payment.body["memo"]


# -- open invoice with failed payments: invoice only -------------------------------------------------


def test_open_invoice_with_failed_payment_gives_the_invoice_only(fm):
    inv = invoice([line(5000)], status="open", amount_paid=0)
    attempt = invoice_payment(inv, status="open")
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[attempt],
        charges=[charge(status="failed", failure_message="Your card was declined.")],
    )
    assert [r.record_type for r in result.records] == ["invoice"]
    assert not result.issues
    assert "nothing was collected" in result.skips[0].reason


def test_draft_invoice_is_skipped_with_a_reason(fm):
    result = map_invoice(invoice([line(5000)], status="draft"), fm)
    assert not result.records and not result.issues
    assert "draft" in result.skips[0].reason


# -- void / uncollectible: invoice closed by a credit memo -------------------------------------------


def test_void_invoice_is_closed_by_a_credit_memo(fm):
    inv = invoice(
        [line(8000), line(2000, product="prod_onboarding", price="price_onb", line_id="il_2")],
        status="void",
        amount_paid=0,
    )
    inv["status_transitions"]["voided_at"] = NOV_5
    result = map_invoice(inv, fm)
    credit_memo = only(result, "creditMemo")
    assert credit_memo.external_id == "stripe-in_1-void"
    assert credit_memo.body["createdFrom"] == {"externalId": "stripe-in_1"}
    assert credit_memo.body["tranDate"] == "2026-11-05"
    assert line_amounts(credit_memo) == [Decimal("80.00"), Decimal("20.00")]
    assert credit_memo.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-in_1"}, "apply": True, "amount": Decimal("100.00")}
    ]
    assert ("invoice", "stripe-in_1") in credit_memo.depends_on
    assert "void" in credit_memo.body["memo"]


def test_partly_paid_uncollectible_invoice_writes_off_only_what_is_open_to_bad_debt(fm):
    inv = invoice([line(10000)], status="uncollectible", amount_paid=3000)
    credit_memo = only(map_invoice(inv, fm), "creditMemo")
    assert credit_memo.amount_minor == 7000
    assert line_amounts(credit_memo) == [Decimal("70.00")]
    # The bad-debt item (an expense): revenue and tax stay as invoiced.
    assert credit_memo.body["item"]["items"][0]["item"] == {"id": "150"}
    assert credit_memo.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-in_1"}, "apply": True, "amount": Decimal("70.00")}
    ]


def test_void_invoices_none_leaves_the_invoice_open_and_says_so():
    result = map_invoice(invoice([line(5000)], status="void", amount_paid=0), mapping_with(void_invoices="none"))
    assert [r.record_type for r in result.records] == ["invoice"]
    assert "close it by hand" in result.skips[0].reason


# -- invoice-less charges -----------------------------------------------------------------------------


def test_invoice_less_charge_is_a_sale_paid_in_full(fm):
    # Stripe holds no receivable for a charge without an invoice: NetSuite books the sale and its payment.
    result = map_charge_payment(charge(amount=4999, description="Workshop"), fm)
    sale = only(result, "invoice")
    assert sale.external_id == "stripe-ch_1-sale"
    assert [(i["item"], i["amount"], i["description"]) for i in sale.body["item"]["items"]] == [
        ({"id": "100"}, Decimal("49.99"), "Workshop")
    ]
    payment = only(result, "customerPayment")
    assert payment.external_id == "stripe-ch_1"
    assert payment.body["payment"] == Decimal("49.99")
    assert payment.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-ch_1-sale"}, "apply": True, "amount": Decimal("49.99")}
    ]
    assert payment.body["customer"] == {"externalId": "stripe-cus_1"}
    assert payment.body["account"] == {"id": "1"}
    assert payment.body["department"] == {"id": "2"}  # customerPayment default


def test_invoice_less_charge_as_customer_credit_when_configured():
    result = map_charge_payment(charge(amount=4999), mapping_with(invoiceless_charges="customer_credit"))
    assert not result.of_type("invoice")
    assert "apply" not in only(result, "customerPayment").body


@pytest.mark.parametrize(("status", "reason"), [("failed", "Your card was declined."), ("pending", "once it succeeds")])
def test_unsuccessful_charges_are_skipped_with_the_reason(fm, status, reason):
    result = map_charge_payment(charge(status=status, failure_message="Your card was declined."), fm)
    assert not result.records
    assert reason in result.skips[0].reason


def test_uncaptured_charge_is_skipped(fm):
    uncaptured = charge()
    uncaptured.update(captured=False, amount_captured=0)
    assert "not captured" in map_charge_payment(uncaptured, fm).skips[0].reason


# -- refunds -----------------------------------------------------------------------------------------


def test_refund_of_invoiced_charge_gives_credit_memo_and_refund(fm):
    inv = invoice([line(10000)])
    result = map_refund(refund(amount=2500), charge(amount=10000), inv, fm)
    assert not result.issues
    credit_memo, customer_refund = result.records
    assert (credit_memo.record_type, credit_memo.external_id) == ("creditMemo", "stripe-re_1-cm")
    assert credit_memo.body["createdFrom"] == {"externalId": "stripe-in_1"}
    assert credit_memo.body["entity"] == {"externalId": "stripe-cus_1"}
    assert line_amounts(credit_memo) == [Decimal("25.00")]
    assert ("invoice", "stripe-in_1") in credit_memo.depends_on

    assert (customer_refund.record_type, customer_refund.external_id) == ("customerRefund", "stripe-re_1")
    assert customer_refund.body["account"] == {"id": "70"}  # Refunds Clearing
    assert customer_refund.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-re_1-cm"}, "apply": True, "amount": Decimal("25.00")}
    ]
    assert ("creditMemo", "stripe-re_1-cm") in customer_refund.depends_on


def test_refund_of_invoice_less_charge_reverses_the_sale(fm):
    result = map_refund(refund(amount=2000), charge(amount=4999), None, fm)
    memo = only(result, "creditMemo")
    assert memo.external_id == "stripe-re_1-cm"
    assert memo.body["createdFrom"] == {"externalId": "stripe-ch_1-sale"}
    assert [i["amount"] for i in memo.body["item"]["items"]] == [Decimal("20.00")]
    customer_refund = only(result, "customerRefund")
    assert customer_refund.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-re_1-cm"}, "apply": True, "amount": Decimal("20.00")}
    ]


def test_refund_of_a_customer_credit_charge_refunds_the_payment():
    result = map_refund(
        refund(amount=4999), charge(amount=4999), None, mapping_with(invoiceless_charges="customer_credit")
    )
    customer_refund = only(result, "customerRefund")
    assert not result.of_type("creditMemo")
    assert customer_refund.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-ch_1"}, "apply": True, "amount": Decimal("49.99")}
    ]
    assert ("customerPayment", "stripe-ch_1") in customer_refund.depends_on


def test_pending_refund_is_skipped(fm):
    assert "pending" in map_refund(refund(status="pending"), charge(), None, fm).skips[0].reason


def test_refund_larger_than_the_charge_is_an_issue(fm):
    result = map_refund(refund(amount=20000), charge(amount=10000), None, fm)
    assert [i.error_code for i in result.issues] == ["OVER_APPLIED"]


def test_invoice_tree_maps_refunds_against_the_invoice(fm):
    inv = invoice([line(10000)])
    result = map_invoice_tree(
        inv, fm, invoice_payments=[invoice_payment(inv)], charges=[charge(amount=10000)], refunds=[refund(amount=10000)]
    )
    assert [(r.record_type, r.external_id) for r in result.records] == [
        ("invoice", "stripe-in_1"),
        ("customerPayment", "stripe-ch_1"),
        ("creditMemo", "stripe-re_1-cm"),
        ("customerRefund", "stripe-re_1"),
    ]


# -- customers ---------------------------------------------------------------------------------------


def test_per_customer_mode_creates_the_customer_in_the_stripe_accounts_subsidiary(fm):
    # One Stripe account, one legal entity: a EUR customer books to the account's subsidiary (field_mapping.yaml).
    record = only(map_customer(customer(currency="eur"), fm), "customer")
    assert record.external_id == "stripe-cus_1"
    assert record.body["companyName"] == "Acme GmbH"
    assert record.body["email"] == "ap@acme.test"
    assert record.body["subsidiary"] == {"id": "1"}
    assert record.body["currency"] == {"id": "2"}
    assert record.body["location"] == {"id": "1"}  # subsidiary 1's default for all records


def test_a_currency_with_its_own_subsidiary_books_its_customers_there():
    fm = mapping_with(currencies__EUR={"netsuite_id": "2", "subsidiary": "2"})
    record = only(map_customer(customer(currency="eur"), fm), "customer")
    assert record.body["subsidiary"] == {"id": "2"}
    assert record.body["location"] == {"id": "2"}  # subsidiary 2's default for all records


def test_customer_without_currency_takes_the_documents_currency(fm):
    record = only(map_customer(customer(currency=None), fm, currency="jpy"), "customer")
    assert record.body["currency"] == {"id": "3"}


def test_customer_linked_through_metadata_is_not_created_and_documents_use_the_link(fm):
    linked = customer(metadata={"netsuite_customer_id": "220"})
    result = map_customer(linked, fm)
    assert not result.records
    assert "220" in result.skips[0].reason and "metadata.netsuite_customer_id" in result.skips[0].reason
    netsuite_invoice = only(map_invoice(invoice([line(5000)], customer=linked), fm), "invoice")
    assert netsuite_invoice.body["entity"] == {"id": "220"}
    assert netsuite_invoice.depends_on == ()
    payment = only(map_charge_payment(charge(), fm, customer=linked), "customerPayment")
    assert payment.body["customer"] == {"id": "220"}


def test_global_customer_mode_books_everything_to_one_customer():
    fm_global = mapping_with(customers__mode="global", customers__global_customer_id="900")
    assert "global" in map_customer(customer(), fm_global).skips[0].reason
    assert only(map_invoice(invoice([line(5000)]), fm_global), "invoice").body["entity"] == {"id": "900"}
    refund_records = map_refund(refund(), charge(customer=None), None, fm_global)
    assert only(refund_records, "customerRefund").body["customer"] == {"id": "900"}
    assert only(refund_records, "creditMemo").body["entity"] == {"id": "900"}


def test_charge_without_customer_needs_a_guest_customer(fm):
    result = map_charge_payment(charge(customer=None), fm)
    assert [i.error_code for i in result.issues] == ["MISSING_CUSTOMER"]
    assert "guest_customer_id" in result.issues[0].fix
    with_guest = mapping_with(customers__guest_customer_id="901")
    assert only(map_charge_payment(charge(customer=None), with_guest), "customerPayment").body["customer"] == {
        "id": "901"
    }


# -- lines: discounts, tax, proration sum to the total ------------------------------------------------


@pytest.mark.parametrize(
    ("currency", "pro", "proration", "onboarding", "discount", "vat"),
    [
        ("usd", 4900, -1633, 10000, 1000, 1127),
        ("jpy", 5000, -1667, 30000, 3000, 3033),
        ("kwd", 15000, -5000, 30000, 4000, 3600),  # every amount on NetSuite's 0.01 KWD grid: no rounding line
    ],
)
def test_lines_with_discount_tax_and_proration_sum_to_the_total(
    fm, currency, pro, proration, onboarding, discount, vat
):
    lines = [
        line(pro, taxes=[tax(vat)], line_id="il_pro"),
        line(proration, proration=True, line_id="il_prorate"),
        line(onboarding, price={"id": "price_onb", "product": "prod_onboarding"}, product=None, line_id="il_onb"),
    ]
    inv = invoice(lines, currency=currency, discounts=[{"amount": discount, "discount": "di_10off"}])
    record = only(map_invoice(inv, fm), "invoice")
    items = record.body["item"]["items"]
    assert [i["item"]["id"] for i in items] == ["101", "130", "103", "110", "120"]
    amounts = line_amounts(record)
    assert amounts == [to_decimal(a, currency) for a in (pro, proration, onboarding, -discount, vat)]
    assert sum(amounts) == to_decimal(inv["total"], currency)
    assert record.amount_minor == inv["total"]
    # NetSuite's precision: 2 for USD and for KWD (NetSuite has no three-decimal currency), 0 for JPY.
    precision = {"usd": 2, "jpy": 0, "kwd": 2}[currency]
    assert all(a.as_tuple().exponent == -precision for a in amounts)


def test_inclusive_tax_is_moved_out_of_the_item_line(fm):
    inv = invoice([line(11900, taxes=[tax(1900, inclusive=True)])], currency="eur")
    assert inv["total"] == 11900
    record = only(map_invoice(inv, fm), "invoice")
    assert line_amounts(record) == [Decimal("100.00"), Decimal("19.00")]


def test_quantity_and_exact_rate(fm):
    record = only(map_invoice(invoice([line(3000, quantity=3), line(1000, quantity=3, line_id="il_2")]), fm), "invoice")
    first, second = record.body["item"]["items"]
    assert (first["quantity"], first["rate"], first["amount"]) == (3, Decimal("10.00"), Decimal("30.00"))
    assert "rate" not in second and second["amount"] == Decimal("10.00")  # 10.00 / 3 has no exact rate


def test_lines_that_do_not_add_up_are_an_issue(fm):
    inv = invoice([line(5000)], total=5500)  # e.g. shipping the mapping does not book
    result = map_invoice(inv, fm)
    assert not result.records
    assert result.issues[0].error_code == "LINES_DO_NOT_SUM"
    assert "50.00 USD" in result.issues[0].message and "55.00 USD" in result.issues[0].message


# -- config gaps and bad data become issues, never exceptions -----------------------------------------


def test_unmapped_currency_is_an_issue_with_the_fix(fm):
    result = map_invoice(invoice([line(5000)], currency="chf"), fm)
    issue = result.issues[0]
    assert (issue.error_code, issue.field, issue.value) == ("UNMAPPED_CURRENCY", "currency", "CHF")
    assert "add CHF under `currencies:`" in issue.fix


def test_unmapped_item_without_default_is_an_issue():
    fm_no_default = mapping_with(items__default=None, items__unmapped_products="default")
    result = map_invoice(invoice([line(5000, price="price_x", product="prod_x")]), fm_no_default)
    issue = result.issues[0]
    assert issue.error_code == "UNMAPPED_ITEM"
    assert "price_x" in issue.fix and "items.default" in issue.fix


def test_a_product_mapped_nowhere_is_held_back_naming_the_product_when_unmapped_products_is_hold():
    fm_hold = mapping_with(items__unmapped_products="hold")
    assert fm_hold.items.default  # a catch-all item exists, and still does not take a product's revenue
    inv = invoice([line(5000, line_id="il_1"), line(1200, price="price_seats", product="prod_seats", line_id="il_2")])
    result = map_invoice(inv, fm_hold)
    assert not result.of_type("invoice")  # the whole document waits: half an invoice would misstate revenue
    issue = result.issues[0]
    assert (issue.error_code, issue.field, issue.value) == ("UNMAPPED_ITEM", "item", "prod_seats")
    assert "Stripe product prod_seats" in issue.message
    assert 'add `prod_seats: "<NetSuite item id>"` under items.by_product' in issue.fix


def test_unmapped_products_default_books_them_on_the_default_item():
    fm_default = mapping_with(items__unmapped_products="default")
    inv = invoice([line(1200, price="price_seats", product="prod_seats")])
    record = only(map_invoice(inv, fm_default), "invoice")
    assert [item["item"]["id"] for item in record.body["item"]["items"]] == [fm_default.items.default]


def test_a_line_without_a_product_uses_the_default_item_even_when_holding_unmapped_products():
    fm_hold = mapping_with(items__unmapped_products="hold")
    record = only(map_invoice(invoice([line(900, price=None, product=None)]), fm_hold), "invoice")
    assert [item["item"]["id"] for item in record.body["item"]["items"]] == [fm_hold.items.default]


def test_unmapped_products_must_be_hold_or_default():
    data = {**example_mapping_data(), "items": {"unmapped_products": "strict"}}
    _, problems = parse_field_mapping(yaml.safe_dump(data).encode(), "field_mapping.yaml")
    assert any("items.unmapped_products" in p and "use one of: default, hold" in p for p in problems)


def test_discount_without_discount_item_is_an_issue():
    inv = invoice([line(5000)], discounts=[{"amount": 500, "discount": "di_1"}])
    result = map_invoice(inv, mapping_with(items__discount=None))
    assert result.issues[0].field == "items.discount"


@pytest.mark.parametrize("breakage", [{"total": "lots"}, {"lines": {"data": [{"id": "il_x"}]}}, {"id": "in bad id"}])
def test_malformed_stripe_data_is_an_issue_not_an_exception(fm, breakage):
    inv = invoice([line(5000)])
    inv.update(breakage)
    result = map_invoice(inv, fm)
    assert not result.records
    assert result.issues[0].error_code in ("INVALID_STRIPE_DATA", "INVALID_EXTERNAL_ID")


def test_paginated_lines_are_refused(fm):
    inv = invoice([line(5000)])
    inv["lines"]["has_more"] = True
    assert map_invoice(inv, fm).issues[0].field == "lines.has_more"


# -- defaults ------------------------------------------------------------------------------------------


def test_defaults_follow_record_type_and_subsidiary():
    fm = mapping_with(currencies__KWD={"netsuite_id": "4", "subsidiary": "4", "precision": 2})
    usd = only(map_invoice(invoice([line(5000)]), fm), "invoice")
    kwd = only(map_invoice(invoice([line(5000)], currency="kwd"), fm), "invoice")
    assert (usd.body["department"], usd.body["class"], usd.body["location"]) == ({"id": "3"}, {"id": "5"}, {"id": "1"})
    assert kwd.body["location"] == {"id": "4"}


def test_apply_defaults_never_overrides_and_is_idempotent(fm):
    record = only(map_invoice(invoice([line(5000)]), fm), "invoice")
    changed = apply_defaults(
        type(record)(**{**record.__dict__, "body": {**record.body, "department": {"id": "1"}}}), fm
    )
    assert changed.body["department"] == {"id": "1"}
    assert apply_defaults(record, fm) == record
