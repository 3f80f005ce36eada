"""`sync-pipeline exceptions`: the exceptions worklist from a shell, and re-running what a fix affects.

`exceptions` reads the ledger's `sync_exceptions` table (SYNC_DATABASE_URL) and prints every exception of every
day and of none, oldest first, the way the `open_exceptions_worklist` asset shows them: record, field, value,
Stripe customer and amount, age, occurrences and the fix. `--open` lists the open ones only and exits 1 when
there is any, so a cron job can alert on it.

`exceptions retry` re-runs, through Dagster, what the open exceptions belong to once their fix is in place
(usually a line of field_mapping.yaml): one `stripe_to_netsuite` run per day that has any, and one
`salesforce_to_stripe` run for those of no day (billing and the write-back). A record that then syncs closes its
exception. The runs are submitted to the Dagster webserver (`sync-pipeline dev` / `make dev`), which queues them
for its daemon like any run launched from the UI; `--in-process` runs them here instead, one after the other,
against the same Dagster instance (DAGSTER_HOME), for a shell where no Dagster is running. Either way the runs
are in the UI's run list, tagged `sync_pipeline/trigger=exceptions-retry`.

With several Stripe accounts (SYNC_STRIPE_ACCOUNTS) the list has an `account` column, each exception's account
told by its external id (`stripe-eu-...`), and `retry` runs each account's own job (`stripe_eu_to_netsuite`) for
its days; `--account NAME` narrows either to one account.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd

from sync_pipeline import settings
from sync_pipeline.mapping.external_ids import account_of_external_id
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline.stripe_accounts import StripeAccount, add_account_argument, configured_accounts, selected_account
from sync_pipeline.writers.report import worklist_frame

RETRY_TRIGGER = "exceptions-retry"
DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"
# What the table format shows per row; the fix follows the table, numbered, because it is a sentence.
TABLE_COLUMNS = ["#", "error_code", "record", "day", "field", "value", "stripe_customer", "amount", "age", "seen"]
# Ledger targets whose exceptions a `stripe_to_netsuite` run of their day retries; the others belong to no day.
NETSUITE_TARGET = "netsuite"


def _fail(message: str, code: int = 2) -> int:
    print(f"sync-pipeline exceptions: {message}", file=sys.stderr)
    return code


def _ledger() -> Ledger:
    return Ledger(settings.database_url())


def _accounts(name: str | None) -> tuple[list[StripeAccount], bool]:
    """The accounts `--account` selects (all when None), and whether the deployment has several."""
    chosen = selected_account(name)  # also checks SYNC_STRIPE_ACCOUNTS
    every = configured_accounts()
    return ([chosen] if name else every), len(every) > 1


def _scoped(ledger: Ledger, accounts: Sequence[StripeAccount]) -> Ledger:
    """The ledger as one selected account sees it; every account's rows when all are selected."""
    return ledger.for_account(accounts[0].prefix) if len(accounts) == 1 else ledger


def _table(frame: pd.DataFrame, open_only: bool) -> str:
    what = "open exception(s)" if open_only else "exception(s), open and resolved"
    if frame.empty:
        return "No open exceptions." if open_only else "No exceptions."
    rows = [
        {
            "#": str(n),
            **({"account": r.account} if "account" in frame else {}),
            "error_code": r.error_code + ("" if not r.resolved_at else " (resolved)"),
            "record": f"{r.record_type} {r.external_id}",
            "day": r.day or "(none)",
            "field": r.field,
            "value": r.value,
            "stripe_customer": r.stripe_customer,
            "amount": r.amount,
            "age": r.age,
            "seen": f"{r.occurrences}×",
        }
        for n, r in enumerate(frame.itertuples(index=False), start=1)
    ]
    columns = [*TABLE_COLUMNS[:1], *(["account"] if "account" in frame else []), *TABLE_COLUMNS[1:]]
    table = pd.DataFrame(rows, columns=columns).to_markdown(index=False, disable_numparse=True)
    fixes = "\n".join(f"  #{n} {r.fix}" for n, r in enumerate(frame.itertuples(index=False), start=1))
    return f"{len(frame)} {what}, oldest first:\n\n{table}\n\nFixes:\n{fixes}"


def run_exceptions(args: argparse.Namespace) -> int:
    """Print the worklist; with --open, exit 1 when any exception is open."""
    open_only = bool(getattr(args, "open_only", False))
    accounts, several = _accounts(args.account)
    frame = worklist_frame(_scoped(_ledger(), accounts).exceptions(open_only=open_only, error_code=args.code))
    if several:
        # Whose exception: the account its external id names (Salesforce-side ones are the default account's,
        # which billing uses).
        default = configured_accounts()[0].name
        frame.insert(0, "account", [account_of_external_id(e) or default for e in frame["external_id"]])
    if args.format == "json":
        print(json.dumps(frame.to_dict("records"), ensure_ascii=False, indent=2))
    elif args.format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=list(frame.columns), lineterminator="\n")
        writer.writeheader()
        writer.writerows(frame.to_dict("records"))
    else:
        print(_table(frame, open_only))
    return 1 if open_only and not frame.empty else 0


# -- retry ---------------------------------------------------------------------------------------------------------


def affected_runs(rows: Sequence[dict]) -> tuple[list[str], bool]:
    """The days whose `stripe_to_netsuite` run retries the exceptions `rows`, and whether a `salesforce_to_stripe`
    run is needed for those of no day."""
    days = sorted({r["partition_key"] for r in rows if r["target"] == NETSUITE_TARGET and r["partition_key"]})
    billing = any(r["target"] != NETSUITE_TARGET for r in rows)
    return days, billing


def _webserver(url: str):
    """A GraphQL client of the Dagster webserver at `url`; raises when no Dagster webserver answers there (the
    client itself would only fail at the first query, with the query in its message)."""
    import requests
    from dagster_graphql import DagsterGraphQLClient

    answer = requests.get(f"{url.rstrip('/')}/server_info", timeout=10)
    answer.raise_for_status()
    if "dagster_webserver_version" not in answer.json():
        raise ValueError("it is not a Dagster webserver")
    parts = urlsplit(url)
    return DagsterGraphQLClient(
        parts.hostname or "127.0.0.1",
        port_number=parts.port,
        use_https=parts.scheme == "https",
        timeout=30,
        path_prefix=parts.path.rstrip("/"),
    )


def _execute(job: str, partition: str | None) -> tuple[str, bool]:
    """Run `job` in this process against the Dagster instance of DAGSTER_HOME; its run id and success."""
    import dagster as dg

    from sync_pipeline.definitions import defs
    from sync_pipeline.jobs import TRIGGER_TAG

    result = (
        defs()
        .resolve_job_def(job)
        .execute_in_process(
            partition_key=partition,
            instance=dg.DagsterInstance.get(),
            raise_on_error=False,
            tags={TRIGGER_TAG: RETRY_TRIGGER},
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    )
    return result.run_id, result.success


def run_retry(args: argparse.Namespace) -> int:
    """Re-run the days (and the billing) of the open exceptions, through Dagster; print each run id."""
    from sync_pipeline.jobs import SALESFORCE_TO_STRIPE_JOB, STRIPE_TO_NETSUITE_JOB

    accounts, _ = _accounts(args.account)
    ledger = _scoped(_ledger(), accounts)
    rows = ledger.exceptions(open_only=True, error_code=args.code)
    of_code = f" of code {args.code.upper()}" if args.code else ""
    if not rows:
        print(f"No open exceptions{of_code}: nothing to retry.")
        return 0
    _, billing = affected_runs(rows)
    runs: list[tuple[str, str | None]] = []
    for account in accounts:
        # Each account's days through its own job, which reads its own Stripe account.
        days, _ = affected_runs([r for r in rows if account_of_external_id(r["external_id"]) == account.prefix])
        runs += [(account.qualified(STRIPE_TO_NETSUITE_JOB), day) for day in days]
    unlisted = sorted({account_of_external_id(r["external_id"]) for r in rows} - {a.prefix for a in accounts})
    if unlisted:
        print(
            f"Open exceptions of Stripe account(s) {', '.join(unlisted)}, which SYNC_STRIPE_ACCOUNTS does not list: "
            "not retried.",
            file=sys.stderr,
        )
    if billing:
        if settings.is_set("SALESFORCE_INSTANCE_URL"):
            runs.append((SALESFORCE_TO_STRIPE_JOB, None))
        else:
            print(
                "Billing and write-back exceptions are open, but Salesforce is not configured "
                "(SALESFORCE_INSTANCE_URL): salesforce_to_stripe is not run.",
                file=sys.stderr,
            )
    if not runs:
        return _fail(f"the {len(rows)} open exception(s){of_code} belong to no run this command can start", 1)
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home().resolve()))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    print(f"Retrying {len(rows)} open exception(s){of_code}: {len(runs)} run(s).")
    return _retry_in_process(ledger, rows, runs, args.code) if args.in_process else _retry_submitted(args.url, runs)


def _label(job: str, partition: str | None) -> str:
    return f"{job} {partition}" if partition else job


def _retry_submitted(url: str, runs: Sequence[tuple[str, str | None]]) -> int:
    from dagster_graphql import DagsterGraphQLClientError

    from sync_pipeline.jobs import TRIGGER_TAG

    try:
        client = _webserver(url)
    except Exception as error:  # noqa: BLE001 - no webserver listening, or not a Dagster one: say so, and the way out
        return _fail(
            f"no Dagster webserver answered at {url} ({type(error).__name__}): start it with "
            "`sync-pipeline dev` (make dev) or pass --url, or run the days here with --in-process"
        )
    failed = 0
    for job, partition in runs:
        tags = {TRIGGER_TAG: RETRY_TRIGGER, **({"dagster/partition": partition} if partition else {})}
        try:
            run_id = client.submit_job_execution(job, tags=tags)
        except DagsterGraphQLClientError as error:
            failed += 1
            why = str(error).strip().splitlines()[0] + (f" ({error.__cause__})" if error.__cause__ else "")
            print(f"  {_label(job, partition)}: not submitted: {why}", file=sys.stderr)
        else:
            print(f"  {_label(job, partition)}: submitted, run {run_id}")
    if failed < len(runs):
        print(f"Queued for the Dagster daemon; follow them at {url.rstrip('/')}/runs")
    return 1 if failed else 0


def _retry_in_process(
    ledger: Ledger, rows: Sequence[dict], runs: Sequence[tuple[str, str | None]], code: str | None
) -> int:
    failed = 0
    for job, partition in runs:
        run_id, success = _execute(job, partition)
        failed += not success
        print(f"  {_label(job, partition)}: run {run_id} {'succeeded' if success else 'FAILED (see it in the UI)'}")
    still_open = {r["id"] for r in ledger.exceptions(open_only=True, error_code=code)}
    remaining = [r for r in rows if r["id"] in still_open]
    print(f"Resolved {len(rows) - len(remaining)} of {len(rows)}; still open: {len(remaining)}.")
    for r in remaining:
        print(f"  {r['error_code']} {r['record_type']} {r['external_id']}: {r['fix']}")
    return 1 if failed or remaining else 0


def add_exceptions_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register `exceptions` and `exceptions retry` on the top-level command's subparsers."""
    parser = subparsers.add_parser(
        "exceptions",
        help="the exceptions worklist: every sync exception of every day, with its field, value, Stripe customer "
        "and amount, age, occurrences and fix; --open exits 1 when any is open",
        description="List the sync exceptions (the ledger's sync_exceptions, oldest first). "
        "`exceptions retry` re-runs the days they belong to once fixed.",
    )
    parser.add_argument("--open", dest="open_only", action="store_true", help="open ones only; exit 1 if any")
    parser.add_argument("--code", metavar="C", help="one error code only, e.g. UNMAPPED_CURRENCY")
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="default: table")
    add_account_argument(parser, "only the exceptions", "every account's, with an account column")
    parser.set_defaults(func=run_exceptions)
    actions = parser.add_subparsers(dest="exceptions_command", metavar="{retry}")
    retry = actions.add_parser(
        "retry",
        help="after a fix, re-run through Dagster the days of the open exceptions (and the billing, for those of "
        "no day); prints the run ids",
        description="One stripe_to_netsuite run per day with an open exception, and one salesforce_to_stripe run "
        "when billing or write-back exceptions are open. By default the runs are submitted to the Dagster "
        "webserver (--url; `sync-pipeline dev` runs it), which queues them for its daemon like a run launched "
        "from the UI, and this command returns once they are queued. With --in-process they run here, one after "
        "the other, against the Dagster instance of DAGSTER_HOME (still listed in the UI), and the command "
        "reports which exceptions resolved: exit 1 when a run failed or any stays open.",
    )
    retry.add_argument("--code", metavar="C", help="retry the exceptions of this error code only")
    add_account_argument(retry, "only the exceptions", "every account's, each through its own job")
    retry.add_argument(
        "--url",
        default=os.environ.get("DAGSTER_WEBSERVER_URL", DEFAULT_DAGSTER_URL),
        help=f"the Dagster webserver to submit to (default DAGSTER_WEBSERVER_URL or {DEFAULT_DAGSTER_URL})",
    )
    retry.add_argument(
        "--in-process",
        action="store_true",
        help="run here against DAGSTER_HOME's instance instead of submitting (no daemon needed); waits for them",
    )
    retry.set_defaults(func=run_retry)
