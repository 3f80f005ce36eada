"""The third leg of the reconciliation: each billed Closed-Won deal in Salesforce, Stripe and NetSuite.

`deal_reconciliation` (unpartitioned, group salesforce, after the write-back) reads the Closed-Won opportunities
that carry a Stripe id from Salesforce, the subscription or invoice under that id from Stripe, and the NetSuite
invoice `stripe-<in_…>` by external id (SuiteQL), and lists every difference: the opportunity's amount against
what Stripe billed, Stripe's invoice total against NetSuite's, the currencies, and the written-back
`Billing_Status__c` against Stripe's. The comparison and its rules are `mapping/deal_reconciliation.py`'s.
"""

import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

import dagster as dg
import pandas as pd
import stripe as stripe_sdk

from sync_pipeline.assets import salesforce as salesforce_assets
from sync_pipeline.assets.netsuite import NETSUITE_POOL, records_by_external_id
from sync_pipeline.assets.stripe import with_all_lines
from sync_pipeline.mapping import deal_reconciliation as deals
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping import salesforce_writeback as writeback
from sync_pipeline.mapping.external_ids import netsuite_external_id
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteResource
from sync_pipeline.resources.salesforce import SalesforceResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.writers.report import amounts_markdown
from sync_pipeline.writers.salesforce_writeback import current_invoice, refunded_minor

DEALS_CHECK = "deals_match_stripe_and_netsuite"
OPPORTUNITY_FIELDS = (
    "Id, Name, Amount, CurrencyIsoCode, Stripe_Subscription_Id__c, Stripe_Invoice_Id__c, NetSuite_Invoice_Id__c, "
    f"Billing_Status__c, {writeback.REASON_FIELD}"
)
BILLED_WON = " WHERE IsWon = true AND (Stripe_Subscription_Id__c != null OR Stripe_Invoice_Id__c != null)"
SHOWN = 50  # difference rows in the Markdown tables


def read_billed_opportunities(salesforce: SalesforceResource) -> list[dict[str, Any]]:
    """Closed-Won opportunities with a Stripe id written back (billed, by the pipeline or adopted)."""
    return [
        {k: v for k, v in r.items() if k != "attributes"}
        for r in salesforce.select("Opportunity", OPPORTUNITY_FIELDS, BILLED_WON)
    ]


def _missing(error: stripe_sdk.StripeError) -> bool:
    return isinstance(error, stripe_sdk.InvalidRequestError) and error.code == "resource_missing"


def _subscription_first_invoice(
    stripe: StripeResource, subscription: Mapping[str, Any], latest: dict[str, Any] | None
) -> dict[str, Any] | None:
    if latest is not None and latest.get("billing_reason") == deals.FIRST_INVOICE_REASON:
        return latest
    customer = subscription.get("customer")
    customer_id = customer.get("id") if isinstance(customer, dict) else customer
    if not customer_id:
        return latest
    found = deals.first_invoice(list(stripe.list_invoices(customer=str(customer_id))), str(subscription["id"]))
    return dict(found) if found is not None else latest


def stripe_side(
    stripe: StripeResource, stripe_id: str, now: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None, str]:
    """(the billed subscription or invoice, the invoice that bills the deal with all its lines, the status Stripe's
    current invoice calls for). (None, None, "") when Stripe has no object under the id."""
    try:
        billed = (
            stripe.retrieve_subscription(stripe_id)
            if stripe_id.startswith("sub_")
            else stripe.retrieve_invoice(stripe_id)
        )
        current = current_invoice(stripe, stripe_id)
    except stripe_sdk.StripeError as error:
        if _missing(error):
            return None, None, ""
        raise
    status = writeback.billing_status(current, refunded_minor(current), now) if current else writeback.NOT_BILLED
    invoice = _subscription_first_invoice(stripe, billed, current) if stripe_id.startswith("sub_") else current
    return billed, (with_all_lines(stripe, invoice) if invoice else None), status


def netsuite_invoices(
    client: NetSuiteClient, fm: FieldMapping, invoice_ids: Sequence[str]
) -> dict[str, deals.NetSuiteInvoice]:
    """Stripe invoice id -> the NetSuite invoice `stripe-<id>` read back (total, currency) by SuiteQL."""
    by_external = {netsuite_external_id(i): i for i in invoice_ids}
    if not by_external:
        return {}
    # The same SuiteQL read of transactions by external id as the NetSuite writers' duplicate check.
    rows = records_by_external_id(client, ns.INVOICE, sorted(by_external), "id, externalid, foreigntotal, currency")
    codes = {str(c.netsuite_id): code for code, c in fm.currencies.items()}
    return {
        by_external[str(row["externalid"])]: deals.NetSuiteInvoice(
            internal_id=str(row["id"]),
            total=deals.exact_amount(row.get("foreigntotal")) or Decimal(0),
            currency=codes.get(str(row.get("currency")), ""),
        )
        for row in rows
        if str(row.get("externalid")) in by_external
    }


def read_deals(
    salesforce: SalesforceResource,
    stripe: StripeResource,
    client: NetSuiteClient,
    fm: FieldMapping,
    now: int | None = None,
) -> list[deals.Deal]:
    """Every billed Closed-Won deal with what Salesforce, Stripe and NetSuite hold for it, read now."""
    moment = int(now if now is not None else time.time())
    sides = {}
    for opportunity in read_billed_opportunities(salesforce):
        stripe_id = str(opportunity.get("Stripe_Subscription_Id__c") or opportunity.get("Stripe_Invoice_Id__c"))
        sides[opportunity["Id"]] = (opportunity, *stripe_side(stripe, stripe_id, moment))
    booked = netsuite_invoices(client, fm, sorted({i["id"] for _, _, i, _ in sides.values() if i}))
    out = []
    for opportunity, billed, invoice, status in sides.values():
        currency = str((invoice or {}).get("currency") or "")
        out.append(
            deals.Deal(
                opportunity=opportunity,
                billed=billed,
                invoice=invoice,
                stripe_status=status,
                netsuite=booked.get(invoice["id"]) if invoice else None,
                netsuite_precision=fm.netsuite_precision(currency) if currency else 2,
            )
        )
    return out


def reconcile_deals(
    salesforce: SalesforceResource,
    stripe: StripeResource,
    client: NetSuiteClient,
    fm: FieldMapping,
    now: int | None = None,
) -> deals.Comparison:
    """The difference rows of every billed Closed-Won deal (`deal_reconciliation.COLUMNS`), and the counts."""
    return deals.compare_deals(read_deals(salesforce, stripe, client, fm, now))


def _description(comparison: deals.Comparison) -> str | None:
    if not comparison.rows:
        return None
    listed = "; ".join(
        f"{r['opportunity']} {r['field']}: Salesforce {r['salesforce'] or '-'}, Stripe {r['stripe'] or '-'}, "
        f"NetSuite {r['netsuite'] or '-'}"
        + (f" (difference {r['difference']} {r['currency']})" if r["difference"] else "")
        for r in comparison.rows[:3]
    )
    return f"{comparison.deals_differing} of {comparison.compared} billed deal(s) differ: {listed}"


@dg.asset(
    group_name=salesforce_assets.GROUP,
    # Its SuiteQL reads count against NetSuite's concurrency limit: in the pool with the writers.
    pool=NETSUITE_POOL,
    deps=[salesforce_assets.salesforce_billing_writeback],
    check_specs=[
        dg.AssetCheckSpec(
            DEALS_CHECK,
            asset="deal_reconciliation",
            description="Every billed Closed-Won opportunity: its Amount equals what Stripe billed (the billing "
            "invoice's lines), Stripe's invoice total equals the NetSuite invoice's, the currencies agree, and "
            "Billing_Status__c is the status Stripe's invoice calls for.",
        )
    ],
    description="Billed Closed-Won deals read back from Salesforce, Stripe and NetSuite: one row per difference "
    "(opportunity, field, Salesforce, Stripe and NetSuite values, difference), amounts as Decimal text.",
)
def deal_reconciliation(
    context: dg.AssetExecutionContext,
    salesforce: SalesforceResource,
    stripe: StripeResource,
    netsuite: NetSuiteResource,
    field_mapping: FieldMappingResource,
):
    comparison = reconcile_deals(salesforce, stripe, netsuite.get_client(), field_mapping.load())
    table = amounts_markdown(comparison.rows[:SHOWN], deals.COLUMNS, "No differences.")
    counts = {
        "deals_compared": comparison.compared,
        "deals_differing": comparison.deals_differing,
        "differences": len(comparison.rows),
        "awaiting_netsuite": len(comparison.awaiting_netsuite),
    }
    context.log.info(f"deal reconciliation: {counts}")
    yield dg.Output(
        pd.DataFrame(comparison.rows, columns=deals.COLUMNS),
        metadata={
            **counts,
            "first_differences": dg.MetadataValue.md(table),
            "not_in_netsuite_yet": dg.MetadataValue.md(", ".join(comparison.awaiting_netsuite[:SHOWN]) or "None."),
        },
    )
    yield dg.AssetCheckResult(
        check_name=DEALS_CHECK,
        passed=not comparison.rows,
        metadata={**counts, "first_differences": dg.MetadataValue.md(table)},
        description=_description(comparison),
    )
