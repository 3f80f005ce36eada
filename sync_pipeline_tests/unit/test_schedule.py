"""The daily schedule asks for yesterday plus the look-back, never before the first partition."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from sync_pipeline.definitions import defs
from sync_pipeline.schedules import partitions_for_tick


def test_tick_requests_yesterday_and_three_days_before_it():
    tick = dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC)
    assert partitions_for_tick(tick, 3, "2026-01-01") == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]


def test_look_back_stops_at_the_first_partition():
    tick = dt.datetime(2026, 1, 3, 2, 0, tzinfo=dt.UTC)
    assert partitions_for_tick(tick, 3, "2026-01-01") == ["2026-01-01", "2026-01-02"]


def test_schedule_run_requests_carry_partition_and_a_run_key_per_tick():
    definitions = defs()
    schedule = definitions.resolve_schedule_def("stripe_to_netsuite_daily")
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            repository_def=definitions.get_repository_def(),
            scheduled_execution_time=dt.datetime(2026, 11, 24, 2, 0, tzinfo=dt.UTC),
        )
        requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == ["2026-11-20", "2026-11-21", "2026-11-22", "2026-11-23"]
    assert requests[-1].run_key == "2026-11-24:2026-11-23"
    assert len({r.run_key for r in requests}) == 4
