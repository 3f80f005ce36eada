"""How fast the scenario generator fills the sandbox: invoices per second at 300 and 10,000 invoices.

The stand-ins run in a separate process (`python -m sync_pipeline.sandbox.runner`, latency off), as
under `sync-pipeline sandbox up`; the generator runs here with the real client libraries.

    .venv/bin/python benchmarks/sandbox_seed.py [--sizes 300,10000] [--threads 1,4]

Also reported: the size of the saved state and how long the runner takes to save it on SIGTERM
(what `sync-pipeline sandbox down` waits for).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sync_pipeline.sandbox.cli import stop_process_group, wait_until_ready
from sync_pipeline.sandbox.runner import LOG_FILE, SYSTEMS
from sync_pipeline.sandbox.scenario import ScenarioOptions, build_plan, seed_scenario


def start_runner(state_dir: Path) -> tuple[subprocess.Popen, dict[str, str]]:
    command = [sys.executable, "-m", "sync_pipeline.sandbox.runner", "--state-dir", str(state_dir)]
    for system in SYSTEMS:
        command += [f"--{system}-port", "0"]
    with open(state_dir / LOG_FILE, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
    return process, wait_until_ready(process, state_dir, timeout=60)


def measure(invoices: int, threads: int) -> dict[str, float]:
    options = ScenarioOptions(invoices=invoices, seed=42, threads=threads)
    plan = build_plan(options)
    with tempfile.TemporaryDirectory(prefix="sandbox-seed-bench-") as scratch:
        process, env = start_runner(Path(scratch))
        try:
            started = time.perf_counter()
            summary = seed_scenario(env, options)
            elapsed = time.perf_counter() - started
        finally:
            # What `sandbox down` costs: the runner saves every stand-in's state before it exits.
            stopping = time.perf_counter()
            stop_process_group(process.pid, timeout=300)
            process.wait(timeout=30)
            save_seconds = time.perf_counter() - stopping
        state_mb = sum(f.stat().st_size for f in Path(scratch).glob("*.json")) / 1e6
    made = sum(summary.counts.get("invoices", {}).values())
    return {
        "invoices": made,
        "steps": len(plan.steps),
        "seconds": elapsed,
        "invoices_per_s": made / elapsed,
        "state_mb": state_mb,
        "save_seconds": save_seconds,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300,10000")
    parser.add_argument("--threads", default="1", help="thread counts to try at each size, e.g. 1,4")
    args = parser.parse_args()
    print(
        f"{'invoices':>9} {'threads':>7} {'steps':>7} {'seconds':>9} {'invoices/s':>11} {'state MB':>9} {'save s':>7}"
    )
    for size in (int(s) for s in args.sizes.split(",")):
        for threads in (int(t) for t in args.threads.split(",")):
            result = measure(size, threads)
            print(
                f"{result['invoices']:>9.0f} {threads:>7} {result['steps']:>7.0f} {result['seconds']:>9.1f} "
                f"{result['invoices_per_s']:>11.1f} {result['state_mb']:>9.1f} {result['save_seconds']:>7.1f}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
