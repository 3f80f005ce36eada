"""Receivables rules of the NetSuite stand-in over real HTTP: customer currency lists, credit memo and payment
applications, currency precision, and what SuiteQL shows a reconciliation (transactions and their lines)."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import requests

from sync_pipeline.sandbox.netsuite import NetSuiteConfig, NetSuiteSandbox, NetSuiteState, start_netsuite
from sync_pipeline_tests.sandbox.test_netsuite_standin import Api, decimal_json, error_of, oauth1

USD, EUR, JPY, KWD, GBP = "1", "2", "3", "4", "5"


@pytest.fixture(scope="module")
def server() -> Iterator[NetSuiteSandbox]:
    with start_netsuite() as sandbox:
        yield sandbox


@pytest.fixture
def api(server) -> Iterator[Api]:
    """An empty account with default knobs (reset over HTTP) and a signed session."""
    requests.post(f"{server.url}/_sandbox/config", json=dataclasses.asdict(NetSuiteConfig()), timeout=10)
    requests.post(f"{server.url}/_sandbox/reset", timeout=10).raise_for_status()
    with requests.Session() as http:
        http.auth = oauth1(server.env())
        yield Api(http, server.url)


def error_detail(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 400, response.text
    return response.json()["o:errorDetails"][0]


def patch(api: Api, record_type: str, key: str, body: dict[str, Any]) -> requests.Response:
    return api.send("PATCH", f"{record_type}/{key}", body)


def currency_list(api: Api, customer_id: str) -> list[str]:
    record = api.get("customer", customer_id, expandSubResources="true").json()
    return [line["currency"]["refName"] for line in record["currencyList"]["items"]]


def line(amount: str, item: str = "101") -> dict[str, Any]:
    return {"item": {"id": item}, "amount": Decimal(amount)}


def invoice(api: Api, external_id: str, customer_id: str, amount: str, currency: str = USD) -> requests.Response:
    return api.put("invoice", external_id, api.invoice_body(customer_id, [line(amount)], currency=currency))


def credit_memo_body(customer_id: str, amount: str, currency: str = USD, **extra: Any) -> dict[str, Any]:
    return {
        "entity": {"id": customer_id},
        "currency": {"id": currency},
        "tranDate": "2026-11-05",
        "item": {"items": [line(amount)]},
        **extra,
    }


def applications(*pairs: tuple[str, str | None], apply: bool = True) -> dict[str, Any]:
    """An apply/credit sublist: (document id, amount or None for "what is open") per line."""
    return {
        "items": [
            {"doc": {"id": doc}, "apply": apply, **({} if amount is None else {"amount": Decimal(amount)})}
            for doc, amount in pairs
        ]
    }


# ---- 1. customer currency list -----------------------------------------------------------------------
def test_an_invoice_outside_the_customers_currencies_is_refused_until_the_list_has_it(api):
    customer_id = api.customer("stripe-cus_C", currency=USD)
    assert invoice(api, "stripe-in_usd", customer_id, "10.00").status_code == 204

    refused = invoice(api, "stripe-in_eur", customer_id, "10.00", currency=EUR)

    assert error_detail(refused) == {
        "detail": f"Invalid currency reference key {EUR} for entity {customer_id}.",
        "o:errorCode": "INVALID_KEY_OR_REF",
        "o:errorPath": "currency",
    }
    eur_added = patch(api, "customer", customer_id, {"currencyList": {"items": [{"currency": {"id": EUR}}]}})
    assert eur_added.status_code == 204
    assert currency_list(api, customer_id) == ["USD", "EUR"]  # the primary currency is listed first
    assert invoice(api, "stripe-in_eur", customer_id, "10.00", currency=EUR).status_code == 204


def test_credit_memos_payments_and_refunds_keep_to_the_currency_list_too(api):
    customer_id = api.customer("stripe-cus_C", currency=USD)
    bodies = {
        "creditMemo": credit_memo_body(customer_id, "5.00", currency=GBP),
        "customerPayment": {
            "customer": {"id": customer_id},
            "payment": 5,
            "currency": {"id": GBP},
            "tranDate": "2026-11-03",
        },
        "customerRefund": {"customer": {"id": customer_id}, "currency": {"id": GBP}, "tranDate": "2026-11-06"},
    }
    for record_type, body in bodies.items():
        detail = error_detail(api.put(record_type, f"stripe-{record_type}", body))
        assert (detail["o:errorCode"], detail["o:errorPath"]) == ("INVALID_KEY_OR_REF", "currency"), record_type
        assert detail["detail"] == f"Invalid currency reference key {GBP} for entity {customer_id}."


def test_a_customer_without_a_currency_transacts_in_its_subsidiarys_base_currency(api):
    customer_id = api.upserted_id("customer", "stripe-cus_EU", {"companyName": "Euro Co", "subsidiary": {"id": "2"}})

    record = api.get("customer", customer_id, expandSubResources="true").json()

    assert record["currency"]["refName"] == "EUR"
    assert [line["currency"]["id"] for line in record["currencyList"]["items"]] == [EUR]
    assert invoice(api, "stripe-in_usd", customer_id, "10.00", currency=USD).status_code == 400  # allowed in GmbH
    eur = api.put(
        "invoice", "stripe-in_eur", api.invoice_body(customer_id, [line("10.00")], currency=EUR, subsidiary="2")
    )
    assert eur.status_code == 204


def test_a_write_adds_to_the_currency_list_and_never_drops_a_currency(api):
    customer_id = api.customer("stripe-cus_C", currency=USD)
    api.customer("stripe-cus_C", currency=USD)  # a re-upsert without a list keeps it
    for currency in (EUR, GBP):
        body = {"currencyList": {"items": [{"currency": {"id": currency}}]}}
        assert api.put("customer", "stripe-cus_C", body).status_code == 204

    assert currency_list(api, customer_id) == ["USD", "EUR", "GBP"]
    assert invoice(api, "stripe-in_eur", customer_id, "1.00", currency=EUR).status_code == 204
    sublist = api.get("customer", f"{customer_id}/currencyList").json()
    assert [line["currency"]["id"] for line in sublist["items"]] == [USD, EUR, GBP]


def test_a_currency_list_entry_must_be_allowed_in_the_customers_subsidiary(api):
    japan = api.customer("stripe-cus_JP", subsidiary="3", currency=JPY)
    response = patch(api, "customer", japan, {"currencyList": {"items": [{"currency": {"id": EUR}}]}})
    assert "Currency EUR is not allowed for subsidiary 3 (Japan KK)" in error_detail(response)["detail"]
    assert currency_list(api, japan) == ["JPY"]


# ---- 2. credit memo apply sublist ------------------------------------------------------------------------
def remaining(api: Api, invoice_id: str) -> Decimal:
    return decimal_json(api.get("invoice", invoice_id))["amountRemaining"]


def memo(api: Api, external_id: str) -> dict[str, Any]:
    return decimal_json(api.get("creditMemo", f"eid:{external_id}"))


@pytest.fixture
def two_invoices(api) -> tuple[str, str, str]:
    customer_id = api.customer("stripe-cus_C")
    first = api.upserted_id("invoice", "stripe-in_A", api.invoice_body(customer_id, [line("100.00")]))
    second = api.upserted_id("invoice", "stripe-in_B", api.invoice_body(customer_id, [line("50.00")]))
    return customer_id, first, second


def test_a_credit_memos_apply_sublist_says_which_invoices_it_pays(api, two_invoices):
    customer_id, first, second = two_invoices
    body = credit_memo_body(customer_id, "70.00", apply=applications((first, "40.00"), (second, None)))

    assert api.put("creditMemo", "stripe-cn_1", body).status_code == 204

    credit = memo(api, "stripe-cn_1")
    assert (credit["applied"], credit["unapplied"], credit["status"]["refName"]) == (70, 0, "Fully Applied")
    # A line without an amount takes what is left of the memo, within the invoice's amount remaining.
    lines = api.get("creditMemo", "eid:stripe-cn_1/apply").json()["items"]
    assert [(x["doc"]["id"], Decimal(str(x["amount"]))) for x in lines] == [(first, 40), (second, 30)]
    assert (remaining(api, first), remaining(api, second)) == (Decimal("60.00"), Decimal("20.00"))


@pytest.mark.parametrize("sublist", [applications(("FIRST", "30.00"), apply=False), {"items": []}])
def test_an_apply_sublist_without_lines_switched_on_leaves_the_memo_unapplied_despite_created_from(
    api, two_invoices, sublist
):
    customer_id, first, _ = two_invoices
    for item in sublist["items"]:
        item["doc"]["id"] = first
    body = credit_memo_body(customer_id, "30.00", createdFrom={"id": first}, apply=sublist)

    assert api.put("creditMemo", "stripe-cn_1", body).status_code == 204

    credit = memo(api, "stripe-cn_1")
    assert (credit["applied"], credit["unapplied"], credit["status"]["refName"]) == (0, 30, "Open")
    assert remaining(api, first) == Decimal("100.00")


def test_without_an_apply_sublist_a_memo_still_applies_to_its_created_from_invoice(api, two_invoices):
    customer_id, _, second = two_invoices
    api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "80.00", createdFrom={"id": second}))
    credit = memo(api, "stripe-cn_1")
    assert (credit["applied"], credit["unapplied"]) == (50, 30)  # up to the invoice's amount remaining
    assert remaining(api, second) == 0


def test_over_applying_a_credit_memo_is_refused(api, two_invoices):
    customer_id, first, second = two_invoices
    beyond_invoice = credit_memo_body(customer_id, "80.00", apply=applications((second, "50.01")))
    assert (
        "its amount remaining is 50.00" in error_detail(api.put("creditMemo", "stripe-cn_1", beyond_invoice))["detail"]
    )
    beyond_memo = credit_memo_body(customer_id, "80.00", apply=applications((first, "60.00"), (second, "30.00")))
    detail = error_detail(api.put("creditMemo", "stripe-cn_1", beyond_memo))["detail"]
    assert detail == "The total applied (90.00) exceeds the amount of this credit memo available to apply (80.00)."
    other_customer = api.customer("stripe-cus_other")
    foreign = credit_memo_body(other_customer, "10.00", apply=applications((first, "10.00")))
    assert "belongs to another customer" in error_detail(api.put("creditMemo", "stripe-cn_2", foreign))["detail"]
    assert (remaining(api, first), remaining(api, second)) == (Decimal("100.00"), Decimal("50.00"))


def test_resaving_a_credit_memo_replaces_its_applications(api, two_invoices):
    customer_id, first, second = two_invoices
    api.upserted_id(
        "creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00", apply=applications((first, "30.00")))
    )
    again = credit_memo_body(customer_id, "30.00", apply=applications((first, "30.00"), apply=False))
    again["apply"]["items"].append({"doc": {"id": second}, "apply": True, "amount": Decimal("20.00")})

    assert api.put("creditMemo", "stripe-cn_1", again).status_code == 204

    assert (remaining(api, first), remaining(api, second)) == (Decimal("100.00"), Decimal("30.00"))
    assert (memo(api, "stripe-cn_1")["applied"], memo(api, "stripe-cn_1")["unapplied"]) == (20, 10)


# ---- 3. customer payment credit sublist --------------------------------------------------------------------
def payment_body(
    customer_id: str, amount: str, apply: dict[str, Any], credit: dict[str, Any] | None = None
) -> dict[str, Any]:
    body = {
        "customer": {"id": customer_id},
        "payment": Decimal(amount),
        "currency": {"id": USD},
        "account": {"id": "1"},
        "tranDate": "2026-11-03",
        "apply": apply,
    }
    return body if credit is None else {**body, "credit": credit}


def suiteql_rows(api: Api, external_ids: list[str]) -> dict[str, dict[str, str]]:
    quoted = ", ".join(f"'{e}'" for e in external_ids)
    query = (
        "SELECT externalid, type, status, foreigntotal, foreignamountremaining FROM transaction "
        f"WHERE externalid IN ({quoted})"
    )
    return {row.pop("externalid"): row for row in api.suiteql(query).json()["items"]}


def test_a_payment_applies_a_credit_memo_and_cash_to_one_invoice(api, two_invoices):
    customer_id, first, _ = two_invoices
    memo_id = api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00"))
    body = payment_body(customer_id, "70.00", applications((first, "100.00")), applications((memo_id, "30.00")))

    assert api.put("customerPayment", "stripe-ch_1", body).status_code == 204

    payment = decimal_json(api.get("customerPayment", "eid:stripe-ch_1"))
    assert (payment["total"], payment["applied"], payment["unapplied"]) == (70, 100, 0)
    rows = suiteql_rows(api, ["stripe-in_A", "stripe-cn_1", "stripe-ch_1"])
    assert rows["stripe-in_A"] == {
        "links": [],
        "type": "CustInvc",
        "status": "B",
        "foreigntotal": "100",
        "foreignamountremaining": "0",
    }
    assert (rows["stripe-cn_1"]["status"], rows["stripe-cn_1"]["foreignamountremaining"]) == ("B", "0")
    assert rows["stripe-ch_1"]["foreignamountremaining"] == "0"
    assert memo(api, "stripe-cn_1")["status"]["refName"] == "Fully Applied"


def test_a_zero_payment_moves_an_unapplied_payments_credit_onto_an_invoice(api, two_invoices):
    customer_id, _, second = two_invoices
    earlier = api.upserted_id("customerPayment", "stripe-ch_early", payment_body(customer_id, "45.00", {"items": []}))
    body = payment_body(customer_id, "0", applications((second, "40.00")), applications((earlier, None)))

    assert api.put("customerPayment", "stripe-ch_0", body).status_code == 204

    # A credit line without an amount offers all of the credit's unapplied amount (45); the invoice takes 40,
    # so the zero payment keeps 0 - (40 - 45) = 5 unapplied and the earlier payment none.
    rows = suiteql_rows(api, ["stripe-in_B", "stripe-ch_early", "stripe-ch_0"])
    assert rows["stripe-in_B"]["foreignamountremaining"] == "10"
    assert rows["stripe-ch_early"]["foreignamountremaining"] == "0"
    assert rows["stripe-ch_0"]["foreigntotal"] == "0" and rows["stripe-ch_0"]["foreignamountremaining"] == "5"


def test_a_payment_cannot_apply_more_than_its_amount_and_credits_nor_take_more_than_a_credit_has(api, two_invoices):
    customer_id, first, _ = two_invoices
    memo_id = api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00"))

    too_much = payment_body(customer_id, "50.00", applications((first, "90.00")), applications((memo_id, "30.00")))
    detail = error_detail(api.put("customerPayment", "stripe-ch_1", too_much))["detail"]
    assert detail == "The total applied (90.00) exceeds the payment amount (50.00) plus the credits applied (30.00)."
    beyond_credit = payment_body(customer_id, "0", applications((first, "30.01")), applications((memo_id, "30.01")))
    detail = error_detail(api.put("customerPayment", "stripe-ch_1", beyond_credit))["detail"]
    assert detail.endswith("its amount remaining is 30.00.")
    other = api.customer("stripe-cus_other")
    foreign = api.upserted_id("creditMemo", "stripe-cn_other", credit_memo_body(other, "5.00"))
    stolen = payment_body(customer_id, "0", applications((first, "5.00")), applications((foreign, "5.00")))
    assert "belongs to another customer" in error_detail(api.put("customerPayment", "stripe-ch_1", stolen))["detail"]
    assert remaining(api, first) == Decimal("100.00") and memo(api, "stripe-cn_1")["unapplied"] == 30


def test_resaving_a_payment_replaces_the_credits_it_used(api, two_invoices):
    customer_id, first, _ = two_invoices
    memo_id = api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00"))
    for credit in ("30.00", "10.00"):
        body = payment_body(customer_id, "0", applications((first, credit)), applications((memo_id, credit)))
        assert api.put("customerPayment", "stripe-ch_1", body).status_code == 204

    assert memo(api, "stripe-cn_1")["unapplied"] == 20 and remaining(api, first) == Decimal("90.00")
    # The memo cannot be deleted while a payment uses it; deleting the payment gives its credit back.
    assert api.http.delete(f"{api.url}/services/rest/record/v1/creditMemo/{memo_id}", timeout=10).status_code == 400
    assert api.http.delete(f"{api.url}/services/rest/record/v1/customerPayment/eid:stripe-ch_1", timeout=10).ok
    assert memo(api, "stripe-cn_1")["unapplied"] == 30 and remaining(api, first) == Decimal("100.00")


def test_a_refund_can_only_take_what_payments_left_of_a_credit_memo(api, two_invoices):
    customer_id, first, _ = two_invoices
    memo_id = api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00"))
    body = payment_body(customer_id, "0", applications((first, "25.00")), applications((memo_id, "25.00")))
    api.upserted_id("customerPayment", "stripe-ch_1", body)

    def refund(amount: str) -> requests.Response:
        body = {"customer": {"id": customer_id}, "currency": {"id": USD}, "tranDate": "2026-11-06"}
        return api.put("customerRefund", "stripe-re_1", {**body, "apply": applications((memo_id, amount))})

    assert refund("5.01").status_code == 400
    assert refund("5.00").status_code == 204
    assert memo(api, "stripe-cn_1")["unapplied"] == 0


def test_credits_a_payment_used_survive_a_state_file(api, server, two_invoices, tmp_path):
    customer_id, first, _ = two_invoices
    memo_id = api.upserted_id("creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00"))
    body = payment_body(customer_id, "0", applications((first, "30.00")), applications((memo_id, "30.00")))
    api.upserted_id("customerPayment", "stripe-ch_1", body)

    server.state.save(tmp_path / "netsuite.json")
    loaded = NetSuiteState.load(tmp_path / "netsuite.json")

    assert loaded.render("creditMemo", memo_id, "", expand=False)["unapplied"] == 0
    assert loaded.render("invoice", first, "", expand=False)["amountRemaining"] == Decimal("70.00")


# ---- 4. currency precision and the precision journal -----------------------------------------------------
def precision_journal(api: Api) -> list[dict[str, Any]]:
    return decimal_json(requests.get(f"{api.url}/_sandbox/precision_violations", timeout=10))


def test_kwd_has_netsuites_two_decimals(api):
    assert api.get("currency", KWD).json()["currencyPrecision"] == 2


def test_an_amount_beyond_the_currencys_precision_is_rounded_and_journaled(api):
    customer_id = api.customer("stripe-cus_KW", subsidiary="4", currency=KWD)
    lines = [line("12.345"), line("12.34"), line("1.100")]
    body = api.invoice_body(customer_id, lines, currency=KWD, subsidiary="4")

    invoice_id = api.upserted_id("invoice", "stripe-in_KW", body)

    stored = decimal_json(api.get("invoice", invoice_id, expandSubResources="true"))
    assert [x["amount"] for x in stored["item"]["items"]] == [Decimal("12.35"), Decimal("12.34"), Decimal("1.10")]
    assert stored["total"] == Decimal("25.79")
    journal = precision_journal(api)
    assert [{k: v for k, v in entry.items() if k != "at"} for entry in journal] == [
        {
            "recordType": "invoice",
            "id": invoice_id,
            "externalId": "stripe-in_KW",
            "field": "item[1].amount",
            "sent": Decimal("12.345"),
            "stored": Decimal("12.35"),
            "currency": "KWD",
            "currencyId": KWD,
            "currencyPrecision": 2,
        }
    ]  # 12.34 fits, and so does 1.100: nothing is lost rounding them


def test_the_journal_names_payment_and_apply_amounts_and_keeps_refused_requests_out(api):
    customer_id = api.customer("stripe-cus_JP", subsidiary="3", currency=JPY)
    invoice_id = api.upserted_id(
        "invoice", "stripe-in_JP", api.invoice_body(customer_id, [line("1000")], currency=JPY, subsidiary="3")
    )
    body = {
        "customer": {"id": customer_id},
        "payment": Decimal("999.5"),
        "currency": {"id": JPY},
        "tranDate": "2026-11-03",
        "apply": applications((invoice_id, "999.5")),
    }
    refused = {**body, "apply": applications((invoice_id, "1000.5"))}  # rounds to 1001: more than is open
    assert api.put("customerPayment", "stripe-ch_JP", refused).status_code == 400
    assert precision_journal(api) == []

    assert api.put("customerPayment", "stripe-ch_JP", body).status_code == 204

    journal = precision_journal(api)
    assert [(e["field"], e["sent"], e["stored"], e["currency"]) for e in journal] == [
        ("payment", Decimal("999.5"), Decimal("1000"), "JPY"),
        ("apply[1].amount", Decimal("999.5"), Decimal("1000"), "JPY"),
    ]
    assert remaining(api, invoice_id) == 0
    requests.post(f"{api.url}/_sandbox/reset", timeout=10).raise_for_status()
    assert precision_journal(api) == []


def test_an_account_file_with_a_three_decimal_currency_is_refused(tmp_path):
    from sync_pipeline.sandbox.netsuite.config import ACCOUNT_FILE, load_account_file

    text = ACCOUNT_FILE.read_text(encoding="utf-8").replace("currencyPrecision: 2}", "currencyPrecision: 3}", 1)
    (tmp_path / "account.yaml").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="NetSuite supports only"):
        load_account_file(str(tmp_path / "account.yaml"))


# ---- 5. what a reconciliation reads back ---------------------------------------------------------------------
def test_suiteql_and_record_gets_give_a_reconciliation_its_totals_balances_and_lines(api, two_invoices):
    customer_id, first, second = two_invoices
    api.upserted_id(
        "creditMemo", "stripe-cn_1", credit_memo_body(customer_id, "30.00", apply=applications((first, "30.00")))
    )
    api.upserted_id(
        "customerPayment", "stripe-ch_1", payment_body(customer_id, "60.00", applications((first, "50.00")))
    )

    query = (
        "SELECT externalid, type, entity, currency, trandate, status, foreigntotal, foreignamountremaining "
        f"FROM transaction WHERE entity = {customer_id} AND type IN ('CustInvc', 'CustCred', 'CustPymt') ORDER BY id"
    )
    rows = api.suiteql(query).json()["items"]

    common = {"links": [], "entity": customer_id, "currency": USD}
    assert rows == [
        {**common, "externalid": "stripe-in_A", "type": "CustInvc", "trandate": "2026-11-02", "status": "A",
         "foreigntotal": "100", "foreignamountremaining": "20"},
        {**common, "externalid": "stripe-in_B", "type": "CustInvc", "trandate": "2026-11-02", "status": "A",
         "foreigntotal": "50", "foreignamountremaining": "50"},
        {**common, "externalid": "stripe-cn_1", "type": "CustCred", "trandate": "2026-11-05", "status": "B",
         "foreigntotal": "30", "foreignamountremaining": "0"},
        {**common, "externalid": "stripe-ch_1", "type": "CustPymt", "trandate": "2026-11-03", "status": "B",
         "foreigntotal": "60", "foreignamountremaining": "10"},
    ]  # fmt: skip
    # The documents' item lines: one transactionline query for all of them (NetSuite's signs: an invoice's item
    # lines negative, a credit memo's positive), the same lines as each record's GET with its sublists.
    ids = ", ".join(
        row["id"] for row in api.suiteql(f"SELECT id FROM transaction WHERE entity = {customer_id}").json()["items"]
    )
    lines = api.suiteql(
        f"SELECT transaction, item, foreignamount FROM transactionline WHERE transaction IN ({ids}) AND mainline = 'F' "
        "AND item IS NOT NULL"  # the payment's receivable line has no item
    ).json()["items"]
    memo_id = api.get("creditMemo", "eid:stripe-cn_1").json()["id"]
    assert [(x["transaction"], x["item"], x["foreignamount"]) for x in lines] == [
        (first, "101", "-100"), (second, "101", "-50"), (memo_id, "101", "30")
    ]  # fmt: skip
    for record_type, key, amount in (("invoice", first, "100.00"), ("creditMemo", "eid:stripe-cn_1", "30.00")):
        items = decimal_json(api.get(record_type, key, expandSubResources="true"))["item"]["items"]
        assert [(x["item"]["id"], x["amount"]) for x in items] == [("101", Decimal(amount))]


# ---- 6. transactionline: every document's item lines in one query ----------------------------------------------
LINE_COLUMNS = "transaction, id, linesequencenumber, mainline, item, quantity, rate, foreignamount, netamount, memo"


def all_items(api: Api, query: str, limit: int = 1000) -> list[dict[str, Any]]:
    """Every item of a query, following NetSuite's pages."""
    rows, offset = [], 0
    while True:
        response = api.suiteql(query, limit=limit, offset=offset)
        assert response.status_code == 200, response.text
        page = response.json()
        rows.extend({k: v for k, v in item.items() if k != "links"} for item in page["items"])
        if not page["hasMore"]:
            return rows
        offset += page["count"]


@pytest.fixture
def documents(api) -> dict[str, str]:
    """An invoice with a discount line, a one-line invoice, a credit memo and a payment."""
    customer_id = api.customer()
    lines = [
        {"item": {"id": "101"}, "quantity": 2, "rate": Decimal("30.00"), "description": "Seats"},
        {"item": {"id": "101"}, "amount": Decimal("-10.00"), "description": "Discount"},
    ]
    first = api.upserted_id(
        "invoice", "stripe-in_L1", api.invoice_body(customer_id, lines, memo="Stripe invoice in_L1")
    )
    second = api.invoice("stripe-in_L2", customer_id, "100.00")
    refund_line = {"item": {"id": "101"}, "quantity": 1, "rate": Decimal("25.00"), "description": "Refund of seats"}
    credit = api.upserted_id(
        "creditMemo", "stripe-cn_L1", {**credit_memo_body(customer_id, "0"), "item": {"items": [refund_line]}}
    )
    payment = api.upserted_id(
        "customerPayment", "stripe-ch_L1", api.payment_body(customer_id, "50.00", [(first, "50.00")])
    )
    return {"first": first, "second": second, "credit": credit, "payment": payment}


def ids_of_documents(api: Api) -> list[str]:
    """The first query of a reconciliation: the documents, by external id."""
    rows = all_items(
        api,
        "SELECT id FROM transaction WHERE externalid IN ('stripe-in_L1', 'stripe-in_L2', 'stripe-cn_L1') ORDER BY id",
    )
    return [row["id"] for row in rows]


def test_item_lines_of_every_document_in_one_query_with_netsuites_signs(api, documents):
    ids = ids_of_documents(api)
    rows = all_items(
        api,
        f"SELECT {LINE_COLUMNS} FROM transactionline WHERE transaction IN ({', '.join(ids)}) AND mainline = 'F' "
        "ORDER BY transaction, linesequencenumber",
    )
    first, second, credit = documents["first"], documents["second"], documents["credit"]
    # Values are strings, numbers without trailing zeros, null columns left out: as the other tables.
    assert rows == [
        {
            "transaction": first,
            "id": "1",
            "linesequencenumber": "1",
            "mainline": "F",
            "item": "101",
            "quantity": "-2",
            "rate": "30",
            "foreignamount": "-60",
            "netamount": "-60",
            "memo": "Seats",
        },
        {
            "transaction": first,
            "id": "2",
            "linesequencenumber": "2",
            "mainline": "F",
            "item": "101",
            "foreignamount": "10",
            "netamount": "10",
            "memo": "Discount",
        },
        {
            "transaction": second,
            "id": "1",
            "linesequencenumber": "1",
            "mainline": "F",
            "item": "101",
            "quantity": "-1",
            "foreignamount": "-100",
            "netamount": "-100",
        },
        {
            "transaction": credit,
            "id": "1",
            "linesequencenumber": "1",
            "mainline": "F",
            "item": "101",
            "quantity": "1",
            "rate": "25",
            "foreignamount": "25",
            "netamount": "25",
            "memo": "Refund of seats",
        },
    ]


def test_the_main_line_carries_the_total_and_every_document_sums_to_zero(api, documents):
    ids = ids_of_documents(api)
    headers = all_items(
        api,
        f"SELECT transaction, id, linesequencenumber, foreignamount, memo FROM transactionline "
        f"WHERE mainline = 'T' AND transaction IN ({', '.join(ids)}) ORDER BY transaction",
    )
    assert headers == [
        {
            "transaction": documents["first"],
            "id": "0",
            "linesequencenumber": "0",
            "foreignamount": "50",
            "memo": "Stripe invoice in_L1",
        },
        {"transaction": documents["second"], "id": "0", "linesequencenumber": "0", "foreignamount": "100"},
        {"transaction": documents["credit"], "id": "0", "linesequencenumber": "0", "foreignamount": "-25"},
    ]
    totals = {row["id"]: row["foreigntotal"] for row in all_items(api, "SELECT id, foreigntotal FROM transaction")}
    assert Decimal(headers[0]["foreignamount"]) == Decimal(totals[documents["first"]])
    sums: dict[str, Decimal] = defaultdict(Decimal)
    for row in all_items(
        api, f"SELECT transaction, foreignamount FROM transactionline WHERE transaction IN ({', '.join(ids)})"
    ):
        sums[row["transaction"]] += Decimal(row["foreignamount"])
    assert sums == {document: 0 for document in ids}


def test_lines_agree_with_each_documents_get_and_page_like_other_tables(api, documents):
    ids = ids_of_documents(api)
    # Without ORDER BY, rows come by transaction then line; pages follow NetSuite's offset rules.
    rows = all_items(api, f"SELECT * FROM transactionline WHERE transaction IN ({', '.join(ids)})", limit=2)
    assert [(row["transaction"], row["id"]) for row in rows] == [
        (documents["first"], "0"),
        (documents["first"], "1"),
        (documents["first"], "2"),
        (documents["second"], "0"),
        (documents["second"], "1"),
        (documents["credit"], "0"),
        (documents["credit"], "1"),
    ]
    assert {row["taxline"] for row in rows} == {"F"}
    for record_type, document, sign in (("invoice", documents["first"], -1), ("creditMemo", documents["credit"], 1)):
        record = decimal_json(api.get(record_type, document, expandSubResources="true"))
        expected = [(str(line["line"]), line["amount"] * sign) for line in record["item"]["items"]]
        got = [(row["id"], Decimal(row["foreignamount"])) for row in rows if row["transaction"] == document]
        assert got[1:] == expected
    # A payment has no item lines: its main line and its receivable line.
    count = api.suiteql(f"SELECT COUNT(*) AS n FROM transactionline WHERE transaction = {documents['payment']}")
    assert count.json()["items"][0]["n"] == "2"


def test_replacing_a_documents_lines_shows_at_once(api, documents):
    customer_id = api.customer()  # the same customer, upserted again
    lines = [{"item": {"id": "101"}, "amount": Decimal("40.00")}]
    api.upserted_id("invoice", "stripe-in_L2", api.invoice_body(customer_id, lines))
    rows = all_items(
        api, f"SELECT id, foreignamount FROM transactionline WHERE transaction = {documents['second']} ORDER BY id"
    )
    assert rows == [{"id": "0", "foreignamount": "40"}, {"id": "1", "foreignamount": "-40"}]


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (
            "SELECT t.id FROM transaction t JOIN transactionline tl ON tl.transaction > t.id",
            "This subset joins on column equalities only",
        ),
        ("SELECT id FROM transaction t JOIN transactionline tl ON tl.transaction = t.id", "Field 'id' is ambiguous."),
        ("SELECT amount FROM transactionline", "Field 'amount' for record 'transactionline' was not found."),
        ("SELECT transaction, SUM(foreignamount) FROM transactionline", "'transaction' is not a GROUP BY expression."),
    ],
)
def test_unsupported_joins_and_unknown_columns_get_netsuites_400(api, query, detail):
    response = api.suiteql(query)
    assert response.status_code == 400
    code, message = error_of(response)
    assert code == "INVALID_PARAMETER" and message.startswith("Invalid search query.") and detail in message
