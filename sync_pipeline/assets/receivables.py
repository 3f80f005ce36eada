"""Receivables read back from NetSuite and compared with Stripe's own figures (never with the plan).

Per partition, after every writer, read back over SuiteQL:
- each finalized Stripe invoice's total and amount remaining against the NetSuite invoice's (invariant 1 of
  issue 11);
- per currency, revenue, discount and tax lines on the day's invoices less those on their credit memos against
  Stripe's invoice lines less its credit notes and refunds (invariant 3): refunds and voids reverse their share of
  each line by the documented rule (largest remainder), so tax goes back with the revenue it belongs to;
- per currency, the cash in Undeposited Funds against the Stripe charges that succeeded (invariant 4): money
  paid outside Stripe must never be there;
- per customer of the day and currency, the open receivable (open invoices less unapplied credits and payments)
  against Stripe's (open invoices' amount_remaining less the customer's credit balance) (invariant 2), over all
  of the customer's documents; a customer with a finalized invoice not yet in NetSuite (a day not synced yet) is
  listed as not comparable rather than compared.
Amounts are compared at NetSuite's precision, and shown as Decimal text.
"""

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline import exact_json
from sync_pipeline.assets.netsuite import NETSUITE_POOL, _currency_codes, records_by_external_id, suiteql_in
from sync_pipeline.assets.stripe import in_parallel, read_trees
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day, step_memo
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.external_ids import (
    netsuite_external_id,
    out_of_band_external_id,
    refund_credit_memo_external_id,
    reversal_external_id,
    sale_invoice_external_id,
    void_credit_memo_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import allocate, to_precision
from sync_pipeline.mapping.stripe_refs import id_of
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS, daily_check
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import Ledger, LedgerResource
from sync_pipeline.resources.netsuite import NetSuiteResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.netsuite import TARGET as NETSUITE_TARGET
from sync_pipeline.writers.report import amounts_markdown

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


# -- invariant 3: revenue, discounts and tax, net of credits ------------------------------------------------

REVENUE, DISCOUNT, TAX = "revenue", "discount", "tax"
CATEGORIES = (REVENUE, DISCOUNT, TAX)


def _stripe_list(value: object) -> list:
    if isinstance(value, Mapping):
        value = value.get("data")
    return list(value) if isinstance(value, list) else []


def stripe_lines(document: Mapping) -> list[tuple[str, int]]:
    """(category, minor units) of a Stripe invoice's or credit note's lines, from Stripe's own fields: each line
    net of its inclusive tax, each discount (negative), each tax rate. The order is the documented allocation
    order: lines, discounts, credit grants, taxes by first-seen rate."""
    lines: list[tuple[str, int]] = []
    taxes: dict[str, int] = {}
    line_discounts: dict[str, int] = {}
    for line in _stripe_list(document.get("lines")):
        inclusive = 0
        for tax in _stripe_list(line.get("taxes")):
            rate = id_of((tax.get("tax_rate_details") or {}).get("tax_rate")) or ""
            taxes[rate] = taxes.get(rate, 0) + int(tax["amount"])
            inclusive += int(tax["amount"]) if tax.get("tax_behavior") == "inclusive" else 0
        for discount in _stripe_list(line.get("discount_amounts")):
            key = id_of(discount.get("discount")) or ""
            line_discounts[key] = line_discounts.get(key, 0) + int(discount["amount"])
        lines.append((REVENUE, int(line["amount"]) - inclusive))
    totals = document.get("total_discount_amounts")
    discounts = [int(d["amount"]) for d in totals] if isinstance(totals, list) else list(line_discounts.values())
    lines += [(DISCOUNT, -amount) for amount in discounts if amount]
    for credit in _stripe_list(document.get("total_pretax_credit_amounts")):
        if credit.get("type") == "credit_balance_transaction" and credit.get("amount"):
            lines.append((DISCOUNT, -int(credit["amount"])))
    if not taxes:
        for tax in _stripe_list(document.get("total_taxes")):
            if tax.get("tax_behavior") != "inclusive":
                rate = id_of((tax.get("tax_rate_details") or {}).get("tax_rate")) or ""
                taxes[rate] = taxes.get(rate, 0) + int(tax["amount"])
    lines += [(TAX, amount) for amount in taxes.values() if amount]
    return lines


def _share(lines: Sequence[tuple[str, int]], amount: int) -> list[tuple[str, int]]:
    """The documented rule for a refund or a void: `amount` spread over the lines by largest remainder."""
    whole = sum(a for _, a in lines)
    if whole <= 0 or not 0 < amount <= whole:
        return [(REVENUE, amount)]  # nothing to share over: one credit line (items.refund or default)
    return list(zip([c for c, _ in lines], allocate(amount, [a for _, a in lines]), strict=True))


@dataclass
class NetLines:
    """Per currency and category, what the day's documents should net to in NetSuite, and the documents."""

    expected: dict[tuple[str, str], Decimal]
    invoice_ids: list[str]  # NetSuite external ids of the invoices and credit memos to read back
    credit_ids: list[str]


def expected_net_lines(invoice_trees: Iterable[Mapping], charge_trees: Iterable[Mapping], fm: FieldMapping) -> NetLines:
    """Stripe's invoice lines less its credit notes, refunds and voids, per currency and category, at NetSuite's
    precision (each line rounded as the mapping sends it)."""
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    invoice_ids: list[str] = []
    credit_ids: list[str] = []

    def add(code: str, lines: Iterable[tuple[str, int]], sign: int) -> None:
        places = fm.netsuite_precision(code)
        for category, amount in lines:
            expected[(code, category)] += sign * to_precision(amount, code, places)

    for tree in invoice_trees:
        invoice = tree["invoice"]
        code = str(invoice.get("currency") or "").upper()
        if invoice.get("status") not in ns.FINALIZED_INVOICE_STATUSES or fm.currency(code) is None:
            continue
        lines = stripe_lines(invoice)
        add(code, lines, 1)
        invoice_ids += [
            netsuite_external_id(invoice["id"]),
            reversal_external_id(void_credit_memo_external_id(invoice["id"])),
        ]
        credit_ids += [netsuite_external_id(invoice["id"]), void_credit_memo_external_id(invoice["id"])]
        credit_ids.append(out_of_band_external_id(invoice["id"]))
        if invoice.get("status") == "void" and fm.void_invoices == "credit_memo" and invoice.get("amount_remaining"):
            add(code, _share(lines, int(invoice["amount_remaining"])), -1)
        noted_refunds = set()
        for note in tree.get("credit_notes") or ():
            credit_ids.append(netsuite_external_id(note["id"]))
            invoice_ids.append(reversal_external_id(netsuite_external_id(note["id"])))
            if note.get("status") == "void":
                continue  # its memo and the invoice reversing it cancel out
            add(code, stripe_lines(note), -1)
            noted_refunds |= {id_of(r.get("refund")) for r in note.get("refunds") or () if isinstance(r, Mapping)}
        for refund in tree.get("refunds") or ():
            if refund.get("status") == "succeeded" and refund["id"] not in noted_refunds:
                credit_ids.append(refund_credit_memo_external_id(refund["id"]))
                add(code, _share(lines, int(refund["amount"])), -1)
    if fm.invoiceless_charges == "sale":
        for tree in charge_trees:
            charge = tree["charge"]
            code = str(charge.get("currency") or "").upper()
            if charge.get("status") != "succeeded" or charge.get("captured") is False or fm.currency(code) is None:
                continue
            invoice_ids.append(sale_invoice_external_id(charge["id"]))
            add(code, [(REVENUE, int(charge.get("amount_captured") or charge.get("amount") or 0))], 1)
            for refund in tree.get("refunds") or ():
                if refund.get("status") == "succeeded":
                    credit_ids.append(refund_credit_memo_external_id(refund["id"]))
                    add(code, [(REVENUE, int(refund["amount"]))], -1)
    return NetLines(dict(expected), invoice_ids, credit_ids)


def line_category(item_id: object, fm: FieldMapping) -> str | None:
    """What a NetSuite item line is for the comparison: tax, discount, revenue, or None (rounding, bad debt,
    money paid outside Stripe, balance adjustments: not revenue, discount or tax)."""
    item = str(item_id) if item_id is not None else ""
    if item and item == fm.items.tax:
        return TAX
    if item and item == fm.items.discount:
        return DISCOUNT
    if item in {fm.items.rounding, fm.items.bad_debt, fm.items.out_of_band, fm.items.customer_balance}:
        return None
    return REVENUE


def netsuite_net_lines(
    documents: Iterable[Mapping], lines: Iterable[Mapping], codes: Mapping[str, str], fm: FieldMapping
) -> dict[tuple[str, str], Decimal]:
    """Invoice lines less credit memo lines per currency and category, from SuiteQL's transaction and
    transactionline rows. NetSuite posts an invoice's item lines negative (credits to income) and a credit
    memo's positive, so invoice less credit memo is minus their sum, whichever the document."""
    currency_of = {str(d.get("id")): codes.get(str(d.get("currency")), "") for d in documents}
    net: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.get("mainline") == "T":
            continue
        category = line_category(line.get("item"), fm)
        code = currency_of.get(str(line.get("transaction")))
        if category is None or not code:
            continue
        net[(code, category)] -= Decimal(str(line.get("foreignamount") or "0"))
    return dict(net)


def compare_net_lines(
    expected: Mapping[tuple[str, str], Decimal], netsuite: Mapping[tuple[str, str], Decimal]
) -> list[dict[str, str]]:
    differences = []
    for code, category in sorted(set(expected) | set(netsuite)):
        in_stripe = expected.get((code, category), Decimal(0))
        in_netsuite = netsuite.get((code, category), Decimal(0))
        if in_stripe != in_netsuite:
            differences.append(
                {
                    "document": f"{category} lines ({code})",
                    "record_type": "invoice less credit memo",
                    "currency": code,
                    "field": category,
                    "stripe": str(in_stripe),
                    "netsuite": str(in_netsuite),
                    "difference": str(in_stripe - in_netsuite),
                }
            )
    return differences


# -- invariant 2: open receivables per customer and currency ------------------------------------------------


def stripe_open_receivable(customer: Mapping, invoices: Iterable[Mapping], fm: FieldMapping) -> dict[str, Decimal]:
    """Per currency: the customer's open invoices' amount_remaining less its credit balance (Stripe's
    `balance`, negative for a credit, in the customer's currency), at NetSuite's precision."""
    still_owed = ("open", "uncollectible") if fm.uncollectible_invoices == "leave_open" else ("open",)
    out: dict[str, Decimal] = defaultdict(Decimal)
    for invoice in invoices:
        code = str(invoice.get("currency") or "").upper()
        if invoice.get("status") in still_owed and fm.currency(code) is not None:
            out[code] += to_precision(int(invoice.get("amount_remaining") or 0), code, fm.netsuite_precision(code))
    balance, code = int(customer.get("balance") or 0), str(customer.get("currency") or "").upper()
    if balance and fm.currency(code) is not None:
        out[code] += to_precision(balance, code, fm.netsuite_precision(code))
    return dict(out)


def netsuite_open_receivables(rows: Iterable[Mapping], codes: Mapping[str, str]) -> dict[tuple[str, str], Decimal]:
    """(NetSuite customer id, currency) -> open invoices less unapplied credit memos and payments."""
    out: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    sign = {"CustInvc": 1, "CustCred": -1, "CustPymt": -1}
    for row in rows:
        remaining = abs(Decimal(str(row.get("foreignamountremaining") or "0")))
        code = codes.get(str(row.get("currency")), f"currency {row.get('currency')}")
        out[(str(row.get("entity")), code)] += sign.get(str(row.get("type")), 0) * remaining
    return dict(out)


def _receivable_fields(invoice: Mapping) -> dict:
    """What the open-receivable comparison reads of an invoice: kept for a whole range step, so not the lines."""
    return {key: invoice.get(key) for key in ("id", "status", "currency", "amount_remaining")}


def _open_receivable_differences(
    stripe: StripeResource,
    ledger: Ledger,
    client,
    fm: FieldMapping,
    customers: Sequence[Mapping],
    codes: Mapping[str, str],
) -> tuple[list[dict[str, str]], int, list[str]]:
    """Invariant 2 for the day's customers: (differences, customers compared, customers not comparable yet)."""
    if fm.customers.mode == "global":
        return [], 0, []  # one NetSuite customer for all: no per-customer receivable to compare
    netsuite_ids: dict[str, str] = {}
    for customer in customers:
        linked = (customer.get("metadata") or {}).get(fm.customers.link_metadata_key or "")
        if linked:
            netsuite_ids[customer["id"]] = str(linked)
    own = ledger.lookup(NETSUITE_TARGET, ns.CUSTOMER, [netsuite_external_id(c["id"]) for c in customers])
    for customer in customers:
        entry = own.get(netsuite_external_id(customer["id"]))
        if customer["id"] not in netsuite_ids and entry is not None:
            netsuite_ids[customer["id"]] = entry.internal_id
    comparable = [c for c in customers if c["id"] in netsuite_ids]
    # Stripe's invoices of a customer as they are now, whatever the day: listed once per step of a range run (a
    # backfill), not once per day the customer appears in; NetSuite is read per day, after every day is written.
    invoices_of = step_memo("stripe_invoices_of_customer")
    unlisted = [c for c in comparable if c["id"] not in invoices_of]
    invoices_of.update(
        zip(
            [c["id"] for c in unlisted],
            in_parallel(lambda c: [_receivable_fields(i) for i in stripe.list_invoices(customer=c["id"])], unlisted),
            strict=True,
        )
    )
    finalized_of = {
        customer["id"]: [
            netsuite_external_id(i["id"])
            for i in invoices_of[customer["id"]]
            if i.get("status") in ns.FINALIZED_INVOICE_STATUSES
        ]
        for customer in comparable
    }
    # One ledger query for all the day's customers (an invoice below zero is a credit memo under its id).
    every_eid = [eid for eids in finalized_of.values() for eid in eids]
    synced = ledger.synced_external_ids(NETSUITE_TARGET, (ns.INVOICE, ns.CREDIT_MEMO), every_eid)
    not_yet: list[str] = []
    compared: list[Mapping] = []
    for customer in comparable:
        (compared if set(finalized_of[customer["id"]]) <= synced else not_yet).append(customer)
    rows = suiteql_in(
        client,
        "SELECT entity, type, currency, foreignamountremaining FROM transaction "
        "WHERE type IN ('CustInvc', 'CustCred', 'CustPymt') AND entity IN ({values})",
        sorted({netsuite_ids[c["id"]] for c in compared}),
        quote=False,
    )
    in_netsuite = netsuite_open_receivables(rows, codes)
    differences = []
    for customer in compared:
        entity = netsuite_ids[customer["id"]]
        in_stripe = stripe_open_receivable(customer, invoices_of[customer["id"]], fm)
        mine = {code: amount for (e, code), amount in in_netsuite.items() if e == entity}
        for code in sorted(set(in_stripe) | set(mine)):
            a, b = in_stripe.get(code, Decimal(0)), mine.get(code, Decimal(0))
            if a != b:
                differences.append(
                    {
                        "document": f"{netsuite_external_id(customer['id'])} (NetSuite customer {entity})",
                        "record_type": ns.CUSTOMER,
                        "currency": code,
                        "field": "open receivable",
                        "stripe": str(a),
                        "netsuite": str(b),
                        "difference": str(a - b),
                    }
                )
    return differences, len(compared), [c["id"] for c in not_yet]


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
    backfill_policy=BACKFILL_POLICY,
    # Reads count against NetSuite's concurrency limit as writes do: in the pool with the writers.
    pool=NETSUITE_POOL,
    deps=["netsuite_customer_refunds"],
    check_specs=[
        daily_check(
            RECEIVABLES_CHECK,
            asset="receivables_reconciliation",
            description="Read back from NetSuite: every Stripe invoice's total and amount remaining, revenue, discount "
            "and tax lines net of credit memos per currency, and the cash in Undeposited Funds per currency, equal "
            "Stripe's own figures.",
        )
    ],
    description="The partition's receivables read back from NetSuite (SuiteQL) and compared with Stripe: one row per "
    "difference (document, field, Stripe's amount, NetSuite's, the difference), as Decimal text.",
)
@each_day
@scoped
def receivables_reconciliation(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    stripe_customers: pd.DataFrame,
    netsuite: NetSuiteResource,
    stripe: StripeResource,
    ledger: LedgerResource,
    field_mapping: FieldMappingResource,
):
    fm = field_mapping.load()
    client = netsuite.get_client()
    codes = _currency_codes(fm)
    # Unpacked once: three comparisons walk the same documents.
    invoice_trees, charge_trees = list(read_trees(stripe_invoices)), list(read_trees(stripe_charges))
    expected = expected_documents(invoice_trees, fm)
    rows: list[dict] = []
    for record_type in (ns.INVOICE, ns.CREDIT_MEMO):
        eids = [d.external_id for d in expected if d.record_type == record_type]
        if eids:
            rows += records_by_external_id(
                client, record_type, eids, "id, externalid, currency, foreigntotal, foreignamountremaining"
            )
    differences = compare_documents(expected, rows, codes)
    collected, charge_ids, out_of_band_ids = stripe_collected(invoice_trees, charge_trees, fm)
    payment_rows = (
        records_by_external_id(
            client, ns.CUSTOMER_PAYMENT, charge_ids + out_of_band_ids, "id, externalid, currency, foreigntotal, account"
        )
        if charge_ids or out_of_band_ids
        else []
    )
    undeposited = undeposited_funds(payment_rows, codes, fm.accounts.payments)
    net = expected_net_lines(invoice_trees, charge_trees, fm)
    net_documents = records_by_external_id(
        client, ns.INVOICE, net.invoice_ids, "id, externalid, currency"
    ) + records_by_external_id(client, ns.CREDIT_MEMO, net.credit_ids, "id, externalid, currency")
    net_lines = suiteql_in(
        client,
        "SELECT transaction, item, foreignamount, mainline FROM transactionline "
        "WHERE transaction IN ({values}) AND mainline = 'F'",
        [str(d["id"]) for d in net_documents],
        quote=False,
    )
    customers = [exact_json.loads(payload) for payload in stripe_customers["payload"]]
    open_differences, customers_compared, not_yet = _open_receivable_differences(
        stripe, ledger.get_ledger(), client, fm, customers, codes
    )
    differences += open_differences
    netsuite_net = netsuite_net_lines(net_documents, net_lines, codes, fm)
    differences += compare_net_lines(net.expected, netsuite_net)
    net_rows = [
        {
            "currency": code,
            "category": category,
            "stripe": str(net.expected.get((code, category), Decimal(0))),
            "netsuite": str(netsuite_net.get((code, category), Decimal(0))),
        }
        for code, category in sorted(set(net.expected) | set(netsuite_net))
    ]
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
    table = amounts_markdown(frame.head(50).to_dict("records"), DIFFERENCE_COLUMNS, "No differences.")
    yield dg.Output(
        frame,
        metadata={
            "documents_checked": len(expected),
            "differences": len(frame),
            "cash_by_currency": dg.MetadataValue.md(
                amounts_markdown(cash_rows, ["currency", "stripe_charges", "undeposited_funds"], "No cash.")
            ),
            "net_lines_by_currency": dg.MetadataValue.md(
                amounts_markdown(net_rows, ["currency", "category", "stripe", "netsuite"], "No lines.")
            ),
            "net_lines_compared": len(net_rows),
            "customers_compared": customers_compared,
            "customers_not_comparable_yet": dg.MetadataValue.json(not_yet[:50]),
            "first_differences": dg.MetadataValue.md(table),
        },
    )
    yield dg.AssetCheckResult(
        check_name=RECEIVABLES_CHECK,
        passed=frame.empty,
        metadata={
            "documents_checked": len(expected),
            "net_lines_compared": len(net_rows),
            "customers_compared": customers_compared,
            "cash_currencies_compared": len(cash_rows),
            "differences": len(frame),
        },
        description=None
        if frame.empty
        else f"{len(frame)} difference(s) between NetSuite and Stripe; see receivables_reconciliation",
    )
