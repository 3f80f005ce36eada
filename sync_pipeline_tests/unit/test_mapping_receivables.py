"""Receivables that match Stripe (issue 11), pure mapping: credit notes, refunds reversing their tax,
out-of-band payments, write-offs, customers in several currencies and NetSuite's currency precision.

Each test states what NetSuite ends up holding (record, amount to the cent, what it applies to), built from
Stripe's own example objects as in test_mapping_netsuite.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_pipeline.assets.netsuite import map_partition
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import allocate, currency_exponent, round_document, to_decimal
from sync_pipeline.mapping.netsuite import map_credit_note, map_invoice, map_invoice_tree
from sync_pipeline_tests.unit.test_mapping_netsuite import (
    EXAMPLE_MAPPING,
    NOV_2,
    NOV_5,
    charge,
    customer,
    invoice,
    invoice_payment,
    line,
    line_amounts,
    mapping_with,
    only,
    refund,
    stripe_object,
    tax,
)

NOV_10 = int(dt.datetime(2026, 11, 10, 9, 0, tzinfo=dt.UTC).timestamp())
NOV_20 = int(dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.UTC).timestamp())


@pytest.fixture(scope="module")
def fm() -> FieldMapping:
    return FieldMapping.load(EXAMPLE_MAPPING)


def applied(record) -> list[tuple[str, bool, Decimal | None]]:
    return [
        (i["doc"]["externalId"], i["apply"], i.get("amount")) for i in record.body.get("apply", {}).get("items", [])
    ]


def taxed_discounted_invoice(**overrides):
    """USD 100.00 Pro + 50.00 Onboarding, 10.00 discount on Pro, 19 % VAT on the discounted Pro: total 157.10."""
    lines = [
        line(10000, taxes=[tax(1710)], discounts=[{"amount": 1000, "discount": "di_10off"}], line_id="il_pro"),
        line(5000, price="price_onb", product="prod_onboarding", line_id="il_onb"),
    ]
    return invoice(lines, discounts=[{"amount": 1000, "discount": "di_10off"}], **overrides)


def credit_note(inv: dict, lines: list[dict], *, note_id: str = "cn_1", **overrides) -> dict:
    total = sum(
        cn_line["amount"]
        - sum(d["amount"] for d in cn_line["discount_amounts"])
        + sum(t["amount"] for t in cn_line["taxes"] if t["tax_behavior"] == "exclusive")
        for cn_line in lines
    )
    pre = inv["status"] == "open"
    note = stripe_object(
        "credit_note",
        id=note_id,
        invoice=inv["id"],
        customer=inv["customer"],
        currency=inv["currency"],
        number=f"{inv['number']}-CN-01",
        status="issued",
        type="pre_payment" if pre else "post_payment",
        total=total,
        pre_payment_amount=total if pre else 0,
        post_payment_amount=0 if pre else total,
        out_of_band_amount=None,
        refunds=[],
        created=NOV_10,
        effective_at=NOV_10,
        voided_at=None,
    )
    note.update(overrides)
    note["lines"] = {"object": "list", "data": lines, "has_more": False}
    return note


def credit_line(invoice_line: str, amount: int, *, discount: int = 0, vat: int = 0, line_id: str = "cnli_1") -> dict:
    return {
        "id": line_id,
        "object": "credit_note_line_item",
        "type": "invoice_line_item",
        "invoice_line_item": invoice_line,
        "amount": amount,
        "description": f"credit of {invoice_line}",
        "quantity": 1,
        "discount_amounts": [{"amount": discount, "discount": "di_10off"}] if discount else [],
        "taxes": [tax(vat)] if vat else [],
        "pretax_credit_amounts": [],
    }


# -- the one money conversion: allocation and rounding ----------------------------------------------


@given(
    amount=st.integers(min_value=-(10**9), max_value=10**9),
    weights=st.lists(st.integers(min_value=-(10**7), max_value=10**7), min_size=1, max_size=12).filter(
        lambda w: sum(w) != 0
    ),
)
def test_allocation_always_sums_and_each_share_is_within_one_unit_of_its_proportion(amount, weights):
    shares = allocate(amount, weights)
    assert sum(shares) == amount
    for share, weight in zip(shares, weights, strict=True):
        exact = Decimal(amount) * weight / sum(weights)
        assert abs(share - exact) < 1


@given(
    lines=st.lists(st.integers(min_value=-(10**8), max_value=10**8), min_size=1, max_size=15),
    currency=st.sampled_from(["KWD", "BHD", "USD", "JPY", "EUR"]),
    places=st.sampled_from([0, 2]),
)
def test_rounded_lines_plus_rounding_line_equal_the_rounded_total_and_the_residue_is_below_one_unit(
    lines, currency, places
):
    places = min(places, currency_exponent(currency))
    doc = round_document(lines, currency, places)
    assert sum(doc.lines, Decimal(0)) + doc.rounding == doc.total
    assert doc.total + doc.residue == to_decimal(sum(lines), currency)
    assert abs(doc.residue) <= Decimal(1).scaleb(-places) / 2
    assert all(amount.as_tuple().exponent == -places for amount in (*doc.lines, doc.total))


def test_ugx_is_two_decimal_in_stripes_api():
    # Stripe's "special cases": UGX amounts are sent in two decimals though it is shown zero-decimal.
    assert currency_exponent("ugx") == 2
    assert currency_exponent("jpy") == 0


# -- currency precision: a three-decimal currency at NetSuite's two ---------------------------------


def test_kwd_invoice_is_sent_at_two_decimals_with_a_rounding_line_and_the_residue_reported(fm):
    # 12.345 + 0.618 tax = 12.963 KWD: lines round half-even to 12.34 and 0.62 (12.96); the total 12.963
    # rounds to 12.96, so no rounding line is needed here ...
    inv = invoice([line(12345, taxes=[tax(618)])], currency="kwd")
    record = only(map_invoice(inv, fm), "invoice")
    assert line_amounts(record) == [Decimal("12.34"), Decimal("0.62")]
    assert record.residue_minor == 3  # 0.003 KWD left out, reported per day
    # ... while 1.005 + 1.005 rounds each line to 1.00 (half-even) but the total 2.010 is 2.01: a rounding line.
    inv = invoice([line(1005, line_id="il_a"), line(1005, line_id="il_b")], currency="kwd", invoice_id="in_2")
    record = only(map_invoice(inv, fm), "invoice")
    assert line_amounts(record) == [Decimal("1.00"), Decimal("1.00"), Decimal("0.01")]
    assert record.body["item"]["items"][-1]["item"] == {"id": "140"}
    assert record.residue_minor == 0


def test_rounding_without_a_rounding_item_is_an_issue_naming_the_setting(fm):
    inv = invoice([line(1005, line_id="il_a"), line(1005, line_id="il_b")], currency="kwd")
    result = map_invoice(inv, mapping_with(items__rounding=None))
    assert not result.records
    assert result.issues[0].error_code == "UNMAPPED_ITEM"
    assert "items.rounding" in result.issues[0].fix


def test_invoice_date_is_stripes_effective_at_for_a_backdated_invoice(fm):
    inv = invoice([line(5000)], effective_at=int(dt.datetime(2026, 10, 31, 12, tzinfo=dt.UTC).timestamp()))
    assert only(map_invoice(inv, fm), "invoice").body["tranDate"] == "2026-10-31"


# -- refunds reverse their share of the invoice's lines, tax included ---------------------------------


def test_partial_refund_reverses_items_discount_and_tax_by_largest_remainder(fm):
    inv = taxed_discounted_invoice()
    assert inv["total"] == 15710
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv)],
        charges=[charge(amount=15710)],
        refunds=[refund(amount=5000)],
    )
    assert not result.issues
    memo = only(result, "creditMemo")
    # 5000 over (10000, 5000, -1000, 1710) of 15710 is 3182.67, 1591.34, -318.27, 544.24: floors 3182, 1591,
    # -319, 544 leave 2 cents, which go to the largest remainders (the discount's .73, the Pro line's .67).
    assert line_amounts(memo) == [Decimal("31.83"), Decimal("15.91"), Decimal("-3.18"), Decimal("5.44")]
    assert [i["item"]["id"] for i in memo.body["item"]["items"]] == ["101", "103", "110", "120"]
    assert applied(memo) == [("stripe-in_1", False, None)]  # stays credit for the customer refund
    customer_refund = only(result, "customerRefund")
    assert applied(customer_refund) == [("stripe-re_1-cm", True, Decimal("50.00"))]


def test_refund_of_a_partially_paid_open_invoice_leaves_stripes_amount_remaining(fm):
    inv = invoice([line(10000)], status="open", amount_paid=4000)
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv, amount=4000)],
        charges=[charge(amount=4000)],
        refunds=[refund(amount=4000)],
    )
    assert not result.issues
    payment = only(result, "customerPayment")
    assert applied(payment) == [("stripe-in_1", True, Decimal("40.00"))]
    memo = only(result, "creditMemo")
    # Not applied to the open invoice (Stripe's refund leaves its 60.00 remaining): the customer refund takes it.
    assert applied(memo) == [("stripe-in_1", False, None)]
    assert applied(only(result, "customerRefund")) == [("stripe-re_1-cm", True, Decimal("40.00"))]


# -- credit notes -----------------------------------------------------------------------------------------


def test_credit_note_before_payment_is_a_credit_memo_applied_to_the_invoice_with_its_discount_and_tax(fm):
    inv = taxed_discounted_invoice(status="open", pre_payment_credit_notes_amount=5985)
    note = credit_note(inv, [credit_line("il_pro", 5000, discount=500, vat=855), credit_line("il_onb", 630)])
    result = map_credit_note(note, inv, fm)
    assert not result.issues
    memo = only(result, "creditMemo")
    assert memo.external_id == "stripe-cn_1"
    assert [i["item"]["id"] for i in memo.body["item"]["items"]] == ["101", "103", "110", "120"]
    assert line_amounts(memo) == [Decimal("50.00"), Decimal("6.30"), Decimal("-5.00"), Decimal("8.55")]
    assert applied(memo) == [("stripe-in_1", True, Decimal("59.85"))]
    assert memo.body["tranDate"] == "2026-11-10"


def test_payment_after_a_pre_payment_credit_note_applies_only_what_was_left_due(fm):
    inv = taxed_discounted_invoice(pre_payment_credit_notes_amount=5355, amount_paid=10355)
    note = credit_note({**inv, "status": "open"}, [credit_line("il_pro", 5000, discount=500, vat=855)])
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv, amount=10355)],
        charges=[charge(amount=10355)],
        credit_notes=[note],
    )
    assert not result.issues
    # 157.10 less the 53.55 credit note: the card paid 103.55, the memo covers the rest.
    assert applied(only(result, "customerPayment")) == [("stripe-in_1", True, Decimal("103.55"))]
    assert applied(only(result, "creditMemo"))[0] == ("stripe-in_1", True, Decimal("53.55"))


def test_credit_note_after_payment_refunds_credits_and_pays_out_of_band_each_to_its_home(fm):
    inv = invoice([line(10000)])
    note = credit_note(
        inv,
        [credit_line("il_1", 6000)],
        refunds=[{"refund": "re_cn", "amount_refunded": 3000, "type": "refund"}],
        out_of_band_amount=1000,
    )
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv)],
        charges=[charge(amount=10000)],
        refunds=[refund(refund_id="re_cn", amount=3000)],
        credit_notes=[note],
    )
    assert not result.issues
    memo = only(result, "creditMemo")  # the credit note's memo only: the refund makes no memo of its own
    assert memo.external_id == "stripe-cn_1" and memo.amount_minor == 6000
    assert applied(memo) == [("stripe-in_1", False, None)]  # 20.00 stays unapplied: the customer's balance
    refunds = {r.external_id: r for r in result.of_type("customerRefund")}
    assert applied(refunds["stripe-re_cn"]) == [("stripe-cn_1", True, Decimal("30.00"))]
    assert refunds["stripe-re_cn"].body["account"] == {"id": "70"}
    assert applied(refunds["stripe-cn_1-oob"]) == [("stripe-cn_1", True, Decimal("10.00"))]
    assert refunds["stripe-cn_1-oob"].body["account"] == {"id": "80"}  # never a Stripe cash account


def test_voided_credit_note_is_reversed_by_an_invoice_its_memo_applies_to(fm):
    inv = invoice([line(10000)], status="open", amount_paid=0)
    note = credit_note(inv, [credit_line("il_1", 2500)], status="void", voided_at=NOV_20)
    result = map_credit_note(note, inv, fm)
    assert [r.record_type for r in result.records] == ["invoice", "creditMemo"]
    reversal, memo = result.records
    assert reversal.external_id == "stripe-cn_1-reversal" and line_amounts(reversal) == [Decimal("25.00")]
    assert reversal.body["tranDate"] == "2026-11-20"
    # The original invoice owes its full 100.00 again; memo and reversal cancel out, both visible.
    assert applied(memo) == [("stripe-cn_1-reversal", True, Decimal("25.00")), ("stripe-in_1", False, None)]
    assert ("invoice", "stripe-cn_1-reversal") in memo.depends_on


# -- out-of-band payments: never Undeposited Funds -----------------------------------------------------


def test_invoice_paid_out_of_band_is_a_payment_to_the_out_of_band_account(fm):
    inv = invoice([line(8000)], status_transitions={"finalized_at": NOV_2, "paid_at": NOV_5})
    result = map_invoice_tree(inv, fm)
    assert not result.issues
    payment = only(result, "customerPayment")
    assert payment.external_id == "stripe-in_1-oob"
    assert payment.body["account"] == {"id": "80"}
    assert payment.body["payment"] == Decimal("80.00")
    assert applied(payment) == [("stripe-in_1", True, Decimal("80.00"))]


def test_out_of_band_as_credit_memo_when_configured(fm):
    inv = invoice([line(8000)], status_transitions={"finalized_at": NOV_2, "paid_at": NOV_5})
    result = map_invoice_tree(inv, mapping_with(out_of_band_payments="credit_memo"))
    memo = only(result, "creditMemo")
    assert memo.external_id == "stripe-in_1-oob"
    assert memo.body["item"]["items"][0]["item"] == {"id": "160"}
    assert applied(memo) == [("stripe-in_1", True, Decimal("80.00"))]
    assert not result.of_type("customerPayment")


def test_out_of_band_without_an_account_is_an_issue_with_the_fix(fm):
    inv = invoice([line(8000)])
    result = map_invoice_tree(inv, mapping_with(accounts__out_of_band=None))
    assert result.issues[0].error_code == "UNMAPPED_ACCOUNT"
    assert "accounts.out_of_band" in result.issues[0].fix


# -- uncollectible ----------------------------------------------------------------------------------------


def test_paid_after_being_written_off_reverses_the_write_off_and_applies_the_payment(fm):
    transitions = {"finalized_at": NOV_2, "marked_uncollectible_at": NOV_10, "paid_at": NOV_20}
    inv = invoice([line(10000)], status_transitions=transitions)
    paid = invoice_payment(inv)
    paid["status_transitions"]["paid_at"] = NOV_20
    result = map_invoice_tree(inv, fm, invoice_payments=[paid], charges=[charge(amount=10000)])
    assert not result.issues
    write_off = only(result, "creditMemo")
    assert write_off.external_id == "stripe-in_1-void"
    assert write_off.body["item"]["items"][0]["item"] == {"id": "150"}
    assert applied(write_off) == [("stripe-in_1-void-reversal", True, Decimal("100.00")), ("stripe-in_1", False, None)]
    reversal = [r for r in result.of_type("invoice") if r.external_id == "stripe-in_1-void-reversal"]
    assert reversal and line_amounts(reversal[0]) == [Decimal("100.00")]
    assert applied(only(result, "customerPayment")) == [("stripe-in_1", True, Decimal("100.00"))]


def test_leave_open_policy_keeps_an_uncollectible_invoice_open(fm):
    inv = invoice([line(10000)], status="uncollectible", amount_paid=0)
    result = map_invoice(inv, mapping_with(uncollectible_invoices="leave_open"))
    assert [r.record_type for r in result.records] == ["invoice"]
    assert "leave_open" in result.skips[0].reason


def test_void_invoice_after_a_pre_payment_credit_note_reverses_only_what_is_open(fm):
    inv = taxed_discounted_invoice(status="void", amount_paid=0, amount_remaining=9725)
    memo = only(map_invoice(inv, fm), "creditMemo")
    assert memo.amount_minor == 9725
    assert sum(line_amounts(memo)) == Decimal("97.25")
    assert [i["item"]["id"] for i in memo.body["item"]["items"]] == ["101", "103", "110", "120"]


# -- customers in several currencies ----------------------------------------------------------------------


def test_a_customer_invoiced_in_two_currencies_on_one_day_is_one_record_with_both_currencies(fm):
    new_customer = customer(currency=None)
    trees = [
        {"invoice": invoice([line(5000)], invoice_id="in_usd"), "customer": new_customer},
        {"invoice": invoice([line(4000)], invoice_id="in_eur", currency="eur"), "customer": new_customer},
    ]
    result = map_partition(trees, [], fm)
    assert not result.issues
    record = only(result, "customer")
    assert record.body["currency"] == {"id": "1"}
    assert record.body["currencyList"] == {"items": [{"currency": {"id": "1"}}, {"currency": {"id": "2"}}]}
    assert {r.external_id for r in result.of_type("invoice")} == {"stripe-in_usd", "stripe-in_eur"}


# -- the customer's credit balance ------------------------------------------------------------------------


def balance_txn(txn_id: str, amount: int, kind: str, created: int, **refs) -> dict:
    return {
        "id": txn_id,
        "object": "customer_balance_transaction",
        "amount": amount,
        "currency": "usd",
        "customer": "cus_1",
        "type": kind,
        "created": created,
        "credit_note": refs.get("credit_note"),
        "invoice": refs.get("invoice"),
        "description": refs.get("description"),
    }


def test_invoice_paid_from_the_credit_balance_applies_the_credits_first_in_first_out(fm):
    from sync_pipeline.schemas.netsuite import validate_records

    history = [
        balance_txn("cbtxn_cn", -2000, "credit_note", NOV_2, credit_note="cn_9"),
        balance_txn("cbtxn_goodwill", -1000, "adjustment", NOV_5, description="Goodwill for the outage"),
        balance_txn("cbtxn_use", 2500, "applied_to_invoice", NOV_10, invoice="in_1"),
    ]
    # 100.00 invoice: 25.00 from the balance, 75.00 by card.
    inv = invoice([line(10000)], starting_balance=-3000, ending_balance=-500, amount_due=7500, amount_paid=7500)
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv, amount=7500)],
        charges=[charge(amount=7500)],
        balance_transactions=history,
    )
    assert not result.issues
    payments = {p.external_id: p for p in result.of_type("customerPayment")}
    assert applied(payments["stripe-ch_1"]) == [("stripe-in_1", True, Decimal("75.00"))]
    from_balance = payments["stripe-cbtxn_use"]
    assert from_balance.body["payment"] == Decimal("0.00")
    assert [(c["doc"]["externalId"], c["amount"]) for c in from_balance.body["credit"]["items"]] == [
        ("stripe-cn_9", Decimal("20.00")),  # the oldest credit first
        ("stripe-cbtxn_goodwill", Decimal("5.00")),
    ]
    assert applied(from_balance) == [("stripe-in_1", True, Decimal("25.00"))]
    # The hand-given credit is booked whole when first used: its other 5.00 stays the customer's credit.
    goodwill = only(result, "creditMemo")
    assert goodwill.external_id == "stripe-cbtxn_goodwill" and line_amounts(goodwill) == [Decimal("10.00")]
    assert goodwill.body["item"]["items"][0]["item"] == {"id": "170"}
    assert "apply" not in goodwill.body
    assert validate_records(result.records, fm).issues == []


def test_credit_from_a_balance_transaction_the_pipeline_cannot_book_is_an_issue_with_the_fix(fm):
    history = [
        balance_txn("cbtxn_old", -800, "migration", NOV_2),
        balance_txn("cbtxn_use", 800, "applied_to_invoice", NOV_10, invoice="in_1"),
    ]
    inv = invoice([line(10000)], starting_balance=-800, ending_balance=0, amount_due=9200, amount_paid=9200)
    result = map_invoice_tree(inv, fm, balance_transactions=history)
    [issue] = [i for i in result.issues if i.error_code == "UNBOOKED_BALANCE"]
    assert "8.00 USD" in issue.message and "migration" in issue.message
    assert "by hand" in issue.fix


def test_a_debit_on_the_balance_is_invoiced_and_paid_by_the_invoice_payment_that_carried_it(fm):
    from sync_pipeline.schemas.netsuite import validate_records

    history = [
        balance_txn("cbtxn_fee", 1000, "adjustment", NOV_2, description="Late setup fee"),
        balance_txn("cbtxn_carried", -1000, "applied_to_invoice", NOV_10, invoice="in_1"),
    ]
    inv = invoice([line(5000)], starting_balance=1000, ending_balance=0, amount_due=6000, amount_paid=6000)
    result = map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv, amount=6000)],
        charges=[charge(amount=6000)],
        balance_transactions=history,
    )
    assert not result.issues
    debit = next(r for r in result.of_type("invoice") if r.external_id == "stripe-cbtxn_fee")
    assert line_amounts(debit) == [Decimal("10.00")] and debit.body["item"]["items"][0]["item"] == {"id": "170"}
    payment = only(result, "customerPayment")
    assert applied(payment) == [("stripe-in_1", True, Decimal("50.00")), ("stripe-cbtxn_fee", True, Decimal("10.00"))]
    assert ("invoice", "stripe-cbtxn_fee") in payment.depends_on
    assert validate_records(result.records, fm).issues == []
