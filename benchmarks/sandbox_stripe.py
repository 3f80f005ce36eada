"""Benchmark of the Stripe stand-in: a server process with 10,000 paid invoices, latency off.

Measures (medians of a few repeats):
- listing every invoice through the stripe SDK's `auto_paging_iter()` (100 pages of 100), and the
  same 100 pages as raw HTTP + JSON, which separates the server from the SDK's object building;
- simple GET requests per second (`GET /v1/customers/{id}`) from several client threads and processes
  (http.client keep-alive connections).

Run: .venv/bin/python benchmarks/sandbox_stripe.py [--invoices 10000] [--seconds 3]
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import statistics
import threading
import time
from urllib.parse import urlsplit

import requests
import stripe
import uvicorn

from sync_pipeline.sandbox.server import bind_socket
from sync_pipeline.sandbox.stripe import StripeConfig, StripeState, create_stripe_app, seed_paid_invoices

API_KEY = "sk_test_benchmark"
REPEATS = 3


def serve(invoices: int, ready: mp.Queue) -> None:
    """The server process: seed in-process (the bulk path), then serve until terminated."""
    state, config = StripeState(), StripeConfig()
    started = time.perf_counter()
    seed_paid_invoices(state, config, invoices)
    seconds = time.perf_counter() - started
    sock = bind_socket(0)
    customer = next(iter(state.collections["customer"].objects))
    ready.put((sock.getsockname()[1], seconds, customer))
    server = uvicorn.Server(
        uvicorn.Config(create_stripe_app(state, config), log_level="warning", access_log=False, lifespan="off")
    )
    server.run(sockets=[sock])


def list_with_sdk(url: str) -> tuple[float, int]:
    client = stripe.StripeClient(API_KEY, base_addresses={"api": url})
    started = time.perf_counter()
    count = sum(1 for _ in client.v1.invoices.list(params={"limit": 100}).auto_paging_iter())
    return time.perf_counter() - started, count


def list_raw(url: str) -> tuple[float, int]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {API_KEY}"
    started = time.perf_counter()
    count, cursor = 0, None
    while True:
        params = {"limit": 100, **({"starting_after": cursor} if cursor else {})}
        page = session.get(f"{url}/v1/invoices", params=params, timeout=30).json()
        count += len(page["data"])
        if not page["has_more"]:
            break
        cursor = page["data"][-1]["id"]
    return time.perf_counter() - started, count


def sdk_object_building(url: str) -> float:
    """Seconds the SDK spends turning one fetched page of 100 invoices into objects (no HTTP)."""
    page = requests.get(
        f"{url}/v1/invoices", params={"limit": 100}, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30
    ).json()
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        stripe.convert_to_stripe_object(page, api_key=API_KEY)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _get_loop(url: str, seconds: float, counts: list[int]) -> None:
    # http.client on a kept-alive connection: the cheapest client, so the server is what is measured.
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    deadline = time.perf_counter() + seconds
    done = 0
    while time.perf_counter() < deadline:
        connection.request("GET", parts.path, headers=headers)
        response = connection.getresponse()
        body = response.read()
        assert response.status == 200, body
        done += 1
    connection.close()
    counts.append(done)


def client_process(url: str, seconds: float, threads: int, results: mp.Queue) -> None:
    counts: list[int] = []
    workers = [threading.Thread(target=_get_loop, args=(url, seconds, counts)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(sum(counts))


def requests_per_second(url: str, seconds: float, processes: int, threads: int) -> float:
    ctx = mp.get_context("spawn")
    results: mp.Queue = ctx.Queue()
    clients = [ctx.Process(target=client_process, args=(url, seconds, threads, results)) for _ in range(processes)]
    for process in clients:
        process.start()
    total = sum(results.get(timeout=seconds + 60) for _ in clients)
    for process in clients:
        process.join()
    return total / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    ready: mp.Queue = ctx.Queue()
    server = ctx.Process(target=serve, args=(args.invoices, ready), daemon=True)
    server.start()
    try:
        port, seed_seconds, customer = ready.get(timeout=600)
        url = f"http://127.0.0.1:{port}"
        print(f"seeded {args.invoices:,} paid invoices in-process in {seed_seconds:.2f} s")

        sdk = [list_with_sdk(url) for _ in range(REPEATS)]
        raw = [list_raw(url) for _ in range(REPEATS)]
        assert all(count == args.invoices for _, count in sdk + raw), (sdk, raw)
        print(
            f"list {args.invoices:,} invoices, SDK auto_paging_iter (100 pages): "
            f"median {statistics.median(t for t, _ in sdk):.2f} s  (runs: {', '.join(f'{t:.2f}' for t, _ in sdk)})"
        )
        print(
            f"list {args.invoices:,} invoices, raw HTTP + JSON (100 pages):       "
            f"median {statistics.median(t for t, _ in raw):.2f} s  (runs: {', '.join(f'{t:.2f}' for t, _ in raw)})"
        )

        building = sdk_object_building(url)
        print(
            f"of which SDK object building alone: {building * 1000:.0f} ms per page of 100 invoices "
            f"(~{building * args.invoices / 100:.1f} s for all), measured in-process without HTTP"
        )

        target = f"{url}/v1/customers/{customer}"
        for processes, threads in ((1, 4), (2, 2), (3, 2)):
            rates = [requests_per_second(target, args.seconds, processes, threads) for _ in range(REPEATS)]
            print(
                f"GET /v1/customers/{{id}}, {processes} client process(es) x {threads} threads: "
                f"median {statistics.median(rates):,.0f} req/s  (runs: {', '.join(f'{r:,.0f}' for r in rates)})"
            )
    finally:
        server.terminate()
        server.join(10)


if __name__ == "__main__":
    main()
