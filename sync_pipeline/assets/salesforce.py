"""Salesforce → Stripe assets: accounts and opportunities read incrementally, Closed-Won billing in Stripe,
the write-back of ids and status, and the flow's exceptions.

The engine is in `sync_pipeline/writers/`: `stripe_billing` (billed once, and how that holds) and
`salesforce_writeback`. These assets read Salesforce, move the cursors and report.

These assets are unpartitioned: billing and the write-back belong to no day, so their exceptions have
no partition key and are shown by `salesforce_sync_exceptions` (not by the daily `sync_exceptions`).
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipeline.mapping import salesforce_writeback as writeback
from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.mapping.field_mapping import billing_start_problem
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.resources.salesforce import SalesforceResource, modified_since, newest_modstamp
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.writers.report import Action, Report, open_exceptions_output
from sync_pipeline.writers.salesforce_writeback import write_back
from sync_pipeline.writers.stripe_billing import (
    bill_opportunities,
    count_billings,
    deal_counts,
    read_opportunities,
    read_opportunities_by_id,
    retry_queue,
)

GROUP = "salesforce"
ACCOUNT_CURSOR = "salesforce_accounts"
OPPORTUNITY_CURSOR = "salesforce_opportunities"
BILLED_ONCE_CHECK = "billed_once"
OPPORTUNITY_SNAPSHOT_COLUMNS = [
    "Id",
    "Name",
    "AccountId",
    "AccountName",
    "AccountStripeCustomerId",
    "StageName",
    "IsWon",
    "Amount",
    "CurrencyIsoCode",
    "SystemModstamp",
    "Stripe_Subscription_Id__c",
    "Stripe_Invoice_Id__c",
    "opportunity_json",
]


def opportunity_frame(opportunities: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """A flat, string-typed view for the asset's preview plus the whole record as JSON.

    The nested query result (line items, Account) cannot be a DataFrame column without losing shape
    through the IO manager, so the billing step reads it back from `opportunity_json` unchanged.
    Columns are stringified so a column of mixed None/number does not become float (an `Amount` of
    1200 shown as 1200.0).
    """
    rows = [
        {
            **{c: (str(o.get(c)) if o.get(c) is not None else None) for c in OPPORTUNITY_SNAPSHOT_COLUMNS[:-1]},
            "IsWon": bool(o.get("IsWon")),
            "opportunity_json": json.dumps(o, default=str, sort_keys=True),
        }
        for o in opportunities
    ]
    return pd.DataFrame(rows, columns=OPPORTUNITY_SNAPSHOT_COLUMNS)


def opportunities_from_frame(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [json.loads(text) for text in frame["opportunity_json"]] if len(frame) else []


@dg.asset(
    group_name=GROUP,
    description="Salesforce Accounts changed since the last run (SystemModstamp high-water "
    "mark with a look-back), as a snapshot.",
)
def salesforce_accounts(
    context: dg.AssetExecutionContext, salesforce: SalesforceResource, ledger: LedgerResource
) -> pd.DataFrame:
    store = ledger.get_ledger()
    cursor = store.get_cursor(ACCOUNT_CURSOR)
    records = list(salesforce.select("Account", billing.ACCOUNT_FIELDS, modified_since(cursor)))
    # Salesforce adds `attributes` ({type, url}) to every query record; it is metadata, not an Account field.
    # The columns come from the field list so a run that reads nothing still has the snapshot's shape.
    frame = pd.DataFrame(
        [{k: v for k, v in r.items() if k != "attributes"} for r in records],
        columns=[c.strip() for c in billing.ACCOUNT_FIELDS.split(",")],
    ).astype(object)
    # Accounts are only read here, not acted on, so the cursor can move as soon as they are read; the
    # look-back in `modified_since` re-reads the last minutes to catch rows committed with an older stamp.
    newest = newest_modstamp(records, cursor)
    if newest:
        store.set_cursor(ACCOUNT_CURSOR, newest)
    context.add_output_metadata({"accounts": len(frame), "high_water_mark": newest or "", "since": cursor or ""})
    return frame


@dg.asset(
    group_name=GROUP,
    description="Salesforce Opportunities (with line items and their Account) changed since "
    "the last billing run; the cursor moves when billing has finished.",
)
def salesforce_opportunities(
    context: dg.AssetExecutionContext, salesforce: SalesforceResource, ledger: LedgerResource
) -> pd.DataFrame:
    # The cursor is read but not moved here: billing may still fail, and the opportunities it missed must
    # be read again by the next run (`stripe_billing_from_opportunities` moves it afterwards).
    cursor = ledger.get_ledger().get_cursor(OPPORTUNITY_CURSOR)
    opportunities = read_opportunities(salesforce, modified_since(cursor))
    frame = opportunity_frame(opportunities)
    context.add_output_metadata(
        {"opportunities": len(frame), "closed_won": int(frame["IsWon"].sum()), "since": cursor or ""}
    )
    return frame


def billed_once_check(stripe: StripeResource, report: Report) -> dg.AssetCheckResult:
    """Each opportunity billed by this run has exactly one subscription or one-off invoice in Stripe."""
    # Counted in Stripe itself, not in the ledger: a duplicate caused by a lost response or a concurrent
    # run is only visible there. Only this run's creations are checked, to keep the Stripe reads bounded.
    counts = {
        o.external_id: count_billings(stripe, o.external_id, o.detail["stripe_customer_id"])
        for o in report.outcomes
        if o.action == Action.CREATED
    }
    wrong = {opportunity: n for opportunity, n in counts.items() if n != 1}
    return dg.AssetCheckResult(
        check_name=BILLED_ONCE_CHECK,
        passed=not wrong,
        metadata={"checked": len(counts), "not_exactly_once": dg.MetadataValue.json(wrong)},
        description=", ".join(f"{o} is billed {n} times in Stripe" for o, n in wrong.items()) or None,
    )


@dg.asset(
    group_name=GROUP,
    description="Each Closed-Won opportunity billed once in Stripe: a customer for its "
    "Account, then a subscription (recurring prices; one-time ones such as a setup fee on its first "
    "invoice) or a one-off invoice (one-time prices only).",
    check_specs=[
        dg.AssetCheckSpec(
            BILLED_ONCE_CHECK,
            asset="stripe_billing_from_opportunities",
            description="Every opportunity billed by the run has exactly one Stripe "
            "subscription or one-off invoice (listed by customer).",
        )
    ],
)
def stripe_billing_from_opportunities(
    context: dg.AssetExecutionContext,
    salesforce_opportunities: pd.DataFrame,
    salesforce: SalesforceResource,
    stripe: StripeResource,
    ledger: LedgerResource,
    field_mapping: FieldMappingResource,
):
    config = field_mapping.load()
    # Checked before anything is read or written: no start date means nothing is billed at all.
    not_started = billing_start_problem(config)
    if not_started:
        raise dg.Failure(description=not_started)
    store = ledger.get_ledger()
    opportunities = opportunities_from_frame(salesforce_opportunities)
    # Opportunities held back by an open exception are behind the cursor by now, and their fix may not touch
    # Salesforce at all (a price mapped in field_mapping.yaml, Stripe back up), so they are re-read by id;
    # those already in the window are not read twice.
    seen = {o["Id"] for o in opportunities}
    retry = [i for i in retry_queue(store) if i not in seen]
    opportunities += read_opportunities_by_id(salesforce, retry)
    report = bill_opportunities(
        opportunities,
        stripe=stripe,
        ledger=store,
        config=config.salesforce,
        run_id=context.run.run_id,
        log=context.log.info,
    )
    # Only now: a run that died above re-reads the same window next time.
    # Only the window's records move it: a retried one read by id may have changed after the window was read,
    # and its newer stamp would skip rows changed in between.
    newest = newest_modstamp(opportunities_from_frame(salesforce_opportunities), store.get_cursor(OPPORTUNITY_CURSOR))
    if newest:
        store.set_cursor(OPPORTUNITY_CURSOR, newest)
    # Failing the run (after the cursor moved, and with each failure kept as an open exception that the
    # retry queue re-reads) makes a Stripe outage visible in Dagster instead of a green run with gaps.
    # Counted per deal: a deal held back for three products is one deal held back (its three exceptions
    # are listed by salesforce_sync_exceptions).
    deals = deal_counts(report)
    failed = deals[Action.FAILED]
    if failed:
        raise dg.Failure(
            description=f"{failed} deal(s) failed to bill in Stripe; see "
            f"salesforce_sync_exceptions (retried on the next run): {deals}"
        )
    yield dg.Output(
        report.frame(),
        metadata={
            **deals,
            "exceptions": sum(1 for o in report.outcomes if o.issue is not None),
            "stripe_writes": report.writes,
            "retried": len(retry),
            "high_water_mark": newest or "",
            "first_exceptions": dg.MetadataValue.md(report.markdown()),
        },
    )
    yield billed_once_check(stripe, report)


@dg.asset(
    group_name=GROUP,
    deps=[stripe_billing_from_opportunities],
    description="Stripe and NetSuite ids and Billing_Status__c written back onto Salesforce Accounts and "
    "Opportunities (external-id upserts in sObject collections), kept current with the invoice.",
)
def salesforce_billing_writeback(
    context: dg.AssetExecutionContext, salesforce: SalesforceResource, stripe: StripeResource, ledger: LedgerResource
) -> pd.DataFrame:
    store = ledger.get_ledger()
    report = write_back(salesforce, store, stripe, run_id=context.run.run_id)
    context.add_output_metadata(
        {
            **report.counts(),
            "salesforce_records_written": report.writes,
            "first_exceptions": dg.MetadataValue.md(report.markdown()),
        }
    )
    return report.frame()


@dg.asset(
    group_name=GROUP,
    deps=[stripe_billing_from_opportunities, salesforce_billing_writeback],
    description="The open exceptions of Salesforce → Stripe billing (target stripe) and of the write-back "
    "(target salesforce): record, field, value, error and the fix in words. They belong to no "
    "day, so the daily sync_exceptions does not show them.",
)
def salesforce_sync_exceptions(ledger: LedgerResource) -> dg.Output[pd.DataFrame]:
    store = ledger.get_ledger()
    return open_exceptions_output(
        [
            *store.open_exceptions(target=billing.STRIPE_TARGET),
            *store.open_exceptions(target=writeback.SALESFORCE_TARGET),
        ]
    )
