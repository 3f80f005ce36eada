"""The receivables check's comparison: Stripe's figures against rows as NetSuite's SuiteQL sends them."""

from __future__ import annotations

from decimal import Decimal

import pytest

from sync_pipeline.assets.receivables import (
    compare_documents,
    expected_documents,
    stripe_collected,
    undeposited_funds,
)
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline_tests.unit.test_mapping_netsuite import EXAMPLE_MAPPING, charge, invoice, line

CODES = {"1": "USD", "4": "KWD"}


@pytest.fixture(scope="module")
def fm() -> FieldMapping:
    return FieldMapping.load(EXAMPLE_MAPPING)


def test_open_invoice_with_the_wrong_amount_remaining_in_netsuite_is_a_difference(fm):
    trees = [{"invoice": invoice([line(10000)], status="open", amount_paid=4000)}]
    expected = expected_documents(trees, fm)
    assert [(d.external_id, d.total, d.remaining) for d in expected] == [
        ("stripe-in_1", Decimal("100.00"), Decimal("60.00"))
    ]
    # SuiteQL sends numbers as strings without trailing zeros.
    rows = [{"externalid": "stripe-in_1", "foreigntotal": "100", "foreignamountremaining": "100"}]
    [difference] = compare_documents(expected, rows, CODES)
    assert (difference["field"], difference["stripe"], difference["netsuite"], difference["difference"]) == (
        "amount remaining",
        "60.00",
        "100",
        "-40.00",
    )
    assert compare_documents(expected, [{**rows[0], "foreignamountremaining": "60"}], CODES) == []


def test_a_missing_invoice_and_a_kwd_total_are_compared_at_netsuites_precision(fm):
    trees = [{"invoice": invoice([line(12345)], currency="kwd")}]
    expected = expected_documents(trees, fm)
    assert expected[0].total == Decimal("12.34")  # 12.345 rounded half-even to NetSuite's 2 decimals
    assert compare_documents(expected, [], CODES)[0]["field"] == "in NetSuite"
    ok = [{"externalid": "stripe-in_1", "foreigntotal": "12.34", "foreignamountremaining": "0"}]
    assert compare_documents(expected, ok, CODES) == []


def test_undeposited_funds_hold_only_the_charges_that_succeeded(fm):
    trees = [
        {"invoice": invoice([line(5000)]), "charges": [charge(amount=5000), charge(charge_id="ch_2", status="failed")]}
    ]
    collected, charge_ids, out_of_band_ids = stripe_collected(
        trees, [{"charge": charge(charge_id="ch_3", amount=700)}], fm
    )
    assert collected == {"USD": Decimal("57.00")}
    assert charge_ids == ["stripe-ch_1", "stripe-ch_3"] and out_of_band_ids == ["stripe-in_1-oob"]
    rows = [
        {"externalid": "stripe-ch_1", "currency": "1", "foreigntotal": "50", "account": "1"},
        {"externalid": "stripe-ch_3", "currency": "1", "foreigntotal": "7", "account": "1"},
        {"externalid": "stripe-in_1-oob", "currency": "1", "foreigntotal": "80", "account": "80"},
    ]
    assert undeposited_funds(rows, CODES, fm.accounts.payments) == {"USD": Decimal("57")}
    # Had the out-of-band payment gone to Undeposited Funds, the check would see 137 against 57.
    wrong = [*rows[:2], {**rows[2], "account": "1"}]
    assert undeposited_funds(wrong, CODES, fm.accounts.payments) == {"USD": Decimal("137")}


def test_net_lines_see_a_refund_that_did_not_reverse_its_tax(fm):
    from sync_pipeline.assets.receivables import compare_net_lines, expected_net_lines, netsuite_net_lines
    from sync_pipeline_tests.unit.test_mapping_netsuite import refund, tax

    inv = invoice([line(10000, taxes=[tax(1900)])])  # 100.00 + 19.00 VAT
    trees = [{"invoice": inv, "refunds": [refund(amount=5950)]}]  # half refunded
    net = expected_net_lines(trees, [], fm)
    assert net.expected == {("USD", "revenue"): Decimal("50.00"), ("USD", "tax"): Decimal("9.50")}
    assert "stripe-re_1-cm" in net.credit_ids
    documents = [{"id": "7", "currency": "1"}, {"id": "8", "currency": "1"}]
    # As SuiteQL sends them: invoice item lines negative, credit memo lines positive.
    invoice_lines = [
        {"transaction": "7", "item": "101", "foreignamount": "-100", "mainline": "F"},
        {"transaction": "7", "item": "120", "foreignamount": "-19", "mainline": "F"},
    ]
    right = [
        {"transaction": "8", "item": "101", "foreignamount": "50", "mainline": "F"},
        {"transaction": "8", "item": "120", "foreignamount": "9.5", "mainline": "F"},
    ]
    assert compare_net_lines(net.expected, netsuite_net_lines(documents, invoice_lines + right, CODES, fm)) == []
    # A refund booked wholly to revenue leaves the tax collected in NetSuite's books.
    wrong = [{"transaction": "8", "item": "100", "foreignamount": "59.5", "mainline": "F"}]
    differences = compare_net_lines(net.expected, netsuite_net_lines(documents, invoice_lines + wrong, CODES, fm))
    assert {(d["field"], d["stripe"], d["netsuite"]) for d in differences} == {
        ("revenue", "50.00", "40.5"),
        ("tax", "9.50", "19"),
    }


def test_open_receivable_is_open_invoices_less_the_credit_balance_on_both_sides(fm):
    from sync_pipeline.assets.receivables import netsuite_open_receivables, stripe_open_receivable
    from sync_pipeline_tests.unit.test_mapping_netsuite import customer

    acme = {**customer(currency="usd"), "balance": -2000}  # 20.00 of credit on the Stripe balance
    invoices = [
        invoice([line(10000)], status="open", amount_paid=4000, invoice_id="in_open"),  # 60.00 remaining
        invoice([line(5000)], invoice_id="in_paid"),
        invoice([line(7000)], status="uncollectible", amount_paid=0, invoice_id="in_bad"),  # written off
    ]
    assert stripe_open_receivable(acme, invoices, fm) == {"USD": Decimal("40.00")}
    rows = [
        {"entity": "1001", "type": "CustInvc", "currency": "1", "foreignamountremaining": "60"},
        {"entity": "1001", "type": "CustInvc", "currency": "1", "foreignamountremaining": "0"},
        {"entity": "1001", "type": "CustCred", "currency": "1", "foreignamountremaining": "20"},
        {"entity": "1002", "type": "CustPymt", "currency": "1", "foreignamountremaining": "5"},
    ]
    assert netsuite_open_receivables(rows, CODES) == {("1001", "USD"): Decimal("40"), ("1002", "USD"): Decimal("-5")}
