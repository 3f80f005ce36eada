"""`stripe_to_netsuite_on_events`: new Stripe events → one run per dirty daily partition, within seconds.

Reads either Stripe's Events API (from its cursor) or the webhook inbox that `sync-pipeline webhooks
serve` fills (`SYNC_EVENT_SOURCE`); both feed the same routing (`sync_pipeline.mapping.events`). Runs
read each document's current state, so order and repetition of events do not matter; the run key
(partition + newest event id) makes a re-evaluated tick harmless.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from itertools import islice

import dagster as dg
import stripe as stripe_sdk

from sync_pipeline import event_scope
from sync_pipeline.jobs import EVENT_COUNT_TAG, EVENT_SOURCE_TAG, EVENTS_TAG, NEWEST_EVENT_TAG, TRIGGER_TAG
from sync_pipeline.mapping import events as routing
from sync_pipeline.partitions import partition_for_timestamp
from sync_pipeline.resources.ledger import Ledger, LedgerResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.stripe_accounts import DEFAULT_ACCOUNT, StripeAccount

SENSOR_NAME = "stripe_to_netsuite_on_events"
DEFAULT_INTERVAL_SECONDS = 5
# The daemon checks sensors every 5 s and measures the interval from the previous tick's *end*: asking for
# exactly 5 s makes every other check fall short (10 s between ticks, measured). Ask for a little less.
TICK_SLACK_SECONDS = 3
# A tick must finish well inside Dagster's 60 s evaluation limit; the rest waits for the next tick.
MAX_EVENTS_PER_TICK = 500
EVENTS_API_RETENTION_SECONDS = 30 * 86400
# A cursor this close to the 30-day edge may lose its oldest events while they are being read.
RETENTION_MARGIN_SECONDS = 3600
# The very first tick (no cursor yet) reads the last day of events; older history is the schedule's.
FIRST_TICK_LOOKBACK_SECONDS = 86400
EVENT_TAG_LIMIT = 20
STOPPED_MARGIN_SECONDS = 60
# Sensor runs sync a handful of changed documents: one process per step (the default multiprocess
# executor) would cost seconds per step; in-process keeps a run short. Pools still apply.
SENSOR_RUN_CONFIG = {"execution": {"config": {"in_process": {}}}}


class StripeRootLookup:
    """`RootLookup` on the ledger first (no API call), then Stripe's current state; cached for one tick."""

    def __init__(self, ledger: Ledger, stripe: StripeResource):
        self.ledger = ledger
        self.stripe = stripe
        self._cache: dict[tuple[str, str], str | None] = {}

    def _cached(self, kind: str, object_id: str, find) -> str | None:
        key = (kind, object_id)
        if key not in self._cache:
            self._cache[key] = find()
        return self._cache[key]

    def _from_ledger(self, source_id: str) -> str | None:
        return self.ledger.partitions_of_sources([source_id]).get(source_id)

    def invoice_partition(self, invoice_id: str) -> str | None:
        def find() -> str | None:
            known = self._from_ledger(invoice_id)
            if known:
                return known
            return partition_for_timestamp(int(self.stripe.retrieve_invoice(invoice_id)["created"]))

        return self._cached("invoice", invoice_id, find)

    def _invoice_of_payment_intent(self, payment_intent_id: str) -> str | None:
        payment = next(iter(self.stripe.list_invoice_payments(payment_intent=payment_intent_id)), None)
        invoice = payment.get("invoice") if payment else None
        return invoice.get("id") if isinstance(invoice, dict) else invoice

    def charge_partition(self, charge_id: str) -> str | None:
        def find() -> str | None:
            known = self._from_ledger(charge_id)
            if known:
                return known
            charge = self.stripe.retrieve_charge(charge_id)
            intent = charge.get("payment_intent")
            intent_id = intent.get("id") if isinstance(intent, dict) else intent
            invoice_id = self._invoice_of_payment_intent(intent_id) if intent_id else None
            if invoice_id:
                return self.invoice_partition(invoice_id)
            return partition_for_timestamp(int(charge["created"]))

        return self._cached("charge", charge_id, find)

    def payment_intent_partition(self, payment_intent_id: str) -> str | None:
        def find() -> str | None:
            invoice_id = self._invoice_of_payment_intent(payment_intent_id)
            if invoice_id:
                return self.invoice_partition(invoice_id)
            # Not wrapped by the resource: its documented escape hatch for the rest of the API.
            intent = self.stripe.get_client().v1.payment_intents.retrieve(payment_intent_id)
            return self.charge_partition(intent.latest_charge) if intent.latest_charge else None

        return self._cached("payment_intent", payment_intent_id, find)

    def customer_partition(self, customer_id: str) -> str | None:
        return self._cached("customer", customer_id, lambda: self._from_ledger(customer_id))


@dataclass
class EventBatch:
    """What one tick read: events oldest first, and whether every partition since a moment is dirty."""

    events: list[dict]
    cursor: routing.EventCursor
    catch_up_since: int | None = None
    notes: list[str] = field(default_factory=list)


def _newest_event(stripe: StripeResource) -> dict | None:
    return next(iter(stripe.list_events()), None)


def _jump_to_newest(stripe: StripeResource, cursor: routing.EventCursor, since: int, why: str) -> EventBatch:
    newest = _newest_event(stripe)
    moved = routing.EventCursor(
        event_id=newest["id"] if newest else None, event_created=int(newest["created"]) if newest else None
    )
    return EventBatch([], moved, catch_up_since=since, notes=[why])


def read_events_api(stripe: StripeResource, cursor: routing.EventCursor, now: int) -> EventBatch:
    """New events after the cursor, oldest first; a catch-up when the cursor left the 30-day window."""
    if cursor.event_id is None:
        since = now - FIRST_TICK_LOOKBACK_SECONDS
        recent = list(islice(stripe.list_events(created_gte=since), MAX_EVENTS_PER_TICK + 1))[::-1]
        if len(recent) > MAX_EVENTS_PER_TICK:
            # Too many to route in one tick: start from the newest and let the catch-up cover the day.
            return _jump_to_newest(
                stripe,
                cursor,
                since,
                f"no cursor yet and over {MAX_EVENTS_PER_TICK} events "
                f"in the last {FIRST_TICK_LOOKBACK_SECONDS // 3600} h",
            )
        note = f"no cursor yet: reading the {len(recent)} event(s) of the last {FIRST_TICK_LOOKBACK_SECONDS // 3600} h"
        return EventBatch(recent, _advanced(cursor, recent), notes=[note])
    if (cursor.event_created or 0) < now - EVENTS_API_RETENTION_SECONDS + RETENTION_MARGIN_SECONDS:
        return _jump_to_newest(
            stripe,
            cursor,
            int(cursor.event_created or 0),
            f"cursor {cursor.event_id} is older than the Events API's 30-day window",
        )
    try:
        events = list(islice(stripe.list_events(ending_before=cursor.event_id), MAX_EVENTS_PER_TICK))
    except stripe_sdk.InvalidRequestError as exc:
        return _jump_to_newest(
            stripe,
            cursor,
            int(cursor.event_created or 0),
            f"cursor {cursor.event_id} is gone from the Events API ({exc.user_message})",
        )
    return EventBatch(events, _advanced(cursor, events))


def _advanced(cursor: routing.EventCursor, events: list[dict]) -> routing.EventCursor:
    if not events:
        return routing.EventCursor(event_id=cursor.event_id, event_created=cursor.event_created)
    return routing.EventCursor(event_id=events[-1]["id"], event_created=int(events[-1]["created"]))


def _not_started_partitions(instance: dg.DagsterInstance, sensor_name: str) -> set[str]:
    """Partitions with a run of this sensor (this Stripe account's) that has not started yet: it will read their
    latest state anyway."""
    waiting = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING]
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": sensor_name}, statuses=waiting))
    return {r.tags["dagster/partition"] for r in runs if "dagster/partition" in r.tags}


def read_inbox(ledger: Ledger, cursor: routing.EventCursor) -> EventBatch:
    """Unprocessed inbox events, oldest first, after acknowledging what the previous (committed) tick ran."""
    for key, event_ids in cursor.pending_acks.items():
        ledger.mark_processed(event_ids, run_key=key)
    rows = ledger.unprocessed_events(limit=MAX_EVENTS_PER_TICK)
    events = [json.loads(row["payload"]) for row in rows]
    return EventBatch(events, routing.EventCursor(event_id=cursor.event_id, event_created=cursor.event_created))


def event_tags(event_ids: list[str], source: str, sensor_name: str = SENSOR_NAME) -> dict[str, str]:
    shown = ",".join(event_ids[-EVENT_TAG_LIMIT:])
    more = len(event_ids) - EVENT_TAG_LIMIT
    return {
        TRIGGER_TAG: sensor_name,
        EVENT_SOURCE_TAG: source,
        EVENTS_TAG: shown + (f",+{more} older" if more > 0 else ""),
        NEWEST_EVENT_TAG: event_ids[-1] if event_ids else "",
        EVENT_COUNT_TAG: str(len(event_ids)),
    }


def _was_stopped(context: dg.SensorEvaluationContext, cursor: routing.EventCursor) -> bool:
    # Dagster stamps the start of a default-running sensor around its first tick: only a start well
    # after our last tick means someone stopped and restarted it.
    started = context.last_sensor_start_time
    return bool(started and cursor.evaluated_at and started > cursor.evaluated_at + STOPPED_MARGIN_SECONDS)


def evaluate(
    context: dg.SensorEvaluationContext,
    stripe: StripeResource,
    ledger: Ledger,
    source: str,
    daily: dg.DailyPartitionsDefinition,
    now: int,
    sensor_name: str = SENSOR_NAME,
) -> dg.SensorResult:
    """One tick of the sensor `sensor_name` (one Stripe account's): read, route, request runs, each syncing the
    documents its events name (`event_scope`), move the cursor."""
    cursor = routing.EventCursor.parse(context.cursor)
    batch = read_inbox(ledger, cursor) if source == "webhooks" else read_events_api(stripe, cursor, now)
    if _was_stopped(context, cursor):
        # Events cover what happened while stopped, but a receiver may also have been down: be thorough.
        since = batch.catch_up_since or cursor.evaluated_at
        batch.catch_up_since = min(since, cursor.evaluated_at or since)
        batch.notes.append("the sensor was stopped since its last tick")
    routed = routing.route_events(batch.events, StripeRootLookup(ledger, stripe))
    for partition_key, event_ids in cursor.deferred.items():
        routed.dirty[partition_key] = [*event_ids, *routed.dirty.get(partition_key, [])]
        # A cursor written before scopes existed names no documents: that partition's run is the whole day.
        for document in cursor.deferred_scope.get(partition_key) or [None]:
            routed.name_document(partition_key, document)
    for note in batch.notes:
        context.log.info(note)
    waiting = _not_started_partitions(context.instance, sensor_name)
    requests = _run_requests(context, routed, batch, source, daily, now, waiting, sensor_name)
    batch.cursor.evaluated_at = now
    if source == "webhooks":
        batch.cursor.pending_acks = {r.run_key: r_ids for r, r_ids in requests}
        # Events that make no partition dirty need no run: acknowledged now.
        if routed.ignored:
            ledger.mark_processed(list(routed.ignored))
    for event_id, why in routed.ignored.items():
        context.log.debug(f"{event_id}: no run ({why})")
    run_requests = [r for r, _ in requests]
    if not run_requests:
        return dg.SensorResult(
            skip_reason=f"{len(batch.events)} new event(s), no dirty partition", cursor=batch.cursor.dumps()
        )
    return dg.SensorResult(run_requests=run_requests, cursor=batch.cursor.dumps())


def _run_requests(
    context: dg.SensorEvaluationContext,
    routed: routing.RoutedEvents,
    batch: EventBatch,
    source: str,
    daily: dg.DailyPartitionsDefinition,
    now: int,
    waiting: set[str],
    sensor_name: str,
) -> list[tuple[dg.RunRequest, list[str]]]:
    valid = set(daily.get_partition_keys())
    limit = event_scope.max_documents()
    dirty = dict(routed.dirty)
    if batch.catch_up_since is not None:
        caught_up = routing.partitions_since(batch.catch_up_since, now, daily.start.date().isoformat())
        context.log.warning(
            f"falling back: marking every partition since {caught_up[0] if caught_up else '-'} "
            f"dirty ({len(caught_up)} partition(s))"
        )
        for partition_key in caught_up:
            dirty.setdefault(partition_key, [])
            routed.name_document(partition_key, None)  # a catch-up reads whole days
    requests = []
    for partition_key, event_ids in sorted(dirty.items()):
        if partition_key not in valid:
            context.log.warning(
                f"{partition_key} is outside the partitions ({len(event_ids)} event(s) skipped: {', '.join(event_ids)})"
            )
            routed.ignored.update({e: f"partition {partition_key} does not exist" for e in event_ids})
            continue
        if partition_key in waiting:
            # Coalesce: the queued run has not read Stripe yet. Inbox events stay unprocessed and are read
            # again next tick; Events API events wait in the cursor.
            context.log.info(
                f"{partition_key}: a run has not started yet; {len(event_ids)} event(s) wait for the next tick"
            )
            if source != "webhooks" and event_ids:
                batch.cursor.deferred[partition_key] = event_ids
                scope = routed.scope(partition_key)
                batch.cursor.deferred_scope[partition_key] = sorted(scope) if scope is not None else None
            continue
        key = routing.run_key(partition_key, event_ids, catch_up_from=batch.cursor.event_id or str(now))
        why = f"{len(event_ids)} event(s): {', '.join(event_ids)}" if event_ids else "catch-up"
        ids = event_scope.bounded(routed.scope(partition_key), limit)
        context.log.info(f"{partition_key}: run {key} for {why}; scope: {event_scope.scope_tag(ids)}")
        requests.append(
            (
                dg.RunRequest(
                    run_key=key,
                    partition_key=partition_key,
                    run_config=event_scope.scoped_run_config(SENSOR_RUN_CONFIG, ids),
                    tags={
                        **event_tags(event_ids, source, sensor_name),
                        event_scope.SCOPE_TAG: event_scope.scope_tag(ids),
                    },
                ),
                event_ids,
            )
        )
    return requests


def build_stripe_to_netsuite_sensor(
    job: dg.UnresolvedAssetJobDefinition,
    daily: dg.DailyPartitionsDefinition,
    source: str,
    interval_seconds: int = DEFAULT_INTERVAL_SECONDS,
    default_status: dg.DefaultSensorStatus = dg.DefaultSensorStatus.RUNNING,
    account: StripeAccount = DEFAULT_ACCOUNT,
) -> dg.SensorDefinition:
    """The sensor for `job`'s `daily` partitions, reading `source` (SYNC_EVENT_SOURCE, given by the code location
    when it loads), ticking about every `interval_seconds` (the daemon's own loop makes 5 s the floor). Another
    Stripe account's sensor (`stripe_eu_to_netsuite_on_events`) reads that account's events: its Events API with
    its key, or the inbox events its own webhook endpoint received."""

    name = account.qualified(SENSOR_NAME)

    @dg.sensor(
        name=name,
        job=job,
        minimum_interval_seconds=max(1, interval_seconds - TICK_SLACK_SECONDS),
        default_status=default_status,
        description="New Stripe events (Events API or the verified webhook inbox, per SYNC_EVENT_SOURCE) → one "
        "run per dirty partition; run key = partition + newest event id.",
    )
    def stripe_to_netsuite_on_events(
        context: dg.SensorEvaluationContext, stripe: StripeResource, ledger: LedgerResource
    ) -> dg.SensorResult:
        account_stripe = stripe.for_account(account.name) if account.prefix else stripe
        account_ledger = ledger.get_ledger().for_account(account.prefix)
        # The ledger view is the account's: its inbox events only (webhooks), its records for routing.
        return evaluate(context, account_stripe, account_ledger, source, daily, int(time.time()), name)

    return stripe_to_netsuite_on_events
