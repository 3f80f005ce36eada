"""The range logic of backfills: days of a range, progress figures, and a one-day body run over a range."""

from __future__ import annotations

import datetime as dt
import threading
import time
import warnings

import dagster as dg
import pandas as pd
import pytest

from sync_pipeline.backfill_cli import Progress, days_between, expected_writes
from sync_pipeline.daily_ranges import BACKFILL_POLICY, DOCUMENTS_AT_ONCE, DailyFrames, each_day, step_memo
from sync_pipeline.io_managers import ParquetIOManager

TODAY = dt.date(2026, 12, 1)


def test_days_between_lists_every_day_both_ends_included():
    assert days_between("2026-02-27", "2026-03-01", "2026-01-01", TODAY) == ["2026-02-27", "2026-02-28", "2026-03-01"]
    assert days_between("2026-05-05", "2026-05-05", "2026-01-01", TODAY) == ["2026-05-05"]


@pytest.mark.parametrize(
    ("start", "end", "says"),
    [
        ("2026-03-02", "2026-03-01", "before --from"),
        ("2025-12-31", "2026-01-02", "before SYNC_START_DATE"),
        ("2026-11-30", "2026-12-02", "after today"),
        ("2026/01/02", "2026-01-03", "YYYY-MM-DD"),
    ],
)
def test_days_between_refuses_a_range_with_the_reason(start, end, says):
    with pytest.raises(ValueError, match=says):
        days_between(start, end, "2026-01-01", TODAY)


def test_progress_estimates_time_left_from_the_rate_so_far_and_the_announced_writes():
    progress = Progress(days=365, days_done=0, writes=1_000, seconds=10.0, expected_writes=31_000)
    assert progress.writes_per_second == 100.0
    assert progress.seconds_left == 300.0
    assert "1,000 of 31,000 NetSuite writes, 100.0 writes/s, about 5 min 00 s left" in progress.line()
    assert Progress(365, 0, 0, 3.0).seconds_left is None
    assert "after the first writes" in Progress(365, 0, 0, 3.0).line()
    assert Progress(2, 2, 50, 1.0, expected_writes=40).seconds_left == 0


def test_progress_says_no_writes_are_left_and_which_steps_the_run_is_at():
    # A re-run of a synced range: the plans announce nothing to write, so there is nothing to estimate.
    rerun = Progress(3, 0, 0, 12.0, expected_writes=0, steps_done=5, steps=16, running=("netsuite_invoices",))
    assert rerun.seconds_left == 0
    assert rerun.line().startswith("0/3 days done (5/16 steps, now netsuite_invoices), 0 of 0 NetSuite writes, 0.0 ")
    assert "no writes left" in rerun.line()
    assert Progress(3, 3, 36, 40.0).line(final=True) == "3/3 days done, 36 NetSuite writes in 40 s, 0.9 writes/s"


def test_expected_writes_adds_what_each_days_plan_would_create_or_update():
    plans = [{"would_create": 3, "would_update": 1, "would_stay_unchanged": 9}, {"would_create": 2}]
    assert expected_writes(plans) == 6


def test_daily_frames_spill_each_day_and_read_it_back(tmp_path):
    frames = DailyFrames.spilled()
    frames.add("2026-01-02", pd.DataFrame({"a": [2]}))
    frames.add("2026-01-01", pd.DataFrame({"a": [1, 1]}))
    assert list(frames) == ["2026-01-01", "2026-01-02"]
    assert list(frames["2026-01-01"]["a"]) == [1, 1]
    frames.discard()
    with pytest.raises(TypeError):
        DailyFrames({"2026-01-01": tmp_path / "x.parquet"}).add("2026-01-01", pd.DataFrame())


DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    CHECK = dg.AssetCheckSpec("positive", asset="doubled", partitions_def=DAYS)


@dg.asset(partitions_def=DAYS, backfill_policy=BACKFILL_POLICY)
@each_day
def numbers(context: dg.AssetExecutionContext) -> pd.DataFrame:
    day = int(context.partition_key[-2:])
    context.add_output_metadata({"day_of_month": day})
    return pd.DataFrame({"n": [day] * day})


@dg.asset(partitions_def=DAYS, backfill_policy=BACKFILL_POLICY, check_specs=[CHECK])
@each_day
def doubled(context: dg.AssetExecutionContext, numbers: pd.DataFrame):
    assert context.partition_keys == [context.partition_key]
    frame = numbers * 2
    yield dg.Output(frame, metadata={"total": int(frame["n"].sum())})
    yield dg.AssetCheckResult(check_name="positive", passed=context.partition_key != "2026-01-02")


def _run(tmp_path, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [numbers, doubled], resources={"io_manager": ParquetIOManager(base_dir=str(tmp_path))}, **kwargs
    )


def test_a_range_run_gives_each_day_its_materialization_metadata_check_and_file(tmp_path):
    result = _run(
        tmp_path,
        tags={"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-01-03"},
    )

    assert result.success
    materialized = {
        (m.asset_key.to_user_string(), m.partition): {k: v.value for k, v in m.metadata.items()}
        for m in (e.event_specific_data.materialization for e in result.get_asset_materialization_events())
    }
    assert materialized[("numbers", "2026-01-03")]["day_of_month"] == 3
    assert materialized[("numbers", "2026-01-03")]["rows"] == 3
    assert materialized[("doubled", "2026-01-02")]["total"] == 8
    assert {(e.partition, e.passed) for e in result.get_asset_check_evaluations()} == {
        ("2026-01-01", True),
        ("2026-01-02", False),
        ("2026-01-03", True),
    }
    assert list(pd.read_parquet(tmp_path / "doubled" / "2026-01-03.parquet")["n"]) == [6, 6, 6]


def test_a_one_day_run_is_the_body_as_it_is(tmp_path):
    result = _run(tmp_path, partition_key="2026-01-02")

    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.partition, evaluation.passed) == ("2026-01-02", False)
    assert result.asset_materializations_for_node("doubled")[0].metadata["total"].value == 8


LISTED: list[str] = []


@dg.asset(partitions_def=DAYS, backfill_policy=BACKFILL_POLICY)
@each_day
def customer_lists(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """Each day names the customers it saw; a customer's list (the same whatever the day) is fetched once a step."""
    customers = ["cus_A", "cus_B"] if context.partition_key != "2026-01-02" else ["cus_A", "cus_C"]
    lists = step_memo("lists")
    for customer in customers:
        if customer not in lists:
            LISTED.append(customer)
            lists[customer] = [f"{customer} list"]
    return pd.DataFrame({"customer": customers, "list": [lists[c][0] for c in customers]})


def test_days_of_a_range_step_share_its_memo_and_separate_runs_do_not(tmp_path):
    LISTED.clear()
    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    tags = {"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-01-04"}
    assert dg.materialize([customer_lists], resources=resources, tags=tags).success
    assert sorted(LISTED) == ["cus_A", "cus_B", "cus_C"], "four days, each customer listed once"
    day = pd.read_parquet(tmp_path / "customer_lists" / "2026-01-03.parquet")
    assert list(day["list"]) == ["cus_A list", "cus_B list"]

    LISTED.clear()
    for key in ("2026-01-01", "2026-01-03"):
        assert dg.materialize([customer_lists], resources=resources, partition_key=key).success
    assert LISTED == ["cus_A", "cus_B", "cus_A", "cus_B"], "one-day runs share nothing"


BIG_DAY = "2026-01-03"
SIDE_BY_SIDE: dict[str, set[str]] = {}
_running: set[str] = set()
_lock = threading.Lock()


@dg.asset(partitions_def=DAYS, backfill_policy=BACKFILL_POLICY)
@each_day
def documents(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """An extract: how big a day is shows only once it is listed."""
    rows = DOCUMENTS_AT_ONCE if context.partition_key == BIG_DAY else 10
    return pd.DataFrame({"n": range(rows)})


@dg.asset(partitions_def=DAYS, backfill_policy=BACKFILL_POLICY)
@each_day
def per_document(context: dg.AssetExecutionContext, documents: pd.DataFrame) -> pd.DataFrame:
    day = context.partition_key
    with _lock:
        _running.add(day)
        SIDE_BY_SIDE[day] = set(_running)
    time.sleep(0.2)  # long enough for the days admitted with this one to be seen running
    with _lock:
        SIDE_BY_SIDE[day] |= _running
        _running.discard(day)
    return documents


def test_a_big_day_runs_alone_and_small_days_side_by_side(tmp_path):
    SIDE_BY_SIDE.clear()
    tags = {"dagster/asset_partition_range_start": "2026-01-01", "dagster/asset_partition_range_end": "2026-01-06"}
    result = dg.materialize(
        [documents, per_document], resources={"io_manager": ParquetIOManager(base_dir=str(tmp_path))}, tags=tags
    )

    assert result.success
    assert SIDE_BY_SIDE[BIG_DAY] == {BIG_DAY}, "a day of DOCUMENTS_AT_ONCE documents runs alone"
    assert all(BIG_DAY not in seen for day, seen in SIDE_BY_SIDE.items() if day != BIG_DAY)
    assert SIDE_BY_SIDE["2026-01-01"] >= {"2026-01-01", "2026-01-02"}, "small days still run side by side"
    assert len(pd.read_parquet(tmp_path / "per_document" / f"{BIG_DAY}.parquet")) == DOCUMENTS_AT_ONCE
