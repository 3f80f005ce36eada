"""Undeposited Funds from Stripe's side: what a day's documents put in, what its payouts carried out, the balance
added up from the days since the start, and when it cannot be compared (mapping/undeposited.py and the
reconciliation's use of stored days)."""

from __future__ import annotations

import datetime as dt
import os
import time
from decimal import Decimal

import pandas as pd

from sync_pipeline.assets import reconciliation as books
from sync_pipeline.io_managers import PARTIAL_MARK, PARTIAL_SNAPSHOTS, ParquetIOManager, StoredDays
from sync_pipeline.mapping import undeposited
from sync_pipeline_tests.unit.test_mapping_cash import fm, payout, txn


def at(day: str, hour: int = 9) -> int:
    return int(dt.datetime.fromisoformat(f"{day}T{hour:02d}:00:00+00:00").timestamp())


def charge(charge_id, amount, day, currency="usd", status="succeeded", **extra):
    return {"id": charge_id, "amount": amount, "amount_captured": amount, "currency": currency, "status": status,
            "captured": True, "created": at(day), **extra}  # fmt: skip


def won_dispute(dispute_id, amount, withdrawn_day, reinstated_day, currency="usd"):
    movements = [
        {"reporting_category": "dispute", "amount": -amount, "created": at(withdrawn_day)},
        {"reporting_category": "dispute_reversal", "amount": amount, "created": at(reinstated_day)},
    ]
    return {
        "id": dispute_id,
        "amount": amount,
        "currency": currency,
        "status": "won",
        "balance_transactions": movements,
    }


def arriving(day, txns, **kw):
    return payout(sum(t["net"] for t in txns), arrival_date=at(day, 0), **kw), txns


START = "2026-11-01"


def movement(day, direction, documents, amount, currency="USD"):
    return {"currency": currency, "date": day, "direction": direction, "documents": documents, "amount": amount}


def test_a_days_charges_and_reinstatements_enter_on_their_own_dates_and_its_payouts_carry_them_out():
    invoice_tree = {
        "invoice": {"id": "in_1"},
        "charges": [charge("ch_1", 10000, "2026-11-02"), charge("ch_failed", 999, "2026-11-02", status="failed")],
        # The invoice of day 2 paid again on day 4 (a second charge), its dispute won on day 5.
        "disputes": [won_dispute("dp_1", 2500, "2026-11-03", "2026-11-05")],
    }
    invoice_tree["charges"].append(charge("ch_later", 700, "2026-11-04"))
    sale = {"charge": charge("ch_eur", 5000, "2026-11-02", currency="eur"), "refunds": [], "disputes": []}
    carried = [
        txn("txn_1", "charge", 10000, 320, source="ch_1", created=at("2026-11-02")),
        txn("txn_2", "refund", -3000, source="re_1", created=at("2026-11-02")),  # from accounts.refunds, not UF
        txn("txn_3", "adjustment", 2500, source="dp_1", category="dispute_reversal", created=at("2026-11-05")),
        txn("txn_po", "payout", -9180, source="po_1"),
    ]
    rows = undeposited.day_movements([invoice_tree], [sale], [arriving("2026-11-06", carried)], fm(), START)
    assert rows == [
        {"currency": "EUR", "date": "2026-11-02", "direction": "in", "documents": "1", "amount": "50.00"},
        {"currency": "USD", "date": "2026-11-02", "direction": "in", "documents": "1", "amount": "100.00"},
        {"currency": "USD", "date": "2026-11-04", "direction": "in", "documents": "1", "amount": "7.00"},
        {"currency": "USD", "date": "2026-11-05", "direction": "in", "documents": "1", "amount": "25.00"},
        {"currency": "USD", "date": "2026-11-06", "direction": "out", "documents": "2", "amount": "125.00"},
    ]
    # Cumulative: each day sees what is dated on or before it, whichever partition it came from.
    assert undeposited.balance(rows, "2026-11-01") == {}
    assert undeposited.balance(rows, "2026-11-03") == {"EUR": (Decimal("50.00"), 1), "USD": (Decimal("100.00"), 1)}
    assert undeposited.balance(rows, "2026-11-05")["USD"] == (Decimal("132.00"), 3)
    assert undeposited.balance(rows, "2026-11-06")["USD"] == (Decimal("7.00"), 5)


def test_a_three_decimal_currency_is_rounded_per_document_as_netsuite_books_each_payment():
    charges = [charge(f"ch_{n}", 12345, "2026-11-02", currency="kwd") for n in range(2)]
    carried = [txn(f"txn_{n}", "charge", 12345, source=f"ch_{n}", currency="kwd") for n in range(2)]
    rows = undeposited.day_movements(
        [{"charges": charges}], [], [arriving("2026-11-03", carried, currency="kwd")], fm(), START
    )
    # 12.345 -> 12.34 twice (half-even), not 24.690 -> 24.69 once: what NetSuite's two payments and lines hold.
    assert [(r["direction"], r["amount"]) for r in rows] == [("in", "24.68"), ("out", "24.68")]


def test_a_converted_charge_enters_in_its_currency_and_leaves_in_the_payouts_at_netsuites_conversion():
    converted = txn("txn_1", "charge", 10851, 345, source="ch_eur")  # 100.00 EUR at 1.0850: Stripe 108.51 USD
    converted["exchange_rate"] = 1.085
    converted["presented"] = {"amount": 10000, "currency": "EUR"}
    rows = undeposited.day_movements(
        [], [{"charge": charge("ch_eur", 10000, "2026-11-02", currency="eur")}], [arriving("2026-11-03", [converted])],
        fm(), START,
    )  # fmt: skip
    # NetSuite takes the EUR payment into the USD deposit at 100.00 x 1.085 = 108.50 (its rounding cent is a line
    # on accounts.rounding, not Undeposited Funds).
    assert [(r["currency"], r["direction"], r["amount"]) for r in rows] == [
        ("EUR", "in", "100.00"),
        ("USD", "out", "108.50"),
    ]


def test_pending_payouts_transactions_before_the_start_and_unmapped_currencies_move_nothing():
    early = txn("txn_old", "charge", 4000, source="ch_old", created=at("2026-10-31"))
    later = txn("txn_new", "charge", 1000, source="ch_new", created=at("2026-11-01"))
    pending = arriving("2026-11-03", [later], status="in_transit", payout_id="po_2")
    unmapped = {"charge": charge("ch_gbp", 500, "2026-11-02", currency="gbp")}
    rows = undeposited.day_movements([], [unmapped], [arriving("2026-11-03", [early, later]), pending], fm(), START)
    assert rows == [{"currency": "USD", "date": "2026-11-03", "direction": "out", "documents": "1", "amount": "10.00"}]


def test_the_uf_row_names_the_currency_and_both_figures_at_netsuites_precision():
    stripe = {"USD": (Decimal("132.00"), 3), "JPY": (Decimal("500"), 1)}
    summary, differences = books.compare_undeposited(stripe, {"USD": Decimal("107"), "JPY": Decimal("500")}, fm(), "D")
    assert summary == [
        {"currency": "JPY", "stripe": "500", "netsuite": "500", "difference": "0", "category": "undeposited_funds",
         "documents": "1"},
        {"currency": "USD", "stripe": "132.00", "netsuite": "107.00", "difference": "25.00",
         "category": "undeposited_funds", "documents": "3"},
    ]  # fmt: skip
    assert differences == [
        {"currency": "USD", "stripe": "132.00", "netsuite": "107.00", "difference": "25.00",
         "category": "undeposited_funds", "document": "Undeposited Funds (USD) at end of D"},
    ]  # fmt: skip
    # A currency only NetSuite holds is a difference too (money in Undeposited Funds Stripe never collected).
    _, differences = books.compare_undeposited({}, {"EUR": Decimal("9.5")}, fm(), "D")
    assert [(d["currency"], d["stripe"], d["netsuite"]) for d in differences] == [("EUR", "0.00", "9.50")]


def test_earlier_days_come_from_their_stored_files_and_a_missing_or_superseded_day_is_not_compared(tmp_path):
    io = ParquetIOManager(base_dir=str(tmp_path))
    folder = tmp_path / books.MOVEMENTS
    folder.mkdir()
    stored_rows = {
        "2026-11-01": [movement("2026-11-01", "in", "2", "30.00")],
        "2026-11-02": [movement("2026-11-04", "in", "1", "5.00")],
    }
    for day, rows in stored_rows.items():
        pd.DataFrame(rows, columns=undeposited.MOVEMENT_COLUMNS).to_parquet(folder / f"{day}.parquet")
    own = [movement("2026-11-03", "out", "1", "10.00")]
    key = books.dg.AssetKey(books.MOVEMENTS)
    stored = io.stored_days(key, ["2026-11-01", "2026-11-02"])
    moved, why_not = books.movements_through(own, stored)
    assert why_not is None  # the day-2 payment dated 11-04 waits:
    assert undeposited.balance(moved, "2026-11-03") == {"USD": (Decimal("20.00"), 3)}

    stored = io.stored_days(key, ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"])
    assert stored.missing == ["2026-10-30", "2026-10-31"]
    # A partial run synced day 2 after its whole-day file: that file lacks what the run wrote to NetSuite.
    mark = folder / PARTIAL_SNAPSHOTS / f"2026-11-02{PARTIAL_MARK}"
    mark.parent.mkdir()
    mark.touch()
    later = time.time() + 5
    os.utime(mark, (later, later))
    stored = io.stored_days(key, ["2026-10-30", "2026-10-31", "2026-11-01", "2026-11-02"])
    assert stored.superseded == ["2026-11-02"]
    moved, why_not = books.movements_through(own, stored, "eu")
    assert moved is None
    assert why_not == (
        "Undeposited Funds not compared (it is cumulative from SYNC_START_DATE): stripe_undeposited_movements was "
        "never materialized for 2026-10-30..2026-10-31; a partial (event) run synced 2026-11-02 after its last "
        "whole-day run. Run those days whole (sync-pipeline backfill --from 2026-10-30 --to 2026-11-02 --account eu, "
        "or a backfill in the UI), then this day again."
    )
    # The day's own whole-day run afterwards makes it current again.
    pd.DataFrame(stored_rows["2026-11-02"], columns=undeposited.MOVEMENT_COLUMNS).to_parquet(
        folder / "2026-11-02.parquet"
    )
    os.utime(folder / "2026-11-02.parquet", (later + 5, later + 5))
    assert io.stored_days(key, ["2026-11-02"]) == StoredDays({"2026-11-02": folder / "2026-11-02.parquet"}, [], [])


def test_movements_whose_records_were_held_back_are_marked_and_account_for_a_difference_exactly():
    charges = [charge("ch_ok", 10000, "2026-11-02"), charge("ch_held", 2500, "2026-11-02")]
    carried = [txn("txn_1", "charge", 10000, source="ch_ok"), txn("txn_2", "charge", 2500, source="ch_held")]
    rows = undeposited.day_movements(
        [{"charges": charges}], [], [arriving("2026-11-03", carried)], fm(), START,
        in_netsuite={"stripe-ch_ok"}, deposited=set(),  # ch_held's payment quarantined, so the deposit waits
    )  # fmt: skip
    assert [(r["date"], r["direction"], r["amount"]) for r in rows] == [
        ("2026-11-02", "held_in", "25.00"),
        ("2026-11-02", "in", "125.00"),
        ("2026-11-03", "held_out", "125.00"),
        ("2026-11-03", "out", "125.00"),
    ]
    assert undeposited.balance(rows, "2026-11-02", undeposited.HELD) == {"USD": (Decimal("25.00"), 1)}
    assert undeposited.balance(rows, "2026-11-03") == {"USD": (Decimal("0.00"), 4)}
    # NetSuite holds ch_ok's 100.00 (its deposit waits): Stripe 0.00, a difference of -100.00, all of it held back.
    held = {"USD": undeposited.balance(rows, "2026-11-03", undeposited.HELD)["USD"][0]}
    stripe = undeposited.balance(rows, "2026-11-03")
    _, differences = books.compare_undeposited(stripe, {"USD": Decimal("100")}, fm(), "D", held)
    assert differences == []
    # Anything beyond it is a difference, and its row says how much was held back.
    _, differences = books.compare_undeposited(stripe, {"USD": Decimal("90")}, fm(), "D", held)
    assert [d["document"] for d in differences] == [
        "Undeposited Funds (USD) at end of D (-100.00 of it held back: open exceptions)"
    ]
