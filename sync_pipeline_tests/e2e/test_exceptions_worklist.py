"""The exceptions worklist end to end: a problem planted in a real run, listed by the asset and by
`sync-pipeline exceptions`, fixed in field_mapping.yaml, retried through Dagster, and resolved."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from sync_pipeline.cli import main
from sync_pipeline.jobs import STRIPE_TO_NETSUITE_JOB, TRIGGER_TAG
from sync_pipeline_tests.e2e.harness import DAY, amount, at, checks, metadata, running_sandbox
from sync_pipeline_tests.e2e.test_crash_and_dev import _free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _mapping_without_eur(path: Path) -> Path:
    mapping = yaml.safe_load((ROOT / "field_mapping.yaml").read_text())
    del mapping["currencies"]["EUR"]
    for subsidiary in mapping["subsidiaries"].values():
        subsidiary["currencies"] = [c for c in subsidiary.get("currencies") or [] if c != "EUR"]
    path.write_text(yaml.safe_dump(mapping))
    return path


def _cli(capsys, *argv: str) -> tuple[int, str]:
    capsys.readouterr()
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_an_unmapped_currency_is_on_the_worklist_and_a_retry_after_the_fix_resolves_it(tmp_path, monkeypatch, capsys):
    mapping_file = _mapping_without_eur(tmp_path / "field_mapping.yaml")
    with running_sandbox(tmp_path, monkeypatch, field_mapping=mapping_file) as sandbox:
        sandbox.clock(at(DAY, 13))
        sandbox.invoice(sandbox.customer("Dollar Co", "usd"), "usd", [1000])
        euro_customer = sandbox.customer("Euro GmbH", "eur")
        bad = sandbox.invoice(euro_customer, "eur", [2000, 510])
        sandbox.clock(None)
        external_id = f"stripe-{bad.id}"
        instance = dg.DagsterInstance.get()

        result = sandbox.materialize(instance=instance)

        # The day's run refreshes the worklist: the exception, whose money, how much, how old, and the fix.
        assert result.success
        worklist = result.output_for_node("open_exceptions_worklist")
        row = worklist.set_index("external_id").loc[external_id]
        assert row["error_code"] == "UNMAPPED_CURRENCY"
        assert (row["record_type"], row["day"], row["stripe_object"]) == ("invoice", DAY.isoformat(), bad.id)
        assert row["field"] == "currency" and row["value"].upper() == "EUR"
        assert (row["stripe_customer"], row["amount"]) == (euro_customer, "EUR 25.10")
        assert row["age"] in ("0 min", "1 min") and row["occurrences"] == 1
        assert "add EUR under `currencies:` in field_mapping.yaml" in row["fix"]
        shown = metadata(result, "open_exceptions_worklist")
        assert shown["open_exceptions"] >= 1 and shown["days_affected"] == [DAY.isoformat()]
        assert "EUR 25.10" in shown["worklist"] and external_id in shown["worklist"]
        check = checks(result)[("open_exceptions_worklist", "no_open_exceptions")]
        assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
        assert external_id in check.metadata["worklist"].value

        # The same from a shell; exit 1 while any is open, so cron can alert.
        code, out = _cli(capsys, "exceptions", "--open", "--format", "json")
        assert code == 1
        listed = {r["external_id"]: r for r in json.loads(out)}
        assert listed[external_id]["amount"] == "EUR 25.10"
        assert listed[external_id]["stripe_customer"] == euro_customer
        assert listed[external_id]["day"] == DAY.isoformat()
        assert "add EUR under `currencies:`" in listed[external_id]["fix"]
        code, out = _cli(capsys, "exceptions", "--open", "--code", "unmapped_currency")
        assert code == 1 and external_id in out and "EUR 25.10" in out and "add EUR under" in out

        # The finance user maps EUR again and retries: the day runs through Dagster and the exception closes.
        mapping_file.write_text((ROOT / "field_mapping.yaml").read_text())
        code, out = _cli(capsys, "exceptions", "retry", "--in-process")

        assert code == 0, out
        run_ids = [line.split(" run ")[1].split()[0] for line in out.splitlines() if " run " in line]
        assert len(run_ids) == 1
        run = instance.get_run_by_id(run_ids[0])
        assert run.job_name == STRIPE_TO_NETSUITE_JOB and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags["dagster/partition"] == DAY.isoformat() and run.tags[TRIGGER_TAG] == "exceptions-retry"
        # The invoice's payment is held back with it (same currency): both close, nothing stays open.
        assert "still open: 0." in out
        assert amount(sandbox.netsuite("invoice")[external_id]) == Decimal("25.10")
        code, out = _cli(capsys, "exceptions", "--open")
        assert (code, out.strip()) == (0, "No open exceptions.")
        code, out = _cli(capsys, "exceptions", "--format", "csv")
        assert code == 0 and external_id in out and "EUR 25.10" in out
        latest = instance.get_latest_materialization_event(dg.AssetKey("open_exceptions_worklist"))
        assert latest.run_id == run_ids[0]
        assert latest.asset_materialization.metadata["open_exceptions"].value == 0


def test_retry_without_a_dagster_webserver_says_how_to_run_the_days(tmp_path, monkeypatch, capsys):
    mapping_file = _mapping_without_eur(tmp_path / "field_mapping.yaml")
    with running_sandbox(tmp_path, monkeypatch, field_mapping=mapping_file) as sandbox:
        sandbox.clock(at(DAY, 9))
        sandbox.invoice(sandbox.customer("Euro GmbH", "eur"), "eur", [700])
        sandbox.clock(None)
        assert sandbox.materialize().success

        code = main(["exceptions", "retry", "--url", "http://127.0.0.1:9"])

        assert code == 2
        err = capsys.readouterr().err
        assert "no Dagster webserver answered at http://127.0.0.1:9" in err and "--in-process" in err


@contextlib.contextmanager
def _dagster_dev() -> Iterator[str]:
    """`sync-pipeline dev` (webserver and daemon) on this process's environment; its URL once it answers."""
    port = _free_port()
    dev = subprocess.Popen(
        [sys.executable, "-m", "sync_pipeline.cli", "dev", "--no-sandbox", "--port", str(port)],
        env=dict(os.environ),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with contextlib.suppress(requests.ConnectionError):
                if requests.get(f"{url}/server_info", timeout=2).ok:
                    break
            assert dev.poll() is None, "sync-pipeline dev exited early"
            time.sleep(0.5)
        yield url
    finally:
        dev.send_signal(signal.SIGINT)
        try:
            dev.wait(timeout=60)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(dev.pid, signal.SIGKILL)  # never leak a daemon


def test_retry_submits_the_day_to_the_running_dagster_whose_daemon_runs_it(tmp_path, monkeypatch, capsys):
    mapping_file = _mapping_without_eur(tmp_path / "field_mapping.yaml")
    with running_sandbox(tmp_path, monkeypatch, field_mapping=mapping_file) as sandbox:
        (sandbox.home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())  # as `make dev` has it
        sandbox.clock(at(DAY, 10))
        bad = sandbox.invoice(sandbox.customer("Euro GmbH", "eur"), "eur", [1234])
        sandbox.clock(None)
        assert sandbox.materialize().success
        mapping_file.write_text((ROOT / "field_mapping.yaml").read_text())

        with _dagster_dev() as url:
            code, out = _cli(capsys, "exceptions", "retry", "--url", url)

            assert code == 0, out
            run_id = next(line.split(" run ")[1].split()[0] for line in out.splitlines() if "submitted, run" in line)
            instance = dg.DagsterInstance.get()
            run = instance.get_run_by_id(run_id)
            assert run.tags["dagster/partition"] == DAY.isoformat() and run.tags[TRIGGER_TAG] == "exceptions-retry"
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline and not instance.get_run_by_id(run_id).is_finished:
                time.sleep(1)
            assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS
        assert amount(sandbox.netsuite("invoice")[f"stripe-{bad.id}"]) == Decimal("12.34")
        assert _cli(capsys, "exceptions", "--open")[0] == 0
