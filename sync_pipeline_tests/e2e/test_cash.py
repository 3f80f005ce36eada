"""Cash (issue 12) end to end: Stripe payouts become NetSuite bank deposits through real Dagster runs against the
Stripe and NetSuite stand-ins over HTTP; NetSuite is read back through the stand-in's inspection API.

Each test follows money a controller follows: a charge into Undeposited Funds, out again in the payout's deposit
with its fee, a refund and a chargeback paid out of the deposit, a won dispute's money back in, a failed payout
taken out of the bank again; and the deposit equals the payout to the cent.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest
import requests

from sync_pipeline_tests.e2e import harness

pytestmark = pytest.mark.e2e

DAY = harness.DAY - dt.timedelta(days=10)  # the invoices' day; payouts arrive a few days later
USD = "1"


def sandbox_post(box: harness.Sandbox, path: str, body: dict | None = None) -> dict | list:
    response = requests.post(f"{box.stripe_url}/_sandbox/{path}", json=body or {}, timeout=30)
    response.raise_for_status()
    return response.json()


def payout_now(box: harness.Sandbox, when: int, currency: str = "usd") -> dict:
    """Stripe's automatic payout of what is available at `when`; it arrives `payout_arrival_days` later."""
    box.clock(when)
    (payout,) = sandbox_post(box, "payouts", {"currency": currency})
    return payout


def arrive(box: harness.Sandbox, payout: dict) -> dt.date:
    """Move Stripe's clock past the payout's arrival (it becomes paid); the arrival day is its partition."""
    box.clock(payout["arrival_date"] + 3600)
    box.clock(None)
    return dt.datetime.fromtimestamp(payout["arrival_date"], tz=dt.UTC).date()


def lines(record: dict, sublist: str) -> list[dict]:
    return (record.get(sublist) or {}).get("items") or []


def payout_transactions(box: harness.Sandbox, payout_id: str) -> list:
    return list(box.client.v1.balance_transactions.list({"payout": payout_id, "limit": 100}).auto_paging_iter())


def test_a_payout_of_charges_fees_a_refund_and_a_lost_dispute_is_one_deposit_equal_to_it(tmp_path, monkeypatch):
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        box.clock(harness.at(DAY, 9))
        acme = box.customer("Acme Cash", "usd")
        paid = box.invoice(acme, "usd", [12000])
        refunded = box.invoice(acme, "usd", [8000])
        disputed = box.invoice(acme, "usd", [5000])
        box.client.v1.refunds.create({"charge": box.charge_of(refunded.id), "amount": 3000})
        sandbox_post(box, "disputes", {"charge": box.charge_of(disputed.id), "reason": "fraudulent"})
        payout = payout_now(box, harness.at(DAY + dt.timedelta(days=3), 6))
        arrival = arrive(box, payout)

        assert box.materialize(DAY).success  # the invoices' day: invoices, payments, the refund, the chargeback
        result = box.materialize(arrival)  # the payout's day: its deposit

        assert result.success, harness.step_failures(result)
        deposit = box.netsuite("deposit")[f"stripe-{payout['id']}"]
        # The deposit equals the payout, to the cent, as NetSuite computes it (payments + other - cash back).
        assert harness.amount(deposit) == Decimal(payout["amount"]) / 100
        payments = box.netsuite("customerPayment")
        deposited = {str(line["id"]) for line in lines(deposit, "payment")}
        for invoice in (paid, refunded, disputed):
            payment = payments[f"stripe-{box.charge_of(invoice.id)}"]
            assert payment["id"] in deposited
            assert payment["status"]["refName"] == "Deposited"
        cash_back = {(line["account"]["id"], Decimal(str(line["amount"]))) for line in lines(deposit, "cashback")}
        assert (USD_REFUNDS, Decimal("30.00")) in cash_back  # the refund, paid from Refunds Clearing
        assert (USD_REFUNDS, Decimal("50.00")) in cash_back  # the chargeback
        fees = {
            t.type: t.fee
            for t in payout_transactions(box, payout["id"])
            if t.type == "charge" or t.reporting_category == "dispute"
        }
        assert fees
        dispute_fee = next(t.fee for t in payout_transactions(box, payout["id"]) if t.reporting_category == "dispute")
        assert ("61", Decimal(dispute_fee) / 100) in cash_back  # the dispute fee on its own account
        processing = sum(t.fee for t in payout_transactions(box, payout["id"]) if t.type == "charge")
        assert ("60", Decimal(processing) / 100) in cash_back
        # The chargeback is in the books as Stripe booked it: a credit memo paid out by a customer refund.
        dispute_id = next(t.source for t in payout_transactions(box, payout["id"]) if t.reporting_category == "dispute")
        assert harness.amount(box.netsuite("creditMemo")[f"stripe-{dispute_id}-cm"]) == Decimal("50.00")
        assert harness.amount(box.netsuite("customerRefund")[f"stripe-{dispute_id}"]) == Decimal("50.00")
        checks = harness.checks(result)
        for name in ("deposit_matches_payout", "fees_match_stripe", "undeposited_funds_cleared"):
            assert checks[("netsuite_deposits", name)].passed, (name, checks[("netsuite_deposits", name)].metadata)

        # Run again, and again with the whole payout re-read: the same deposit, nothing written.
        writes = box.netsuite_writes()
        again = box.materialize(arrival)
        assert again.success
        assert box.netsuite_writes() == writes
        # A no-op re-run still shows the day's state: the deposit is in NetSuite, for the payout's amount.
        figures = harness.metadata(again, "netsuite_deposits")
        assert (figures["created"], figures["unchanged"], figures["in_netsuite"]) == (0, 1, 1)
        assert figures["amounts_by_currency"] == {"USD": str(Decimal(payout["amount"]) / 100)}
        assert list(box.netsuite("deposit")) == [f"stripe-{payout['id']}"]


USD_REFUNDS = "70"


def test_a_deposit_waits_for_its_payments_and_a_won_dispute_comes_back_through_undeposited_funds(tmp_path, monkeypatch):
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        box.clock(harness.at(DAY, 9))
        acme = box.customer("Acme Won", "usd")
        box.invoice(acme, "usd", [50000])
        disputed = box.invoice(acme, "usd", [20000])
        dispute = sandbox_post(box, "disputes", {"charge": box.charge_of(disputed.id)})
        first = payout_now(box, harness.at(DAY + dt.timedelta(days=3), 6))
        box.clock(harness.at(DAY + dt.timedelta(days=4), 9))
        sandbox_post(box, f"disputes/{dispute['id']}/close", {"outcome": "won"})
        second = payout_now(box, harness.at(DAY + dt.timedelta(days=5), 6))
        first_day, second_day = arrive(box, first), arrive(box, second)

        # The payout's day before the invoices' day: its deposit waits for its payment, and says so.
        early = box.materialize(first_day)
        assert early.success
        assert f"stripe-{first['id']}" not in box.netsuite("deposit")
        outcomes = early.output_for_node("netsuite_deposits")
        assert list(outcomes["error_code"].dropna()) == ["DEPENDENCY_NOT_SYNCED"]

        assert box.materialize(DAY).success
        assert box.materialize(first_day).success
        assert box.materialize(second_day).success
        deposits = box.netsuite("deposit")
        assert harness.amount(deposits[f"stripe-{first['id']}"]) == Decimal(first["amount"]) / 100
        assert harness.amount(deposits[f"stripe-{second['id']}"]) == Decimal(second["amount"]) / 100
        # Won: the chargeback reversed by an invoice, paid by the reinstated money, which the second payout deposits.
        reinstated = box.netsuite("customerPayment")[f"stripe-{dispute['id']}-reinstated"]
        assert harness.amount(reinstated) == Decimal("200.00")
        assert reinstated["status"]["refName"] == "Deposited"
        assert harness.amount(box.netsuite("invoice")[f"stripe-{dispute['id']}-cm-reversal"], "amountRemaining") == 0
        returned_fee = [
            line for line in lines(deposits[f"stripe-{second['id']}"], "other") if line["account"]["id"] == "61"
        ]
        assert [Decimal(str(line["amount"])) for line in returned_fee] == [Decimal(15)]


def test_a_payout_that_fails_after_it_was_deposited_is_taken_back_out_of_the_bank(tmp_path, monkeypatch):
    with harness.running_sandbox(tmp_path, monkeypatch) as box:
        box.clock(harness.at(DAY, 9))
        box.invoice(box.customer("Acme Fail", "usd"), "usd", [40000])
        failed = payout_now(box, harness.at(DAY + dt.timedelta(days=3), 6))
        failed_day = arrive(box, failed)
        assert box.materialize(DAY).success
        assert box.materialize(failed_day).success
        assert f"stripe-{failed['id']}" in box.netsuite("deposit")

        box.clock(failed["arrival_date"] + 7200)
        sandbox_post(box, f"payouts/{failed['id']}/fail", {"failure_code": "account_closed"})
        again = payout_now(box, failed["arrival_date"] + 86400)
        again_day = arrive(box, again)
        assert box.materialize(failed_day).success
        assert box.materialize(again_day).success

        journal = box.netsuite("journalEntry")[f"stripe-{failed['id']}-returned"]
        amount = Decimal(failed["amount"]) / 100
        debits = {line["account"]["id"]: Decimal(str(line.get("debit") or 0)) for line in lines(journal, "line")}
        credits = {line["account"]["id"]: Decimal(str(line.get("credit") or 0)) for line in lines(journal, "line")}
        assert debits["90"] == amount and credits["10"] == amount
        paid_again = box.netsuite("deposit")[f"stripe-{again['id']}"]
        assert harness.amount(paid_again) == Decimal(again["amount"]) / 100
        returned = [
            Decimal(str(line["amount"])) for line in lines(paid_again, "other") if line["account"]["id"] == "90"
        ]
        # End state: the bank holds what arrived (deposit - journal + deposit again = the second payout); the
        # returned-payouts account is cleared (journal debit = the second deposit's line).
        assert returned == [amount]
        bank = (
            harness.amount(box.netsuite("deposit")[f"stripe-{failed['id']}"])
            - credits["10"]
            + harness.amount(paid_again)
        )
        assert bank == Decimal(again["amount"]) / 100


# -- a seeded month with every cash case, synced day by day ------------------------------------------------

MONTH_END = dt.date(2026, 10, 31)


@pytest.fixture(scope="module")
def cash_month(tmp_path_factory):
    import dagster as dg

    from sync_pipeline.sandbox.runner import running_sandbox
    from sync_pipeline.sandbox.scenario import ScenarioOptions

    options = ScenarioOptions(days=14, invoices=30, seed=11, end_date=MONTH_END, cash_cases=True)
    tmp = tmp_path_factory.mktemp("cash")
    with running_sandbox(seed_options=options) as sandbox, pytest.MonkeyPatch.context() as env:
        for name, value in sandbox.env().items():
            env.setenv(name, value)
        (tmp / "dagster_home").mkdir()
        env.setenv("DAGSTER_HOME", str(tmp / "dagster_home"))
        env.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp / 'ledger.sqlite'}")
        start = MONTH_END - dt.timedelta(days=options.days - 1)
        env.setenv("SYNC_START_DATE", start.isoformat())
        from sync_pipeline.definitions import ALL_ASSETS, build_resources

        results = {}
        day = start
        # Payouts made on the last days arrive up to two days after the month: their days are synced too.
        while day <= MONTH_END + dt.timedelta(days=3):
            results[day] = dg.materialize(ALL_ASSETS, partition_key=day.isoformat(), resources=build_resources())
            day += dt.timedelta(days=1)
        yield sandbox, results, start


def _records(sandbox, system: str, record_type: str) -> list[dict]:
    url = sandbox.urls()[system].rstrip("/")
    body = requests.get(f"{url}/_sandbox/records/{record_type}", timeout=60).json()
    return body["records"] if isinstance(body, dict) else body


def test_every_payout_of_the_month_is_deposited_equal_to_it_and_every_cash_check_passes(cash_month):
    sandbox, results, start = cash_month
    assert all(r.success for r in results.values()), {d: harness.step_failures(r) for d, r in results.items()}
    last = MONTH_END + dt.timedelta(days=3)
    arrived = [
        p
        for p in _records(sandbox, "stripe", "payout")
        if p["status"] in ("paid", "failed")
        and start <= dt.datetime.fromtimestamp(p["arrival_date"], tz=dt.UTC).date() <= last
    ]
    deposits: dict[str, Decimal] = {}
    for record in _records(sandbox, "netsuite", "deposit"):
        payout_id = record["externalId"].removeprefix("stripe-").split("-")[0]
        deposits[payout_id] = deposits.get(payout_id, Decimal(0)) + Decimal(str(record["total"]))
    precision = {"jpy": 0}
    unequal = {
        p["id"]: (p["amount"], deposits.get(p["id"]))
        for p in arrived
        if deposits.get(p["id"]) != Decimal(p["amount"]).scaleb(-precision.get(p["currency"], 2))
        and p["currency"] != "kwd"
    }
    kwd = [p for p in arrived if p["currency"] == "kwd"]
    for p in kwd:  # three decimals in Stripe, two in NetSuite: the payout rounded half-even
        exact = Decimal(p["amount"]).scaleb(-3)
        assert deposits.get(p["id"]) == exact.quantize(Decimal("0.01")), p["id"]
    failures = [
        (day, e.check_name, e.description)
        for day, r in results.items()
        for e in r.get_asset_check_evaluations()
        if e.check_name
        in ("deposit_matches_payout", "fees_match_stripe", "undeposited_funds_cleared", "books_match_stripe")
        and not e.passed
    ]
    compared = sum(
        e.metadata["payouts_compared"].value
        for r in results.values()
        for e in r.get_asset_check_evaluations()
        if e.check_name == "deposit_matches_payout"
    )
    by_currency: dict[str, int] = {}
    for p in arrived:
        by_currency[p["currency"]] = by_currency.get(p["currency"], 0) + 1
    print(
        f"\n[cash] payouts arrived {len(arrived)} {by_currency}; deposits in NetSuite "
        f"{len(_records(sandbox, 'netsuite', 'deposit'))}; payouts equal to their deposits "
        f"{len(arrived) - len(unequal)}; checked by deposit_matches_payout {compared}; failed checks {len(failures)}"
    )
    held = [
        (row["source_id"], row["status"], row["error_code"], row["message"])
        for r in results.values()
        for row in r.output_for_node("netsuite_deposit_plan").to_dict("records")
        if row["source_id"] in unequal
    ]
    written = [
        (row["external_id"], row["action"], row.get("error_code"), row.get("message"))
        for r in results.values()
        for row in r.output_for_node("netsuite_deposits").to_dict("records")
        if row["external_id"].removeprefix("stripe-").split("-")[0] in unequal
    ]
    for entry in held + written:
        print("  held:", entry)
    assert len(arrived) >= 20 and unequal == {} and failures == [], (held, written, failures)
    assert compared == len(arrived)


def test_each_cash_case_is_booked_where_a_controller_looks_for_it(cash_month):
    sandbox, _, _ = cash_month
    cases = sandbox.summary.cash
    by_eid = {
        record_type: {r["externalId"]: r for r in _records(sandbox, "netsuite", record_type) if r.get("externalId")}
        for record_type in ("creditMemo", "customerRefund", "customerPayment", "deposit", "journalEntry")
    }
    lost, won = cases["dispute_lost"][0], cases["dispute_won"][0]
    assert f"stripe-{lost['dispute']}-cm" in by_eid["creditMemo"]
    assert f"stripe-{lost['dispute']}" in by_eid["customerRefund"]
    reinstated = by_eid["customerPayment"][f"stripe-{won['dispute']}-reinstated"]
    assert reinstated["status"]["refName"] == "Deposited"
    crossed = by_eid["customerPayment"][f"stripe-{cases['cross_currency'][0]['charge']}"]
    assert Decimal(str(crossed["exchangeRate"])) == Decimal("1.085")
    assert crossed["status"]["refName"] == "Deposited"
    failed = cases["payout_failure"][0]["payout"]
    assert f"stripe-{failed}-returned" in by_eid["journalEntry"]
    accounts = {
        (line["account"]["id"])
        for deposit in by_eid["deposit"].values()
        for sublist in ("other", "cashback")
        for line in lines(deposit, sublist)
    }
    assert {"91", "60", "61", "70", "90"} <= accounts  # adjustment, fees, dispute fees, refunds, payout paid again
