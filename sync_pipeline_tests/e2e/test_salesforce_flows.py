"""Closed-Won opportunities billed in Stripe and written back to Salesforce, against the stand-ins over HTTP.

Salesforce (simple-salesforce over TLS), Stripe (the SDK) and NetSuite stand-ins; real Dagster
materializations of the `salesforce` group; assertions on what each system holds afterwards.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import requests
import yaml

from sync_pipeline import cli
from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline.resources.salesforce import SESSION_ID_EXPIRED_MESSAGE, SalesforceResource, SalesforceSessionExpired
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.salesforce_to_stripe_sensor import build_salesforce_to_stripe_sensor
from sync_pipeline.sandbox.salesforce import SalesforceSandbox, start_salesforce
from sync_pipeline.schedules import build_salesforce_to_stripe_schedule
from sync_pipeline.writers.salesforce_writeback import write_back
from sync_pipeline.writers.stripe_billing import bill_opportunities, read_opportunities
from sync_pipeline_tests.e2e.harness import DAY, Sandbox, at, running_sandbox

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BILLING = "stripe_billing_from_opportunities"


@dataclass
class World:
    box: Sandbox
    salesforce: SalesforceSandbox
    mapping_path: Path
    database_url: str
    prices: dict[str, str]  # name -> Stripe price id
    products: dict[str, str]  # name -> Salesforce Product2 id

    # -- Salesforce -------------------------------------------------------------------------------
    def deal(
        self,
        name: str,
        lines: list[tuple[str, int, str]],
        currency: str = "USD",
        account: str | None = None,
        won: bool = True,
        at: dt.datetime | None = None,
    ) -> str:
        """An opportunity with its account and products, closed won unless `won=False` (all written `at`)."""
        state = self.salesforce.state
        account_id = account or state.insert(
            "Account",
            {
                "Name": f"{name} Corp",
                "BillingStreet": "1 Main St",
                "BillingCity": "Springfield",
                "BillingPostalCode": "12345",
                "BillingCountry": "US",
            },
            at=at,
        )
        opportunity = state.insert(
            "Opportunity",
            {
                "Name": name,
                "AccountId": account_id,
                "StageName": "Negotiation/Review",
                "CloseDate": DAY.isoformat(),
                "CurrencyIsoCode": currency,
            },
            at=at,
        )
        for product, quantity, total in lines:
            state.insert(
                "OpportunityLineItem",
                {
                    "OpportunityId": opportunity,
                    "Product2Id": self.products[product],
                    "Quantity": quantity,
                    "TotalPrice": Decimal(total),
                },
                at=at,
            )
        if won:
            state.update("Opportunity", opportunity, {"StageName": "Closed Won"}, at=at)
        return opportunity

    def opportunity(self, opportunity_id: str) -> dict:
        return self.salesforce.state.get("Opportunity", opportunity_id)

    def account_of(self, opportunity_id: str) -> dict:
        return self.salesforce.state.get("Account", self.opportunity(opportunity_id)["AccountId"])

    # -- Stripe -----------------------------------------------------------------------------------
    def stripe_records(self, kind: str) -> list[dict]:
        body = requests.get(f"{self.box.stripe_url}/_sandbox/records/{kind}", timeout=10).json()
        return body["data"] if isinstance(body, dict) and "data" in body else body

    def billed(self, kind: str, opportunity_id: str) -> list[dict]:
        return [
            o
            for o in self.stripe_records(kind)
            if (o.get("metadata") or {}).get("salesforce_opportunity_id") == opportunity_id
        ]

    def map_product(self, product: str) -> None:
        data = yaml.safe_load(self.mapping_path.read_text())
        data["salesforce"]["product_prices"][self.products[product]] = self.prices[product]
        self.mapping_path.write_text(yaml.safe_dump(data))

    # -- the pipeline -----------------------------------------------------------------------------
    def run(
        self, *assets: str, raise_on_error: bool = True, snapshots: Path | None = None
    ) -> dg.ExecuteInProcessResult:
        from sync_pipeline.definitions import SALESFORCE_ASSETS, build_resources
        from sync_pipeline.io_managers import ParquetIOManager

        resources = build_resources()
        if snapshots is not None:
            resources["io_manager"] = ParquetIOManager(base_dir=str(snapshots))
        selection = list(assets) or None
        return dg.materialize(
            SALESFORCE_ASSETS, selection=selection, resources=resources, raise_on_error=raise_on_error
        )

    def ledger(self) -> Ledger:
        return Ledger(self.database_url)

    def exceptions(self) -> list[dict]:
        return self.ledger().open_exceptions()


def _mapping_file(tmp_path: Path, product_prices: dict[str, str]) -> Path:
    data = yaml.safe_load((ROOT / "field_mapping.yaml").read_text())
    data["salesforce"] = {"product_prices": dict(product_prices), "bill_closed_won_from": DAY.isoformat()}
    path = tmp_path / "field_mapping.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _catalogue(box: Sandbox) -> dict[str, str]:
    # The ids the example field_mapping.yaml maps to NetSuite items (it holds back products it does not map).
    pro = box.client.v1.products.create({"id": "prod_pro", "name": "Pro plan"})
    onboarding = box.client.v1.products.create({"id": "prod_onboarding", "name": "Onboarding"})
    return {
        "pro": box.client.v1.prices.create(
            {"product": pro.id, "currency": "usd", "unit_amount": 60000, "recurring": {"interval": "month"}}
        ).id,
        "onboarding": box.client.v1.prices.create(
            {"product": onboarding.id, "currency": "usd", "unit_amount": 120000}
        ).id,
        "training": box.client.v1.prices.create({"product": onboarding.id, "currency": "usd", "unit_amount": 50000}).id,
    }


@pytest.fixture
def world(tmp_path, monkeypatch) -> Iterator[World]:
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    salesforce = start_salesforce(query_batch_size=2)  # SOQL paging on every read
    try:
        with running_sandbox(tmp_path, monkeypatch, database_url=database_url) as box:
            for name, value in salesforce.env().items():
                monkeypatch.setenv(name, value)
            box.clock(at(DAY, 10))  # Stripe objects land in a past, complete daily partition
            prices = _catalogue(box)
            products = {
                name: salesforce.state.insert("Product2", {"Name": name.title(), "IsActive": True})
                for name in ("pro", "onboarding", "training")
            }
            mapped = {products[n]: prices[n] for n in ("pro", "onboarding")}  # training: not mapped yet
            path = _mapping_file(tmp_path, mapped)
            monkeypatch.setenv("SYNC_FIELD_MAPPING", str(path))
            Ledger(database_url)  # the ledger's tables exist before any run, as after `sync-pipeline` setup
            yield World(box, salesforce, path, database_url, prices, products)
    finally:
        salesforce.stop()


def test_closed_won_subscription_and_invoice_are_billed_once_across_repeated_runs(world):
    subscription_deal = world.deal("Acme", [("pro", 2, "1200.00")])
    invoice_deal = world.deal("Globex", [("onboarding", 1, "1200.00")])
    open_deal = world.deal("Initech", [("pro", 1, "600.00")], won=False)

    first = world.run()
    second = world.run()

    assert first.success and second.success
    assert first.asset_materializations_for_node("salesforce_accounts")[0].metadata["accounts"].value == 3
    [billed_once] = [e for e in first.get_asset_check_evaluations() if e.check_name == "billed_once"]
    assert billed_once.check_name == "billed_once" and billed_once.passed
    assert billed_once.metadata["checked"].value == 2
    subscriptions = world.billed("subscription", subscription_deal)
    assert len(subscriptions) == 1
    assert subscriptions[0]["items"]["data"][0]["quantity"] == 2
    invoices = world.billed("invoice", invoice_deal)
    assert len(invoices) == 1 and invoices[0]["status"] == "open" and invoices[0]["total"] == 120000
    assert world.billed("subscription", open_deal) == [] and world.billed("invoice", open_deal) == []
    customers = [c for c in world.stripe_records("customer") if (c.get("metadata") or {}).get("salesforce_account_id")]
    assert sorted(c["name"] for c in customers) == ["Acme Corp", "Globex Corp"]
    assert customers[0]["address"]["city"] == "Springfield"
    # Write-back: Stripe ids on the account and opportunity, the status of the invoice.
    assert world.opportunity(subscription_deal)["Stripe_Subscription_Id__c"] == subscriptions[0]["id"]
    assert world.opportunity(invoice_deal)["Stripe_Invoice_Id__c"] == invoices[0]["id"]
    assert world.opportunity(invoice_deal)["Billing_Status__c"] == "Invoiced"
    assert world.account_of(invoice_deal)["Stripe_Customer_Id__c"] == invoices[0]["customer"]
    second_billing = second.asset_materializations_for_node(BILLING)[0].metadata
    assert second_billing["stripe_writes"].value == 0
    assert (
        second.asset_materializations_for_node("salesforce_billing_writeback")[0]
        .metadata["salesforce_records_written"]
        .value
        == 0
    )


def _first_invoice_lines(world: World, subscription: dict) -> list[tuple[str, int, int]]:
    """(description, quantity, amount) of each line of the subscription's first invoice, as Stripe serves them."""
    lines = world.box.client.v1.invoices.line_items.list(subscription["latest_invoice"]).data
    return sorted((line.description, line.quantity, line.amount) for line in lines)


def test_a_plan_with_an_onboarding_fee_is_one_subscription_whose_first_invoice_carries_the_fee_once(world):
    deal = world.deal("Plan and fee", [("pro", 2, "1200.00"), ("onboarding", 1, "1200.00")])

    first = world.run()

    assert first.success and [e for e in world.exceptions() if e["external_id"] == deal] == []
    [subscription] = world.billed("subscription", deal)
    assert [(i["price"]["id"], i["quantity"]) for i in subscription["items"]["data"]] == [(world.prices["pro"], 2)]
    invoice = world.box.client.v1.invoices.retrieve(subscription["latest_invoice"])
    assert (invoice.status, invoice.currency, invoice.total) == ("open", "usd", 240000)
    assert _first_invoice_lines(world, subscription) == [
        ("2 × Pro plan (at 600.00 USD / month)", 2, 120000),
        ("Onboarding", 1, 120000),
    ]
    # Salesforce shows the subscription and the invoice its status is about (the first one, with the fee).
    opportunity = world.opportunity(deal)
    assert opportunity["Stripe_Subscription_Id__c"] == subscription["id"]
    assert opportunity["Stripe_Invoice_Id__c"] == invoice.id
    assert opportunity["Billing_Status__c"] == "Invoiced"

    # A lost ledger and expired Idempotency-Keys a day later: found by metadata, billed nowhere twice.
    with world.ledger().engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sync_ledger")
        conn.exec_driver_sql("DELETE FROM sync_cursors")
    world.box.clock(at(DAY + dt.timedelta(days=2), 10))
    again = world.run()

    assert again.success
    assert again.asset_materializations_for_node(BILLING)[0].metadata["stripe_writes"].value == 0
    assert [s["id"] for s in world.billed("subscription", deal)] == [subscription["id"]]
    fees = [
        i
        for i in world.stripe_records("invoiceitem")
        if (i.get("metadata") or {}).get("salesforce_opportunity_id") == deal
    ]
    assert [(f["amount"], f["invoice"]) for f in fees] == [(120000, invoice.id)]


def _price_in(world: World, name: str, currency: str, unit_amount: int) -> str:
    """Another currency's Stripe price of a catalogue product (recurring like its USD price)."""
    usd = world.box.client.v1.prices.retrieve(world.prices[name])
    params = {"product": usd.product, "currency": currency, "unit_amount": unit_amount}
    if usd.recurring:
        params["recurring"] = {"interval": usd.recurring.interval}
    return world.box.client.v1.prices.create(params).id


def _map_per_currency(world: World, prices: dict[str, dict[str, str]]) -> None:
    data = yaml.safe_load(world.mapping_path.read_text())
    data["salesforce"]["product_prices"].update({world.products[name]: p for name, p in prices.items()})
    world.mapping_path.write_text(yaml.safe_dump(data))


def test_a_deal_bills_in_its_currency_and_a_product_without_a_price_in_it_is_held_back_with_the_line_to_add(world):
    pro_eur = _price_in(world, "pro", "eur", 55000)
    _map_per_currency(
        world,
        {"pro": {"USD": world.prices["pro"], "EUR": pro_eur}, "onboarding": {"USD": world.prices["onboarding"]}},
    )
    dollar = world.deal("Dollar", [("pro", 1, "600.00"), ("onboarding", 1, "1200.00")])
    euro = world.deal("Euro", [("pro", 2, "1100.00"), ("onboarding", 1, "1100.00")], currency="EUR")

    world.run()

    assert len(world.billed("subscription", dollar)) == 1
    assert world.billed("subscription", euro) == []
    [held] = [e for e in world.exceptions() if e["external_id"] == euro]
    onboarding = world.products["onboarding"]
    assert held["message"].endswith(
        f"`Product2Id` = {onboarding} (Onboarding) cannot be billed in EUR: has no Stripe price in EUR"
    )
    line = f"{onboarding[:15]}: {{USD: {world.prices['onboarding']}, EUR: price_...}}"
    assert held["fix"].startswith(f"write `{line}` under `salesforce: product_prices:` in field_mapping.yaml")
    assert world.opportunity(euro).get("Stripe_Subscription_Id__c") is None

    onboarding_eur = _price_in(world, "onboarding", "eur", 110000)
    _map_per_currency(world, {"onboarding": {"USD": world.prices["onboarding"], "EUR": onboarding_eur}})
    world.run()

    [subscription] = world.billed("subscription", euro)
    assert subscription["currency"] == "eur"
    assert _first_invoice_lines(world, subscription) == [
        ("2 × Pro plan (at 550.00 EUR / month)", 2, 110000),
        ("Onboarding", 1, 110000),
    ]
    assert world.opportunity(euro)["Stripe_Subscription_Id__c"] == subscription["id"]
    assert [e for e in world.exceptions() if e["external_id"] == euro] == []
    assert len(world.billed("subscription", dollar)) == 1


def _sensor_tick(cursor: str | None) -> tuple[dg.RunRequest | dg.SkipReason, str | None]:
    from sync_pipeline.definitions import build_resources

    resources = {name: r for name, r in build_resources().items() if name in ("salesforce", "field_mapping", "ledger")}
    with dg.build_sensor_context(cursor=cursor, resources=resources) as context:
        return build_salesforce_to_stripe_sensor(salesforce_configured=True)(context), context.cursor


def _schedule_tick() -> dg.RunRequest | dg.SkipReason:
    from sync_pipeline.definitions import build_resources

    resources = {"field_mapping": build_resources()["field_mapping"]}
    with dg.build_schedule_context(resources=resources) as context:
        return build_salesforce_to_stripe_schedule(salesforce_configured=True)(context)


def _stripe_objects(world: World) -> dict[str, int]:
    return {kind: len(world.stripe_records(kind)) for kind in ("customer", "subscription", "invoice", "invoiceitem")}


def test_billing_refuses_to_start_until_the_start_date_is_set_saying_what_to_set(world, capsys):
    data = yaml.safe_load(world.mapping_path.read_text())
    del data["salesforce"]["bill_closed_won_from"]
    world.mapping_path.write_text(yaml.safe_dump(data))
    deal = world.deal("Too soon", [("pro", 1, "600.00")])
    before = _stripe_objects(world)
    line = (
        f"{world.mapping_path}: salesforce.bill_closed_won_from: not set, so nothing is billed. Fix: set it to "
        "the first CloseDate to bill (YYYY-MM-DD, e.g. today's date); deals closed earlier are never billed "
        "(preview with `sync-pipeline plan`)"
    )

    result = world.run(raise_on_error=False)

    assert not result.success
    [failure] = [f for f in result.get_step_failure_events() if f.step_key == BILLING]
    assert failure.step_failure_data.user_failure_data.description == line
    assert _stripe_objects(world) == before and world.billed("subscription", deal) == []
    assert world.ledger().entries("stripe") == [] and world.exceptions() == []
    tick, cursor = _sensor_tick(None)
    assert isinstance(tick, dg.SkipReason) and tick.skip_message == line and cursor is None
    scheduled = _schedule_tick()
    assert isinstance(scheduled, dg.SkipReason) and scheduled.skip_message == line
    assert cli.main(["check-config", "--require", "salesforce"]) == 2
    assert line in capsys.readouterr().err.splitlines()

    data["salesforce"]["bill_closed_won_from"] = DAY.isoformat()
    world.mapping_path.write_text(yaml.safe_dump(data))
    assert isinstance(_sensor_tick(None)[0], dg.RunRequest) and isinstance(_schedule_tick(), dg.RunRequest)
    assert world.run().success and len(world.billed("subscription", deal)) == 1


def test_plan_lists_the_deals_the_first_run_would_bill_with_amounts_per_currency_and_creates_nothing(world, capsys):
    pro_eur = _price_in(world, "pro", "eur", 55000)
    _map_per_currency(world, {"pro": {"USD": world.prices["pro"], "EUR": pro_eur}})
    plan_and_fee = world.deal("Plan and fee", [("pro", 2, "1200.00"), ("onboarding", 1, "1200.00")])
    euro = world.deal("Euro", [("pro", 1, "550.00")], currency="EUR")
    fee_only = world.deal("Fee only", [("onboarding", 1, "1200.00")])
    held = world.deal("Training", [("training", 1, "500.00")])
    old = world.deal("Old", [("pro", 1, "600.00")])
    world.salesforce.state.update("Opportunity", old, {"CloseDate": (DAY - dt.timedelta(days=1)).isoformat()})
    before = _stripe_objects(world)

    assert cli.main(["plan"]) == 0

    out = capsys.readouterr().out.splitlines()
    assert _stripe_objects(world) == before and world.ledger().entries("stripe") == []
    assert out[0] == f"Salesforce → Stripe billing from CloseDate {DAY}: nothing is created by this command."
    assert out[1] == "Would bill 3 deal(s):"
    assert sorted(out[2:5]) == sorted(
        [
            f"  {plan_and_fee}  Plan and fee Corp  Plan and fee: USD 2400.00 as a subscription "
            "(2 × Pro, 1 × Onboarding)",
            f"  {euro}  Euro Corp  Euro: EUR 550.00 as a subscription (1 × Pro)",
            f"  {fee_only}  Fee only Corp  Fee only: USD 1200.00 as a one-off invoice (1 × Onboarding)",
        ]
    )
    assert out[5] == "Total per currency: EUR 550.00, USD 3600.00"
    assert out[6].startswith("Held back 1 deal(s)")
    assert world.products["training"] in out[7] and "Fix: add `" in out[7]
    assert out[8] == "Not billed: 1 closed before " + DAY.isoformat() + ", 0 billed already."

    # The run bills what the plan listed, no more.
    assert world.run().success
    billed = {
        d
        for d in (plan_and_fee, euro, fee_only, held, old)
        if world.billed("subscription", d) or world.billed("invoice", d)
    }
    assert billed == {plan_and_fee, euro, fee_only}


def test_opportunities_are_read_incrementally_from_the_high_water_mark_with_a_look_back(world):
    now = dt.datetime.now(dt.UTC)
    hour_old = world.deal("Hour old", [("pro", 1, "600.00")], at=now - dt.timedelta(hours=1))
    recent = world.deal("Recent", [("pro", 1, "600.00")], at=now - dt.timedelta(minutes=3))
    # (Without the write-back, which touches the billed opportunities and so brings them back next time.)
    assert world.run("salesforce_opportunities", BILLING).success
    new = world.deal("New", [("onboarding", 1, "1200.00")])

    second = world.run("salesforce_opportunities", BILLING)

    read = second.asset_materializations_for_node("salesforce_opportunities")[0].metadata["opportunities"].value
    assert read == 2  # `recent` again (inside the 5-minute look-back) and `new`; not `hour_old`
    assert [len(world.billed("subscription", d)) for d in (hour_old, recent)] == [1, 1]
    assert len(world.billed("invoice", new)) == 1


def test_sensor_tick_racing_a_scheduled_run_bills_once(world):
    idle, cursor = _sensor_tick(None)
    assert isinstance(idle, dg.SkipReason)
    deal = world.deal("Racer", [("pro", 1, "600.00"), ("onboarding", 1, "1200.00")])

    request, cursor = _sensor_tick(cursor)

    assert isinstance(request, dg.RunRequest) and deal in request.tags["sync_pipeline/opportunities"]
    assert isinstance(_sensor_tick(cursor)[0], dg.SkipReason)  # the same change is asked for once
    # The sensor's run and the scheduled run start together, writing the same snapshots.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _n: world.run(raise_on_error=False), range(2)))
    assert all(r.success for r in results)
    # Each run reports what it did itself: one billed the deal, the other found it billed (by the ledger, or
    # by recording second what Stripe gave both), in its metadata and in its own snapshot.
    reports = [r.asset_materializations_for_node(BILLING)[0].metadata for r in results]
    assert sorted(m["deals_billed"].value for m in reports) == [0, 1]
    for metadata in reports:
        frame = pd.read_parquet(metadata["run_snapshot"].value)
        [action] = frame.loc[frame["external_id"] == deal, "action"]
        assert action == ("created" if metadata["deals_billed"].value else "unchanged")
    [subscription] = world.billed("subscription", deal)
    assert _first_invoice_lines(world, subscription) == [
        ("1 × Pro plan (at 600.00 USD / month)", 1, 60000),
        ("Onboarding", 1, 120000),
    ]
    account_id = world.opportunity(deal)["AccountId"]
    assert (
        len(
            [
                c
                for c in world.stripe_records("customer")
                if (c.get("metadata") or {}).get("salesforce_account_id") == account_id
            ]
        )
        == 1
    )
    # A later change to what was billed is a new request.
    line = world.salesforce.state.find("OpportunityLineItem", OpportunityId=deal)[0]
    world.salesforce.state.update("OpportunityLineItem", line["Id"], {"TotalPrice": Decimal("1300.00")})
    assert isinstance(_sensor_tick(cursor)[0], dg.RunRequest)


def test_the_write_back_of_a_billing_does_not_trigger_another_sensor_run(world):
    _, cursor = _sensor_tick(None)
    deal = world.deal("Once", [("pro", 1, "600.00")])
    request, cursor = _sensor_tick(cursor)
    assert isinstance(request, dg.RunRequest) and request.tags["sync_pipeline/opportunities"] == deal
    stamp_billed = world.opportunity(deal)["SystemModstamp"]

    assert world.run().success  # bills, then writes the subscription and its status onto the opportunity

    assert world.opportunity(deal)["Billing_Status__c"] == "Invoiced"
    assert world.opportunity(deal)["SystemModstamp"] > stamp_billed  # the write-back is a change to Salesforce
    tick, after = _sensor_tick(cursor)
    assert isinstance(tick, dg.SkipReason) and "none that billing acts on" in tick.skip_message
    assert after != cursor  # moved past the pipeline's own change: it is not read again
    assert isinstance(_sensor_tick(after)[0], dg.SkipReason)
    # A rep's edit of a field billing does not read is no run either; a change to what was billed is one.
    world.salesforce.state.update("Opportunity", deal, {"NextStep": "Kick-off"})
    tick, after = _sensor_tick(after)
    assert isinstance(tick, dg.SkipReason)
    line = world.salesforce.state.find("OpportunityLineItem", OpportunityId=deal)[0]
    world.salesforce.state.update("OpportunityLineItem", line["Id"], {"TotalPrice": Decimal("1200.00")})
    request, _ = _sensor_tick(after)
    assert isinstance(request, dg.RunRequest) and request.tags["sync_pipeline/opportunities"] == deal


def test_crash_between_stripe_and_the_ledger_with_expired_keys_does_not_bill_twice(world):
    deal = world.deal("Crash", [("onboarding", 2, "2400.00")])
    assert world.run(BILLING, "salesforce_opportunities").success
    # The state a crash right after the Stripe calls leaves: Stripe has everything, the ledger and
    # Salesforce nothing, the cursor did not move; and a day later the Idempotency-Keys have expired.
    with world.ledger().engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sync_ledger")
        conn.exec_driver_sql("DELETE FROM sync_cursors")
    world.box.clock(at(DAY + dt.timedelta(days=2), 10))

    assert world.run(BILLING, "salesforce_opportunities").success

    invoices = world.billed("invoice", deal)
    assert len(invoices) == 1 and invoices[0]["total"] == 240000
    items = [
        i
        for i in world.stripe_records("invoiceitem")
        if (i.get("metadata") or {}).get("salesforce_opportunity_id") == deal
    ]
    assert len(items) == 1
    assert len([c for c in world.stripe_records("customer") if c.get("name") == "Crash Corp"]) == 1
    assert world.ledger().lookup("stripe", "opportunity", [deal])[deal].internal_id == invoices[0]["id"]


def _status(world: World, opportunity_id: str) -> tuple[str | None, str | None]:
    """What RevOps reads on the opportunity: Billing_Status__c and its reason."""
    opportunity = world.opportunity(opportunity_id)
    return opportunity.get("Billing_Status__c"), opportunity.get("Billing_Status_Reason__c")


def test_product_without_stripe_price_is_an_exception_with_fix_then_bills_once_mapped(world):
    deal = world.deal("Training", [("training", 1, "500.00")])

    first = world.run()

    assert world.billed("invoice", deal) == []
    [problem] = [e for e in world.exceptions() if e["external_id"] == deal]
    assert problem["error_code"] == "UNMAPPED_SALESFORCE_PRODUCT"
    assert problem["value"] == world.products["training"]
    assert (
        f"add `{world.products['training']}: {{USD: price_...}}` under `salesforce: product_prices:`" in problem["fix"]
    )
    # Sales sees it on the opportunity, with what to do.
    status, reason = _status(world, deal)
    assert status == "Held back"
    assert reason.startswith(f"{problem['message']}. Fix: add `{world.products['training']}: {{USD: price_...}}`")
    assert len(reason) <= 255
    assert first.asset_materializations_for_node(BILLING)[0].metadata["deals_held_back"].value == 1

    # A deal reopened meanwhile is no longer an exception, nor held back; closed again, it is held back again.
    world.salesforce.state.update("Opportunity", deal, {"StageName": "Negotiation/Review"})
    world.run()
    assert [e for e in world.exceptions() if e["external_id"] == deal] == []
    assert _status(world, deal) == (None, None)
    world.salesforce.state.update("Opportunity", deal, {"StageName": "Closed Won"})
    world.run()
    assert [e["error_code"] for e in world.exceptions() if e["external_id"] == deal] == ["UNMAPPED_SALESFORCE_PRODUCT"]
    assert _status(world, deal)[0] == "Held back"

    world.map_product("training")
    world.run()

    invoices = world.billed("invoice", deal)
    assert len(invoices) == 1 and invoices[0]["total"] == 50000
    assert [e for e in world.exceptions() if e["external_id"] == deal] == []
    assert _status(world, deal) == ("Invoiced", None)
    assert world.opportunity(deal)["Stripe_Invoice_Id__c"] == invoices[0]["id"]


def test_counts_are_per_deal_and_every_problem_is_listed(world):
    world.products["support"] = world.salesforce.state.insert("Product2", {"Name": "Support", "IsActive": True})
    two_problems = world.deal("Two problems", [("training", 1, "500.00"), ("support", 1, "100.00")])
    one_problem = world.deal("One problem", [("training", 1, "500.00")])
    world.deal("Fine", [("onboarding", 1, "1200.00")])

    result = world.run()

    metadata = result.asset_materializations_for_node(BILLING)[0].metadata
    assert (metadata["deals_billed"].value, metadata["deals_held_back"].value) == (1, 2)
    assert (metadata["quarantined"].value, metadata["exceptions"].value) == (2, 3)
    assert sorted(e["external_id"] for e in world.exceptions()) == sorted([two_problems, two_problems, one_problem])
    status, reason = _status(world, two_problems)
    assert status == "Held back" and reason.startswith("2 problems; first: ")


def test_a_deal_reopened_after_billing_needs_review_in_salesforce_until_closed_again_or_ended_in_stripe(world):
    plan = world.deal("Reopened plan", [("pro", 1, "600.00")])
    one_off = world.deal("Reopened invoice", [("onboarding", 1, "1200.00")])
    world.run()
    [subscription] = world.billed("subscription", plan)
    [invoice] = world.billed("invoice", one_off)
    for deal in (plan, one_off):
        world.salesforce.state.update("Opportunity", deal, {"StageName": "Negotiation/Review"})

    result = world.run()

    assert result.asset_materializations_for_node(BILLING)[0].metadata["deals_needing_review"].value == 2
    [problem] = [e for e in world.exceptions() if e["external_id"] == plan]
    assert problem["error_code"] == "OPPORTUNITY_REOPENED_AFTER_BILLING"
    assert problem["message"] == f"opportunity moved to Negotiation/Review after it was billed as {subscription['id']}"
    assert problem["fix"].startswith(f"if the deal is off, cancel {subscription['id']} in Stripe")
    assert "set it back to Closed Won" in problem["fix"]
    status, reason = _status(world, plan)
    assert status == "Needs review"
    assert reason.startswith(f"{problem['message']}. Fix: if the deal is off, cancel {subscription['id']}")
    assert _status(world, one_off)[0] == "Needs review"
    # Nothing is done in Stripe on its own: the subscription still runs until a person decides.
    assert world.box.client.v1.subscriptions.retrieve(subscription["id"]).status == "active"

    # The stage set back: the status follows the invoice again.
    world.salesforce.state.update("Opportunity", plan, {"StageName": "Closed Won"})
    # The deal is off: its invoice voided in Stripe (Salesforce untouched) closes it on the next run.
    world.box.client.v1.invoices.void_invoice(invoice["id"])
    world.run()

    assert [e for e in world.exceptions() if e["external_id"] in (plan, one_off)] == []
    assert _status(world, plan) == ("Invoiced", None)
    assert _status(world, one_off) == ("Void", None)
    assert len(world.billed("subscription", plan)) == 1 and len(world.billed("invoice", one_off)) == 1


def test_edit_after_billing_is_reported_not_billed_again(world):
    deal = world.deal("Edited", [("onboarding", 1, "1200.00")])
    world.run()
    line = world.salesforce.state.find("OpportunityLineItem", OpportunityId=deal)[0]
    world.salesforce.state.update("OpportunityLineItem", line["Id"], {"TotalPrice": Decimal("1500.00")})

    world.run()

    [invoice] = world.billed("invoice", deal)
    [problem] = [e for e in world.exceptions() if e["external_id"] == deal]
    assert problem["error_code"] == "OPPORTUNITY_CHANGED_AFTER_BILLING"
    assert problem["message"] == "opportunity changed after billing: amount 1200.00 → 1500.00"
    assert f"amend or cancel {invoice['id']} in Stripe" in problem["fix"]
    assert "restore the opportunity's amount" in problem["fix"]
    status, reason = _status(world, deal)
    assert status == "Needs review"
    assert reason.startswith("opportunity changed after billing: amount 1200.00 → 1500.00. Fix: ")

    world.salesforce.state.update("OpportunityLineItem", line["Id"], {"TotalPrice": Decimal("1200.00")})
    world.run()

    assert [e for e in world.exceptions() if e["external_id"] == deal] == []
    assert len(world.billed("invoice", deal)) == 1
    assert _status(world, deal) == ("Invoiced", None)


def test_deals_closed_before_the_billing_start_date_are_not_billed(world):
    data = yaml.safe_load(world.mapping_path.read_text())
    data["salesforce"]["bill_closed_won_from"] = (DAY + dt.timedelta(days=1)).isoformat()
    world.mapping_path.write_text(yaml.safe_dump(data))
    old = world.deal("Old", [("onboarding", 1, "1200.00")])  # closed on DAY
    new = world.deal("New", [("onboarding", 1, "1200.00")])
    world.salesforce.state.update("Opportunity", new, {"CloseDate": (DAY + dt.timedelta(days=1)).isoformat()})

    world.run()

    assert world.billed("invoice", old) == []
    assert len(world.billed("invoice", new)) == 1


def test_a_billed_deal_closed_before_the_start_date_keeps_following_stripe_after_a_ledger_loss(world):
    deal = world.deal("Early", [("onboarding", 1, "1200.00")])  # closed on DAY
    world.run()
    [invoice] = world.billed("invoice", deal)
    # The ledger is lost, and the start date is later moved past the deal's close date.
    with world.ledger().engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM sync_ledger")
        conn.exec_driver_sql("DELETE FROM sync_cursors")
    data = yaml.safe_load(world.mapping_path.read_text())
    data["salesforce"]["bill_closed_won_from"] = (DAY + dt.timedelta(days=1)).isoformat()
    world.mapping_path.write_text(yaml.safe_dump(data))
    _pay(world, invoice["id"])

    result = world.run()

    # Billed (its Stripe id is on the opportunity), not "closed before the start": its status follows Stripe.
    assert result.asset_materializations_for_node(BILLING)[0].metadata["skipped"].value == 0
    assert world.opportunity(deal)["Billing_Status__c"] == "Paid"
    assert world.ledger().lookup("stripe", "opportunity", [deal])[deal].internal_id == invoice["id"]
    assert len(world.billed("invoice", deal)) == 1


def test_a_subscription_upgraded_in_stripe_keeps_what_was_billed_so_the_change_can_be_flagged(world):
    deal = world.deal("Upgraded", [("pro", 1, "600.00"), ("onboarding", 1, "1200.00")])
    world.run()
    [subscription] = world.billed("subscription", deal)
    item = subscription["items"]["data"][0]["id"]
    world.box.client.v1.subscriptions.update(
        subscription["id"], {"items": [{"id": item, "quantity": 3}], "proration_behavior": "none"}
    )

    world.run()

    # Read back from Stripe as a reconciliation would: what was billed is still on the subscription, beside
    # what it bills now; the ledger still joins the opportunity to it.
    upgraded = world.box.client.v1.subscriptions.retrieve(subscription["id"]).to_dict()
    assert {k: upgraded["metadata"][k] for k in ("salesforce_amount", "salesforce_recurring_amount")} == {
        "salesforce_amount": "1800.00",
        "salesforce_recurring_amount": "600.00",
    }
    assert upgraded["metadata"]["salesforce_currency"] == "USD"
    assert billing.changed_in_stripe(upgraded) == "recurring 600.00 → 1800.00 USD"
    assert world.ledger().lookup("stripe", "opportunity", [deal])[deal].internal_id == subscription["id"]
    assert world.opportunity(deal)["Amount"] == Decimal("1800.00")  # Salesforce untouched: the mismatch stays
    assert len(world.billed("subscription", deal)) == 1


def _pay(world: World, invoice_id: str) -> None:
    world.box.client.v1.invoices.pay(invoice_id, {"payment_method": "pm_card_visa"})


def test_paid_then_refunded_invoice_shows_on_the_opportunity_with_its_netsuite_ids(world):
    deal = world.deal("Paying", [("onboarding", 1, "1200.00")])
    world.run()
    [invoice] = world.billed("invoice", deal)
    _pay(world, invoice["id"])
    assert world.box.materialize().success  # Stripe -> NetSuite for the invoice's day

    world.run("salesforce_billing_writeback")

    netsuite_invoice = world.box.netsuite("invoice")[f"stripe-{invoice['id']}"]
    netsuite_customer = world.box.netsuite("customer")[f"stripe-{invoice['customer']}"]
    opportunity = world.opportunity(deal)
    assert opportunity["Billing_Status__c"] == "Paid"
    assert opportunity["NetSuite_Invoice_Id__c"] == str(netsuite_invoice["id"])
    assert world.account_of(deal)["NetSuite_Customer_Id__c"] == str(netsuite_customer["id"])
    # Enrichment: the NetSuite customer is the Salesforce Account, by name, billing address and id.
    assert netsuite_customer["companyName"] == "Paying Corp"
    assert netsuite_customer["custentity_sf_account_id"] == world.opportunity(deal)["AccountId"]
    address = netsuite_customer["addressBook"]["items"][0]["addressBookAddress"]
    assert (address["addr1"], address["city"], address["zip"]) == ("1 Main St", "Springfield", "12345")

    world.box.client.v1.refunds.create({"charge": world.box.charge_of(invoice["id"])})
    reads_before = _invoice_reads(world, lambda: world.run("salesforce_billing_writeback"))

    assert world.opportunity(deal)["Billing_Status__c"] == "Refunded"
    # Refunded is final: later runs neither ask Stripe about the invoice nor write to Salesforce.
    results = []
    assert reads_before > 0
    assert _invoice_reads(world, lambda: results.append(world.run("salesforce_billing_writeback"))) == 0
    assert (
        results[0]
        .asset_materializations_for_node("salesforce_billing_writeback")[0]
        .metadata["salesforce_records_written"]
        .value
        == 0
    )


def _invoice_reads(world: World, action) -> int:
    """How many times Stripe was asked for an invoice while `action` ran."""
    requests.post(f"{world.box.stripe_url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    action()
    routes = requests.get(f"{world.box.stripe_url}/_sandbox/stats", timeout=10).json()["by_route"]
    return sum(count for route, count in routes.items() if route.startswith("GET /v1/invoices/"))


def test_write_back_matching_several_opportunities_is_an_exception_with_their_ids(world):
    deal = world.deal("Cloned", [("onboarding", 1, "1200.00")])
    world.run()
    [invoice] = world.billed("invoice", deal)
    # An admin cloned the billed opportunity, Stripe id included, in an org where the field is not unique.
    world.salesforce.config.unique_external_ids = False
    clone = world.salesforce.state.insert(
        "Opportunity",
        {
            "Name": "Cloned (copy)",
            "StageName": "Prospecting",
            "CloseDate": DAY.isoformat(),
            "Stripe_Invoice_Id__c": invoice["id"],
        },
        enforce_unique=False,
    )
    _pay(world, invoice["id"])

    world.run("salesforce_billing_writeback")

    [problem] = [e for e in world.exceptions() if e["external_id"] == deal]
    assert problem["error_code"] == "SALESFORCE_DUPLICATE_MATCH"
    assert deal in problem["message"] and clone in problem["message"]
    assert "merge the duplicates or clear the field on the others" in problem["fix"]
    assert world.opportunity(deal)["Billing_Status__c"] == "Invoiced"
    assert world.opportunity(clone).get("Billing_Status__c") is None


def _resources(world: World, **login: str) -> tuple[SalesforceResource, StripeResource]:
    salesforce = SalesforceResource(instance_url=world.salesforce.url, ca_bundle=world.salesforce.ca_bundle, **login)
    stripe = StripeResource(api_key=os.environ["STRIPE_API_KEY"], api_base=world.box.stripe_url)
    return salesforce, stripe


def _bill_with_expiry_midway(world: World, salesforce: SalesforceResource, stripe: StripeResource) -> None:
    from sync_pipeline.mapping.field_mapping import FieldMapping

    opportunities = read_opportunities(salesforce, "")
    world.salesforce.state.expire_sessions()  # e.g. the org's session timeout, or an admin's "log out everyone"
    bill_opportunities(
        opportunities, stripe=stripe, ledger=world.ledger(), config=FieldMapping.load(world.mapping_path).salesforce
    )
    write_back(salesforce, world.ledger(), stripe)


def test_session_expiring_mid_run_is_renewed_by_logging_in_again(world):
    deal = world.deal("Renewed", [("onboarding", 1, "1200.00")])
    config = world.salesforce.config
    salesforce, stripe = _resources(
        world, username=config.username, password=config.password, security_token=config.security_token
    )

    _bill_with_expiry_midway(world, salesforce, stripe)

    [invoice] = world.billed("invoice", deal)
    assert world.opportunity(deal)["Stripe_Invoice_Id__c"] == invoice["id"]
    assert salesforce.logins == 2


def test_session_id_expiring_mid_run_fails_saying_what_to_set(world):
    deal = world.deal("Expired", [("onboarding", 1, "1200.00")])
    salesforce, stripe = _resources(world, session_id=world.salesforce.session_id)

    with pytest.raises(SalesforceSessionExpired) as raised:
        _bill_with_expiry_midway(world, salesforce, stripe)

    assert str(raised.value) == SESSION_ID_EXPIRED_MESSAGE
    assert "set SALESFORCE_USERNAME/PASSWORD/SECURITY_TOKEN" in str(raised.value)
    # Billed in Stripe and in the ledger; the write-back waits for the next run with a valid session.
    assert len(world.billed("invoice", deal)) == 1
    assert world.opportunity(deal).get("Stripe_Invoice_Id__c") is None


def test_expired_session_id_fails_the_run_with_the_message(world, monkeypatch):
    for name in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN"):
        monkeypatch.delenv(name)
    world.salesforce.state.expire_sessions()

    result = world.run(raise_on_error=False)

    assert not result.success
    failures = result.get_step_failure_events()
    assert {f.step_key for f in failures} == {"salesforce_accounts", "salesforce_opportunities"}
    for failure in failures:
        error, texts = failure.step_failure_data.error, []
        while error is not None:
            texts.append(error.message)
            error = error.cause
        assert any(SESSION_ID_EXPIRED_MESSAGE in text for text in texts), texts


def test_billed_once_check_fails_when_stripe_holds_two_billings_of_a_deal(world):
    deal = world.deal("Twice", [("onboarding", 1, "1200.00")])
    account_id = world.opportunity(deal)["AccountId"]
    # Someone billed the deal by hand, twice, before the pipeline ran.
    customer = world.box.client.v1.customers.create(
        {"name": "Twice Corp", "metadata": {"salesforce_account_id": account_id}}
    )
    for _ in range(2):
        world.box.client.v1.invoices.create(
            {"customer": customer.id, "currency": "usd", "metadata": {"salesforce_opportunity_id": deal}}
        )

    result = world.run(BILLING, "salesforce_opportunities")

    [billed_once] = result.get_asset_check_evaluations()
    assert not billed_once.passed
    assert billed_once.metadata["not_exactly_once"].value == {deal: 2}


def test_a_refused_renewal_stops_the_run_naming_the_login_variables(world, monkeypatch):
    world.deal("Renewal", [("onboarding", 1, "1200.00")])
    world.salesforce.state.expire_sessions()  # the session in SALESFORCE_SESSION_ID must be renewed...
    monkeypatch.setenv("SALESFORCE_PASSWORD", "not-the-password")  # ...and the login is refused

    result = world.run(raise_on_error=False)

    assert not result.success
    failures = {f.step_key: f.step_failure_data.user_failure_data for f in result.get_step_failure_events()}
    assert set(failures) == {"salesforce_accounts", "salesforce_opportunities"}
    for failure in failures.values():
        assert failure is not None, "a dg.Failure with one line, not a traceback"
        line = failure.description
        assert "\n" not in line and "INVALID_LOGIN" in line and "SALESFORCE_PASSWORD" in line
        assert "not-the-password" not in line
    assert world.exceptions() == []


def test_a_refused_stripe_key_stops_billing_at_once_and_quarantines_no_deal(world):
    deals = [world.deal(f"Deal {i}", [("onboarding", 1, "1200.00")]) for i in range(3)]
    assert world.run("salesforce_opportunities").success
    world.box.configure_stripe(api_key_prefix="sk_test_rolled_")  # STRIPE_API_KEY was rolled in the Dashboard

    result = world.run(BILLING, raise_on_error=False)

    assert not result.success
    [failure] = result.get_step_failure_events()
    line = failure.step_failure_data.user_failure_data.description
    assert "Stripe refused the API key" in line and "STRIPE_API_KEY" in line
    assert world.exceptions() == [], "no deal is blamed for the key"
    assert world.ledger().entries("stripe") == []
    assert all(world.billed("invoice", deal) == [] for deal in deals)
