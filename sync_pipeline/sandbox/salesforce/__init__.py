"""A Salesforce stand-in that simple-salesforce uses unchanged: REST over TLS, SOQL, SOAP login.

    with start_salesforce(query_batch_size=5) as sandbox:
        session = requests.Session()
        session.verify = sandbox.ca_bundle
        session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, silently replaces `verify`
        sf = Salesforce(instance_url=sandbox.url, session_id=sandbox.session_id, session=session)

The certificate comes from a throw-away CA (simple-salesforce hard-codes https://);
`.env()` hands the pipeline the instance URL, a session, the login and the CA bundle.
Seed data in Python with `sandbox.state.insert("Account", {...})` (same validation as the API).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..server import ServerHandle, TlsFiles, make_tls_files, serve_in_thread
from .app import SalesforceConfig, SalesforceStats, apply_config_changes, create_salesforce_app
from .schema import OBJECTS, SalesforceApiError
from .state import MultipleMatches, SalesforceState

__all__ = [
    "OBJECTS",
    "MultipleMatches",
    "SalesforceApiError",
    "SalesforceConfig",
    "SalesforceSandbox",
    "SalesforceState",
    "SalesforceStats",
    "apply_config_changes",
    "create_salesforce_app",
    "prepare_tls",
    "start_salesforce",
]


def prepare_tls(directory: str | Path) -> TlsFiles:
    """The CA and server certificate in `directory`: reused when all three files are there, else made."""
    folder = Path(directory)
    existing = TlsFiles(folder / "sandbox-ca.pem", folder / "server-cert.pem", folder / "server-key.pem")
    if all(path.exists() for path in (existing.ca_cert, existing.server_cert, existing.server_key)):
        return existing
    return make_tls_files(folder)


class SalesforceSandbox:
    """A running stand-in: `.url` (https://127.0.0.1:PORT), `.state`, `.config`, `.ca_bundle`, `.env()`."""

    def __init__(
        self,
        handle: ServerHandle,
        state: SalesforceState,
        config: SalesforceConfig,
        tls: TlsFiles,
        tls_tempdir: tempfile.TemporaryDirectory | None,
    ) -> None:
        self._handle = handle
        self._tls_tempdir = tls_tempdir
        self.url = handle.url
        self.port = handle.port
        self.state = state
        self.config = config
        self.tls = tls

    @property
    def ca_bundle(self) -> str:
        return str(self.tls.ca_cert)

    @property
    def session_id(self) -> str:
        """A valid session id (the primary one while it lives, a fresh one after expiry)."""
        return self.state.ensure_primary_session(self.config.session_timeout_seconds)

    def env(self) -> dict[str, str]:
        return {
            "SALESFORCE_INSTANCE_URL": self.url,
            "SALESFORCE_SESSION_ID": self.session_id,
            "SALESFORCE_USERNAME": self.config.username,
            "SALESFORCE_PASSWORD": self.config.password,
            "SALESFORCE_SECURITY_TOKEN": self.config.security_token,
            "SALESFORCE_CA_BUNDLE": self.ca_bundle,
        }

    def stop(self) -> None:
        # Idle keep-alive TLS connections wait for the client's close_notify, which an idle client never
        # sends: waiting for them would hold every stop for seconds, so stop without waiting.
        self._handle._server.force_exit = True
        self._handle.stop()
        if self._tls_tempdir is not None:
            self._tls_tempdir.cleanup()
            self._tls_tempdir = None

    def __enter__(self) -> SalesforceSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_salesforce(
    config: SalesforceConfig | None = None,
    state: SalesforceState | None = None,
    port: int = 0,
    **config_overrides: Any,
) -> SalesforceSandbox:
    """Serve the stand-in over TLS on 127.0.0.1 from a thread; keyword arguments override config fields."""
    config = replace(config or SalesforceConfig(), **config_overrides)
    if config.tls_dir is not None:
        config.tls_dir = str(config.tls_dir)  # callers pass Paths; the config stays JSON-friendly
    state = state or SalesforceState()
    tls_tempdir = None
    if config.tls_dir is None:
        tls_tempdir = tempfile.TemporaryDirectory(prefix="salesforce-sandbox-tls-")
        tls = make_tls_files(Path(tls_tempdir.name))
    else:
        tls = prepare_tls(config.tls_dir)
    state.ensure_primary_session(config.session_timeout_seconds)
    try:
        handle = serve_in_thread(create_salesforce_app(state, config), port=port, tls=tls)
    except BaseException:
        if tls_tempdir is not None:
            tls_tempdir.cleanup()
        raise
    return SalesforceSandbox(handle, state, config, tls, tls_tempdir)
