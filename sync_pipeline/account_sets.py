"""The Stripe → NetSuite definitions of each Stripe account: assets, job, schedule and sensor.

The default account's are today's, unchanged; another account `eu` gets the same asset definitions under the key
prefix `eu` and groups `stripe_eu`, `netsuite_eu`, `quality_eu`, the job `stripe_eu_to_netsuite`, the schedule
`stripe_eu_to_netsuite_daily` and the sensor `stripe_eu_to_netsuite_on_events` (why one set per account rather
than account x day partitions: `stripe_accounts.py`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from types import ModuleType

import dagster as dg

from sync_pipeline import partitions
from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB, stripe_to_netsuite
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.schedules import build_stripe_to_netsuite_schedule
from sync_pipeline.stripe_accounts import API_KEY, DAILY_GROUPS, StripeAccount, configured_accounts
from sync_pipeline.stripe_to_netsuite_sensor import build_stripe_to_netsuite_sensor


def account_assets(account: StripeAccount, modules: Sequence[ModuleType], start_date: str) -> list[dg.AssetsDefinition]:
    """The daily assets of `modules` for `account`, partitioned from `start_date`."""
    if account.default:
        return partitions.starting_on(dg.load_assets_from_modules(modules), start_date)
    # The prefix applies to the assets, their dependencies on one another and their checks.
    prefixed = dg.load_assets_from_modules(modules, key_prefix=account.name)
    regrouped = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(group_name=account.group(spec.group_name)), prefixed
    )
    return partitions.starting_on(regrouped, start_date)


def account_job(account: StripeAccount) -> dg.UnresolvedAssetJobDefinition:
    if account.default:
        return stripe_to_netsuite
    return dg.define_asset_job(
        account.qualified(STRIPE_TO_NETSUITE_JOB),
        selection=dg.AssetSelection.groups(*(account.group(g) for g in DAILY_GROUPS)),
        description=f"One day of Stripe account {account.name}'s activity into NetSuite: extract, map, validate, "
        "upsert, report exceptions.",
    )


def account_automation(
    account: StripeAccount, job: dg.UnresolvedAssetJobDefinition, start_date: str, event_source: str
) -> tuple[dg.ScheduleDefinition, dg.SensorDefinition]:
    """The daily schedule and the events sensor of `account`'s job."""
    schedule = build_stripe_to_netsuite_schedule(job, start_date, name=account.qualified("stripe_to_netsuite_daily"))
    sensor = build_stripe_to_netsuite_sensor(
        job, partitions.daily_partitions(start_date), event_source, account=account
    )
    return schedule, sensor


def stripe_resource(api_base: object) -> StripeResource:
    """One Stripe resource: the default account's key, and the other accounts' keys by name (each asset of an
    account gets its client through `scoped`). Keys are EnvVars, resolved at run time and shown nowhere."""
    default, *others = configured_accounts()
    return StripeResource(
        api_key=dg.EnvVar(default.env_var(API_KEY)),
        api_base=api_base,
        # An unset key is left out: that account's run fails naming the variable (Dagster refuses an unset EnvVar).
        other_accounts={a.name: dg.EnvVar(a.env_var(API_KEY)) for a in others if os.environ.get(a.env_var(API_KEY))},
    )
