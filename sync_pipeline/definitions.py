"""The code location `sync_pipeline`: assets, checks, jobs, schedules, sensors and resources."""

from __future__ import annotations

import os

import dagster as dg

from sync_pipeline import settings
from sync_pipeline.assets import quality
from sync_pipeline.io_managers import ParquetIOManager
from sync_pipeline.resources.ledger import LedgerResource

# Malformed settings stop the code location from loading with one line naming the variable.
# Missing ones are reported when a run needs them (`sync-pipeline check-config` lists all).
settings.require_environment()


def _env_or_default(name: str, default: str) -> str | dg.EnvVar:
    # EnvVar when set, so a value that may hold a password is resolved at run time and never shown.
    return dg.EnvVar(name) if os.environ.get(name) else default


def build_resources() -> dict[str, object]:
    return {
        "ledger": LedgerResource(database_url=_env_or_default("SYNC_DATABASE_URL", settings.default_database_url())),
        "io_manager": ParquetIOManager(base_dir=str(settings.dagster_home() / "snapshots")),
    }


defs = dg.Definitions(
    assets=dg.load_assets_from_modules([quality]),
    resources=build_resources(),
)
