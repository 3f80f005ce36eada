"""Cash (issue 12), pure mapping: a Stripe payout and its balance transactions -> NetSuite deposit(s); disputes ->
chargeback documents. Each test states what NetSuite would hold: the deposit's lines, accounts and amounts to the
cent, and that the deposit equals the payout; or the exception and its fix when it cannot.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from hypothesis import example, given, settings
from hypothesis import strategies as st

from sync_pipeline.mapping import cash
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.netsuite import map_dispute
from sync_pipeline_tests.unit.test_mapping_netsuite import EXAMPLE_MAPPING, charge, mapping_with, only

NOV_3 = int(dt.datetime(2026, 11, 3, 8, 0, tzinfo=dt.UTC).timestamp())
NOV_5 = int(dt.datetime(2026, 11, 5, 0, 0, tzinfo=dt.UTC).timestamp())
START = dt.date(2026, 11, 1)


def fm() -> FieldMapping:
    return FieldMapping.load(EXAMPLE_MAPPING)


def txn(txn_id, txn_type, amount, fee=0, *, source=None, category=None, currency="usd", fee_type="stripe_fee", **kw):
    details = [{"amount": fee, "currency": currency, "type": fee_type, "description": "fee"}] if fee else []
    return {
        "id": txn_id,
        "object": "balance_transaction",
        "type": txn_type,
        "reporting_category": category or txn_type,
        "amount": amount,
        "fee": fee,
        "fee_details": details,
        "net": amount - fee,
        "currency": currency,
        "source": source,
        "created": kw.get("created", NOV_3),
        "exchange_rate": None,
    }


def payout(amount, *, payout_id="po_1", currency="usd", status="paid", **kw):
    return {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "currency": currency,
        "status": status,
        "arrival_date": NOV_5,
        "automatic": True,
        **kw,
    }


def own(amount, payout_id="po_1", currency="usd"):
    return txn("txn_po", "payout", -amount, source=payout_id, currency=currency)


def lines(record, sublist):
    return (record.body.get(sublist) or {}).get("items") or []


def test_a_payout_of_charges_refunds_and_fees_is_one_deposit_equal_to_the_payout():
    txns = [
        txn("txn_1", "charge", 10000, 320, source="ch_1"),
        txn("txn_2", "charge", 5000, 175, source="ch_2"),
        txn("txn_3", "refund", -2000, source="re_1"),
    ]
    amount = sum(t["net"] for t in txns)  # 12505
    result = cash.map_payout(payout(amount), [*txns, own(amount)], fm(), START)
    deposit = only(result, cash.DEPOSIT)
    assert deposit.external_id == "stripe-po_1"
    assert deposit.amount_minor == 12505
    body = deposit.body
    assert body["account"] == {"id": "10"} and body["tranDate"] == "2026-11-05" and body["currency"] == {"id": "1"}
    assert [line["id"] for line in lines(deposit, "payment")] == [
        {"externalId": "stripe-ch_1"},
        {"externalId": "stripe-ch_2"},
    ]
    cash_back = {line["account"]["id"]: line["amount"] for line in lines(deposit, "cashback")}
    assert cash_back == {"70": Decimal("20.00"), "60": Decimal("4.95")}  # the refund, and 3.20 + 1.75 of fees
    # payments 150.00 + other 0 - cash back 24.95 = 125.05, the payout
    assert Decimal("150.00") - sum(cash_back.values()) == Decimal("125.05")
    assert ("customerPayment", "stripe-ch_1") in deposit.depends_on
    assert ("customerRefund", "stripe-re_1") in deposit.depends_on
    assert not result.issues


def test_dispute_withdrawal_and_its_fee_and_a_won_reinstatement_book_to_their_accounts():
    txns = [
        txn("txn_1", "charge", 30000, 900, source="ch_1"),
        txn("txn_2", "adjustment", -10000, 1500, source="dp_1", category="dispute"),
        txn("txn_3", "adjustment", 8000, -1500, source="dp_2", category="dispute_reversal"),
    ]
    amount = sum(t["net"] for t in txns)
    deposit = only(cash.map_payout(payout(amount), [*txns, own(amount)], fm(), START), cash.DEPOSIT)
    assert [line["id"] for line in lines(deposit, "payment")] == [
        {"externalId": "stripe-ch_1"},
        {"externalId": "stripe-dp_2-reinstated"},
    ]
    cash_back = {(line["account"]["id"], line["amount"]) for line in lines(deposit, "cashback")}
    assert ("70", Decimal("100.00")) in cash_back  # the chargeback, paid out by customer refund stripe-dp_1
    assert ("60", Decimal("9.00")) in cash_back  # processing fee
    # the dispute fee withdrawn (15.00) and returned (15.00) net to zero on the dispute fee account
    assert not [line for line in lines(deposit, "other") + lines(deposit, "cashback") if line["account"]["id"] == "61"]
    assert deposit.amount_minor == amount
    assert ("customerRefund", "stripe-dp_1") in deposit.depends_on


def test_a_returned_dispute_fee_alone_is_an_other_deposit_line():
    txns = [
        txn("txn_1", "charge", 5000, 200, source="ch_1"),
        txn("txn_3", "adjustment", 5000, -1500, source="dp_2", category="dispute_reversal"),
    ]
    amount = sum(t["net"] for t in txns)
    deposit = only(cash.map_payout(payout(amount), txns, fm(), START), cash.DEPOSIT)
    assert [(line["account"]["id"], line["amount"]) for line in lines(deposit, "other")] == [("61", Decimal("15.00"))]


def test_an_unmapped_balance_transaction_type_holds_the_deposit_back_with_the_line_to_add():
    txns = [txn("txn_1", "charge", 5000, 200, source="ch_1"), txn("txn_9", "reserved_funds", -1000, source=None)]
    amount = sum(t["net"] for t in txns)
    result = cash.map_payout(payout(amount), txns, fm(), START)
    assert not result.records
    (issue,) = result.issues
    assert issue.error_code == "UNMAPPED_BALANCE_TRANSACTION"
    assert issue.external_id == "stripe-po_1" and issue.value == "reserved_funds"
    assert "txn_9" in issue.message and "-10.00 USD" in issue.message
    assert "`reserved_funds: <account id>` under `payouts.balance_transactions`" in issue.fix


def test_a_mapped_other_type_becomes_an_other_or_cash_back_line_on_its_account():
    txns = [
        txn("txn_1", "charge", 5000, 200, source="ch_1"),
        txn("txn_2", "adjustment", 300, source="adj_1", category="other_adjustment"),
        txn("txn_3", "stripe_fee", -700, source=None, category="fee"),
    ]
    amount = sum(t["net"] for t in txns)
    deposit = only(cash.map_payout(payout(amount), txns, fm(), START), cash.DEPOSIT)
    assert [(line["account"]["id"], line["amount"]) for line in lines(deposit, "other")] == [("91", Decimal("3.00"))]
    assert ("60", Decimal("7.00")) in {(line["account"]["id"], line["amount"]) for line in lines(deposit, "cashback")}


def test_balance_transactions_not_adding_up_to_the_payout_hold_it_back_naming_the_difference():
    txns = [txn("txn_1", "charge", 5000, 200, source="ch_1")]
    result = cash.map_payout(payout(5000), txns, fm(), START)
    (issue,) = result.issues
    assert issue.error_code == "DEPOSIT_NOT_EQUAL_PAYOUT"
    assert "50.00 USD" in issue.message and "48.00 USD" in issue.message and "2.00 USD" in issue.message


def test_a_charge_before_the_sync_start_is_an_exception_with_the_fix():
    old = int(dt.datetime(2026, 10, 30, tzinfo=dt.UTC).timestamp())
    txns = [txn("txn_1", "charge", 5000, 200, source="ch_old", created=old)]
    result = cash.map_payout(payout(4800), txns, fm(), START)
    (issue,) = result.issues
    assert issue.error_code == "PAYOUT_BEFORE_SYNC_START" and issue.value == "ch_old"
    assert "2026-10-30" in issue.fix and "opening balance" in issue.fix


def test_pending_payouts_wait_and_manual_ones_are_exceptions():
    assert cash.map_payout(payout(100, status="in_transit"), [], fm(), START).skips
    (issue,) = cash.map_payout(payout(100, automatic=False), [], fm(), START).issues
    assert issue.error_code == "PAYOUT_NOT_ITEMIZED"


def test_a_payout_that_failed_after_its_deposit_gets_a_journal_taking_it_back_out_of_the_bank():
    txns = [txn("txn_1", "charge", 5000, 200, source="ch_1")]
    failure = {"id": "txn_f", "created": NOV_5 + 86400 * 2, "type": "payout_failure"}
    result = cash.map_payout(
        payout(4800, status="failed", failure_code="account_closed", failure_balance_transaction=failure),
        txns,
        fm(),
        START,
    )
    only(result, cash.DEPOSIT)
    journal = only(result, cash.JOURNAL_ENTRY)
    assert journal.external_id == "stripe-po_1-returned"
    assert journal.body["tranDate"] == "2026-11-07"
    assert lines(journal, "line") == [
        {"account": {"id": "90"}, "debit": Decimal("48.00"), "memo": journal.body["memo"]},
        {"account": {"id": "10"}, "credit": Decimal("48.00"), "memo": journal.body["memo"]},
    ]
    assert "account_closed" in journal.body["memo"]


def test_the_money_of_a_failed_payout_paid_again_clears_the_returned_payouts_account():
    txns = [txn("txn_1", "charge", 5000, 200, source="ch_1"), txn("txn_f", "payout_failure", 4800, source="po_0")]
    deposit = only(cash.map_payout(payout(9600, payout_id="po_2"), txns, fm(), START), cash.DEPOSIT)
    assert [(line["account"]["id"], line["amount"]) for line in lines(deposit, "other")] == [("90", Decimal("48.00"))]


def test_fees_summed_per_payout_when_configured():
    data = mapping_with(payouts__fee_lines="per_payout")
    txns = [
        txn("txn_1", "charge", 5000, 200, source="ch_1"),
        txn("txn_2", "charge", 5000, 30, source="ch_2", fee_type="application_fee"),
        txn("txn_3", "adjustment", -1000, 1500, source="dp_1", category="dispute"),
    ]
    amount = sum(t["net"] for t in txns)
    deposit = only(cash.map_payout(payout(amount), txns, data, START), cash.DEPOSIT)
    fee_lines = [line for line in lines(deposit, "cashback") if line["account"]["id"] == "60"]
    assert [line["amount"] for line in fee_lines] == [Decimal("17.30")]


def test_a_three_decimal_currency_deposit_carries_its_rounding_on_the_rounding_account():
    txns = [
        txn("txn_1", "charge", 10005, 0, source="ch_1", currency="kwd"),
        txn("txn_2", "charge", 10005, 0, source="ch_2", currency="kwd"),
    ]
    deposit = only(cash.map_payout(payout(20010, currency="kwd"), txns, fm(), START), cash.DEPOSIT)
    # each payment is 10.005 -> 10.00 (half-even) in NetSuite; the payout 20.010 -> 20.01: 0.01 of rounding
    assert [(line["account"]["id"], line["amount"]) for line in lines(deposit, "other")] == [("92", Decimal("0.01"))]


@settings(max_examples=30, deadline=None)
@given(
    charges=st.lists(st.tuples(st.integers(100, 10**6), st.integers(0, 5000)), min_size=1, max_size=40),
    refunds=st.lists(st.integers(1, 5000), max_size=12),
    limit=st.integers(10, 20),
)
# A part that holds a charge's fee line but too little of its money nets to zero unless lines weigh their fees.
@example(charges=[(100, 0), (100, 98), (507, 0)], refunds=[101, 101, 101, 101, 101, 5, 1], limit=10)
def test_a_large_payout_is_split_into_deposits_each_within_the_line_limit_and_together_equal_to_it(
    charges, refunds, limit
):
    txns = [txn(f"txn_c{i}", "charge", a, min(f, a - 1), source=f"ch_{i}") for i, (a, f) in enumerate(charges)]
    txns += [txn(f"txn_r{i}", "refund", -a, source=f"re_{i}") for i, a in enumerate(refunds)]
    amount = sum(t["net"] for t in txns)
    if amount <= 0:
        return
    result = cash.map_payout(payout(amount), txns, mapping_with(payouts__max_lines_per_deposit=limit), START)
    if result.issues:  # e.g. one charge and more refunds than fit beside it: no positive split exists
        assert [i.error_code for i in result.issues] == ["DEPOSIT_CANNOT_BE_SPLIT"]
        assert len(charges) + len(refunds) + 1 > limit
        return
    deposits = result.of_type(cash.DEPOSIT)
    assert sum(d.amount_minor for d in deposits) == amount
    for deposit in deposits:
        assert sum(len(lines(deposit, s)) for s in ("payment", "other", "cashback")) <= limit
        assert deposit.amount_minor > 0  # NetSuite refuses a deposit that nets to zero or less
    eids = [d.external_id for d in deposits]
    assert eids[0] == "stripe-po_1" and eids[1:] == [f"stripe-po_1-{n}" for n in range(2, len(deposits) + 1)]
    deposited = [line["id"]["externalId"] for d in deposits for line in lines(d, "payment")]
    assert sorted(deposited) == sorted(f"stripe-ch_{i}" for i in range(len(charges)))


def test_a_charge_settled_in_another_currency_is_taken_in_at_the_rate_on_its_payment():
    converted = txn("txn_1", "charge", 10851, 345, source="ch_eur")  # 100.01 EUR at 1.0850 = 108.51 USD
    converted["exchange_rate"] = 1.085
    converted["presented"] = {"amount": 10001, "currency": "EUR"}
    txns = [converted, txn("txn_2", "charge", 5000, 175, source="ch_usd")]
    amount = sum(t["net"] for t in txns)
    deposit = only(cash.map_payout(payout(amount), txns, fm(), START), cash.DEPOSIT)
    # NetSuite converts the EUR payment itself: 100.01 x 1.085 = 108.51085 -> 108.51, Stripe's amount: no gap
    assert not lines(deposit, "other") and len(lines(deposit, "cashback")) == 1
    converted["presented"] = {"amount": 10000, "currency": "EUR"}  # 108.50 in NetSuite, 108.51 in Stripe
    deposit = only(cash.map_payout(payout(amount), txns, fm(), START), cash.DEPOSIT)
    assert [(line["account"]["id"], line["amount"]) for line in lines(deposit, "other")] == [("92", Decimal("0.01"))]


def test_a_converted_charge_in_a_currency_not_declared_as_settling_elsewhere_is_held_back_with_the_fix():
    converted = txn("txn_1", "charge", 1500, 0, source="ch_gbp")
    converted["exchange_rate"] = 1.25
    converted["presented"] = {"amount": 1200, "currency": "GBP"}
    (issue,) = cash.map_payout(payout(1500), [converted], fm(), START).issues
    assert issue.error_code == "CROSS_CURRENCY_NOT_CONFIGURED"
    assert "`GBP: USD` under `payouts.settles_in`" in issue.fix


# -- disputes ------------------------------------------------------------------------------------------------


def dispute(status="needs_response", won=False, warning=False):
    movements = [] if warning else [txn("txn_w", "adjustment", -10000, 1500, source="dp_1", category="dispute")]
    if won:
        movements.append(
            txn("txn_r", "adjustment", 10000, -1500, source="dp_1", category="dispute_reversal", created=NOV_5)
        )
    return {
        "id": "dp_1",
        "object": "dispute",
        "amount": 10000,
        "currency": "usd",
        "charge": "ch_1",
        "created": NOV_3,
        "reason": "fraudulent",
        "status": status,
        "balance_transactions": movements,
    }


def test_funds_withdrawn_by_a_dispute_are_a_chargeback_credit_memo_paid_out_by_a_customer_refund():
    result = map_dispute(dispute(), charge(charge_id="ch_1", amount=10000), fm())
    memo = only(result, "creditMemo")
    assert memo.external_id == "stripe-dp_1-cm"
    assert [(i["item"], i["amount"]) for i in memo.body["item"]["items"]] == [({"id": "180"}, Decimal("100.00"))]
    assert memo.body["tranDate"] == "2026-11-03"
    refund = only(result, "customerRefund")
    assert refund.external_id == "stripe-dp_1" and refund.body["account"] == {"id": "70"}
    assert refund.body["apply"]["items"] == [
        {"doc": {"externalId": "stripe-dp_1-cm"}, "apply": True, "amount": Decimal("100.00")}
    ]
    assert not result.of_type("customerPayment")


def test_a_won_dispute_reinstates_the_money_through_undeposited_funds():
    result = map_dispute(dispute(status="won", won=True), charge(charge_id="ch_1", amount=10000), fm())
    invoice = only(result, "invoice")
    payment = only(result, "customerPayment")
    assert invoice.external_id == "stripe-dp_1-cm-reversal" and invoice.amount_minor == 10000
    assert payment.external_id == "stripe-dp_1-reinstated" and payment.body["account"] == {"id": "1"}
    assert payment.body["tranDate"] == "2026-11-05" and payment.body["payment"] == Decimal("100.00")
    assert payment.body["apply"]["items"][0]["doc"] == {"externalId": "stripe-dp_1-cm-reversal"}


def test_an_inquiry_or_warning_books_nothing():
    result = map_dispute(dispute(status="warning_needs_response", warning=True), charge(charge_id="ch_1"), fm())
    assert not result.records and result.skips and "no funds" in result.skips[0].reason
