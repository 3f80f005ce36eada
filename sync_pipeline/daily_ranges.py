"""A backfill syncs a range of days in one run; every day keeps its own materialization, metadata and checks.

A sensor or the schedule runs one day, as before. A backfill (the UI's, or `sync-pipeline backfill`) runs every
daily asset over a range of days in one run (`BACKFILL_POLICY`): the run starts once, each step starts once, and
each step goes through the days, calling the asset's own one-day body for each (`each_day`), a few days at once
(`DAYS_AT_ONCE`). So:

- exactly once stays what it is: a day's records are mapped, validated, written (external-id upserts, the
  ledger) and read back exactly as a one-day run does it; days side by side write different records (a document
  belongs to the day its root was created), except customers, which many days share: their writer goes one day
  after the other (`in_order`), as separate runs did;
- every step finishes every day before the next step starts, so a deposit (by arrival day) finds the payments of
  the days before it in NetSuite already, whatever the range;
- each day's figures are its own materialization's metadata (`add_asset_metadata(partition_key=day)`: Dagster
  records one materialization per day of the range), and each day's check results are evaluations of that day
  (an `AssetCheckEvaluation` with `partition=day`; an `AssetCheckResult` in a range run would belong to no day);
- memory stays a few days' (`DAYS_AT_ONCE`, and no more documents side by side than `DOCUMENTS_AT_ONCE`: a big
  day runs alone), whatever the range: a step's output is a `DailyFrames`, each day's
  frame spilled to a Parquet file as soon as the day is done (a day of 20,000 invoices peaks near 1 GiB; a year of
  them would not fit), and its input is a `DailyFrames` that reads a day when asked.

Why one run for the whole range (`single_run`) rather than runs of N days: a step per day costs seconds of process
start-up, which is what a year's backfill paid before; with several runs at once, a later chunk's deposits could
run before an earlier chunk's payments were written; and memory no longer grows with the range. What it costs: a
step that fails (NetSuite not answering after retries) fails the run, and its retry goes through the range again,
where the ledger makes every record already written free.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import shutil
import tempfile
import time
import typing
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow.parquet as pq

# Not exported by Dagster 1.13: what ties a check evaluation to the materialization it checked (the UI's link).
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

BACKFILL_POLICY = dg.BackfillPolicy.single_run()
# Days of a range a step works on at once. A day's fixed cost is mostly waiting (NetSuite read-backs at its latency,
# Stripe lists, the ledger), so a few days side by side keep NetSuite's slots busy; the client's one limiter still
# caps requests in flight for them all. Memory: at most this many days' peak.
DAYS_AT_ONCE = 4
# ... as long as the days side by side hold no more documents than this together: a day of 20,000 invoices peaks near
# 1 GiB on its own, so a big day runs alone (four of them at once measured 2.2 GiB and more at 10,000 invoices each).
DOCUMENTS_AT_ONCE = 5_000
PROGRESS_LOG_SECONDS = 30.0
# `backfill_policy=` on an asset is a Dagster beta in 1.13 (pinned <1.14 in pyproject.toml): the warning is expected,
# once per asset at import, and would otherwise print on every command's stderr.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function `asset`", category=dg.BetaWarning)


class DailyFrames(Mapping[str, pd.DataFrame]):
    """A frame per day, kept as Parquet files and read one day at a time."""

    def __init__(self, paths: Mapping[str, Path] | None = None, spill_dir: Path | None = None):
        self._paths: dict[str, Path] = dict(paths or {})
        self._spill_dir = spill_dir

    @classmethod
    def spilled(cls) -> DailyFrames:
        """An empty set whose frames go to a scratch folder (removed with the object, or by `discard`)."""
        folder = Path(tempfile.mkdtemp(prefix="sync-days-"))
        frames = cls(spill_dir=folder)
        weakref.finalize(frames, shutil.rmtree, folder, True)
        return frames

    def add(self, day: str, frame: pd.DataFrame) -> None:
        if self._spill_dir is None:
            raise TypeError("these frames are read-only: they were loaded, not produced")
        path = self._spill_dir / f"{day}.parquet"
        frame.to_parquet(path, index=False)
        self._paths[day] = path

    def discard(self) -> None:
        if self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)

    def __getitem__(self, day: str) -> pd.DataFrame:
        return pd.read_parquet(self._paths[day])

    def rows(self, day: str) -> int:
        """The day's row count, from its file's footer (nothing loaded); 0 for a day it does not hold."""
        path = self._paths.get(day)
        return pq.read_metadata(path).num_rows if path is not None else 0

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._paths))

    def __len__(self) -> int:
        return len(self._paths)


def is_range(context: dg.AssetExecutionContext) -> bool:
    """Whether the run is a range of days (a backfill) rather than one day."""
    return not context.has_partition_key or len(context.partition_keys) > 1


class DayContext:
    """The run's context seen from one day of its range: what an asset's one-day body reads and adds."""

    def __init__(self, context: dg.AssetExecutionContext, day: str):
        self._context = context
        self._day = day
        self.output_metadata: dict[str, Any] = {}

    @property
    def partition_key(self) -> str:
        return self._day

    @property
    def partition_keys(self) -> list[str]:
        return [self._day]

    @property
    def has_partition_key(self) -> bool:
        return True

    @property
    def partition_time_window(self) -> dg.TimeWindow:
        return self._context.assets_def.partitions_def.time_window_for_partition_key(self._day)

    def add_output_metadata(self, metadata: Mapping[str, Any], output_name: str | None = None) -> None:
        self.output_metadata.update(metadata)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def check_evaluation(
    context: dg.AssetExecutionContext, result: dg.AssetCheckResult, day: str
) -> dg.AssetCheckEvaluation:
    """A day's check result as an evaluation of that day's partition (what a one-day run records)."""
    key = dg.AssetCheckKey(result.asset_key or context.asset_key, result.check_name)
    spec = context.assets_def.get_spec_for_check_key(key)
    latest = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key.asset_key, asset_partitions=[day]), limit=1
    ).records
    target = (
        AssetCheckEvaluationTargetMaterializationData(
            run_id=latest[0].run_id, storage_id=latest[0].storage_id, timestamp=latest[0].timestamp
        )
        if latest
        else None
    )
    return dg.AssetCheckEvaluation(
        asset_key=key.asset_key,
        check_name=key.name,
        passed=result.passed,
        metadata=result.metadata,
        target_materialization_data=target,
        severity=result.severity,
        description=result.description,
        blocking=spec.blocking,
        partition=day,
    )


# What the days of one range step share (`step_memo`); unset outside a range step.
_STEP_MEMO: contextvars.ContextVar[dict[str, dict] | None] = contextvars.ContextVar("step_memo", default=None)


def step_memo(name: str) -> dict:
    """A dict every day of this range step shares under `name` (a fresh one in a one-day run): for answers that do
    not depend on the day, such as a customer's invoices listed from Stripe as they are now, fetched once per step
    rather than once per day the customer appears in. Days run side by side: two may fill the same key."""
    memo = _STEP_MEMO.get()
    return {} if memo is None else memo.setdefault(name, {})


def _one_day(fn: Callable, context: dg.AssetExecutionContext, day: str, args: tuple, kwargs: dict) -> tuple:
    """Run the body for `day`: its events and the metadata it added, for the step's thread to record."""
    day_context = DayContext(context, day)
    day_kwargs = {name: value[day] if isinstance(value, DailyFrames) else value for name, value in kwargs.items()}
    if inspect.isgeneratorfunction(fn):
        events = list(fn(day_context, *args, **day_kwargs))
    else:
        value = fn(day_context, *args, **day_kwargs)
        events = [value if isinstance(value, dg.Output) else dg.Output(value)]
    return events, day_context.output_metadata


def _days_done(fn: Callable, context: dg.AssetExecutionContext, args: tuple, kwargs: dict, threads: int) -> Iterator:
    """(day, events, metadata) for every day of the range, in order; up to `threads` days run at once."""
    days = list(context.partition_keys)
    memo: dict[str, dict] = {}

    def day_context() -> contextvars.Context:
        # Each day in a copy of the step's context, so what a body sets there (its Stripe account) stays its own;
        # the step's memo is the one thing the days share.
        copied = contextvars.copy_context()
        copied.run(_STEP_MEMO.set, memo)
        return copied

    if threads <= 1:
        for day in days:
            yield day, *day_context().run(_one_day, fn, context, day, args, kwargs)
        return
    inputs = [value for value in kwargs.values() if isinstance(value, DailyFrames)]
    largest_output: int | None = None

    def size(day: str) -> int:
        # A day's documents: its largest input; an extract has none, so it is taken as big as the largest day the
        # step has produced so far, and the first day runs alone until that is known.
        if inputs:
            return max(frames.rows(day) for frames in inputs)
        return DOCUMENTS_AT_ONCE if largest_output is None else largest_output

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="day") as pool:
        running: deque = deque()
        documents = 0
        for day in days:
            while running and (len(running) >= threads or documents + size(day) > DOCUMENTS_AT_ONCE):
                first, future, first_size = running.popleft()
                events, added = future.result()
                documents -= first_size
                produced = [len(e.value) for e in events if isinstance(e, dg.Output) and hasattr(e.value, "__len__")]
                largest_output = max([largest_output or 0, *produced])
                yield first, events, added
            running.append((day, pool.submit(day_context().run, _one_day, fn, context, day, args, kwargs), size(day)))
            documents += running[-1][2]
        for day, future, _ in running:
            yield day, *future.result()


def _run_range(
    fn: Callable, context: dg.AssetExecutionContext, args: tuple, kwargs: dict, threads: int
) -> Iterator[Any]:
    days = list(context.partition_keys)
    frames = DailyFrames.spilled()
    results: list[tuple[str, dg.AssetCheckResult]] = []
    logged = time.monotonic()
    for number, (day, events, added) in enumerate(_days_done(fn, context, args, kwargs, threads), start=1):
        for event in events:
            if isinstance(event, dg.Output):
                rows = {"rows": len(event.value)} if isinstance(event.value, pd.DataFrame) else {}
                context.add_asset_metadata({**rows, **added, **event.metadata}, partition_key=day)
                frames.add(day, event.value)
            elif isinstance(event, dg.AssetCheckResult):
                results.append((day, event))
            else:
                raise TypeError(f"{context.asset_key.to_user_string()}: unexpected {type(event).__name__} for {day}")
        # Each log line is an event Dagster stores (about 20 ms on SQLite): a line every half minute, not every day.
        if number == len(days) or time.monotonic() - logged >= PROGRESS_LOG_SECONDS:
            context.log.info(f"{context.asset_key.to_user_string()}: {day} done ({number}/{len(days)} days)")
            logged = time.monotonic()
    yield dg.Output(frames)
    # After the output, so each evaluation names the day's materialization this run just recorded.
    selected = context.selected_asset_check_keys
    for output_name, spec in context.assets_def.check_specs_by_output_name.items():
        if spec.key in selected:
            yield dg.Output(None, output_name=output_name)
    for day, result in results:
        yield check_evaluation(context, result, day)


def each_day(fn: Callable | None = None, *, in_order: bool = False) -> Callable:
    """Make a daily asset's one-day body run over a range of days too (a backfill).

    A one-day run calls the body as it is. A range run calls it once per day with a context whose partition is that
    day and inputs that are that day's frames, `DAYS_AT_ONCE` days at a time (`in_order`: one after the other, for
    a body whose days share records), and records each day's output, metadata and check results in day order.
    """
    if fn is None:
        return functools.partial(each_day, in_order=in_order)
    threads = 1 if in_order else DAYS_AT_ONCE

    @functools.wraps(fn)
    def run(context: dg.AssetExecutionContext, *args, **kwargs):
        if is_range(context):
            yield from _run_range(fn, context, args, kwargs, threads)
        elif inspect.isgeneratorfunction(fn):
            yield from fn(context, *args, **kwargs)
        else:
            value = fn(context, *args, **kwargs)
            yield value if isinstance(value, dg.Output) else dg.Output(value)

    # A range run's inputs and output are DailyFrames, not the body's DataFrames: Dagster checks no type for them
    # (resources keep their annotations, by which Dagster knows them).
    # include_extras keeps `dg.ResourceParam[...]` (an Annotated type) as Dagster needs it.
    hints = typing.get_type_hints(fn, include_extras=True)
    hints = {name: Any if hint is pd.DataFrame else hint for name, hint in hints.items()}
    hints.pop("return", None)
    signature = inspect.signature(fn)
    run.__annotations__ = hints
    run.__signature__ = signature.replace(
        parameters=[p.replace(annotation=hints.get(p.name, p.annotation)) for p in signature.parameters.values()],
        return_annotation=inspect.Signature.empty,
    )
    return run
