"""The Stripe stand-in over real HTTP with the real `stripe` SDK (and plain `requests` where the raw
JSON or the headers are the point)."""

from __future__ import annotations

import dataclasses
import importlib
import json
import threading
import time
import typing
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import stripe
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_pipeline.sandbox.server import serve_in_thread
from sync_pipeline.sandbox.stripe import API_VERSION, StripeConfig, StripeSandbox, StripeState, start_stripe
from sync_pipeline_tests.fixtures import stripe_example_objects

DAY = 86400


# ---- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[StripeSandbox]:
    with start_stripe(StripeConfig(balance_available_days=0)) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(server: StripeSandbox) -> StripeSandbox:
    """The module's server with empty state, wall-clock time and default knobs (through /_sandbox)."""
    defaults = dataclasses.asdict(StripeConfig(balance_available_days=0))
    control(server, "config", defaults)
    control(server, "reset")
    control(server, "stats/reset")
    return server


@pytest.fixture
def client(sandbox: StripeSandbox) -> stripe.StripeClient:
    return stripe.StripeClient(sandbox.api_key, base_addresses={"api": sandbox.url}, max_network_retries=0)


def control(sandbox: StripeSandbox, path: str, body: dict | None = None, method: str = "POST") -> Any:
    response = requests.request(method, f"{sandbox.url}/_sandbox/{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


def raw_get(sandbox: StripeSandbox, path: str, **params: Any) -> dict:
    response = requests.get(
        f"{sandbox.url}{path}", params=params, headers={"Authorization": f"Bearer {sandbox.api_key}"}, timeout=30
    )
    assert response.status_code == 200, response.text
    return response.json()


def paying_customer(client: stripe.StripeClient, card: str = "pm_card_visa", **params: Any):
    return client.v1.customers.create(
        params={
            "email": "buyer@example.com",
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
            **params,
        }
    )


def invoice_for(client: stripe.StripeClient, customer: str, currency: str, lines: list[dict], **params: Any):
    """A draft invoice with one invoice item per entry of `lines` (each: price+quantity or amount)."""
    invoice = client.v1.invoices.create(params={"customer": customer, "currency": currency, **params})
    for line in lines:
        client.v1.invoice_items.create(params={"customer": customer, "invoice": invoice.id, **line})
    return client.v1.invoices.retrieve(invoice.id)


def one_time_price(client: stripe.StripeClient, currency: str, unit_amount: int, name: str = "Onboarding"):
    product = client.v1.products.create(params={"name": name})
    return client.v1.prices.create(params={"product": product.id, "currency": currency, "unit_amount": unit_amount})


def paid_invoice(client: stripe.StripeClient, amount: int = 10_000, currency: str = "usd", card: str = "pm_card_visa"):
    customer = paying_customer(client, card)
    invoice = invoice_for(
        client, customer.id, currency, [{"amount": amount, "currency": currency, "description": "Work"}]
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    return client.v1.invoices.pay(invoice.id)


def charge_of(client: stripe.StripeClient, invoice_id: str):
    payments = client.v1.invoice_payments.list(params={"invoice": invoice_id, "status": "paid"})
    intent = client.v1.payment_intents.retrieve(payments.data[0].payment.payment_intent)
    return client.v1.charges.retrieve(intent.latest_charge)


# ---- shapes: every object type matches the official fixture of its type -----------------------------
def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "list", dict: "object"}[type(value)]


def _sdk_nullable(object_type: str) -> set[str]:
    """Fields the SDK 16.1.0 class for this object declares Optional (Stripe's OpenAPI `nullable`)."""
    from stripe._object_classes import OBJECT_CLASSES

    module_name, class_name = OBJECT_CLASSES[object_type]
    cls = getattr(importlib.import_module(module_name), class_name)
    nullable = set()
    for klass in reversed(cls.__mro__):
        for name, annotation in getattr(klass, "__annotations__", {}).items():
            if type(None) in typing.get_args(annotation):
                nullable.add(name)
    return nullable


def _shape_problems(obj: dict, fixtures: dict, where: str) -> list[str]:
    """Differences from the fixture of `obj["object"]`, recursing into embedded objects."""
    object_type = obj.get("object")
    problems: list[str] = []
    if isinstance(object_type, str) and object_type in fixtures and fixtures[object_type] and not obj.get("deleted"):
        fixture = fixtures[object_type]
        missing, extra = sorted(fixture.keys() - obj.keys()), sorted(obj.keys() - fixture.keys())
        if missing or extra:
            problems.append(f"{where} ({object_type}): missing {missing}, extra {extra}")
        nullable = _sdk_nullable(object_type)
        for name in fixture.keys() & obj.keys():
            expected, actual = _json_kind(fixture[name]), _json_kind(obj[name])
            if expected == "null" or expected == actual or (actual == "null" and name in nullable):
                continue
            problems.append(f"{where}.{name} ({object_type}): {actual}, fixture has {expected}")
    for name, value in obj.items():
        children = value if isinstance(value, list) else [value]
        for position, child in enumerate(children):
            if isinstance(child, dict):
                problems.extend(_shape_problems(child, fixtures, f"{where}.{name}[{position}]"))
    return problems


def _every_kind_of_object(client: stripe.StripeClient, sandbox: StripeSandbox) -> None:
    """One of everything the stand-in serves: catalog, invoices with discounts and taxes, payments,
    a refund, a credit note, a dispute, a payout, a subscription, a webhook endpoint, events."""
    client.v1.webhook_endpoints.create(params={"url": "http://127.0.0.1:9/hook", "enabled_events": ["*"]})
    coupon = client.v1.coupons.create(params={"percent_off": 10, "duration": "once"})
    rate = client.v1.tax_rates.create(
        params={"display_name": "VAT", "percentage": "19", "inclusive": False, "country": "DE"}
    )
    price = one_time_price(client, "usd", 2500)
    customer = paying_customer(client)
    invoice = invoice_for(
        client,
        customer.id,
        "usd",
        [{"pricing": {"price": price.id}, "quantity": 2}],
        discounts=[{"coupon": coupon.id}],
        default_tax_rates=[rate.id],
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    invoice = client.v1.invoices.pay(invoice.id)
    charge = charge_of(client, invoice.id)
    client.v1.refunds.create(params={"charge": charge.id, "amount": 500})
    line = client.v1.invoices.line_items.list(invoice.id).data[0]
    client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "quantity": 1}],
        }
    )
    disputed = paid_invoice(client, 4000)
    control(sandbox, "disputes", {"charge": charge_of(client, disputed.id).id, "reason": "fraudulent"})
    client.v1.payouts.create(params={"amount": client.v1.balance.retrieve().available[0].amount, "currency": "usd"})
    monthly = client.v1.prices.create(
        params={"product": price.product, "currency": "usd", "unit_amount": 1000, "recurring": {"interval": "month"}}
    )
    client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": monthly.id}]})


# type -> list endpoint, and the expansions that show the fields the fixture includes
SERVED_TYPES = {
    "customer": ("/v1/customers", []),
    "product": ("/v1/products", []),
    "price": ("/v1/prices", []),
    "coupon": ("/v1/coupons", []),
    "tax_rate": ("/v1/tax_rates", []),
    "invoiceitem": ("/v1/invoiceitems", []),
    "invoice": ("/v1/invoices", []),
    "invoice_payment": ("/v1/invoice_payments", []),
    "payment_intent": ("/v1/payment_intents", []),
    "charge": ("/v1/charges", ["data.refunds"]),
    "refund": ("/v1/refunds", []),
    "dispute": ("/v1/disputes", []),
    "balance_transaction": ("/v1/balance_transactions", []),
    "payout": ("/v1/payouts", []),
    "credit_note": ("/v1/credit_notes", []),
    "subscription": ("/v1/subscriptions", []),
    "event": ("/v1/events", []),
    "webhook_endpoint": ("/v1/webhook_endpoints", []),
}


def test_every_served_object_has_the_fixture_field_names_and_json_types(client, sandbox):
    fixtures = stripe_example_objects()
    _every_kind_of_object(client, sandbox)
    problems: list[str] = []
    seen: set[str] = set()

    def check(obj: dict, where: str) -> None:
        problems.extend(_shape_problems(obj, fixtures, where))
        stack = [obj]
        while stack:
            item = stack.pop()
            if isinstance(item, dict):
                if isinstance(item.get("object"), str):
                    seen.add(item["object"])
                stack.extend(item.values())
            elif isinstance(item, list):
                stack.extend(item)

    for object_type, (path, expansions) in SERVED_TYPES.items():
        page = raw_get(sandbox, path, **{"limit": 100, "expand[]": expansions})
        assert page["data"], f"the scenario made no {object_type}"
        for obj in page["data"]:
            check(obj, f"{path}/{obj['id']}")
    invoice_id = raw_get(sandbox, "/v1/invoices")["data"][-1]["id"]
    check(raw_get(sandbox, f"/v1/invoices/{invoice_id}/lines"), "lines")
    note_id = raw_get(sandbox, "/v1/credit_notes")["data"][0]["id"]
    check(raw_get(sandbox, f"/v1/credit_notes/{note_id}/lines"), "credit note lines")
    subscription = raw_get(sandbox, "/v1/subscriptions")["data"][0]
    check(raw_get(sandbox, f"/v1/subscriptions/{subscription['id']}", **{"expand[]": ["discounts"]}), "subscription")
    check(raw_get(sandbox, f"/v1/invoices/{invoice_id}", **{"expand[]": ["discounts"]}), "invoice")
    check(
        raw_get(
            sandbox,
            "/v1/payment_methods/"
            + (subscription["default_payment_method"] or raw_get(sandbox, "/v1/charges")["data"][0]["payment_method"]),
        ),
        "pm",
    )
    check(raw_get(sandbox, "/v1/balance"), "balance")
    assert not problems, "\n".join(problems)
    assert {
        "line_item",
        "discount",
        "plan",
        "subscription_item",
        "credit_note_line_item",
        "payment_method",
        "balance",
    } <= seen


# ---- invoices: amounts to the minor unit, in two-, zero- and three-decimal currencies ----------------
def test_usd_invoice_with_amount_off_coupon_and_exclusive_tax_is_paid_to_the_cent(client, sandbox):
    customer = paying_customer(client)
    price = one_time_price(client, "usd", 1999)
    coupon = client.v1.coupons.create(params={"amount_off": 500, "currency": "usd", "duration": "once"})
    tax = client.v1.tax_rates.create(params={"display_name": "Sales tax", "percentage": "8.875", "inclusive": False})
    invoice = invoice_for(
        client,
        customer.id,
        "usd",
        [
            {"pricing": {"price": price.id}, "quantity": 3},  # 59.97
            {"amount": 1003, "currency": "usd", "description": "Setup"},  # 10.03
        ],
        discounts=[{"coupon": coupon.id}],
        default_tax_rates=[tax.id],
    )
    # $5.00 off split by line amount: 4.29 and 0.71; tax 8.875% of 55.68 = 4.94 and of 9.32 = 0.83.
    assert [line.discount_amounts[0].amount for line in invoice.lines.data] == [429, 71]
    assert [line.taxes[0].amount for line in invoice.lines.data] == [494, 83]
    assert (invoice.subtotal, invoice.total_discount_amounts[0].amount, invoice.total_taxes[0].amount) == (
        7000,
        500,
        577,
    )
    assert invoice.total == 7077 and invoice.status == "draft" and invoice.number is None

    finalized = client.v1.invoices.finalize_invoice(invoice.id)
    assert finalized.status == "open" and finalized.number.endswith("-0001") and finalized.amount_due == 7077
    paid = client.v1.invoices.pay(invoice.id)
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 7077, 0)
    assert paid.status_transitions.paid_at is not None
    txn = client.v1.balance_transactions.retrieve(charge_of(client, invoice.id).balance_transaction)
    # 2.9% of 70.77 = 2.05 (2.05233) + 0.30
    assert (txn.amount, txn.fee, txn.net, txn.type) == (7077, 235, 6842, "charge")


@pytest.mark.parametrize(
    "currency, unit_amount, quantity, tax_percentage, inclusive, coupon_percent, total, fee",
    [
        # ¥1,500 x 3 = ¥4,500; 10% off = ¥4,050; 10% tax = ¥405 -> ¥4,455; fee 3.6% = ¥160 (160.38)
        ("jpy", 1500, 3, "10", False, 10, 4455, 160),
        # KWD 12.340 with 5% tax included: net 11.752 -> 11.750, tax 0.590 (3-decimal amounts end in 0, computed ones
        # too); fee 2.9% + 0.100 = 0.458 -> 0.460
        ("kwd", 12340, 1, "5", True, None, 12340, 460),
    ],
)
def test_zero_and_three_decimal_currencies_are_exact(
    client, sandbox, currency, unit_amount, quantity, tax_percentage, inclusive, coupon_percent, total, fee
):
    customer = paying_customer(client)
    price = one_time_price(client, currency, unit_amount)
    tax = client.v1.tax_rates.create(
        params={"display_name": "Tax", "percentage": tax_percentage, "inclusive": inclusive}
    )
    extra: dict[str, Any] = {"default_tax_rates": [tax.id]}
    if coupon_percent:
        extra["discounts"] = [{"coupon": client.v1.coupons.create(params={"percent_off": coupon_percent}).id}]
    invoice = invoice_for(
        client, customer.id, currency, [{"pricing": {"price": price.id}, "quantity": quantity}], **extra
    )
    client.v1.invoices.finalize_invoice(invoice.id)
    paid = client.v1.invoices.pay(invoice.id)
    assert (paid.currency, paid.total, paid.amount_paid, paid.status) == (currency, total, total, "paid")
    if inclusive:
        assert paid.total_taxes[0].amount == 590 and paid.total_excluding_tax == 12340 - 590
    txn = client.v1.balance_transactions.retrieve(charge_of(client, invoice.id).balance_transaction)
    assert (txn.amount, txn.fee, txn.net) == (total, fee, total - fee)


def test_kwd_percent_discounts_and_taxes_round_to_ten_fils(client, sandbox):
    customer = paying_customer(client)
    coupon = client.v1.coupons.create(params={"percent_off": 15, "duration": "once"})
    tax = client.v1.tax_rates.create(params={"display_name": "VAT", "percentage": "5.5", "inclusive": False})
    invoice = invoice_for(
        client,
        customer.id,
        "kwd",
        [{"amount": 12_340, "currency": "kwd", "description": "Work"}],
        discounts=[{"coupon": coupon.id}],
        default_tax_rates=[tax.id],
    )
    line = invoice.lines.data[0]
    # 15% of 12.340 = 1.851 -> 1.850; 5.5% of 10.490 = 0.57695 -> 0.580; every computed amount ends in 0.
    assert (line.discount_amounts[0].amount, line.taxes[0].amount, invoice.total) == (1850, 580, 11_070)
    client.v1.invoices.finalize_invoice(invoice.id)
    assert client.v1.invoices.pay(invoice.id).amount_paid == 11_070
    # A credit note for part of the line carries its share of the discount and tax, rounded the same way.
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 4_930}],
            "out_of_band_amount": 4_420,
        }
    )
    note_line = note.lines.data[0]
    # 4.930 / 12.340 of the 1.850 discount = 0.7391 -> 0.740; of the 0.580 tax = 0.2317 -> 0.230.
    assert (note_line.discount_amounts[0].amount, note_line.taxes[0].amount) == (740, 230)
    assert note.total == 4_930 - 740 + 230 == 4_420 and note.out_of_band_amount == 4_420


def test_two_inclusive_rates_on_one_line_add_up_to_the_line_amount(client, sandbox):
    customer = paying_customer(client)
    state = client.v1.tax_rates.create(params={"display_name": "GST", "percentage": "5", "inclusive": True})
    province = client.v1.tax_rates.create(params={"display_name": "PST", "percentage": "7", "inclusive": True})
    invoice = invoice_for(
        client,
        customer.id,
        "usd",
        [{"amount": 10_001, "currency": "usd", "description": "Work", "tax_rates": [state.id, province.id]}],
    )
    taxes = invoice.lines.data[0].taxes
    # net = 100.01 / 1.12 = 89.29; GST 5% = 4.46 (4.4645), PST 7% = 6.26 after taking the rounding difference.
    assert [t.taxable_amount for t in taxes] == [8_929, 8_929]
    assert [t.amount for t in taxes] == [446, 626]
    assert 8_929 + sum(t.amount for t in taxes) == invoice.lines.data[0].amount == invoice.total == 10_001
    assert invoice.total_excluding_tax == 8_929 and invoice.subtotal_excluding_tax == 8_929


def test_unit_amount_decimal_keeps_its_fraction_and_the_amount_rounds_once(client, sandbox):
    customer = paying_customer(client)
    item = client.v1.invoice_items.create(
        params={"customer": customer.id, "currency": "usd", "unit_amount_decimal": "0.555", "quantity": 1_000}
    )
    assert (item.amount, str(item.pricing.unit_amount_decimal)) == (555, "0.555")
    product = client.v1.products.create(params={"name": "Metered"})
    price = client.v1.prices.create(params={"product": product.id, "currency": "usd", "unit_amount_decimal": "12.3456"})
    assert (price.unit_amount, str(price.unit_amount_decimal)) == (None, "12.3456")
    priced = client.v1.invoice_items.create(
        params={"customer": customer.id, "pricing": {"price": price.id}, "quantity": 3}
    )
    assert (priced.amount, str(priced.pricing.unit_amount_decimal)) == (37, "12.3456")  # 37.0368 -> 37
    kwd = client.v1.invoice_items.create(
        params={"customer": customer.id, "currency": "kwd", "unit_amount_decimal": "1234.5", "quantity": 3}
    )
    assert kwd.amount == 3_700  # 3703.5 fils -> 3.700 KWD, the last digit 0


def test_paying_out_of_band_is_not_a_payment_attempt(client, sandbox):
    customer = paying_customer(client)
    invoice = invoice_for(client, customer.id, "usd", [{"amount": 5_000, "currency": "usd", "description": "x"}])
    client.v1.invoices.finalize_invoice(invoice.id)
    paid = client.v1.invoices.pay(invoice.id, params={"paid_out_of_band": True})
    assert (paid.status, paid.amount_paid, paid.amount_remaining) == ("paid", 5_000, 0)
    assert (paid.attempt_count, paid.attempted) == (0, False)
    assert not client.v1.invoice_payments.list(params={"invoice": invoice.id, "status": "paid"}).data
    assert not client.v1.charges.list(params={"customer": customer.id}).data


def test_three_decimal_amounts_must_end_in_zero(client, sandbox):
    customer = paying_customer(client)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoice_items.create(params={"customer": customer.id, "amount": 12345, "currency": "kwd"})
    assert caught.value.http_status == 400 and caught.value.param == "amount"


# ---- payment failure and retry -------------------------------------------------------------------
def test_a_declined_payment_leaves_the_invoice_open_and_a_later_payment_pays_it(client, sandbox):
    customer = paying_customer(client)
    invoice = invoice_for(client, customer.id, "usd", [{"amount": 4200, "currency": "usd", "description": "Plan"}])
    client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.CardError) as caught:
        client.v1.invoices.pay(invoice.id, params={"payment_method": "pm_card_chargeDeclined"})
    assert caught.value.http_status == 402
    assert (caught.value.code, caught.value.error.decline_code) == ("card_declined", "generic_decline")
    failed = client.v1.invoices.retrieve(invoice.id)
    assert (failed.status, failed.attempt_count, failed.attempted, failed.amount_paid) == ("open", 1, True, 0)

    paid = client.v1.invoices.pay(invoice.id)  # the customer's default card this time
    assert (paid.status, paid.attempt_count, paid.amount_paid) == ("paid", 2, 4200)
    payments = client.v1.invoice_payments.list(params={"invoice": invoice.id})
    assert [(p.status, p.amount_paid, p.payment.type) for p in payments.data] == [("paid", 4200, "payment_intent")]
    intent_id = payments.data[0].payment.payment_intent
    by_intent = client.v1.invoice_payments.list(
        params={"payment": {"type": "payment_intent", "payment_intent": intent_id}}
    )
    assert [p.invoice for p in by_intent.data] == [invoice.id]
    charges = client.v1.charges.list(params={"payment_intent": intent_id})
    assert sorted(c.status for c in charges.data) == ["failed", "succeeded"]
    declined = next(c for c in charges.data if c.status == "failed")
    assert declined.payment_method_details.card.last4 == "0002" and declined.balance_transaction is None
    types = [e.type for e in client.v1.events.list(params={"type": "invoice.*", "limit": 100}).auto_paging_iter()]
    assert {"invoice.payment_failed", "invoice.paid", "invoice.finalized"} <= set(types)
    assert "4000000000000002" not in json.dumps(control(sandbox, "records/charge", method="GET"))


def test_a_failed_payment_intent_is_a_402_and_the_intent_waits_for_a_new_method(client, sandbox):
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            params={
                "amount": 1000,
                "currency": "eur",
                "payment_method": "pm_card_chargeDeclinedInsufficientFunds",
                "confirm": True,
            }
        )
    assert caught.value.error.decline_code == "insufficient_funds"
    intent = client.v1.payment_intents.retrieve(caught.value.error.payment_intent.id)
    assert intent.status == "requires_payment_method" and intent.last_payment_error.code == "card_declined"
    confirmed = client.v1.payment_intents.confirm(intent.id, params={"payment_method": "pm_card_mastercard"})
    assert confirmed.status == "succeeded" and confirmed.amount_received == 1000
    charge = client.v1.charges.retrieve(confirmed.latest_charge)
    assert (charge.payment_method_details.card.brand, charge.payment_method_details.card.last4) == (
        "mastercard",
        "4444",
    )


# ---- lists: created filters, cursors, the clock, events and their retention -------------------------
def test_invoices_and_events_list_by_created_with_paging(client, sandbox):
    start = (int(time.time()) // DAY - 5) * DAY
    control(sandbox, "clock", {"now": start})
    customer = client.v1.customers.create(params={"email": "hourly@example.com"})
    ids = []
    for _ in range(25):
        ids.append(client.v1.invoices.create(params={"customer": customer.id}).id)
        control(sandbox, "clock", {"advance": 3600})
    window = {"created": {"gte": start + 5 * 3600, "lt": start + 20 * 3600}, "limit": 4}
    listed = list(client.v1.invoices.list(params=window).auto_paging_iter())
    assert [i.id for i in listed] == list(reversed(ids[5:20]))  # newest first, each once
    assert [i.created for i in listed] == sorted((i.created for i in listed), reverse=True)

    newer = client.v1.invoices.list(params={"ending_before": ids[10], "limit": 3})
    assert [i.id for i in newer.data] == [ids[13], ids[12], ids[11]] and newer.has_more
    by_customer = client.v1.invoices.list(params={"customer": customer.id, "status": "draft", "limit": 100})
    assert len(by_customer.data) == 25 and not by_customer.has_more

    events = list(client.v1.events.list(params={"type": "invoice.created", **window}).auto_paging_iter())
    assert [e.data.object.id for e in events] == list(reversed(ids[5:20]))
    assert all(e.api_version == API_VERSION and e.request.id.startswith("req_") for e in events)
    wildcard = client.v1.events.list(params={"type": "customer.*"})
    assert [e.type for e in wildcard.data] == ["customer.created"]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.list(params={"types": [f"type.{n}" for n in range(21)]})
    assert caught.value.param == "types"


def test_events_older_than_the_retention_are_gone(client, sandbox):
    control(sandbox, "clock", {"now": int(time.time()) - 40 * DAY})
    old = client.v1.customers.create(params={"email": "old@example.com"})
    control(sandbox, "clock", {"real": True})
    recent = client.v1.customers.create(params={"email": "new@example.com"})
    listed = client.v1.events.list(params={"type": "customer.created"})
    assert [e.data.object.id for e in listed.data] == [recent.id]
    old_event = next(e for e in control(sandbox, "records/event", method="GET") if e["data"]["object"]["id"] == old.id)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.events.retrieve(old_event["id"])
    assert caught.value.http_status == 404
    assert client.v1.customers.retrieve(old.id).email == "old@example.com"  # the object itself stays


def test_customer_search_by_metadata_and_email_pages_with_next_page(client, sandbox):
    for n in range(5):
        client.v1.customers.create(
            params={"email": f"c{n}@example.com", "metadata": {"region": "emea" if n % 2 else "apac"}}
        )
    first = client.v1.customers.search(params={"query": "metadata['region']:'apac'", "limit": 2})
    assert len(first.data) == 2 and first.has_more and first.next_page
    everything = list(
        client.v1.customers.search(params={"query": "metadata['region']:'apac'", "limit": 2}).auto_paging_iter()
    )
    assert sorted(c.email for c in everything) == ["c0@example.com", "c2@example.com", "c4@example.com"]
    by_email = client.v1.customers.search(params={"query": "email:'c3@example.com'"})
    assert [c.metadata["region"] for c in by_email.data] == ["emea"]
    assert len(client.v1.customers.list(params={"email": "c1@example.com"}).data) == 1


# ---- idempotency ----------------------------------------------------------------------------------
def test_idempotent_replay_returns_the_first_response_and_other_params_are_an_error(client, sandbox):
    params = {"email": "once@example.com"}
    first = client.v1.customers.create(params=params, options={"idempotency_key": "create-once"})
    again = client.v1.customers.create(params=params, options={"idempotency_key": "create-once"})
    assert again.id == first.id and again.last_response.headers.get("Idempotent-Replayed") == "true"
    assert first.last_response.headers.get("Idempotent-Replayed") is None
    with pytest.raises(stripe.IdempotencyError):
        client.v1.customers.create(params={"email": "other@example.com"}, options={"idempotency_key": "create-once"})
    assert len(control(sandbox, "records/customer", method="GET")) == 1

    control(sandbox, "clock", {"advance": 25 * 3600})  # keys expire after 24 h
    later = client.v1.customers.create(
        params={"email": "other@example.com"}, options={"idempotency_key": "create-once"}
    )
    assert later.id != first.id


def test_a_declined_payment_is_replayed_under_its_key_without_charging_again(client, sandbox):
    customer = paying_customer(client)
    invoice = invoice_for(client, customer.id, "usd", [{"amount": 900, "currency": "usd", "description": "x"}])
    client.v1.invoices.finalize_invoice(invoice.id)
    for attempt in range(2):
        with pytest.raises(stripe.CardError) as caught:
            client.v1.invoices.pay(
                invoice.id, params={"payment_method": "pm_card_chargeDeclined"}, options={"idempotency_key": "pay-1"}
            )
        replayed = caught.value.headers.get("Idempotent-Replayed")
        assert replayed == ("true" if attempt else None)
    assert client.v1.invoices.retrieve(invoice.id).attempt_count == 1
    assert len([c for c in control(sandbox, "records/charge", method="GET") if c["status"] == "failed"]) == 1


def test_a_lost_response_is_recovered_by_retrying_with_the_same_key(client, sandbox):
    control(sandbox, "config", {"lost_response_rate": 1.0})
    with pytest.raises(stripe.APIConnectionError):
        client.v1.customers.create(params={"email": "lost@example.com"}, options={"idempotency_key": "lost-1"})
    recovered = client.v1.customers.create(params={"email": "lost@example.com"}, options={"idempotency_key": "lost-1"})
    assert recovered.email == "lost@example.com"
    assert [c["id"] for c in control(sandbox, "records/customer", method="GET")] == [recovered.id]


# ---- refunds, disputes, payouts --------------------------------------------------------------------
def test_refunds_are_bounded_by_what_is_left_and_a_partial_then_full_refund_adds_up(client, sandbox):
    charge = charge_of(client, paid_invoice(client, 10_000).id)
    partial = client.v1.refunds.create(params={"charge": charge.id, "amount": 3000})
    charge = client.v1.charges.retrieve(charge.id)
    assert (partial.status, charge.amount_refunded, charge.refunded) == ("succeeded", 3000, False)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 7001})
    assert (caught.value.http_status, caught.value.param, caught.value.code) == (400, "amount", "amount_too_large")

    rest = client.v1.refunds.create(params={"payment_intent": charge.payment_intent})
    charge = client.v1.charges.retrieve(charge.id, params={"expand": ["refunds"]})
    assert (rest.amount, charge.amount_refunded, charge.refunded) == (7000, 10_000, True)
    assert sorted(r.amount for r in charge.refunds.data) == [3000, 7000]
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 1})
    assert caught.value.code == "charge_already_refunded"
    txns = client.v1.balance_transactions.list(params={"type": "refund"}).data
    assert sorted(t.net for t in txns) == [-7000, -3000] and all(t.fee == 0 for t in txns)
    refunded_events = client.v1.events.list(params={"type": "charge.refunded"}).data
    assert [e.data.previous_attributes["amount_refunded"] for e in refunded_events] == [3000, 0]


def test_a_lost_dispute_withdraws_the_amount_and_the_fee(client, sandbox):
    charge = charge_of(client, paid_invoice(client, 5000).id)
    dispute = control(sandbox, "disputes", {"charge": charge.id, "reason": "product_not_received"})
    assert (dispute["status"], dispute["amount"], client.v1.charges.retrieve(charge.id).disputed) == (
        "needs_response",
        5000,
        True,
    )
    withdrawal = dispute["balance_transactions"][0]
    assert (withdrawal["amount"], withdrawal["fee"], withdrawal["net"]) == (-5000, 1500, -6500)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": charge.id})
    assert caught.value.code == "charge_disputed"
    lost = client.v1.disputes.close(dispute["id"])
    assert lost.status == "lost" and len(lost.balance_transactions) == 1
    types = [e.type for e in client.v1.events.list(params={"type": "charge.dispute.*"}).data]
    assert types == ["charge.dispute.closed", "charge.dispute.funds_withdrawn", "charge.dispute.created"]


def test_a_dispute_won_with_evidence_gives_the_money_and_the_fee_back(client, sandbox):
    invoice = paid_invoice(client, 8000, "eur", card="pm_card_createDispute")  # this card is disputed right away
    dispute = client.v1.disputes.list(params={"charge": charge_of(client, invoice.id).id}).data[0]
    assert dispute.reason == "fraudulent"
    won = client.v1.disputes.update(
        dispute.id, params={"evidence": {"uncategorized_text": "winning_evidence"}, "submit": True}
    )
    assert won.status == "won"
    assert [(t.amount, t.fee, t.net) for t in won.balance_transactions] == [
        (-8000, 2000, -10_000),
        (8000, -2000, 10_000),
    ]


def test_a_payout_lists_the_balance_transactions_it_contains_and_they_sum_to_it(client, sandbox):
    control(sandbox, "config", {"balance_available_days": 2})
    start = (int(time.time()) // DAY - 10) * DAY
    control(sandbox, "clock", {"now": start})
    first = paid_invoice(client, 10_000)
    paid_invoice(client, 2500)
    client.v1.refunds.create(params={"charge": charge_of(client, first.id).id, "amount": 1000})
    with pytest.raises(stripe.InvalidRequestError) as caught:  # card funds are still pending
        client.v1.payouts.create(params={"amount": 9000, "currency": "usd"})
    assert caught.value.code == "balance_insufficient"

    control(sandbox, "clock", {"advance": 3 * DAY})
    available = client.v1.balance.retrieve().available[0].amount
    # 100.00 - 3.20 fee + 25.00 - 1.03 fee - 10.00 refund
    assert available == (10_000 - 320) + (2500 - 103) - 1000
    payout = client.v1.payouts.create(params={"amount": available, "currency": "usd"})
    assert payout.arrival_date == start + 5 * DAY and payout.status == "pending"
    contained = list(client.v1.balance_transactions.list(params={"payout": payout.id, "limit": 2}).auto_paging_iter())
    assert sorted(t.type for t in contained) == ["charge", "charge", "payout", "refund"]
    assert sum(t.net for t in contained if t.type != "payout") == payout.amount
    assert sum(t.fee for t in contained) == 320 + 103 and sum(t.net for t in contained) == 0
    assert client.v1.balance.retrieve().available[0].amount == 0

    control(sandbox, "clock", {"advance": 2 * DAY})
    assert client.v1.payouts.retrieve(payout.id).status == "paid"
    assert [e.type for e in client.v1.events.list(params={"type": "payout.paid"}).data] == ["payout.paid"]


# ---- subscriptions --------------------------------------------------------------------------------
def test_subscription_invoices_prorations_and_renewal(client, sandbox):
    january = 1767225600  # 2026-01-01T00:00:00Z
    control(sandbox, "clock", {"now": january})
    product = client.v1.products.create(params={"name": "Pro plan"})
    basic = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 3000, "recurring": {"interval": "month"}}
    )
    pro = client.v1.prices.create(
        params={"product": product.id, "currency": "usd", "unit_amount": 6000, "recurring": {"interval": "month"}}
    )
    customer = paying_customer(client)
    subscription = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": basic.id}],
            "metadata": {"opportunity": "006A"},
            "expand": ["latest_invoice"],
        }
    )
    first = subscription.latest_invoice
    assert (subscription.status, first.status, first.amount_paid, first.billing_reason) == (
        "active",
        "paid",
        3000,
        "subscription_create",
    )
    assert first.parent.subscription_details.subscription == subscription.id
    assert first.parent.subscription_details.metadata["opportunity"] == "006A"
    item = subscription["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (january, 1769904000)  # to 2026-02-01

    control(sandbox, "clock", {"now": january + 31 * DAY // 2})  # half of January left
    client.v1.subscriptions.update(subscription.id, params={"items": [{"id": item.id, "price": pro.id}]})
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data
    assert sorted(i.amount for i in pending) == [-1500, 3000] and all(i.proration for i in pending)
    assert {i.parent.subscription_details.subscription_item for i in pending} == {item.id}

    renewal = control(sandbox, f"subscriptions/{subscription.id}/advance")["invoice"]
    assert (renewal["billing_reason"], renewal["status"], renewal["created"]) == (
        "subscription_cycle",
        "paid",
        1769904000,
    )
    assert renewal["total"] == 6000 - 1500 + 3000
    lines = client.v1.invoices.line_items.list(renewal["id"]).data
    prorations = [line for line in lines if line.parent.subscription_item_details.proration]
    assert sorted(line.amount for line in prorations) == [-1500, 3000]
    renewed = client.v1.subscription_items.retrieve(item.id)
    assert (renewed.current_period_start, renewed.current_period_end) == (1769904000, 1772323200)  # Feb -> Mar

    control(sandbox, "clock", {"now": 1769904000 + 14 * DAY})  # half of February left
    upgraded = client.v1.subscriptions.update(
        subscription.id,
        params={
            "items": [{"id": item.id, "quantity": 2}],
            "proration_behavior": "always_invoice",
            "expand": ["latest_invoice"],
        },
    )
    assert upgraded.latest_invoice.billing_reason == "subscription_update"
    assert (upgraded.latest_invoice.total, upgraded.latest_invoice.status) == (-3000 + 6000, "paid")
    updates = client.v1.events.list(params={"type": "customer.subscription.updated"}).data
    assert "items" in updates[0].data.previous_attributes


def test_add_invoice_items_bill_one_time_prices_on_the_first_invoice_only(client, sandbox):
    product = client.v1.products.create(params={"name": "Pro plan"})
    monthly = client.v1.prices.create(
        params={"product": product.id, "currency": "eur", "unit_amount": 4500, "recurring": {"interval": "month"}}
    )
    onboarding = one_time_price(client, "eur", 140_000)
    customer = client.v1.customers.create(params={"name": "Plan and fee"})
    params = {
        "customer": customer.id,
        "collection_method": "send_invoice",
        "days_until_due": 30,
        "items": [{"price": monthly.id, "quantity": 2}],
        "add_invoice_items": [{"price": onboarding.id, "quantity": 1, "metadata": {"line": "00kA"}}],
        "expand": ["latest_invoice"],
    }

    subscription = client.v1.subscriptions.create(params=params)

    first = subscription.latest_invoice
    assert (first.status, first.currency, first.total) == ("open", "eur", 2 * 4500 + 140_000)
    lines = {line.parent.type: line for line in client.v1.invoices.line_items.list(first.id).data}
    fee = lines["invoice_item_details"]
    assert (fee.amount, fee.description, fee.metadata["line"]) == (140_000, "Onboarding", "00kA")
    assert fee.parent.invoice_item_details.subscription == subscription.id
    assert lines["subscription_item_details"].amount == 9000
    # Only on the first invoice: the renewal bills the plan alone.
    renewal = control(sandbox, f"subscriptions/{subscription.id}/advance")["invoice"]
    assert renewal["total"] == 9000
    # Stripe takes one-time prices only, in the subscription's currency.
    for price, message in (
        (monthly.id, "only accepts one-time prices"),
        (one_time_price(client, "usd", 100).id, "same currency"),
    ):
        with pytest.raises(stripe.InvalidRequestError, match=message) as raised:
            client.v1.subscriptions.create(params={**params, "add_invoice_items": [{"price": price}]})
        assert raised.value.param == "add_invoice_items[0][price]"


def test_a_renewal_that_cannot_be_charged_makes_the_subscription_past_due(client, sandbox):
    product = client.v1.products.create(params={"name": "Seat"})
    price = client.v1.prices.create(
        params={"product": product.id, "currency": "gbp", "unit_amount": 1200, "recurring": {"interval": "month"}}
    )
    customer = paying_customer(client, card="pm_card_chargeCustomerFail")
    subscription = client.v1.subscriptions.create(params={"customer": customer.id, "items": [{"price": price.id}]})
    assert subscription.status == "incomplete"
    assert client.v1.invoices.retrieve(subscription.latest_invoice).status == "open"
    client.v1.customers.update(customer.id, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    assert client.v1.invoices.pay(subscription.latest_invoice).status == "paid"
    control(sandbox, f"subscriptions/{subscription.id}/advance")
    assert client.v1.subscriptions.retrieve(subscription.id).status == "active"


# ---- webhooks -------------------------------------------------------------------------------------
class Receiver:
    """A tiny webhook endpoint: records raw bodies and signatures; can fail the first N calls."""

    def __init__(self, failures: int = 0) -> None:
        self.received: list[tuple[bytes, str]] = []
        self.failures = failures
        self.lock = threading.Lock()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        with self.lock:
            if self.failures:
                self.failures -= 1
                return Response(status_code=500)
            self.received.append((body, request.headers["stripe-signature"]))
        return Response(status_code=200)

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[bytes, str]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"only {len(self.received)} of {count} webhooks arrived")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    hook = Receiver(failures=1)
    handle = serve_in_thread(hook.app)
    yield hook, f"{handle.url}/hook"
    handle.stop()


def test_webhooks_are_signed_like_stripe_retried_and_only_for_enabled_events(client, sandbox, receiver):
    hook, url = receiver
    endpoint = client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": ["customer.created"]})
    assert endpoint.secret.startswith("whsec_")
    assert "secret" not in client.v1.webhook_endpoints.retrieve(endpoint.id)
    customer = client.v1.customers.create(params={"email": "hooked@example.com"})
    client.v1.products.create(params={"name": "Not subscribed to"})
    payload, signature = hook.wait_for(1)[0]

    event = stripe.Webhook.construct_event(payload.decode(), signature, endpoint.secret)
    assert (event.type, event.data.object.id, event.data.object.email) == (
        "customer.created",
        customer.id,
        "hooked@example.com",
    )
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode().replace("hooked@", "attacker@"), signature, endpoint.secret)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(payload.decode(), signature, "whsec_wrong")
    # product.created was not enabled. Instead of waiting a while for it not to come: the endpoint's events
    # go out in order from one queue, so had it been sent, it would arrive before this later customer.created.
    later = client.v1.customers.create(params={"email": "later@example.com"})
    received = [json.loads(body) for body, _ in hook.wait_for(2)]
    assert [(e["type"], e["data"]["object"]["id"]) for e in received] == [
        ("customer.created", customer.id),
        ("customer.created", later.id),
    ]
    deliveries = control(sandbox, "webhooks", method="GET")["deliveries"]
    attempts = [(d["attempt"], d["status"]) for d in deliveries if d["event"] == received[0]["id"]]
    assert attempts == [(1, 500), (2, 200)]  # the first attempt failed and was retried


def test_webhooks_can_arrive_twice_and_out_of_order(client, sandbox, receiver):
    hook, url = receiver
    hook.failures = 0
    control(sandbox, "config", {"webhook_duplicate_rate": 1.0, "webhook_shuffle": True, "webhook_shuffle_window": 10})
    endpoint = client.v1.webhook_endpoints.create(params={"url": url, "enabled_events": ["*"]})
    customer = paying_customer(client)
    invoice = invoice_for(client, customer.id, "usd", [{"amount": 500, "currency": "usd", "description": "x"}])
    client.v1.invoices.pay(invoice.id)
    created = [e.id for e in client.v1.events.list(params={"limit": 100}).auto_paging_iter()]
    delivered = [
        stripe.Webhook.construct_event(body.decode(), sig, endpoint.secret).id
        for body, sig in hook.wait_for(2 * len(created))
    ]
    assert sorted(delivered) == sorted(created * 2)
    first_arrivals = list(dict.fromkeys(delivered))
    assert first_arrivals != list(reversed(created))  # shuffled within the window


# ---- expand, errors, auth -------------------------------------------------------------------------
def test_expansions_through_lists_and_up_to_four_levels(client, sandbox):
    invoice = paid_invoice(client, 1500)
    listed = client.v1.invoices.list(params={"expand": ["data.payments.data.payment.payment_intent.latest_charge"]})
    charge = listed.data[0].payments.data[0].payment.payment_intent.latest_charge
    assert (charge.object, charge.amount, charge.payment_method_details.card.last4) == ("charge", 1500, "4242")
    assert "payments" not in client.v1.invoices.retrieve(invoice.id)  # only when asked for
    draft = client.v1.invoices.create(params={"customer": invoice.customer})
    assert client.v1.invoices.retrieve(draft.id, params={"expand": ["payments"]}).payments.data == []
    client.v1.refunds.create(params={"charge": charge.id, "amount": 100})
    charges = client.v1.charges.list(params={"expand": ["data.refunds", "data.balance_transaction", "data.customer"]})
    assert charges.data[0].refunds.data[0].amount == 100
    assert charges.data[0].balance_transaction.fee == 74 and charges.data[0].customer.email == "buyer@example.com"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.list(params={"expand": ["data.payments.data.payment.payment_intent.latest_charge.customer"]})
    assert caught.value.param == "expand"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.retrieve(invoice.id, params={"expand": ["currency"]})


def test_errors_use_stripes_envelope_and_status_codes(client, sandbox):
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe.StripeClient("not-a-stripe-key", base_addresses={"api": sandbox.url}).v1.customers.list()
    assert caught.value.http_status == 401
    anonymous = requests.get(f"{sandbox.url}/v1/customers", timeout=10)
    assert anonymous.status_code == 401 and anonymous.json()["error"]["type"] == "invalid_request_error"
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.retrieve("cus_missing")
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (404, "resource_missing", "id")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.prices.create(params={"currency": "usd", "unit_amount": 100})
    assert (caught.value.http_status, caught.value.code, caught.value.param) == (400, "parameter_missing", "product")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.list(params={"limit": 101})
    assert caught.value.param == "limit"
    unknown = requests.get(
        f"{sandbox.url}/v1/nothing_here", headers={"Authorization": f"Bearer {sandbox.api_key}"}, timeout=10
    )
    assert unknown.status_code == 404 and "Unrecognized request URL" in unknown.json()["error"]["message"]
    assert anonymous.headers["Stripe-Version"] == API_VERSION


def test_fault_knobs_give_429s_and_replayed_500s(client, sandbox, monkeypatch):
    # The limiter's clock stands still: "three requests within one second" whatever the machine's speed.
    second = [1000.0]
    monkeypatch.setattr(sandbox.stand_in, "monotonic", lambda: second[0])
    control(sandbox, "config", {"rate_limit_per_second": 2})
    client.v1.customers.list()
    client.v1.customers.list()
    with pytest.raises(stripe.RateLimitError) as caught:
        client.v1.customers.list()
    assert caught.value.http_status == 429
    second[0] += 1.0
    assert client.v1.customers.list().data == []  # a new second, a new allowance
    control(sandbox, "config", {"rate_limit_per_second": 0, "error_rate": 1.0})
    with pytest.raises(stripe.APIError) as caught:
        client.v1.customers.create(params={"email": "flaky@example.com"}, options={"idempotency_key": "flaky-1"})
    assert caught.value.http_status == 500
    control(sandbox, "config", {"error_rate": 0.0})
    with pytest.raises(stripe.APIError) as caught:  # Stripe replays even a 500 under its key
        client.v1.customers.create(params={"email": "flaky@example.com"}, options={"idempotency_key": "flaky-1"})
    assert caught.value.headers.get("Idempotent-Replayed") == "true"
    assert client.v1.customers.create(params={"email": "flaky@example.com"}, options={"idempotency_key": "flaky-2"}).id
    assert control(sandbox, "stats", method="GET")["faults"] == {"rate_limit": 1, "api_error": 1}


def test_rate_limit_every_refuses_exactly_every_nth_request(client, sandbox):
    control(sandbox, "config", {"rate_limit_every": 3})
    outcomes = []
    for _ in range(7):
        try:
            client.v1.customers.list()
            outcomes.append(200)
        except stripe.RateLimitError as error:
            outcomes.append(error.http_status)

    assert outcomes == [200, 200, 429, 200, 200, 429, 200]
    assert control(sandbox, "stats", method="GET")["faults"] == {"rate_limit": 2}


def test_the_sdk_works_through_the_module_level_api_base(sandbox):
    previous = (stripe.api_key, stripe.api_base)
    stripe.api_key, stripe.api_base = sandbox.api_key, sandbox.url
    try:
        created = stripe.Customer.create(email="global@example.com")
        assert stripe.Customer.retrieve(created.id).email == "global@example.com"
    finally:
        stripe.api_key, stripe.api_base = previous


# ---- invoice changes after finalization, credit notes ---------------------------------------------
def test_finalized_invoices_change_only_in_allowed_fields_and_each_change_is_an_event(client, sandbox):
    customer = paying_customer(client)
    invoice = invoice_for(
        client,
        customer.id,
        "usd",
        [{"amount": 2000, "currency": "usd", "description": "x"}],
        collection_method="send_invoice",
        days_until_due=30,
    )
    client.v1.invoices.send_invoice(invoice.id)
    updated = client.v1.invoices.update(invoice.id, params={"metadata": {"po": "PO-7"}, "footer": "Thanks"})
    assert (updated.status, updated.metadata["po"], updated.footer) == ("open", "PO-7", "Thanks")
    event = client.v1.events.list(params={"type": "invoice.updated"}).data[0]
    assert event.data.previous_attributes.to_dict() == {"metadata": {}, "footer": None}
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.invoices.update(invoice.id, params={"collection_method": "charge_automatically"})
    assert caught.value.code == "invoice_not_editable"
    assert client.v1.invoices.void_invoice(invoice.id).status == "void"
    other = invoice_for(client, customer.id, "usd", [{"amount": 300, "currency": "usd", "description": "y"}])
    client.v1.invoices.finalize_invoice(other.id)
    assert client.v1.invoices.mark_uncollectible(other.id).status == "uncollectible"
    types = {e.type for e in client.v1.events.list(params={"limit": 100}).auto_paging_iter()}
    assert {"invoice.sent", "invoice.voided", "invoice.marked_uncollectible"} <= types


def test_credit_notes_reduce_an_open_invoice_or_refund_a_paid_one(client, sandbox):
    customer = paying_customer(client)
    open_invoice = invoice_for(client, customer.id, "usd", [{"amount": 10_000, "currency": "usd", "description": "x"}])
    client.v1.invoices.finalize_invoice(open_invoice.id)
    note = client.v1.credit_notes.create(params={"invoice": open_invoice.id, "amount": 4000, "reason": "order_change"})
    reduced = client.v1.invoices.retrieve(open_invoice.id)
    assert (note.type, note.total, reduced.amount_remaining, reduced.pre_payment_credit_notes_amount) == (
        "pre_payment",
        4000,
        6000,
        4000,
    )
    assert client.v1.invoices.pay(open_invoice.id).amount_paid == 6000

    paid = paid_invoice(client, 5000)
    line = client.v1.invoices.line_items.list(paid.id).data[0]
    refunding = client.v1.credit_notes.create(
        params={
            "invoice": paid.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 2000}],
            "refund_amount": 2000,
        }
    )
    assert (refunding.type, refunding.total, refunding.refunds[0].amount_refunded) == ("post_payment", 2000, 2000)
    assert client.v1.charges.retrieve(charge_of(client, paid.id).id).amount_refunded == 2000
    assert client.v1.credit_notes.line_items.list(refunding.id).data[0].invoice_line_item == line.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.credit_notes.create(params={"invoice": paid.id, "amount": 3001})
    assert [e.type for e in client.v1.events.list(params={"type": "credit_note.created"}).data] == [
        "credit_note.created"
    ] * 2


def test_credit_note_lines_page_and_notes_list_by_invoice_and_customer(client, sandbox):
    customer = paying_customer(client)
    work = [{"amount": 1_000 + n, "currency": "usd", "description": f"Line {n}"} for n in range(12)]
    invoice = client.v1.invoices.finalize_invoice(invoice_for(client, customer.id, "usd", work).id)
    lines = client.v1.invoices.line_items.list(invoice.id, params={"limit": 100}).data
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 100} for line in lines],
        }
    )
    assert (len(note.lines.data), note.lines.has_more, note.total) == (10, True, 1_200)
    first = client.v1.credit_notes.line_items.list(note.id, params={"limit": 5})
    second = client.v1.credit_notes.line_items.list(note.id, params={"limit": 5, "starting_after": first.data[-1].id})
    third = client.v1.credit_notes.line_items.list(note.id, params={"limit": 5, "starting_after": second.data[-1].id})
    assert (first.has_more, second.has_more, third.has_more, len(third.data)) == (True, True, False, 2)
    paged = [line.invoice_line_item for page in (first, second, third) for line in page.data]
    assert paged == [line.id for line in lines]
    assert [n.id for n in client.v1.credit_notes.list(params={"invoice": invoice.id}).data] == [note.id]
    assert [n.id for n in client.v1.credit_notes.list(params={"customer": customer.id}).data] == [note.id]
    assert not client.v1.credit_notes.list(params={"customer": paying_customer(client).id}).data


def _finalized(client: stripe.StripeClient, customer: str, amount: int, currency: str = "usd"):
    draft = invoice_for(client, customer, currency, [{"amount": amount, "currency": currency, "description": "x"}])
    return client.v1.invoices.finalize_invoice(draft.id)


def test_the_customer_balance_is_a_ledger_applied_at_finalization(client, sandbox):
    customer = paying_customer(client)
    credit = client.v1.customers.balance_transactions.create(customer.id, params={"amount": -3_000, "currency": "usd"})
    assert (credit.type, credit.ending_balance, client.v1.customers.retrieve(customer.id).balance) == (
        "adjustment",
        -3_000,
        -3_000,
    )
    assert client.v1.customers.retrieve(customer.id).currency == "usd"
    problems = _shape_problems(credit.to_dict(), stripe_example_objects(), "cbtxn")
    assert not problems, problems
    # Partly paid from the credit: amount_due is what is left to charge.
    partly = _finalized(client, customer.id, 5_000)
    assert (partly.starting_balance, partly.ending_balance, partly.total, partly.amount_due) == (
        -3_000,
        0,
        5_000,
        2_000,
    )
    assert client.v1.invoices.pay(partly.id).amount_paid == 2_000
    # A credit note's credit_amount goes back to the balance, linked both ways.
    line = partly.lines.data[0]
    note = client.v1.credit_notes.create(
        params={
            "invoice": partly.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 4_000}],
            "credit_amount": 4_000,
        }
    )
    note_txn = client.v1.customers.balance_transactions.retrieve(customer.id, note.customer_balance_transaction)
    assert (note_txn.type, note_txn.amount, note_txn.credit_note, note_txn.invoice) == (
        "credit_note",
        -4_000,
        note.id,
        partly.id,
    )
    # Wholly paid from the credit: paid at finalization with nothing charged, the rest of the credit kept.
    wholly = _finalized(client, customer.id, 1_000)
    assert (wholly.status, wholly.amount_due, wholly.amount_paid, wholly.ending_balance) == ("paid", 0, 0, -3_000)
    # A negative invoice adds its total to the credit.
    negative = _finalized(client, customer.id, -2_000)
    assert (negative.total, negative.amount_due, negative.status, negative.ending_balance) == (
        -2_000,
        0,
        "paid",
        -5_000,
    )
    covered = _finalized(client, customer.id, 1_500)
    assert (covered.amount_due, covered.ending_balance) == (0, -3_500)
    # Voiding gives back what an invoice applied (one paid by the credit alone is paid, so not voidable).
    owing = _finalized(client, customer.id, 10_000)
    assert (owing.starting_balance, owing.ending_balance, owing.amount_due) == (-3_500, 0, 6_500)
    client.v1.invoices.void_invoice(owing.id)
    assert client.v1.customers.retrieve(customer.id).balance == -3_500
    # A debit balance: the next invoice's amount_due exceeds its total.
    client.v1.customers.balance_transactions.create(customer.id, params={"amount": 5_000, "currency": "usd"})
    debit = _finalized(client, customer.id, 2_000)
    assert (debit.starting_balance, debit.ending_balance, debit.total, debit.amount_due) == (1_500, 0, 2_000, 3_500)
    # An amount due below Stripe's minimum charge is not charged: paid, and carried on the balance as a debit.
    small = _finalized(client, customer.id, 30)
    assert (small.status, small.amount_paid, small.amount_remaining, small.ending_balance) == ("paid", 0, 0, 30)
    txns = client.v1.customers.balance_transactions.list(customer.id, params={"limit": 100}).data
    assert [t.type for t in reversed(txns)] == [
        "adjustment",
        "applied_to_invoice",
        "credit_note",
        "applied_to_invoice",
        "applied_to_invoice",
        "applied_to_invoice",
        "applied_to_invoice",
        "unapplied_from_invoice",
        "adjustment",
        "applied_to_invoice",
        "invoice_too_small",
    ]
    assert txns[0].ending_balance == client.v1.customers.retrieve(customer.id).balance == 30
    assert sum(t.amount for t in txns) == 30
    assert [t.invoice for t in txns if t.type == "unapplied_from_invoice"] == [owing.id]
    # A balance in another currency is kept apart by Stripe; this stand-in refuses it rather than mixing them.
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.balance_transactions.create(customer.id, params={"amount": -100, "currency": "eur"})
    euro = _finalized(client, customer.id, 2_000, "eur")
    assert (euro.starting_balance, euro.amount_due) == (0, 2_000)


def test_an_attached_payment_pays_part_of_an_invoice_and_a_credit_note_then_is_mixed(client, sandbox):
    customer = paying_customer(client)
    invoice = _finalized(client, customer.id, 10_000)
    intent = client.v1.payment_intents.create(
        params={
            "amount": 4_000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": customer.invoice_settings.default_payment_method,
            "confirm": True,
            "off_session": True,
        }
    )
    partly = client.v1.invoices.attach_payment(invoice.id, params={"payment_intent": intent.id})
    assert (partly.status, partly.amount_paid, partly.amount_remaining, partly.attempt_count) == (
        "open",
        4_000,
        6_000,
        0,
    )
    paid = client.v1.invoice_payments.list(params={"invoice": invoice.id, "status": "paid"}).data
    assert [(p.amount_paid, p.is_default, p.payment.payment_intent) for p in paid] == [(4_000, False, intent.id)]
    # A refund of the partial payment leaves the invoice as it was: refunds never change an invoice.
    refund = client.v1.refunds.create(params={"payment_intent": intent.id, "amount": 1_000})
    assert client.v1.invoices.retrieve(invoice.id).amount_paid == 4_000 and refund.amount == 1_000
    # A credit note bigger than what is left first clears the amount remaining, then refunds the rest.
    line = partly.lines.data[0]
    note = client.v1.credit_notes.create(
        params={
            "invoice": invoice.id,
            "lines": [{"type": "invoice_line_item", "invoice_line_item": line.id, "amount": 7_000}],
            "refund_amount": 1_000,
        }
    )
    assert (note.type, note.pre_payment_amount, note.post_payment_amount) == ("mixed", 6_000, 1_000)
    assert [(r.amount_refunded, r.type) for r in note.refunds] == [(1_000, "refund")]
    settled = client.v1.invoices.retrieve(invoice.id)
    assert (settled.status, settled.amount_paid, settled.amount_remaining) == ("paid", 4_000, 0)
    assert (settled.pre_payment_credit_notes_amount, settled.post_payment_credit_notes_amount) == (6_000, 1_000)
    assert (
        client.v1.charges.retrieve(client.v1.payment_intents.retrieve(intent.id).latest_charge).amount_refunded == 2_000
    )


def test_backdated_invoices_uncollectible_then_paid_and_voided_credit_notes(client, sandbox):
    customer = paying_customer(client)
    backdated = client.v1.invoices.create(params={"customer": customer.id, "effective_at": 1_700_000_000})
    client.v1.invoice_items.create(
        params={"customer": customer.id, "invoice": backdated.id, "amount": 900, "currency": "usd"}
    )
    finalized = client.v1.invoices.finalize_invoice(backdated.id)
    assert finalized.effective_at == 1_700_000_000 < finalized.status_transitions.finalized_at
    later = _finalized(client, customer.id, 2_000)
    assert later.effective_at == later.status_transitions.finalized_at
    client.v1.invoices.mark_uncollectible(later.id)
    recovered = client.v1.invoices.pay(later.id)
    assert (recovered.status, recovered.amount_paid) == ("paid", 2_000)
    assert recovered.status_transitions.marked_uncollectible_at is not None
    note = client.v1.credit_notes.create(params={"invoice": finalized.id, "amount": 300})
    voided = client.v1.credit_notes.void_credit_note(note.id)
    assert (voided.status, voided.voided_at is not None) == ("void", True)
    restored = client.v1.invoices.retrieve(finalized.id)
    assert (restored.amount_remaining, restored.pre_payment_credit_notes_amount) == (900, 0)
    types = [e.type for e in client.v1.events.list(params={"type": "credit_note.*"}).data]
    assert sorted(types) == ["credit_note.created", "credit_note.voided"]


# ---- state: persistence, determinism, control ------------------------------------------------------
def test_state_survives_save_and_load_and_ids_follow_the_seed(client, sandbox, tmp_path):
    invoice = paid_invoice(client, 1234)
    path = tmp_path / "stripe-state.json"
    sandbox.state.save(path)
    with start_stripe(state=StripeState.load(path)) as restarted:
        again = stripe.StripeClient(restarted.api_key, base_addresses={"api": restarted.url})
        loaded = again.v1.invoices.retrieve(invoice.id)
        assert (loaded.status, loaded.amount_paid, loaded.lines.data[0].amount) == ("paid", 1234, 1234)
        new_customer = again.v1.customers.create(params={"email": "next@example.com"})
        assert new_customer.id not in {c["id"] for c in control(sandbox, "records/customer", method="GET")}
        assert len(again.v1.invoices.list(params={"customer": invoice.customer}).data) == 1

    control(sandbox, "reset")
    first = client.v1.customers.create(params={"email": "a@example.com"}).id
    control(sandbox, "reset")
    assert client.v1.customers.create(params={"email": "a@example.com"}).id == first
    with start_stripe(seed=1) as other_seed:
        other = stripe.StripeClient(other_seed.api_key, base_addresses={"api": other_seed.url})
        assert other.v1.customers.create(params={"email": "a@example.com"}).id != first


def test_sandbox_controls_report_and_reconfigure(client, sandbox):
    client.v1.customers.create(params={"email": "counted@example.com"})
    stats = control(sandbox, "stats", method="GET")
    assert stats["by_method"]["POST"] == 1 and stats["writes"] == 1 and stats["objects"]["customer"] == 1
    assert control(sandbox, "config", {"latency_ms": 30})["latency_ms"] == 30
    started = time.monotonic()
    client.v1.customers.list()
    assert time.monotonic() - started >= 0.03
    bad = requests.post(f"{sandbox.url}/_sandbox/config", json={"no_such_knob": 1}, timeout=10)
    assert bad.status_code == 400
    assert sandbox.env() == {
        "STRIPE_API_KEY": sandbox.api_key,
        "STRIPE_API_BASE": sandbox.url,
        "STRIPE_WEBHOOK_SECRET": "",
    }


def test_test_card_tokens_attach_as_new_cards(client, sandbox):
    customer = client.v1.customers.create(params={"email": "cards@example.com"})
    card = client.v1.payment_methods.attach("pm_card_amex", params={"customer": customer.id})
    assert card.id.startswith("pm_") and card.id != "pm_card_amex" and card.customer == customer.id
    assert (card.card.brand, card.card.last4) == ("amex", "8431")
    intent = client.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": card.id,
            "confirm": True,
            "off_session": True,
            "payment_method_types": ["card"],
        }
    )
    assert intent.status == "succeeded" and "invoice" not in intent
    assert [c.id for c in client.v1.charges.list(params={"customer": customer.id}).data] == [intent.latest_charge]
