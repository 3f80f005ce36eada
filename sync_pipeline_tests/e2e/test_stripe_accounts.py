"""Two Stripe accounts (a US and an EU entity) synced side by side into one NetSuite account.

Both accounts live behind one Stripe stand-in address (the API key says whose data it is) and are seeded alike,
so they hold objects with the same ids: the product `prod_pro`, and, made in the same order, the same customer,
invoice and charge ids. Each account's job runs through the real Dagster instance, with its own Stripe key and
subsidiary, into the one NetSuite stand-in.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import stripe

from sync_pipeline.assets.netsuite import NETSUITE_POOL
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.stripe.accounts import start_stripe_accounts
from sync_pipeline_tests.e2e.harness import DAY, Sandbox, amount, at

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# The US entity books to subsidiary 1 (the top-level `subsidiary:`), the EU entity to Europe GmbH.
SUBSIDIARY = {"us": "1", "eu": "2"}
NETSUITE_CURRENCY = {"usd": "1", "eur": "2"}
# Per account: currency, and the unit price of prod_pro and the quantities of the day's paid invoices.
ACTIVITY = {"us": ("usd", 12_345, [1, 3]), "eu": ("eur", 9_910, [2, 1])}


@pytest.fixture
def two_accounts(tmp_path, monkeypatch):
    with start_stripe_accounts(["us", "eu"]) as stripe_accounts, start_netsuite() as netsuite:
        home = tmp_path / "dagster_home"
        home.mkdir()
        mapping = tmp_path / "field_mapping.yaml"
        mapping.write_text((ROOT / "field_mapping.yaml").read_text() + '\nstripe_accounts:\n  eu: {subsidiary: "2"}\n')
        for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "SYNC_EVENT_SOURCE"):
            monkeypatch.delenv(name, raising=False)
        env = {
            **netsuite.env(),
            "SYNC_STRIPE_ACCOUNTS": "us,eu",
            "STRIPE_API_BASE": stripe_accounts.url,
            "STRIPE_API_KEY_US": stripe_accounts["us"].api_key,
            "STRIPE_API_KEY_EU": stripe_accounts["eu"].api_key,
            "DAGSTER_HOME": str(home),
            "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
            "SYNC_FIELD_MAPPING": str(mapping),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        boxes = {
            name: Sandbox(
                account.url,
                netsuite.url,
                stripe.StripeClient(account.api_key, base_addresses={"api": stripe_accounts.url}),
                home,
            )
            for name, account in stripe_accounts.accounts.items()
        }
        yield boxes


def _seed_day(box: Sandbox, currency: str, unit_amount: int, quantities: list[int]) -> list[str]:
    """prod_pro (the same custom id in every account), one customer, and a paid invoice per quantity."""
    box.clock(at(DAY, 10))
    product = box.client.v1.products.create(
        {"id": "prod_pro", "name": "Pro plan", "default_price_data": {"currency": currency, "unit_amount": unit_amount}}
    )
    customer = box.customer("Entity customer", currency)
    invoices = []
    for quantity in quantities:
        box.client.v1.invoice_items.create({"customer": customer, "price": product.default_price, "quantity": quantity})
        invoice = box.client.v1.invoices.create(
            {"customer": customer, "currency": currency, "pending_invoice_items_behavior": "include"}
        )
        box.client.v1.invoices.finalize_invoice(invoice.id)
        invoices.append(box.client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"}).id)
    box.clock(None)
    return invoices


def _run(job_name: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from sync_pipeline.definitions import defs

    return defs().resolve_job_def(job_name).execute_in_process(partition_key=DAY.isoformat(), instance=instance)


def test_two_accounts_sync_side_by_side_without_colliding(two_accounts):
    invoices = {name: _seed_day(box, *ACTIVITY[name]) for name, box in two_accounts.items()}
    # Seeded alike, the two accounts hold the very same ids: only the external-id rule keeps them apart.
    assert invoices["us"] == invoices["eu"]
    box = two_accounts["us"]
    instance = dg.DagsterInstance.get()

    results = {
        name: _run(job, instance) for name, job in (("us", "stripe_to_netsuite"), ("eu", "stripe_eu_to_netsuite"))
    }

    assert all(r.success for r in results.values())
    prefix = {"us": "stripe-", "eu": "stripe-eu-"}
    ns_invoices, ns_payments, ns_customers = (box.netsuite(t) for t in ("invoice", "customerPayment", "customer"))
    # Exactly once each: two invoices and two payments per account, one customer per account.
    assert len(ns_invoices) == 4 and len(ns_payments) == 4 and len(ns_customers) == 2
    for name, (currency, unit, quantities) in ACTIVITY.items():
        customer = ns_customers[f"{prefix[name]}{_customer_of(two_accounts[name], invoices[name][0])}"]
        assert customer["subsidiary"]["id"] == SUBSIDIARY[name]
        for invoice_id, quantity in zip(invoices[name], quantities, strict=True):
            invoice = ns_invoices[f"{prefix[name]}{invoice_id}"]
            expected = Decimal(unit * quantity) / 100
            assert amount(invoice) == expected, (name, invoice_id)
            assert amount(invoice, "amountRemaining") == 0
            assert invoice["subsidiary"]["id"] == SUBSIDIARY[name]
            assert invoice["entity"]["id"] == customer["id"]
            assert invoice["currency"]["id"] == NETSUITE_CURRENCY[currency]
            payments = [p for eid, p in ns_payments.items() if eid.startswith(prefix[name]) and _applies(p, invoice)]
            assert [amount(p, "payment") for p in payments] == [expected]
        # The account's own checks pass for its own day: totals, duplicates, required fields, reconciliations.
        evaluations = results[name].get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations), [
            (e.asset_key.to_user_string(), e.check_name, e.metadata) for e in evaluations if not e.passed
        ]
        assert {e.asset_key.path[0] == "eu" for e in evaluations} == {name == "eu"}
    # Every external id is one account's: the EU records all carry the account's segment, the US ones none.
    for record_type in ("invoice", "customerPayment", "customer"):
        for external_id in box.netsuite(record_type):
            assert external_id.startswith(("stripe-eu-", "stripe-")), external_id
    ledger = Ledger(os.environ["SYNC_DATABASE_URL"])
    assert {e.external_id for e in ledger.for_account("eu").entries()} == {
        e for t in ("invoice", "customerPayment", "customer") for e in box.netsuite(t) if e.startswith("stripe-eu-")
    }
    assert not ledger.exceptions(open_only=True)

    # One pool for the one NetSuite account: every NetSuite-writing step of both accounts claims it.
    from sync_pipeline.definitions import defs

    pools = {
        (job, node.name): node.definition.pool
        for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite")
        for node in defs().resolve_job_def(job).graph.nodes
        if node.definition.pool
    }
    for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite"):
        assert {(job, "netsuite_invoices"), (job, "netsuite_deposits"), (job, "netsuite_customers")} <= set(pools)
    assert set(pools.values()) == {NETSUITE_POOL}

    # A re-run of both accounts writes nothing.
    writes = box.netsuite_writes()
    assert all(_run(job, instance).success for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite"))
    assert box.netsuite_writes() == writes


def _customer_of(box: Sandbox, invoice_id: str) -> str:
    return box.client.v1.invoices.retrieve(invoice_id).customer


def _applies(payment: dict, invoice: dict) -> bool:
    return any(line["doc"]["id"] == invoice["id"] for line in payment["apply"]["items"])
