"""The scenario's cash cases (`cash_cases`, on by default), seeded through the real stand-ins and read back with
the real stripe SDK: daily payouts, and each case's money in the payout that paid it out."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
import stripe

from sync_pipeline.sandbox.runner import running_sandbox
from sync_pipeline.sandbox.scenario import (
    CASH_CASES,
    CASH_EUR_USD,
    CASH_TRANSACTION_ROLES,
    ScenarioOptions,
    build_plan,
)
from sync_pipeline_tests.sandbox import test_scenario_receivables as receivables

END_DATE = dt.date(2026, 10, 31)
OPTIONS = ScenarioOptions(days=25, invoices=40, seed=9)
CASH_STEPS = ("cash_invoice", "cash_payout_failure", "cash_balance_entry")


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(seed_options=OPTIONS) as running:
        yield running


# The SDK client on this module's sandbox, as the receivables tests make it.
client = receivables.client


@pytest.fixture(scope="module")
def cash(sandbox) -> dict[str, dict[str, str]]:
    """Each cash case's one occurrence: role -> Stripe id."""
    return {case: entries[0] for case, entries in sandbox.summary.cash.items()}


def paid_out(client: stripe.StripeClient, payout_id: str) -> dict[str, stripe.BalanceTransaction]:
    listing = client.v1.balance_transactions.list({"payout": payout_id, "limit": 100})
    return {txn.id: txn for txn in listing.auto_paging_iter()}


def test_cash_is_on_by_default_with_daily_payouts_and_leaves_the_rest_of_the_plan_as_it_was():
    with_cash = build_plan(ScenarioOptions(invoices=300, seed=3, end_date=END_DATE))
    without = build_plan(ScenarioOptions(invoices=300, seed=3, end_date=END_DATE, cash_cases=False))
    assert not [s for s in without.steps if s.kind in CASH_STEPS or s.actor.startswith("cash")]
    assert Counter(s.args["case"] for s in with_cash.steps if s.kind == "cash_invoice") == {
        "refund": 1,
        "dispute_lost": 1,
        "dispute_won": 1,
        "cross_currency": 1,
    }
    payout_days = [s.at for s in with_cash.steps if s.kind == "payout"]
    assert len(payout_days) == 29 and {b - a for a, b in itertools.pairwise(payout_days)} == {86_400}
    assert len([s for s in without.steps if s.kind == "payout"]) < 15

    def rest(plan):
        return [(s.kind, s.ref, s.args) for s in plan.steps if s.kind != "payout" and not s.actor.startswith("cash")]

    assert rest(with_cash) == rest(without)
    assert with_cash.invoice_count() == without.invoice_count() + 4


def test_every_cash_case_happened_with_each_role_and_the_payouts_that_paid_it(sandbox, cash):
    assert set(cash) == set(CASH_CASES)
    for case, roles in CASH_CASES.items():
        assert set(roles) <= set(cash[case]), case
        assert sandbox.summary.counts[f"cash_{case}"]["all"] == 1
        for role in set(roles) & set(CASH_TRANSACTION_ROLES):
            assert cash[case][f"{role}_payout"].startswith("po_"), (case, role)
    assert "cash" in sandbox.summary.to_dict() and "cash payout_failure: 1" in sandbox.summary.to_text()


def test_a_payout_every_morning_in_each_currency_with_money_available(client):
    payouts = list(client.v1.payouts.list({"limit": 100}).auto_paging_iter())
    moments = [dt.datetime.fromtimestamp(p.created, dt.UTC) for p in payouts]
    assert {m.time() for m in moments} == {dt.time(6)}
    per_day = Counter((p.currency, m.date()) for p, m in zip(payouts, moments, strict=True))
    assert max(per_day.values()) == 1
    # A small scenario has days with nothing available in a currency: no payout of it then.
    assert len([key for key in per_day if key[0] == "usd"]) >= 8
    assert {p.currency for p in payouts} == {"usd", "eur", "jpy", "kwd"}
    assert all(p.automatic for p in payouts)


def test_a_refund_lands_in_a_payout(client, cash):
    entry = cash["refund"]
    refund = client.v1.refunds.retrieve(entry["refund"])
    contents = paid_out(client, entry["refund_balance_transaction_payout"])
    txn = contents[entry["refund_balance_transaction"]]
    assert (txn.type, txn.reporting_category, txn.source, txn.amount) == ("refund", "refund", refund.id, -refund.amount)
    assert entry["balance_transaction"] in paid_out(client, entry["balance_transaction_payout"])


def test_disputes_withdraw_and_reinstate_in_payouts(client, cash):
    lost, won = cash["dispute_lost"], cash["dispute_won"]
    assert client.v1.disputes.retrieve(lost["dispute"]).status == "lost"
    assert client.v1.disputes.retrieve(won["dispute"]).status == "won"
    for entry in (lost, won):
        withdrawal = paid_out(client, entry["withdrawal_payout"])[entry["withdrawal"]]
        assert (withdrawal.type, withdrawal.reporting_category, withdrawal.source) == (
            "adjustment",
            "dispute",
            entry["dispute"],
        )
        assert withdrawal.amount < 0 and withdrawal.fee_details[0].description == "Dispute fee"
    reinstatement = paid_out(client, won["reinstatement_payout"])[won["reinstatement"]]
    assert (reinstatement.type, reinstatement.reporting_category) == ("adjustment", "dispute_reversal")
    withdrawn_in = client.v1.payouts.retrieve(won["withdrawal_payout"])
    assert client.v1.payouts.retrieve(won["reinstatement_payout"]).created > withdrawn_in.created


def test_a_paid_payout_failed_and_its_money_was_paid_out_again(client, cash):
    entry = cash["payout_failure"]
    failed = client.v1.payouts.retrieve(entry["payout"], {"expand": ["failure_balance_transaction"]})
    assert (failed.status, failed.failure_code, failed.currency) == ("failed", "account_closed", "usd")
    reversal = failed.failure_balance_transaction
    assert (reversal.id, reversal.type, reversal.reporting_category) == (
        entry["failure_balance_transaction"],
        "payout_failure",
        "payout_reversal",
    )
    assert (reversal.amount, reversal.source) == (failed.amount, failed.id)
    events = [e.type for e in client.v1.events.list({"limit": 100}).auto_paging_iter() if e.data.object.id == failed.id]
    assert {"payout.paid", "payout.failed"} <= set(events)
    again = client.v1.payouts.retrieve(entry["failure_balance_transaction_payout"])
    assert again.status != "failed" and again.created > reversal.created
    assert reversal.id in paid_out(client, again.id) and reversal.id not in paid_out(client, failed.id)


def test_a_eur_invoice_settled_in_usd(client, cash):
    entry = cash["cross_currency"]
    invoice = client.v1.invoices.retrieve(entry["invoice"])
    charge = client.v1.charges.retrieve(entry["charge"])
    assert invoice.currency == charge.currency == "eur" and invoice.status == "paid"
    txn = paid_out(client, entry["balance_transaction_payout"])[entry["balance_transaction"]]
    expected = int((Decimal(charge.amount) * Decimal(CASH_EUR_USD)).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
    assert (txn.currency, txn.amount, txn.exchange_rate, txn.source) == ("usd", expected, 1.085, charge.id)
    refund = paid_out(client, entry["refund_balance_transaction_payout"])[entry["refund_balance_transaction"]]
    assert (refund.currency, refund.exchange_rate) == ("usd", 1.085) and refund.amount < 0
    assert client.v1.payouts.retrieve(entry["balance_transaction_payout"]).currency == "usd"
    # Every other EUR charge settled in EUR.
    eur_charges = [
        c
        for c in client.v1.charges.list({"limit": 100}).auto_paging_iter()
        if c.currency == "eur" and c.balance_transaction
    ]
    settled = Counter(client.v1.balance_transactions.retrieve(c.balance_transaction).currency for c in eur_charges)
    assert settled["usd"] == 1 and settled["eur"] >= 1


def test_a_balance_adjustment_and_an_account_fee_are_paid_out(client, cash):
    adjustment, fee = cash["balance_adjustment"], cash["account_fee"]
    txn = paid_out(client, adjustment["balance_transaction_payout"])[adjustment["balance_transaction"]]
    assert (txn.type, txn.reporting_category, txn.source) == ("adjustment", "other_adjustment", adjustment["source"])
    assert txn.amount < 0 and txn.source.startswith("adj_")
    txn = paid_out(client, fee["balance_transaction_payout"])[fee["balance_transaction"]]
    assert (txn.type, txn.reporting_category, txn.source, txn.fee) == ("stripe_fee", "fee", None, 0)
    assert txn.amount < 0 and txn.description == "Billing - Usage Fee"
