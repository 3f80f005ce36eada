"""A seeded month with every receivables case (issue 11), synced day by day through Dagster into the NetSuite
stand-in, then NetSuite read back over its API and compared with Stripe's own figures.

What is asserted is what a controller checks at month end: each invoice's total and amount remaining, the cash in
Undeposited Funds per day and currency, and that no amount reached NetSuite in a precision its currency lacks.
The figures per invariant are printed (pytest -s shows them).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from decimal import Decimal

import dagster as dg
import pytest
import requests

from sync_pipeline.sandbox.runner import running_sandbox
from sync_pipeline.sandbox.scenario import ScenarioOptions
from sync_pipeline_tests.e2e import harness

pytestmark = pytest.mark.e2e

END = dt.date(2026, 10, 31)
OPTIONS = ScenarioOptions(days=25, invoices=60, seed=5, end_date=END, receivables_cases=True)


@pytest.fixture(scope="module")
def synced_month(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("receivables")
    with running_sandbox(seed_options=OPTIONS) as sandbox, pytest.MonkeyPatch.context() as env:
        for name, value in sandbox.env().items():
            env.setenv(name, value)
        home = tmp / "dagster_home"
        home.mkdir()
        env.setenv("DAGSTER_HOME", str(home))
        env.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp / 'ledger.sqlite'}")
        start = END - dt.timedelta(days=OPTIONS.days - 1)
        env.setenv("SYNC_START_DATE", start.isoformat())
        from sync_pipeline.definitions import ALL_ASSETS, build_resources

        results = {}
        day = start
        while day <= END:
            results[day] = dg.materialize(ALL_ASSETS, partition_key=day.isoformat(), resources=build_resources())
            day += dt.timedelta(days=1)
        yield sandbox, results


def _check_total(results, key: str) -> int:
    """A figure of receivables_match_stripe summed over the month's days."""
    return sum(
        e.metadata[key].value
        for r in results.values()
        for e in r.get_asset_check_evaluations()
        if e.check_name == "receivables_match_stripe"
    )


def _differences(results) -> list[dict]:
    rows = []
    for result in results.values():
        frame = result.output_for_node("receivables_reconciliation")
        rows += frame.to_dict("records")
    return rows


def test_every_day_runs_and_every_invoice_and_undeposited_funds_agree_with_stripe(synced_month):
    sandbox, results = synced_month
    assert all(r.success for r in results.values())
    cases = sandbox.summary.receivables
    assert all(cases.get(case) for case in ("credit_note_paid_split", "paid_out_of_band", "kwd_coupon_and_tax"))
    checked = _check_total(results, "documents_checked")
    net_lines = _check_total(results, "net_lines_compared")
    customers = _check_total(results, "customers_compared")
    cash = _check_total(results, "cash_currencies_compared")
    differences = _differences(results)
    by_field = Counter(d["field"] for d in differences)
    print(
        f"\n[receivables] invoices checked {checked}; day-currency-category line totals compared {net_lines}; "
        f"customers' open receivables compared {customers} (each day, its customers); "
        f"day-currency Undeposited Funds totals compared {cash}; "
        f"differences {len(differences)} {dict(by_field)}"
    )
    for d in differences:
        print(f"  {d['document']} {d['field']}: Stripe {d['stripe']} NetSuite {d['netsuite']} ({d['difference']})")
    assert checked >= 60 and net_lines >= 25 * 2 and customers >= 15
    assert differences == []


def test_no_amount_reached_netsuite_in_a_precision_its_currency_lacks(synced_month):
    sandbox, _ = synced_month
    url = sandbox.urls()["netsuite"].rstrip("/")
    violations = requests.get(f"{url}/_sandbox/precision_violations", timeout=30).json()
    print(f"\n[precision] amounts sent with more decimals than the NetSuite currency holds: {len(violations)}")
    assert violations == []


def test_each_case_is_in_netsuite_as_its_own_record(synced_month):
    sandbox, _ = synced_month
    url = sandbox.urls()["netsuite"].rstrip("/")
    cases = sandbox.summary.receivables

    def external_ids(record_type: str) -> set[str]:
        response = requests.get(f"{url}/_sandbox/records/{record_type}", timeout=30)
        response.raise_for_status()
        body = response.json()
        records = body.get("records", body) if isinstance(body, dict) else body
        values = records.values() if isinstance(records, dict) else records
        return {r.get("externalId") for r in values if isinstance(r, dict)}

    memos, payments, refunds = (
        external_ids("creditMemo"),
        external_ids("customerPayment"),
        external_ids("customerRefund"),
    )
    split = cases["credit_note_paid_split"][0]
    assert f"stripe-{split['credit_note']}" in memos
    assert f"stripe-{split['credit_note']}-oob" in refunds
    assert f"stripe-{cases['paid_out_of_band'][0]['invoice']}-oob" in payments
    # Voided before the first sync, on an invoice paid since: nothing of it is booked (nothing to reverse).
    voided = cases["credit_note_voided"][0]
    assert f"stripe-{voided['credit_note']}" not in memos


def _sandbox_records(url: str, record_type: str) -> list[dict]:
    response = requests.get(f"{url}/_sandbox/records/{record_type}", timeout=60)
    response.raise_for_status()
    return response.json()["records"]


def test_open_receivables_per_customer_and_currency_equal_stripes(synced_month):
    """Invariant 2: NetSuite's open invoices less unapplied credits and payments, per customer and currency, equal
    Stripe's open invoices' amount_remaining less the customer's credit balance."""
    import stripe

    from sync_pipeline.mapping.money import to_decimal

    sandbox, _ = synced_month
    env = sandbox.env()
    client = stripe.StripeClient(env["STRIPE_API_KEY"], base_addresses={"api": env["STRIPE_API_BASE"]})
    stripe_open: Counter = Counter()
    netsuite_id_of: dict[str, str] = {}
    url = sandbox.urls()["netsuite"].rstrip("/")
    by_external_id = {c.get("externalId"): c["id"] for c in _sandbox_records(url, "customer")}
    for customer in client.v1.customers.list({"limit": 100}).auto_paging_iter():
        linked = customer.to_dict().get("metadata", {}).get("netsuite_customer_id")
        netsuite_id = str(linked) if linked else by_external_id.get(f"stripe-{customer.id}")
        if netsuite_id is None:
            continue  # never invoiced: not in NetSuite
        netsuite_id_of[customer.id] = netsuite_id
        if customer.balance and customer.currency:
            code = customer.currency.upper()
            stripe_open[(netsuite_id, code)] += to_decimal(customer.balance, code)  # negative: the customer's credit
    for invoice in client.v1.invoices.list({"limit": 100, "status": "open"}).auto_paging_iter():
        if invoice.customer in netsuite_id_of:
            code = invoice.currency.upper()
            stripe_open[(netsuite_id_of[invoice.customer], code)] += to_decimal(invoice.amount_remaining, code)
    currency_code = {"1": "USD", "2": "EUR", "3": "JPY", "4": "KWD", "5": "GBP"}
    netsuite_open: Counter = Counter()
    for record_type, party, field, sign in (
        ("invoice", "entity", "amountRemaining", 1),
        ("creditMemo", "entity", "unapplied", -1),
        ("customerPayment", "customer", "unapplied", -1),
    ):
        for record in _sandbox_records(url, record_type):
            key = (str(record[party]["id"]), currency_code[str(record["currency"]["id"])])
            netsuite_open[key] += sign * Decimal(str(record.get(field) or 0))
    keys = {k for k in set(stripe_open) | set(netsuite_open) if k[0] in set(netsuite_id_of.values())}
    differences = {k: (stripe_open[k], netsuite_open[k]) for k in sorted(keys) if stripe_open[k] != netsuite_open[k]}
    print(f"\n[open receivables] customer-currency pairs checked {len(keys)}; differences {len(differences)}")
    for key, (in_stripe, in_netsuite) in differences.items():
        print(f"  {key}: Stripe {in_stripe} NetSuite {in_netsuite}")
    assert differences == {}


def test_a_credit_note_booked_then_voided_then_the_invoice_paid_lands_right(tmp_path, monkeypatch):
    """The lifecycle a sensor sees: the note's memo is booked while the invoice is open; once the note is voided
    and the invoice paid in full, the memo is reversed and the whole payment applies."""
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        box.clock(harness.at(harness.DAY, 9))
        customer = box.customer("Voided Note GmbH", "usd")
        invoice = box.invoice(customer, "usd", [10000], pay=None)
        note = box.client.v1.credit_notes.create({"invoice": invoice.id, "amount": 2500})
        box.clock(None)
        assert box.materialize().success
        memo = box.netsuite("creditMemo")[f"stripe-{note.id}"]
        assert harness.amount(box.netsuite("invoice")[f"stripe-{invoice.id}"], "amountRemaining") == Decimal("75.00")

        box.client.v1.credit_notes.void_credit_note(note.id)
        box.client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
        result = box.materialize()

        assert result.success
        invoices = box.netsuite("invoice")
        assert harness.amount(invoices[f"stripe-{invoice.id}"], "amountRemaining") == 0
        reversal = invoices[f"stripe-{note.id}-reversal"]
        assert harness.amount(reversal) == Decimal("25.00") and harness.amount(reversal, "amountRemaining") == 0
        memo = box.netsuite("creditMemo")[f"stripe-{note.id}"]
        assert harness.amount(memo, "unapplied") == 0
        payment = next(iter(box.netsuite("customerPayment").values()))
        assert harness.amount(payment, "payment") == Decimal("100.00")
        assert harness.checks(result)[("receivables_reconciliation", "receivables_match_stripe")].passed
