"""The exceptions report: every record that could not be synced, why, and how to fix it.

`sync_exceptions` shows a day's: the Stripe → NetSuite exceptions carry the partition of the Stripe
documents they came from. Salesforce → Stripe billing and the write-back belong to no day, so their
exceptions (target `stripe` and `salesforce`, no partition key) are in the unpartitioned
`salesforce_sync_exceptions` asset of the `salesforce` group instead, built the same way.
"""

import dagster as dg
import pandas as pd

from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.writers.report import open_exceptions_output


@dg.asset(
    group_name="quality",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    deps=[
        "netsuite_customers",
        "netsuite_invoices",
        "netsuite_customer_payments",
        "netsuite_credit_memos",
        "netsuite_customer_refunds",
        "netsuite_deposits",
    ],
    description="The partition's open sync exceptions (from the ledger's exceptions table): record, field, value, "
    "error and the fix in words, followed by the open exceptions of no day (Salesforce → Stripe billing and the "
    "write-back); the table itself holds every partition's.",
)
def sync_exceptions(context: dg.AssetExecutionContext, ledger: LedgerResource) -> dg.Output[pd.DataFrame]:
    book = ledger.get_ledger()
    # Billing and write-back exceptions belong to no day; each day's report lists them too, so an open one is never
    # missing from the report a person opens (it said "0 open" while deals were held back).
    return open_exceptions_output(
        book.open_exceptions(partition_key=context.partition_key), book.open_exceptions(without_partition=True)
    )
