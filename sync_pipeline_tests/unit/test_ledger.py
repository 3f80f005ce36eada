"""The ledger, exceptions table, webhook inbox and cursors, on SQLite and PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.resources.ledger import ExceptionRow, Ledger, LedgerEntry


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


def test_cursor_survives_a_new_ledger_object(database_url):
    Ledger(database_url).set_cursor("salesforce_opportunities", "2026-11-01T00:00:00.000+0000")
    Ledger(database_url).set_cursor("salesforce_opportunities", "2026-11-02T00:00:00.000+0000")
    assert Ledger(database_url).get_cursor("salesforce_opportunities") == "2026-11-02T00:00:00.000+0000"
