"""`sync-pipeline plan --partition D`: what a Stripe → NetSuite run of day D would do, per record; writes nothing.

The day is extracted from Stripe by the pipeline's own extract assets (materialized in memory on an ephemeral
Dagster instance: no run, no snapshot, no ledger row), mapped and validated as `netsuite_sync_plan` and
`netsuite_deposit_plan` do, and compared with the ledger and, for the records a run would update, with what
NetSuite holds (`writers/plan_preview.py`).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import dagster as dg

from sync_pipeline import settings
from sync_pipeline.stripe_accounts import (
    DEFAULT_ACCOUNT,
    StripeAccount,
    account_mapping,
    add_account_argument,
    selected_account,
)
from sync_pipeline.writers.plan_preview import PREVIEW_COLUMNS, PreviewRow, counts

FORMATS = ("table", "csv", "json")
# NetSuite reads of the records to update run on a few threads, within the client's concurrency limit.
READ_THREADS = 4


def add_partition_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """`--partition` and `--format` on the `plan` subcommand."""
    parser.add_argument(
        "--partition",
        metavar="YYYY-MM-DD",
        help="Stripe → NetSuite dry run of this UTC day: per record create, update (fields old → new), unchanged "
        "or held back (with the fix); writes nothing",
    )
    parser.add_argument(
        "--format", choices=FORMATS, default="table", help="with --partition: how the records are printed"
    )
    add_account_argument(parser, "with --partition: the day")


def _fail(message: str) -> int:
    print(f"sync-pipeline: {message}", file=sys.stderr)
    return 2


def partition_problem(day: str, start_date: str, today: dt.date | None = None) -> str | None:
    """Why `day` is not a daily partition of the pipeline (None when it is)."""
    try:
        date = dt.date.fromisoformat(day)
    except ValueError:
        return f"--partition: {day!r} is not a date; write it as YYYY-MM-DD"
    today = today or dt.datetime.now(dt.UTC).date()
    if date < dt.date.fromisoformat(start_date):
        return f"--partition: {day} is before SYNC_START_DATE ({start_date}); set SYNC_START_DATE earlier to plan it"
    if date > today:
        return f"--partition: {day} is after today ({today} UTC); nothing has happened on it yet"
    return None


def _ledger_url(url: str) -> str:
    """The ledger to read: SYNC_DATABASE_URL, or an empty one in memory when its SQLite file does not exist yet
    (nothing synced: every record is a create), so planning never creates the file."""
    if url.startswith("sqlite"):
        import sqlalchemy as sa

        database = sa.engine.make_url(url).database
        if database not in (None, "", ":memory:") and not Path(database).exists():
            return "sqlite://"
    return url


def extract_day(day: str, resources: dict, account: StripeAccount = DEFAULT_ACCOUNT) -> dict:
    """The day's Stripe extract frames (invoices, charges, payouts, balance transactions) of `account`, by that
    account's extract assets themselves, in memory on an ephemeral instance: nothing is stored."""
    from sync_pipeline import account_sets
    from sync_pipeline.assets import cash, stripe

    names = ("stripe_invoices", "stripe_charges", "stripe_payouts", "stripe_balance_transactions")
    # The account's own definitions (its key prefix): their bodies use its Stripe key, ledger view and ids.
    assets = [
        a
        for a in account_sets.account_assets(account, [stripe, cash], settings.start_date())
        if {k.path[-1] for k in a.keys} & set(names)
    ]
    result = dg.materialize_to_memory(
        assets,
        partition_key=day,
        resources=resources,
        instance=dg.DagsterInstance.ephemeral(),
        run_config={"loggers": {"console": {"config": {"log_level": "ERROR"}}}},
    )
    prefix = [account.prefix] if account.prefix else []
    return {name: result.asset_value(dg.AssetKey([*prefix, name])) for name in names}


def plan_partition(day: str, account: StripeAccount = DEFAULT_ACCOUNT) -> tuple[list[PreviewRow], int]:
    """The preview rows of `account`'s day and how many Stripe objects are not booked at all (drafts, failed
    charges)."""
    from concurrent.futures import ThreadPoolExecutor

    from sync_pipeline.assets.cash import map_payouts
    from sync_pipeline.assets.netsuite import map_partition
    from sync_pipeline.assets.stripe import read_trees
    from sync_pipeline.definitions import build_resources
    from sync_pipeline.mapping.external_ids import for_account
    from sync_pipeline.resources.ledger import LedgerResource
    from sync_pipeline.schemas.netsuite import validate_records
    from sync_pipeline.writers import plan_preview as pp

    everything = build_resources()
    everything["ledger"] = LedgerResource(database_url=_ledger_url(settings.database_url()))
    resources = {k: everything[k] for k in ("stripe", "ledger", "field_mapping", "netsuite")}
    frames = extract_day(day, {k: resources[k] for k in ("stripe", "ledger", "field_mapping")}, account)
    # Mapped as the account's assets map: its subsidiary, its external ids, its ledger rows.
    with dg.build_resources(resources) as built, for_account(account.prefix):
        fm = account_mapping(built.field_mapping.load(), account)
        documents = map_partition(read_trees(frames["stripe_invoices"]), read_trees(frames["stripe_charges"]), fm)
        deposits = map_payouts(frames["stripe_payouts"], frames["stripe_balance_transactions"], fm)
        valid, held_back = [], []
        for mapped in (documents, deposits):
            outcome = validate_records(mapped.records, fm)
            valid += outcome.valid
            held_back += [*mapped.issues, *outcome.issues]
        known, internal_ids = pp.read_ledger(built.ledger.get_ledger().for_account(account.prefix), valid)
        pending = pp.compare_with_ledger(valid, known, internal_ids)
        keys = pp.to_read(pending)
        current: dict = {}
        if keys:
            client = built.netsuite.get_client()
            with ThreadPoolExecutor(max_workers=min(READ_THREADS, client.concurrency)) as pool:
                current = pp.read_current(client, keys, pool.map)
        rows = pp.preview_records(pending, held_back, current)
    return rows, len(documents.skips) + len(deposits.skips)


def print_table(day: str, rows: Sequence[PreviewRow], skipped: int, out: TextIO, account: str = "") -> None:
    of = f" of Stripe account {account}" if account else ""
    print(f"Stripe → NetSuite plan for {day} (UTC){of}: nothing is written by this command.", file=out)
    widths = {
        "action": max([len("ACTION"), *(len(r.action.value) for r in rows)]),
        "record_type": max([len("RECORD TYPE"), *(len(r.record_type) for r in rows)]),
        "external_id": max([len("EXTERNAL ID"), *(len(r.external_id) for r in rows)]),
    }

    def line(action: str, record_type: str, external_id: str, source: str) -> str:
        return (
            f"{action:<{widths['action']}}  {record_type:<{widths['record_type']}}  "
            f"{external_id:<{widths['external_id']}}  {source}".rstrip()
        )

    print(line("ACTION", "RECORD TYPE", "EXTERNAL ID", "STRIPE"), file=out)
    for row in rows:
        print(line(row.action.value, row.record_type, row.external_id, row.source_id or ""), file=out)
        for change in row.changes:
            print(f"    {change}", file=out)
        if row.note:
            print(f"    {row.note}", file=out)
        if row.fix:
            print(f"    Fix: {row.fix}", file=out)
    totals = ", ".join(f"{n} {action}" for action, n in counts(rows).items())
    print(f"Records: {totals}.", file=out)
    if skipped:
        print(f"Not booked: {skipped} Stripe object(s) (drafts, failed charges and the like).", file=out)


def print_csv(rows: Sequence[PreviewRow], out: TextIO) -> None:
    writer = csv.DictWriter(out, fieldnames=PREVIEW_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(r.as_dict() for r in rows)


def print_json(day: str, rows: Sequence[PreviewRow], skipped: int, out: TextIO, account: str = "") -> None:
    records = [{**r.as_dict(), "changes": list(r.changes), "note": r.note} for r in rows]
    document = {"partition": day, "counts": counts(rows), "not_booked": skipped, "records": records}
    if account:
        document = {"account": account, **document}
    json.dump(document, out, indent=2, ensure_ascii=False)
    out.write("\n")


def run_partition_plan(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`sync-pipeline plan --partition D [--format table|csv|json] [--account NAME]`."""
    out = out or sys.stdout
    settings.require_environment(("stripe", "netsuite"))
    account = selected_account(getattr(args, "account", None))
    from sync_pipeline.mapping.field_mapping import read_field_mapping

    mapping, problems = read_field_mapping(settings.field_mapping_path())
    if mapping is None:
        return _fail(settings.first_problem(problems))
    problem = partition_problem(args.partition, settings.start_date())
    if problem:
        return _fail(problem)
    rows, skipped = plan_partition(args.partition, account)
    if args.format == "csv":
        print_csv(rows, out)
    elif args.format == "json":
        print_json(args.partition, rows, skipped, out, account.name)
    else:
        print_table(args.partition, rows, skipped, out, account.name)
    return 0
