"""One large Stripe payout -> NetSuite bank deposit(s): time, writes, split, memory and checks of the payout's day.

N paid invoices (one USD charge each) on one day, a few of them partly refunded the same evening; Stripe's automatic
payout of the whole balance three days later, arriving two days after that. The invoices' day is synced first (all
assets through Dagster, as netsuite_throughput.py does), then the payout's arrival day, which is measured: wall time
of the run and of the `netsuite_deposits` step, NetSuite writes, the deposits the payout was cut into and their
lines, peak memory of the pipeline process, the deposit checks, and whether the deposits' NetSuite totals add up
to the payout exactly.

    .venv/bin/python benchmarks/payout_deposit.py                        # 10,000 charges, limit 5,000 lines
    .venv/bin/python benchmarks/payout_deposit.py --max-lines 10000      # payouts.max_lines_per_deposit and the
                                                                         # stand-in's max_transaction_lines raised
    .venv/bin/python benchmarks/payout_deposit.py --max-lines 20000      # one deposit: 10,000 payment lines plus
                                                                         # refunds and a fee line exceed 10,000
    .venv/bin/python benchmarks/payout_deposit.py --charges 500 --latency-ms 50

The stand-ins run in a separate process seeded directly (netsuite_throughput's SERVER); each pipeline day runs in
a child process of its own, so the payout day's peak RSS is its own.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path

import requests
from netsuite_throughput import ROOT, SERVER, run_child

from sync_pipeline.mapping.money import to_decimal

# Ten days back, as the e2e cash tests do: the payout arrives five days after the invoices, inside the partitions
# (which end today), and the invoices' day stays well inside Stripe's 30-day window whenever this is run.
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=10)
CHECKS = ("deposit_matches_payout", "fees_match_stripe", "undeposited_funds_cleared", "no_duplicate_external_ids")

CHILD = r"""
import datetime as dt, json, os, resource, sys, time, tracemalloc, requests
import dagster as dg
from sync_pipeline import settings
from sync_pipeline.assets.cash import payout_trees
from sync_pipeline.definitions import ALL_ASSETS, build_resources
from sync_pipeline.mapping import cash
partition, measure_mapping = sys.argv[1], sys.argv[2] == "1"
base = os.environ["NETSUITE_BASE_URL"]
before = requests.get(base + "/_sandbox/stats").json()
resources = build_resources()
instance = dg.DagsterInstance.ephemeral()
started = time.perf_counter()
result = dg.materialize(ALL_ASSETS, partition_key=partition, resources=resources, instance=instance)
seconds = time.perf_counter() - started
rss_run = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
after = requests.get(base + "/_sandbox/stats").json()
step_seconds = {e.step_key: round(e.event_specific_data.duration_ms / 1000, 2)
                for e in result.all_events if e.is_step_success}
failures = {}
for e in result.all_events:
    if e.is_step_failure:
        data = e.step_failure_data
        user = data.user_failure_data
        failures[e.step_key] = user.description if user is not None and user.description else data.error.message
checks = {e.check_name: {"passed": e.passed, "description": e.description}
          for e in result.get_asset_check_evaluations() if e.asset_key.path[-1] == "netsuite_deposits"}
# Where netsuite_deposits' time goes: seconds from its step start to its output (the writes) and to each check.
timeline, step_start = [], None
for entry in instance.all_logs(result.run_id):
    event = entry.dagster_event
    if event is None or event.step_key != "netsuite_deposits":
        continue
    if event.event_type_value == "STEP_START":
        step_start = entry.timestamp
    elif step_start is not None and event.event_type_value == "STEP_OUTPUT" and not timeline:  # the asset's
        timeline.append(("output (writes done)", entry.timestamp - step_start))
    elif step_start is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
        timeline.append((event.asset_check_evaluation_data.check_name, entry.timestamp - step_start))
    elif step_start is not None and event.event_type_value == "STEP_SUCCESS":
        timeline.append(("step end", entry.timestamp - step_start))
deposits = {}
if "netsuite_deposits" in step_seconds:
    meta = result.asset_materializations_for_node("netsuite_deposits")[0].metadata
    deposits = {k: v.value for k, v in meta.items()
                if k in ("created", "updated", "unchanged", "quarantined", "writes", "seconds", "netsuite_requests",
                         "netsuite_retries", "netsuite_peak_in_flight")}
writes_by_type = {t: n - before["writes_by_record_type"].get(t, 0) for t, n in after["writes_by_record_type"].items()
                  if n != before["writes_by_record_type"].get(t, 0)}
out = {"success": result.success, "seconds": seconds, "step_seconds": step_seconds, "failures": failures,
       "writes": after["writes_applied"] - before["writes_applied"], "writes_by_type": writes_by_type,
       "netsuite_requests": after["requests"] - before["requests"],
       "suiteql_queries": after["suiteql_queries"] - before["suiteql_queries"],
       "checks": checks, "deposits": deposits, "deposits_timeline": timeline, "peak_rss_mib": rss_run}
if measure_mapping and "stripe_balance_transactions" in step_seconds:
    # The mapping alone, on the frames the run extracted (read back from the run's snapshots).
    payouts = result.output_for_node("stripe_payouts")
    txns = result.output_for_node("stripe_balance_transactions")
    fm = resources["field_mapping"].load()
    start = dt.date.fromisoformat(settings.start_date())
    trees = list(payout_trees(payouts, txns))
    t0 = time.perf_counter()
    mapped = [cash.map_payout(payout, lines, fm, sync_start=start) for payout, lines in trees]
    map_seconds = time.perf_counter() - t0  # timed apart: tracemalloc slows every allocation
    tracemalloc.start()
    mapped = [cash.map_payout(payout, lines, fm, sync_start=start) for payout, lines in trees]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    parts = [(r.external_id, sum(len(v["items"]) for v in r.body.values() if isinstance(v, dict) and "items" in v))
             for m in mapped for r in m.records if r.record_type == cash.DEPOSIT]
    out["mapping"] = {"seconds": map_seconds, "tracemalloc_peak_mib": peak / 2**20,
                      "balance_transactions": len(txns), "parts": parts,
                      "issues": [str(i) for m in mapped for i in m.issues][:5]}
out["peak_rss_mib_end"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out, default=str))
"""


def _post(url: str, body: dict | None = None) -> dict | list:
    response = requests.post(url, json=body or {}, timeout=120)
    response.raise_for_status()
    return response.json()


def _get(url: str) -> dict | list:
    response = requests.get(url, timeout=300)
    response.raise_for_status()
    return json.loads(response.text, parse_float=Decimal)  # amounts as Decimal, never a float


def at(day: dt.date, hour: int, minute: int = 0) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC).timestamp())


def make_payout(stripe_url: str, api_key: str, refunds: int) -> dict:
    """A few of the day's charges partly refunded that evening, then Stripe's automatic payout, arrived."""
    charges = [c for c in _get(f"{stripe_url}/_sandbox/records/charge") if c.get("paid")]
    _post(f"{stripe_url}/_sandbox/clock", {"now": at(DAY, 23, 59)})
    step = max(1, len(charges) // max(refunds, 1))
    for charge in charges[::step][:refunds]:
        response = requests.post(
            f"{stripe_url}/v1/refunds",
            data={"charge": charge["id"], "amount": str(int(charge["amount"]) * 3 // 10)},
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=30,
        )
        response.raise_for_status()
    _post(f"{stripe_url}/_sandbox/clock", {"now": at(DAY + dt.timedelta(days=3), 6)})  # funds available
    (payout,) = _post(f"{stripe_url}/_sandbox/payouts", {"currency": "usd"})
    _post(f"{stripe_url}/_sandbox/clock", {"now": payout["arrival_date"] + 3600})  # it arrives: paid
    _post(f"{stripe_url}/_sandbox/clock", {"real": True})
    return payout


def field_mapping_with(max_lines: int, directory: str) -> str:
    """A copy of field_mapping.yaml with `payouts.max_lines_per_deposit` set."""
    text = (ROOT / "field_mapping.yaml").read_text()
    text, count = re.subn(r"(?m)^(\s+max_lines_per_deposit:\s*)\d+", rf"\g<1>{max_lines}", text)
    if count != 1:
        raise SystemExit("field_mapping.yaml: no single payouts.max_lines_per_deposit line to override")
    path = Path(directory) / "field_mapping.yaml"
    path.write_text(text)
    return str(path)


def run_day(day: dt.date, env: dict, measure_mapping: bool) -> dict:
    return run_child(CHILD, [day.isoformat(), "1" if measure_mapping else "0"], env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--charges", type=int, default=10000)
    parser.add_argument("--refunds", type=int, default=5, help="charges partly (30 %%) refunded before the payout")
    parser.add_argument(
        "--max-lines",
        type=int,
        default=None,
        help="payouts.max_lines_per_deposit and the "
        "NetSuite stand-in's max_transaction_lines (default: both as shipped, 5000)",
    )
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--limit", type=int, default=5, help="NetSuite concurrency limit")
    args = parser.parse_args()

    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(args.charges), str(args.latency_ms), str(args.limit), DAY.isoformat()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        sandbox_env = json.loads(server.stdout.readline())
        stripe_url, netsuite_url = sandbox_env["STRIPE_API_BASE"], sandbox_env["NETSUITE_BASE_URL"]
        if args.max_lines is not None:
            _post(f"{netsuite_url}/_sandbox/config", {"max_transaction_lines": args.max_lines})
        netsuite_lines = _get(f"{netsuite_url}/_sandbox/config")["max_transaction_lines"]
        payout = make_payout(stripe_url, sandbox_env["STRIPE_API_KEY"], args.refunds)
        arrival = dt.datetime.fromtimestamp(payout["arrival_date"], tz=dt.UTC).date()
        with tempfile.TemporaryDirectory() as home:
            env = {
                **os.environ,
                **sandbox_env,
                "DAGSTER_HOME": home,
                "SYNC_START_DATE": (DAY - dt.timedelta(days=1)).isoformat(),
                "SYNC_DATABASE_URL": f"sqlite:///{home}/ledger.sqlite",
                "NETSUITE_CONCURRENCY": str(args.limit),
            }
            env.pop("SYNC_FIELD_MAPPING", None)
            if args.max_lines is not None:
                env["SYNC_FIELD_MAPPING"] = field_mapping_with(args.max_lines, home)
            invoices_day = run_day(DAY, env, measure_mapping=False)
            payout_day = run_day(arrival, env, measure_mapping=True)
        deposits = {
            r["externalId"]: r
            for r in _get(f"{netsuite_url}/_sandbox/records/deposit")["records"]
            if str(r.get("externalId", "")).startswith(f"stripe-{payout['id']}")
        }
    finally:
        server.stdin.close()
        server.wait(timeout=60)

    report(args, netsuite_lines, payout, arrival, invoices_day, payout_day, deposits)


def _lines(record: dict) -> int:
    return sum(len((record.get(s) or {}).get("items") or []) for s in ("payment", "other", "cashback"))


def report(args, netsuite_lines, payout, arrival, invoices_day, payout_day, deposits) -> None:
    mapping = payout_day.get("mapping", {})
    print(f"charges: {args.charges}")
    print(f"refunds: {args.refunds}")
    print(f"netsuite latency ms: {args.latency_ms:g}")
    print(f"netsuite concurrency limit: {args.limit}")
    print(f"netsuite stand-in max_transaction_lines: {netsuite_lines}")
    print(f"payouts.max_lines_per_deposit: {args.max_lines if args.max_lines is not None else '5000 (as shipped)'}")
    print(f"invoices day: {DAY.isoformat()}")
    print(f"payout: {payout['id']}")
    print(f"payout arrival day: {arrival.isoformat()}")
    print(f"payout amount: {to_decimal(payout['amount'], payout['currency'])} {payout['currency'].upper()}")
    print(f"payout balance transactions: {mapping.get('balance_transactions')}")
    print(f"invoices day run success: {invoices_day['success']}")
    print(f"invoices day run seconds: {invoices_day['seconds']:.1f}")
    print(f"invoices day netsuite writes: {invoices_day['writes']} {json.dumps(invoices_day['writes_by_type'])}")
    print(f"payout day run success: {payout_day['success']}")
    for step, message in {**invoices_day["failures"], **payout_day["failures"]}.items():
        print(f"step failed: {step}: {message}")
    print(f"payout day run seconds: {payout_day['seconds']:.2f}")
    print(f"payout day netsuite_deposits step seconds: {payout_day['step_seconds'].get('netsuite_deposits')}")
    print(f"payout day netsuite_deposits write seconds (metadata): {payout_day['deposits'].get('seconds')}")
    timeline = payout_day.get("deposits_timeline") or []
    previous = 0.0
    for label, at_seconds in timeline:
        print(f"netsuite_deposits step at {at_seconds:.2f} s: {label} (+{at_seconds - previous:.2f} s)")
        previous = at_seconds
    slowest = sorted(payout_day["step_seconds"].items(), key=lambda kv: -kv[1])[:5]
    print("payout day slowest steps (s): " + ", ".join(f"{step} {seconds:.2f}" for step, seconds in slowest))
    print(f"payout day netsuite writes: {payout_day['writes']} {json.dumps(payout_day['writes_by_type'])}")
    print(f"payout day netsuite requests: {payout_day['netsuite_requests']}")
    print(f"payout day suiteql queries: {payout_day['suiteql_queries']}")
    print(f"netsuite_deposits metadata: {json.dumps(payout_day['deposits'])}")
    print(f"deposits planned by mapping: {len(mapping.get('parts', []))}")
    print(f"deposits in netsuite: {len(deposits)}")
    for eid, record in sorted(deposits.items(), key=lambda kv: (len(kv[0]), kv[0])):
        counts = {s: len((record.get(s) or {}).get("items") or []) for s in ("payment", "other", "cashback")}
        print(f"deposit {eid}: lines {_lines(record)} {json.dumps(counts)} total {record.get('total')}")
    total = sum((Decimal(str(r.get("total"))) for r in deposits.values()), Decimal(0))
    expected = to_decimal(payout["amount"], payout["currency"])
    print(f"deposits total in netsuite: {total}")
    print(f"deposits total equals payout exactly: {total == expected}")
    for name in CHECKS:
        check = payout_day["checks"].get(name)
        state = "not run" if check is None else ("passed" if check["passed"] else f"FAILED ({check['description']})")
        print(f"check {name}: {state}")
    print(f"peak RSS of the payout day process (MiB): {payout_day['peak_rss_mib']:.0f}")
    print(f"peak RSS of the invoices day process (MiB): {invoices_day['peak_rss_mib']:.0f}")
    if mapping:
        print(f"cash.map_payout seconds: {mapping['seconds']:.3f}")
        print(f"cash.map_payout tracemalloc peak (MiB): {mapping['tracemalloc_peak_mib']:.1f}")
        print("cash.map_payout parts (external id: lines): " + ", ".join(f"{e}: {n}" for e, n in mapping["parts"]))
        for issue in mapping["issues"]:
            print(f"cash.map_payout issue: {issue}")


if __name__ == "__main__":
    main()
