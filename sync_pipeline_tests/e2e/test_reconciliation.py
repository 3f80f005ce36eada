"""Month-end reconciliation (issue 13): the `reconciliation` asset and its check read NetSuite back and compare with
Stripe's own figures per day, currency and category; a record changed in NetSuite behind the pipeline's back is a
red check naming the document and both amounts."""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
from decimal import Decimal

import pytest
import requests

from sync_pipeline.reconcile_cli import run_reconcile
from sync_pipeline_tests.e2e import harness

pytestmark = pytest.mark.e2e


def test_the_books_of_a_day_match_until_someone_edits_netsuite(tmp_path, monkeypatch):
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        monkeypatch.setenv("SYNC_START_DATE", harness.DAY.isoformat())  # the day is the first: UF compared from it
        box.clock(harness.at(harness.DAY, 9))
        acme = box.customer("Acme Books", "eur")
        paid = box.invoice(acme, "eur", [1741051])  # EUR 17410.51: read back exactly, never 17410.5
        refunded = box.invoice(acme, "eur", [5000])
        box.client.v1.refunds.create({"charge": box.charge_of(refunded.id), "amount": 1250})
        box.invoice(acme, "eur", [3000], pay=None)  # open
        box.clock(None)

        result = box.materialize()

        assert result.success, harness.step_failures(result)
        check = harness.checks(result)[("reconciliation", "books_match_stripe")]
        assert check.passed, check.metadata["first_differences"].value
        summary = {
            (r["currency"], r["category"]): r for r in result.output_for_node("reconciliation").to_dict("records")
        }
        assert summary[("EUR", "invoiced")]["stripe"] == summary[("EUR", "invoiced")]["netsuite"] == "17490.51"
        assert summary[("EUR", "collected")]["netsuite"] == "17460.51"
        assert summary[("EUR", "refunded")]["netsuite"] == "12.50"
        assert summary[("EUR", "open_receivables")]["netsuite"] == "30.00"
        # What the two payments put into Undeposited Funds; the refund was paid from the refunds account.
        assert summary[("EUR", "undeposited_funds")]["stripe"] == summary[("EUR", "undeposited_funds")]["netsuite"]
        assert summary[("EUR", "undeposited_funds")]["netsuite"] == "17460.51"
        # The same comparison from a shell: exit 0, the day's totals as exact text.
        out = io.StringIO()
        day = harness.DAY.isoformat()
        assert run_reconcile(_args(day, fmt="json"), out) == 0, out.getvalue()
        printed = json.loads(out.getvalue())
        assert printed["documents_differing"] == 0
        assert {"currency": "EUR", "category": "invoiced", "stripe": "17490.51"}.items() <= next(
            r for r in printed["days"][0]["totals"] if r["category"] == "invoiced"
        ).items()
        plots = harness.metadata(result, "reconciliation")
        assert plots["stripe_invoiced_eur"] == plots["netsuite_invoiced_eur"] == pytest.approx(17490.51)

        # Someone changes the invoice in NetSuite: the next run's check is red and names it, with exact amounts.
        box.edit_in_netsuite(
            "invoice",
            f"stripe-{paid.id}",
            {"item": {"items": [{"item": {"id": "100"}, "quantity": 1, "amount": Decimal("17420.51")}]}},
        )
        again = box.materialize()
        check = harness.checks(again)[("reconciliation", "books_match_stripe")]
        assert not check.passed
        assert f"stripe-{paid.id}" in check.description
        assert "17410.51" in check.metadata["first_differences"].value
        assert "-10.00" in check.metadata["first_differences"].value
        out = io.StringIO()
        assert run_reconcile(_args(day, currency="eur"), out) == 1
        assert f"stripe-{paid.id}" in out.getvalue() and "17420.51" in out.getvalue()
        assert "1 document(s) differ from Stripe" in out.getvalue()


def test_undeposited_funds_per_day_equal_stripes_money_not_paid_out_yet_until_a_payment_is_edited(
    tmp_path, monkeypatch
):
    first, second, third = harness.DAY, harness.DAY + dt.timedelta(days=1), harness.DAY + dt.timedelta(days=2)
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        monkeypatch.setenv("SYNC_START_DATE", first.isoformat())
        # Funds are available at once and a payout arrives the next day: it carries what was charged before it.
        box.configure_stripe(balance_available_days=0, payout_arrival_days=1)
        box.clock(harness.at(first, 9))
        acme = box.customer("Acme Funds", "usd")
        box.invoice(acme, "usd", [10000])
        box.invoice(acme, "usd", [5050])
        box.invoice(box.customer("Acme Euro", "eur"), "eur", [2000])
        box.clock(harness.at(first, 12))
        (payout,) = sandbox_post(box, "payouts", {"currency": "usd"})
        box.clock(harness.at(first, 20))
        late = box.invoice(acme, "usd", [2525])  # after the payout: stays in Undeposited Funds
        box.clock(payout["arrival_date"] + 3600)  # the payout arrives (paid) on the second day
        box.clock(None)
        assert dt.datetime.fromtimestamp(payout["arrival_date"], tz=dt.UTC).date() == second

        results = {day: box.materialize(day) for day in (first, second, third)}

        expected = {first: ("175.75", "20.00"), second: ("25.25", "20.00"), third: ("25.25", "20.00")}
        for day, result in results.items():
            assert result.success, harness.step_failures(result)
            check = harness.checks(result)[("reconciliation", "books_match_stripe")]
            assert check.passed, (day, check.metadata["first_differences"].value)
            funds = {
                r["currency"]: (r["stripe"], r["netsuite"])
                for r in result.output_for_node("reconciliation").to_dict("records")
                if r["category"] == "undeposited_funds"
            }
            usd, eur = expected[day]
            assert funds == {"USD": (usd, usd), "EUR": (eur, eur)}, day
        plots = harness.metadata(results[second], "reconciliation")
        assert plots["stripe_undeposited_funds_usd"] == plots["netsuite_undeposited_funds_usd"] == pytest.approx(25.25)

        # Someone moves the payment still in Undeposited Funds to another account: the next run's check is red on
        # USD with both figures (the money Stripe has not paid out is no longer where the deposit will look for it).
        box.edit_in_netsuite("customerPayment", f"stripe-{box.charge_of(late.id)}", {"account": {"id": "80"}})
        again = box.materialize(third)
        check = harness.checks(again)[("reconciliation", "books_match_stripe")]
        assert not check.passed
        assert "Undeposited Funds (USD)" in check.description and "25.25 vs 0.00" in check.description
        (row,) = [r for r in again.output_for_node("reconciliation").to_dict("records") if r["currency"] == "USD"]
        assert (row["category"], row["stripe"], row["netsuite"], row["difference"]) == (
            "undeposited_funds", "25.25", "0.00", "25.25"
        )  # fmt: skip
        # The shell: the first day from the stored movements, the range's from Stripe; exit 1, the row shown.
        out = io.StringIO()
        args = argparse.Namespace(start=second.isoformat(), end=third.isoformat(), currency="usd", format="table")
        assert run_reconcile(argparse.Namespace(**vars(args), account=None), out) == 1, out.getvalue()
        printed = out.getvalue()
        assert f"Undeposited Funds (USD) at end of {third}" in printed and "0.00" in printed
        assert "2 document(s) differ from Stripe" in printed  # the second and the third day's balances
        # Without the first day's stored movements the balance is not comparable, and the output says why.
        (tmp_path / "dagster_home" / "snapshots" / "stripe_undeposited_movements" / f"{first}.parquet").unlink()
        out = io.StringIO()
        assert run_reconcile(_args(third.isoformat(), currency="usd"), out) == 0  # nothing found off, and it says so
        assert f"stripe_undeposited_movements was never materialized for {first}" in out.getvalue()
        assert "Undeposited Funds (USD)" not in out.getvalue()
        assert "Undeposited Funds not compared on 1 day(s)" in out.getvalue()


def sandbox_post(box: harness.Sandbox, path: str, body: dict) -> list:
    response = requests.post(f"{box.stripe_url}/_sandbox/{path}", json=body, timeout=30)
    response.raise_for_status()
    return response.json()


def _args(day: str, fmt: str = "table", currency: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(start=day, end=day, currency=currency, format=fmt, account=None)
