"""`sync-pipeline exceptions` against a real ledger (SQLite and PostgreSQL), and the upgrade of an older ledger."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import pytest
import sqlalchemy as sa

from sync_pipeline.cli import main
from sync_pipeline.resources.ledger import ADDED_EXCEPTION_COLUMNS, ExceptionRow, Ledger, sync_exceptions


def _invoice_problem(**context) -> ExceptionRow:
    return ExceptionRow(
        "netsuite",
        "invoice",
        "stripe-in_7",
        "UNMAPPED_CURRENCY",
        "Invoice stripe-in_7 is in JPY, which field_mapping.yaml does not map",
        "add JPY under `currencies:` in field_mapping.yaml",
        field="currency",
        value="JPY",
        source_id="in_7",
        **context,
    )


def _billing_problem() -> ExceptionRow:
    return ExceptionRow(
        "stripe",
        "opportunity",
        "006A",
        "UNMAPPED_SALESFORCE_PRODUCT",
        "Opportunity 006A: product 01tX (Pro) has no Stripe price",
        "add `01tX: {USD: price_...}` under `salesforce: product_prices:` in field_mapping.yaml",
        field="product",
        value="01tX",
    )


@pytest.fixture
def ledger(database_url, monkeypatch) -> Ledger:
    monkeypatch.setenv("SYNC_DATABASE_URL", database_url)
    return Ledger(database_url)


def _run(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_a_ledger_from_before_the_worklist_gains_its_columns_and_keeps_its_rows(database_url):
    # The table as the release before the worklist created it: without the Stripe customer and amount.
    Ledger(database_url).record_exceptions([_billing_problem()])
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        for name in ADDED_EXCEPTION_COLUMNS:
            conn.execute(sa.text(f"ALTER TABLE {sync_exceptions.name} DROP COLUMN {name}"))
    engine.dispose()

    ledger = Ledger(database_url)  # opened by this one
    ledger.record_exceptions([_invoice_problem(stripe_customer="cus_1", currency="JPY", amount_minor=2255110)])

    rows = {r["external_id"]: r for r in ledger.exceptions()}
    assert (rows["006A"]["currency"], rows["006A"]["amount_minor"]) == (None, None)
    assert (rows["stripe-in_7"]["stripe_customer"], rows["stripe-in_7"]["amount_minor"]) == ("cus_1", 2255110)
    Ledger(database_url)  # opening it again changes nothing


def test_a_later_booking_without_the_amount_keeps_the_one_known(ledger):
    ledger.record_exceptions(
        [_invoice_problem(stripe_customer="cus_1", currency="JPY", amount_minor=2255110)], "2026-11-02"
    )
    ledger.record_exceptions([_invoice_problem()], "2026-11-02")

    [row] = ledger.exceptions()
    assert (row["stripe_customer"], row["currency"], row["amount_minor"], row["occurrences"]) == (
        "cus_1",
        "JPY",
        2255110,
        2,
    )


def test_exceptions_lists_every_day_and_none_with_exact_amounts_and_open_exits_1(ledger, capsys):
    ledger.record_exceptions(
        [_invoice_problem(stripe_customer="cus_1", currency="JPY", amount_minor=2255110)], "2026-11-02"
    )
    ledger.record_exceptions([_billing_problem()])

    code, out = _run(capsys, "exceptions", "--open", "--format", "json")
    assert code == 1
    rows = {r["external_id"]: r for r in json.loads(out)}
    assert rows["stripe-in_7"]["amount"] == "JPY 2255110"  # not 2.25511e+06
    assert (rows["stripe-in_7"]["day"], rows["stripe-in_7"]["value"]) == ("2026-11-02", "JPY")
    assert rows["006A"]["day"] == "" and rows["006A"]["amount"] == ""
    assert rows["006A"]["fix"].startswith("add `01tX: {USD: price_...}`")

    code, out = _run(capsys, "exceptions", "--open", "--code", "unmapped_currency", "--format", "csv")
    assert code == 1
    [row] = list(csv.DictReader(io.StringIO(out)))
    assert (row["external_id"], row["amount"], row["occurrences"]) == ("stripe-in_7", "JPY 2255110", "1")

    code, out = _run(capsys, "exceptions", "--open")
    assert code == 1
    assert "2 open exception(s), oldest first" in out and "JPY 2255110" in out
    assert "#2 add `01tX: {USD: price_...}`" in out


def test_resolved_exceptions_are_listed_without_open_and_open_exits_0(ledger, capsys):
    ledger.record_exceptions([_invoice_problem()], "2026-11-02")
    ledger.resolve_exceptions("netsuite", "invoice", ["stripe-in_7"])

    assert _run(capsys, "exceptions", "--open") == (0, "No open exceptions.\n")
    code, out = _run(capsys, "exceptions", "--format", "json")
    [row] = json.loads(out)
    assert code == 0 and row["external_id"] == "stripe-in_7" and row["resolved_at"]


def test_retry_with_nothing_open_launches_nothing(ledger, capsys):
    ledger.record_exceptions([_billing_problem()])

    code, out = _run(capsys, "exceptions", "retry", "--code", "UNMAPPED_CURRENCY")

    assert (code, out) == (0, "No open exceptions of code UNMAPPED_CURRENCY: nothing to retry.\n")


# -- several Stripe accounts -------------------------------------------------------------------------------------


def _of_account(external_id: str, source_id: str) -> ExceptionRow:
    return dataclasses.replace(_invoice_problem(), external_id=external_id, source_id=source_id)


@pytest.fixture
def two_accounts(ledger, monkeypatch) -> Ledger:
    monkeypatch.setenv("SYNC_STRIPE_ACCOUNTS", "us,eu")
    ledger.record_exceptions([_of_account("stripe-in_7", "in_7")], "2026-11-02")
    ledger.record_exceptions([_of_account("stripe-eu-in_7", "in_7")], "2026-11-03")
    ledger.record_exceptions([_of_account("stripe-eu-in_8", "in_8")], "2026-11-04")
    ledger.record_exceptions([_billing_problem()])
    return ledger


def test_exceptions_of_several_accounts_are_listed_together_with_their_account_or_one_accounts_alone(
    two_accounts, capsys
):
    code, out = _run(capsys, "exceptions", "--format", "json")
    assert code == 0
    listed = {(r["account"], r["external_id"]) for r in json.loads(out)}
    assert listed == {("us", "stripe-in_7"), ("eu", "stripe-eu-in_7"), ("eu", "stripe-eu-in_8"), ("us", "006A")}

    code, out = _run(capsys, "exceptions", "--account", "eu", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [(r["account"], r["external_id"]) for r in rows] == [("eu", "stripe-eu-in_7"), ("eu", "stripe-eu-in_8")]

    code, out = _run(capsys, "exceptions", "--account", "us")
    header, _, *table = out.splitlines()[2:]
    assert header.split("|")[1:3] == [" #   ", " account   "]
    assert [line.split("|")[2].strip() for line in table if line.startswith("|")] == ["us", "us"]
    assert "stripe-in_7" in out and "stripe-eu-in_7" not in out


def test_an_unknown_account_is_refused_naming_the_configured_ones(two_accounts, capsys, monkeypatch):
    assert main(["exceptions", "--account", "fr"]) == 2
    assert "--account fr: no Stripe account of that name; SYNC_STRIPE_ACCOUNTS lists us, eu" in capsys.readouterr().err
    monkeypatch.delenv("SYNC_STRIPE_ACCOUNTS")
    assert main(["exceptions", "retry", "--account", "eu"]) == 2
    assert "this deployment has one Stripe account (SYNC_STRIPE_ACCOUNTS is not set)" in capsys.readouterr().err


def test_retry_runs_each_accounts_days_through_its_own_job(two_accounts, capsys, monkeypatch, tmp_path):
    from sync_pipeline import exceptions_cli

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    launched = []
    monkeypatch.setattr(exceptions_cli, "_execute", lambda job, day: (launched.append((job, day)) or "r", True))

    assert _run(capsys, "exceptions", "retry", "--in-process")[0] == 1  # nothing was fixed: all stay open
    assert launched == [
        ("stripe_to_netsuite", "2026-11-02"),
        ("stripe_eu_to_netsuite", "2026-11-03"),
        ("stripe_eu_to_netsuite", "2026-11-04"),
    ]

    launched.clear()
    code, out = _run(capsys, "exceptions", "retry", "--in-process", "--account", "eu")
    assert launched == [("stripe_eu_to_netsuite", "2026-11-03"), ("stripe_eu_to_netsuite", "2026-11-04")]
    assert "Retrying 2 open exception(s): 2 run(s)." in out
