"""The one daily partitioning of Stripe-side assets: by the UTC day the root document was created."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import dagster as dg

from sync_pipeline import settings


def daily_partitions(start_date: str) -> dg.DailyPartitionsDefinition:
    """Every UTC day from `start_date` (YYYY-MM-DD) to today."""
    # end_offset=1: today's partition exists while the day runs, so a sensor can sync an invoice paid
    # minutes ago instead of waiting for tomorrow's batch.
    return dg.DailyPartitionsDefinition(start_date=start_date, timezone="UTC", end_offset=1)


# Dagster fixes a partitions definition's start when it is built, and `@dg.asset` takes it when its module is
# imported. So the asset modules declare this definition, whose start is the catalogue's default (a constant,
# nothing read from the environment), and the code location swaps in the configured SYNC_START_DATE when it
# loads (`starting_on`, through Dagster's public `map_asset_specs`). Importing an asset module reads no setting.
DECLARED_DAILY_PARTITIONS = daily_partitions(settings.BY_NAME["SYNC_START_DATE"].default)


def starting_on(assets: Iterable[dg.AssetsDefinition], start_date: str) -> list[dg.AssetsDefinition]:
    """The daily assets with their partitions starting on `start_date` instead of the declared default."""
    configured = daily_partitions(start_date)
    return dg.map_asset_specs(
        lambda spec: (
            spec.replace_attributes(partitions_def=configured)
            if spec.partitions_def == DECLARED_DAILY_PARTITIONS
            else spec
        ),
        assets,
    )


def partition_window(partition_key: str) -> tuple[int, int]:
    """[start, end) of a partition as Unix seconds, the unit of Stripe's `created` filters."""
    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.UTC)
    return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())


def partition_for_timestamp(created: int) -> str:
    """The partition key of a document created at `created` (Unix seconds, UTC)."""
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).date().isoformat()
