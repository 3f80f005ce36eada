"""Every asset check seen failing: a check that could only ever pass would protect nothing.

Real Dagster materializations against the Stripe and NetSuite stand-ins over HTTP. The after-sync checks
fail because NetSuite was changed behind the pipeline's back (the stand-in's `/_sandbox/records/...`
edit and duplicate endpoints); the blocking `required_fields` check fails when an invalid record reaches
the write set, and then nothing may reach NetSuite.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sync_pipeline.assets import netsuite as netsuite_assets
from sync_pipeline.schemas.netsuite import ValidationOutcome
from sync_pipeline_tests.e2e.harness import DAY, amount, at, checks, metadata, running_sandbox, step_failures

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WRITERS = (
    "netsuite_customers",
    "netsuite_invoices",
    "netsuite_customer_payments",
    "netsuite_credit_memos",
    "netsuite_customer_refunds",
)


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as box:
        yield box


def _paid_invoice(sandbox, name: str, currency: str, minor: int) -> str:
    sandbox.clock(at(DAY, 9))
    invoice = sandbox.invoice(sandbox.customer(name, currency), currency, [minor])
    sandbox.clock(None)
    return invoice.id


def _all_after_sync_checks_pass(result: dg.ExecuteInProcessResult) -> bool:
    return all(e.passed for (asset, _), e in checks(result).items() if asset != "netsuite_sync_plan")


def test_an_invoice_total_changed_in_netsuite_fails_totals_match_stripe(sandbox):
    invoice_id = _paid_invoice(sandbox, "Edited Later", "usd", 12345)
    first = sandbox.materialize()
    assert first.success and _all_after_sync_checks_pass(first)  # the control: all green before the edit
    external_id = f"stripe-{invoice_id}"
    (line,) = sandbox.netsuite("invoice")[external_id]["item"]["items"]
    raised = {"item": {"id": line["item"]["id"]}, "quantity": 1, "amount": amount(line, "amount") + Decimal("10.00")}

    edited = sandbox.edit_in_netsuite("invoice", external_id, {"item": {"items": [raised]}})  # by hand, in NetSuite
    again = sandbox.materialize()

    assert amount(edited) == Decimal("133.45")
    assert metadata(again, "netsuite_invoices")["writes"] == 0, "the ledger says nothing changed in Stripe"
    totals = checks(again)[("netsuite_invoices", "totals_match_stripe")]
    assert not totals.passed
    assert totals.description == "USD off by -10.00"
    rows = [[cell.strip() for cell in row.split("|")] for row in totals.metadata["by_currency"].value.splitlines()]
    assert ["USD", "123.45", "133.45"] in [row[1:4] for row in rows]  # currency, Stripe, NetSuite
    # The Plots tab draws both sides per day (numbers for the chart; the exact amounts are the table's text).
    plotted = {k: v.value for k, v in totals.metadata.items() if k.endswith("_invoiced_usd")}
    assert plotted == {"stripe_invoiced_usd": 123.45, "netsuite_invoiced_usd": 133.45, "difference_invoiced_usd": -10.0}
    # Nothing was duplicated: only the check that compares amounts goes red.
    assert checks(again)[("netsuite_invoices", "no_duplicate_external_ids")].passed
    assert again.success, "an after-sync check reports; it does not fail the run"


def test_a_customer_duplicated_in_netsuite_fails_no_duplicate_external_ids(sandbox):
    invoice_id = _paid_invoice(sandbox, "Copied By Hand", "eur", 9900)
    first = sandbox.materialize()
    assert first.success and _all_after_sync_checks_pass(first)
    customer_eid = next(iter(sandbox.netsuite("customer")))

    sandbox.duplicate_in_netsuite("customer", customer_eid)
    again = sandbox.materialize()

    duplicates = checks(again)[("netsuite_customers", "no_duplicate_external_ids")]
    assert not duplicates.passed
    assert duplicates.metadata["duplicates"].value == [customer_eid]
    assert duplicates.description == "1 external id(s) twice in NetSuite, 0 missing (deleted by hand?)"
    assert checks(again)[("netsuite_invoices", "no_duplicate_external_ids")].passed
    assert checks(again)[("netsuite_invoices", "totals_match_stripe")].passed
    assert f"stripe-{invoice_id}" in sandbox.netsuite("invoice")


def _mapping_with_department_only_for_the_us(tmp_path: Path) -> Path:
    """The example mapping with EUR booked to its own subsidiary 2, and only subsidiary 1 (USD) gives invoices a
    department: EUR invoices lack one."""
    data = yaml.safe_load((ROOT / "field_mapping.yaml").read_text())
    data["currencies"]["EUR"]["subsidiary"] = "2"
    del data["defaults"]["invoice"]["department"]
    data["subsidiaries"]["1"]["defaults"]["invoice"] = {"department": "3"}
    path = tmp_path / "field_mapping.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


REAL_VALIDATE = netsuite_assets.validate_records


def _plan_that_lets_every_record_through(records, fm, *, hold_dependents=True):
    # The plan validates with hold_dependents=True; the check re-validates its write set with False.
    # No real input gets an invalid record past today's plan (both validate the same records with the
    # same mapping): this stands in for the planning bug the blocking check exists to catch.
    if hold_dependents:
        return ValidationOutcome(valid=list(records), issues=[])
    return REAL_VALIDATE(records, fm, hold_dependents=hold_dependents)


def test_an_invalid_record_in_the_write_set_fails_required_fields_and_nothing_reaches_netsuite(tmp_path, monkeypatch):
    with running_sandbox(
        tmp_path, monkeypatch, field_mapping=_mapping_with_department_only_for_the_us(tmp_path)
    ) as sandbox:
        good = _paid_invoice(sandbox, "Dollar Inc", "usd", 1000)
        bad = _paid_invoice(sandbox, "Euro GmbH", "eur", 2000)

        with pytest.MonkeyPatch.context() as bug:
            bug.setattr(netsuite_assets, "validate_records", _plan_that_lets_every_record_through)
            blocked = sandbox.materialize()

        required = checks(blocked)[("netsuite_sync_plan", "required_fields")]
        assert not required.passed and required.severity == dg.AssetCheckSeverity.ERROR
        assert required.metadata["invalid_in_write_set"].value == 1
        assert "department" in required.description
        assert not blocked.success
        assert "blocking asset check failed with ERROR severity" in step_failures(blocked)["netsuite_sync_plan"]
        started = {e.step_key for e in blocked.all_events if e.event_type == dg.DagsterEventType.STEP_START}
        assert started.isdisjoint(WRITERS), "Dagster started a writer after the blocking check failed"
        assert sandbox.netsuite_stats()["requests"] == 0, "not one request, not even a read, reached NetSuite"

        # The control: without the bug the same day syncs the valid half and holds the other back (a WARN).
        fixed = sandbox.materialize()

        assert fixed.success
        assert all(fixed.asset_materializations_for_node(writer) for writer in WRITERS)
        assert checks(fixed)[("netsuite_sync_plan", "required_fields")].severity == dg.AssetCheckSeverity.WARN
        assert f"stripe-{good}" in sandbox.netsuite("invoice")
        assert f"stripe-{bad}" not in sandbox.netsuite("invoice")
