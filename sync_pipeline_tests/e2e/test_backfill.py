"""A backfill: three days in one run, through `sync-pipeline backfill --in-process` and a real Dagster instance.

Every record lands in NetSuite exactly once, a re-run writes nothing, each day keeps its own materializations,
metadata and check results, and a day in the middle with a held-back record does not stop the others.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg
import pytest

from sync_pipeline import cli
from sync_pipeline_tests.e2e.harness import DAY, at, running_sandbox

pytestmark = pytest.mark.e2e

DAYS = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=1), DAY]
MIDDLE = DAYS[1].isoformat()


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as box:
        yield box


def _three_days(sandbox) -> dict[str, dict[str, str]]:
    """Each day: a paid USD invoice; the middle day also a GBP one (not mapped: held back), the last a refund."""
    made: dict[str, dict[str, str]] = {}
    for n, day in enumerate(DAYS):
        sandbox.clock(at(day, 10))
        invoice = sandbox.invoice(sandbox.customer(f"Backfill {n}", "usd"), "usd", [10000 + n])
        made[day.isoformat()] = {"invoice": invoice.id}
        if day.isoformat() == MIDDLE:
            made[MIDDLE]["held"] = sandbox.invoice(sandbox.customer("Pound Ltd", "gbp"), "gbp", [5000]).id
        if day == DAYS[-1]:
            refund = sandbox.client.v1.refunds.create({"charge": sandbox.charge_of(invoice.id), "amount": 2500})
            made[day.isoformat()]["refund"] = refund.id
    sandbox.clock(None)
    return made


def _backfill() -> int:
    return cli.main(["backfill", "--from", DAYS[0].isoformat(), "--to", DAYS[-1].isoformat(), "--in-process"])


def _events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list:
    return [e.dagster_event.event_specific_data for e in instance.all_logs(run_id, of_type=event_type)]


def test_a_three_day_backfill_is_one_run_with_each_days_records_once_and_checks_of_its_own(sandbox):
    made = _three_days(sandbox)

    assert _backfill() == 0

    instance = dg.DagsterInstance.get()
    runs = instance.get_runs()
    assert len(runs) == 1, "the three days are one run"
    run = runs[0]
    # Exactly once: each USD invoice, its payment and customer; the refund's credit memo and customer refund.
    invoices = sandbox.netsuite("invoice")
    assert set(invoices) == {f"stripe-{made[d.isoformat()]['invoice']}" for d in DAYS}
    assert len(sandbox.netsuite("customerPayment")) == 3
    refund = made[DAYS[-1].isoformat()]["refund"]
    assert set(sandbox.netsuite("customerRefund")) == {f"stripe-{refund}"}
    assert f"stripe-{refund}-cm" in sandbox.netsuite("creditMemo")
    assert f"stripe-{made[MIDDLE]['held']}" not in invoices

    # One materialization per day of every asset, with the day's own figures.
    materializations = _events(instance, run.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION)
    by_asset: dict[str, dict[str, dict]] = {}
    for event in materializations:
        m = event.materialization
        by_asset.setdefault(m.asset_key.to_user_string(), {})[m.partition] = {k: v.value for k, v in m.metadata.items()}
    days = {d.isoformat() for d in DAYS}
    for asset in ("stripe_invoices", "netsuite_sync_plan", "netsuite_invoices", "netsuite_deposits", "reconciliation"):
        assert set(by_asset[asset]) == days, asset
    for day in days:
        figures = by_asset["netsuite_invoices"][day]
        assert (figures["created"], figures["unchanged"], figures["in_netsuite"]) == (1, 0, 1), day
        assert figures["quarantined"] == (1 if day == MIDDLE else 0), day
        assert by_asset["stripe_invoices"][day]["documents"] == (2 if day == MIDDLE else 1), day
    assert by_asset["netsuite_credit_memos"][DAYS[-1].isoformat()]["created"] == 1
    assert by_asset["netsuite_credit_memos"][DAYS[0].isoformat()]["created"] == 0

    # Each check result belongs to its day: the held-back record warns on its own day only.
    evaluations = _events(instance, run.run_id, dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    per_day = [e for e in evaluations if e.partition is not None]
    assert {e.partition for e in per_day} == days
    for day in days:
        results = {(e.asset_key.to_user_string(), e.check_name): e for e in per_day if e.partition == day}
        assert len(results) == len([e for e in per_day if e.partition == day]), f"{day}: one result per check"
        assert ("reconciliation", "books_match_stripe") in results
        failed = {key for key, e in results.items() if not e.passed}
        if day == MIDDLE:
            assert ("netsuite_sync_plan", "required_fields") in failed
            assert results[("netsuite_sync_plan", "required_fields")].severity == dg.AssetCheckSeverity.WARN
        else:
            assert not failed, f"{day}: {failed}"
        for e in results.values():
            assert e.target_materialization_data is not None and e.target_materialization_data.run_id == run.run_id

    # A re-run of the range writes nothing.
    writes = sandbox.netsuite_writes()
    assert _backfill() == 0
    assert sandbox.netsuite_writes() == writes
    rerun = instance.get_runs(limit=1)[0]
    for event in _events(instance, rerun.run_id, dg.DagsterEventType.ASSET_MATERIALIZATION):
        m = event.materialization
        if m.asset_key.to_user_string() == "netsuite_invoices":
            figures = {k: v.value for k, v in m.metadata.items()}
            assert (figures["created"], figures["updated"], figures["unchanged"]) == (0, 0, 1), m.partition
