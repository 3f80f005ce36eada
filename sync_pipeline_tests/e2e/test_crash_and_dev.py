"""A run killed mid-write, then re-run: no duplicate, nothing missing. And `sync-pipeline dev` serves the UI."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests

from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.sandbox.stripe.seeding import seed_paid_invoices
from sync_pipeline_tests.e2e.harness import DAY, at

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]

RUN_ONE_PARTITION = """
import sys, dagster as dg
from sync_pipeline.definitions import ALL_ASSETS, build_resources
result = dg.materialize(ALL_ASSETS, partition_key=sys.argv[1], resources=build_resources(),
                        instance=dg.DagsterInstance.get())
sys.exit(0 if result.success else 1)
"""


def _pipeline_env(tmp_path: Path, *sandboxes) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    for sandbox in sandboxes:
        env.update(sandbox.env())
    return env


def _netsuite_stats(netsuite) -> dict:
    return requests.get(f"{netsuite.url}/_sandbox/stats", timeout=10).json()


def test_run_killed_mid_write_then_rerun_leaves_every_record_once(tmp_path):
    stripe = start_stripe()
    # NetSuite holds every write after the 10 customers and 40 of the 150 invoices: the run is killed at
    # exactly that point on any machine, instead of "some time after 40", which a busy one could overshoot.
    netsuite = start_netsuite(hold_writes_after=50)
    try:
        invoice_ids = seed_paid_invoices(
            stripe.state, stripe.config, 150, customers=10, start=at(DAY, 1), spacing_seconds=60
        )
        env = _pipeline_env(tmp_path, stripe, netsuite)
        run = subprocess.Popen(
            [sys.executable, "-c", RUN_ONE_PARTITION, DAY.isoformat()],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        # Kill the whole run (process group) once it is stuck on a held write: mid-write, with requests in flight.
        deadline = time.monotonic() + 120
        while not (stats := _netsuite_stats(netsuite))["writes_held"]:
            assert run.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, f"the run never reached the held write: {stats['writes_applied']}"
            time.sleep(0.05)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=30)
        assert _netsuite_stats(netsuite)["writes_by_record_type"] == {"customer": 10, "invoice": 40}
        assert requests.get(f"{netsuite.url}/_sandbox/records/invoice", timeout=10).json()["count"] == 40
        # Writes the dead run had in flight now land, answered to no one: the re-run must not add them again.
        netsuite.config.update({"hold_writes_after": 0})
        # What the daemon's run monitoring does for a run whose process died (dagster.yaml: run_monitoring):
        # mark it failed and hand back its `netsuite_api` pool slot.
        instance = dg.DagsterInstance.from_config(env["DAGSTER_HOME"])
        for dead in instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED])):
            instance.report_run_failed(dead)
            instance.event_log_storage.free_concurrency_slots_for_run(dead.run_id)
        instance.dispose()

        rerun = subprocess.Popen(
            [sys.executable, "-c", RUN_ONE_PARTITION, DAY.isoformat()],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            _, stderr = rerun.communicate(timeout=300)
        finally:
            if rerun.poll() is None:  # never leave a stuck run behind (it would wait on its pool slot forever)
                os.killpg(rerun.pid, signal.SIGKILL)
                rerun.wait()

        assert rerun.returncode == 0, stderr[-3000:]
        records = requests.get(f"{netsuite.url}/_sandbox/records/invoice", timeout=10).json()["records"]
        external_ids = [r["externalId"] for r in records]
        assert sorted(external_ids) == sorted(f"stripe-{i}" for i in invoice_ids)  # none missing, none twice
        payments = requests.get(f"{netsuite.url}/_sandbox/records/customerPayment", timeout=10).json()
        assert payments["count"] == 150
    finally:
        netsuite.config.update({"hold_writes_after": 0})  # a held request would keep the server from stopping
        stripe.stop()
        netsuite.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_dev_serves_the_asset_graph_and_stops_with_its_children(tmp_path):
    stripe = start_stripe()
    netsuite = start_netsuite()
    port = _free_port()
    env = _pipeline_env(tmp_path, stripe, netsuite)
    dev = subprocess.Popen(
        [sys.executable, "-m", "sync_pipeline.cli", "dev", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert dev.poll() is None, "sync-pipeline dev exited early"
            time.sleep(0.5)
        query = {"query": "{ assetNodes { assetKey { path } } }"}
        nodes = requests.post(f"http://127.0.0.1:{port}/graphql", json=query, timeout=30).json()["data"]["assetNodes"]
        keys = {n["assetKey"]["path"][-1] for n in nodes}
        assert {"stripe_invoices", "netsuite_sync_plan", "netsuite_invoices", "sync_exceptions"} <= keys
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        finally:
            try:
                os.killpg(dev.pid, signal.SIGKILL)  # nothing should be left; never leak a daemon
            except ProcessLookupError:
                pass
            stripe.stop()
            netsuite.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/server_info", timeout=2)
