"""The near-real-time loop with a real Dagster daemon: Stripe stand-in → signed webhook → receiver → inbox →
`stripe_to_netsuite_on_events` → run → NetSuite stand-in. One daemon (in its own process group) serves the module."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
import stripe

from sync_pipeline.jobs import EVENTS_TAG
from sync_pipeline.resources.ledger import Ledger, webhook_inbox
from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.server import serve_in_thread
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.sandbox.stripe.events import sign
from sync_pipeline.stripe_to_netsuite_sensor import SENSOR_NAME
from sync_pipeline.webhooks import WEBHOOK_PATH, ReceiverConfig, create_webhook_app
from sync_pipeline_tests.e2e.harness import Sandbox, amount, at

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_near_real_time"
SYNC_TIMEOUT = 120
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


@dataclass
class Loop:
    """The stand-ins, the receiver, and a `dagster-daemon run` on a temporary DAGSTER_HOME."""

    sandbox: Sandbox
    receiver_url: str
    ledger: Ledger
    env: dict[str, str]
    log_path: Path
    daemon: subprocess.Popen | None = None
    _instance: dg.DagsterInstance | None = field(default=None, repr=False)
    # The Stripe stand-in's own state, for seeding a day in bulk (`seeding.seed_paid_invoices`).
    stripe_state: Any = field(default=None, repr=False)
    stripe_config: Any = field(default=None, repr=False)
    workspace: Path = ROOT / "workspace.yaml"

    # -- the daemon ----------------------------------------------------------------------------------
    def start_daemon(self) -> None:
        log = self.log_path.open("ab")
        self.daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(self.workspace)],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop_daemon(self) -> None:
        if self.daemon is None:
            return
        try:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            self.daemon.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        finally:
            try:
                os.killpg(self.daemon.pid, signal.SIGKILL)  # never leave a daemon or code server behind
            except ProcessLookupError:
                pass
            self.daemon = None

    # -- what Dagster recorded -------------------------------------------------------------------------
    @property
    def instance(self) -> dg.DagsterInstance:
        if self._instance is None:
            self._instance = dg.DagsterInstance.from_config(self.env["DAGSTER_HOME"])
        return self._instance

    def sensor_runs(self) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME})))

    def sensor_ticks_since(self, since: float) -> int:
        states = [s for s in self.instance.all_instigator_state() if s.instigator_name == SENSOR_NAME]
        return sum(
            1
            for s in states
            for t in self.instance.get_ticks(s.instigator_origin_id, s.selector_id, limit=50)
            if t.timestamp > since
        )

    def wait_for(self, what: str, predicate: Callable[[], Any], timeout: float = SYNC_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.daemon is None or self.daemon.poll() is None, f"the daemon exited; see {self.log_path}"
            found = predicate()
            if found:
                return found
            time.sleep(0.5)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"timed out waiting for {what}; daemon log tail:\n{tail}")

    def wait_until_idle(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Inbox drained and acknowledged, and every run the sensor requested has finished."""
        self.wait_for(
            "an idle loop",
            lambda: self.ledger.inbox_status().depth == 0 and all(r.status in FINISHED for r in self.sensor_runs()),
            timeout=timeout,
        )

    def inbox_payloads(self) -> list[str]:
        with self.ledger.engine.connect() as conn:
            return list(conn.execute(sa.select(webhook_inbox.c.payload)).scalars())

    def stripe_routes(self) -> dict[str, int]:
        """Requests the Stripe stand-in answered so far, per route (`GET /v1/charges`, `GET /v1/invoices/{id}`)."""
        return requests.get(f"{self.sandbox.stripe_url}/_sandbox/stats", timeout=10).json()["by_route"]

    def full_day_run(self, day: str) -> None:
        """The whole day's assets, as the daily schedule runs them, in a child process on this instance."""
        subprocess.run([sys.executable, "-c", FULL_DAY_RUN, day], env=self.env, cwd=ROOT, check=True, timeout=1800)


# The schedule's run of one whole day (no scope), on the loop's instance and ledger.
FULL_DAY_RUN = """
import sys
import dagster as dg
from sync_pipeline.definitions import ALL_ASSETS, build_resources
result = dg.materialize(ALL_ASSETS, partition_key=sys.argv[1], resources=build_resources(),
                        instance=dg.DagsterInstance.get(), tags={"sync_pipeline/trigger": "schedule"})
sys.exit(0 if result.success else 1)
"""


@contextmanager
def running_loop(
    tmp: Path,
    source: str = "webhooks",
    netsuite_latency_ms: float = 5,
    dagster_yaml_extra: str = "",
    workspace: Path | None = None,
    extra_env: dict[str, str] | None = None,
) -> Iterator[Loop]:
    """Stand-ins, receiver (registered as the Stripe endpoint) and daemon; everything stopped on exit.

    Also used by `benchmarks/event_latency.py` (which may append instance settings to the repo's dagster.yaml).
    """
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text() + dagster_yaml_extra)
    database_url = f"sqlite:///{tmp / 'ledger.sqlite'}"
    ledger = Ledger(database_url)
    with ExitStack() as stack:
        stripe_sandbox = stack.enter_context(start_stripe(webhook_secret=SECRET))
        netsuite_sandbox = start_netsuite(latency_ms=netsuite_latency_ms)
        stack.callback(netsuite_sandbox.stop)
        receiver = serve_in_thread(create_webhook_app(ReceiverConfig(secret=SECRET), ledger))
        stack.callback(receiver.stop)
        env = {
            **os.environ,
            **stripe_sandbox.env(),
            **netsuite_sandbox.env(),
            "DAGSTER_HOME": str(home),
            "SYNC_DATABASE_URL": database_url,
            "SYNC_EVENT_SOURCE": source,
            **(extra_env or {}),
        }
        client = stripe.StripeClient(stripe_sandbox.api_key, base_addresses={"api": stripe_sandbox.url})
        if source == "webhooks":
            client.v1.webhook_endpoints.create({"url": receiver.url + WEBHOOK_PATH, "enabled_events": ["*"]})
        state = Loop(
            Sandbox(stripe_sandbox.url, netsuite_sandbox.url, client, home),
            receiver.url + WEBHOOK_PATH,
            ledger,
            env,
            tmp / "daemon.log",
            stripe_state=stripe_sandbox.state,
            stripe_config=stripe_sandbox.config,
            workspace=workspace or ROOT / "workspace.yaml",
        )
        stack.callback(state.stop_daemon)
        # Create Dagster's SQLite storage before the daemon starts: two processes creating it at once race
        # ("table alembic_version already exists").
        state.instance.get_runs(limit=1)
        state.start_daemon()
        yield state


@pytest.fixture(scope="module")
def loop(tmp_path_factory) -> Iterator[Loop]:
    with running_loop(tmp_path_factory.mktemp("near_real_time")) as state:
        yield state


def _payment_applied_to(sandbox: Sandbox, invoice_internal_id: str) -> dict | None:
    return next(
        (
            p
            for p in sandbox.netsuite("customerPayment").values()
            if any(a["doc"]["id"] == invoice_internal_id for a in p["apply"]["items"])
        ),
        None,
    )


def _synced_with_payment(sandbox: Sandbox, invoice_id: str) -> tuple[dict, dict] | None:
    invoice = sandbox.netsuite("invoice").get(f"stripe-{invoice_id}")
    payment = _payment_applied_to(sandbox, invoice["id"]) if invoice else None
    return (invoice, payment) if payment else None


@pytest.fixture(scope="module")
def paid_invoice(loop) -> dict:
    """One invoice paid now, and what the loop made of it."""
    started = time.monotonic()
    invoice = loop.sandbox.invoice(loop.sandbox.customer("Instant Payer", "usd"), "usd", [24900])
    invoice_record, payment = loop.wait_for(
        "the paid invoice in NetSuite", lambda: _synced_with_payment(loop.sandbox, invoice.id)
    )
    loop.wait_until_idle()
    return {
        "id": invoice.id,
        "created": invoice.created,
        "invoice": invoice_record,
        "payment": payment,
        "seconds": time.monotonic() - started,
    }


def test_a_newly_paid_invoice_reaches_netsuite_with_its_payment(loop, paid_invoice):
    assert amount(paid_invoice["invoice"]) == Decimal("249.00")
    assert amount(paid_invoice["invoice"], "amountRemaining") == 0
    assert amount(paid_invoice["payment"], "payment") == Decimal("249.00")
    runs = loop.sensor_runs()
    assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    # The invoice's own day, not the clock's: the loop may finish after midnight.
    invoice_day = dt.datetime.fromtimestamp(paid_invoice["created"], dt.UTC).date().isoformat()
    assert {r.tags["dagster/partition"] for r in runs} == {invoice_day}
    assert all(r.tags[EVENTS_TAG] for r in runs), "each run says which events caused it"


def test_the_same_webhooks_replayed_three_times_shuffled_write_nothing_and_run_nothing(loop, paid_invoice):
    payloads = loop.inbox_payloads()
    runs_before = len(loop.sensor_runs())
    writes_before = loop.sandbox.netsuite_writes()
    replayed = time.time()

    answers = []
    for _ in range(3):
        for payload in random.sample(payloads, len(payloads)):
            body = payload.encode()
            answers.append(
                requests.post(
                    loop.receiver_url,
                    data=body,
                    timeout=10,
                    headers={
                        "Stripe-Signature": sign(body, SECRET, int(time.time())),
                        "Content-Type": "application/json",
                    },
                )
            )
    loop.wait_for("two sensor ticks after the replay", lambda: loop.sensor_ticks_since(replayed) >= 2, timeout=60)

    assert len(answers) == 3 * len(payloads) and all(a.status_code == 200 for a in answers)
    assert all(a.json()["duplicate"] for a in answers)
    assert loop.ledger.inbox_status().depth == 0
    assert len(loop.sensor_runs()) == runs_before, "a replayed event started a run"
    assert loop.sandbox.netsuite_writes() == writes_before


def test_a_refund_forty_days_after_its_invoice_reruns_its_partition_and_adds_a_credit_memo(loop, paid_invoice):
    invoice_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)
    loop.sandbox.clock(at(invoice_day, 11))
    invoice = loop.sandbox.invoice(loop.sandbox.customer("Forty Days Ago", "usd"), "usd", [30000])
    loop.sandbox.clock(None)
    loop.wait_for("the 40-day-old invoice in NetSuite", lambda: _synced_with_payment(loop.sandbox, invoice.id))
    loop.wait_until_idle()
    runs_before = {r.run_id for r in loop.sensor_runs()}

    refund = loop.sandbox.client.v1.refunds.create({"charge": loop.sandbox.charge_of(invoice.id), "amount": 7500})

    memo = loop.wait_for(
        "the refund's credit memo", lambda: loop.sandbox.netsuite("creditMemo").get(f"stripe-{refund.id}-cm")
    )
    assert amount(memo) == Decimal("75.00")
    loop.wait_until_idle()
    new_runs = [r for r in loop.sensor_runs() if r.run_id not in runs_before]
    assert {r.tags["dagster/partition"] for r in new_runs} == {invoice_day.isoformat()}
    refund_events = {
        json.loads(p)["id"] for p in loop.inbox_payloads() if json.loads(p)["data"]["object"].get("id") == refund.id
    }
    tagged = {e for r in new_runs for e in r.tags[EVENTS_TAG].split(",")}
    assert refund_events and refund_events <= tagged


def test_a_daemon_restart_skips_no_event_and_processes_none_twice(loop, paid_invoice):
    loop.wait_until_idle()
    loop.stop_daemon()
    while_down = loop.sandbox.invoice(loop.sandbox.customer("Paid While Down", "eur"), "eur", [12000])
    loop.wait_for("the webhooks in the inbox", lambda: loop.ledger.inbox_status().depth > 0, timeout=30)

    loop.start_daemon()

    loop.wait_for(
        "the invoice paid while the daemon was down", lambda: _synced_with_payment(loop.sandbox, while_down.id)
    )
    loop.wait_until_idle()
    tagged = [e for r in loop.sensor_runs() for e in r.tags[EVENTS_TAG].split(",") if e]
    assert len(tagged) == len(set(tagged)), "an event was turned into two runs"
    keys = [r.tags["dagster/run_key"] for r in loop.sensor_runs()]
    assert len(keys) == len(set(keys))
    assert amount(loop.sandbox.netsuite("invoice")[f"stripe-{while_down.id}"]) == Decimal("120.00")


def test_the_events_api_cursor_survives_a_daemon_restart(tmp_path):
    with running_loop(tmp_path, source="events_api") as events_loop:
        customer = events_loop.sandbox.customer("Polled Payer", "usd")
        before = events_loop.sandbox.invoice(customer, "usd", [5000])
        events_loop.wait_for("the first invoice", lambda: _synced_with_payment(events_loop.sandbox, before.id))
        events_loop.wait_until_idle()
        events_loop.stop_daemon()
        while_down = events_loop.sandbox.invoice(customer, "usd", [7000])

        events_loop.start_daemon()

        events_loop.wait_for(
            "the invoice paid while the daemon was down",
            lambda: _synced_with_payment(events_loop.sandbox, while_down.id),
        )
        events_loop.wait_until_idle()
        runs = events_loop.sensor_runs()
        tagged = [e for r in runs for e in r.tags[EVENTS_TAG].split(",") if e]
        assert len(tagged) == len(set(tagged)), "an event was read again after the restart"
        polled = {
            e.id
            for e in events_loop.sandbox.client.v1.events.list({"limit": 100}).data
            if e.type in ("invoice.paid", "invoice_payment.paid")
        }
        assert polled <= set(tagged), "an event was skipped"
        assert {r.tags["sync_pipeline/event_source"] for r in runs} == {"events_api"}
