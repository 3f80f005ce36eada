"""`sync-pipeline plan --partition D` against the Stripe and NetSuite stand-ins after a real Dagster sync.

A day is synced; then a customer is renamed in Stripe, a default department changed in field_mapping.yaml, a new
invoice and one in a currency the mapping lacks are created. The plan lists each record's fate (create, update
with its fields old → new, unchanged, held back with the fix) and writes nothing: not in NetSuite, not in the
ledger, not in the exceptions.
"""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest
import yaml

from sync_pipeline.plan_cli import add_partition_plan_arguments, run_partition_plan
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline_tests.e2e.harness import DAY, at, metadata, running_sandbox

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _plan(output_format: str = "table") -> str:
    parser = argparse.ArgumentParser()
    add_partition_plan_arguments(parser)
    args = parser.parse_args(["--partition", DAY.isoformat(), "--format", output_format])
    out = io.StringIO()
    assert run_partition_plan(args, out) == 0
    return out.getvalue()


def _netsuite_reads(sandbox) -> int:
    return int(sandbox.netsuite_stats()["by_method"].get("GET", {}).get("200", 0))


def _ledger_state(ledger: Ledger) -> tuple[list, list]:
    entries = sorted((e.record_type, e.external_id, e.content_hash, e.synced_at) for e in ledger.entries())
    exceptions = sorted((e["external_id"], e["error_code"], e["occurrences"]) for e in ledger.open_exceptions())
    return entries, exceptions


def test_the_plan_shows_creates_updates_with_their_fields_unchanged_and_held_back_and_writes_nothing(
    tmp_path, monkeypatch
):
    mapping_file = tmp_path / "field_mapping.yaml"
    mapping_file.write_text((ROOT / "field_mapping.yaml").read_text())
    with running_sandbox(tmp_path, monkeypatch, field_mapping=mapping_file) as sandbox:
        sandbox.clock(at(DAY, 9))
        acme = sandbox.customer("Acme", "usd")
        acme_invoice = sandbox.invoice(acme, "usd", [12345])
        globex = sandbox.customer("Globex", "eur")
        globex_invoice = sandbox.invoice(globex, "eur", [9900])
        sandbox.clock(None)
        synced = sandbox.materialize()
        assert synced.success
        assert metadata(synced, "netsuite_invoices")["created"] == 2

        # What a controller wants to approve: a renamed customer, a new default department, and the day's late
        # arrivals (a new invoice, and one in a currency field_mapping.yaml does not map).
        sandbox.client.v1.customers.update(acme, {"name": "Acme Holdings"})
        mapping = yaml.safe_load(mapping_file.read_text())
        mapping["defaults"]["invoice"]["department"] = "1"  # Subscriptions (3) -> Sales (1)
        mapping_file.write_text(yaml.safe_dump(mapping))
        sandbox.clock(at(DAY, 15))
        late = sandbox.invoice(globex, "eur", [2500])
        swiss = sandbox.invoice(sandbox.customer("Helvetia AG", "chf"), "chf", [4000])
        sandbox.clock(None)
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        ledger_before, writes_before = _ledger_state(ledger), sandbox.netsuite_writes()

        table = _plan()
        document = json.loads(_plan("json"))

        rows = {(r["record_type"], r["external_id"]): r for r in document["records"]}
        for invoice in (acme_invoice, globex_invoice):
            row = rows[("invoice", f"stripe-{invoice.id}")]
            assert row["action"] == "update"
            assert row["changes"] == ["department: 3 → 1"]
        renamed = rows[("customer", f"stripe-{acme}")]
        assert renamed["action"] == "update" and renamed["changes"] == ['companyName: Acme → "Acme Holdings"']
        assert rows[("customer", f"stripe-{globex}")]["action"] == "unchanged"
        paid = [r for r in document["records"] if r["record_type"] == "customerPayment"]
        # The two synced payments stay as they are, the late invoice's is new, the Swiss one waits for its invoice.
        assert sorted(r["action"] for r in paid) == ["create", "held back", "unchanged", "unchanged"]
        assert rows[("invoice", f"stripe-{late.id}")]["action"] == "create"
        held = rows[("invoice", f"stripe-{swiss.id}")]
        assert held["action"] == "held back"
        assert "add CHF under `currencies:` in field_mapping.yaml" in held["fix"]
        assert document["counts"]["update"] == 3 and document["counts"]["create"] >= 2

        assert "department: 3 → 1" in table and 'companyName: Acme → "Acme Holdings"' in table
        assert f"Fix: {held['fix']}" in table
        assert "Records: " in table and "3 update" in table
        assert sandbox.netsuite_writes() == writes_before, "the plan must not write to NetSuite"
        assert _ledger_state(ledger) == ledger_before, "the plan must not touch the ledger or the exceptions"

        # The run does what the plan said, and its plan asset shows the same verdicts (from the ledger alone).
        run = sandbox.materialize()
        plan_meta = metadata(run, "netsuite_sync_plan")
        assert {k: plan_meta[f"would_{k.replace(' ', '_')}"] for k in document["counts"]} == document["counts"]
        assert "sync-pipeline plan --partition" in plan_meta["preview"]
        assert f"stripe-{swiss.id}" in plan_meta["preview"] and "add CHF under" in plan_meta["preview"]
        invoices_meta, customers_meta = metadata(run, "netsuite_invoices"), metadata(run, "netsuite_customers")
        assert (invoices_meta["created"], invoices_meta["updated"]) == (1, 2)
        assert (customers_meta["updated"], customers_meta["unchanged"]) == (1, 1)
        assert sandbox.netsuite_writes() - writes_before == document["counts"]["create"] + document["counts"]["update"]


def test_a_day_with_nothing_to_send_is_all_unchanged_and_reads_nothing_from_netsuite(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as sandbox:
        sandbox.clock(at(DAY, 10))
        sandbox.invoice(sandbox.customer("Initech", "usd"), "usd", [5000])
        sandbox.clock(None)
        assert sandbox.materialize().success
        reads_before, writes_before = _netsuite_reads(sandbox), sandbox.netsuite_writes()

        document = json.loads(_plan("json"))

        assert {r["action"] for r in document["records"]} == {"unchanged"}
        assert document["counts"] == {"create": 0, "update": 0, "held back": 0, "unchanged": 3}
        assert _netsuite_reads(sandbox) == reads_before, "a no-op day costs no NetSuite read"
        assert sandbox.netsuite_writes() == writes_before
