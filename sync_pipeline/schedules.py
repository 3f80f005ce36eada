"""The daily batch: yesterday's partition plus a look-back over the days before it.

The look-back re-runs recent partitions because Stripe keeps events for 30 days only and sensors can be
off; thanks to the ledger a re-run of an unchanged partition writes nothing.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

DEFAULT_LOOKBACK_DAYS = 3


def partitions_for_tick(tick_time: dt.datetime, lookback_days: int, first_partition: str) -> list[str]:
    """Yesterday (UTC) and the `lookback_days` before it, oldest first, none before the first partition."""
    yesterday = tick_time.astimezone(dt.timezone.utc).date() - dt.timedelta(days=1)
    first = dt.date.fromisoformat(first_partition)
    days = [yesterday - dt.timedelta(days=n) for n in range(lookback_days, -1, -1)]
    return [d.isoformat() for d in days if d >= first]


def build_daily_sync_schedule(job: dg.UnresolvedAssetJobDefinition, first_partition: str,
                              lookback_days: int = DEFAULT_LOOKBACK_DAYS, hour_of_day: int = 2) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="daily_stripe_to_netsuite",
        job=job,
        cron_schedule=f"0 {hour_of_day} * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Yesterday's partition plus a look-back of {lookback_days} days, at {hour_of_day:02d}:00 UTC.",
    )
    def daily_stripe_to_netsuite(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        for partition_key in partitions_for_tick(tick, lookback_days, first_partition):
            # The run key names the tick too: the same partition is re-run by each day's look-back.
            yield dg.RunRequest(run_key=f"{tick.date().isoformat()}:{partition_key}", partition_key=partition_key,
                                tags={"sync_pipeline/trigger": "schedule"})

    return daily_stripe_to_netsuite
