"""Snapshots of extract and sync assets as Parquet files, one per partition (a range run's too: one file per day)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from sync_pipeline.daily_ranges import DailyFrames
from sync_pipeline.event_scope import is_partial_run

# An unpartitioned asset (Salesforce billing) belongs to no day, so two runs at once write the same
# `_all.parquet`: each run also keeps its own copy under `_runs/`, which its downstream steps read, so a run
# never bills from, or reports, the other run's snapshot. A run takes minutes; older copies are removed.
RUN_SNAPSHOTS = "_runs"
RUN_SNAPSHOT_SECONDS = 2 * 24 * 3600
# A sensor run that syncs only the documents its events name (`event_scope`) holds a subset of its day: its outputs
# go to `_partial/<day>.<run id>.parquet`, which its own downstream steps read, and the day's file stays the last
# whole day's, for any later reader of the day. Removed after RUN_SNAPSHOT_SECONDS too. A partial run also touches
# `_partial/<day>.last` (kept): a day's file older than it lacks what that run synced (`stored_days`).
PARTIAL_SNAPSHOTS = "_partial"
PARTIAL_MARK = ".last"


@dataclass(frozen=True)
class StoredDays:
    """Which of a daily asset's days have a whole-day file, and which of those a partial run synced after."""

    paths: dict[str, Path]  # day -> its whole-day file
    missing: list[str]  # never materialized as a whole day
    superseded: list[str]  # a partial run of the day came after its whole-day file


def _write(obj: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent runs never share it
    obj.to_parquet(tmp, index=False)
    tmp.replace(path)  # atomic: a reader never sees half a snapshot


def _prune(folder: Path) -> None:
    cutoff = time.time() - RUN_SNAPSHOT_SECONDS
    for old in folder.glob("*.parquet"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:  # another run pruned it first
            pass


def _partial_run_id(context: dg.OutputContext | dg.InputContext) -> str | None:
    """The run's id when it is a partial run (its config scopes the extract assets), else None."""
    try:
        run = context.step_context.dagster_run
    except (dg.DagsterInvariantViolationError, AttributeError):  # outside a run (a test's build_output_context)
        return None
    return run.run_id if is_partial_run(run.run_config) else None


def _upstream_run_id(context: dg.InputContext) -> str | None:
    try:
        return context.upstream_output.run_id if context.upstream_output else None
    except dg.DagsterInvariantViolationError:  # loaded outside a run that produced it
        return None


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames under `base_dir/<asset key>/<partition>.parquet` (or `_all.parquet`, and the run's own
    copy `_runs/<run id>.parquet`)."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = Path(*context.asset_key.path)
        name = f"{context.asset_partition_key}.parquet" if context.has_asset_partitions else "_all.parquet"
        return Path(self.base_dir) / key / name

    @staticmethod
    def _partial_path(day_path: Path, run_id: str) -> Path:
        return day_path.parent / PARTIAL_SNAPSHOTS / f"{day_path.stem}.{run_id}.parquet"

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | DailyFrames | None) -> None:
        if obj is None:
            return
        if isinstance(obj, DailyFrames):
            # A range run (a backfill): each day its own file; each day's rows are in its own materialization.
            folder = Path(self.base_dir, *context.asset_key.path)
            for day in obj:
                _write(obj[day], folder / f"{day}.parquet")
            obj.discard()
            context.add_output_metadata({"path": dg.MetadataValue.path(str(folder))})
            return
        path = self._path(context)
        partial = _partial_run_id(context) if context.has_asset_partitions else None
        if partial:
            path = self._partial_path(path, partial)
        metadata: dict[str, dg.RawMetadataValue] = {"path": dg.MetadataValue.path(str(path)), "rows": len(obj)}
        if partial:
            metadata["partial_run"] = "rows of the documents this run's events named; the day's file is untouched"
            _write(obj, path)
            _prune(path.parent)
            (path.parent / f"{context.asset_partition_key}{PARTIAL_MARK}").touch()
            context.add_output_metadata(metadata)
            return
        if not context.has_asset_partitions:
            own = path.parent / RUN_SNAPSHOTS / f"{context.run_id}.parquet"
            _write(obj, own)
            _prune(own.parent)
            metadata["run_snapshot"] = dg.MetadataValue.path(str(own))
        _write(obj, path)
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pd.DataFrame | DailyFrames:
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            # A range of days: each read when the step reaches it, so a year's range holds one day in memory.
            folder = Path(self.base_dir, *context.asset_key.path)
            return DailyFrames({key: folder / f"{key}.parquet" for key in context.asset_partition_keys})
        path = self._path(context)
        partial = _partial_run_id(context) if context.has_asset_partitions else None
        if partial and self._partial_path(path, partial).exists():
            return pd.read_parquet(self._partial_path(path, partial))
        run_id = None if context.has_asset_partitions else _upstream_run_id(context)
        own = path.parent / RUN_SNAPSHOTS / f"{run_id}.parquet"
        return pd.read_parquet(own if run_id and own.exists() else path)

    def stored_days(self, asset_key: dg.AssetKey, days: Sequence[str]) -> StoredDays:
        """The whole-day files of `days` of a daily asset (outside a run: what a later reader of the days gets)."""
        folder = Path(self.base_dir, *asset_key.path)
        paths, missing, superseded = {}, [], []
        for day in days:
            path = folder / f"{day}.parquet"
            try:
                written = path.stat().st_mtime_ns
            except FileNotFoundError:
                missing.append(day)
                continue
            paths[day] = path
            mark = folder / PARTIAL_SNAPSHOTS / f"{day}{PARTIAL_MARK}"
            if mark.exists() and mark.stat().st_mtime_ns > written:
                superseded.append(day)
        return StoredDays(paths, missing, superseded)
