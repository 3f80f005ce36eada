"""The user's field-mapping YAML as a resource (SYNC_FIELD_MAPPING), re-read when the file changes."""

from __future__ import annotations

import os
import threading

import dagster as dg

from sync_pipeline.mapping.field_mapping import FieldMapping

_CACHE: dict[str, tuple[float, FieldMapping]] = {}
_LOCK = threading.Lock()


class FieldMappingResource(dg.ConfigurableResource):
    """Path of `field_mapping.yaml`; a fix to the file takes effect on the next run, no restart needed."""

    path: str

    def load(self) -> FieldMapping:
        if not os.path.isfile(self.path):
            raise dg.Failure(
                description=f"SYNC_FIELD_MAPPING: no file at {self.path}; copy field_mapping.yaml from the project "
                            "and set SYNC_FIELD_MAPPING to its path"
            )
        mtime = os.path.getmtime(self.path)
        with _LOCK:
            cached = _CACHE.get(self.path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, FieldMapping.load(self.path))
                _CACHE[self.path] = cached
            return cached[1]
