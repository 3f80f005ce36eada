"""The books, read from both systems: per day and currency, what Stripe says and what NetSuite holds.

`reconciliation` (daily, group quality) reads NetSuite back by external id (SuiteQL `transaction` and
`transactionline`) and compares with Stripe's own objects of the day (invoices, credit notes, charges, refunds,
disputes, payouts and their balance transactions), never with the plan or the ledger:

- invoiced: finalized invoices' totals and invoice-less sales -> invoices `stripe-in_…`, `stripe-ch_…-sale`;
- credited: credit notes not void -> credit memos `stripe-cn_…`;
- collected: succeeded charges (the captured amount) -> customer payments `stripe-ch_…`;
- refunded: succeeded refunds -> customer refunds `stripe-re_…`;
- disputed: disputes' withdrawn funds -> customer refunds `stripe-dp_…`;
- reinstated: won disputes' reinstated funds -> customer payments `stripe-dp_…-reinstated`;
- open receivables: open invoices' amount remaining -> those invoices' amount remaining;
- paid out: payouts arriving that day (paid, or failed after) -> deposits `stripe-po_…` (all parts);
- fees: the payouts' fees (fee_details and Stripe's fee transactions) -> the deposits' lines on fee accounts;
- undeposited funds: the balance at the end of the day, cumulative from SYNC_START_DATE (`mapping/undeposited.py`):
  Stripe's succeeded charges and reinstated disputes since the start less what the payouts arrived since carried ->
  Undeposited Funds (`accounts.payments`) per transaction currency, one SuiteQL sum over the account's postings
  dated up to the day. Stripe's side adds `stripe_undeposited_movements` of every day since the start (the day's
  own, and the earlier days' stored files); a day never materialized, or synced by a partial run after its last
  whole-day run, makes the row not comparable (`undeposited_funds_not_comparable` names the days and the fix)
  rather than a false difference; a partial run does not compare it. A difference that the movements of records the
  writers held back account for exactly (open exceptions, a deposit waiting for its payments: each listed with its
  fix on its own day) is known, not a new difference every later day; `sync-pipeline reconcile`, reading Stripe and
  NetSuite only, shows it.

Each category is a sum per currency (Decimal text, at NetSuite's precision) and, under it, one row per document
that differs (for undeposited funds: one row per currency). Numeric metadata per currency (`stripe_invoiced_usd`,
`netsuite_invoiced_usd`, ...) feeds Dagster's Plots tab; the exact amounts are in the tables.
`sync-pipeline reconcile` runs the same comparison from a shell.
"""

import datetime as dt
import functools
import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline import settings
from sync_pipeline.assets.cash import fee_accounts, payout_trees, planned_deposits
from sync_pipeline.assets.netsuite import NETSUITE_POOL, _currency_codes, records_by_external_id, suiteql_in
from sync_pipeline.assets.stripe import read_trees
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.event_scope import WHOLE_DAY, is_partial_run
from sync_pipeline.io_managers import ParquetIOManager, StoredDays
from sync_pipeline.mapping import cash, undeposited
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.external_ids import (
    deposit_external_id,
    dispute_reinstated_external_id,
    netsuite_external_id,
    sale_invoice_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import to_precision
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS, daily_check
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteResource
from sync_pipeline.stripe_accounts import account_of, scoped
from sync_pipeline.writers.report import IN_TARGET, amounts_markdown, plot_metadata

BOOKS_CHECK = "books_match_stripe"
CATEGORIES = (
    "invoiced",
    "credited",
    "collected",
    "refunded",
    "disputed",
    "reinstated",
    "open_receivables",
    "paid_out",
    "fees",
    "undeposited_funds",
)
UNDEPOSITED = "undeposited_funds"
MOVEMENTS = "stripe_undeposited_movements"
# Undeposited Funds per transaction currency at the end of a day, from NetSuite's books: the account's GL postings
# (transactionaccountingline) in the lines' own currency (transactionline's foreign amounts), by transaction date.
# An account with Multi-Book Accounting would add `AND tal.accountingbook = <the primary book>`.
UNDEPOSITED_QUERY = (
    "SELECT t.currency AS currency, SUM(tl.debitforeignamount) AS debit, SUM(tl.creditforeignamount) AS credit "
    "FROM transactionaccountingline tal "
    "INNER JOIN transactionline tl ON tl.transaction = tal.transaction AND tl.id = tal.transactionline "
    "INNER JOIN transaction t ON t.id = tal.transaction "
    "WHERE tal.account = {account} AND tal.posting = 'T' AND t.trandate <= TO_DATE('{day}', 'YYYY-MM-DD')"
    "{subsidiaries} GROUP BY t.currency"
)
SUMMARY_COLUMNS = ["currency", "category", "documents", "stripe", "netsuite", "difference"]
DIFFERENCE_COLUMNS = ["category", "document", "currency", "stripe", "netsuite", "difference"]
# Which NetSuite figure a category reads: the document's total, or what it still has open.
REMAINING = "remaining"
TOTAL = "total"


@dataclass(frozen=True)
class Expected:
    """One Stripe figure and the NetSuite document that must hold it."""

    category: str
    record_type: str  # NetSuite record type of the document
    external_ids: tuple[str, ...]  # the document (several: a payout's deposits)
    currency: str
    amount: Decimal  # at NetSuite's precision
    field: str = TOTAL


def _amount(minor: int, currency: str, fm: FieldMapping) -> Decimal:
    return to_precision(int(minor), currency, fm.netsuite_precision(currency))


def _charge_figures(charge: Mapping, fm: FieldMapping) -> list[Expected]:
    out: list[Expected] = []
    code, collected = undeposited.mapped_currency(charge.get("currency"), fm), undeposited.collected_minor(charge)
    if code is None or collected is None:
        return out
    amount = _amount(collected, code, fm)
    out.append(Expected("collected", ns.CUSTOMER_PAYMENT, (netsuite_external_id(charge["id"]),), code, amount))
    return out


def _refund_figures(refund: Mapping, fm: FieldMapping) -> list[Expected]:
    code = undeposited.mapped_currency(refund.get("currency"), fm)
    if code is None or refund.get("status") != "succeeded":
        return []
    eid = netsuite_external_id(refund["id"])
    return [Expected("refunded", ns.CUSTOMER_REFUND, (eid,), code, _amount(refund.get("amount") or 0, code, fm))]


def _dispute_figures(dispute: Mapping, fm: FieldMapping) -> list[Expected]:
    code = undeposited.mapped_currency(dispute.get("currency"), fm)
    if code is None:
        return []
    amount = _amount(dispute.get("amount") or 0, code, fm)
    out = []
    if ns.dispute_movement(dispute, ns.DISPUTE_WITHDRAWN) is not None:
        out.append(Expected("disputed", ns.CUSTOMER_REFUND, (netsuite_external_id(dispute["id"]),), code, amount))
    if ns.dispute_movement(dispute, ns.DISPUTE_REINSTATED) is not None:
        eid = dispute_reinstated_external_id(dispute["id"])
        out.append(Expected("reinstated", ns.CUSTOMER_PAYMENT, (eid,), code, amount))
    return out


def stripe_document_figures(
    invoice_trees: Iterable[Mapping], charge_trees: Iterable[Mapping], fm: FieldMapping
) -> list[Expected]:
    """Every Stripe figure of the day's documents, each with the NetSuite document that must hold it."""
    out: list[Expected] = []
    for tree in invoice_trees:
        invoice = tree["invoice"]
        code = undeposited.mapped_currency(invoice.get("currency"), fm)
        if code is None or invoice.get("status") not in ns.FINALIZED_INVOICE_STATUSES:
            continue
        eid = netsuite_external_id(invoice["id"])
        total = int(invoice.get("total") or 0)
        if total >= 0:
            out.append(Expected("invoiced", ns.INVOICE, (eid,), code, _amount(total, code, fm)))
            if invoice.get("status") == "open":
                remaining = _amount(invoice.get("amount_remaining") or 0, code, fm)
                out.append(Expected("open_receivables", ns.INVOICE, (eid,), code, remaining, REMAINING))
        for note in tree.get("credit_notes") or ():
            if note.get("status") != "void":
                note_eid = netsuite_external_id(note["id"])
                out.append(Expected("credited", ns.CREDIT_MEMO, (note_eid,), code, _amount(note["total"], code, fm)))
        for charge in tree.get("charges") or ():
            out += _charge_figures(charge, fm)
        for refund in tree.get("refunds") or ():
            out += _refund_figures(refund, fm)
        for dispute in tree.get("disputes") or ():
            out += _dispute_figures(dispute, fm)
    for tree in charge_trees:
        charge = tree["charge"]
        figures = _charge_figures(charge, fm)
        if figures and fm.invoiceless_charges == "sale":
            sale = figures[0]
            out.append(
                Expected("invoiced", ns.INVOICE, (sale_invoice_external_id(charge["id"]),), sale.currency, sale.amount)
            )
        out += figures
        for refund in tree.get("refunds") or ():
            out += _refund_figures(refund, fm)
        for dispute in tree.get("disputes") or ():
            out += _dispute_figures(dispute, fm)
    return out


def stripe_payout_figures(
    payouts: Iterable[tuple[Mapping, Sequence[Mapping]]], fm: FieldMapping, deposits_of: Mapping[str, Sequence[str]]
) -> list[Expected]:
    """Each arrived payout's amount and fees, with the deposits that must hold them (`deposits_of`: payout id ->
    the deposits' external ids; a payout not in it is one deposit `stripe-po_…`)."""
    out: list[Expected] = []
    for payout, txns in payouts:
        code = undeposited.mapped_currency(payout.get("currency"), fm)
        if code is None or payout.get("status") in ("pending", "in_transit"):
            continue
        eids = tuple(deposits_of.get(payout["id"]) or (deposit_external_id(payout["id"]),))
        out.append(Expected("paid_out", cash.DEPOSIT, eids, code, _amount(payout.get("amount") or 0, code, fm)))
        fees = sum(
            cash.stripe_fees_minor(t.get("type"), int(t.get("fee") or 0), int(t.get("amount") or 0)) for t in txns
        )
        out.append(Expected("fees", cash.DEPOSIT, eids, code, _amount(fees, code, fm), "fees"))
    return out


def _netsuite_figures(client: NetSuiteClient, expected: Sequence[Expected], fm: FieldMapping) -> dict:
    """(record type, external id) -> {"total", "remaining", "fees", "id"} as NetSuite holds them."""
    held: dict[tuple[str, str], dict] = {}
    by_type: dict[str, set[str]] = defaultdict(set)
    for figure in expected:
        by_type[figure.record_type].update(figure.external_ids)
    for record_type, eids in by_type.items():
        rows = records_by_external_id(
            client, record_type, sorted(eids), "id, externalid, foreigntotal, foreignamountremaining"
        )
        for row in rows:
            held[(record_type, str(row["externalid"]))] = {
                "id": str(row["id"]),
                TOTAL: abs(Decimal(str(row.get("foreigntotal") or "0"))),
                REMAINING: Decimal(str(row.get("foreignamountremaining") or "0")),
            }
    deposits = {v["id"]: k for k, v in held.items() if k[0] == cash.DEPOSIT}
    if deposits:
        accounts = fee_accounts(fm)
        lines = suiteql_in(
            client,
            "SELECT transaction, expenseaccount, foreignamount, mainline FROM transactionline "
            "WHERE transaction IN ({values}) AND mainline = 'F'",
            sorted(deposits),
            quote=False,
        )
        for key in deposits.values():
            held[key]["fees"] = Decimal(0)
        for line in lines:
            if str(line.get("expenseaccount")) in accounts:
                # Debit-positive: a fee's cash-back line debits the fee account; a fee returned credits it.
                held[deposits[str(line["transaction"])]]["fees"] += Decimal(str(line.get("foreignamount") or "0"))
    return held


def _like(value: Decimal, model: Decimal) -> Decimal:
    """`value` written with `model`'s decimals (NetSuite answers 12.5 for 12.50), unless that would lose digits."""
    shown = value.quantize(model) if model.is_finite() else value
    return shown if shown == value else value


def compare_books(expected: Sequence[Expected], held: Mapping[tuple[str, str], Mapping]) -> tuple[list, list]:
    """(summary rows per currency and category, difference rows per document), amounts as Decimal text."""
    sums: dict[tuple[str, str], list] = {}
    differences = []
    for figure in expected:
        found = [held.get((figure.record_type, eid)) for eid in figure.external_ids]
        netsuite = _like(sum((f.get(figure.field, Decimal(0)) for f in found if f), Decimal(0)), figure.amount)
        entry = sums.setdefault((figure.currency, figure.category), [0, Decimal(0), Decimal(0)])
        entry[0] += 1
        entry[1] += figure.amount
        entry[2] += netsuite
        if netsuite != figure.amount or not all(found):
            missing = [eid for eid, f in zip(figure.external_ids, found, strict=True) if not f]
            differences.append(
                {
                    "category": figure.category,
                    "document": ", ".join(figure.external_ids) + (" (missing in NetSuite)" if missing else ""),
                    "currency": figure.currency,
                    "stripe": str(figure.amount),
                    "netsuite": str(netsuite),
                    "difference": str(figure.amount - netsuite),
                }
            )
    summary = [
        {
            "currency": code,
            "category": category,
            "documents": str(count),
            "stripe": str(stripe),
            "netsuite": str(_like(netsuite, stripe)),
            "difference": str(_like(stripe - netsuite, stripe)),
        }
        for (code, category), (count, stripe, netsuite) in sums.items()
    ]
    return _ordered(summary), differences


# -- undeposited funds: a balance, cumulative from SYNC_START_DATE --------------------------------------------------


def netsuite_undeposited(client: NetSuiteClient, fm: FieldMapping, day: str) -> dict[str, Decimal]:
    """Per currency, Undeposited Funds (`accounts.payments`) at the end of `day` as NetSuite's books hold it, in
    the transactions' own currency, over the subsidiaries the mapped currencies book to."""
    if not fm.accounts.payments:
        return {}
    subsidiaries = sorted({c.subsidiary for c in fm.currencies.values() if c.subsidiary}, key=int)
    within = f" AND t.subsidiary IN ({', '.join(subsidiaries)})" if subsidiaries else ""
    query = UNDEPOSITED_QUERY.format(account=fm.accounts.payments, day=day, subsidiaries=within)
    codes = _currency_codes(fm)
    out = {}
    for row in client.suiteql(query):
        code = codes.get(str(row.get("currency")), f"currency {row.get('currency')}")
        out[code] = Decimal(str(row.get("debit") or "0")) - Decimal(str(row.get("credit") or "0"))
    return out


def compare_undeposited(
    stripe: Mapping[str, tuple[Decimal, int]],
    netsuite: Mapping[str, Decimal],
    fm: FieldMapping,
    day: str,
    held: Mapping[str, Decimal] | None = None,
) -> tuple[list, list]:
    """(summary rows, difference rows) of Undeposited Funds per currency at the end of `day`: Stripe's balance
    (amount, documents that moved it) against NetSuite's, at NetSuite's precision. `held`: the part of Stripe's
    whose NetSuite records the writers held back (open exceptions); a difference of exactly that much is known,
    not a difference row."""
    summary, differences = [], []
    held = held or {}
    for code in sorted(set(stripe) | set(netsuite)):
        places = fm.netsuite_precision(code) if fm.currency(code) is not None else 2
        zero = Decimal(0).scaleb(-places)
        in_stripe, documents = stripe.get(code, (zero, 0))
        row = {
            "currency": code,
            "stripe": str(_like(in_stripe, zero)),
            "netsuite": str(_like(netsuite.get(code, zero), zero)),
            "difference": str(_like(in_stripe - netsuite.get(code, zero), zero)),
        }
        summary.append({**row, "category": UNDEPOSITED, "documents": str(documents)})
        known = held.get(code, Decimal(0))
        if in_stripe - netsuite.get(code, zero) != known:
            document = f"Undeposited Funds ({code}) at end of {day}"
            if known:
                document += f" ({_like(known, zero)} of it held back: open exceptions)"
            differences.append({**row, "category": UNDEPOSITED, "document": document})
    return summary, differences


def _ranges(days: Sequence[str]) -> str:
    """Days as short ranges: 2026-11-01..2026-11-03, 2026-11-07."""
    spans: list[list[dt.date]] = []
    for day in sorted(dt.date.fromisoformat(d) for d in days):
        if spans and (day - spans[-1][1]).days == 1:
            spans[-1][1] = day
        else:
            spans.append([day, day])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in spans)


def not_comparable(stored: StoredDays, account: str | None = None) -> str | None:
    """Why Stripe's side of Undeposited Funds cannot be added up from the stored days, and the fix; None if it can."""
    reasons = []
    if stored.missing:
        reasons.append(f"{MOVEMENTS} was never materialized for {_ranges(stored.missing)}")
    if stored.superseded:
        reasons.append(f"a partial (event) run synced {_ranges(stored.superseded)} after its last whole-day run")
    if not reasons:
        return None
    days = sorted([*stored.missing, *stored.superseded])
    flag = f" --account {account}" if account else ""
    return (
        "Undeposited Funds not compared (it is cumulative from SYNC_START_DATE): "
        + "; ".join(reasons)
        + f". Run those days whole (sync-pipeline backfill --from {days[0]} --to {days[-1]}{flag}, or a backfill "
        "in the UI), then this day again."
    )


@functools.lru_cache(maxsize=8192)
def _stored_movements(path: str, written_ns: int) -> tuple[dict, ...]:
    # Each unchanged day's file is read once per process: a backfill reconciling a year reads a day once, not once
    # per later day. `written_ns` (the file's mtime) keys the cache, so a re-materialized day is read again.
    return tuple(pd.read_parquet(path).to_dict("records"))


def movements_through(
    own: Iterable[Mapping], stored: StoredDays, account: str | None = None
) -> tuple[list[Mapping] | None, str | None]:
    """Every movement since the start: the stored earlier days' and the day's own, or (None, why not and the fix)
    when an earlier day is missing or out of date."""
    problem = not_comparable(stored, account)
    if problem:
        return None, problem
    earlier = (row for path in stored.paths.values() for row in _stored_movements(str(path), path.stat().st_mtime_ns))
    return list(itertools.chain(earlier, own)), None


def days_before(day: str) -> list[str]:
    """Every day from SYNC_START_DATE up to the day before `day`."""
    first, last = dt.date.fromisoformat(settings.start_date()), dt.date.fromisoformat(day)
    return [(first + dt.timedelta(days=n)).isoformat() for n in range((last - first).days)]


def _ordered(rows: Iterable[Mapping]) -> list:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(rows, key=lambda row: (row["currency"], order[row["category"]]))


def reconcile_day(
    client: NetSuiteClient,
    fm: FieldMapping,
    invoice_trees: Iterable[Mapping],
    charge_trees: Iterable[Mapping],
    payouts: Iterable[tuple[Mapping, Sequence[Mapping]]],
    deposits_of: Mapping[str, Sequence[str]] | None = None,
    undeposited_at: tuple[str, Sequence[Mapping]] | None = None,
    known_held: bool = False,
) -> tuple[list, list]:
    """One day's books: Stripe's figures against NetSuite's, read back now (summary, differences). With
    `undeposited_at` (the day, every movement since the start), Undeposited Funds at the end of the day too;
    `known_held`: a difference the movements' held-back rows account for exactly is not one."""
    expected = stripe_document_figures(invoice_trees, charge_trees, fm)
    expected += stripe_payout_figures(payouts, fm, deposits_of or {})
    summary, differences = compare_books(expected, _netsuite_figures(client, expected, fm))
    if undeposited_at is not None:
        day, moved = undeposited_at
        held = {code: amount for code, (amount, _) in undeposited.balance(moved, day, undeposited.HELD).items()}
        stripe = undeposited.balance(moved, day)
        funds, off = compare_undeposited(stripe, netsuite_undeposited(client, fm, day), fm, day, known_held and held)
        summary, differences = _ordered([*summary, *funds]), [*differences, *off]
    return summary, differences


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="What the day moved in Undeposited Funds, from Stripe: per currency and date, the succeeded charges "
    "and reinstated disputes of the day's documents (in) and what the payouts arriving that day carried (out), "
    "Decimal text at NetSuite's precision. `reconciliation` adds up every day since SYNC_START_DATE.",
)
@each_day
@scoped
def stripe_undeposited_movements(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    stripe_payouts: pd.DataFrame,
    stripe_balance_transactions: pd.DataFrame,
    netsuite_customer_payments: pd.DataFrame,
    netsuite_deposits: pd.DataFrame,
    field_mapping: FieldMappingResource,
) -> pd.DataFrame:
    # What the day's writers left in NetSuite: the movements of records they held back are marked as such.
    payments = netsuite_customer_payments[netsuite_customer_payments["action"].isin(IN_TARGET)]
    deposits = netsuite_deposits[netsuite_deposits["record_type"] == cash.DEPOSIT]
    held_deposits = set(deposits.loc[~deposits["action"].isin(IN_TARGET), "source_id"])
    rows = undeposited.day_movements(
        read_trees(stripe_invoices),
        read_trees(stripe_charges),
        payout_trees(stripe_payouts, stripe_balance_transactions),
        field_mapping.load(),
        settings.start_date(),
        in_netsuite=set(payments["external_id"]),
        deposited=set(deposits["source_id"]) - held_deposits,
    )
    # A partial run's frame is that run's own file (io_managers.py): the day's stays the last whole day's.
    partial = is_partial_run(context.run.run_config)
    context.add_output_metadata(
        {
            "movements": dg.MetadataValue.md(amounts_markdown(rows, undeposited.MOVEMENT_COLUMNS, "None.")),
            "scope": "partial" if partial else WHOLE_DAY,
        }
    )
    return pd.DataFrame(rows, columns=undeposited.MOVEMENT_COLUMNS)


@dg.asset(
    group_name="quality",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    # Reads count against NetSuite's concurrency limit as writes do: in the pool with the writers.
    pool=NETSUITE_POOL,
    deps=["netsuite_deposits", "netsuite_customer_refunds"],
    check_specs=[
        daily_check(
            BOOKS_CHECK,
            asset="reconciliation",
            description="Read back from NetSuite, per currency: invoiced, credited, collected, refunded, disputed, "
            "open receivables, paid out and fees equal Stripe's own figures for the day, document by document, and "
            "Undeposited Funds at the end of the day equals what Stripe collected since SYNC_START_DATE less what "
            "its payouts carried.",
        )
    ],
    description="The day's books from both systems, per currency and category (Decimal text): Stripe's figures, "
    "NetSuite's read back by external id (Undeposited Funds: its balance by SuiteQL), the difference; then every "
    "document that differs.",
)
@each_day
@scoped
def reconciliation(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    stripe_payouts: pd.DataFrame,
    stripe_balance_transactions: pd.DataFrame,
    stripe_undeposited_movements: pd.DataFrame,
    netsuite_deposit_plan: pd.DataFrame,
    netsuite: NetSuiteResource,
    field_mapping: FieldMappingResource,
    io_manager: dg.ResourceParam[ParquetIOManager],
):
    fm = field_mapping.load()
    day = context.partition_key
    if is_partial_run(context.run.run_config):
        # Its inputs hold only the documents its events named, not the day's movements.
        moved, why_not = None, "Undeposited Funds are compared by whole-day runs, not by a partial (event) run."
    else:
        movements_key = dg.AssetKey([*context.asset_key.path[:-1], MOVEMENTS])
        stored = io_manager.stored_days(movements_key, days_before(day))
        own = stripe_undeposited_movements.to_dict("records")
        moved, why_not = movements_through(own, stored, account_of(context))
    summary, differences = reconcile_day(
        netsuite.get_client(),
        fm,
        read_trees(stripe_invoices),
        read_trees(stripe_charges),
        payout_trees(stripe_payouts, stripe_balance_transactions),
        planned_deposits(netsuite_deposit_plan),
        None if moved is None else (day, moved),
        known_held=True,
    )
    frame = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
    table = amounts_markdown(summary, SUMMARY_COLUMNS, "Nothing happened this day.")
    off = amounts_markdown(differences[:50], DIFFERENCE_COLUMNS, "No differences.")
    not_compared = {"undeposited_funds_not_comparable": why_not} if why_not else {}
    yield dg.Output(
        frame,
        metadata={
            "by_currency_and_category": dg.MetadataValue.md(table),
            "differences": len(differences),
            "first_differences": dg.MetadataValue.md(off),
            **not_compared,
            **plot_metadata(summary),
        },
    )
    yield dg.AssetCheckResult(
        check_name=BOOKS_CHECK,
        passed=not differences,
        metadata={
            "documents_compared": sum(int(r["documents"]) for r in summary if r["category"] != UNDEPOSITED),
            "differences": len(differences),
            "first_differences": dg.MetadataValue.md(off),
            "by_currency_and_category": dg.MetadataValue.md(table),
            **not_compared,
        },
        description=None
        if not differences
        else f"{len(differences)} document(s) differ between NetSuite and Stripe: "
        + "; ".join(f"{d['document']} {d['category']} {d['stripe']} vs {d['netsuite']}" for d in differences[:3]),
    )
