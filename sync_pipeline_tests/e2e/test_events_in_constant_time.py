"""Events in constant time: a sensor run syncs only the documents its events name, with a real Dagster daemon.

A day already holds many synced invoices (seeded straight into the Stripe stand-in, then one whole-day run); a newly
paid invoice's events lead to a run that extracts and writes only that invoice, whose checks pass, and the next
whole-day run (the schedule's) finds nothing left to write.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from sync_pipeline.event_scope import SCOPE_TAG
from sync_pipeline.sandbox.stripe.seeding import seed_paid_invoices
from sync_pipeline_tests.e2e.harness import DAY, amount, at
from sync_pipeline_tests.e2e.test_near_real_time import _payment_applied_to, _synced_with_payment, running_loop

pytestmark = pytest.mark.e2e

SEEDED = 150


def _materializations(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    out = {}
    for record in records:
        materialization = record.event_log_entry.dagster_event.event_specific_data.materialization
        out[materialization.asset_key.to_user_string()] = {k: v.value for k, v in materialization.metadata.items()}
    return out


def _check_results(instance: dg.DagsterInstance, run_id: str) -> dict[str, bool]:
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    return {
        f"{e.asset_key.to_user_string()}:{e.check_name}": e.passed
        for e in (r.event_log_entry.dagster_event.event_specific_data for r in records)
    }


def _rows(home: Path, asset: str, day: str) -> int:
    return len(pd.read_parquet(home / "snapshots" / asset / f"{day}.parquet"))


def test_a_paid_invoice_in_a_busy_day_syncs_only_itself(tmp_path):
    day = DAY.isoformat()
    with running_loop(tmp_path) as loop:
        seed_paid_invoices(
            loop.stripe_state, loop.stripe_config, SEEDED, customers=10, start=at(DAY, 1), spacing_seconds=60
        )
        loop.full_day_run(day)
        home = Path(loop.env["DAGSTER_HOME"])
        assert _rows(home, "stripe_invoices", day) == SEEDED
        assert len(loop.sandbox.netsuite("invoice")) == SEEDED
        writes_before, routes_before = loop.sandbox.netsuite_writes(), loop.stripe_routes()
        runs_before = {r.run_id for r in loop.sensor_runs()}

        # Paid late in the same day (the stand-in's clock), by a customer new to NetSuite.
        loop.sandbox.clock(at(DAY, 20))
        invoice = loop.sandbox.invoice(loop.sandbox.customer("Late Payer", "usd"), "usd", [31400])
        loop.sandbox.clock(None)
        loop.wait_for("the paid invoice in NetSuite", lambda: _synced_with_payment(loop.sandbox, invoice.id))
        loop.wait_until_idle()

        new_runs = [r for r in loop.sensor_runs() if r.run_id not in runs_before]
        assert new_runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in new_runs)
        assert {r.tags["dagster/partition"] for r in new_runs} == {day}
        assert {r.tags[SCOPE_TAG] for r in new_runs} == {f"1 document(s): {invoice.id}"}
        for run in new_runs:
            scoped = run.run_config["ops"]["stripe_invoices"]["config"]["only_ids"]
            assert scoped == [invoice.id]
            extracted = _materializations(loop.instance, run.run_id)
            assert extracted["stripe_invoices"]["scope"] == "partial"
            assert extracted["stripe_invoices"]["documents"] == 1
            assert extracted["stripe_charges"]["documents"] == 0
            assert extracted["netsuite_sync_plan"]["partial_run"]
            results = _check_results(loop.instance, run.run_id)
            assert results and all(results.values()), {k: v for k, v in results.items() if not v}
        # Only the invoice, its payment and its new customer were written; no list of the day's charges was asked.
        assert loop.sandbox.netsuite_writes() - writes_before == 3
        routes = loop.stripe_routes()
        assert routes.get("GET /v1/charges", 0) == routes_before.get("GET /v1/charges", 0)
        assert routes.get("GET /v1/invoices/{id}", 0) > routes_before.get("GET /v1/invoices/{id}", 0)
        # The payment landed once, for the invoice's amount.
        invoice_record = loop.sandbox.netsuite("invoice")[f"stripe-{invoice.id}"]
        payments = [
            p
            for p in loop.sandbox.netsuite("customerPayment").values()
            if any(a["doc"]["id"] == invoice_record["id"] for a in p["apply"]["items"])
        ]
        assert len(payments) == 1 and amount(payments[0], "payment") == amount(invoice_record)
        assert _payment_applied_to(loop.sandbox, invoice_record["id"])
        # The day's snapshot is still the last whole day's, not the partial run's one invoice.
        assert _rows(home, "stripe_invoices", day) == SEEDED

        # The schedule's whole-day run reads the whole day again and has nothing left to write.
        loop.full_day_run(day)

        assert loop.sandbox.netsuite_writes() == writes_before + 3
        assert routes_before.get("GET /v1/charges", 0) < loop.stripe_routes().get("GET /v1/charges", 0)
        assert _rows(home, "stripe_invoices", day) == SEEDED + 1
        full = loop.instance.get_runs(dg.RunsFilter(tags={"sync_pipeline/trigger": "schedule"}), limit=1)[0]
        extracted = _materializations(loop.instance, full.run_id)
        assert extracted["stripe_invoices"]["scope"] == "day"
        assert extracted["stripe_invoices"]["documents"] == SEEDED + 1
        results = _check_results(loop.instance, full.run_id)
        assert results and all(results.values()), json.dumps({k: v for k, v in results.items() if not v})
