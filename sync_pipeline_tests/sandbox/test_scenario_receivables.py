"""The scenario's receivables cases (`receivables_cases=True`), seeded through the real stand-ins and read
back with the real stripe SDK: each case's Stripe fields show it as Stripe would."""

from __future__ import annotations

import datetime as dt
from collections import Counter

import pytest
import stripe

from sync_pipeline.sandbox.runner import running_sandbox
from sync_pipeline.sandbox.scenario import (
    RECEIVABLES_SHARES,
    STRIPE_API_VERSION,
    ScenarioOptions,
    build_plan,
)

END_DATE = dt.date(2026, 10, 31)
OPTIONS = ScenarioOptions(days=25, invoices=60, seed=5, receivables_cases=True)
CASE_STEPS = ("case_invoice", "case_pay", "case_credit_note", "case_void_credit_note", "case_balance")


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(seed_options=OPTIONS) as running:
        yield running


@pytest.fixture(scope="module")
def client(sandbox) -> stripe.StripeClient:
    env = sandbox.env()
    return stripe.StripeClient(
        env["STRIPE_API_KEY"], base_addresses={"api": env["STRIPE_API_BASE"]}, stripe_version=STRIPE_API_VERSION
    )


@pytest.fixture(scope="module")
def cases(sandbox) -> dict[str, list[dict[str, str]]]:
    return sandbox.summary.receivables


def test_the_cases_are_off_by_default_and_scale_by_small_fixed_shares():
    plain = build_plan(ScenarioOptions(invoices=300, seed=3, end_date=END_DATE))
    assert not [s for s in plain.steps if s.kind.startswith("case_")]
    plan = build_plan(ScenarioOptions(invoices=300, seed=3, end_date=END_DATE, receivables_cases=True))
    per_case = Counter(s.args["case"] for s in plan.steps if s.kind == "case_invoice")
    assert set(per_case) == set(RECEIVABLES_SHARES)
    assert per_case["credit_note_open_invoice"] == 3 and per_case["credit_note_voided"] >= 1
    assert 285 <= plan.invoice_count() <= 315
    # The cases draw from a generator of their own: the customers and subscriptions planned before them stay the
    # same (the one-off invoices after them shrink by the cases' invoices, so those differ).
    kept = ("customer", "subscribe", "renew", "upgrade")
    assert [(s.ref, s.args) for s in plain.steps if s.kind in kept] == [
        (s.ref, s.args) for s in plan.steps if s.kind in kept and not s.ref.startswith("rcv")
    ]
    assert build_plan(ScenarioOptions(invoices=60, seed=3, end_date=END_DATE, receivables_cases=True)).steps == (
        build_plan(ScenarioOptions(invoices=60, seed=3, end_date=END_DATE, receivables_cases=True)).steps
    )


def test_every_case_happened_and_is_counted(sandbox, cases):
    assert set(cases) == set(RECEIVABLES_SHARES)
    for case, entries in cases.items():
        assert entries and sandbox.summary.counts[f"receivables_{case}"]["all"] == len(entries), case


def test_a_credit_note_on_an_open_invoice_carries_its_share_of_discount_and_tax(client, cases):
    entry = cases["credit_note_open_invoice"][0]
    note = client.v1.credit_notes.retrieve(entry["credit_note"])
    invoice = client.v1.invoices.retrieve(entry["invoice"])
    assert (note.type, note.pre_payment_amount, note.post_payment_amount) == ("pre_payment", note.total, 0)
    assert all(line.invoice_line_item and line.discount_amounts[0].amount > 0 for line in note.lines.data)
    assert all(line.taxes[0].amount > 0 and line.taxes[0].tax_behavior == "exclusive" for line in note.lines.data)
    assert note.discount_amount > 0 and note.total_taxes
    assert invoice.status == "paid" and invoice.pre_payment_credit_notes_amount == note.total
    assert invoice.amount_paid == invoice.total - note.total


def test_a_paid_invoice_credited_three_ways_and_one_refunded_in_full(client, cases):
    entry = cases["credit_note_paid_split"][0]
    note = client.v1.credit_notes.retrieve(entry["credit_note"])
    assert note.type == "post_payment" and note.out_of_band_amount > 0
    refunded = sum(r.amount_refunded for r in note.refunds)
    credit = client.v1.customers.balance_transactions.retrieve(note.customer, note.customer_balance_transaction)
    assert (credit.type, credit.credit_note) == ("credit_note", note.id)
    assert refunded + -credit.amount + note.out_of_band_amount == note.total
    assert client.v1.refunds.retrieve(note.refunds[0].refund).amount == refunded
    full = client.v1.credit_notes.retrieve(cases["credit_note_full_refund"][0]["credit_note"])
    invoice = client.v1.invoices.retrieve(full.invoice)
    assert full.total == invoice.total == invoice.post_payment_credit_notes_amount
    assert sum(r.amount_refunded for r in full.refunds) == invoice.amount_paid
    refund = client.v1.refunds.retrieve(full.refunds[0].refund)
    assert client.v1.charges.retrieve(refund.charge).refunded is True


def test_a_voided_credit_note_leaves_the_invoice_to_be_paid_in_full(client, cases):
    entry = cases["credit_note_voided"][0]
    note = client.v1.credit_notes.retrieve(entry["voided_credit_note"])
    invoice = client.v1.invoices.retrieve(entry["invoice"])
    assert note.status == "void" and note.voided_at is not None
    assert (invoice.status, invoice.amount_paid, invoice.pre_payment_credit_notes_amount) == ("paid", invoice.total, 0)


def test_customer_balances_credit_debit_and_a_negative_invoice(client, cases):
    applied = [client.v1.invoices.retrieve(e["invoice"]) for e in cases["balance_credit_applied"]]
    assert all(i.starting_balance < 0 and i.amount_due < i.total for i in applied)
    assert any(i.amount_due == 0 and i.amount_paid == 0 and i.status == "paid" for i in applied)  # wholly
    assert any(0 < i.amount_due == i.amount_paid for i in applied)  # partly
    negative = client.v1.invoices.retrieve(cases["negative_invoice"][0]["invoice"])
    assert negative.total < 0 and negative.amount_due == 0 and negative.ending_balance == negative.total
    debit = client.v1.invoices.retrieve(cases["balance_debit_applied"][0]["invoice"])
    assert debit.starting_balance > 0 and debit.amount_due == debit.total + debit.starting_balance
    types = {
        t.type
        for e in cases["balance_credit_applied"] + cases["balance_debit_applied"] + cases["negative_invoice"]
        for t in client.v1.customers.balance_transactions.list(e["customer"]).data
    }
    assert {"adjustment", "applied_to_invoice", "credit_note"} <= types


def test_out_of_band_partial_and_uncollectible_payments(client, cases):
    oob = client.v1.invoices.retrieve(cases["paid_out_of_band"][0]["invoice"])
    assert (oob.status, oob.amount_paid, oob.attempt_count) == ("paid", oob.total, 0)
    assert not client.v1.invoice_payments.list(params={"invoice": oob.id, "status": "paid"}).data
    partial = cases["partial_payment_refunded"][0]
    invoice = client.v1.invoices.retrieve(partial["invoice"])
    payments = client.v1.invoice_payments.list(params={"invoice": invoice.id, "status": "paid"}).data
    assert invoice.status == "paid" and sorted(p.is_default for p in payments) == [False, True]
    assert sum(p.amount_paid for p in payments) == invoice.amount_paid == invoice.total
    refund = client.v1.refunds.retrieve(partial["refund"])
    assert refund.payment_intent == partial["partial_payment_intent"]
    recovered = client.v1.invoices.retrieve(cases["uncollectible_then_paid"][0]["invoice"])
    assert recovered.status == "paid" and recovered.status_transitions.marked_uncollectible_at is not None
    assert recovered.status_transitions.paid_at > recovered.status_transitions.marked_uncollectible_at


def test_backdated_two_currency_and_kwd_invoices(client, cases):
    backdated = client.v1.invoices.retrieve(cases["backdated"][0]["invoice"])
    assert backdated.effective_at < backdated.status_transitions.finalized_at
    both = cases["two_currencies_same_day"][0]
    usd, eur = (client.v1.invoices.retrieve(both[f"invoice_{c}"]) for c in ("usd", "eur"))
    assert (usd.currency, eur.currency, usd.customer) == ("usd", "eur", eur.customer)
    days = {dt.datetime.fromtimestamp(i.status_transitions.finalized_at, dt.UTC).date() for i in (usd, eur)}
    assert len(days) == 1 and usd.status == eur.status == "paid"
    kwd = client.v1.invoices.retrieve(cases["kwd_coupon_and_tax"][0]["invoice"])
    assert kwd.currency == "kwd" and kwd.discounts and kwd.total_taxes
    amounts = [kwd.total, kwd.amount_paid, kwd.total_taxes[0].amount, kwd.total_discount_amounts[0].amount]
    amounts += [d.amount for line in kwd.lines.data for d in line.discount_amounts]
    amounts += [t.amount for line in kwd.lines.data for t in line.taxes]
    assert all(amount % 10 == 0 for amount in amounts), amounts
