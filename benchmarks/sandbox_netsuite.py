"""Throughput of the NetSuite stand-in with the real client stack (requests + requests_oauthlib OAuth1 HMAC-SHA256).

The stand-in runs in its own process (latency off, concurrency limit raised so nothing is refused);
client processes, each with a few threads and one signed requests.Session per thread, send
    - GET  /record/v1/customer/{id}            (signature verified, record rendered)
    - PUT  /record/v1/customer/eid:{externalId} (signature + body hash verified, upsert applied)
for a fixed time, plus `get-presigned`: GETs signed ahead and re-sent over raw keep-alive
http.client connections (the server still verifies every signature; replay protection is off
for that run) to show what the server alone can take when the client stack costs little.
Prints requests/s per run, the median of the runs, and CPU per request in server and clients.

    .venv/bin/python benchmarks/sandbox_netsuite.py [--seconds 3] [--processes 2] [--threads 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import requests
from requests_oauthlib import OAuth1

CUSTOMERS = 200
PRESIGNED = 500
# get-presigned re-sends signed requests, so the server's replay protection is switched off for it.
WORKLOADS = ("get", "put", "mixed", "get-presigned")


def serve(ready: Any, stop: Any) -> None:
    """The stand-in's process: serve until `stop` is set."""
    from sync_pipeline.sandbox.netsuite import start_netsuite

    with start_netsuite(concurrency_limit=10_000, latency_ms=0) as netsuite:
        ready.put(netsuite.env())
        stop.wait()


def signed_session(env: dict[str, str]) -> requests.Session:
    http = requests.Session()
    http.auth = OAuth1(
        env["NETSUITE_CONSUMER_KEY"],
        env["NETSUITE_CONSUMER_SECRET"],
        env["NETSUITE_TOKEN_ID"],
        env["NETSUITE_TOKEN_SECRET"],
        realm=env["NETSUITE_ACCOUNT_ID"],
        signature_method="HMAC-SHA256",
    )
    return http


def customer_body(n: int, round_: int) -> dict[str, Any]:
    return {
        "companyName": f"Bench {n} r{round_}",
        "subsidiary": {"id": "1"},
        "currency": {"id": "1"},
        "email": f"ap{n}@bench.test",
    }


def seed(env: dict[str, str]) -> list[str]:
    base = f"{env['NETSUITE_BASE_URL']}/services/rest/record/v1/customer"
    with signed_session(env) as http:
        ids = []
        for n in range(CUSTOMERS):
            response = http.put(f"{base}/eid:bench-{n}", json=customer_body(n, 0), timeout=10)
            response.raise_for_status()
            ids.append(response.headers["Location"].rsplit("/", 1)[1])
    return ids


def client_thread(env: dict[str, str], ids: list[str], workload: str, deadline: float, offset: int) -> tuple[int, int]:
    """requests + OAuth1 (a fresh signature per request) until the deadline -> (successes, failures)."""
    base = f"{env['NETSUITE_BASE_URL']}/services/rest/record/v1/customer"
    ok = failed = 0
    n = offset
    with signed_session(env) as http:
        while time.perf_counter() < deadline:
            index = n % len(ids)
            write = workload == "put" or (workload == "mixed" and n % 2)
            if write:
                response = http.put(f"{base}/eid:bench-{index}", json=customer_body(index, n), timeout=10)
            else:
                response = http.get(f"{base}/{ids[index]}", timeout=10)
            if response.status_code in (200, 204):
                ok += 1
            else:
                failed += 1
            n += 1
    return ok, failed


def presign(env: dict[str, str], ids: list[str], count: int) -> list[tuple[str, dict[str, str]]]:
    """Signed GETs prepared ahead (path, headers): the server still verifies every signature."""
    base = f"{env['NETSUITE_BASE_URL']}/services/rest/record/v1/customer"
    auth = signed_session(env).auth
    prepared = [requests.Request("GET", f"{base}/{ids[n % len(ids)]}", auth=auth).prepare() for n in range(count)]
    return [(urlsplit(p.url).path, dict(p.headers)) for p in prepared]


def presigned_thread(env: dict[str, str], signed: list[tuple[str, dict[str, str]]], deadline: float) -> tuple[int, int]:
    """Pre-signed GETs over one keep-alive http.client connection: what the server alone can take."""
    url = urlsplit(env["NETSUITE_BASE_URL"])
    connection = http.client.HTTPConnection(url.hostname, url.port, timeout=10)
    ok = failed = n = 0
    while time.perf_counter() < deadline:
        path, headers = signed[n % len(signed)]
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        ok, failed = (ok + 1, failed) if response.status == 200 else (ok, failed + 1)
        n += 1
    connection.close()
    return ok, failed


def client_process(
    env: dict[str, str],
    ids: list[str],
    workload: str,
    threads: int,
    start: float,
    seconds: float,
    results: Any,
    process_index: int,
) -> None:
    from concurrent.futures import ThreadPoolExecutor

    signed = presign(env, ids, PRESIGNED) if workload == "get-presigned" else []
    while time.time() < start:  # all processes begin together
        time.sleep(0.001)
    deadline = time.perf_counter() + seconds
    cpu_before = sum(os.times()[:2])
    with ThreadPoolExecutor(threads) as pool:
        if signed:
            futures = [pool.submit(presigned_thread, env, signed, deadline) for _ in range(threads)]
        else:
            futures = [
                pool.submit(client_thread, env, ids, workload, deadline, (process_index * threads + t) * 7919)
                for t in range(threads)
            ]
        counts = [f.result() for f in futures]
    results.put((sum(c[0] for c in counts), sum(c[1] for c in counts), sum(os.times()[:2]) - cpu_before))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (Linux /proc), to tell server cost from client cost."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(
    context: Any, env: dict[str, str], ids: list[str], workload: str, args: argparse.Namespace
) -> tuple[float, int, float]:
    """One timed run -> (successful requests per second, successful requests, client CPU seconds)."""
    results = context.Queue()
    start = time.time() + 0.5
    processes = [
        context.Process(target=client_process, args=(env, ids, workload, args.threads, start, args.seconds, results, i))
        for i in range(args.processes)
    ]
    for process in processes:
        process.start()
    totals = [results.get(timeout=args.seconds + 60) for _ in processes]
    for process in processes:
        process.join()
    ok, failed = sum(t[0] for t in totals), sum(t[1] for t in totals)
    if failed:
        print(f"    ({failed} requests failed)")
    return ok / args.seconds, ok, sum(t[2] for t in totals)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    context = mp.get_context("spawn")
    ready, stop = context.Queue(), context.Event()
    server = context.Process(target=serve, args=(ready, stop), daemon=True)
    server.start()
    try:
        env = ready.get(timeout=60)
        ids = seed(env)
        print(
            f"NetSuite stand-in at {env['NETSUITE_BASE_URL']} (own process); {args.processes} client processes x "
            f"{args.threads} threads, {args.seconds:g} s per run, OAuth 1.0a HMAC-SHA256 on every request"
        )
        for workload in WORKLOADS:
            control = f"{env['NETSUITE_BASE_URL']}/_sandbox/config"
            requests.post(control, json={"replay_protection": workload != "get-presigned"}, timeout=10)
            rates, server_cpu, client_cpu = [], [], []
            for _ in range(args.repeats):
                cpu_before = cpu_seconds(server.pid)
                rate, done, client_seconds = run_once(context, env, ids, workload, args)
                rates.append(rate)
                server_cpu.append((cpu_seconds(server.pid) - cpu_before) / max(done, 1))
                client_cpu.append(client_seconds / max(done, 1))
            shown = ", ".join(f"{r:,.0f}" for r in rates)
            print(
                f"  {workload:<13} median {statistics.median(rates):>7,.0f} req/s   (runs: {shown});  CPU per request: "
                f"server {statistics.median(server_cpu) * 1e6:,.0f} us, "
                f"clients {statistics.median(client_cpu) * 1e6:,.0f} us"
            )
        stats = requests.get(f"{env['NETSUITE_BASE_URL']}/_sandbox/stats", timeout=10).json()
        print(
            f"  server saw {stats['requests']:,} requests, statuses {dict(stats['by_status'])}, "
            f"peak concurrency {stats['peak_concurrency']}"
        )
    finally:
        stop.set()
        server.join(15)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
