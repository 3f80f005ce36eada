"""Cash in the NetSuite stand-in over real HTTP: deposits (payments out of Undeposited Funds, other deposits, cash
back), foreign-currency payments at their exchange rate, the line limit, journal entries, and what SuiteQL shows
of them. The bodies are the ones the pipeline sends (schema.py's docstring)."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
import requests

from sync_pipeline_tests.sandbox import test_netsuite_receivables as receivables
from sync_pipeline_tests.sandbox.test_netsuite_receivables import all_items
from sync_pipeline_tests.sandbox.test_netsuite_standin import Api, decimal_json, error_of

# The receivables tests' fixtures: a stand-in for the module; per test an empty account with default knobs and a
# signed session.
server, api = receivables.server, receivables.api

USD, EUR, JPY = "1", "2", "3"
UNDEPOSITED, BANK_USD, BANK_EUR, FEES, DISPUTE_FEES, OUT_OF_BAND, RETURNED = "1", "10", "11", "60", "61", "80", "90"


def payment(api: Api, charge: str, customer_id: str, amount: str, currency: str = USD, **extra: Any) -> str:
    """An unapplied customer payment (account Undeposited Funds unless `extra` says otherwise)."""
    body = {
        "customer": {"id": customer_id},
        "payment": Decimal(amount),
        "currency": {"id": currency},
        "account": {"id": UNDEPOSITED},
        "tranDate": "2026-11-02",
        **extra,
    }
    return api.upserted_id("customerPayment", f"stripe-{charge}", body)


def deposit_body(
    payments: list[str | int], other: list[tuple[str, str]] = (), cashback: list[tuple[str, str]] = (), **extra: Any
) -> dict[str, Any]:
    """The pipeline's deposit: header, payment lines by internal id, and (account, amount) other/cash back lines."""
    return {
        "externalId": "stripe-po_123",
        "account": {"id": BANK_USD},
        "subsidiary": {"id": "1"},
        "currency": {"id": USD},
        "tranDate": "2026-11-03",
        "memo": "Stripe payout po_123",
        "payment": {"items": [{"id": payment_id, "deposit": True} for payment_id in payments]},
        "other": {"items": [{"account": {"id": a}, "amount": Decimal(x), "memo": "other"} for a, x in other]},
        "cashback": {"items": [{"account": {"id": a}, "amount": Decimal(x), "memo": "fee"} for a, x in cashback]},
        **extra,
    }


def status_of(api: Api, payment_id: str) -> str:
    return api.get("customerPayment", payment_id).json()["status"]["refName"]


def refused(response: requests.Response) -> tuple[str, str]:
    assert response.status_code == 400, response.text
    return error_of(response)


@pytest.fixture
def customer_id(api) -> str:
    return api.upserted_id(
        "customer",
        "stripe-cus_1",
        {
            "companyName": "Acme",
            "subsidiary": {"id": "1"},
            "currency": {"id": USD},
            "currencyList": {"items": [{"currency": {"id": EUR}}]},
        },
    )


# ---- the body the pipeline sends ---------------------------------------------------------------------------
def test_the_pipelines_deposit_body_is_accepted_and_read_back(api, customer_id):
    first, second = payment(api, "ch_1", customer_id, "100.00"), payment(api, "ch_2", customer_id, "50.00")
    body = deposit_body([first, int(second)], other=[("91", "1.00")], cashback=[(FEES, "2.90"), (DISPUTE_FEES, "15")])
    deposit_id = api.upserted_id("deposit", "stripe-po_123", body)

    record = decimal_json(api.get("deposit", deposit_id, expandSubResources="true"))
    assert record["total"] == Decimal("133.10")  # 100 + 50 + 1 - 2.90 - 15
    assert record["externalId"] == "stripe-po_123" and record["currency"]["id"] == USD
    assert [
        (x["id"], x["deposit"], x["paymentAmount"], x["transactionAmount"]) for x in record["payment"]["items"]
    ] == [
        (first, True, Decimal("100.00"), Decimal("100.00")),
        (second, True, Decimal("50.00"), Decimal("50.00")),
    ]
    assert [(x["account"]["id"], x["amount"]) for x in record["cashback"]["items"]] == [
        (FEES, Decimal("2.90")),
        (DISPUTE_FEES, Decimal("15.00")),
    ]
    assert status_of(api, first) == status_of(api, second) == "Deposited"

    rows = all_items(
        api,
        "SELECT id, type, externalid, currency, trandate, status, foreigntotal, account FROM transaction "
        "WHERE type = 'Deposit'",
    )
    assert rows == [
        {"id": deposit_id, "type": "Deposit", "externalid": "stripe-po_123", "currency": USD, "trandate": "2026-11-03",
         "foreigntotal": "133.1", "account": BANK_USD}
    ]  # fmt: skip
    payments = all_items(api, "SELECT id, status FROM transaction WHERE type = 'CustPymt' ORDER BY id")
    assert payments == [{"id": first, "status": "C"}, {"id": second, "status": "C"}]


def test_deposit_lines_in_suiteql_are_signed_debit_positive_and_name_their_payments(api, customer_id):
    first = payment(api, "ch_1", customer_id, "100.00")
    body = deposit_body([first], other=[("91", "1.00")], cashback=[(FEES, "2.90")])
    deposit_id = api.upserted_id("deposit", "stripe-po_123", body)
    lines = all_items(
        api,
        "SELECT id, mainline, expenseaccount, foreignamount, debitforeignamount, creditforeignamount, createdfrom, "
        f"memo FROM transactionline WHERE transaction = {deposit_id}",
    )
    assert lines == [
        {"id": "0", "mainline": "T", "expenseaccount": BANK_USD, "foreignamount": "98.1", "debitforeignamount": "98.1",
         "memo": "Stripe payout po_123"},
        {"id": "1", "mainline": "F", "expenseaccount": UNDEPOSITED, "foreignamount": "-100",
         "creditforeignamount": "100", "createdfrom": first},
        {"id": "2", "mainline": "F", "expenseaccount": "91", "foreignamount": "-1", "creditforeignamount": "1",
         "memo": "other"},
        {"id": "3", "mainline": "F", "expenseaccount": FEES, "foreignamount": "2.9", "debitforeignamount": "2.9",
         "memo": "fee"},
    ]  # fmt: skip
    assert sum(Decimal(line["foreignamount"]) for line in lines) == 0
    # A fee check reads the cash back lines of the day's deposits in one query.
    fees = all_items(
        api,
        f"SELECT expenseaccount, foreignamount FROM transactionline WHERE transaction IN ({deposit_id}) "
        f"AND mainline = 'F' AND expenseaccount IN ({FEES}, {DISPUTE_FEES})",
    )
    assert fees == [{"expenseaccount": FEES, "foreignamount": "2.9"}]


# ---- payment lines ---------------------------------------------------------------------------------------------
def test_resaving_keeps_the_payments_and_changing_lines_returns_dropped_ones_to_not_deposited(api, customer_id):
    first, second = payment(api, "ch_1", customer_id, "100.00"), payment(api, "ch_2", customer_id, "50.00")
    deposit_id = api.upserted_id("deposit", "stripe-po_123", deposit_body([first, second]))
    assert api.upserted_id("deposit", "stripe-po_123", deposit_body([first, second])) == deposit_id
    assert status_of(api, first) == status_of(api, second) == "Deposited"

    api.upserted_id("deposit", "stripe-po_123", deposit_body([first]))
    assert (status_of(api, first), status_of(api, second)) == ("Deposited", "Not Deposited")
    switched_off = deposit_body([first, second])
    switched_off["payment"]["items"][0]["deposit"] = False
    api.upserted_id("deposit", "stripe-po_123", switched_off)
    assert (status_of(api, first), status_of(api, second)) == ("Not Deposited", "Deposited")
    record = decimal_json(api.get("deposit", deposit_id, expandSubResources="true"))
    assert [line["id"] for line in record["payment"]["items"]] == [second] and record["total"] == Decimal("50.00")


def test_a_payment_goes_into_one_deposit_only(api, customer_id):
    first = payment(api, "ch_1", customer_id, "100.00")
    api.upserted_id("deposit", "stripe-po_123", deposit_body([first]))
    code, detail = refused(api.put("deposit", "stripe-po_456", deposit_body([first])))
    assert code == "INVALID_KEY_OR_REF"
    assert detail.startswith(f"Invalid Field Value {first} for the following field: id.")
    assert "Payment #PYMT1001 has already been deposited in Deposit #DEP1001." in detail
    assert "is listed twice" in refused(api.put("deposit", "stripe-po_123", deposit_body([first, first])))[1]


def test_an_unknown_id_or_a_payment_outside_undeposited_funds_is_an_invalid_key(api, customer_id):
    code, detail = refused(api.put("deposit", "stripe-po_123", deposit_body(["999999"])))
    assert (code, detail.split(". ")[0]) == (
        "INVALID_KEY_OR_REF",
        "Invalid Field Value 999999 for the following field: id",
    )
    out_of_band = payment(api, "ch_oob", customer_id, "20.00", account={"id": OUT_OF_BAND})
    code, detail = refused(api.put("deposit", "stripe-po_123", deposit_body([out_of_band])))
    assert code == "INVALID_KEY_OR_REF"
    assert "Payment #PYMT1001 did not post to Undeposited Funds (its account is Out-of-band Clearing)." in detail
    # Without an account a payment posts to Undeposited Funds.
    body = {
        "customer": {"id": customer_id},
        "payment": Decimal("5.00"),
        "currency": {"id": USD},
        "tranDate": "2026-11-02",
    }
    no_account = api.upserted_id("customerPayment", "stripe-ch_na", body)
    assert api.put("deposit", "stripe-po_123", deposit_body([no_account])).status_code == 204


# ---- other and cash back lines, the total ----------------------------------------------------------------------
def test_other_lines_must_be_positive_and_a_negative_cash_back_line_becomes_an_other_line(api, customer_id):
    first = payment(api, "ch_1", customer_id, "100.00")
    assert "must be positive" in refused(api.put("deposit", "stripe-po_123", deposit_body([first], [("91", "-1")])))[1]
    deposit_id = api.upserted_id("deposit", "stripe-po_123", deposit_body([first], cashback=[("91", "-4.00")]))
    record = decimal_json(api.get("deposit", deposit_id, expandSubResources="true"))
    assert record["total"] == Decimal("104.00")
    assert [(x["account"]["id"], x["amount"]) for x in record["other"]["items"]] == [("91", Decimal("4.00"))]
    assert record["cashback"]["items"] == []


def test_a_deposit_needs_a_line_and_a_positive_net_sum(api, customer_id):
    first = payment(api, "ch_1", customer_id, "10.00")
    assert refused(api.put("deposit", "stripe-po_123", deposit_body([])))[1] == (
        "You must enter at least one line item for this transaction."
    )
    code, detail = refused(api.put("deposit", "stripe-po_123", deposit_body([first], cashback=[(FEES, "10.00")])))
    assert code == "USER_ERROR" and detail.startswith("The net sum of all line amounts must be positive")
    assert status_of(api, first) == "Not Deposited"  # nothing saved
    other_only = deposit_body([], other=[(RETURNED, "25.00")], cashback=[(FEES, "0.25")])
    assert decimal_json(api.get("deposit", api.upserted_id("deposit", "stripe-po_1", other_only)))["total"] == Decimal(
        "24.75"
    )


# ---- currencies ------------------------------------------------------------------------------------------------
def test_a_foreign_currency_payment_is_deposited_at_its_exchange_rate(api, customer_id):
    eur = payment(api, "ch_eur", customer_id, "75.00", EUR, exchangeRate=Decimal("1.33335"))
    assert decimal_json(api.get("customerPayment", eur))["exchangeRate"] == Decimal("1.33335")
    assert all_items(api, f"SELECT exchangerate FROM transaction WHERE id = {eur}") == [{"exchangerate": "1.33335"}]
    deposit_id = api.upserted_id("deposit", "stripe-po_123", deposit_body([eur]))
    line = decimal_json(api.get("deposit", deposit_id, expandSubResources="true"))["payment"]["items"][0]
    # 75 x 1.33335 = 100.00125 -> 100.00 (half up to USD's two decimals).
    assert (line["paymentAmount"], line["transactionAmount"], line["currency"]["id"]) == (
        Decimal("100.00"),
        Decimal("75.00"),
        EUR,
    )


def test_a_foreign_currency_payment_without_a_rate_or_into_a_foreign_deposit_is_refused(api, customer_id):
    no_rate = payment(api, "ch_eur", customer_id, "75.00", EUR)
    assert (
        "only be deposited in the subsidiary's base currency"
        in refused(api.put("deposit", "stripe-po_123", deposit_body([no_rate])))[1]
    )
    usd = payment(api, "ch_usd", customer_id, "10.00", USD, exchangeRate=Decimal("1"))
    eur_deposit = deposit_body([usd], account={"id": BANK_EUR}, currency={"id": EUR})
    assert (
        "only be deposited in the subsidiary's base currency"
        in refused(api.put("deposit", "stripe-po_123", eur_deposit))[1]
    )
    bad_rate = {"customer": {"id": customer_id}, "payment": 1, "currency": {"id": EUR}, "tranDate": "2026-11-02"}
    assert refused(api.put("customerPayment", "stripe-ch_x", {**bad_rate, "exchangeRate": 0}))[1] == (
        "Invalid Field Value 0 for the following field: exchangeRate"
    )
    assert refused(api.put("customerPayment", "stripe-ch_x", {**bad_rate, "exchangeRate": "1.1"}))[0] == (
        "INVALID_PARAMETER"
    )


def test_a_bank_account_takes_deposits_in_its_own_currency(api, customer_id):
    eur = payment(api, "ch_eur", customer_id, "75.00", EUR)
    code, detail = refused(api.put("deposit", "stripe-po_123", deposit_body([eur], account={"id": BANK_EUR})))
    assert (code, detail.split(". ")[0]) == (
        "INVALID_KEY_OR_REF",
        "Invalid Field Value 1 for the following field: currency",
    )
    body = deposit_body([eur], account={"id": BANK_EUR}, cashback=[(FEES, "1.50")])
    del body["currency"]  # defaults to the bank account's
    deposit_id = api.upserted_id("deposit", "stripe-po_123", body)
    record = decimal_json(api.get("deposit", deposit_id))
    assert (record["currency"]["id"], record["total"]) == (EUR, Decimal("73.50"))


# ---- the line limit -------------------------------------------------------------------------------------------
def test_a_transaction_with_more_lines_than_the_limit_is_refused(api, customer_id):
    assert requests.get(f"{api.url}/_sandbox/config", timeout=10).json()["max_transaction_lines"] == 5000
    bad = requests.post(f"{api.url}/_sandbox/config", json={"max_transaction_lines": 0}, timeout=10)
    assert bad.status_code == 400
    api.configure(max_transaction_lines=2)
    payments = [payment(api, f"ch_{n}", customer_id, "10.00") for n in range(2)]
    three = deposit_body(payments, cashback=[(FEES, "0.30")])
    assert refused(api.put("deposit", "stripe-po_123", three)) == (
        "USER_ERROR",
        "This transaction has 3 lines. The limit for transactions submitted through web services is 2 lines per "
        "transaction.",
    )
    lines = [{"item": {"id": "101"}, "amount": Decimal("1")}] * 3
    assert refused(api.put("invoice", "stripe-in_1", api.invoice_body(customer_id, lines)))[0] == "USER_ERROR"
    assert api.put("deposit", "stripe-po_123", deposit_body(payments)).status_code == 204
    api.configure(max_transaction_lines=5000)
    assert api.put("deposit", "stripe-po_123", three).status_code == 204


# ---- journal entries ------------------------------------------------------------------------------------------
def journal_body(amount: str, currency: str = USD, bank: str = BANK_USD) -> dict[str, Any]:
    """A failed payout: credit the bank, debit the clearing account for returned payouts."""
    return {
        "subsidiary": {"id": "1"},
        "currency": {"id": currency},
        "tranDate": "2026-11-10",
        "memo": "Stripe payout po_123 failed",
        "line": {
            "items": [
                {"account": {"id": RETURNED}, "debit": Decimal(amount), "memo": "returned"},
                {"account": {"id": bank}, "credit": Decimal(amount), "memo": "bank"},
            ]
        },
    }


def test_a_failed_payout_journal_shows_in_suiteql_with_signed_lines(api):
    journal_id = api.upserted_id("journalEntry", "stripe-po_123-failed", journal_body("133.10"))
    query = (
        "SELECT id, type, externalid, currency, trandate, status, foreigntotal FROM transaction WHERE type = 'Journal'"
    )
    assert all_items(api, query) == [
        {"id": journal_id, "type": "Journal", "externalid": "stripe-po_123-failed", "currency": USD,
         "trandate": "2026-11-10", "status": "B", "foreigntotal": "133.1"}
    ]  # fmt: skip
    lines = all_items(
        api,
        "SELECT id, mainline, expenseaccount, foreignamount, debitforeignamount, creditforeignamount, memo "
        f"FROM transactionline WHERE transaction = {journal_id}",
    )
    assert lines == [
        {"id": "1", "mainline": "F", "expenseaccount": RETURNED, "foreignamount": "133.1",
         "debitforeignamount": "133.1", "memo": "returned"},
        {"id": "2", "mainline": "F", "expenseaccount": BANK_USD, "foreignamount": "-133.1",
         "creditforeignamount": "133.1", "memo": "bank"},
    ]  # fmt: skip


def test_a_journal_in_another_currency_than_its_bank_account_is_refused(api):
    code, detail = refused(api.put("journalEntry", "stripe-je_1", journal_body("10", EUR, BANK_USD)))
    assert (code, detail.split(". ")[0]) == (
        "INVALID_KEY_OR_REF",
        "Invalid Field Value 10 for the following field: account",
    )
    journal_id = api.upserted_id("journalEntry", "stripe-je_1", journal_body("10", EUR, BANK_EUR))
    assert all_items(api, f"SELECT currency FROM transaction WHERE id = {journal_id}") == [{"currency": EUR}]


def test_every_deposit_and_journal_balances_in_transactionline(api, customer_id):
    first = payment(api, "ch_1", customer_id, "100.00")
    eur = payment(api, "ch_eur", customer_id, "75.00", EUR, exchangeRate=Decimal("1.1"))
    api.upserted_id("deposit", "stripe-po_1", deposit_body([first, eur], [("91", "3")], [(FEES, "4.35")]))
    api.upserted_id("journalEntry", "stripe-po_1-failed", journal_body("181.15"))
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for row in all_items(api, "SELECT transaction, foreignamount FROM transactionline"):
        sums[row["transaction"]] += Decimal(row["foreignamount"])
    assert set(sums.values()) == {Decimal(0)} and len(sums) == 4  # the two payments, the deposit, the journal


# ---- Undeposited Funds: payments' lines, the GL account of each line, the balance per currency at a date ---------
RECEIVABLES, REFUNDS = "20", "70"
# The balance of one account per transaction currency at the end of a day, as the reconciliation asks real NetSuite:
# the GL account is on transactionaccountingline, the amounts in the transaction's currency on transactionline.
ACCOUNT_BALANCE = (
    "SELECT t.currency AS currency, SUM(tl.debitforeignamount) AS debit, SUM(tl.creditforeignamount) AS credit "
    "FROM transactionaccountingline tal "
    "INNER JOIN transactionline tl ON tl.transaction = tal.transaction AND tl.id = tal.transactionline "
    "INNER JOIN transaction t ON t.id = tal.transaction "
    "WHERE tal.account = {account} AND tal.posting = 'T' AND t.trandate <= TO_DATE('{day}', 'YYYY-MM-DD') "
    "GROUP BY t.currency ORDER BY currency"
)


def test_a_payment_has_a_main_line_into_its_account_and_a_receivable_line(api, customer_id):
    payment_id = payment(api, "ch_1", customer_id, "100.00")
    lines = all_items(
        api,
        "SELECT id, mainline, foreignamount, debitforeignamount, creditforeignamount FROM transactionline "
        f"WHERE transaction = {payment_id} ORDER BY id",
    )
    assert lines == [
        {"id": "0", "mainline": "T", "foreignamount": "100", "debitforeignamount": "100"},
        {"id": "1", "mainline": "F", "foreignamount": "-100", "creditforeignamount": "100"},
    ]
    postings = all_items(
        api,
        "SELECT transactionline, account, posting, debit, credit FROM transactionaccountingline "
        f"WHERE transaction = {payment_id} ORDER BY transactionline",
    )
    assert postings == [
        {"transactionline": "0", "account": UNDEPOSITED, "posting": "T", "debit": "100"},
        {"transactionline": "1", "account": RECEIVABLES, "posting": "T", "credit": "100"},
    ]


def test_a_refund_credits_the_account_it_was_paid_from(api, customer_id):
    paid = payment(api, "ch_1", customer_id, "100.00")  # unapplied: the customer's credit, 30 of it refunded
    body = {"customer": {"id": customer_id}, "currency": {"id": USD}, "tranDate": "2026-11-02",
            "account": {"id": REFUNDS}, "apply": receivables.applications((paid, "30.00"))}  # fmt: skip
    refund_id = api.upserted_id("customerRefund", "stripe-re_1", body)
    postings = all_items(
        api, f"SELECT account, amount FROM transactionaccountingline WHERE transaction = {refund_id} ORDER BY account"
    )
    assert postings == [{"account": RECEIVABLES, "amount": "30"}, {"account": REFUNDS, "amount": "-30"}]


def test_undeposited_funds_per_currency_at_a_date_sums_payments_in_and_deposit_lines_out(api, customer_id):
    first = payment(api, "ch_1", customer_id, "100.00")
    payment(api, "ch_2", customer_id, "20.50")
    payment(api, "ch_eur", customer_id, "75.00", EUR, exchangeRate=Decimal("1.1"))
    payment(api, "ch_oob", customer_id, "9.99", account={"id": OUT_OF_BAND})  # paid outside Stripe: not in UF
    payment(api, "ch_late", customer_id, "7.00", tranDate="2026-11-04")  # after the day asked
    api.upserted_id("deposit", "stripe-po_123", deposit_body([first], cashback=[(FEES, "2.90")]))  # on 2026-11-03

    def balance(day: str) -> list[dict[str, Any]]:
        return all_items(api, ACCOUNT_BALANCE.format(account=UNDEPOSITED, day=day))

    assert balance("2026-11-01") == []
    # Before the deposit: every Stripe payment of the day, per transaction currency.
    assert balance("2026-11-02") == [
        {"currency": USD, "debit": "120.5"},
        {"currency": EUR, "debit": "75"},
    ]
    # The deposit's payment line took ch_1 out (its credit); the fee line is on another account.
    assert balance("2026-11-03") == [
        {"currency": USD, "debit": "120.5", "credit": "100"},
        {"currency": EUR, "debit": "75"},
    ]
    assert balance("2026-11-04")[0] == {"currency": USD, "debit": "127.5", "credit": "100"}
    # A query's total over all lines of a GL account's postings agrees with the base-currency amounts.
    total = all_items(api, f"SELECT SUM(amount) AS uf FROM transactionaccountingline WHERE account = {UNDEPOSITED}")
    assert total == [{"uf": "110"}]  # 120.50 + 7.00 - 100 in USD, EUR 75 at 1.1 = 82.50
