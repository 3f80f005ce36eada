"""`sync-pipeline backfill` as a user runs it: submitted to a running Dagster (its default path), followed to the end.

The deployment is Dagster's production topology on 127.0.0.1 (`harness.production_topology`: PostgreSQL storage on
deploy/dagster-postgres.yaml, `dagster api grpc`, `dagster-daemon run`, `dagster-webserver`), the stand-ins play
Stripe and NetSuite with three past days of paid invoices. The command runs as its own process with the pipeline's
settings (the code server's environment) and finds the webserver by DAGSTER_WEBSERVER_URL, as a shell beside a
deployment would (`--url` says the same). It submits the range through the webserver's GraphQL
`launchPartitionBackfill`; the daemon launches it as one run (the assets' single-run backfill policy); the command
prints its progress until it ends. The UI's backfill page reads the same `partitionBackfillOrError`.
"""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator

import pytest
import requests
import stripe

from sync_pipeline.backfill_cli import RANGE_END_TAG, RANGE_START_TAG
from sync_pipeline_tests.e2e.harness import BIN, Sandbox, Topology, production_topology, seed_paid_days

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]

TODAY = dt.datetime.now(dt.UTC).date()
DAYS = [TODAY - dt.timedelta(days=n) for n in (4, 3, 2)]
NETSUITE_CONCURRENCY = 4
# The command's own limit: a backfill of three small days takes well under this on a busy 2-core machine.
BACKFILL_TIMEOUT = 300
# Seconds between the command's progress lines (5 by default): several lines even for a short backfill.
POLL = "1"

BACKFILL_QUERY = """
query Backfill($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      id status numPartitions partitionNames
      runs(limit: 10) { runId status tags { key value } }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts {
            assetKey { path } numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed
          }
        }
      }
    }
    ... on PythonError { message }
  }
}"""


def seed_three_days(sandbox: Sandbox) -> dict[dt.date, list[stripe.Invoice]]:
    """Each day: a customer of its own with two paid invoices."""
    return seed_paid_days(sandbox, DAYS, "Backfill Customer", [10000, 20000])


@pytest.fixture(scope="module")
def deployment(postgres_admin_url, tmp_path_factory) -> Iterator[tuple[Topology, dict]]:
    """The topology running, and the invoices of each day."""
    with production_topology(
        postgres_admin_url, tmp_path_factory.mktemp("backfill_submitted"), seed_three_days, NETSUITE_CONCURRENCY
    ) as running:
        yield running


def backfill_command(topology: Topology, *extra: str, timeout: float = BACKFILL_TIMEOUT) -> tuple[int, str, float]:
    """`sync-pipeline backfill` over the three days in a shell beside the deployment: exit code, output, seconds."""
    env = {**topology.code_env, "DAGSTER_WEBSERVER_URL": topology.webserver_url}
    argv = [str(BIN / "sync-pipeline"), "backfill", "--from", DAYS[0].isoformat(), "--to", DAYS[-1].isoformat()]
    started = time.monotonic()
    try:
        done = subprocess.run(
            [*argv, *extra], env=env, cwd=topology.logs, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        raise AssertionError(
            f"sync-pipeline backfill still running after {timeout} s\n{topology.log_tails()}"
        ) from error
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def backfill_id_in(output: str) -> str:
    found = re.search(r"^Backfill (\S+) submitted: 3 day\(s\)", output, re.MULTILINE)
    assert found, output
    return found.group(1)


def backfill(topology: Topology, backfill_id: str) -> dict:
    answer = topology.graphql(BACKFILL_QUERY, {"id": backfill_id})["partitionBackfillOrError"]
    assert answer["__typename"] == "PartitionBackfill", answer
    return answer


def external_ids(sandbox: Sandbox, record_type: str) -> Counter:
    """How many records NetSuite holds under each external id (a duplicate counts twice)."""
    body = requests.get(f"{sandbox.netsuite_url}/_sandbox/records/{record_type}", timeout=10).json()
    return Counter(r["externalId"] for r in body["records"] if r.get("externalId"))


def test_backfill_is_submitted_to_the_webserver_run_once_and_followed_to_the_end(deployment):
    topology, seeded = deployment
    sandbox = topology.sandbox
    before = sandbox.netsuite_writes()

    code, output, _ = backfill_command(topology, "--poll", POLL)

    assert code == 0, f"{output}\n{topology.log_tails()}"
    backfill_id = backfill_id_in(output)
    assert f"{topology.webserver_url}/overview/backfills/{backfill_id}" in output
    # Lines as "0/3 days done (9/16 steps, now netsuite_invoices), 12 of 36 NetSuite writes, 3.1 writes/s, about
    # ...", the last one "3/3 days done (16/16 steps), 36 NetSuite writes in 41 s, 0.9 writes/s".
    progress = re.findall(
        r"^(\d+)/3 days done(?: \((\d+)/(\d+) steps[^)]*\))?, ([\d,]+)(?: of ([\d,]+))? NetSuite writes"
        r"(?: in [^,]+)?, ([\d.]+) writes/s",
        output,
        re.MULTILINE,
    )
    assert len(progress) >= 2, output
    days_done, steps_done, steps, writes, _, per_second = progress[-1]
    assert days_done == "3", output
    assert int(steps) > 1 and steps_done == steps, output
    assert float(per_second) > 0, output
    written = sandbox.netsuite_writes() - before
    # The command counts the ledger's rows of the backfill's run: NetSuite's own count of the writes it applied.
    assert int(writes.replace(",", "")) == written > 0, output
    # And the time left was reckoned from the writes the day plans announced: all of them.
    announced = {int(line[4].replace(",", "")) for line in progress if line[4]}
    assert announced == {written}, output
    assert re.search(rf"^Backfill {backfill_id}: completed, 0 day\(s\) failed\.$", output, re.M), output

    # What the UI's backfill page shows: completed, the three days of every asset materialized.
    shown = backfill(topology, backfill_id)
    assert shown["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), shown
    assert sorted(shown["partitionNames"]) == [d.isoformat() for d in DAYS]
    statuses = shown["assetBackfillData"]["assetBackfillStatuses"]
    assert statuses
    for status in statuses:
        assert (
            status["numPartitionsTargeted"],
            status["numPartitionsMaterialized"],
            status["numPartitionsFailed"],
        ) == (
            3,
            3,
            0,
        ), status
    # One run did the three days (the assets' single-run backfill policy), and no other run was needed.
    (run,) = shown["runs"]
    assert run["status"] == "SUCCESS", topology.errors_of(run["runId"])
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert (tags[RANGE_START_TAG], tags[RANGE_END_TAG]) == (DAYS[0].isoformat(), DAYS[-1].isoformat())
    assert [r["runId"] for r in topology.runs({"dagster/backfill": backfill_id})] == [run["runId"]]

    # Every record once in NetSuite: each day's customer, invoices and payments.
    invoices = [i for day in DAYS for i in seeded[day]]
    assert external_ids(sandbox, "invoice") == Counter(f"stripe-{i.id}" for i in invoices)
    assert external_ids(sandbox, "customer") == Counter(f"stripe-{i.customer}" for i in invoices[::2])
    payments = external_ids(sandbox, "customerPayment")
    assert len(payments) == len(invoices) and set(payments.values()) == {1}, payments


def test_no_wait_returns_with_the_backfill_id_and_the_same_range_again_writes_nothing(deployment):
    topology, _ = deployment
    sandbox = topology.sandbox
    before = sandbox.netsuite_writes()

    code, output, seconds = backfill_command(topology, "--no-wait", timeout=120)

    assert code == 0, output
    backfill_id = backfill_id_in(output)
    assert "days done" not in output, "--no-wait follows nothing"
    shown = backfill(topology, backfill_id)
    assert shown["status"] not in ("COMPLETED", "COMPLETED_SUCCESS"), f"returned after the backfill ({seconds:.0f} s)"

    done = topology.wait_for(
        "the second backfill to end",
        lambda: (b := backfill(topology, backfill_id))["status"] not in ("REQUESTED", "CANCELING", "FAILING") and b,
    )
    assert done["status"] in ("COMPLETED", "COMPLETED_SUCCESS"), done
    (run,) = done["runs"]
    assert run["status"] == "SUCCESS", topology.errors_of(run["runId"])
    assert sandbox.netsuite_writes() == before, "a second backfill of the same range wrote to NetSuite"
