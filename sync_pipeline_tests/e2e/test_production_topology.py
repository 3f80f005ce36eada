"""Dagster's production topology on one machine, as `deploy/dagster-postgres.yaml` describes it, run as a whole.

What a deployment runs, each its own process on 127.0.0.1, stopped by the test:

    PostgreSQL (a fresh database for Dagster's runs, events and schedules, another for the ledger)
    `dagster api grpc`          the code location `sync_pipeline`, with the pipeline's settings in its environment
    `dagster-daemon run`        sensors, backfills, the queued run coordinator, run monitoring
    `dagster-webserver`         the UI and its GraphQL API, through which the test launches and terminates runs

The daemon and the webserver see only DAGSTER_HOME and the DAGSTER_PG_* variables; Stripe and NetSuite
credentials live in the code server's environment alone (and reach the runs it starts). The stand-ins play
Stripe and NetSuite. The NetSuite stand-in would accept many requests at once, so its peak counter measures
the pipeline: the `netsuite_api` pool and the client's limit, not the stand-in's own refusals.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
import stripe

from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB
from sync_pipeline.stripe_to_netsuite_sensor import SENSOR_NAME
from sync_pipeline_tests.e2e.harness import (
    FINISHED,
    Sandbox,
    Topology,
    paid_invoices,
    production_topology,
    seed_paid_days,
)

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

# What the pipeline is told the account allows; the stand-in itself would take ten times as many.
NETSUITE_CONCURRENCY = 2
STAND_IN_LIMIT = 20
# Slow enough that a step's requests overlap, and two steps' would if the pool let them run together.
NETSUITE_LATENCY_MS = 40

TODAY = dt.datetime.now(dt.UTC).date()
BACKFILL_DAYS = [TODAY - dt.timedelta(days=4), TODAY - dt.timedelta(days=3)]
REFUND_DAY = TODAY - dt.timedelta(days=5)  # an old invoice refunded now: the sensor re-runs its day
KILLED_DAY = TODAY - dt.timedelta(days=6)
NEXT_DAY = TODAY - dt.timedelta(days=7)


def seed_past_days(sandbox: Sandbox) -> dict[dt.date, list[stripe.Invoice]]:
    days = [*BACKFILL_DAYS, REFUND_DAY, KILLED_DAY, NEXT_DAY]
    return seed_paid_days(sandbox, days, "Topology Customer", [10000, 20000, 30000])


@dataclass
class Deployment:
    topology: Topology
    seeded: dict[dt.date, list[stripe.Invoice]]
    part_one: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def deployment(postgres_admin_url, tmp_path_factory) -> Iterator[Deployment]:
    with production_topology(
        postgres_admin_url,
        tmp_path_factory.mktemp("production_topology"),
        seed_past_days,
        NETSUITE_CONCURRENCY,
        concurrency_limit=STAND_IN_LIMIT,
        latency_ms=NETSUITE_LATENCY_MS,
    ) as (topology, seeded):
        yield Deployment(topology, seeded)


class PoolWatch:
    """Samples the pool as the UI shows it, every two seconds, until stopped: the most slots ever claimed at once,
    whether a step ever waited for one, and the most runs started at once."""

    def __init__(self, topology: Topology) -> None:
        self.topology = topology
        self.most_claimed = 0
        self.waited: set[str] = set()
        self.most_started = 0
        self.limits: set[int | None] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PoolWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)

    def _watch(self) -> None:
        while not self._stop.wait(2):
            try:
                pool = self.topology.pool()
                started = sum(1 for r in self.topology.runs() if r["status"] == "STARTED")
            except (requests.RequestException, AssertionError):
                continue  # a slow answer is not a finding; the next sample will do
            if pool is not None:
                self.limits.add(pool["limit"])
                self.most_claimed = max(self.most_claimed, len(pool["claimedSlots"]))
                self.waited |= {p["runId"] for p in pool["pendingSteps"] if p["assignedTimestamp"] is None}
            self.most_started = max(self.most_started, started)


def test_sensor_runs_and_a_backfill_at_once_keep_to_the_netsuite_pool(deployment):
    topology, sandbox = deployment.topology, deployment.topology.sandbox
    requests.post(f"{sandbox.netsuite_url}/_sandbox/stats/reset", timeout=10).raise_for_status()

    with PoolWatch(topology) as watch:
        # Activity now, which the sensor turns into runs: today's invoices, and a refund of an old one.
        today = paid_invoices(sandbox, "Topology Today", [4000, 5000, 6000])
        refunded = deployment.seeded[REFUND_DAY][0]
        refund = sandbox.client.v1.refunds.create({"charge": sandbox.charge_of(refunded.id), "amount": 2500})
        # And, at the same time, a backfill of two days from the UI's API (one run per day, or one for the range,
        # as the assets' backfill policy has it).
        backfill_id = topology.launch_backfill(BACKFILL_DAYS)

        def all_finished() -> dict[str, list[dict]] | None:
            sensor_runs = topology.runs({"dagster/sensor_name": SENSOR_NAME})
            if not {TODAY.isoformat(), REFUND_DAY.isoformat()} <= {
                r["tags"].get("dagster/partition") for r in sensor_runs
            }:
                return None
            if topology.backfill_status(backfill_id) in ("REQUESTED", "CANCELING", "FAILING"):
                return None
            backfill_runs = topology.runs({"dagster/backfill": backfill_id})
            finished = backfill_runs and all(r["status"] in FINISHED for r in sensor_runs + backfill_runs)
            return {"sensor": sensor_runs, "backfill": backfill_runs} if finished else None

        runs = topology.wait_for("the sensor's and the backfill's runs to finish", all_finished)

    stats = sandbox.netsuite_stats()
    deployment.part_one = {**runs, "backfill_id": backfill_id}
    every_run = runs["sensor"] + runs["backfill"]
    failed = {r["runId"]: r["tags"] for r in every_run if r["status"] != "SUCCESS"}
    assert not failed, f"runs did not succeed: {failed}\n" + "\n".join(map(topology.errors_of, failed))
    # The finding: however many runs were going, NetSuite never saw more than the account allows.
    assert stats["concurrency_rejections"] == 0
    assert 1 <= stats["peak_concurrency"] <= NETSUITE_CONCURRENCY, stats["peak_concurrency"]
    # And it is a finding only because the runs did overlap and the pool held steps back.
    assert watch.most_started >= 2, "the runs never ran at the same time: the test proves nothing"
    assert watch.waited, "no NetSuite step ever waited for the pool: the test proves nothing"
    assert watch.most_claimed == 1 and watch.limits == {1}
    # The data arrived: every invoice of the days the backfill covered, today's, and the refunded invoice with the
    # refund's credit memo. The refund's sensor run syncs only the documents its events name, so the refunded
    # day's other invoices wait for that day's full run.
    invoices = sandbox.netsuite("invoice")
    for invoice in today + [i for d in BACKFILL_DAYS for i in deployment.seeded[d]] + [refunded]:
        assert f"stripe-{invoice.id}" in invoices
    assert f"stripe-{refund.id}-cm" in sandbox.netsuite("creditMemo")
    assert not {f"stripe-{i.id}" for i in deployment.seeded[REFUND_DAY][1:]} & set(invoices)


def test_a_terminated_run_frees_its_pool_slot_for_the_next_run(deployment):
    topology, sandbox = deployment.topology, deployment.topology.sandbox
    requests.post(f"{sandbox.netsuite_url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    # NetSuite takes the first write, then hangs on every further one: the run stops inside the pool, slot held.
    sandbox.configure_netsuite(hold_writes_after=1)
    try:
        killed = topology.launch_run(KILLED_DAY)
        topology.wait_for(
            "the first run to hold the pool's slot at a hanging write",
            lambda: (
                sandbox.netsuite_stats()["writes_held"] >= 1
                and any(s["runId"] == killed for s in topology.pool()["claimedSlots"])
            ),
        )
        waiting = topology.launch_run(NEXT_DAY)
        topology.wait_for(
            "the second run to wait for the slot",
            lambda: any(p["runId"] == waiting for p in topology.pool()["pendingSteps"]),
        )

        topology.terminate(killed)

        # While NetSuite still holds its request, the terminated run keeps the slot: its step has not stopped, and
        # handing the slot on now would put two steps' requests on the account at once.
        topology.wait_for("the run to be canceling", lambda: topology.run(killed)["status"] == "CANCELING", 60)
        for _ in range(5):
            assert [s["runId"] for s in topology.pool()["claimedSlots"]] == [killed]
            time.sleep(1)
    finally:
        # NetSuite answers again: the step finishes the requests it had started, stops, and the slot moves on.
        sandbox.configure_netsuite(hold_writes_after=0)
    topology.wait_for("the terminated run to end", lambda: topology.run(killed)["status"] in FINISHED)
    topology.wait_for("the next run to finish", lambda: topology.run(waiting)["status"] in FINISHED)

    assert topology.run(killed)["status"] == "CANCELED"
    assert topology.run(waiting)["status"] == "SUCCESS", topology.errors_of(waiting)
    invoices = sandbox.netsuite("invoice")
    assert all(f"stripe-{i.id}" in invoices for i in deployment.seeded[NEXT_DAY])
    assert not topology.pool()["claimedSlots"], "a slot is still held after both runs ended"
    assert sandbox.netsuite_stats()["peak_concurrency"] <= NETSUITE_CONCURRENCY


def test_the_webservers_graphql_lists_the_runs_with_their_status(deployment):
    topology = deployment.topology
    if not deployment.part_one:
        pytest.skip("needs the runs of the first test")
    listed = {r["runId"]: r for r in topology.runs()}
    sensor, backfill = deployment.part_one["sensor"], deployment.part_one["backfill"]
    for run in sensor + backfill:
        assert listed[run["runId"]]["status"] == "SUCCESS"
        assert listed[run["runId"]]["jobName"] == STRIPE_TO_NETSUITE_JOB
    assert all(listed[r["runId"]]["tags"]["dagster/sensor_name"] == SENSOR_NAME for r in sensor)
    assert all(listed[r["runId"]]["tags"]["dagster/backfill"] == deployment.part_one["backfill_id"] for r in backfill)
    by_day = {r["tags"].get("dagster/partition"): r["status"] for r in listed.values()}
    assert by_day[KILLED_DAY.isoformat()] == "CANCELED"
    assert by_day[NEXT_DAY.isoformat()] == "SUCCESS"
