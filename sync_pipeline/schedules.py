"""The schedules, one per job: `stripe_to_netsuite_daily` and `salesforce_to_stripe_hourly`.

`stripe_to_netsuite_daily` runs yesterday's partition plus a look-back over the days before it: the
look-back re-runs recent partitions because Stripe keeps events for 30 days only and sensors can be
off; thanks to the ledger a re-run of an unchanged partition writes nothing. `salesforce_to_stripe_hourly`
is explained beside its sensor (`salesforce_to_stripe_sensor.py`).
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sync_pipeline.jobs import SALESFORCE_TO_STRIPE_JOB, TRIGGER_TAG
from sync_pipeline.mapping.field_mapping import billing_start_problem
from sync_pipeline.resources.field_mapping import FieldMappingResource

DEFAULT_LOOKBACK_DAYS = 3


def partitions_for_tick(tick_time: dt.datetime, lookback_days: int, first_partition: str) -> list[str]:
    """Yesterday (UTC) and the `lookback_days` before it, oldest first, none before the first partition."""
    yesterday = tick_time.astimezone(dt.UTC).date() - dt.timedelta(days=1)
    first = dt.date.fromisoformat(first_partition)
    days = [yesterday - dt.timedelta(days=n) for n in range(lookback_days, -1, -1)]
    return [d.isoformat() for d in days if d >= first]


def build_stripe_to_netsuite_schedule(
    job: dg.UnresolvedAssetJobDefinition,
    first_partition: str,
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
    hour_of_day: int = 2,
    name: str = "stripe_to_netsuite_daily",
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=name,
        job=job,
        cron_schedule=f"0 {hour_of_day} * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Yesterday's partition plus a look-back of {lookback_days} days, at {hour_of_day:02d}:00 UTC.",
    )
    def stripe_to_netsuite_daily(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time or dt.datetime.now(dt.UTC)
        for partition_key in partitions_for_tick(tick, lookback_days, first_partition):
            # The run key names the tick too: the same partition is re-run by each day's look-back.
            yield dg.RunRequest(
                run_key=f"{tick.date().isoformat()}:{partition_key}",
                partition_key=partition_key,
                tags={TRIGGER_TAG: "schedule"},
            )

    return stripe_to_netsuite_daily


def build_salesforce_to_stripe_schedule(salesforce_configured: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="salesforce_to_stripe_hourly",
        job_name=SALESFORCE_TO_STRIPE_JOB,
        cron_schedule="20 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if salesforce_configured else dg.DefaultScheduleStatus.STOPPED,
        description="Hourly: bill Closed-Won deals not billed yet, refresh billing status and ids in Salesforce "
        "(skips, saying what to set, until salesforce.bill_closed_won_from is set).",
    )
    def salesforce_to_stripe_hourly(context: dg.ScheduleEvaluationContext, field_mapping: FieldMappingResource):
        not_started = billing_start_problem(field_mapping.load())
        if not_started:
            return dg.SkipReason(not_started)
        return dg.RunRequest(tags={TRIGGER_TAG: "schedule"})

    return salesforce_to_stripe_hourly
