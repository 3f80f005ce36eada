"""`sync-pipeline reconcile --from D --to D`: the `reconciliation` comparison from a shell, for a controller or cron.

Each day's Stripe objects are extracted as the pipeline extracts them (in memory: nothing is stored, nothing is
written), NetSuite is read back by external id, and the figures per day, currency and category are printed with
every document that differs; with Salesforce configured, every billed Closed-Won deal that differs too
(opportunity vs Stripe vs NetSuite, and the written-back billing status). Exit status 1 when anything is off, 0
when the books agree, 2 on a usage problem.

Undeposited Funds is a balance, cumulative from SYNC_START_DATE: the range's days are added up from Stripe here, the
days before `--from` from the pipeline's stored `stripe_undeposited_movements` (the same files the asset reads). When
one of those is missing or out of date the row is not compared and a line says which days and the fix (reconcile
from SYNC_START_DATE, or run those days).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import sys
from collections import defaultdict
from collections.abc import Sequence
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

FORMATS = ("table", "csv", "json")


def add_reconcile_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reconcile",
        help="compare NetSuite with Stripe for a range of days (read only); exit 1 when anything is off",
        description="Per day, currency and category (invoiced, credited, collected, refunded, disputed, "
        "reinstated, open receivables, paid out, fees, undeposited funds at the end of the day, cumulative from "
        "SYNC_START_DATE): Stripe's figures, NetSuite's read back, the difference, and every document that "
        "differs. Writes nothing.",
    )
    parser.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first UTC day")
    parser.add_argument("--to", dest="end", metavar="YYYY-MM-DD", help="last UTC day (default: --from)")
    parser.add_argument("--currency", help="only this currency (ISO code, e.g. EUR)")
    parser.add_argument("--format", choices=FORMATS, default="table")
    add_account_argument(parser, "the days")
    parser.set_defaults(func=run_reconcile)


def _fail(message: str) -> int:
    print(f"sync-pipeline: {message}", file=sys.stderr)
    return 2


def _days(start: str, end: str | None) -> list[str] | str:
    """The days of the range, or the problem with it."""
    try:
        first = dt.date.fromisoformat(start)
        last = dt.date.fromisoformat(end or start)
    except ValueError:
        return f"--from/--to: {start!r}/{end!r} is not a date range; write dates as YYYY-MM-DD"
    if last < first:
        return f"--to {last} is before --from {first}"
    if first < dt.date.fromisoformat(settings.start_date()):
        return f"--from {first} is before SYNC_START_DATE ({settings.start_date()}): nothing was synced before it"
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


def reconcile_deals_now() -> list[dict]:
    """The Salesforce leg, when Salesforce is configured: per billed Closed-Won deal, the difference rows of
    opportunity vs Stripe vs NetSuite and the written-back status (`deal_reconciliation`'s comparison)."""
    from sync_pipeline.assets.deal_reconciliation import reconcile_deals
    from sync_pipeline.definitions import build_resources

    everything = build_resources()
    resources = {k: everything[k] for k in ("salesforce", "stripe", "netsuite", "field_mapping")}
    with dg.build_resources(resources) as built:
        comparison = reconcile_deals(
            built.salesforce, built.stripe, built.netsuite.get_client(), built.field_mapping.load()
        )
    return comparison.rows


def reconcile_days(
    days: Sequence[str], account: StripeAccount = DEFAULT_ACCOUNT
) -> list[tuple[str, list[dict], list[dict], str | None]]:
    """(day, summary rows, difference rows, why Undeposited Funds was not compared or None) per day of `account`,
    read from Stripe and NetSuite now."""
    from sync_pipeline.assets import reconciliation as books
    from sync_pipeline.assets.cash import map_payouts, payout_trees
    from sync_pipeline.assets.stripe import read_trees
    from sync_pipeline.definitions import build_resources
    from sync_pipeline.mapping import undeposited
    from sync_pipeline.mapping.cash import DEPOSIT
    from sync_pipeline.mapping.external_ids import for_account
    from sync_pipeline.plan_cli import _ledger_url, extract_day
    from sync_pipeline.resources.ledger import LedgerResource

    everything = build_resources()
    everything["ledger"] = LedgerResource(database_url=_ledger_url(settings.database_url()))
    resources = {k: everything[k] for k in ("stripe", "ledger", "field_mapping", "netsuite")}
    # The days before the range: the pipeline's stored movements (the range's own are extracted below).
    prefix = [account.prefix] if account.prefix else []
    stored = everything["io_manager"].stored_days(dg.AssetKey([*prefix, books.MOVEMENTS]), books.days_before(days[0]))
    moved: list[dict] = []
    out = []
    # Compared as the account's reconciliation asset compares: its subsidiary, its external ids.
    with dg.build_resources(resources) as built, for_account(account.prefix):
        fm = account_mapping(built.field_mapping.load(), account)
        client = built.netsuite.get_client()
        for day in days:
            frames = extract_day(day, {k: resources[k] for k in ("stripe", "ledger", "field_mapping")}, account)
            moved += undeposited.day_movements(
                read_trees(frames["stripe_invoices"]),
                read_trees(frames["stripe_charges"]),
                payout_trees(frames["stripe_payouts"], frames["stripe_balance_transactions"]),
                fm,
                settings.start_date(),
            )
            # From Stripe and NetSuite only: a record held back is a difference here, as it is in the books.
            every, why_not = books.movements_through(moved, stored, account.prefix)
            # A payout split into several deposits: their external ids come from the same mapping the writer uses.
            deposits_of: dict[str, list[str]] = defaultdict(list)
            mapped = map_payouts(frames["stripe_payouts"], frames["stripe_balance_transactions"], fm)
            for record in mapped.records:
                if record.record_type == DEPOSIT:
                    deposits_of[record.source_id].append(record.external_id)
            summary, differences = books.reconcile_day(
                client,
                fm,
                read_trees(frames["stripe_invoices"]),
                read_trees(frames["stripe_charges"]),
                payout_trees(frames["stripe_payouts"], frames["stripe_balance_transactions"]),
                deposits_of,
                None if every is None else (day, every),
            )
            out.append((day, summary, differences, why_not))
    return out


def _only(rows: list[dict], currency: str | None) -> list[dict]:
    return [r for r in rows if currency is None or r["currency"] == currency]


def print_table(results, out: TextIO) -> None:
    from sync_pipeline.assets.reconciliation import DIFFERENCE_COLUMNS, SUMMARY_COLUMNS
    from sync_pipeline.writers.report import amounts_markdown

    for day, summary, differences, why_not in results:
        print(f"\n{day}", file=out)
        print(amounts_markdown(summary, SUMMARY_COLUMNS, "Nothing happened this day."), file=out)
        if why_not:
            print(why_not, file=out)
        if differences:
            print(f"\n{len(differences)} document(s) differ:", file=out)
            print(amounts_markdown(differences, DIFFERENCE_COLUMNS, ""), file=out)


def print_csv(results, out: TextIO) -> None:
    from sync_pipeline.assets.reconciliation import SUMMARY_COLUMNS

    writer = csv.DictWriter(out, fieldnames=["day", "kind", *SUMMARY_COLUMNS, "document"], lineterminator="\n")
    writer.writeheader()
    for day, summary, differences, why_not in results:
        writer.writerows({"day": day, "kind": "total", **row} for row in summary)
        writer.writerows({"day": day, "kind": "difference", **row} for row in differences)
        if why_not:
            writer.writerow(
                {"day": day, "kind": "not_comparable", "category": "undeposited_funds", "document": why_not}
            )


def run_reconcile(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    settings.require_environment(("stripe", "netsuite"))
    account = selected_account(args.account)
    days = _days(args.start, args.end)
    if isinstance(days, str):
        return _fail(days)
    currency = args.currency.upper() if args.currency else None
    results = [(day, _only(s, currency), _only(d, currency), n) for day, s, d, n in reconcile_days(days, account)]
    off = sum(len(d) for _, _, d, _ in results)
    # The third leg, when Salesforce is configured: every billed deal (not only the range's days). Deals are billed
    # in the default Stripe account, so another account's reconciliation has no deal leg.
    with_deals = settings.is_set("SALESFORCE_INSTANCE_URL") and account.default
    deals = _only(reconcile_deals_now(), currency) if with_deals else None
    if args.format == "json":
        document = [
            {"day": day, "totals": s, "differences": d, **({"undeposited_funds_not_comparable": n} if n else {})}
            for day, s, d, n in results
        ]
        of = {"account": account.name} if account.name else {}
        json.dump({**of, "days": document, "documents_differing": off, "deals_differing": deals}, out, indent=2)
        out.write("\n")
    elif args.format == "csv":
        print_csv(results, out)
    else:
        print_table(results, out)
        verdict = "the books agree with Stripe" if not off else f"{off} document(s) differ from Stripe"
        # A balance that could not be added up is not a difference, but the verdict must not claim it was checked.
        unchecked = sum(1 for *_, why_not in results if why_not)
        verdict += f" (Undeposited Funds not compared on {unchecked} day(s): see above)" if unchecked else ""
        of = f" of Stripe account {account.name}" if account.name else ""
        print(f"\n{len(results)} day(s){of} reconciled{' in ' + currency if currency else ''}: {verdict}", file=out)
        if deals is not None:
            from sync_pipeline.mapping.deal_reconciliation import COLUMNS
            from sync_pipeline.writers.report import amounts_markdown

            print("\nBilled Closed-Won deals, Salesforce against Stripe and NetSuite:", file=out)
            print(amounts_markdown(deals, COLUMNS, "Every billed deal agrees."), file=out)
    return 1 if off or deals else 0
