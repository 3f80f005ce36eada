"""`sync-pipeline demo` as a new user runs it: every day reconciles, and a second run writes nothing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
TOTAL = re.compile(
    r"^total\s+(?P<created>\d+)\s+(?P<updated>\d+)\s+(?P<unchanged>\d+)\s+(?P<quarantined>\d+)\s+"
    r"(?P<failed>\d+)\s+(?P<reconciled>\d+)/(?P<days>\d+) days reconcile$",
    re.MULTILINE,
)
WRITES = re.compile(r"^NetSuite writes this run: (\d+)$", re.MULTILINE)
PAYOUTS = re.compile(r"^Payouts arrived: (\d+); deposited, each equal to its payout to the cent: (\d+)$", re.MULTILINE)


def _demo(home: Path) -> tuple[subprocess.CompletedProcess, dict[str, int], int]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRIPE_", "NETSUITE_", "SALESFORCE_", "SYNC_"))}
    env["DAGSTER_HOME"] = str(home)
    done = subprocess.run(
        [sys.executable, "-m", "sync_pipeline.cli", "demo", "--days", "4", "--invoices", "24", "--seed", "5"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    total = TOTAL.search(done.stdout)
    writes = WRITES.search(done.stdout)
    assert total and writes, done.stdout + done.stderr
    return done, {k: int(v) for k, v in total.groupdict().items()}, int(writes.group(1))


def test_the_demo_reconciles_every_day_and_a_second_run_writes_nothing(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())  # as `make demo` prepares it

    first, totals, writes = _demo(home)

    assert first.returncode == 0, first.stdout + first.stderr
    assert totals["days"] >= 3 and totals["reconciled"] == totals["days"]
    assert totals["created"] > 0 and totals["failed"] == 0
    assert writes == totals["created"] + totals["updated"]
    arrived, deposited = (int(n) for n in PAYOUTS.search(first.stdout).groups())
    assert arrived > 0 and deposited == arrived, first.stdout

    second, again, second_writes = _demo(home)

    assert second.returncode == 0, second.stdout + second.stderr
    assert "already seeded" in second.stdout
    assert (again["created"], again["updated"], again["failed"]) == (0, 0, 0)
    assert again["unchanged"] == totals["created"] + totals["updated"] + totals["unchanged"]
    assert again["reconciled"] == again["days"] == totals["days"]
    assert second_writes == 0
