"""The exceptions report: every record that could not be synced, why, and how to fix it.

`sync_exceptions` shows a day's: the Stripe → NetSuite exceptions carry the partition of the Stripe
documents they came from. Salesforce → Stripe billing and the write-back belong to no day, so their
exceptions (target `stripe` and `salesforce`, no partition key) are in the unpartitioned
`salesforce_sync_exceptions` asset of the `salesforce` group instead, built the same way.

`open_exceptions_worklist` (unpartitioned, refreshed by every day's run) is the one list of them all, oldest
first, with the Stripe customer and amount, the age and the fix; its check `no_open_exceptions` is red while
any is open. `sync-pipeline exceptions` (`exceptions_cli.py`) prints the same list and re-runs fixed days.
"""

from collections.abc import Callable, Iterator
from typing import Any

import dagster as dg
import pandas as pd

from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS
from sync_pipeline.resources.ledger import Ledger, LedgerResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.report import open_exceptions_output, worklist_frame, worklist_markdown


@dg.asset(
    group_name="quality",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
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
@each_day
@scoped
def sync_exceptions(context: dg.AssetExecutionContext, ledger: LedgerResource) -> dg.Output[pd.DataFrame]:
    book = ledger.get_ledger()
    # Billing and write-back exceptions belong to no day; each day's report lists them too, so an open one is never
    # missing from the report a person opens (it said "0 open" while deals were held back).
    return open_exceptions_output(
        book.open_exceptions(partition_key=context.partition_key), book.open_exceptions(without_partition=True)
    )


# -- the exceptions worklist: every open exception of every day and of none ----------------------------------------

WORKLIST_CHECK = "no_open_exceptions"
# Stripe look-ups for the customer and amount of exceptions whose writer did not record them, per materialization:
# each is remembered in the ledger, so a backlog is filled in over a few runs instead of slowing one down.
STRIPE_LOOKUPS_PER_RUN = 200


def _customer_id(customer: object) -> str | None:
    if isinstance(customer, dict):
        return customer.get("id")
    return customer if isinstance(customer, str) else None


def stripe_context(stripe: StripeResource, source_id: str) -> dict[str, Any] | None:
    """The Stripe customer, currency and amount (minor units) of the Stripe object an exception came from, as Stripe
    holds it now; None for an object that is not an invoice, charge, refund, credit note or customer."""
    if source_id.startswith("in_"):
        obj = stripe.retrieve_invoice(source_id)
        amount = obj.get("total")
    elif source_id.startswith(("ch_", "py_")):
        obj = stripe.retrieve_charge(source_id)
        amount = obj.get("amount")
    elif source_id.startswith(("re_", "pyr_")):
        obj = stripe.retrieve_refund(source_id)
        charge = obj.get("charge")
        amount = obj.get("amount")
        obj = {**obj, "customer": charge.get("customer") if isinstance(charge, dict) else None}
    elif source_id.startswith("cn_"):
        obj = stripe.retrieve_credit_note(source_id)
        amount = obj.get("total")
    elif source_id.startswith("cus_"):
        return {"stripe_customer": source_id}
    else:
        return None
    context = {"stripe_customer": _customer_id(obj.get("customer"))}
    currency = obj.get("currency")
    if isinstance(amount, int) and not isinstance(amount, bool) and isinstance(currency, str) and currency:
        context.update(currency=currency.upper(), amount_minor=amount)
    return {k: v for k, v in context.items() if v is not None} or None


def fill_stripe_context(
    rows: list[dict],
    book: Ledger,
    stripe: StripeResource,
    log: Callable[[str], None],
    limit: int = STRIPE_LOOKUPS_PER_RUN,
) -> int:
    """Fill in, from Stripe, the customer and amount of the Stripe → NetSuite exceptions that lack them (in `rows`
    and in the ledger). Best effort: an object Stripe cannot return leaves its columns empty, with a warning."""
    looked_up = 0
    for row in rows:
        source = row.get("source_id")
        if row.get("currency") or row["target"] != "netsuite" or not isinstance(source, str) or not source:
            continue
        if looked_up >= limit:
            log(f"customer and amount of further exceptions are looked up in Stripe on the next run (limit {limit})")
            break
        looked_up += 1
        try:
            context = stripe_context(stripe, source)
        except Exception as error:  # noqa: BLE001 - the worklist lists the exception whatever Stripe answers
            log(
                f"exception {row['error_code']} of {row['record_type']} {row['external_id']}: Stripe did not return "
                f"{source} ({type(error).__name__}: {error}); its customer and amount stay empty until a later run"
            )
            continue
        if context:
            book.set_exception_context(row["id"], **context)
            row.update(context)
    return looked_up


@dg.asset(
    group_name="quality",
    deps=["sync_exceptions", "salesforce_sync_exceptions"],
    check_specs=[
        dg.AssetCheckSpec(
            WORKLIST_CHECK,
            asset="open_exceptions_worklist",
            description="Red while any sync exception is open, listing them with their fixes; green once every "
            "one is fixed and its record synced.",
        )
    ],
    description="The exceptions worklist: every open sync exception of every day and of none (Stripe → NetSuite, "
    "Salesforce → Stripe billing, the write-back), oldest first, with the record, field, value, Stripe customer and "
    "amount, age, occurrences and the fix in words. The same list from a shell: `sync-pipeline exceptions --open`; "
    "after a fix, `sync-pipeline exceptions retry` re-runs the affected days.",
)
@scoped
def open_exceptions_worklist(
    context: dg.AssetExecutionContext, ledger: LedgerResource, stripe: StripeResource
) -> Iterator[dg.Output[pd.DataFrame] | dg.AssetCheckResult]:
    book = ledger.get_ledger()
    rows = book.exceptions(open_only=True)
    looked_up = fill_stripe_context(rows, book, stripe, context.log.warning)
    frame = worklist_frame(rows)
    by_code = {str(k): int(v) for k, v in frame.groupby("error_code").size().items()} if len(frame) else {}
    days = sorted({d for d in frame["day"] if d})
    table = dg.MetadataValue.md(worklist_markdown(frame))
    yield dg.Output(
        frame,
        metadata={
            "open_exceptions": len(frame),
            "by_error_code": dg.MetadataValue.json(by_code),
            "days_affected": dg.MetadataValue.json(days),
            "of_no_day": int((frame["day"] == "").sum()),
            "oldest": frame["first_seen_at"].iloc[0] if len(frame) else "",
            "stripe_lookups": looked_up,
            "worklist": table,
        },
    )
    yield dg.AssetCheckResult(
        check_name=WORKLIST_CHECK,
        passed=frame.empty,
        severity=dg.AssetCheckSeverity.ERROR,
        description="No open exceptions"
        if frame.empty
        else f"{len(frame)} open exception(s) on {len(days)} day(s) and {int((frame['day'] == '').sum())} of no day; "
        "fix them as each row says, then `sync-pipeline exceptions retry`",
        metadata={"open_exceptions": len(frame), "by_error_code": dg.MetadataValue.json(by_code), "worklist": table},
    )
