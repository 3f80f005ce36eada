"""The Stripe stand-in's cash side through the real `stripe` SDK: payouts that fail or are canceled,
charges settling in another currency, balance adjustments and account fees, and the payouts that pay them."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
import requests
import stripe

from sync_pipeline.sandbox.stripe import StripeConfig, StripeSandbox
from sync_pipeline_tests.sandbox import test_stripe_standin as standin
from sync_pipeline_tests.sandbox.test_stripe_standin import charge_of, control, paid_invoice

# The stand-in tests' fixtures: one server for the module, an SDK client on it; `sandbox` below empties it.
server = standin.server
client = standin.client

DAY = 86400


@pytest.fixture
def sandbox(server: StripeSandbox) -> StripeSandbox:
    """The module's server emptied, default knobs, a frozen clock (payouts arrive and fail at exact instants)."""
    control(server, "config", dataclasses.asdict(StripeConfig(balance_available_days=0)))
    control(server, "reset")
    control(server, "clock", {"now": (int(time.time()) // DAY - 20) * DAY})
    return server


def control_error(sandbox: StripeSandbox, path: str, body: dict) -> dict:
    response = requests.post(f"{sandbox.url}/_sandbox/{path}", json=body, timeout=30)
    assert response.status_code == 400, response.text
    return response.json()["error"]


def paid_out(client: stripe.StripeClient, payout_id: str) -> list[Any]:
    return list(client.v1.balance_transactions.list(params={"payout": payout_id, "limit": 100}).auto_paging_iter())


def event_types(client: stripe.StripeClient, prefix: str) -> list[str]:
    return [e.type for e in client.v1.events.list(params={"type": f"{prefix}*"}).data]


# ---- payout failure and cancellation ----------------------------------------------------------------
def test_a_paid_payout_fails_and_its_money_is_paid_out_again_by_the_next_payout(client, sandbox):
    paid_invoice(client, 10_000)
    (first,) = control(sandbox, "payouts")
    assert first["amount"] == 10_000 - 320
    control(sandbox, "clock", {"advance": 2 * DAY})
    assert client.v1.payouts.retrieve(first["id"]).status == "paid"

    failed = control(sandbox, f"payouts/{first['id']}/fail", {"failure_code": "account_closed"})
    assert (failed["status"], failed["failure_code"], failed["failure_message"]) == (
        "failed",
        "account_closed",
        "The bank account has been closed.",
    )
    payout = client.v1.payouts.retrieve(first["id"], params={"expand": ["failure_balance_transaction"]})
    reversal = payout.failure_balance_transaction
    assert (reversal.type, reversal.reporting_category, reversal.source, reversal.status) == (
        "payout_failure",
        "payout_reversal",
        first["id"],
        "available",
    )
    assert (reversal.amount, reversal.fee, reversal.net, reversal.fee_details) == (first["amount"], 0, 9680, [])
    assert reversal.description == f"Payout failure for {first['id']}"
    # The failed payout still lists what it carried, not the money coming back.
    assert sorted(t.type for t in paid_out(client, first["id"])) == ["charge", "payout"]
    assert client.v1.balance.retrieve().available[0].amount == first["amount"]
    assert event_types(client, "payout.")[:2] == ["payout.failed", "payout.updated"]
    updated = client.v1.events.list(params={"type": "payout.updated"}).data[0]
    assert updated.data.previous_attributes["status"] == "paid"

    paid_invoice(client, 2_000)
    (again,) = control(sandbox, "payouts")
    contents = paid_out(client, again["id"])
    assert sorted(t.type for t in contents) == ["charge", "payout", "payout_failure"]
    assert again["amount"] == first["amount"] + 2_000 - 88
    assert sum(t.net for t in contents if t.type != "payout") == again["amount"]
    listed = client.v1.payouts.list(params={"expand": ["data.failure_balance_transaction"]}).data
    assert [p.failure_balance_transaction and p.failure_balance_transaction.id for p in listed] == [
        None,
        reversal.id,
    ]

    assert control_error(sandbox, f"payouts/{first['id']}/fail", {})["message"].startswith(
        f"Payout {first['id']} is failed"
    )
    assert control_error(sandbox, f"payouts/{again['id']}/fail", {"failure_code": "nope"})["param"] == "failure_code"


def test_a_pending_payout_can_fail_before_it_arrives_and_never_arrives(client, sandbox):
    paid_invoice(client, 5_000)
    (payout,) = control(sandbox, "payouts")
    control(sandbox, f"payouts/{payout['id']}/fail", {"failure_code": "no_account"})
    control(sandbox, "clock", {"advance": 3 * DAY})
    assert client.v1.payouts.retrieve(payout["id"]).status == "failed"
    assert "payout.paid" not in event_types(client, "payout.")


def test_a_pending_manual_payout_is_canceled_and_automatic_ones_cannot_be(client, sandbox):
    paid_invoice(client, 10_000)
    manual = client.v1.payouts.create(params={"amount": 4_000, "currency": "usd"})
    canceled = client.v1.payouts.cancel(manual.id)
    assert (canceled.status, canceled.failure_code) == ("canceled", None)
    txn = client.v1.balance_transactions.retrieve(canceled.failure_balance_transaction)
    assert (txn.type, txn.reporting_category, txn.amount, txn.fee, txn.source) == (
        "payout_cancel",
        "payout_reversal",
        4_000,
        0,
        manual.id,
    )
    assert event_types(client, "payout.") == ["payout.canceled", "payout.updated", "payout.created"]
    assert client.v1.balance.retrieve().available[0].amount == 10_000 - 320
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payouts.cancel(manual.id)

    (automatic,) = control(sandbox, "payouts")
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.payouts.cancel(automatic["id"])
    assert "automatic" in caught.value.user_message
    # The canceled payout's own transaction and its cancellation net to zero in the automatic payout.
    contents = paid_out(client, automatic["id"])
    assert sorted(t.type for t in contents) == ["charge", "payout", "payout", "payout_cancel"]
    assert automatic["amount"] == 10_000 - 320


# ---- cross-currency settlement ----------------------------------------------------------------------
def test_a_charge_in_a_currency_the_account_does_not_settle_in_converts_with_its_refund_and_dispute(client, sandbox):
    control(sandbox, "config", {"settlement_currencies": ["usd", "jpy"], "exchange_rates": {"eur:usd": "1.0850"}})
    invoice = paid_invoice(client, 10_001, "eur")  # 100.01 EUR -> 108.51085 USD -> 10851 cents
    charge = charge_of(client, invoice.id)
    assert (charge.currency, charge.amount) == ("eur", 10_001)
    txn = client.v1.balance_transactions.retrieve(charge.balance_transaction)
    assert (txn.currency, txn.amount, txn.exchange_rate) == ("usd", 10_851, 1.085)
    assert txn.fee == (10_851 * 290 + 5000) // 10000 + 30 and txn.fee_details[0].currency == "usd"

    # Zero-decimal to two-decimal: 1235 JPY settles in itself; KWD (3 decimals) converts to USD cents.
    jpy = client.v1.balance_transactions.retrieve(
        charge_of(client, paid_invoice(client, 1235, "jpy").id).balance_transaction
    )
    assert (jpy.currency, jpy.amount, jpy.exchange_rate) == ("jpy", 1235, None)
    control(sandbox, "config", {"exchange_rates": {"eur:usd": "1.0850", "kwd:usd": "3.2525"}})
    kwd_charge = charge_of(client, paid_invoice(client, 1_010, "kwd").id)  # 1.010 KWD x 3.2525 = 3.285025 USD
    kwd = client.v1.balance_transactions.retrieve(kwd_charge.balance_transaction)
    assert (kwd.currency, kwd.amount, kwd.exchange_rate) == ("usd", 329, 3.2525)

    refund = client.v1.refunds.create(params={"charge": charge.id, "amount": 5_000})  # 54.25 USD
    assert refund.currency == "eur"
    refund_txn = client.v1.balance_transactions.retrieve(refund.balance_transaction)
    assert (refund_txn.currency, refund_txn.amount, refund_txn.fee, refund_txn.exchange_rate) == (
        "usd",
        -5_425,
        0,
        1.085,
    )
    dispute = control(sandbox, "disputes", {"charge": charge.id})  # the 50.01 EUR left
    withdrawal = dispute["balance_transactions"][0]
    assert (dispute["currency"], dispute["amount"]) == ("eur", 5_001)
    assert (withdrawal["currency"], withdrawal["amount"], withdrawal["fee"], withdrawal["exchange_rate"]) == (
        "usd",
        -5_426,  # 54.26085 USD
        1_500,
        1.085,
    )
    won = control(sandbox, f"disputes/{dispute['id']}/close", {"outcome": "won"})
    reinstated = won["balance_transactions"][1]
    assert (reinstated["currency"], reinstated["amount"], reinstated["fee"]) == ("usd", 5_426, -1_500)

    balance = client.v1.balance.retrieve()
    assert sorted(row.currency for row in balance.available) == ["jpy", "usd"]
    payouts = {p["currency"]: p for p in control(sandbox, "payouts")}
    assert sorted(payouts) == ["jpy", "usd"]
    usd = paid_out(client, payouts["usd"]["id"])
    assert {t.currency for t in usd} == {"usd"}
    assert sorted(t.source for t in usd if t.type == "charge") == sorted([charge.id, kwd_charge.id])
    assert sum(t.net for t in usd if t.type != "payout") == payouts["usd"]["amount"]
    assert payouts["usd"]["amount"] == (10_851 - txn.fee) + (329 - kwd.fee) - 5_425 - 5_426 - 1_500 + 5_426 + 1_500


def test_settlement_knobs_through_the_config_endpoint_and_half_even_rounding(client, sandbox):
    control(sandbox, "config", {"settlement_currencies": "usd", "exchange_rates": {"eur:usd": "1.5"}})
    assert control(sandbox, "config", method="GET")["settlement_currencies"] == ["usd"]
    # 0.01 EUR x 1.5 = 0.015 USD -> 2 cents (half even); 0.03 EUR -> 0.045 -> 4 cents.
    charges = [
        client.v1.charges.create(params={"amount": amount, "currency": "eur", "source": "tok_visa"})
        for amount in (1, 3, 50)
    ]
    amounts = [client.v1.balance_transactions.retrieve(c.balance_transaction).amount for c in charges]
    assert amounts == [2, 4, 75]
    # Without a configured rate, a rough built-in one: GBP to USD.
    gbp = client.v1.charges.create(params={"amount": 7_900, "currency": "gbp", "source": "tok_visa"})
    txn = client.v1.balance_transactions.retrieve(gbp.balance_transaction)
    assert (txn.currency, txn.amount) == ("usd", 10_000)


# ---- balance adjustments and account fees -----------------------------------------------------------
def test_balance_adjustments_and_account_fees_are_paid_out_by_the_next_payout(client, sandbox):
    paid_invoice(client, 10_000)
    credit = control(sandbox, "balance_adjustments", {"currency": "usd", "amount": 2_500, "description": "Credit"})
    debit = control(sandbox, "balance_adjustments", {"currency": "usd", "amount": -700})
    fee = control(sandbox, "account_fees", {"currency": "usd", "amount": 1_234})
    assert (credit["type"], credit["reporting_category"], credit["amount"], credit["net"], credit["status"]) == (
        "adjustment",
        "other_adjustment",
        2_500,
        2_500,
        "available",
    )
    assert credit["source"].startswith("adj_") and credit["description"] == "Credit"
    assert (debit["amount"], debit["fee"], debit["description"]) == (-700, 0, "Balance adjustment")
    assert (fee["type"], fee["reporting_category"], fee["amount"], fee["fee"], fee["net"], fee["source"]) == (
        "stripe_fee",
        "fee",
        -1_234,
        0,
        -1_234,
        None,
    )
    assert fee["description"] == "Billing - Usage Fee" and fee["fee_details"] == []

    (payout,) = control(sandbox, "payouts")
    assert payout["amount"] == 10_000 - 320 + 2_500 - 700 - 1_234
    contents = client.v1.balance_transactions.list(
        params={"payout": payout["id"], "limit": 100, "expand": ["data.source"]}
    ).data
    assert sorted(t.type for t in contents) == ["adjustment", "adjustment", "charge", "payout", "stripe_fee"]
    sources = {t.type: t.source for t in contents if t.type != "adjustment"}
    assert sources["charge"].object == "charge" and sources["payout"].id == payout["id"]
    assert sources["stripe_fee"] is None
    assert sorted(t.source for t in contents if t.type == "adjustment") == sorted([credit["source"], debit["source"]])

    assert control_error(sandbox, "balance_adjustments", {"currency": "usd", "amount": 0})["param"] == "amount"
    assert control_error(sandbox, "account_fees", {"currency": "usd", "amount": -5})["param"] == "amount"
    assert control_error(sandbox, "account_fees", {"currency": "kwd", "amount": 1_005})["code"] == "invalid_amount"
