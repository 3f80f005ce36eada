"""The jobs of the code location, the one place their names are spelled, and the tags on their runs.

Sensors, schedules, the demo and the tests name a job by these constants. Every tag this project puts
on a run is in the `sync_pipeline/` namespace (Dagster's own are `dagster/...`).
"""

import dagster as dg

from sync_pipeline.assets import salesforce as salesforce_assets

STRIPE_TO_NETSUITE_JOB = "stripe_to_netsuite"
SALESFORCE_TO_STRIPE_JOB = "salesforce_to_stripe"

# What asked for the run: a sensor's name, `schedule` or `demo`.
TRIGGER_TAG = "sync_pipeline/trigger"
# The Stripe events behind a sensor run (the newest ones, when many), the newest, how many, and where read.
EVENTS_TAG = "sync_pipeline/events"
NEWEST_EVENT_TAG = "sync_pipeline/newest_event"
EVENT_COUNT_TAG = "sync_pipeline/event_count"
EVENT_SOURCE_TAG = "sync_pipeline/event_source"
# The Closed-Won opportunities behind a Salesforce sensor run (the first 20).
OPPORTUNITIES_TAG = "sync_pipeline/opportunities"

stripe_to_netsuite = dg.define_asset_job(
    STRIPE_TO_NETSUITE_JOB,
    selection=dg.AssetSelection.groups("stripe", "netsuite", "quality"),
    description="One day of Stripe activity into NetSuite: extract, map, validate, upsert, report exceptions.",
)

salesforce_to_stripe = dg.define_asset_job(
    SALESFORCE_TO_STRIPE_JOB,
    selection=dg.AssetSelection.groups(salesforce_assets.GROUP),
    description="Salesforce accounts and opportunities; Closed-Won deals billed once in Stripe; ids and billing "
    "status written back to Salesforce.",
)
