"""Receivables read back from NetSuite and compared with Stripe's own figures (never with the plan).

Per partition, after every writer: each finalized Stripe invoice's total and amount remaining against the
NetSuite invoice's (invariant 1 of issue 11), and per currency the cash in Undeposited Funds against the Stripe
charges that succeeded (invariant 4): money paid outside Stripe must never be there. Amounts are compared at
NetSuite's precision, and shown as Decimal text.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline.assets.netsuite import _currency_codes, _suiteql_rows
from sync_pipeline.assets.stripe import read_trees
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.external_ids import netsuite_external_id, out_of_band_external_id
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import to_precision
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.netsuite import NetSuiteResource

RECEIVABLES_CHECK = "receivables_match_stripe"
DIFFERENCE_COLUMNS = ["document", "record_type", "currency", "field", "stripe", "netsuite", "difference"]


@dataclass(frozen=True)
class ExpectedDocument:
    external_id: str
    record_type: str
    currency: str
    total: Decimal
    remaining: Decimal | None  # None: not compared (a credit's unapplied amount depends on later days)


def expected_documents(invoice_trees: Iterable[Mapping], fm: FieldMapping) -> list[ExpectedDocument]:
    """What NetSuite must hold for the partition's finalized invoices, from Stripe's figures alone."""
    out = []
    for tree in invoice_trees:
        invoice = tree["invoice"]
        status = invoice.get("status")
        if status not in ns.FINALIZED_INVOICE_STATUSES or not invoice.get("currency"):
            continue
        code = str(invoice["currency"]).upper()
        if fm.currency(code) is None:
            continue  # held back as UNMAPPED_CURRENCY: sync_exceptions reports it
        places = fm.netsuite_precision(code)
        total = int(invoice.get("total") or 0)
        eid = netsuite_external_id(invoice["id"])
        if total < 0:
            out.append(ExpectedDocument(eid, ns.CREDIT_MEMO, code, to_precision(-total, code, places), None))
            continue
        remaining = int(invoice.get("amount_remaining") or 0)
        # Closed by Stripe: nothing is open in NetSuite either, except an uncollectible one left open by policy.
        if status == "void" or (status == "uncollectible" and fm.uncollectible_invoices == "bad_debt"):
            remaining = 0
        out.append(
            ExpectedDocument(
                eid, ns.INVOICE, code, to_precision(total, code, places), to_precision(remaining, code, places)
            )
        )
    return out


def stripe_collected(
    invoice_trees: Iterable[Mapping], charge_trees: Iterable[Mapping], fm: FieldMapping
) -> tuple[dict[str, Decimal], list[str], list[str]]:
    """Per currency, the charges that succeeded (invoiced ones and invoice-less ones): all Undeposited Funds may
    hold for this partition. Also the customer payments' external ids to read back: the charges' and the
    out-of-band ones (which must not be in Undeposited Funds)."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    charge_ids: list[str] = []
    out_of_band_ids: list[str] = []
    seen: set[str] = set()

    def add(charge: Mapping) -> None:
        if charge.get("id") in seen or charge.get("status") != "succeeded" or charge.get("captured") is False:
            return
        code = str(charge.get("currency") or "").upper()
        if fm.currency(code) is None:
            return
        seen.add(charge["id"])
        amount = int(charge.get("amount_captured") or charge.get("amount") or 0)
        totals[code] += to_precision(amount, code, fm.netsuite_precision(code))
        charge_ids.append(netsuite_external_id(charge["id"]))

    for tree in invoice_trees:
        for charge in tree.get("charges") or ():  # the charges behind the invoice's payments
            if isinstance(charge, Mapping):
                add(charge)
        invoice = tree["invoice"]
        if invoice.get("status") == "paid":
            out_of_band_ids.append(out_of_band_external_id(invoice["id"]))
    for tree in charge_trees:
        add(tree["charge"])
    return dict(totals), charge_ids, out_of_band_ids


def compare_documents(
    expected: Sequence[ExpectedDocument], rows: Iterable[Mapping], codes: Mapping[str, str]
) -> list[dict[str, str]]:
    """One difference row per document whose NetSuite total or amount remaining is not Stripe's."""
    by_eid = {str(row.get("externalid")): row for row in rows}
    differences = []
    for doc in expected:
        row = by_eid.get(doc.external_id)
        if row is None:
            differences.append(_difference(doc, "in NetSuite", "yes", "missing", ""))
            continue
        netsuite_total = abs(Decimal(str(row.get("foreigntotal") or "0")))
        if netsuite_total != doc.total:
            differences.append(_difference(doc, "total", doc.total, netsuite_total, doc.total - netsuite_total))
        if doc.remaining is not None:
            netsuite_remaining = Decimal(str(row.get("foreignamountremaining") or "0"))
            if netsuite_remaining != doc.remaining:
                differences.append(
                    _difference(
                        doc, "amount remaining", doc.remaining, netsuite_remaining, doc.remaining - netsuite_remaining
                    )
                )
    return differences


def _difference(doc: ExpectedDocument, what: str, stripe: object, netsuite: object, diff: object) -> dict[str, str]:
    return {
        "document": doc.external_id,
        "record_type": doc.record_type,
        "currency": doc.currency,
        "field": what,
        "stripe": str(stripe),
        "netsuite": str(netsuite),
        "difference": str(diff),
    }


def undeposited_funds(
    rows: Iterable[Mapping], codes: Mapping[str, str], payments_account: str | None
) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        if payments_account and str(row.get("account")) == str(payments_account):
            code = codes.get(str(row.get("currency")), f"currency {row.get('currency')}")
            totals[code] += abs(Decimal(str(row.get("foreigntotal") or "0")))
    return dict(totals)


@dg.asset(
    group_name="quality",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    deps=["netsuite_customer_refunds"],
    check_specs=[
        dg.AssetCheckSpec(
            RECEIVABLES_CHECK,
            asset="receivables_reconciliation",
            description="Read back from NetSuite: every Stripe invoice's total and amount remaining, and the cash in "
            "Undeposited Funds per currency, equal Stripe's own figures.",
        )
    ],
    description="The partition's receivables read back from NetSuite (SuiteQL) and compared with Stripe: one row per "
    "difference (document, field, Stripe's amount, NetSuite's, the difference), as Decimal text.",
)
def receivables_reconciliation(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    netsuite: NetSuiteResource,
    field_mapping: FieldMappingResource,
):
    fm = field_mapping.load()
    client = netsuite.get_client()
    codes = _currency_codes(fm)
    expected = expected_documents(read_trees(stripe_invoices), fm)
    rows: list[dict] = []
    for record_type in (ns.INVOICE, ns.CREDIT_MEMO):
        eids = [d.external_id for d in expected if d.record_type == record_type]
        if eids:
            rows += _suiteql_rows(
                client, record_type, eids, "id, externalid, currency, foreigntotal, foreignamountremaining"
            )
    differences = compare_documents(expected, rows, codes)
    collected, charge_ids, out_of_band_ids = stripe_collected(
        read_trees(stripe_invoices), read_trees(stripe_charges), fm
    )
    payment_rows = (
        _suiteql_rows(
            client, ns.CUSTOMER_PAYMENT, charge_ids + out_of_band_ids, "id, externalid, currency, foreigntotal, account"
        )
        if charge_ids or out_of_band_ids
        else []
    )
    undeposited = undeposited_funds(payment_rows, codes, fm.accounts.payments)
    cash_rows = []
    for code in sorted(set(collected) | set(undeposited)):
        stripe_amount, netsuite_amount = collected.get(code, Decimal(0)), undeposited.get(code, Decimal(0))
        cash_rows.append(
            {"currency": code, "stripe_charges": str(stripe_amount), "undeposited_funds": str(netsuite_amount)}
        )
        if stripe_amount != netsuite_amount:
            differences.append(
                {
                    "document": f"Undeposited Funds ({code})",
                    "record_type": ns.CUSTOMER_PAYMENT,
                    "currency": code,
                    "field": "succeeded charges",
                    "stripe": str(stripe_amount),
                    "netsuite": str(netsuite_amount),
                    "difference": str(stripe_amount - netsuite_amount),
                }
            )
    frame = pd.DataFrame(differences, columns=DIFFERENCE_COLUMNS)
    # disable_numparse: tabulate would read "12.50" as a number and print 12.5; people read exact amounts.
    table = frame.head(50).to_markdown(index=False, disable_numparse=True) if len(frame) else "No differences."
    yield dg.Output(
        frame,
        metadata={
            "documents_checked": len(expected),
            "differences": len(frame),
            "cash_by_currency": dg.MetadataValue.md(
                pd.DataFrame(cash_rows, columns=["currency", "stripe_charges", "undeposited_funds"]).to_markdown(
                    index=False, disable_numparse=True
                )
                if cash_rows
                else "No cash."
            ),
            "first_differences": dg.MetadataValue.md(table),
        },
    )
    yield dg.AssetCheckResult(
        check_name=RECEIVABLES_CHECK,
        passed=frame.empty,
        metadata={"documents_checked": len(expected), "differences": len(frame)},
        description=None
        if frame.empty
        else f"{len(frame)} difference(s) between NetSuite and Stripe; see receivables_reconciliation",
    )
