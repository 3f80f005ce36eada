"""The one server stack every sandbox stand-in runs on: Starlette apps served by uvicorn.

Shared by the stand-ins only (never by the pipeline's clients): a thread-hosted
server for tests and the demo, TLS from a throw-away CA for Salesforce, and the
"committed but response lost" fault.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import trustme
import uvicorn
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

LOOPBACK = "127.0.0.1"


class ResponseLost(Exception):
    """Raised after the response has started, so uvicorn closes the socket mid-response."""


async def drop_connection(send: Send) -> None:
    """Start a response, then abort: the client sees a broken connection, not a status.

    Used to emulate a write that the server committed but whose answer never arrived.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"1024")],
        }
    )
    await send({"type": "http.response.body", "body": b"{", "more_body": True})
    raise ResponseLost()


class ResponseLostResponse(Response):
    """Return this from an endpoint after applying a write to emulate a lost response."""

    def __init__(self) -> None:
        super().__init__(status_code=200)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await drop_connection(send)


@dataclass
class TlsFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (0600), also when it already existed with wider permissions."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(data)


def make_tls_files(directory: Path, hostnames: tuple[str, ...] = (LOOPBACK, "localhost")) -> TlsFiles:
    """A throw-away CA and a server certificate for the loopback host, written as PEM files."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert(*hostnames)
    files = TlsFiles(directory / "sandbox-ca.pem", directory / "server-cert.pem", directory / "server-key.pem")
    ca.cert_pem.write_to_path(str(files.ca_cert))
    write_private(files.server_key, cert.private_key_pem.bytes())
    # The chain (leaf then CA) so clients that trust only the CA can verify it.
    with open(files.server_cert, "wb") as handle:
        for blob in cert.cert_chain_pems:
            handle.write(blob.bytes())
    return files


def bind_socket(port: int = 0, host: str = LOOPBACK) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class _QuietServer(uvicorn.Server):
    # Signal handlers belong to whoever owns the process, not to a server in a thread.
    def install_signal_handlers(self) -> None:  # pragma: no cover - trivial
        return None


@dataclass
class ServerHandle:
    """A running stand-in: its base URL and how to stop it."""

    url: str
    port: int
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _config(app, tls: TlsFiles | None) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        ssl_certfile=str(tls.server_cert) if tls else None,
        ssl_keyfile=str(tls.server_key) if tls else None,
    )


def serve_in_thread(app, port: int = 0, tls: TlsFiles | None = None, startup_timeout: float = 15.0) -> ServerHandle:
    """Serve `app` on 127.0.0.1 from a daemon thread; returns once it accepts connections."""
    sock = bind_socket(port)
    actual_port = sock.getsockname()[1]
    server = _QuietServer(_config(app, tls))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"sandbox-{actual_port}")
    thread.start()
    deadline = time.monotonic() + startup_timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"sandbox server on port {actual_port} did not start")
        time.sleep(0.01)
    scheme = "https" if tls else "http"
    return ServerHandle(url=f"{scheme}://{LOOPBACK}:{actual_port}", port=actual_port, _server=server, _thread=thread)


# uvicorn logs the deliberate ResponseLost as an application error; it is not one.
class _DropResponseLost(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ResponseLost))


logging.getLogger("uvicorn.error").addFilter(_DropResponseLost())
