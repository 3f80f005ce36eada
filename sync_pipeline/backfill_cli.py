"""`sync-pipeline backfill --from D --to D [--account NAME]`: a range of days into NetSuite through Dagster.

The days are submitted as one Dagster asset backfill of the account's daily assets (the UI's backfill page shows
it), which their backfill policy runs as one run over the whole range (`daily_ranges.py`), its steps in one process
(no process per step). The command then follows it until it ends: days done, NetSuite writes and writes per second
(the ledger's rows of the backfill's run), and the time left at that rate for the writes the plan announced.
`--in-process` runs the range here instead, against the Dagster instance of DAGSTER_HOME, for a shell where no
Dagster is running; the run is in the UI's run list all the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sync_pipeline import settings
from sync_pipeline.stripe_accounts import StripeAccount, configured_accounts

BACKFILL_TRIGGER = "backfill"
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
# One process for the run's steps: a step per process costs seconds each, and the NetSuite steps run one at a time
# anyway (pool netsuite_api).
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
# The plans announce per day what the writers will create or update (the rest is unchanged in the ledger).
PLAN_ASSETS = ("netsuite_sync_plan", "netsuite_deposit_plan")
WOULD_WRITE = ("would_create", "would_update")
POLL_SECONDS = 5.0


def _fail(message: str, code: int = 2) -> int:
    print(f"sync-pipeline backfill: {message}", file=sys.stderr)
    return code


def days_between(start: str, end: str, first_day: str, today: dt.date) -> list[str]:
    """The days of a backfill, first to last; ValueError saying what is wrong with the range."""
    try:
        first, last = dt.date.fromisoformat(start), dt.date.fromisoformat(end)
    except ValueError:
        raise ValueError(f"--from and --to take days as YYYY-MM-DD, not {start!r} and {end!r}") from None
    if last < first:
        raise ValueError(f"--to {end} is before --from {start}")
    if first < dt.date.fromisoformat(first_day):
        raise ValueError(f"--from {start} is before SYNC_START_DATE ({first_day}), the first day the pipeline syncs")
    if last > today:
        raise ValueError(f"--to {end} is after today ({today.isoformat()} UTC): that day has no partition yet")
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


@dataclass(frozen=True)
class Progress:
    """Where a backfill is: days every asset has done, NetSuite writes so far, and those the plans announced."""

    days: int
    days_done: int
    writes: int
    seconds: float
    expected_writes: int | None = None
    # The run's steps done, of all, and those running now: what moves while the days done cannot (one run takes
    # each asset, one after the other, through the whole range, so every asset has done a day only at the end).
    steps_done: int | None = None
    steps: int | None = None
    running: tuple[str, ...] = ()

    @property
    def writes_per_second(self) -> float:
        return self.writes / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        """At the rate so far, for the writes the plans announced; None before the plans are done or any write
        (0 when none are left, as on a re-run that has nothing to write)."""
        if self.expected_writes is None:
            return None
        left = max(0, self.expected_writes - self.writes)
        if not left:
            return 0.0
        return left / self.writes_per_second if self.writes else None

    def line(self, final: bool = False) -> str:
        steps = ""
        if self.steps:
            now = f", now {', '.join(self.running)}" if self.running and not final else ""
            steps = f" ({self.steps_done}/{self.steps} steps{now})"
        if final:
            return (
                f"{self.days_done}/{self.days} days done{steps}, {self.writes:,} NetSuite writes in "
                f"{_duration(self.seconds)}, {self.writes_per_second:.1f} writes/s"
            )
        left = self.seconds_left
        if left is None:
            eta = "time left: after the first writes" if self.expected_writes is None else "time left: estimating"
        elif not left:
            eta = "no writes left"
        else:
            eta = f"about {_duration(left)} left"
        expected = f" of {self.expected_writes:,}" if self.expected_writes is not None else ""
        return (
            f"{self.days_done}/{self.days} days done{steps}, {self.writes:,}{expected} NetSuite writes, "
            f"{self.writes_per_second:.1f} writes/s, {eta} ({_duration(self.seconds)} so far)"
        )


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def expected_writes(plan_metadata: Iterable[Mapping[str, object]]) -> int:
    """What the plans of the range's days announced the writers would create or update."""
    return sum(int(meta.get(key) or 0) for meta in plan_metadata for key in WOULD_WRITE)


def _account(name: str | None) -> StripeAccount:
    accounts = configured_accounts()
    if not name:
        return accounts[0]
    for account in accounts:
        if account.name == name:
            return account
    known = ", ".join(a.name for a in accounts if a.name) or "none: SYNC_STRIPE_ACCOUNTS is not set"
    raise ValueError(f"--account {name}: not a Stripe account of this deployment ({known})")


def range_assets(account: StripeAccount):
    """The account's daily assets, the selection a backfill runs."""
    from sync_pipeline.definitions import daily_assets

    return daily_assets(settings.start_date(), account)


def materialize_range(days: Sequence[str], account: StripeAccount, instance=None, raise_on_error: bool = False):
    """The account's daily assets over `days` (first to last) as one run in this process."""
    import dagster as dg

    from sync_pipeline.definitions import build_resources
    from sync_pipeline.jobs import TRIGGER_TAG

    return dg.materialize(
        range_assets(account),
        resources=build_resources(),
        instance=instance,
        raise_on_error=raise_on_error,
        tags={RANGE_START_TAG: days[0], RANGE_END_TAG: days[-1], TRIGGER_TAG: BACKFILL_TRIGGER},
    )


def _ledger_writes(run_ids: Sequence[str]) -> int:
    """NetSuite records the runs wrote, as the ledger holds them (each record's latest write names its run)."""
    import sqlalchemy as sa

    from sync_pipeline.resources.ledger import Ledger, sync_ledger

    if not run_ids:
        return 0
    ledger = Ledger(settings.database_url())
    query = sa.select(sa.func.count()).select_from(sync_ledger).where(sync_ledger.c.run_id.in_(list(run_ids)))
    with ledger.engine.connect() as connection:
        return int(connection.execute(query).scalar_one())


# -- submitted to the Dagster webserver ---------------------------------------------------------------------------

LAUNCH = """
mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on UnauthorizedError { message }
  }
}"""

STATUS = """
query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill {
      status
      runs(limit: 100) { runId status }
      assetBackfillData {
        assetBackfillStatuses {
          ... on AssetPartitionsStatusCounts { numPartitionsTargeted numPartitionsMaterialized numPartitionsFailed }
        }
      }
    }
    ... on PythonError { message }
  }
}"""

RUN_STEPS = """
query($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run {
      stepStats { stepKey status }
      executionPlan { steps { key } }
      assetMaterializations { assetKey { path } partition }
    }
  }
}"""
STEP_ENDED = {"SUCCESS", "FAILURE", "SKIPPED"}

PLAN_METADATA = """
query($key: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $key) {
    ... on Asset {
      assetMaterializations(partitions: $partitions) {
        runId
        metadataEntries { label ... on IntMetadataEntry { intValue } }
      }
    }
  }
}"""

# A backfill's statuses once it has ended (BulkActionStatus), as the command says them.
FINISHED = {
    "COMPLETED": "completed",
    "COMPLETED_SUCCESS": "completed",
    "COMPLETED_FAILED": "completed with failures",
    "FAILED": "failed",
    "CANCELED": "canceled",
}


def _graphql(url: str) -> Callable[[str, dict], dict]:
    import requests

    from sync_pipeline.exceptions_cli import _webserver

    _webserver(url)  # says clearly when no Dagster webserver answers there

    def call(query: str, variables: dict) -> dict:
        answer = requests.post(f"{url.rstrip('/')}/graphql", json={"query": query, "variables": variables}, timeout=60)
        try:
            body = answer.json()
        except ValueError:
            answer.raise_for_status()
            raise
        if body.get("errors"):
            raise RuntimeError(f"the Dagster webserver answered: {body['errors'][0].get('message')}")
        # A mutation that failed (a PythonError) comes as HTTP 500 with its error type in the data: the caller
        # reads it there and says what it is.
        if not body.get("data"):
            answer.raise_for_status()
        return body["data"]

    return call


def submit(call: Callable[[str, dict], dict], days: Sequence[str], account: StripeAccount) -> str:
    """An asset backfill of the account's daily assets over `days`; its id."""
    from sync_pipeline.jobs import TRIGGER_TAG

    keys = [key for asset in range_assets(account) for key in asset.keys if asset.partitions_def is not None]
    params = {
        "assetSelection": [{"path": key.path} for key in keys],
        "partitionNames": list(days),
        "tags": [{"key": TRIGGER_TAG, "value": BACKFILL_TRIGGER}],
        "runConfigData": IN_PROCESS,
        "title": f"Stripe{' ' + account.name if account.name else ''} → NetSuite {days[0]} to {days[-1]}",
    }
    launched = call(LAUNCH, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        raise RuntimeError((launched.get("message") or launched["__typename"]).strip())
    return launched["backfillId"]


def _plan_metadata(call, account: StripeAccount, days: Sequence[str], run_ids: set[str]) -> list[dict] | None:
    """Each day's plan metadata from the backfill's run(s); None until every day of both plans is there."""
    found = []
    for name in PLAN_ASSETS:
        path = [account.prefix, name] if account.prefix else [name]
        asset = call(PLAN_METADATA, {"key": {"path": path}, "partitions": list(days)})["assetOrError"] or {}
        mine = [m for m in asset.get("assetMaterializations") or [] if m["runId"] in run_ids]
        if len(mine) < len(days):
            return None
        found += [{e["label"]: e.get("intValue") for e in m["metadataEntries"]} for m in mine]
    return found


@dataclass(frozen=True)
class RunsProgress:
    """Where the backfill's runs are, as their own events say (the backfill's counts lag behind them)."""

    steps_done: int
    steps: int
    running: tuple[str, ...]
    days_materialized: dict[tuple[str, ...], set[str]]

    def days_done(self, assets: int) -> int:
        """Days every one of the backfill's `assets` has materialized in these runs."""
        if not assets or len(self.days_materialized) < assets:
            return 0
        return min(len(days) for days in self.days_materialized.values())


def _runs_progress(call, run_ids: Sequence[str]) -> RunsProgress:
    ended, planned, running = 0, 0, []
    days: dict[tuple[str, ...], set[str]] = {}
    for run_id in run_ids:
        run = call(RUN_STEPS, {"runId": run_id})["runOrError"]
        if run["__typename"] != "Run":
            continue
        planned += len((run.get("executionPlan") or {}).get("steps") or [])
        for step in run["stepStats"] or []:
            ended += step["status"] in STEP_ENDED
            if step["status"] == "IN_PROGRESS":
                running.append(step["stepKey"])
        for event in run.get("assetMaterializations") or []:
            if event.get("partition"):
                days.setdefault(tuple(event["assetKey"]["path"]), set()).add(event["partition"])
    return RunsProgress(ended, planned, tuple(running), days)


def follow(call, backfill_id: str, days: Sequence[str], account: StripeAccount, poll: float = POLL_SECONDS) -> bool:
    """Print the backfill's progress until it ends; whether every day synced."""
    started = time.monotonic()
    expected = None
    while True:
        backfill = call(STATUS, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise RuntimeError(backfill.get("message") or backfill["__typename"])
        run_ids = {r["runId"] for r in backfill["runs"] or []}
        counts = [s for s in backfill["assetBackfillData"]["assetBackfillStatuses"] if "numPartitionsTargeted" in s]
        failed = max((s["numPartitionsFailed"] for s in counts), default=0)
        # The backfill's counts move when the daemon next looks at its runs (up to half a minute after); the run's
        # own events as it goes: its steps, and each asset's days (recorded when its step is through the range).
        runs = _runs_progress(call, sorted(run_ids))
        done = max(min((s["numPartitionsMaterialized"] for s in counts), default=0), runs.days_done(len(counts)))
        if expected is None and run_ids:
            plans = _plan_metadata(call, account, days, run_ids)
            expected = None if plans is None else expected_writes(plans)
        writes = _ledger_writes(sorted(run_ids))
        seconds = time.monotonic() - started
        progress = Progress(len(days), done, writes, seconds, expected, runs.steps_done, runs.steps, runs.running)
        ended = FINISHED.get(backfill["status"])
        print(progress.line(final=ended is not None), flush=True)
        if ended is not None:
            print(f"Backfill {backfill_id}: {ended}, {failed} day(s) failed.")
            return failed == 0 and done == len(days) and ended == "completed"
        time.sleep(poll)


# -- the command ---------------------------------------------------------------------------------------------------


def run_backfill(args: argparse.Namespace) -> int:
    problems = settings.check_configuration()
    if problems:
        return _fail(settings.first_problem(problems))
    try:
        account = _account(args.account)
        days = days_between(args.start, args.end, settings.start_date(), dt.datetime.now(dt.UTC).date())
    except ValueError as error:
        return _fail(str(error))
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home().resolve()))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    label = f"{len(days)} day(s), {days[0]} to {days[-1]}" + (
        f", Stripe account {account.name}" if account.name else ""
    )
    if args.in_process:
        return _in_process(days, account, label)
    try:
        call = _graphql(args.url)
    except Exception as error:  # noqa: BLE001 - no webserver listening, or not a Dagster one: say so, and the way out
        return _fail(
            f"no Dagster webserver answered at {args.url} ({type(error).__name__}): start it with "
            "`sync-pipeline dev` (make dev) or pass --url, or run the range here with --in-process"
        )
    try:
        backfill_id = submit(call, days, account)
    except RuntimeError as error:
        return _fail(
            f"the Dagster webserver at {args.url} did not take the backfill: {error} (an unknown asset key means "
            "its code location is older than this command's: reload it)"
        )
    page = f"{args.url.rstrip('/')}/overview/backfills/{backfill_id}"
    print(f"Backfill {backfill_id} submitted: {label}; in the UI at {page}")
    if args.no_wait:
        return 0
    return 0 if follow(call, backfill_id, days, account, args.poll) else 1


def _in_process(days: Sequence[str], account: StripeAccount, label: str) -> int:
    import dagster as dg

    print(f"Backfill in this process: {label}")
    started = time.monotonic()
    result = materialize_range(days, account, instance=dg.DagsterInstance.get())
    done = len({m.partition for m in result.asset_materializations_for_node("sync_exceptions")})
    print(Progress(len(days), done, _ledger_writes([result.run_id]), time.monotonic() - started).line(final=True))
    print(f"Run {result.run_id}: {'succeeded' if result.success else 'FAILED (see it in the UI)'}")
    return 0 if result.success else 1


def add_backfill_parser(subparsers: argparse._SubParsersAction) -> None:
    from sync_pipeline.exceptions_cli import DEFAULT_DAGSTER_URL

    parser = subparsers.add_parser(
        "backfill",
        help="sync a range of days (the history, a re-run) into NetSuite through Dagster, as one run, and follow it: "
        "days done, NetSuite writes/s, time left",
        description="Submit the days --from to --to (UTC, both included) as one Dagster backfill of the Stripe → "
        "NetSuite assets (one run for the range; the UI's backfill page shows it) and print its progress until it "
        "ends: exit 1 if any day failed. --in-process runs it here against DAGSTER_HOME's instance instead.",
    )
    parser.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first day")
    parser.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD", help="last day (included)")
    parser.add_argument("--account", metavar="NAME", help="the Stripe account (SYNC_STRIPE_ACCOUNTS); default: first")
    parser.add_argument(
        "--url",
        default=os.environ.get("DAGSTER_WEBSERVER_URL", DEFAULT_DAGSTER_URL),
        help=f"the Dagster webserver to submit to (default DAGSTER_WEBSERVER_URL or {DEFAULT_DAGSTER_URL})",
    )
    parser.add_argument("--in-process", action="store_true", help="run here (no Dagster daemon needed) and wait")
    parser.add_argument("--no-wait", action="store_true", help="submit and return without following it")
    parser.add_argument("--poll", type=float, default=POLL_SECONDS, help="seconds between progress lines")
    parser.set_defaults(func=run_backfill)
