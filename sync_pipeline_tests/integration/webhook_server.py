"""`sync-pipeline webhooks serve` in its own process, as production runs it, for tests over real HTTP.

A subprocess rather than a thread so a test can read the server's own memory (/proc/<pid>/status) and
everything it logs, and so a crash in it cannot take pytest down.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

from sync_pipeline.webhooks import WEBHOOK_PATH

SECRET = "whsec_receiver_test"
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class ReceiverProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def endpoint(self) -> str:
        return self.url + WEBHOOK_PATH

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def memory_kib(self, field: str) -> int:
        """`VmRSS` (now) or `VmHWM` (peak since start or the last `reset_peak_memory`), in KiB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise KeyError(field)

    def reset_peak_memory(self) -> None:
        # Writing 5 to clear_refs sets VmHWM back to the current RSS (Linux, same user).
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def healthy(self) -> bool:
        return requests.get(f"{self.url}/healthz", timeout=5).ok


@contextmanager
def running_receiver(
    log_dir: Path,
    database_url: str,
    *args: str,
    secret: str = SECRET,
    log_level: str = "info",
    secrets: Mapping[str, str] | None = None,
) -> Iterator[ReceiverProcess]:
    """Start the receiver on 127.0.0.1, wait until it answers, and stop it (its whole process group). `secrets`:
    the signing-secret variables to set instead of STRIPE_WEBHOOK_SECRET (several Stripe accounts)."""
    port = free_port()
    log_path = log_dir / f"receiver-{port}.log"
    signing = {"STRIPE_WEBHOOK_SECRET": secret} if secrets is None else secrets
    env = {**os.environ, **signing, "SYNC_DATABASE_URL": database_url}
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sync_pipeline.cli",
                "webhooks",
                "serve",
                "--port",
                str(port),
                "--log-level",
                log_level,
                *args,
            ],
            env=env,
            start_new_session=True,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ReceiverProcess(proc, port, log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if server.healthy():
                    break
            except requests.ConnectionError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the receiver did not start:\n{server.log()}") from None
                time.sleep(0.1)
        yield server
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def raw_exchange(port: int, head: bytes, body: Iterable[bytes] = (), timeout: float = 30.0) -> bytes:
    """Send `head`, then `body` from a second thread, and return the response's status line.

    Raw sockets because HTTP clients will not announce a body they do not send, and because the server
    may answer (and close) before the body is through: the answer is read while the body is still going.
    """
    with socket.create_connection((LOOPBACK, port), timeout=timeout) as sock:
        sock.sendall(head)

        def send_body() -> None:
            try:
                for chunk in body:
                    sock.sendall(chunk)
            except OSError:
                pass  # the server refused the rest and closed: what the caller is testing for

        sender = threading.Thread(target=send_body, daemon=True)
        sender.start()
        try:
            answer = sock.recv(4096)
        finally:
            sender.join(timeout)
    return answer.split(b"\r\n", 1)[0]
