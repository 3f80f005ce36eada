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
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import stripe
from sqlalchemy.engine import make_url

from sync_pipeline.assets.netsuite import NETSUITE_POOL
from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB
from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.stripe_to_netsuite_sensor import SENSOR_NAME, SENSOR_RUN_CONFIG
from sync_pipeline_tests.conftest import scratch_database
from sync_pipeline_tests.e2e.harness import Sandbox, at, stop_process_group
from sync_pipeline_tests.e2e.test_crash_and_dev import _free_port

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "sync_pipeline"
REPOSITORY = "__repository__"
# What the pipeline is told the account allows; the stand-in itself would take ten times as many.
NETSUITE_CONCURRENCY = 2
STAND_IN_LIMIT = 20
# Slow enough that a step's requests overlap, and two steps' would if the pool let them run together.
NETSUITE_LATENCY_MS = 40
# A slow, shared 2-core machine: every wait is generous and polls; none is a fixed sleep.
START_TIMEOUT = 180
RUNS_TIMEOUT = 360
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# The runs the test launches execute in one process, as the sensor's do (SENSOR_RUN_CONFIG): the default executor's
# process per step costs minutes per run on two busy cores. Pools bind steps whichever executor runs them.
RUN_CONFIG = SENSOR_RUN_CONFIG

TODAY = dt.datetime.now(dt.UTC).date()
BACKFILL_DAYS = [TODAY - dt.timedelta(days=4), TODAY - dt.timedelta(days=3)]
REFUND_DAY = TODAY - dt.timedelta(days=5)  # an old invoice refunded now: the sensor re-runs its day
KILLED_DAY = TODAY - dt.timedelta(days=6)
NEXT_DAY = TODAY - dt.timedelta(days=7)

RUNS_QUERY = """
query Runs($filter: RunsFilter) {
  runsOrError(filter: $filter) {
    __typename
    ... on Runs { results { runId status jobName tags { key value } } }
    ... on PythonError { message }
  }
}"""
# Mutations as the UI sends them; each answers its success type or an error type with a message.
BACKFILL_MUTATION = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) {
  __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message }
  ... on PartitionSetNotFoundError { message } } }"""
LAUNCH_MUTATION = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
TERMINATE_MUTATION = """mutation($runId: String!) { terminateRun(runId: $runId) {
  __typename ... on TerminateRunFailure { message } ... on PythonError { message } } }"""
POOL_QUERY = """
query Pool($pool: String!) {
  instance {
    concurrencyLimit(concurrencyKey: $pool) {
      limit
      claimedSlots { runId stepKey }
      pendingSteps { runId stepKey assignedTimestamp }
    }
  }
}"""


def clean_environment() -> dict[str, str]:
    """This process's environment without any setting of the pipeline or of Dagster: each process gets its own."""
    prefixes = ("DAGSTER_", "STRIPE_", "NETSUITE_", "SALESFORCE_", "SYNC_")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


@dataclass
class Topology:
    """The running deployment, seen from outside: the webserver's GraphQL API and the stand-ins' control APIs."""

    webserver_url: str
    sandbox: Sandbox
    logs: Path
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(
            argv, env=env, cwd=self.logs, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(self) -> None:
        # The webserver and the daemon first, so nothing launches a run while the code server goes.
        for name in ("webserver", "daemon", "code_server"):
            if name in self.processes:
                stop_process_group(self.processes.pop(name))

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-2500:]}" for path in sorted(self.logs.glob("*.log"))
        )

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = RUNS_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                assert process.poll() is None, f"{name} exited ({process.returncode})\n{self.log_tails()}"
            found = predicate()
            if found:
                return found
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.log_tails()}")

    # -- the webserver's GraphQL API: what the UI shows and does ------------------------------------------
    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.webserver_url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert not body.get("errors"), body["errors"]
        return body["data"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        run_filter = {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]}
        answer = self.graphql(RUNS_QUERY, {"filter": run_filter})["runsOrError"]
        assert answer["__typename"] == "Runs", answer
        return [{**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} for run in answer["results"]]

    def run(self, run_id: str) -> dict:
        return next(r for r in self.runs() if r["runId"] == run_id)

    def errors_of(self, run_id: str) -> str:
        """The run's error and warning messages as the UI's run page lists them (to say why a run failed)."""
        answer = self.graphql(
            """
            query Logs($runId: ID!) {
              logsForRun(runId: $runId) {
                __typename
                ... on EventConnection { events { __typename ... on MessageEvent { message level stepKey } } }
              }
            }""",
            {"runId": run_id},
        )["logsForRun"]
        events = answer.get("events", [])
        return "\n".join(
            f"{e.get('stepKey') or '-'}: {e['message']}" for e in events if e.get("level") in ("ERROR", "WARNING")
        )

    def pool(self) -> dict:
        return self.graphql(POOL_QUERY, {"pool": NETSUITE_POOL})["instance"]["concurrencyLimit"]

    def mutate(self, mutation: str, variables: dict, success: str) -> dict:
        """Run a mutation (one field); its answer, which must be of type `success` (else the error is shown)."""
        (answer,) = self.graphql(mutation, variables).values()
        assert answer["__typename"] == success, answer
        return answer

    def launch_backfill(self, days: list[dt.date]) -> str:
        partition_set = {
            "partitionSetName": f"{STRIPE_TO_NETSUITE_JOB}_partition_set",
            "repositorySelector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY},
        }
        params = {
            "selector": partition_set,
            "partitionNames": [d.isoformat() for d in days],
            "runConfigData": RUN_CONFIG,
        }
        return self.mutate(BACKFILL_MUTATION, {"params": params}, "LaunchBackfillSuccess")["backfillId"]

    def backfill_status(self, backfill_id: str) -> str:
        answer = self.graphql(
            """
            query Backfill($id: String!) {
              partitionBackfillOrError(backfillId: $id) { __typename ... on PartitionBackfill { status } }
            }""",
            {"id": backfill_id},
        )["partitionBackfillOrError"]
        assert answer["__typename"] == "PartitionBackfill", answer
        return answer["status"]

    def launch_run(self, day: dt.date) -> str:
        job = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": STRIPE_TO_NETSUITE_JOB}
        tags = [{"key": "dagster/partition", "value": day.isoformat()}]
        params = {"selector": job, "runConfigData": RUN_CONFIG, "executionMetadata": {"tags": tags}}
        return self.mutate(LAUNCH_MUTATION, {"params": params}, "LaunchRunSuccess")["run"]["runId"]

    def terminate(self, run_id: str) -> None:
        self.mutate(TERMINATE_MUTATION, {"runId": run_id}, "TerminateRunSuccess")

    def sensor_ticks(self) -> int:
        answer = self.graphql(
            """
            query Ticks($selector: SensorSelector!) {
              sensorOrError(sensorSelector: $selector) {
                __typename
                ... on Sensor { sensorState { status ticks(limit: 5) { status } } }
              }
            }""",
            {
                "selector": {
                    "repositoryLocationName": LOCATION,
                    "repositoryName": REPOSITORY,
                    "sensorName": SENSOR_NAME,
                }
            },
        )["sensorOrError"]
        if answer["__typename"] != "Sensor":
            return 0
        return sum(1 for tick in answer["sensorState"]["ticks"] if tick["status"] in ("SUCCESS", "SKIPPED"))


def paid_invoices(sandbox: Sandbox, name: str, amounts: list[int]) -> list[stripe.Invoice]:
    """A customer with one paid invoice per amount: a small partition whose NetSuite step sends requests in parallel."""
    customer = sandbox.customer(name, "usd")
    return [sandbox.invoice(customer, "usd", [amount]) for amount in amounts]


def seed_past_days(sandbox: Sandbox) -> dict[dt.date, list[stripe.Invoice]]:
    seeded = {}
    for n, day in enumerate([*BACKFILL_DAYS, REFUND_DAY, KILLED_DAY, NEXT_DAY]):
        sandbox.clock(at(day, 10))
        seeded[day] = paid_invoices(sandbox, f"Topology Customer {n}", [10000 + n, 20000 + n, 30000 + n])
    sandbox.clock(None)
    return seeded


@dataclass
class Deployment:
    topology: Topology
    seeded: dict[dt.date, list[stripe.Invoice]]
    part_one: dict = field(default_factory=dict)


@pytest.fixture(scope="module")
def deployment(postgres_admin_url, tmp_path_factory) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("production_topology")
    home, logs = tmp / "dagster_home", tmp / "logs"
    home.mkdir()
    logs.mkdir()
    # The shipped file, unchanged: what a deployment copies to $DAGSTER_HOME.
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    grpc_port, web_port = _free_port(), _free_port()
    (tmp / "workspace.yaml").write_text(
        f"load_from:\n  - grpc_server:\n      host: 127.0.0.1\n      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n"
    )
    with ExitStack() as stack:
        dagster_db = make_url(stack.enter_context(scratch_database(postgres_admin_url)))
        ledger_url = stack.enter_context(scratch_database(postgres_admin_url))
        stripe_sandbox = stack.enter_context(start_stripe())
        netsuite_sandbox = stack.enter_context(
            start_netsuite(concurrency_limit=STAND_IN_LIMIT, latency_ms=NETSUITE_LATENCY_MS)
        )
        client = stripe.StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.url})
        sandbox = Sandbox(stripe_sandbox.url, netsuite_sandbox.url, client, home)
        seeded = seed_past_days(sandbox)

        instance_env = {
            **clean_environment(),
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_HOST": dagster_db.host,
            "DAGSTER_PG_PORT": str(dagster_db.port),
            "DAGSTER_PG_USER": dagster_db.username,
            "DAGSTER_PG_PASSWORD": dagster_db.password or "",
            "DAGSTER_PG_DB": dagster_db.database,
        }
        code_env = {
            **instance_env,
            **stripe_sandbox.env(),
            **netsuite_sandbox.env(),
            "NETSUITE_CONCURRENCY": str(NETSUITE_CONCURRENCY),
            "SYNC_DATABASE_URL": ledger_url,
            "SYNC_EVENT_SOURCE": "events_api",
        }
        topology = Topology(f"http://127.0.0.1:{web_port}", sandbox, logs)
        stack.callback(topology.stop)
        # Create the storage once, as a deployment does before starting its processes (and not three at once).
        migrate = subprocess.run(
            [str(BIN / "dagster"), "instance", "migrate"], env=instance_env, capture_output=True, text=True, timeout=300
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        topology.start(
            "code_server",
            [
                str(BIN / "dagster"),
                *("api", "grpc", "--module-name", "sync_pipeline.definitions"),
                *("--host", "127.0.0.1", "--port", str(grpc_port), "--location-name", LOCATION),
            ],
            code_env,
        )
        topology.wait_for(
            "the code server",
            lambda: (
                subprocess.run(
                    [str(BIN / "dagster"), "api", "grpc-health-check", "--host", "127.0.0.1", "--port", str(grpc_port)],
                    env=instance_env,
                    capture_output=True,
                    timeout=60,
                ).returncode
                == 0
            ),
            timeout=START_TIMEOUT,
        )
        workspace = str(tmp / "workspace.yaml")
        topology.start("daemon", [str(BIN / "dagster-daemon"), "run", "-w", workspace], instance_env)
        topology.start(
            "webserver",
            [str(BIN / "dagster-webserver"), "-w", workspace, "-h", "127.0.0.1", "-p", str(web_port)],
            instance_env,
        )
        topology.wait_for("the webserver", lambda: _answers(f"{topology.webserver_url}/server_info"), START_TIMEOUT)
        # The sensor's first tick sets its cursor at the newest event: what happens after it is what it syncs.
        topology.wait_for("the sensor's first tick", lambda: topology.sensor_ticks() > 0, START_TIMEOUT)
        yield Deployment(topology, seeded)


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.ConnectionError:
        return False


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
    # The data arrived: every invoice of every day the runs covered, and the refund's credit memo.
    invoices = sandbox.netsuite("invoice")
    for invoice in today + [i for d in BACKFILL_DAYS for i in deployment.seeded[d]] + deployment.seeded[REFUND_DAY]:
        assert f"stripe-{invoice.id}" in invoices
    assert f"stripe-{refund.id}-cm" in sandbox.netsuite("creditMemo")


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
