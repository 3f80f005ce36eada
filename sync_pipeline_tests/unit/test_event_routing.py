"""Stripe events → dirty partitions: the pure routing, then the sensor ticking against the Stripe stand-in."""

from __future__ import annotations

import datetime as dt
import json
import time
import types

import dagster as dg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipeline import event_scope, stripe_to_netsuite_sensor
from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB
from sync_pipeline.mapping import events as routing
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline_tests.e2e.harness import at, running_sandbox

DAY = 86400
INVOICE_DAY = dt.date(2026, 10, 5)


def _event(event_id: str, event_type: str, obj: dict, created: int = 1_790_000_000) -> dict:
    return {"id": event_id, "object": "event", "type": event_type, "created": created, "data": {"object": obj}}


class KnownRoots:
    """Routing's look-ups answered from a table, as the ledger would for documents it has synced."""

    def __init__(self, invoices: dict[str, str], charges: dict[str, str], customers: dict[str, str] | None = None):
        self.invoices, self.charges, self.customers = invoices, charges, customers or {}

    def invoice_partition(self, invoice_id: str) -> str | None:
        return self.invoices.get(invoice_id)

    def charge_partition(self, charge_id: str) -> str | None:
        return self.charges.get(charge_id)

    def payment_intent_partition(self, payment_intent_id: str) -> str | None:
        return None

    def customer_partition(self, customer_id: str) -> str | None:
        return self.customers.get(customer_id)


LOOKUP = KnownRoots(
    invoices={"in_1": "2026-10-05"},
    charges={"ch_1": "2026-10-05", "ch_2": "2026-11-20"},
    customers={"cus_1": "2026-10-05"},
)
EVENTS = [
    _event("evt_a", "invoice.paid", {"id": "in_1", "object": "invoice", "created": at(INVOICE_DAY, 9)}, 100),
    _event("evt_b", "invoice_payment.paid", {"id": "inpay_1", "invoice": "in_1"}, 101),
    _event("evt_c", "charge.refunded", {"id": "ch_1", "created": at(INVOICE_DAY, 9)}, 102),
    _event("evt_d", "refund.created", {"id": "re_1", "charge": "ch_1"}, 103),
    _event("evt_e", "charge.succeeded", {"id": "ch_2", "created": at(dt.date(2026, 11, 20), 1)}, 104),
    _event("evt_f", "credit_note.created", {"id": "cn_1", "invoice": "in_1"}, 105),
    _event("evt_g", "charge.dispute.created", {"id": "dp_1", "charge": "ch_2"}, 106),
    _event("evt_h", "customer.subscription.updated", {"id": "sub_1"}, 107),
    _event(
        "evt_i", "payout.paid", {"id": "po_1", "object": "payout", "arrival_date": at(dt.date(2026, 11, 22), 0)}, 108
    ),
    _event("evt_j", "customer.updated", {"id": "cus_1"}, 109),
]


def test_each_event_lands_on_its_root_documents_partition():
    routed = routing.route_events(EVENTS, LOOKUP)

    assert routed.dirty == {
        "2026-10-05": ["evt_a", "evt_b", "evt_c", "evt_d", "evt_f", "evt_j"],
        "2026-11-20": ["evt_e", "evt_g"],
        "2026-11-22": ["evt_i"],  # a payout (its deposit) belongs to the day it arrives
    }
    assert set(routed.ignored) == {"evt_h"}
    assert routing.run_key("2026-10-05", routed.dirty["2026-10-05"]) == "2026-10-05:evt_j"


def test_a_refund_forty_days_later_routes_to_the_invoice_day_not_the_refund_day():
    refund_time = at(INVOICE_DAY + dt.timedelta(days=40), 15)
    refund = _event("evt_r", "refund.created", {"id": "re_9", "charge": "ch_1", "created": refund_time}, refund_time)

    routed = routing.route_events([refund], LOOKUP)

    assert routed.dirty == {"2026-10-05": ["evt_r"]}


def test_a_batch_that_pays_an_invoice_routes_its_charge_and_payment_without_any_look_up():
    created = at(dt.date(2026, 11, 23), 23, 59)
    nothing_known = KnownRoots(invoices={}, charges={})
    batch = [
        _event("evt_1", "invoice.paid", {"id": "in_9", "object": "invoice", "created": created}, created + 90),
        _event(
            "evt_2",
            "invoice_payment.paid",
            {
                "id": "inpay_9",
                "object": "invoice_payment",
                "invoice": "in_9",
                "payment": {"type": "payment_intent", "payment_intent": "pi_9"},
            },
            created + 90,
        ),
        _event(
            "evt_3",
            "charge.succeeded",
            {"id": "ch_9", "object": "charge", "payment_intent": "pi_9", "created": created + 90},
            created + 90,
        ),
    ]

    routed = routing.route_events(batch, nothing_known)

    assert routed.dirty == {"2026-11-23": ["evt_1", "evt_2", "evt_3"]}, "the charge's own day is 2026-11-24"


@settings(max_examples=60, deadline=None)
@given(st.permutations(EVENTS), st.lists(st.sampled_from(EVENTS), max_size=10))
def test_any_order_and_any_repetition_give_the_same_partitions_and_run_keys(shuffled, repeats):
    expected = routing.route_events(EVENTS, LOOKUP)

    routed = routing.route_events([*shuffled, *repeats], LOOKUP)

    assert routed.dirty == expected.dirty
    assert {p: routing.run_key(p, ids) for p, ids in routed.dirty.items()} == {
        p: routing.run_key(p, ids) for p, ids in expected.dirty.items()
    }


def test_a_customer_not_synced_yet_is_left_to_its_first_document():
    routed = routing.route_events([_event("evt_k", "customer.updated", {"id": "cus_new"})], LOOKUP)

    assert routed.dirty == {}
    assert "not synced yet" in routed.ignored["evt_k"]


def test_partitions_since_covers_every_day_from_the_cursor_to_today_but_not_before_the_first():
    now = at(dt.date(2026, 11, 24), 10)

    assert routing.partitions_since(at(dt.date(2026, 11, 21), 23), now) == [
        "2026-11-21",
        "2026-11-22",
        "2026-11-23",
        "2026-11-24",
    ]
    assert routing.partitions_since(at(dt.date(2025, 12, 30), 0), at(dt.date(2026, 1, 2), 0), "2026-01-01") == [
        "2026-01-01",
        "2026-01-02",
    ]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ([], "not a JSON object"),
        ({"object": "charge", "id": "ch_1"}, 'expected "object": "event"'),
        ({"object": "event", "id": "x", "type": "a", "created": 1, "data": {"object": {}}}, 'starting with "evt_"'),
        ({"object": "event", "id": "evt_1", "created": 1, "data": {"object": {"id": "x"}}}, "no type"),
        ({"object": "event", "id": "evt_1", "type": "a", "created": "1", "data": {"object": {"id": "x"}}}, "created"),
        ({"object": "event", "id": "evt_1", "type": "a", "created": 1, "data": {}}, "data.object"),
    ],
)
def test_a_body_that_is_not_a_stripe_event_is_named_as_such(body, reason):
    assert reason in (routing.is_stripe_event(body) or "")


def test_a_well_formed_event_passes_the_shape_check():
    assert routing.is_stripe_event(EVENTS[0]) is None


# --- the sensor, ticking against the Stripe stand-in ------------------------------------------------


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNC_EVENT_SOURCE", "events_api")
    with running_sandbox(tmp_path, monkeypatch) as box:
        yield box


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def tick(instance: dg.DagsterInstance, cursor: str | None = None, last_start: float | None = None):
    """One evaluation as the daemon would run it: the code location's sensor, with its own resources."""
    from sync_pipeline.definitions import build_resources, defs

    definitions = defs()
    resources = {k: v for k, v in build_resources().items() if k in ("stripe", "ledger")}
    with dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        definitions=definitions,
        resources=resources,
        last_sensor_start_time=last_start,
    ) as context:
        return definitions.resolve_sensor_def(stripe_to_netsuite_sensor.SENSOR_NAME).evaluate_tick(context)


@pytest.fixture
def now(monkeypatch) -> int:
    """The sensor's clock, stopped: expected partitions computed from it cannot straddle midnight."""
    frozen = int(time.time())
    monkeypatch.setattr(stripe_to_netsuite_sensor, "time", types.SimpleNamespace(time=lambda: frozen))
    return frozen


def _day_of(created: int) -> str:
    """The UTC day of a Stripe `created`: its partition, whenever the test happens to run."""
    return dt.datetime.fromtimestamp(created, dt.UTC).date().isoformat()


def _events(sandbox) -> list[dict]:
    """The stand-in's events as Stripe sends them (plain JSON), newest first."""
    return json.loads(sandbox.client.raw_request("get", "/v1/events", limit=100).body)["data"]


def _event_ids(sandbox, about: str | None = None) -> list[str]:
    """Newest first; `about`: only the events whose object has that id."""
    events = _events(sandbox)
    return [e["id"] for e in events if about is None or e["data"]["object"].get("id") == about]


def test_a_paid_invoice_requests_one_run_for_its_day_and_the_next_tick_only_sees_newer_events(sandbox, instance):
    customer = sandbox.customer("Quick Payer", "usd")
    first = sandbox.invoice(customer, "usd", [4200])
    today = _day_of(first.created)

    result = tick(instance)

    (request,) = result.run_requests
    newest = _event_ids(sandbox)[0]
    assert request.partition_key == today
    assert request.run_key == f"{today}:{newest}"
    assert request.tags["sync_pipeline/trigger"] == "stripe_to_netsuite_on_events"
    assert newest in request.tags["sync_pipeline/events"].split(",")

    # A restarted daemon starts from the stored cursor: nothing new means no run at all.
    assert tick(instance, result.cursor).run_requests == []

    second = sandbox.invoice(customer, "usd", [1700])
    after = tick(instance, result.cursor)

    (again,) = after.run_requests
    events_of_first = set(_event_ids(sandbox, about=first.id))
    tagged = set(again.tags["sync_pipeline/events"].split(","))
    assert tagged and not (tagged & events_of_first), "an event already turned into a run was read again"
    assert json.loads(after.cursor)["event_id"] == _event_ids(sandbox)[0]
    assert second.status == "paid"


def test_a_refund_forty_days_after_its_invoice_dirties_the_invoice_partition(sandbox, instance):
    invoice_day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=40)
    sandbox.clock(at(invoice_day, 10))
    invoice = sandbox.invoice(sandbox.customer("Old Deal", "usd"), "usd", [9900])
    sandbox.clock(None)
    start = tick(instance)  # the invoice's own events are older than the Events API keeps

    refund = sandbox.client.v1.refunds.create({"charge": sandbox.charge_of(invoice.id), "amount": 900})
    result = tick(instance, start.cursor)

    assert [r.partition_key for r in result.run_requests] == [invoice_day.isoformat()]
    refund_events = _event_ids(sandbox, about=refund.id)
    assert refund_events and set(refund_events) <= set(result.run_requests[0].tags["sync_pipeline/events"].split(","))


def test_a_cursor_older_than_thirty_days_marks_every_partition_since_dirty_and_says_so(sandbox, instance, capfd, now):
    sandbox.customer("Anyone", "usd")
    stale = routing.EventCursor(event_id="evt_gone", event_created=now - 35 * DAY, evaluated_at=now - 35 * DAY)

    result = tick(instance, stale.dumps())

    logged = capfd.readouterr().err  # the tick's log, as the daemon records it
    partitions = [r.partition_key for r in result.run_requests]
    expected = routing.partitions_since(now - 35 * DAY, now)
    assert partitions == expected and len(partitions) == 36
    assert "older than the Events API's 30-day window" in logged
    assert "marking every partition since" in logged
    assert json.loads(result.cursor)["event_id"] == _event_ids(sandbox)[0]
    # No event behind these runs: each key names the event the cursor jumped to, so a repeated tick adds none.
    assert [r.run_key for r in result.run_requests] == [f"{p}:catch-up-{_event_ids(sandbox)[0]}" for p in expected]


def test_a_sensor_that_was_stopped_catches_up_every_partition_since_its_last_tick(sandbox, instance, capfd, now):
    first = tick(instance)
    cursor = routing.EventCursor.parse(first.cursor)
    cursor.evaluated_at = now - 2 * DAY

    result = tick(instance, cursor.dumps(), last_start=float(now - DAY))

    logged = capfd.readouterr().err
    assert [r.partition_key for r in result.run_requests] == routing.partitions_since(cursor.evaluated_at, now)
    assert "the sensor was stopped" in logged


def test_inbox_events_delivered_twice_and_shuffled_make_one_run_and_are_acknowledged_once(
    sandbox, instance, tmp_path, monkeypatch
):
    monkeypatch.setenv("SYNC_EVENT_SOURCE", "webhooks")
    sandbox.invoice(sandbox.customer("Inbox Payer", "eur"), "eur", [5000])
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    events = _events(sandbox)
    stored = [ledger.add_event(e) for e in [*reversed(events), *events]]
    assert stored.count(True) == len(events)

    first = tick(instance)

    (request,) = first.run_requests
    assert request.tags["sync_pipeline/event_source"] == "webhooks"
    # Events that dirty nothing are done at once; the run's events wait until the tick is committed.
    assert ledger.inbox_status().depth == int(request.tags["sync_pipeline/event_count"]) > 0
    second = tick(instance, first.cursor)
    assert second.run_requests == []
    status = ledger.inbox_status()
    assert status.depth == 0
    assert status.last_processed is not None


def test_events_of_a_partition_whose_run_has_not_started_join_its_next_run(sandbox, instance, now):
    sandbox.clock(now)  # both invoices on one day, even at midnight
    customer = sandbox.customer("Busy Day", "usd")
    today = _day_of(sandbox.invoice(customer, "usd", [1000]).created)
    first = tick(instance)
    (request,) = first.run_requests
    queued = dg.DagsterRun(
        job_name=STRIPE_TO_NETSUITE_JOB,
        status=dg.DagsterRunStatus.NOT_STARTED,
        tags={**request.tags, "dagster/partition": today, "dagster/run_key": request.run_key},
    )
    instance.add_run(queued)  # what the daemon does with the request

    later = sandbox.invoice(customer, "usd", [2000])
    second = tick(instance, first.cursor)

    assert second.run_requests == [], "the queued run has not read Stripe yet: no second run"
    deferred = json.loads(second.cursor)["deferred"][today]
    assert set(_event_ids(sandbox, about=later.id)) <= set(deferred)
    assert json.loads(second.cursor)["deferred_scope"] == {today: [later.id]}, "the documents they name wait too"

    instance.report_run_failed(queued)  # whatever happens to it, the waiting events get their own run
    third = tick(instance, second.cursor)

    (rerun,) = third.run_requests
    assert rerun.partition_key == today
    assert set(deferred) <= set(rerun.tags["sync_pipeline/events"].split(","))
    assert rerun.run_config["ops"]["stripe_invoices"]["config"]["only_ids"] == [later.id]
    assert json.loads(third.cursor)["deferred"] == {}


# -- the sensor against the Stripe stand-in --------------------------------------------------------------------


def test_a_paid_invoice_requests_a_run_of_that_invoice_only(sandbox, instance):
    invoice = sandbox.invoice(sandbox.customer("Scoped Payer", "usd"), "usd", [4200])

    (request,) = tick(instance).run_requests

    assert request.partition_key == _day_of(invoice.created)
    assert request.run_config["ops"]["stripe_invoices"]["config"]["only_ids"] == [invoice.id]
    assert request.run_config["execution"] == {"config": {"in_process": {}}}
    assert request.tags[event_scope.SCOPE_TAG] == f"1 document(s): {invoice.id}"


def test_more_documents_than_the_bound_make_a_whole_day_run(sandbox, instance, monkeypatch, now):
    monkeypatch.setenv("SYNC_EVENT_RUN_MAX_DOCUMENTS", "1")
    sandbox.clock(now)  # both invoices on one day, even at midnight
    customer = sandbox.customer("Two Invoices", "usd")
    sandbox.invoice(customer, "usd", [1000])
    sandbox.invoice(customer, "usd", [2000])

    (request,) = tick(instance).run_requests

    assert "ops" not in request.run_config
    assert request.tags[event_scope.SCOPE_TAG] == event_scope.WHOLE_DAY
