"""The Stripe resource over real HTTP (the official SDK at the pinned version) against the Stripe stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import pytest
import requests
import stripe

from sync_pipeline.resources.retry import RetryPolicy
from sync_pipeline.resources.stripe import STRIPE_API_VERSION, StripeResource
from sync_pipeline.sandbox.stripe import StripeSandbox, seed_paid_invoices, start_stripe

FAST_RETRIES = RetryPolicy(initial_wait=0.02, max_wait=0.5, max_attempts=12, max_seconds=60)
START = 1_790_000_000  # 2026-09-21 UTC, a fixed point for seeded invoices
SPACING = 60


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., StripeSandbox]]:
    """Starts stand-ins with config knobs; each is stopped when the test ends."""
    with ExitStack() as running:
        yield lambda **config: running.enter_context(start_stripe(**config))


@pytest.fixture
def sandbox(start_sandbox) -> StripeSandbox:
    return start_sandbox()


def resource_for(sandbox: StripeSandbox, **overrides: Any) -> StripeResource:
    env = sandbox.env()
    resource = StripeResource(
        api_key=env["STRIPE_API_KEY"],
        api_base=env["STRIPE_API_BASE"],
        **overrides,
    )
    resource._retry_policy = FAST_RETRIES  # quick waits; the policy itself is the shared one
    return resource


def stats(sandbox: StripeSandbox) -> dict[str, Any]:
    return requests.get(f"{sandbox.url}/_sandbox/stats", timeout=10).json()


def seed_invoices(sandbox: StripeSandbox, count: int, currency: str = "usd", unit_amount: int = 1000) -> list[str]:
    return seed_paid_invoices(
        sandbox.state,
        sandbox.config,
        count,
        currency=currency,
        unit_amount=unit_amount,
        customers=5,
        start=START,
        spacing_seconds=SPACING,
    )


def test_list_invoices_by_created_range_across_pages(sandbox):
    invoice_ids = seed_invoices(sandbox, 260)
    resource = resource_for(sandbox)
    requests_before = stats(sandbox)["requests"]

    # Invoices 20..229 fall in the window: 210 of them, three pages of at most 100.
    listed = list(resource.list_invoices(created_gte=START + 20 * SPACING, created_lt=START + 230 * SPACING))

    assert [invoice["id"] for invoice in listed] == list(reversed(invoice_ids[20:230]))  # newest first
    assert stats(sandbox)["requests"] - requests_before == 3
    assert all(type(invoice) is dict and invoice["object"] == "invoice" for invoice in listed)
    assert all(START + 20 * SPACING <= invoice["created"] < START + 230 * SPACING for invoice in listed)
    assert {invoice["status"] for invoice in listed} == {"paid"}
    assert listed[0]["total"] == 1000


def test_reads_are_retried_through_server_errors_and_rate_limits(start_sandbox):
    sandbox = start_sandbox(error_rate=0.5, seed=11)
    invoice_ids = seed_invoices(sandbox, 150)
    resource = resource_for(sandbox)

    listed = [invoice["id"] for invoice in resource.list_invoices(START, START + 150 * SPACING)]
    fetched = [resource.retrieve_invoice(invoice_id)["id"] for invoice_id in invoice_ids[:20]]
    api_errors = stats(sandbox)["faults"].get("api_error", 0)
    # Then 40 retrievals from 6 threads with every 4th request refused with a 429. Counted, not timed: a
    # per-second limit only bites when the machine is fast enough to send that many within one second.
    sandbox.config.update({"error_rate": 0.0, "rate_limit_every": 4})
    resource._retry_policy = RetryPolicy(initial_wait=0.1, max_wait=1.0, max_attempts=12, max_seconds=60)
    with ThreadPoolExecutor(6) as pool:
        retrieved = list(pool.map(lambda invoice_id: resource.retrieve_invoice(invoice_id)["id"], invoice_ids[:40]))

    assert sorted(listed) == sorted(invoice_ids)
    assert fetched == invoice_ids[:20]
    assert retrieved == invoice_ids[:40]
    assert api_errors > 0
    # 40 answers took 40 + n requests, every 4th of them a 429: n = (40 + n) // 4, so n = 13.
    assert stats(sandbox)["faults"]["rate_limit"] == 13


def test_create_with_the_same_idempotency_key_replays_the_first_result(sandbox):
    resource = resource_for(sandbox)
    params = {"email": "ops@acme.test", "name": "Acme", "metadata": {"salesforce_account_id": "001A"}}

    first = resource.create_customer(params, idempotency_key="sf-001A-create-customer")
    second = resource.create_customer(params, idempotency_key="sf-001A-create-customer")

    assert first["id"] == second["id"]
    assert stats(sandbox)["idempotent_replays"] == 1
    assert stats(sandbox)["objects"]["customer"] == 1
    with pytest.raises(stripe.IdempotencyError):
        resource.create_customer({**params, "name": "Other"}, idempotency_key="sf-001A-create-customer")


def test_writes_whose_response_was_lost_are_retried_without_duplicates(start_sandbox):
    sandbox = start_sandbox(lost_response_rate=0.4, seed=2)
    resource = resource_for(sandbox)

    created = [resource.create_customer({"name": f"Lost {n}"}, idempotency_key=f"sf-lost-{n}")["id"] for n in range(15)]

    assert stats(sandbox)["faults"]["lost_response"] > 0
    assert stats(sandbox)["idempotent_replays"] >= stats(sandbox)["faults"]["lost_response"]
    assert len(set(created)) == 15
    assert stats(sandbox)["objects"]["customer"] == 15


def test_a_replayed_server_error_is_final_and_surfaces_at_once(start_sandbox):
    sandbox = start_sandbox(error_rate=1.0)
    resource = resource_for(sandbox)

    with pytest.raises(stripe.APIError) as raised:
        resource.create_customer({"name": "Unlucky"}, idempotency_key="sf-unlucky")

    assert raised.value.http_status == 500
    # The first 500, then its replay under the same key: retrying further cannot change the answer.
    assert stats(sandbox)["requests"] == 2
    assert stats(sandbox)["objects"].get("customer", 0) == 0


def test_salesforce_to_stripe_write_helpers_build_a_finalized_invoice(sandbox):
    resource = resource_for(sandbox)
    opportunity = "006OPP1"
    customer = resource.create_customer(
        {"name": "Kuwait Trading", "metadata": {"salesforce_account_id": "001K"}},
        idempotency_key=f"{opportunity}-customer",
    )
    resource.create_invoice_item(
        {"customer": customer["id"], "currency": "kwd", "amount": 12_340, "description": "Onboarding"},
        idempotency_key=f"{opportunity}-item-1",
    )
    draft = resource.create_invoice(
        {
            "customer": customer["id"],
            "currency": "kwd",
            "pending_invoice_items_behavior": "include",
            "collection_method": "send_invoice",
            "days_until_due": 30,
            "metadata": {"salesforce_opportunity_id": opportunity},
        },
        idempotency_key=f"{opportunity}-invoice",
    )
    finalized = resource.finalize_invoice(draft["id"], idempotency_key=f"{opportunity}-finalize")

    assert finalized["id"] == draft["id"]
    assert finalized["status"] == "open"
    assert finalized["amount_due"] == 12_340 and finalized["currency"] == "kwd"
    fetched = resource.retrieve_invoice(draft["id"], expand=["customer"])
    assert fetched["customer"]["id"] == customer["id"]
    assert fetched["metadata"]["salesforce_opportunity_id"] == opportunity


def test_create_subscription_for_a_price(sandbox):
    resource = resource_for(sandbox)
    prices = resource.get_client().v1.prices
    price = prices.create(
        {
            "currency": "jpy",
            "unit_amount": 5000,
            "recurring": {"interval": "month"},
            "product_data": {"name": "Pro plan"},
        }
    )
    customer = resource.create_customer(
        {
            "name": "Tokyo KK",
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        },
        idempotency_key="006SUB-customer",
    )

    subscription = resource.create_subscription(
        {"customer": customer["id"], "items": [{"price": price.id}]}, idempotency_key="006SUB-subscription"
    )

    assert subscription["customer"] == customer["id"]
    assert subscription["items"]["data"][0]["price"]["id"] == price.id
    invoices = list(resource.list_invoices(customer=customer["id"]))
    assert len(invoices) == 1 and invoices[0]["total"] == 5000


def test_charges_come_with_refunds_and_invoices_with_payments(sandbox):
    [invoice_id] = seed_invoices(sandbox, 1, currency="jpy", unit_amount=4200)
    resource = resource_for(sandbox)
    window = {"created_gte": START - 1, "created_lt": START + 10 * SPACING}

    [payment] = list(resource.list_invoice_payments(invoice=invoice_id))
    payment_intent = payment["payment"]["payment_intent"]
    [charge] = [c for c in resource.list_charges(**window) if c["payment_intent"] == payment_intent]
    resource.get_client().v1.refunds.create({"charge": charge["id"], "amount": 1200})
    [refunded] = [c for c in resource.list_charges(**window) if c["id"] == charge["id"]]

    assert payment["amount_paid"] == 4200 and charge["amount"] == 4200
    assert [p["invoice"] for p in resource.list_invoice_payments(payment_intent=payment_intent)] == [invoice_id]
    assert refunded["amount_refunded"] == 1200
    assert [refund["amount"] for refund in refunded["refunds"]["data"]] == [1200]
    assert [refund["charge"] for refund in resource.list_refunds(charge=charge["id"])] == [charge["id"]]
    assert resource.retrieve_charge(charge["id"])["currency"] == "jpy"
    customer_id = resource.retrieve_invoice(invoice_id)["customer"]
    assert resource.retrieve_customer(customer_id)["id"] == customer_id


def test_disputes_credit_notes_payouts_and_customer_search(sandbox):
    invoice_ids = seed_invoices(sandbox, 3, currency="eur", unit_amount=2500)
    resource = resource_for(sandbox)
    charge = next(resource.list_charges())
    requests.post(f"{sandbox.url}/_sandbox/disputes", json={"charge": charge["id"]}, timeout=10).raise_for_status()
    resource.get_client().v1.credit_notes.create({"invoice": invoice_ids[1], "amount": 500})
    requests.post(f"{sandbox.url}/_sandbox/payouts", json={}, timeout=10).raise_for_status()

    [dispute] = resource.list_disputes(charge=charge["id"])
    [credit_note] = resource.list_credit_notes(invoice=invoice_ids[1])
    [payout] = resource.list_payouts()
    arrival = payout["arrival_date"]
    settled = list(resource.list_balance_transactions(payout=payout["id"]))

    assert dispute["charge"] == charge["id"] and dispute["amount"] == 2500
    assert credit_note["amount"] == 500 and credit_note["invoice"] == invoice_ids[1]
    assert [p["id"] for p in resource.list_payouts(arrival_date_gte=arrival, arrival_date_lt=arrival + 1)] == [
        payout["id"]
    ]
    assert list(resource.list_payouts(arrival_date_gte=arrival + 1)) == []
    # A payout's balance transactions: what it pays out (charges net of fees, less the dispute) and itself.
    assert {t["type"] for t in settled} >= {"charge", "payout"} and len(settled) > 4
    assert sum(t["net"] for t in settled if t["type"] != "payout") == payout["amount"]
    assert sum(t["net"] for t in settled) == 0
    assert [c["name"] for c in resource.search_customers("name:'Seed customer 1'")] == ["Seed customer 1"]


def test_events_page_both_ways(sandbox):
    resource = resource_for(sandbox)
    for n in range(5):
        resource.create_customer({"name": f"Evented {n}"}, idempotency_key=f"ev-{n}")

    newest_first = list(resource.list_events(types=["customer.created"]))
    assert len(newest_first) == 5
    oldest = newest_first[-1]["id"]
    newer = list(resource.list_events(ending_before=oldest, types=["customer.created"]))
    assert [event["id"] for event in newer] == [event["id"] for event in reversed(newest_first[:-1])]


def test_pinned_api_version_is_what_the_sandbox_serves(start_sandbox):
    sandbox = start_sandbox(strict_api_version=True)
    resource = resource_for(sandbox)
    assert STRIPE_API_VERSION == "2026-10-28.endive"
    assert resource.create_customer({"name": "Versioned"}, idempotency_key="v-1")["object"] == "customer"


def test_secrets_stay_out_of_the_resource_repr(sandbox):
    resource = resource_for(sandbox)
    shown = repr(resource) + str(resource)
    assert sandbox.url in shown
    assert sandbox.api_key not in shown
