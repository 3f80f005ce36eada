"""The code location loads, and runs on both instance storages the README documents."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _dagster_cli() -> str:
    return str(Path(sys.executable).with_name("dagster"))


def test_definitions_validate_from_the_workspace_file(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    result = subprocess.run(
        [_dagster_cli(), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def test_malformed_setting_stops_the_code_location_with_the_variable_named(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "NETSUITE_CONCURRENCY": "many"}
    result = subprocess.run(
        [_dagster_cli(), "definitions", "validate", "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode != 0
    assert "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000" in result.stderr + result.stdout


def _materialize_exceptions_report(instance: dg.DagsterInstance, ledger_url: str, snapshot_dir: Path):
    from sync_pipeline.io_managers import ParquetIOManager
    from sync_pipeline.resources.ledger import ExceptionRow, LedgerResource

    ledger = LedgerResource(database_url=ledger_url)
    ledger.get_ledger().record_exceptions(
        [
            ExceptionRow(
                "netsuite",
                "invoice",
                "stripe-in_1",
                "UNMAPPED_CURRENCY",
                "no subsidiary for CHF",
                "map CHF to a subsidiary under currencies: in field_mapping.yaml",
                field="currency",
                value="chf",
            )
        ],
        partition_key="2026-11-02",
    )
    from sync_pipeline.assets.quality import sync_exceptions

    return dg.materialize(
        [sync_exceptions],
        instance=instance,
        resources={"ledger": ledger, "io_manager": ParquetIOManager(base_dir=str(snapshot_dir))},
        partition_key="2026-11-02",
        selection=[sync_exceptions.key],
    )


def test_embedded_instance_from_the_shipped_dagster_yaml(tmp_path):
    shutil.copy(ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    result = _materialize_exceptions_report(instance, f"sqlite:///{tmp_path / 'ledger.sqlite'}", tmp_path / "snap")
    assert result.success
    meta = result.asset_materializations_for_node("sync_exceptions")[0].metadata
    assert meta["open_exceptions"].value == 1
    # The pools setting shipped for NetSuite writers is what the instance enforces.
    assert instance.get_settings("concurrency")["pools"]["default_limit"] == 1


@pytest.mark.postgres
def test_production_instance_on_postgresql(tmp_path, postgres_database_url, monkeypatch):
    """deploy/dagster-postgres.yaml, configured only through DAGSTER_PG_* variables, stores runs in PostgreSQL."""
    from sqlalchemy.engine import make_url

    url = make_url(postgres_database_url)
    monkeypatch.setenv("DAGSTER_PG_HOST", url.host)
    monkeypatch.setenv("DAGSTER_PG_PORT", str(url.port))
    monkeypatch.setenv("DAGSTER_PG_USER", url.username)
    monkeypatch.setenv("DAGSTER_PG_PASSWORD", "")
    monkeypatch.setenv("DAGSTER_PG_DB", url.database)
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", tmp_path / "dagster.yaml")
    instance = dg.DagsterInstance.from_config(str(tmp_path))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = _materialize_exceptions_report(instance, postgres_database_url, tmp_path / "snap")
        assert result.success
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.is_success
    finally:
        instance.dispose()


def test_a_days_exceptions_report_also_lists_the_open_billing_exceptions_of_no_day(tmp_path):
    """Billing exceptions have no day; the daily report a person opens lists them instead of saying 0 open."""
    from sync_pipeline.resources.ledger import ExceptionRow, Ledger

    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    Ledger(url).record_exceptions(
        [
            ExceptionRow(
                "stripe",
                "opportunity",
                "0065g00000AbCdE",
                "UNMAPPED_SALESFORCE_PRODUCT",
                "opportunity 0065g00000AbCdE: product 01t5g000000XyZ has no Stripe price",
                "add it under salesforce.product_prices in field_mapping.yaml",
                field="Product2Id",
                value="01t5g000000XyZ",
            )
        ]
    )
    result = _materialize_exceptions_report(dg.DagsterInstance.ephemeral(), url, tmp_path / "snap")
    meta = result.asset_materializations_for_node("sync_exceptions")[0].metadata
    assert (meta["open_exceptions"].value, meta["of_this_day"].value, meta["of_no_day"].value) == (2, 1, 1)
    frame = result.output_for_node("sync_exceptions")
    assert list(frame["error_code"]) == ["UNMAPPED_CURRENCY", "UNMAPPED_SALESFORCE_PRODUCT"]
    assert frame["partition_key"].isna().tolist() == [False, True]
