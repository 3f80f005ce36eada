"""The user's field-mapping YAML as a resource (SYNC_FIELD_MAPPING), re-read when the file changes."""

from __future__ import annotations

import os
import threading

import dagster as dg
from pydantic import PrivateAttr

from sync_pipeline.mapping.field_mapping import FieldMapping, FieldMappingError


class FieldMappingResource(dg.ConfigurableResource):
    """Path of `field_mapping.yaml`; a fix to the file takes effect on the next run, no restart needed."""

    path: str

    # Parsed once per resource (per run or step) while the file's modification time stays the same.
    _loaded: tuple[float, FieldMapping] | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def for_account(self, account: str) -> AccountFieldMapping:
        """The mapping as another Stripe account of the deployment books: into its own subsidiary."""
        return AccountFieldMapping(self, account)

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
        with self._lock:
            if self._loaded is None or self._loaded[0] != mtime:
                self._loaded = (mtime, FieldMapping.load(self.path))
            return self._loaded[1]


class AccountFieldMapping:
    """`FieldMappingResource.load()` for one Stripe account: its subsidiary (field_mapping `stripe_accounts:`)."""

    def __init__(self, resource: FieldMappingResource, account: str):
        self.resource = resource
        self.account = account
        self.path = resource.path

    def load(self) -> FieldMapping:
        try:
            return self.resource.load().for_account(self.account)
        except FieldMappingError as exc:
            raise dg.Failure(description=str(exc)) from None
