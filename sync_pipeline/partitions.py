"""The one daily partitioning of Stripe-side assets: by the UTC day the root document was created."""

from __future__ import annotations

import datetime as dt
import warnings
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
    """The daily assets with their partitions starting on `start_date` instead of the declared default; their
    checks too, so each check result belongs to its day in the UI."""
    configured = daily_partitions(start_date)
    mapped = dg.map_asset_specs(
        lambda spec: (
            spec.replace_attributes(partitions_def=configured)
            if spec.partitions_def == DECLARED_DAILY_PARTITIONS
            else spec
        ),
        assets,
    )
    return [_checks_starting_on(asset, configured) for asset in mapped]


def _checks_starting_on(asset: dg.AssetsDefinition, configured: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    specs = asset.node_check_specs_by_output_name
    if not any(spec.partitions_def == DECLARED_DAILY_PARTITIONS for spec in specs.values()):
        return asset
    # Dagster's map_asset_specs leaves check specs as declared; an asset and its checks must share one partitions
    # definition, so the checks get the configured one the same way (Dagster has no public mapper for them yet).
    replaced = {
        name: spec._replace(partitions_def=configured) if spec.partitions_def == DECLARED_DAILY_PARTITIONS else spec
        for name, spec in specs.items()
    }
    return asset.__class__.dagster_internal_init(
        **{**asset.get_attributes_dict(), "check_specs_by_output_name": replaced}
    )


def daily_check(name: str, asset: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
    """A check of a daily asset, partitioned like it: its result belongs to the day it checked (without it the UI
    shows each result under partition "—" and a phantom "Skipped" row per run)."""
    # Partitioned checks are a Dagster preview in 1.13 (pinned <1.14 in pyproject.toml): the warning is expected.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
        return dg.AssetCheckSpec(
            name, asset=asset, description=description, blocking=blocking, partitions_def=DECLARED_DAILY_PARTITIONS
        )


def partition_window(partition_key: str) -> tuple[int, int]:
    """[start, end) of a partition as Unix seconds, the unit of Stripe's `created` filters."""
    start = dt.datetime.combine(dt.date.fromisoformat(partition_key), dt.time(), tzinfo=dt.UTC)
    return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())


def partition_for_timestamp(created: int) -> str:
    """The partition key of a document created at `created` (Unix seconds, UTC)."""
    return dt.datetime.fromtimestamp(created, tz=dt.UTC).date().isoformat()
