"""The third leg (issue 13): billed Closed-Won deals read back from Salesforce, Stripe and NetSuite.

Deals are billed through the real flow (the `salesforce` group in Dagster, the Salesforce, Stripe and NetSuite
stand-ins over HTTP), their invoices' day is synced to NetSuite, and `deal_reconciliation` compares the three;
an opportunity edited after billing, and a NetSuite invoice edited behind the pipeline's back, are red checks
naming the opportunity, the field and both amounts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import requests

from sync_pipeline.reconcile_cli import run_reconcile
from sync_pipeline_tests.e2e import test_salesforce_flows as flows
from sync_pipeline_tests.e2e.harness import step_failures
from sync_pipeline_tests.e2e.test_salesforce_flows import World

pytestmark = pytest.mark.e2e
world = flows.world  # the Salesforce flows' fixture: the stand-ins, a product catalogue and its price mapping

ASSET = "deal_reconciliation"
CHECK = "deals_match_stripe_and_netsuite"


def _reconciled(world: World):
    result = world.run()
    assert result.success, step_failures(result)
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK]
    rows = result.output_for_node(ASSET).to_dict("records")
    return check, rows, result.asset_materializations_for_node(ASSET)[0].metadata


def _sync_to_netsuite(world: World, *customers: str) -> None:
    """The billed day into NetSuite; the customers get the email NetSuite requires (billing sets none)."""
    for customer in customers:
        world.box.client.v1.customers.update(customer, {"email": f"billing@{customer.lower()}.example.test"})
    result = world.box.materialize()
    assert result.success, step_failures(result)
    assert {f"stripe-{c}" for c in customers} <= set(world.box.netsuite("customer"))


def test_billed_deals_match_until_the_opportunity_or_netsuite_changes(world):
    # A plan with an onboarding fee on its first invoice, and a one-off invoice.
    plan = world.deal("Three ways", [("pro", 2, "1200.00"), ("onboarding", 1, "1200.00")])
    one_off = world.deal("One off", [("onboarding", 1, "1200.00")])

    # Billed and written back; the invoices' day is not in NetSuite yet: waiting, not a difference.
    check, rows, metadata = _reconciled(world)
    assert check.passed, check.metadata["first_differences"].value
    assert metadata["deals_compared"].value == 2 and metadata["awaiting_netsuite"].value == 2

    [subscription] = world.billed("subscription", plan)
    [invoice] = world.billed("invoice", one_off)
    first = world.box.client.v1.invoices.retrieve(subscription["latest_invoice"])
    _sync_to_netsuite(world, subscription["customer"], invoice["customer"])

    check, rows, metadata = _reconciled(world)
    assert check.passed, check.metadata["first_differences"].value
    assert rows == []
    assert metadata["deals_compared"].value == 2 and metadata["awaiting_netsuite"].value == 0
    assert world.opportunity(one_off)["NetSuite_Invoice_Id__c"]  # the write-back names the NetSuite invoice

    # The plan's line is changed in Salesforce after billing: its Amount (2400.00) is no longer what Stripe billed.
    line = next(
        li
        for li in world.salesforce.state.find("OpportunityLineItem", OpportunityId=plan)
        if li["Product2Id"] == world.products["pro"]
    )
    world.salesforce.state.update("OpportunityLineItem", line["Id"], {"TotalPrice": Decimal("1500.00")})
    # Someone edits the one-off invoice in NetSuite.
    world.box.edit_in_netsuite(
        "invoice",
        f"stripe-{invoice['id']}",
        {"item": {"items": [{"item": {"id": "100"}, "quantity": 1, "amount": Decimal("1150.00")}]}},
    )

    check, rows, metadata = _reconciled(world)

    assert not check.passed
    assert metadata["deals_differing"].value == 2
    assert {(r["opportunity"], r["field"]): r for r in rows} == {
        (plan, "amount: opportunity vs Stripe"): {
            "opportunity": plan,
            "field": "amount: opportunity vs Stripe",
            "currency": "USD",
            "salesforce": "2700.00",
            "stripe": "2400.00",
            "netsuite": "",
            "difference": "300.00",
            "stripe_id": subscription["id"],
        },
        (one_off, "amount: Stripe vs NetSuite"): {
            "opportunity": one_off,
            "field": "amount: Stripe vs NetSuite",
            "currency": "USD",
            "salesforce": "",
            "stripe": "1200.00",
            "netsuite": "1150.00",
            "difference": "50.00",
            "stripe_id": invoice["id"],
        },
    }
    assert first.total == 240000  # what the plan's deal was billed: Stripe itself unchanged
    # The check names the opportunity, the field and both amounts, as exact text.
    assert f"{plan} amount: opportunity vs Stripe: Salesforce 2700.00, Stripe 2400.00" in check.description
    assert f"{one_off} amount: Stripe vs NetSuite" in check.description and "NetSuite 1150.00" in check.description
    table = check.metadata["first_differences"].value
    assert "| 2700.00 " in table and "| 2400.00 " in table and "| 1150.00 " in table
    # The changed deal is Needs review in Salesforce: that is not a status difference.
    assert world.opportunity(plan)["Billing_Status__c"] == "Needs review"


def test_a_status_salesforce_no_longer_shows_is_a_difference(world):
    deal = world.deal("Paid quietly", [("onboarding", 1, "1200.00")])
    world.run()
    [invoice] = world.billed("invoice", deal)
    # Paid in Stripe; the write-back has not run since, and someone set the status by hand.
    world.box.client.v1.invoices.pay(invoice["id"], {"payment_method": "pm_card_visa"})
    world.salesforce.state.update("Opportunity", deal, {"Billing_Status__c": "Past Due"})

    result = world.run("deal_reconciliation")

    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    [row] = result.output_for_node(ASSET).to_dict("records")
    assert (row["opportunity"], row["field"], row["salesforce"], row["stripe"]) == (
        deal,
        "billing status",
        "Past Due",
        "Paid",
    )
    # The same from a shell: `sync-pipeline reconcile` adds the deals when Salesforce is configured, exit 1.
    out = io.StringIO()
    day = dt.date.today().isoformat()
    args = argparse.Namespace(start=day, end=day, currency=None, format="json", account=None)
    assert run_reconcile(args, out) == 1
    assert [(d["opportunity"], d["field"]) for d in json.loads(out.getvalue())["deals_differing"]] == [
        (deal, "billing status")
    ]


def test_a_renewed_subscription_is_compared_with_the_first_invoice_that_billed_the_deal(world):
    deal = world.deal("Renewing", [("pro", 1, "600.00"), ("onboarding", 1, "1200.00")])
    world.run()
    [subscription] = world.billed("subscription", deal)
    first = subscription["latest_invoice"]
    advance = f"{world.box.stripe_url}/_sandbox/subscriptions/{subscription['id']}/advance"
    requests.post(advance, timeout=10).raise_for_status()  # the renewal bills 600.00, without the fee

    check, rows, metadata = _reconciled(world)

    # Salesforce now names the renewal invoice; the deal's 1800.00 is still what its first invoice billed.
    renewal = world.opportunity(deal)["Stripe_Invoice_Id__c"]
    assert renewal != first and world.box.client.v1.invoices.retrieve(renewal).total == 60000
    assert check.passed, check.metadata["first_differences"].value
    assert rows == [] and metadata["deals_compared"].value == 1
