"""The user's field-mapping YAML as a resource (SYNC_FIELD_MAPPING), re-read when the file changes."""

from __future__ import annotations

import os
import threading

import dagster as dg

from sync_pipeline.mapping.field_mapping import FieldMapping, FieldMappingError

_CACHE: dict[str, tuple[float, FieldMapping]] = {}
_LOCK = threading.Lock()


class FieldMappingResource(dg.ConfigurableResource):
    """Path of `field_mapping.yaml`; a fix to the file takes effect on the next run, no restart needed."""

    path: str

    def load(self) -> FieldMapping:
        try:
            return self._current()
        except FieldMappingError as exc:
            # Every problem, one line each, as `sync-pipeline check-config` prints them.
            raise dg.Failure(description=str(exc)) from None

    def _current(self) -> FieldMapping:
        try:
            mtime = os.path.getmtime(self.path)
        except OSError:
            return FieldMapping.load(self.path)  # raises, naming SYNC_FIELD_MAPPING and the path
        with _LOCK:
            cached = _CACHE.get(self.path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, FieldMapping.load(self.path))
                _CACHE[self.path] = cached
            return cached[1]
