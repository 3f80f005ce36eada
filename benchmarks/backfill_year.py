"""A year's backfill at NetSuite's governance ceiling: wall time against the writes' floor.

The Stripe and NetSuite stand-ins run in a separate process, the Stripe one seeded in-process with the history
(paid invoices spread over the days, every tenth partly refunded: invoice, payment, credit memo and customer refund
per refunded invoice); the pipeline runs the range the way `sync-pipeline backfill --in-process` does (one Dagster
run over every day, `backfill_cli.materialize_range`), in a child process of its own.

    .venv/bin/python benchmarks/backfill_year.py                             # 365 days, 100,000 invoices
    .venv/bin/python benchmarks/backfill_year.py --days 30 --invoices 3000   # a few minutes
    .venv/bin/python benchmarks/backfill_year.py --days 30 --invoices 3000 --repeat 3   # medians
    .venv/bin/python benchmarks/backfill_year.py --days 30 --invoices 3000 --storage postgres

`--storage postgres` runs on the production storage: Dagster's instance from `deploy/dagster-postgres.yaml` and the
ledger, each in a scratch database on PostgreSQL (`--postgres-url`, dropped afterwards). Dagster stores a few events
per asset and day (materialization, check evaluations); on the default SQLite storage each costs about 20 ms.

Prints the wall time, NetSuite writes, the ceiling (limit / latency) and the ratio wall ÷ (writes ÷ ceiling), the
time a run takes over the least the writes alone could take. Target <= 1.1.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netsuite_throughput import run_child, start_server  # noqa: E402 - the benchmarks share their child runner

SERVER = r"""
import json, sys, time, datetime as dt
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.sandbox.stripe.seeding import seed_history
from sync_pipeline.sandbox.netsuite import start_netsuite
days, invoices, limit, first = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4]), sys.argv[5]
latency = float(sys.argv[3])
stripe = start_stripe()
netsuite = start_netsuite(latency_ms=latency, concurrency_limit=limit)
started = time.perf_counter()
midnight = int(dt.datetime.fromisoformat(first + "T00:00:00+00:00").timestamp())
seed_history(stripe.state, stripe.config, days=days, invoices=invoices, first_day=midnight)
print(json.dumps({**stripe.env(), **netsuite.env(), "seed_seconds": time.perf_counter() - started}), flush=True)
sys.stdin.read()  # until the benchmark closes our stdin
stripe.stop(); netsuite.stop()
"""

CHILD = r"""
import json, os, resource, sys, time, requests
import dagster as dg
from sync_pipeline.backfill_cli import materialize_range
from sync_pipeline.stripe_accounts import DEFAULT_ACCOUNT
days = sys.argv[1:]
base = os.environ["NETSUITE_BASE_URL"]
out = []
for attempt in ("first", "re-run"):
    before = requests.get(base + "/_sandbox/stats").json()["writes_applied"]
    started = time.perf_counter()
    result = materialize_range(days, DEFAULT_ACCOUNT, instance=dg.DagsterInstance.get())
    seconds = time.perf_counter() - started
    stats = requests.get(base + "/_sandbox/stats").json()
    steps = {e.step_key: round(e.event_specific_data.duration_ms / 1000, 1)
             for e in result.all_events if e.is_step_success}
    out.append({"success": result.success, "seconds": seconds, "writes": stats["writes_applied"] - before,
                "peak_concurrency": stats["peak_concurrency"], "rejections": stats["concurrency_rejections"],
                "steps": steps})
print(json.dumps({"runs": out, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def scratch_database(admin_url: str) -> Iterator[sa.URL]:
    """A new, empty database on the server of `admin_url`, dropped on exit."""
    name = f"sync_bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(admin_url).set(database=name)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextlib.contextmanager
def storage_env(storage: str, home: Path, postgres_url: str) -> Iterator[dict[str, str]]:
    """Environment for the pipeline's Dagster instance and ledger on `storage` (sqlite or postgres)."""
    if storage == "sqlite":
        yield {"SYNC_DATABASE_URL": f"sqlite:///{home}/ledger.sqlite"}
        return
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", home / "dagster.yaml")
    with scratch_database(postgres_url) as dagster_db, scratch_database(postgres_url) as ledger_db:
        yield {
            "DAGSTER_PG_HOST": dagster_db.host or "127.0.0.1",
            "DAGSTER_PG_PORT": str(dagster_db.port or 5432),
            "DAGSTER_PG_USER": dagster_db.username or "postgres",
            "DAGSTER_PG_PASSWORD": dagster_db.password or "",
            "DAGSTER_PG_DB": dagster_db.database,
            "SYNC_DATABASE_URL": ledger_db.render_as_string(hide_password=False),
        }


def backfill(days: int, invoices: int, latency_ms: float, limit: int, storage: str, postgres_url: str) -> dict:
    last = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)
    first = last - dt.timedelta(days=days - 1)
    server, sandbox_env = start_server(
        SERVER, [str(days), str(invoices), str(latency_ms), str(limit), first.isoformat()]
    )
    try:
        with tempfile.TemporaryDirectory() as home, storage_env(storage, Path(home), postgres_url) as stored:
            env = {
                **os.environ,
                **{k: v for k, v in sandbox_env.items() if k != "seed_seconds"},
                **stored,
                "DAGSTER_HOME": home,
                "SYNC_START_DATE": first.isoformat(),
                "NETSUITE_CONCURRENCY": str(limit),
            }
            day_keys = [(first + dt.timedelta(days=n)).isoformat() for n in range(days)]
            measured = run_child(CHILD, day_keys, env)
            return {**measured, "seed_seconds": sandbox_env["seed_seconds"]}
    finally:
        server.stdin.close()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--latency-ms", type=float, default=50.0)
    parser.add_argument("--limit", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=1, help="runs (fresh stand-ins each); medians are printed")
    parser.add_argument(
        "--storage", choices=("sqlite", "postgres"), default="sqlite", help="Dagster's and the ledger's"
    )
    parser.add_argument("--postgres-url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()

    ceiling = args.limit / (args.latency_ms / 1000)
    print(
        f"backfill of {args.days} days, {args.invoices:,} invoices (every tenth partly refunded), NetSuite latency "
        f"{args.latency_ms:g} ms, limit {args.limit}: ceiling {ceiling:.0f} writes/s; storage {args.storage}"
    )
    ratios, walls = [], []
    for n in range(args.repeat):
        measured = backfill(args.days, args.invoices, args.latency_ms, args.limit, args.storage, args.postgres_url)
        first, rerun = measured["runs"]
        floor = first["writes"] / ceiling
        ratio = first["seconds"] / floor if floor else float("inf")
        ratios.append(ratio)
        walls.append(first["seconds"])
        print(
            f"  run {n + 1}: seeded in {measured['seed_seconds']:.0f} s; wall {first['seconds']:.1f} s, "
            f"{first['writes']:,} NetSuite writes ({first['writes'] / first['seconds']:.1f}/s), floor {floor:.1f} s, "
            f"ratio {ratio:.3f}; success {first['success']}; server peak concurrency {first['peak_concurrency']}, "
            f"429s {first['rejections']}; peak RSS {measured['peak_rss_mib']:.0f} MiB"
        )
        print(f"    re-run: {rerun['seconds']:.1f} s, {rerun['writes']} writes, success {rerun['success']}")
        slowest = sorted(first["steps"].items(), key=lambda kv: -kv[1])[:8]
        print("    steps (s): " + ", ".join(f"{step} {seconds:.1f}" for step, seconds in slowest))
    print(
        f"median of {args.repeat}: wall {statistics.median(walls):.1f} s, ratio wall ÷ (writes ÷ ceiling) "
        f"{statistics.median(ratios):.3f} (target <= 1.1)"
    )


if __name__ == "__main__":
    main()
