"""Throughput of the Salesforce stand-in: GET-by-id and simple SOQL over HTTPS, several client threads.

    .venv/bin/python benchmarks/sandbox_salesforce.py [--threads 4] [--processes 1] [--seconds 3] [--repeats 3]

The stand-in runs in a separate process (TLS on, latency off, seeded with 1,000 accounts); clients
are `requests` sessions (keep-alive, the sandbox CA) in threads of one or more client processes.
Prints requests/s per workload, the median of the repeats.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection

import requests

SEEDED_ACCOUNTS = 1000


@dataclass(frozen=True)
class Target:
    url: str
    ca_bundle: str
    session_id: str
    account_ids: list[str]


def serve(conn: Connection) -> None:
    """The stand-in's process: start, seed, report where it is, serve until told to stop."""
    from sync_pipeline.sandbox.salesforce import start_salesforce

    with start_salesforce(daily_request_limit=10**9, latency_ms=0) as sandbox:
        ids = [
            sandbox.state.insert("Account", {"Name": f"Account {n}", "Stripe_Customer_Id__c": f"cus_{n:05d}"})
            for n in range(SEEDED_ACCOUNTS)
        ]
        conn.send(Target(sandbox.url, sandbox.ca_bundle, sandbox.session_id, ids))
        # Answer each "cpu" with this process's CPU seconds so far, until "stop".
        while conn.recv() == "cpu":
            conn.send(time.process_time())


def client_session(target: Target) -> requests.Session:
    session = requests.Session()
    session.verify = target.ca_bundle
    session.trust_env = False  # else REQUESTS_CA_BUNDLE replaces `verify`
    session.headers["Authorization"] = f"Bearer {target.session_id}"
    return session


def get_by_id(target: Target, session: requests.Session, n: int) -> requests.Response:
    record_id = target.account_ids[n % len(target.account_ids)]
    return session.get(f"{target.url}/services/data/v59.0/sobjects/Account/{record_id}")


def soql_by_external_id(target: Target, session: requests.Session, n: int) -> requests.Response:
    soql = f"SELECT Id, Name FROM Account WHERE Stripe_Customer_Id__c = 'cus_{n % SEEDED_ACCOUNTS:05d}'"
    return session.get(f"{target.url}/services/data/v59.0/query/", params={"q": soql})


WORKLOADS: dict[str, Callable[[Target, requests.Session, int], requests.Response]] = {
    "GET sobjects/Account/{id}": get_by_id,
    "SOQL ... WHERE Stripe_Customer_Id__c = 'x'": soql_by_external_id,
}


def run_threads(target: Target, workload: str, threads: int, seconds: float) -> int:
    """Requests completed by `threads` clients in `seconds` (each warmed up with one request first)."""
    call = WORKLOADS[workload]
    counts = [0] * threads
    sessions = [client_session(target) for _ in range(threads)]
    for session in sessions:
        call(target, session, 0).raise_for_status()
    start = threading.Barrier(threads + 1)
    deadline = [0.0]

    def worker(index: int) -> None:
        session = sessions[index]
        start.wait()
        n = index
        while time.perf_counter() < deadline[0]:
            response = call(target, session, n)
            if response.status_code != 200:
                raise RuntimeError(f"{workload}: HTTP {response.status_code} {response.text[:200]}")
            counts[index] += 1
            n += threads
        session.close()

    workers = [threading.Thread(target=worker, args=(index,)) for index in range(threads)]
    for thread in workers:
        thread.start()
    deadline[0] = time.perf_counter() + seconds
    start.wait()
    for thread in workers:
        thread.join()
    return sum(counts)


def client_process(target: Target, workload: str, threads: int, seconds: float, conn: Connection) -> None:
    conn.send(run_threads(target, workload, threads, seconds))


def measure(target: Target, workload: str, processes: int, threads: int, seconds: float) -> int:
    """Requests completed in `seconds` by all client processes and threads."""
    if processes == 1:
        return run_threads(target, workload, threads, seconds)
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(processes)]
    clients = [
        context.Process(target=client_process, args=(target, workload, threads, seconds, child)) for _, child in pipes
    ]
    for process in clients:
        process.start()
    total = sum(parent.recv() for parent, _ in pipes)
    for process in clients:
        process.join()
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=4, help="client threads per client process")
    parser.add_argument("--processes", type=int, default=1, help="client processes")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of one measurement")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe()
    server = context.Process(target=serve, args=(child,), daemon=True)
    server.start()
    try:
        target: Target = parent.recv()
        print(
            f"Salesforce stand-in at {target.url} (TLS, latency off, {SEEDED_ACCOUNTS} accounts); "
            f"{args.processes} client process(es) x {args.threads} thread(s), {args.seconds:g} s x {args.repeats}"
        )
        for workload in WORKLOADS:
            rates, server_ms = [], []
            for _ in range(args.repeats):
                parent.send("cpu")
                cpu_before = parent.recv()
                count = measure(target, workload, args.processes, args.threads, args.seconds)
                parent.send("cpu")
                server_ms.append((parent.recv() - cpu_before) * 1000 / max(count, 1))
                rates.append(count / args.seconds)
            shown = ", ".join(f"{rate:,.0f}" for rate in rates)
            cpu = statistics.median(server_ms)
            print(f"  {workload:<45} median {statistics.median(rates):>7,.0f} req/s   (runs: {shown})")
            # The clients share the 2 cores with the server; its own cost per request says what one core allows.
            print(f"  {'':<45} server CPU {cpu:.2f} ms/request, about {1000 / cpu:,.0f} req/s per server core")
    finally:
        parent.send("stop")
        server.join(timeout=30)
        if server.is_alive():
            server.terminate()


if __name__ == "__main__":
    main()
