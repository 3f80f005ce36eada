"""The scenario generator, run through the real stand-ins over HTTP and read back with the real clients."""

from __future__ import annotations

import datetime as dt
import time
from collections import Counter
from decimal import Decimal

import pytest
import requests
import stripe
from requests_oauthlib import OAuth1
from simple_salesforce import Salesforce

from sync_pipeline.sandbox.runner import running_sandbox
from sync_pipeline.sandbox.scenario import STRIPE_API_VERSION, ScenarioOptions, build_plan, minor_to_decimal

END_DATE = dt.date(2026, 10, 31)
# Ending yesterday (the default), and shorter than the 30 days Stripe keeps events, so every event
# the activity made can still be listed.
OPTIONS = ScenarioOptions(days=25, invoices=40, seed=7)
WINDOW_START, WINDOW_END = OPTIONS.window()


@pytest.fixture(scope="module")
def sandbox():
    with running_sandbox(seed_options=OPTIONS) as running:
        yield running


@pytest.fixture(scope="module")
def stripe_client(sandbox):
    env = sandbox.env()
    return stripe.StripeClient(
        env["STRIPE_API_KEY"], base_addresses={"api": env["STRIPE_API_BASE"]}, stripe_version=STRIPE_API_VERSION
    )


@pytest.fixture(scope="module")
def salesforce(sandbox):
    env = sandbox.env()
    session = requests.Session()
    session.verify = env["SALESFORCE_CA_BUNDLE"]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, replaces `verify`
    return Salesforce(
        instance_url=env["SALESFORCE_INSTANCE_URL"], session_id=env["SALESFORCE_SESSION_ID"], session=session
    )


def all_of(listing) -> list:
    return list(listing.auto_paging_iter())


@pytest.fixture(scope="module")
def invoices(stripe_client):
    return all_of(stripe_client.v1.invoices.list({"limit": 100}))


def test_the_plan_is_a_pure_function_of_the_options():
    options = ScenarioOptions(days=30, invoices=40, seed=7, end_date=END_DATE)
    assert build_plan(options).steps == build_plan(options).steps
    other = build_plan(ScenarioOptions(days=30, invoices=40, seed=8, end_date=END_DATE))
    assert other.steps != build_plan(options).steps


def test_volume_scales_with_the_invoices_option():
    plan = build_plan(ScenarioOptions(invoices=10_000, seed=1, end_date=END_DATE))
    assert 9_500 <= plan.invoice_count() <= 10_500
    assert 1_200 <= len(plan.customers) <= 1_450


def test_invoices_and_customers_in_all_four_currencies(sandbox, stripe_client, invoices):
    by_currency = Counter(invoice.currency for invoice in invoices)
    assert set(by_currency) == {"usd", "eur", "jpy", "kwd"}
    assert by_currency["usd"] == max(by_currency.values())
    assert sum(by_currency.values()) == sum(sandbox.summary.counts["invoices"].values())
    assert dict(by_currency) == sandbox.summary.counts["invoices"]
    customers = all_of(stripe_client.v1.customers.list({"limit": 100}))
    assert len(customers) == sum(sandbox.summary.counts["customers"].values()) >= 5


def test_created_timestamps_spread_over_the_window_and_clock_returns_to_real_time(stripe_client, invoices):
    created = [invoice.created for invoice in invoices]
    assert WINDOW_START <= min(created) and max(created) <= WINDOW_END
    assert len({dt.datetime.fromtimestamp(t, dt.UTC).date() for t in created}) >= 10
    fresh = stripe_client.v1.customers.create({"name": "After seeding"})
    assert abs(fresh.created - time.time()) < 60


def test_kwd_amounts_have_three_decimals_ending_in_zero_and_jpy_none(sandbox, invoices):
    kwd = [invoice for invoice in invoices if invoice.currency == "kwd"]
    amounts = [line.amount for invoice in kwd for line in invoice.lines.data] + [i.total for i in kwd]
    assert amounts and all(amount % 10 == 0 for amount in amounts)
    assert sandbox.summary.totals["invoiced"]["kwd"].as_tuple().exponent == -3
    assert sandbox.summary.totals["invoiced"]["jpy"].as_tuple().exponent == 0
    assert sandbox.summary.totals["invoiced"]["usd"].as_tuple().exponent == -2
    assert minor_to_decimal(15_000, "kwd") == Decimal("15.000")


def test_an_invoice_failed_then_paid_on_a_later_day(stripe_client, invoices):
    recovered = []
    for invoice in invoices:
        if invoice.status != "paid":
            continue
        payments = all_of(stripe_client.v1.invoice_payments.list({"invoice": invoice.id}))
        statuses = Counter(p.status for p in payments)
        if statuses.get("paid") == 1 and len(payments) >= 1 and invoice.attempt_count >= 2:
            recovered.append(invoice)
    assert recovered
    invoice = recovered[0]
    assert invoice.status_transitions.paid_at - invoice.status_transitions.finalized_at >= 2 * 86_400


def test_open_void_and_uncollectible_invoices_exist(invoices):
    statuses = Counter(invoice.status for invoice in invoices)
    assert statuses["paid"] > statuses["open"] >= 1
    assert statuses["void"] >= 1 and statuses["uncollectible"] >= 1


def test_an_upgrade_produced_proration_lines(invoices):
    proration_lines = [
        line
        for invoice in invoices
        for line in invoice.lines.data
        if line.parent and line.parent.subscription_item_details and line.parent.subscription_item_details.proration
    ]
    assert proration_lines
    assert any(line.amount < 0 for line in proration_lines) and any(line.amount > 0 for line in proration_lines)


def test_discounts_and_tax_lines_on_some_invoices(invoices):
    assert any(invoice.discounts for invoice in invoices)
    assert any(invoice.total_taxes for invoice in invoices)
    assert any(not invoice.discounts and not invoice.total_taxes for invoice in invoices)


def test_full_and_partial_refunds(stripe_client):
    refunds = all_of(stripe_client.v1.refunds.list({"limit": 100}))
    charges = {c.id: c for c in all_of(stripe_client.v1.charges.list({"limit": 100}))}
    partial = [r for r in refunds if r.amount < charges[r.charge].amount]
    full = [r for r in refunds if r.amount == charges[r.charge].amount]
    assert partial and full
    assert charges[partial[0].charge].refunded is False
    assert charges[full[0].charge].refunded is True


def test_invoiceless_charges(stripe_client, sandbox):
    intents = all_of(stripe_client.v1.payment_intents.list({"limit": 100}))
    invoice_payment_intents = set()
    for payment in all_of(stripe_client.v1.invoice_payments.list({"limit": 100})):
        invoice_payment_intents.add(payment.payment.payment_intent)
    without_invoice = [pi for pi in intents if pi.id not in invoice_payment_intents and pi.status == "succeeded"]
    assert len(without_invoice) == sum(sandbox.summary.counts["charges_without_invoice"].values()) >= 3


def test_disputes_won_and_lost(stripe_client):
    statuses = Counter(d.status for d in all_of(stripe_client.v1.disputes.list({"limit": 100})))
    assert statuses["won"] >= 1 and statuses["lost"] >= 1


def test_a_payout_is_the_sum_of_its_balance_transactions(stripe_client):
    payouts = all_of(stripe_client.v1.payouts.list({"limit": 100}))
    assert {p.currency for p in payouts} >= {"usd"}
    for payout in payouts:
        included = all_of(stripe_client.v1.balance_transactions.list({"payout": payout.id, "limit": 100}))
        contents = [bt for bt in included if bt.type != "payout"]
        assert contents, payout.id
        assert sum(bt.net for bt in contents) == payout.amount
    fees = [bt.fee for bt in all_of(stripe_client.v1.balance_transactions.list({"limit": 100})) if bt.type == "charge"]
    assert fees and all(fee > 0 for fee in fees)


def test_customers_link_to_netsuite_customers_made_first(sandbox, stripe_client):
    env = sandbox.env()
    auth = OAuth1(
        env["NETSUITE_CONSUMER_KEY"],
        env["NETSUITE_CONSUMER_SECRET"],
        env["NETSUITE_TOKEN_ID"],
        env["NETSUITE_TOKEN_SECRET"],
        realm=env["NETSUITE_ACCOUNT_ID"],
        signature_method="HMAC-SHA256",
    )
    linked = [
        c
        for c in all_of(stripe_client.v1.customers.list({"limit": 100}))
        if c.metadata and "netsuite_customer_id" in c.metadata
    ]
    assert linked
    for customer in linked:
        url = f"{env['NETSUITE_BASE_URL']}/services/rest/record/v1/customer/{customer.metadata['netsuite_customer_id']}"
        response = requests.get(url, auth=auth, timeout=10)
        assert response.status_code == 200
        assert response.json()["companyName"] == customer.name


def test_salesforce_accounts_opportunities_and_line_items(sandbox, stripe_client, salesforce):
    customers = {c.id: c for c in all_of(stripe_client.v1.customers.list({"limit": 100}))}
    accounts = salesforce.query_all("SELECT Id, Name, Stripe_Customer_Id__c FROM Account")["records"]
    billed = [a for a in accounts if a["Stripe_Customer_Id__c"]]
    assert billed and len(billed) < len(accounts)
    for account in billed:
        assert customers[account["Stripe_Customer_Id__c"]].metadata["salesforce_account_id"] == account["Id"]
    won = salesforce.query_all(
        "SELECT Id, AccountId, Amount, CurrencyIsoCode FROM Opportunity WHERE StageName = 'Closed Won'"
    )["records"]
    items = salesforce.query_all("SELECT OpportunityId, Quantity, UnitPrice FROM OpportunityLineItem")["records"]
    with_items = {item["OpportunityId"] for item in items}
    assert won and all(o["Id"] in with_items for o in won)
    billed_ids = {a["Id"] for a in billed}
    assert any(o["AccountId"] in billed_ids for o in won)
    assert any(o["AccountId"] not in billed_ids for o in won)
    subscriptions = {s.id: s for s in all_of(stripe_client.v1.subscriptions.list({"limit": 100}))}
    linked = salesforce.query_all(
        "SELECT Id, Stripe_Subscription_Id__c FROM Opportunity WHERE Stripe_Subscription_Id__c != null"
    )["records"]
    assert linked
    for opportunity in linked:
        subscription = subscriptions[opportunity["Stripe_Subscription_Id__c"]]
        assert subscription.metadata["salesforce_opportunity_id"] == opportunity["Id"]
    stages = Counter(o["StageName"] for o in salesforce.query_all("SELECT StageName FROM Opportunity")["records"])
    assert len(stages) >= 2
    assert salesforce.query("SELECT COUNT() FROM Contact")["totalSize"] == len(accounts)


def test_same_seed_gives_the_same_summary_on_fresh_stand_ins():
    options = ScenarioOptions(days=20, invoices=20, seed=11, end_date=END_DATE)
    with running_sandbox(seed_options=options) as first, running_sandbox(seed_options=options) as second:
        assert first.summary.to_dict() == second.summary.to_dict()
        assert first.summary.counts["invoices"]


def test_the_activity_left_events_as_stripe_would(stripe_client):
    types = Counter(event.type for event in all_of(stripe_client.v1.events.list({"limit": 100})))
    for expected in (
        "customer.created",
        "customer.subscription.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "charge.succeeded",
        "charge.failed",
        "charge.refunded",
        "charge.dispute.created",
        "charge.dispute.closed",
        "payout.created",
        "payout.paid",
    ):
        assert types[expected] >= 1, expected
