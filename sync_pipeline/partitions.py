"""The one daily partitioning of Stripe-side assets: by the UTC day the root document was created."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sync_pipeline import settings

# end_offset=1: today's partition exists while the day runs, so a sensor can sync an invoice paid
# minutes ago instead of waiting for tomorrow's batch.
daily_partitions = dg.DailyPartitionsDefinition(start_date=settings.start_date(), timezone="UTC", end_offset=1)


def partition_window(partition_key: str) -> tuple[int, int]:
    """[start, end) of a partition as Unix seconds, the unit of Stripe's `created` filters."""
    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.timezone.utc)
    return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())


def partition_for_timestamp(created: int) -> str:
    """The partition key of a document created at `created` (Unix seconds, UTC)."""
    return dt.datetime.fromtimestamp(created, tz=dt.timezone.utc).date().isoformat()
