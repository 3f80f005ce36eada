"""`salesforce_to_stripe_on_closed_won`: runs `salesforce_to_stripe` within seconds of a deal closing.

`salesforce_to_stripe_hourly` (`schedules.py`) runs the same job every hour, so the billing status written back
onto opportunities follows the invoices (paid, past due, refunded), which change in Stripe, not in
Salesforce, and a deal the sensor missed while stopped is still billed.

The cursor is the newest Closed-Won `SystemModstamp` seen. It only moves forward, and the run key
is that stamp, so each change is asked for once; a run racing the schedule is harmless because the
billing itself is idempotent (ledger, metadata look-ups, Idempotency-Keys). A change asks for a run
only when billing would act on it (`deals_to_run`): the pipeline's own write-back, which bumps the
stamp too, does not.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sync_pipeline.jobs import OPPORTUNITIES_TAG, SALESFORCE_TO_STRIPE_JOB
from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.mapping.field_mapping import billing_start_problem
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.resources.salesforce import SalesforceResource, modified_since, newest_modstamp
from sync_pipeline.writers.stripe_billing import deals_to_run

SENSOR_NAME = "salesforce_to_stripe_on_closed_won"
# A tick reads at most this many changed deals; the rest come on the next tick (ticks time out at 60 s).
MAX_PER_TICK = 2000


def closed_won_since(salesforce: SalesforceResource, cursor: str | None) -> list[dict]:
    where = modified_since(cursor, look_back=dt.timedelta(0))
    condition = f"{where} AND IsWon = true" if where else " WHERE IsWon = true"
    # The fields billing reads, line items included: what decides whether the change is one billing acts on.
    soql = (
        f"SELECT {billing.OPPORTUNITY_FIELDS} FROM Opportunity{condition} ORDER BY SystemModstamp, Id "
        f"LIMIT {MAX_PER_TICK}"
    )
    rows = [billing.flatten_opportunity(r) for r in salesforce.query_all(soql)]
    # `>=` in the query: a stamp equal to the cursor was already asked for.
    return [r for r in rows if cursor is None or r["SystemModstamp"] != cursor]


# On by default once Salesforce is configured (a deal bills within seconds of closing; it skips, saying
# what to set, until `bill_closed_won_from` in field_mapping.yaml keeps old deals out); off otherwise, so an
# unconfigured deployment does not fail a tick every few seconds. The code location decides when it loads.
def build_salesforce_to_stripe_sensor(salesforce_configured: bool) -> dg.SensorDefinition:
    @dg.sensor(
        name=SENSOR_NAME,
        job_name=SALESFORCE_TO_STRIPE_JOB,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING if salesforce_configured else dg.DefaultSensorStatus.STOPPED,
        description="New or changed Closed-Won opportunities (SystemModstamp cursor) -> a salesforce_to_stripe run.",
    )
    def salesforce_to_stripe_on_closed_won(
        context: dg.SensorEvaluationContext,
        salesforce: SalesforceResource,
        field_mapping: FieldMappingResource,
        ledger: LedgerResource,
    ):
        # Before Salesforce is read: the cursor stays put, so the deals are asked for once billing may start.
        config = field_mapping.load()
        not_started = billing_start_problem(config)
        if not_started:
            return dg.SkipReason(not_started)
        changed = closed_won_since(salesforce, context.cursor)
        if not changed:
            return dg.SkipReason(f"no Closed-Won opportunity changed since {context.cursor or 'the start'}")
        newest = newest_modstamp(changed, context.cursor)
        # Past every change read, acted on or not: the pipeline's own writes are not read again.
        context.update_cursor(newest)
        wanted = deals_to_run(changed, ledger.get_ledger(), config.salesforce)
        if not wanted:
            return dg.SkipReason(
                f"{len(changed)} Closed-Won opportunity change(s) up to {newest}, none that billing acts on "
                "(already billed as they are: the write-back's own changes, or fields billing does not read)"
            )
        return dg.RunRequest(run_key=f"closed-won-{newest}", tags={OPPORTUNITIES_TAG: ",".join(wanted[:20])})

    return salesforce_to_stripe_on_closed_won
