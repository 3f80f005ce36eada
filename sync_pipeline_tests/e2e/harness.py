"""End-to-end harness: the Stripe and NetSuite stand-ins over HTTP, real Dagster materializations."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import requests
import stripe
from sqlalchemy.engine import make_url

from sync_pipeline.assets.netsuite import NETSUITE_POOL
from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB
from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.netsuite.jsonio import dumps as netsuite_json
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.stripe_to_netsuite_sensor import SENSOR_NAME, SENSOR_RUN_CONFIG

# Two days before the session started (UTC): a complete past day inside the partition range. Read from the
# clock once, so a session that runs past midnight keeps one day; relative rather than fixed, because the
# stand-ins and the pipeline compare some dates with the real clock (Stripe's 30-day Events API, invoices
# due 30 days after DAY that must still read "Invoiced" in Salesforce).
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)


def at(day: dt.date, hour: int, minute: int = 0) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC).timestamp())


@dataclass
class Sandbox:
    stripe_url: str
    netsuite_url: str
    client: stripe.StripeClient
    home: Path

    # -- Stripe activity, driven through the real SDK with the stand-in's clock -----------------
    def clock(self, when: int | None) -> None:
        body = {"now": when} if when is not None else {"real": True}
        requests.post(f"{self.stripe_url}/_sandbox/clock", json=body, timeout=10).raise_for_status()

    def customer(self, name: str, currency: str, **extra) -> str:
        return self.client.v1.customers.create(
            {"name": name, "email": f"{name.lower().replace(' ', '.')}@example.test", **extra}
        ).id

    def invoice(
        self,
        customer: str,
        currency: str,
        amounts: list[int],
        *,
        pay: str | None = "pm_card_visa",
        description: str = "Pro plan",
    ) -> stripe.Invoice:
        for amount in amounts:
            self.client.v1.invoice_items.create(
                {"customer": customer, "amount": amount, "currency": currency, "description": description}
            )
        invoice = self.client.v1.invoices.create(
            {"customer": customer, "currency": currency, "pending_invoice_items_behavior": "include"}
        )
        invoice = self.client.v1.invoices.finalize_invoice(invoice.id)
        if pay:
            try:
                invoice = self.client.v1.invoices.pay(invoice.id, {"payment_method": pay})
            except stripe.CardError:
                invoice = self.client.v1.invoices.retrieve(invoice.id)
        return invoice

    def charge_of(self, invoice_id: str) -> str:
        payments = self.client.v1.invoice_payments.list(
            {"invoice": invoice_id, "expand": ["data.payment.payment_intent"]}
        )
        return payments.data[0].payment.payment_intent.latest_charge

    # -- NetSuite, as the stand-in's inspection API shows it ---------------------------------------
    def netsuite(self, record_type: str) -> dict[str, dict]:
        body = requests.get(f"{self.netsuite_url}/_sandbox/records/{record_type}", timeout=10).json()
        return {r["externalId"]: r for r in body["records"] if r.get("externalId")}

    def netsuite_stats(self) -> dict:
        return requests.get(f"{self.netsuite_url}/_sandbox/stats", timeout=10).json()

    def netsuite_writes(self) -> int:
        return int(self.netsuite_stats()["writes_applied"])

    def configure_netsuite(self, **knobs) -> None:
        requests.post(f"{self.netsuite_url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()

    def configure_stripe(self, **knobs) -> None:
        requests.post(f"{self.stripe_url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()

    # -- NetSuite changed behind the pipeline's back (someone editing records, an import) ---------------
    def edit_in_netsuite(self, record_type: str, external_id: str, fields: dict) -> dict:
        response = requests.patch(
            f"{self.netsuite_url}/_sandbox/records/{record_type}/eid:{external_id}",
            data=netsuite_json(fields),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def duplicate_in_netsuite(self, record_type: str, external_id: str) -> dict:
        response = requests.post(
            f"{self.netsuite_url}/_sandbox/records/{record_type}/eid:{external_id}/duplicate", timeout=10
        )
        response.raise_for_status()
        return response.json()

    # -- the pipeline ------------------------------------------------------------------------------
    def materialize(
        self,
        partition: dt.date = DAY,
        instance: dg.DagsterInstance | None = None,
        raise_on_error: bool = False,
        netsuite_retries: int | None = None,
    ) -> dg.ExecuteInProcessResult:
        """The day's Stripe → NetSuite assets; `netsuite_retries` caps NetSuite attempts (quick give-up tests)."""
        from sync_pipeline.definitions import ALL_ASSETS, build_resources

        resources = build_resources()
        if netsuite_retries is not None:
            # Built anew: Dagster configures a resource from its constructor arguments, not from a model_copy.
            netsuite = resources["netsuite"]
            fields = {name: getattr(netsuite, name) for name in type(netsuite).model_fields}
            resources["netsuite"] = type(netsuite)(**{**fields, "retry_max_attempts": netsuite_retries})
        return dg.materialize(
            ALL_ASSETS,
            partition_key=partition.isoformat(),
            resources=resources,
            instance=instance,
            raise_on_error=raise_on_error,
        )


def stop_process_group(process: subprocess.Popen) -> None:
    """A process started with `start_new_session=True` and everything it started (a webserver's code server, a code
    server's run workers, Chromium's helpers): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def amount(record: dict, field: str = "total") -> Decimal:
    return Decimal(str(record[field]))


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Step key -> what the user reads as its error (a `dg.Failure`'s description, else the error message)."""
    failures = {}
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            user = data.user_failure_data
            failures[event.step_key] = user.description if user is not None and user.description else data.error.message
    return failures


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


@contextmanager
def running_sandbox(
    tmp_path: Path, monkeypatch, database_url: str | None = None, field_mapping: Path | None = None, **netsuite_config
) -> Iterator[Sandbox]:
    stripe_sandbox = start_stripe()
    netsuite_sandbox = start_netsuite(**netsuite_config)
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        for name, value in {**stripe_sandbox.env(), **netsuite_sandbox.env()}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("SYNC_DATABASE_URL", database_url or f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        if field_mapping is not None:
            monkeypatch.setenv("SYNC_FIELD_MAPPING", str(field_mapping))
        client = stripe.StripeClient(os.environ["STRIPE_API_KEY"], base_addresses={"api": stripe_sandbox.url})
        yield Sandbox(stripe_sandbox.url, netsuite_sandbox.url, client, home)
    finally:
        stripe_sandbox.stop()
        netsuite_sandbox.stop()


# -- Dagster's production topology (deploy/dagster-postgres.yaml) on 127.0.0.1 -----------------------------------------

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "sync_pipeline"
REPOSITORY = "__repository__"
# A slow, shared 2-core machine: every wait is generous and polls; none is a fixed sleep.
START_TIMEOUT = 180
RUNS_TIMEOUT = 360
FINISHED = {"SUCCESS", "FAILURE", "CANCELED"}
# The runs a test launches execute in one process, as the sensor's do (SENSOR_RUN_CONFIG): the default executor's
# process per step costs minutes per run on two busy cores. Pools bind steps whichever executor runs them.
RUN_CONFIG = SENSOR_RUN_CONFIG
T = TypeVar("T")

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
    # The code server's environment (the pipeline's settings): what a shell beside the deployment has.
    code_env: dict[str, str] = field(default_factory=dict)
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


def seed_paid_days(
    sandbox: Sandbox, days: list[dt.date], name: str, amounts: list[int]
) -> dict[dt.date, list[stripe.Invoice]]:
    """Each day at 10:00 (the Stripe stand-in's clock): customer `name n` with a paid invoice per amount (+ n)."""
    seeded = {}
    for n, day in enumerate(days):
        sandbox.clock(at(day, 10))
        seeded[day] = paid_invoices(sandbox, f"{name} {n}", [amount + n for amount in amounts])
    sandbox.clock(None)
    return seeded


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).ok
    except requests.ConnectionError:
        return False


@contextmanager
def production_topology(
    postgres_admin_url: str,
    tmp: Path,
    seed: Callable[[Sandbox], T],
    netsuite_concurrency: int,
    **netsuite_config: Any,
) -> Iterator[tuple[Topology, T]]:
    """Dagster's production topology on 127.0.0.1, running until the block ends: scratch PostgreSQL databases
    (Dagster's, on deploy/dagster-postgres.yaml unchanged, and the ledger's), the stand-ins (`netsuite_config`:
    `start_netsuite`'s), `dagster api grpc` with the pipeline's settings, `dagster-daemon run` and
    `dagster-webserver`. `seed` makes the Stripe history before any process starts (and before the sensor's first
    tick sets its cursor past it); what it returns comes with the topology."""
    from sync_pipeline_tests.conftest import scratch_database
    from sync_pipeline_tests.e2e.test_crash_and_dev import _free_port

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
        netsuite_sandbox = stack.enter_context(start_netsuite(**netsuite_config))
        client = stripe.StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.url})
        sandbox = Sandbox(stripe_sandbox.url, netsuite_sandbox.url, client, home)
        seeded = seed(sandbox)

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
            "NETSUITE_CONCURRENCY": str(netsuite_concurrency),
            "SYNC_DATABASE_URL": ledger_url,
            "SYNC_EVENT_SOURCE": "events_api",
        }
        topology = Topology(f"http://127.0.0.1:{web_port}", sandbox, logs, code_env)
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
        yield topology, seeded
