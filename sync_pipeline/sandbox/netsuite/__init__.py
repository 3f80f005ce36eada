"""NetSuite stand-in: the SuiteTalk REST record API v1 and a SuiteQL subset over real HTTP.

    with start_netsuite() as netsuite:
        os.environ.update(netsuite.env())   # NETSUITE_ACCOUNT_ID, ..., NETSUITE_BASE_URL
        ...                                  # requests + OAuth1(ck, cs, tk, ts, realm=..., "HMAC-SHA256")
        netsuite.state.count("invoice")

See `app.py` for the /_sandbox control API and `schema.py` for the record bodies accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..server import ServerHandle, serve_in_thread
from .app import NetSuiteApp, Stats, create_netsuite_app
from .auth import generate_m2m_key_pair
from .config import ACCOUNT_FILE, SANDBOX_ACCOUNT_ID, AccountRules, NetSuiteConfig, load_account_file
from .errors import NetSuiteError
from .state import NetSuiteState

__all__ = [
    "ACCOUNT_FILE",
    "SANDBOX_ACCOUNT_ID",
    "AccountRules",
    "NetSuiteApp",
    "NetSuiteConfig",
    "NetSuiteError",
    "NetSuiteSandbox",
    "NetSuiteState",
    "Stats",
    "create_netsuite_app",
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

    @property
    def stats(self) -> Stats:
        return self.app.stats

    def env(self) -> dict[str, str]:
        """The pipeline's environment variables pointing at this stand-in."""
        config = self.config
        return {
            "NETSUITE_ACCOUNT_ID": config.account_id,
            "NETSUITE_CONSUMER_KEY": config.consumer_key,
            "NETSUITE_CONSUMER_SECRET": config.consumer_secret,
            "NETSUITE_TOKEN_ID": config.token_id,
            "NETSUITE_TOKEN_SECRET": config.token_secret,
            "NETSUITE_BASE_URL": self.url,
            "NETSUITE_CONCURRENCY": str(config.concurrency_limit),
        }

    def stop(self) -> None:
        self.handle.stop()

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
    state = state or NetSuiteState(config.account_file)
    app = create_netsuite_app(state, config)
    handle = serve_in_thread(app, port=port)
    return NetSuiteSandbox(url=handle.url, state=state, config=config, app=app.state.netsuite, handle=handle)
