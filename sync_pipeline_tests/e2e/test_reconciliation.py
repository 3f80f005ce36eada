"""Month-end reconciliation (issue 13): the `reconciliation` asset and its check read NetSuite back and compare with
Stripe's own figures per day, currency and category; a record changed in NetSuite behind the pipeline's back is a
red check naming the document and both amounts."""

from __future__ import annotations

import argparse
import io
import json
from decimal import Decimal

import pytest

from sync_pipeline.reconcile_cli import run_reconcile
from sync_pipeline_tests.e2e import harness

pytestmark = pytest.mark.e2e


def test_the_books_of_a_day_match_until_someone_edits_netsuite(tmp_path, monkeypatch):
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
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


def _args(day: str, fmt: str = "table", currency: str | None = None) -> argparse.Namespace:
    return argparse.Namespace(start=day, end=day, currency=currency, format=fmt, account=None)
