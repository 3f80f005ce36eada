"""`sync-pipeline demo` and the sandbox behind `sync-pipeline dev` when no real system is configured.

The demo starts the three stand-ins (state kept in $DAGSTER_HOME/sandbox, so `make dev` afterwards sees
the same data), seeds a month of activity the first time, materializes every day with the real job on
the persistent Dagster instance, and prints per day what was created, updated, left unchanged and
quarantined, and whether the books reconcile.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from sync_pipeline import settings

SANDBOX_NETSUITE_LATENCY_MS = 20  # a realistic, if fast, NetSuite round trip
# A day reconciles when NetSuite, read back, agrees with Stripe: totals per currency, each external id once, and every
# invoice's total and amount remaining and the day's Undeposited Funds (receivables_match_stripe), and every payout
# arriving that day deposited, equal to it, fees and all (the cash checks).
CASH_CHECKS = ("deposit_matches_payout", "fees_match_stripe", "undeposited_funds_cleared")
RECONCILE_CHECKS = (
    "totals_match_stripe",
    "no_duplicate_external_ids",
    "receivables_match_stripe",
    "books_match_stripe",
    *CASH_CHECKS,
)
# The demo prints its own table; step-by-step logs are in the UI (make dev).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def sandbox_state_dir() -> Path:
    return settings.dagster_home().resolve() / "sandbox"


@contextlib.contextmanager
def sandbox_environment(days: int, invoices: int, seed: int, quiet: bool = False) -> Iterator[dict[str, str]]:
    """The stand-ins running in this process, seeded once, with os.environ pointing the pipeline at them."""
    from sync_pipeline.sandbox.runner import holds_data, start_sandbox
    from sync_pipeline.sandbox.scenario import ScenarioOptions

    state_dir = sandbox_state_dir()
    # The demo's NetSuite account makes an email mandatory on customers (a common form setting): the scenario's
    # customer without one is refused at write time, with the fix (set it in Stripe).
    netsuite = {"latency_ms": SANDBOX_NETSUITE_LATENCY_MS, "mandatory_fields": {"customer": ["email"]}}
    sandbox = start_sandbox(state_dir=state_dir, configs={"netsuite": netsuite})
    previous = {name: os.environ.get(name) for name in [*sandbox.env(), "SYNC_START_DATE"]}
    try:
        env = sandbox.env()
        os.environ.update(env)
        if not holds_data(env):
            started = time.perf_counter()
            # The month includes every receivables case (credit notes, customer balances, out-of-band payments...).
            # ...every cash case, and the problems a first sync meets (each lands in sync_exceptions with its fix).
            options = ScenarioOptions(
                days=days, invoices=invoices, seed=seed, receivables_cases=True, planted_problems=True
            )
            summary = sandbox.seed(options)
            sandbox.save()
            if not quiet:
                print(summary.to_text())
                print(f"(seeded in {time.perf_counter() - started:.0f} s; state kept in {state_dir})\n")
        elif not quiet:
            print(f"Sandbox state from {state_dir} (already seeded; delete that folder to start afresh)\n")
        seeded = _seeded_days(env["STRIPE_API_BASE"], env["STRIPE_API_KEY"])
        if seeded and not settings.is_set("SYNC_START_DATE"):
            # The partitions start on the seeded month's first day: the UI's partition bar shows that month, not a
            # year of empty days before it.
            os.environ["SYNC_START_DATE"] = seeded[0]
        yield env
    finally:
        sandbox.stop(save=True)
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _netsuite_writes(netsuite_base_url: str) -> int:
    """Writes the NetSuite stand-in has applied so far: the demo shows a second run sends none."""
    import requests

    return int(requests.get(f"{netsuite_base_url}/_sandbox/stats", timeout=60).json()["writes_applied"])


def _seeded_days(stripe_api_base: str, api_key: str) -> list[str]:
    """Every UTC day on which the Stripe stand-in holds an invoice or a charge, or a payout arrived."""
    import requests

    def records(kind: str) -> list[dict]:
        body = requests.get(f"{stripe_api_base}/_sandbox/records/{kind}", timeout=60).json()
        return body if isinstance(body, list) else (body.get("records") or body.get("data") or [])

    def day(timestamp: int) -> str:
        return dt.datetime.fromtimestamp(timestamp, dt.UTC).date().isoformat()

    days = {day(r["created"]) for kind in ("invoice", "charge") for r in records(kind)}
    # Payouts are synced on the day they arrive; one still in transit has nothing to deposit yet.
    days.update(day(p["arrival_date"]) for p in records("payout") if p.get("status") in ("paid", "failed", "canceled"))
    return sorted(days)


@dataclass
class DayReport:
    day: str
    success: bool
    counts: dict[str, int]
    reconciled: bool
    seconds: float
    payouts: int = 0  # payouts that arrived this day (deposit_matches_payout compared them)
    payouts_off: int = 0  # of those, deposits missing or not equal to the payout
    books: list[dict] = field(default_factory=list)  # the reconciliation asset's rows (currency, category, amounts)


def _day_report(day: str, result, seconds: float) -> DayReport:
    counts = {"created": 0, "updated": 0, "unchanged": 0, "quarantined": 0, "failed": 0}
    for node in (
        "netsuite_customers",
        "netsuite_invoices",
        "netsuite_customer_payments",
        "netsuite_credit_memos",
        "netsuite_customer_refunds",
        "netsuite_deposits",
    ):
        for materialization in result.asset_materializations_for_node(node):
            for key in counts:
                if key in materialization.metadata:
                    counts[key] += int(materialization.metadata[key].value)
    evaluations = [e for e in result.get_asset_check_evaluations() if e.check_name in RECONCILE_CHECKS]
    reconciled = bool(evaluations) and all(e.passed for e in evaluations)
    deposits = [e for e in evaluations if e.check_name == "deposit_matches_payout"]
    payouts = sum(int(e.metadata["payouts_compared"].value) for e in deposits)
    off = sum(int(e.metadata["payouts_off"].value) for e in deposits)
    books = result.output_for_node("reconciliation").to_dict("records") if result.success else []
    return DayReport(day, result.success, counts, reconciled, seconds, payouts, off, books)


def books_summary(reports: list[DayReport]) -> list[dict[str, str]]:
    """The month's books per currency and category from the days' reconciliation rows, as exact Decimal text; for
    Undeposited Funds, a balance, the last day's."""
    from sync_pipeline.assets.reconciliation import CATEGORIES, UNDEPOSITED

    sums: dict[tuple[str, str], list[Decimal]] = {}
    for report in reports:
        for row in report.books:
            entry = sums.setdefault((row["currency"], row["category"]), [Decimal(0), Decimal(0)])
            if row["category"] == UNDEPOSITED:
                entry[:] = [Decimal(0), Decimal(0)]
            entry[0] += Decimal(row["stripe"])
            entry[1] += Decimal(row["netsuite"])
    return [
        {"currency": code, "category": category, "stripe": str(a), "netsuite": str(b), "difference": str(a - b)}
        for (code, category), (a, b) in sorted(sums.items(), key=lambda kv: (kv[0][0], CATEGORIES.index(kv[0][1])))
    ]


def run_demo(days: int, invoices: int, seed: int) -> int:
    import dagster as dg

    from sync_pipeline.definitions import defs
    from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB, TRIGGER_TAG

    with sandbox_environment(days, invoices, seed) as env:
        first_day = _seeded_days(env["STRIPE_API_BASE"], env["STRIPE_API_KEY"])
        if not first_day:
            print("The sandbox holds no Stripe activity to sync.", file=sys.stderr)
            return 1
        os.environ.setdefault("SYNC_START_DATE", first_day[0])
        # A SYNC_START_DATE of your own wins: days before it are not partitions, so they are not synced.
        first_day = [day for day in first_day if day >= settings.start_date()]
        job = defs().resolve_job_def(STRIPE_TO_NETSUITE_JOB)  # loaded now that the environment points at the sandbox
        instance = dg.DagsterInstance.get()
        print(f"Syncing {len(first_day)} days into NetSuite (Dagster home {settings.dagster_home().resolve()})\n")
        print(f"{'day':10}  {'created':>7} {'updated':>7} {'unchanged':>9} {'quarantined':>11} {'failed':>6}  books")
        reports = []
        writes_before = _netsuite_writes(env["NETSUITE_BASE_URL"])
        for day in first_day:
            started = time.perf_counter()
            result = job.execute_in_process(
                partition_key=day,
                instance=instance,
                raise_on_error=False,
                tags={TRIGGER_TAG: "demo"},
                run_config=QUIET_CONSOLE,
            )
            report = _day_report(day, result, time.perf_counter() - started)
            reports.append(report)
            c = report.counts
            status = "reconcile" if report.reconciled else ("DO NOT RECONCILE" if report.success else "RUN FAILED")
            if report.success and c["quarantined"]:
                status += f" ({c['quarantined']} held back: see the exceptions below)"
            print(
                f"{day:10}  {c['created']:7d} {c['updated']:7d} {c['unchanged']:9d} {c['quarantined']:11d} "
                f"{c['failed']:6d}  {status}"
            )
        totals = {k: sum(r.counts[k] for r in reports) for k in reports[0].counts}
        print(
            f"\n{'total':10}  {totals['created']:7d} {totals['updated']:7d} {totals['unchanged']:9d} "
            f"{totals['quarantined']:11d} {totals['failed']:6d}  "
            f"{sum(r.reconciled for r in reports)}/{len(reports)} days reconcile"
        )
        payouts = sum(r.payouts for r in reports)
        print(
            f"Payouts arrived: {payouts}; deposited, each equal to its payout to the cent: "
            f"{payouts - sum(r.payouts_off for r in reports)}"
        )
        print(f"NetSuite writes this run: {_netsuite_writes(env['NETSUITE_BASE_URL']) - writes_before}")
        from sync_pipeline.writers.report import amounts_markdown

        print("\nThe month's books, Stripe against NetSuite read back (sync-pipeline reconcile shows any range):")
        summary = books_summary(reports)
        print(amounts_markdown(summary, ["currency", "category", "stripe", "netsuite", "difference"], "Nothing."))
        if totals["quarantined"]:
            import argparse

            from sync_pipeline.exceptions_cli import run_exceptions

            print(
                "\nHeld back, each with its fix (`sync-pipeline exceptions --open`; the UI: open_exceptions_worklist):"
            )
            run_exceptions(argparse.Namespace(open_only=True, code=None, format="table", account=None))
            print(
                "Fix one in field_mapping.yaml (or in Stripe), then `sync-pipeline exceptions retry --in-process` "
                "re-runs the days it affects (README: Fixing an exception)."
            )
        print("\nRun it again: everything is unchanged and nothing is written. See the runs: make dev")
        return 0 if all(r.success for r in reports) else 1
