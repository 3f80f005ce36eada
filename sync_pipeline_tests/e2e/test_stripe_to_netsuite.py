"""Real Dagster materializations against the Stripe and NetSuite stand-ins over HTTP.

Each test drives Stripe through its SDK, materializes a daily partition, and asserts what the NetSuite
stand-in holds: records, amounts to the cent, applications, exceptions with their fixes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from sync_pipeline.resources.ledger import Ledger
from sync_pipeline_tests.e2e.harness import DAY, amount, at, checks, metadata, running_sandbox

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CURRENCIES = [
    ("usd", 12345, Decimal("123.45")),
    ("eur", 9900, Decimal("99.00")),
    ("jpy", 5000, Decimal("5000")),
    ("kwd", 12340, Decimal("12.340")),
]


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as box:
        yield box


def _four_currency_day(sandbox) -> dict[str, str]:
    """One paid invoice per currency, each for its own customer (a NetSuite customer has one subsidiary)."""
    sandbox.clock(at(DAY, 9))
    invoices = {}
    for currency, minor, _ in CURRENCIES:
        customer = sandbox.customer(f"Customer {currency.upper()}", currency)
        invoices[currency] = sandbox.invoice(customer, currency, [minor]).id
    sandbox.clock(None)
    return invoices


def test_paid_invoices_in_four_currencies_land_with_payments_applied_to_the_cent(sandbox):
    invoices = _four_currency_day(sandbox)

    result = sandbox.materialize()

    assert result.success
    ns_invoices = sandbox.netsuite("invoice")
    ns_payments = sandbox.netsuite("customerPayment")
    assert len(ns_invoices) == 4 and len(ns_payments) == 4
    for currency, _, expected in CURRENCIES:
        invoice = ns_invoices[f"stripe-{invoices[currency]}"]
        assert amount(invoice) == expected, currency
        assert amount(invoice, "amountRemaining") == 0, f"{currency} invoice should be paid in full"
        payment = next(
            p for p in ns_payments.values() if any(a["doc"]["id"] == invoice["id"] for a in p["apply"]["items"])
        )
        assert amount(payment, "payment") == expected
    evaluations = checks(result)
    assert evaluations[("netsuite_invoices", "totals_match_stripe")].passed
    assert evaluations[("netsuite_customer_payments", "totals_match_stripe")].passed
    assert evaluations[("netsuite_invoices", "no_duplicate_external_ids")].passed
    invoices_meta = metadata(result, "netsuite_invoices")
    assert invoices_meta["created"] == 4
    assert invoices_meta["amounts_by_currency"] == {"EUR": "99.00", "JPY": "5000", "KWD": "12.340", "USD": "123.45"}


def test_an_invoice_with_more_lines_than_stripe_embeds_lands_with_every_line(sandbox, tmp_path):
    # Stripe embeds an invoice's first ten lines and says `has_more`; the rest must be paged from its /lines.
    sandbox.clock(at(DAY, 9))
    customer = sandbox.customer("Usage Customer", "usd")
    lines = [1_000 + n for n in range(12)]
    invoice = sandbox.invoice(customer, "usd", lines)
    sandbox.clock(None)
    assert invoice.lines.has_more and len(invoice.lines.data) == 10

    result = sandbox.materialize()

    assert result.success
    booked = sandbox.netsuite("invoice")[f"stripe-{invoice.id}"]
    assert sorted(Decimal(str(i["amount"])) for i in booked["item"]["items"]) == [Decimal(n) / 100 for n in lines]
    assert amount(booked) == Decimal(sum(lines)) / 100 == Decimal("120.66")
    assert Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}").open_exceptions(DAY.isoformat()) == []


def test_second_materialization_of_a_partition_sends_zero_writes(sandbox):
    _four_currency_day(sandbox)
    assert sandbox.materialize().success
    writes_after_first = sandbox.netsuite_writes()

    again = sandbox.materialize()

    assert again.success
    assert sandbox.netsuite_writes() == writes_after_first
    assert metadata(again, "netsuite_invoices")["unchanged"] == 4
    assert metadata(again, "netsuite_invoices")["writes"] == 0


def test_open_invoice_stays_open_then_gets_its_payment_once_paid(sandbox):
    sandbox.clock(at(DAY, 10))
    customer = sandbox.customer("Late Payer", "usd")
    invoice = sandbox.invoice(customer, "usd", [50000], pay="pm_card_chargeDeclined")
    sandbox.clock(None)
    assert invoice.status == "open"

    assert sandbox.materialize().success
    ns_invoice = sandbox.netsuite("invoice")[f"stripe-{invoice.id}"]
    assert amount(ns_invoice, "amountRemaining") == Decimal("500.00")
    assert sandbox.netsuite("customerPayment") == {}

    sandbox.client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
    assert sandbox.materialize().success

    assert amount(sandbox.netsuite("invoice")[f"stripe-{invoice.id}"], "amountRemaining") == 0
    payments = sandbox.netsuite("customerPayment")
    assert len(payments) == 1
    assert amount(next(iter(payments.values())), "payment") == Decimal("500.00")


def test_void_invoice_is_closed_by_a_credit_memo(sandbox):
    sandbox.clock(at(DAY, 11))
    customer = sandbox.customer("Cancelled Deal", "eur")
    invoice = sandbox.invoice(customer, "eur", [20000], pay=None)
    sandbox.client.v1.invoices.void_invoice(invoice.id)
    sandbox.clock(None)

    assert sandbox.materialize().success

    memo = sandbox.netsuite("creditMemo")[f"stripe-{invoice.id}-void"]
    assert amount(memo) == Decimal("200.00")
    assert amount(sandbox.netsuite("invoice")[f"stripe-{invoice.id}"], "amountRemaining") == 0


def test_refunds_become_credit_memo_and_refund_and_standalone_charges_payments(sandbox):
    sandbox.clock(at(DAY, 12))
    customer = sandbox.customer("Refund Me", "usd")
    invoice = sandbox.invoice(customer, "usd", [10000])
    charge = sandbox.charge_of(invoice.id)
    partial = sandbox.client.v1.refunds.create({"charge": charge, "amount": 2500})
    intent = sandbox.client.v1.payment_intents.create(
        {"amount": 7000, "currency": "usd", "customer": customer, "payment_method": "pm_card_visa", "confirm": True}
    )
    standalone_refund = sandbox.client.v1.refunds.create({"payment_intent": intent.id})
    sandbox.clock(None)

    result = sandbox.materialize()

    assert result.success
    memo = sandbox.netsuite("creditMemo")[f"stripe-{partial.id}-cm"]
    assert amount(memo) == Decimal("25.00")
    refunds = sandbox.netsuite("customerRefund")
    assert set(refunds) == {f"stripe-{partial.id}", f"stripe-{standalone_refund.id}"}
    assert amount(refunds[f"stripe-{standalone_refund.id}"], "total") == Decimal("70.00")
    payments = sandbox.netsuite("customerPayment")
    assert amount(payments[f"stripe-{intent.latest_charge}"], "payment") == Decimal("70.00")


def test_missing_mapping_is_quarantined_with_its_fix_and_syncs_once_fixed(tmp_path, monkeypatch):
    mapping = yaml.safe_load((ROOT / "field_mapping.yaml").read_text())
    del mapping["currencies"]["EUR"]
    for subsidiary in mapping["subsidiaries"].values():
        if subsidiary.get("currencies"):
            subsidiary["currencies"] = [c for c in subsidiary["currencies"] if c != "EUR"]
    mapping_file = tmp_path / "field_mapping.yaml"
    mapping_file.write_text(yaml.safe_dump(mapping))
    with running_sandbox(tmp_path, monkeypatch, field_mapping=mapping_file) as sandbox:
        sandbox.clock(at(DAY, 13))
        good = sandbox.invoice(sandbox.customer("Dollar Co", "usd"), "usd", [1000])
        bad = sandbox.invoice(sandbox.customer("Euro GmbH", "eur"), "eur", [2000])
        sandbox.clock(None)

        result = sandbox.materialize()

        assert result.success, "one unmapped currency must not stop the rest"
        assert f"stripe-{good.id}" in sandbox.netsuite("invoice")
        assert f"stripe-{bad.id}" not in sandbox.netsuite("invoice")
        required = checks(result)[("netsuite_sync_plan", "required_fields")]
        assert not required.passed and required.severity.value == "WARN"
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        open_rows = {r["external_id"]: r for r in ledger.open_exceptions(DAY.isoformat())}
        assert open_rows[f"stripe-{bad.id}"]["error_code"] == "UNMAPPED_CURRENCY"
        assert "add EUR under `currencies:` in field_mapping.yaml" in open_rows[f"stripe-{bad.id}"]["fix"]
        report = metadata(result, "sync_exceptions")
        assert report["open_exceptions"] >= 1

        mapping_file.write_text((ROOT / "field_mapping.yaml").read_text())  # the finance user adds EUR back
        fixed = sandbox.materialize()

        assert fixed.success
        assert amount(sandbox.netsuite("invoice")[f"stripe-{bad.id}"]) == Decimal("20.00")
        assert ledger.open_exceptions(DAY.isoformat()) == []


def test_lost_responses_and_a_429_storm_still_land_every_record_exactly_once(tmp_path, monkeypatch):
    # Server allows 2 in flight, the client sends up to 5: many 429s. A third of write answers are lost.
    with running_sandbox(tmp_path, monkeypatch, concurrency_limit=2, lost_response_rate=0.3, latency_ms=5) as sandbox:
        monkeypatch.setenv("NETSUITE_CONCURRENCY", "5")  # misconfigured above the account's real limit
        sandbox.clock(at(DAY, 14))
        customers = [sandbox.customer(f"Storm {i}", "usd") for i in range(4)]

        # One thread per customer: an invoice takes its customer's pending items, so two threads invoicing the
        # same customer at once could each take the other's (one invoice empty, paid at zero, `pay` refused).
        def six_invoices(c: int) -> list[str]:
            return [sandbox.invoice(customers[c], "usd", [1000 + c + 4 * k]).id for k in range(6)]

        with ThreadPoolExecutor(4) as pool:
            invoices = [invoice for batch in pool.map(six_invoices, range(4)) for invoice in batch]
        sandbox.clock(None)

        result = sandbox.materialize()

        assert result.success
        ns_invoices = sandbox.netsuite("invoice")
        assert set(ns_invoices) == {f"stripe-{i}" for i in invoices}
        assert len(sandbox.netsuite("customerPayment")) == 24
        stats = sandbox.netsuite_stats()
        assert stats["concurrency_rejections"] > 0 and stats["faults"]["lost_response"] > 0
        assert checks(result)[("netsuite_invoices", "no_duplicate_external_ids")].passed
        assert checks(result)[("netsuite_invoices", "totals_match_stripe")].passed


@pytest.mark.postgres
def test_ledger_on_postgresql_makes_the_rerun_free(tmp_path, monkeypatch, postgres_database_url):
    with running_sandbox(tmp_path, monkeypatch, database_url=postgres_database_url) as sandbox:
        _four_currency_day(sandbox)
        assert sandbox.materialize().success
        writes = sandbox.netsuite_writes()
        assert sandbox.materialize().success
        assert sandbox.netsuite_writes() == writes
        entries = Ledger(postgres_database_url).entries("netsuite", DAY.isoformat())
        assert sum(1 for e in entries if e.record_type == "invoice") == 4
