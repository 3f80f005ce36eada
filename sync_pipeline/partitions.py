"""The one daily partitioning of Stripe-side assets: by the UTC day the root document was created."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sync_pipeline import settings


def __getattr__(name: str) -> dg.DailyPartitionsDefinition:
    # `daily_partitions` is built on first use (when the code location loads its assets), not at import:
    # a malformed SYNC_START_DATE must not break `sync-pipeline --help` or any module importing this one.
    if name != "daily_partitions":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    # end_offset=1: today's partition exists while the day runs, so a sensor can sync an invoice paid
    # minutes ago instead of waiting for tomorrow's batch.
    daily = dg.DailyPartitionsDefinition(start_date=settings.start_date(), timezone="UTC", end_offset=1)
    globals()["daily_partitions"] = daily  # built once: every asset shares the same definition
    return daily


def partition_window(partition_key: str) -> tuple[int, int]:
    """[start, end) of a partition as Unix seconds, the unit of Stripe's `created` filters."""
    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.timezone.utc)
    return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())


def partition_for_timestamp(created: int) -> str:
    """The partition key of a document created at `created` (Unix seconds, UTC)."""
    return dt.datetime.fromtimestamp(created, tz=dt.timezone.utc).date().isoformat()
