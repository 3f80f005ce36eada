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
- fees: the payouts' fees (fee_details and Stripe's fee transactions) -> the deposits' lines on fee accounts.

Each category is a sum per currency (Decimal text, at NetSuite's precision) and, under it, one row per document
that differs. Numeric metadata per currency (`stripe_invoiced_usd`, `netsuite_invoiced_usd`, ...) feeds Dagster's
Plots tab; the exact amounts are in the tables. `sync-pipeline reconcile` runs the same comparison from a shell.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline.assets.cash import fee_accounts, payout_trees, planned_deposits
from sync_pipeline.assets.netsuite import NETSUITE_POOL, records_by_external_id, suiteql_in
from sync_pipeline.assets.stripe import read_trees
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.mapping import cash
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
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.report import amounts_markdown, plot_metadata

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


def _mapped(currency: object, fm: FieldMapping) -> str | None:
    code = str(currency or "").upper()
    return code if fm.currency(code) is not None else None


def _charge_figures(charge: Mapping, fm: FieldMapping) -> list[Expected]:
    out: list[Expected] = []
    code = _mapped(charge.get("currency"), fm)
    if code is None or charge.get("status") != "succeeded" or charge.get("captured") is False:
        return out
    amount = _amount(charge.get("amount_captured") or charge.get("amount") or 0, code, fm)
    out.append(Expected("collected", ns.CUSTOMER_PAYMENT, (netsuite_external_id(charge["id"]),), code, amount))
    return out


def _refund_figures(refund: Mapping, fm: FieldMapping) -> list[Expected]:
    code = _mapped(refund.get("currency"), fm)
    if code is None or refund.get("status") != "succeeded":
        return []
    eid = netsuite_external_id(refund["id"])
    return [Expected("refunded", ns.CUSTOMER_REFUND, (eid,), code, _amount(refund.get("amount") or 0, code, fm))]


def _dispute_figures(dispute: Mapping, fm: FieldMapping) -> list[Expected]:
    code = _mapped(dispute.get("currency"), fm)
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
        code = _mapped(invoice.get("currency"), fm)
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
        code = _mapped(payout.get("currency"), fm)
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
    order = {c: i for i, c in enumerate(CATEGORIES)}
    summary = [
        {
            "currency": code,
            "category": category,
            "documents": str(count),
            "stripe": str(stripe),
            "netsuite": str(_like(netsuite, stripe)),
            "difference": str(_like(stripe - netsuite, stripe)),
        }
        for (code, category), (count, stripe, netsuite) in sorted(
            sums.items(), key=lambda kv: (kv[0][0], order[kv[0][1]])
        )
    ]
    return summary, differences


def reconcile_day(
    client: NetSuiteClient,
    fm: FieldMapping,
    invoice_trees: Iterable[Mapping],
    charge_trees: Iterable[Mapping],
    payouts: Iterable[tuple[Mapping, Sequence[Mapping]]],
    deposits_of: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list, list]:
    """One day's books: Stripe's figures against NetSuite's, read back now (summary, differences)."""
    expected = stripe_document_figures(invoice_trees, charge_trees, fm)
    expected += stripe_payout_figures(payouts, fm, deposits_of or {})
    return compare_books(expected, _netsuite_figures(client, expected, fm))


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
            "open receivables, paid out and fees equal Stripe's own figures for the day, document by document.",
        )
    ],
    description="The day's books from both systems, per currency and category (Decimal text): Stripe's figures, "
    "NetSuite's read back by external id, the difference; then every document that differs.",
)
@each_day
@scoped
def reconciliation(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    stripe_payouts: pd.DataFrame,
    stripe_balance_transactions: pd.DataFrame,
    netsuite_deposit_plan: pd.DataFrame,
    netsuite: NetSuiteResource,
    field_mapping: FieldMappingResource,
):
    fm = field_mapping.load()
    summary, differences = reconcile_day(
        netsuite.get_client(),
        fm,
        read_trees(stripe_invoices),
        read_trees(stripe_charges),
        payout_trees(stripe_payouts, stripe_balance_transactions),
        planned_deposits(netsuite_deposit_plan),
    )
    frame = pd.DataFrame(summary, columns=SUMMARY_COLUMNS)
    table = amounts_markdown(summary, SUMMARY_COLUMNS, "Nothing happened this day.")
    off = amounts_markdown(differences[:50], DIFFERENCE_COLUMNS, "No differences.")
    yield dg.Output(
        frame,
        metadata={
            "by_currency_and_category": dg.MetadataValue.md(table),
            "differences": len(differences),
            "first_differences": dg.MetadataValue.md(off),
            **plot_metadata(summary),
        },
    )
    yield dg.AssetCheckResult(
        check_name=BOOKS_CHECK,
        passed=not differences,
        metadata={
            "documents_compared": sum(int(r["documents"]) for r in summary),
            "differences": len(differences),
            "first_differences": dg.MetadataValue.md(off),
            "by_currency_and_category": dg.MetadataValue.md(table),
        },
        description=None
        if not differences
        else f"{len(differences)} document(s) differ between NetSuite and Stripe: "
        + "; ".join(f"{d['document']} {d['category']} {d['stripe']} vs {d['netsuite']}" for d in differences[:3]),
    )
