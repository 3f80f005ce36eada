"""A sensor run's scope: which documents its events name, the bound above which it is the whole day, and the run
config that carries it (the sensor's requests against the Stripe stand-in: test_event_routing.py)."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from sync_pipeline import event_scope
from sync_pipeline.mapping import events as routing
from sync_pipeline_tests.e2e.harness import at
from sync_pipeline_tests.unit.test_event_routing import EVENTS, LOOKUP, KnownRoots, _event


def test_each_partition_names_the_documents_its_events_point_at():
    routed = routing.route_events(EVENTS, LOOKUP)

    # The invoice (its payment and credit note stand for it), a charge the batch does not tie to an invoice (its
    # run asks Stripe), the customer (its documents of that day); a payout by itself.
    assert routed.scope("2026-10-05") == {"in_1", "ch_1", "cus_1"}
    assert routed.scope("2026-11-20") == {"ch_2"}
    assert routed.scope("2026-11-22") == {"po_1"}


def test_a_batch_that_pays_an_invoice_names_only_the_invoice():
    created = at(dt.date(2026, 11, 23), 9)
    batch = [
        _event("evt_1", "invoice.paid", {"id": "in_9", "object": "invoice", "created": created}, created),
        _event(
            "evt_2",
            "invoice_payment.paid",
            {"id": "inpay_9", "invoice": "in_9", "payment": {"type": "payment_intent", "payment_intent": "pi_9"}},
            created,
        ),
        _event("evt_3", "charge.succeeded", {"id": "ch_9", "object": "charge", "payment_intent": "pi_9"}, created),
        _event("evt_4", "refund.created", {"id": "re_9", "payment_intent": "pi_9"}, created),
    ]

    routed = routing.route_events(batch, KnownRoots(invoices={}, charges={}))

    assert routed.scope("2026-11-23") == {"in_9"}


class IntentsKnown(KnownRoots):
    def payment_intent_partition(self, payment_intent_id: str) -> str | None:
        return "2026-10-05"


def test_an_event_naming_nothing_fetchable_makes_its_partition_a_whole_day():
    refund = _event("evt_p", "refund.created", {"id": "re_7", "payment_intent": "pi_unknown"}, 200)

    routed = routing.route_events([EVENTS[0], refund], IntentsKnown(invoices={}, charges={}))

    assert routed.dirty == {"2026-10-05": ["evt_a", "evt_p"]}
    assert routed.scope("2026-10-05") is None
    routed.name_document("2026-10-05", "in_later")  # later events do not narrow it again
    assert routed.scope("2026-10-05") is None


@settings(max_examples=40, deadline=None)
@given(st.permutations(EVENTS), st.lists(st.sampled_from(EVENTS), max_size=10))
def test_order_and_repetition_do_not_change_the_scope(shuffled, repeats):
    expected = routing.route_events(EVENTS, LOOKUP)

    routed = routing.route_events([*shuffled, *repeats], LOOKUP)

    assert {p: routed.scope(p) for p in routed.dirty} == {p: expected.scope(p) for p in expected.dirty}


def test_the_bound_turns_too_many_documents_or_none_into_the_whole_day():
    assert event_scope.bounded({"in_2", "in_1"}, 2) == ["in_1", "in_2"]
    assert event_scope.bounded({"in_1", "in_2", "in_3"}, 2) is None
    assert event_scope.bounded(None, 500) is None
    assert event_scope.bounded(set(), 500) is None
    assert event_scope.bounded({"in_1"}, 0) is None  # SYNC_EVENT_RUN_MAX_DOCUMENTS=0: whole days only


def test_the_limit_is_a_setting_with_a_default_of_500():
    assert event_scope.max_documents({}) == 500
    assert event_scope.max_documents({"SYNC_EVENT_RUN_MAX_DOCUMENTS": "0"}) == 0


def test_run_config_scopes_the_three_extract_assets_of_any_account():
    from sync_pipeline.account_sets import account_assets
    from sync_pipeline.assets import cash, stripe
    from sync_pipeline.stripe_accounts import StripeAccount

    base = {"execution": {"config": {"in_process": {}}}}

    config = event_scope.scoped_run_config(base, ["in_1", "po_1"])

    assert config["execution"] == base["execution"]
    assert config["ops"] == {asset: {"config": {"only_ids": ["in_1", "po_1"]}} for asset in event_scope.SCOPED_ASSETS}
    # Another account's assets are prefixed (eu/stripe_invoices) but keep their op names.
    eu_assets = account_assets(StripeAccount("eu", default=False), [stripe, cash], "2026-01-01")
    ops = {a.op.name for a in eu_assets if a.key.path[-1] in event_scope.SCOPED_ASSETS}
    assert ops == set(event_scope.SCOPED_ASSETS)
    assert event_scope.is_partial_run(config)
    assert event_scope.scoped_run_config(base, None) == base
    assert not event_scope.is_partial_run(base)
    assert not event_scope.is_partial_run(None)


def test_each_extract_asset_takes_the_ids_of_its_kind():
    scope = event_scope.EventScope(only_ids=["in_1", "ch_1", "py_2", "cus_1", "po_1", "in_1"])

    assert scope.ids(event_scope.INVOICE_PREFIXES) == ["in_1"]
    assert scope.ids(event_scope.CHARGE_PREFIXES) == ["ch_1", "py_2"]
    assert scope.ids(event_scope.PAYOUT_PREFIXES) == ["po_1"]
    assert event_scope.EventScope().ids(event_scope.INVOICE_PREFIXES) is None
    assert event_scope.EventScope(only_ids=[]).partial
