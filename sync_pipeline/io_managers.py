"""Snapshots of extract and sync assets as Parquet files, one per partition."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import dagster as dg
import pandas as pd


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores DataFrames under `base_dir/<asset key>/<partition>.parquet` (or `_all.parquet`)."""

    base_dir: str

    def _path(self, context: dg.OutputContext | dg.InputContext) -> Path:
        key = Path(*context.asset_key.path)
        name = f"{context.asset_partition_key}.parquet" if context.has_asset_partitions else "_all.parquet"
        return Path(self.base_dir) / key / name

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        path = self._path(context)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")  # concurrent runs never share it
        obj.to_parquet(tmp, index=False)
        tmp.replace(path)  # atomic: a reader never sees half a snapshot
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path)), "rows": len(obj)})

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        if context.has_asset_partitions and len(context.asset_partition_keys) > 1:
            frames = []
            for key in context.asset_partition_keys:
                path = Path(self.base_dir, *context.asset_key.path, f"{key}.parquet")
                if path.exists():
                    frames.append(pd.read_parquet(path))
            return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        return pd.read_parquet(self._path(context))
