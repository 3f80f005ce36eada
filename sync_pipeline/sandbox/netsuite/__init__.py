"""NetSuite stand-in: the SuiteTalk REST record API v1 and a SuiteQL subset over real HTTP.

    with start_netsuite() as netsuite:
        os.environ.update(netsuite.env())   # NETSUITE_ACCOUNT_ID, ..., NETSUITE_BASE_URL
        ...                                  # requests + OAuth1(ck, cs, tk, ts, realm=..., "HMAC-SHA256")
        netsuite.state.count("invoice")

    with start_netsuite(pipeline_auth="m2m") as netsuite:
        netsuite.env()   # NETSUITE_CLIENT_ID, NETSUITE_CERTIFICATE_ID, NETSUITE_PRIVATE_KEY_FILE: OAuth 2.0 M2M

See `app.py` for the /_sandbox control API and `schema.py` for the record bodies accepted.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ..server import ServerHandle, serve_in_thread, write_private
from .app import NetSuiteApp, Stats, create_netsuite_app
from .auth import generate_m2m_certificate, generate_m2m_key_pair, self_signed_certificate
from .config import (
    ACCOUNT_FILE,
    SANDBOX_ACCOUNT_ID,
    SANDBOX_M2M_CERTIFICATE_ID,
    AccountRules,
    NetSuiteConfig,
    load_account_file,
)
from .errors import NetSuiteError
from .state import NetSuiteState

__all__ = [
    "ACCOUNT_FILE",
    "SANDBOX_ACCOUNT_ID",
    "SANDBOX_M2M_CERTIFICATE_ID",
    "AccountRules",
    "NetSuiteApp",
    "NetSuiteConfig",
    "NetSuiteError",
    "NetSuiteSandbox",
    "NetSuiteState",
    "Stats",
    "create_netsuite_app",
    "generate_m2m_certificate",
    "generate_m2m_key_pair",
    "load_account_file",
    "start_netsuite",
]


@dataclass
class NetSuiteSandbox:
    """A running stand-in: `.url` (host root), `.state`, `.config`, `.app` (stats), `.stop()`, `.env()`."""

    url: str
    state: NetSuiteState
    config: NetSuiteConfig
    app: NetSuiteApp
    handle: ServerHandle
    # A temporary directory holding the M2M private key, removed on stop (None when m2m_key_file was given).
    scratch_dir: Path | None = field(default=None, repr=False)

    @property
    def stats(self) -> Stats:
        return self.app.stats

    def env(self) -> dict[str, str]:
        """The pipeline's environment variables pointing at this stand-in, for TBA or M2M (`pipeline_auth`)."""
        config = self.config
        common = {
            "NETSUITE_ACCOUNT_ID": config.account_id,
            "NETSUITE_BASE_URL": self.url,
            "NETSUITE_CONCURRENCY": str(config.concurrency_limit),
        }
        if config.pipeline_auth == "m2m":
            return {
                **common,
                "NETSUITE_CLIENT_ID": config.m2m_client_id,
                "NETSUITE_CERTIFICATE_ID": SANDBOX_M2M_CERTIFICATE_ID,
                "NETSUITE_PRIVATE_KEY_FILE": config.m2m_key_file,
            }
        return {**common, **self.tba_env()}

    def tba_env(self) -> dict[str, str]:
        """The TBA credentials, which the stand-in accepts whatever `pipeline_auth` hands the pipeline (the
        scenario seeder signs with them)."""
        config = self.config
        return {
            "NETSUITE_CONSUMER_KEY": config.consumer_key,
            "NETSUITE_CONSUMER_SECRET": config.consumer_secret,
            "NETSUITE_TOKEN_ID": config.token_id,
            "NETSUITE_TOKEN_SECRET": config.token_secret,
        }

    def stop(self) -> None:
        self.handle.stop()
        if self.scratch_dir is not None:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)

    def __enter__(self) -> NetSuiteSandbox:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_netsuite(
    config: NetSuiteConfig | None = None, state: NetSuiteState | None = None, port: int = 0, **config_changes: Any
) -> NetSuiteSandbox:
    """Serve the stand-in on 127.0.0.1 from a thread. Keyword arguments set NetSuiteConfig fields."""
    config = config or NetSuiteConfig()
    config.update(config_changes)
    scratch_dir = prepare_m2m(config) if config.pipeline_auth == "m2m" else None
    state = state or NetSuiteState(config.account_file)
    app = create_netsuite_app(state, config)
    handle = serve_in_thread(app, port=port)
    return NetSuiteSandbox(
        url=handle.url, state=state, config=config, app=app.state.netsuite, handle=handle, scratch_dir=scratch_dir
    )


def prepare_m2m(config: NetSuiteConfig) -> Path | None:
    """Map a certificate for the pipeline's M2M credentials, as an administrator does in NetSuite's OAuth 2.0
    Client Credentials (M2M) Setup: the key in `m2m_key_file` when it exists (a persistent sandbox keeps its
    key across restarts), else a new one written there (owner-only) or to a temporary directory, returned."""
    scratch_dir = None
    if not config.m2m_key_file:
        scratch_dir = Path(tempfile.mkdtemp(prefix="netsuite-m2m-"))
        config.m2m_key_file = str(scratch_dir / "netsuite_m2m_private_key.pem")
    key_file = Path(config.m2m_key_file)
    if key_file.exists():
        private_pem = key_file.read_text(encoding="utf-8")
        load_pem_private_key(private_pem.encode(), password=None)  # a damaged file fails here, not at the first run
        certificate = self_signed_certificate(private_pem)
    else:
        private_pem, certificate = generate_m2m_certificate("PS256")
        key_file.parent.mkdir(parents=True, exist_ok=True)
        write_private(key_file, private_pem.encode())
    config.m2m_certificates = {**config.m2m_certificates, SANDBOX_M2M_CERTIFICATE_ID: certificate}
    return scratch_dir
