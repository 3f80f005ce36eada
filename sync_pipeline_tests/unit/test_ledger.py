"""The ledger, exceptions table, webhook inbox and cursors, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import sqlalchemy as sa

from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.resources.ledger import ExceptionRow, InboxConflict, Ledger, LedgerEntry, webhook_inbox


def _entry(ext: str, internal: str, body: dict) -> LedgerEntry:
    return LedgerEntry(
        "netsuite",
        "invoice",
        ext,
        internal,
        content_hash(body),
        source_id=ext.removeprefix("stripe-"),
        partition_key="2026-11-02",
        run_id="run-1",
    )


def test_unchanged_record_is_recognised_and_changed_one_is_not(database_url):
    ledger = Ledger(database_url)
    body = {"externalId": "stripe-in_1", "item": {"items": [{"amount": Decimal("100.00")}]}}
    ledger.record_synced([_entry("stripe-in_1", "501", body)])

    stored = ledger.lookup("netsuite", "invoice", ["stripe-in_1", "stripe-in_missing"])
    assert set(stored) == {"stripe-in_1"}
    assert stored["stripe-in_1"].internal_id == "501"
    # Same content, spelled differently (key order, trailing zero): still unchanged.
    same = {"item": {"items": [{"amount": Decimal("100.0")}]}, "externalId": "stripe-in_1"}
    assert stored["stripe-in_1"].content_hash == content_hash(same)
    changed = {"externalId": "stripe-in_1", "item": {"items": [{"amount": Decimal("100.01")}]}}
    assert stored["stripe-in_1"].content_hash != content_hash(changed)


def test_record_synced_twice_keeps_one_row_with_the_latest_hash(database_url):
    ledger = Ledger(database_url)
    ledger.record_synced([_entry("stripe-in_2", "502", {"v": 1})])
    ledger.record_synced([_entry("stripe-in_2", "502", {"v": 2})])
    rows = [e for e in ledger.entries("netsuite") if e.external_id == "stripe-in_2"]
    assert len(rows) == 1
    assert rows[0].content_hash == content_hash({"v": 2})


def test_lookup_handles_more_ids_than_sqlite_binds(database_url):
    ledger = Ledger(database_url)
    ledger.record_synced([_entry(f"stripe-in_{i}", str(i), {"i": i}) for i in range(2500)])
    found = ledger.lookup("netsuite", "invoice", [f"stripe-in_{i}" for i in range(2600)])
    assert len(found) == 2500


def test_synced_external_ids_answers_which_ids_are_held_under_any_of_the_types(database_url):
    ledger = Ledger(database_url)
    ledger.record_synced([_entry(f"stripe-in_{i}", str(i), {"i": i}) for i in range(1000)])
    memo = _entry("stripe-in_credit", "9001", {"credit": True})
    ledger.record_synced([LedgerEntry("netsuite", "creditMemo", memo.external_id, "9001", memo.content_hash)])
    asked = [f"stripe-in_{i}" for i in range(990, 1010)] + ["stripe-in_credit"]

    held = ledger.synced_external_ids("netsuite", ("invoice", "creditMemo"), asked)

    assert held == {f"stripe-in_{i}" for i in range(990, 1000)} | {"stripe-in_credit"}
    assert ledger.synced_external_ids("netsuite", ("invoice",), asked) == {f"stripe-in_{i}" for i in range(990, 1000)}
    assert ledger.synced_external_ids("salesforce", ("invoice", "creditMemo"), asked) == set()


def test_float_money_is_refused_by_the_hash():
    with pytest.raises(TypeError, match="Decimal"):
        content_hash({"amount": 1.5})


def test_exception_recorded_once_counted_and_resolved_when_the_record_syncs(database_url):
    ledger = Ledger(database_url)
    problem = ExceptionRow(
        "netsuite",
        "invoice",
        "stripe-in_9",
        "MISSING_REQUIRED_FIELD",
        "Invoice stripe-in_9 has no department",
        "add a default `department` for invoices of subsidiary 2 in field_mapping.yaml",
        field="department",
        source_id="in_9",
    )
    ledger.record_exceptions([problem], partition_key="2026-11-02", run_id="r1")
    ledger.record_exceptions([problem], partition_key="2026-11-02", run_id="r2")
    open_rows = ledger.open_exceptions("2026-11-02")
    assert len(open_rows) == 1
    assert open_rows[0]["occurrences"] == 2
    assert "field_mapping.yaml" in open_rows[0]["fix"]

    ledger.record_synced([_entry("stripe-in_9", "909", {"ok": True})])
    assert ledger.open_exceptions("2026-11-02") == []


def test_inbox_stores_each_event_once_even_under_concurrent_delivery(database_url):
    ledger = Ledger(database_url)
    event = {
        "id": "evt_1",
        "type": "invoice.paid",
        "created": 1_790_000_000,
        "data": {"object": {"id": "in_1", "object": "invoice"}},
    }
    with ThreadPoolExecutor(4) as pool:
        inserted = list(pool.map(lambda _: ledger.add_event(event), range(8)))
    assert inserted.count(True) == 1
    status = ledger.inbox_status()
    assert status.depth == 1
    assert status.oldest_unprocessed["event_id"] == "evt_1"

    ledger.mark_processed(["evt_1"], run_key="2026-09-21:evt_1")
    status = ledger.inbox_status()
    assert status.depth == 0
    assert status.last_processed["event_id"] == "evt_1"
    assert ledger.unprocessed_events() == []


def _inbox_event(event_id: str, created: int = 1_790_000_000) -> dict:
    return {"id": event_id, "type": "invoice.paid", "created": created, "data": {"object": {"id": "in_1"}}}


def test_each_stripe_accounts_inbox_view_holds_and_drains_only_its_own_events(database_url):
    ledger = Ledger(database_url)
    us, eu = ledger.for_account(None), ledger.for_account("eu")
    assert us.add_event(_inbox_event("evt_us", 1)) and eu.add_event(_inbox_event("evt_eu", 2))
    assert not eu.add_event(_inbox_event("evt_eu", 2)), "a redelivery to its own endpoint is a duplicate"

    assert [e["event_id"] for e in us.unprocessed_events()] == ["evt_us"]
    assert [(e["event_id"], e["account"]) for e in eu.unprocessed_events()] == [("evt_eu", "eu")]
    assert {e["event_id"] for e in ledger.unprocessed_events()} == {"evt_us", "evt_eu"}
    # One account acknowledging another's event id changes nothing.
    us.mark_processed(["evt_eu"])
    assert (us.inbox_status().depth, eu.inbox_status().depth) == (1, 1)
    eu.mark_processed(["evt_eu"], run_key="2026-09-21:evt_eu")
    assert (us.inbox_status().depth, eu.inbox_status().depth) == (1, 0)
    assert eu.inbox_status().last_processed["event_id"] == "evt_eu"
    assert us.inbox_status().last_processed is None

    # The same event id from the other account's endpoint is not taken for a duplicate of this one's.
    with pytest.raises(InboxConflict, match="evt_eu is already in the inbox for Stripe account eu, not"):
        us.add_event(_inbox_event("evt_eu", 2))


def test_an_inbox_from_before_several_accounts_gains_the_account_column_its_events_the_default_accounts(
    database_url,
):
    Ledger(database_url).add_event(_inbox_event("evt_old"))
    engine = sa.create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"ALTER TABLE {webhook_inbox.name} DROP COLUMN account"))
    engine.dispose()

    ledger = Ledger(database_url)  # opened by this release
    ledger.for_account("eu").add_event(_inbox_event("evt_new"))

    assert [e["event_id"] for e in ledger.for_account(None).unprocessed_events()] == ["evt_old"]
    assert [e["event_id"] for e in ledger.for_account("eu").unprocessed_events()] == ["evt_new"]
    Ledger(database_url)  # opening it again changes nothing


def test_cursor_survives_a_new_ledger_object(database_url):
    Ledger(database_url).set_cursor("salesforce_opportunities", "2026-11-01T00:00:00.000+0000")
    Ledger(database_url).set_cursor("salesforce_opportunities", "2026-11-02T00:00:00.000+0000")
    assert Ledger(database_url).get_cursor("salesforce_opportunities") == "2026-11-02T00:00:00.000+0000"
