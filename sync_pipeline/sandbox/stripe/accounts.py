"""Several Stripe accounts behind one address, as api.stripe.com serves them: the API key says whose data it is.

    with start_stripe_accounts(["us", "eu"]) as accounts:
        eu = accounts["eu"]                 # a StripeSandbox: its own state, config, key and webhook secret
        stripe.StripeClient(eu.api_key, base_addresses={"api": accounts.url})

Each account is a whole stand-in (its own objects, ids, clock, events and balance); `/v1/...` goes to the
account whose secret key (`sk_test_<name>`) the request carries, and is refused (401) for any other key.
An account's control endpoints are under `/accounts/<name>/_sandbox/...` (its `url`). Seeded with the same
seed, two accounts make the same ids, as two real accounts may for the ids a user chooses (`prod_pro`).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from starlette.types import Receive, Scope, Send

from sync_pipeline.sandbox.server import ServerHandle, serve_in_thread
from sync_pipeline.sandbox.stripe.app import create_stripe_app
from sync_pipeline.sandbox.stripe.config import StripeConfig
from sync_pipeline.sandbox.stripe.state import StripeState

ACCOUNT_PATH = "/accounts/"


def account_key(name: str) -> str:
    return f"sk_test_{name}"


def _api_key(scope: Scope) -> str:
    headers = dict(scope.get("headers") or ())
    scheme, _, credential = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "basic":
        try:
            return base64.b64decode(credential).decode().split(":", 1)[0]
        except (ValueError, UnicodeDecodeError):
            return ""
    return credential


class AccountRouter:
    """An ASGI app sending each request to its account's stand-in app."""

    def __init__(self, apps: dict[str, Any]):
        self.by_name = apps
        self.by_key = {account_key(name): app for name, app in apps.items()}
        self.first = next(iter(apps.values()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.first(scope, receive, send)
            return
        path = scope["path"]
        if path.startswith(ACCOUNT_PATH):
            name, _, rest = path[len(ACCOUNT_PATH) :].partition("/")
            app = self.by_name.get(name)
            if app is None:
                await _not_found(send)
                return
            scope = {**scope, "path": f"/{rest}", "raw_path": f"/{rest}".encode()}
        else:
            # An unknown key goes to the first account, which refuses it (each accepts its own key only).
            app = self.by_key.get(_api_key(scope), self.first)
        await app(scope, receive, send)


async def _not_found(send: Send) -> None:
    await send({"type": "http.response.start", "status": 404, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"no such sandbox account"})


@dataclass
class AccountSandbox:
    """One account of a `StripeAccountsSandbox`: `url` is its control base, `api_url` the shared API address."""

    name: str
    url: str
    api_url: str
    state: StripeState
    config: StripeConfig
    app: Any = field(repr=False)

    @property
    def api_key(self) -> str:
        return account_key(self.name)

    @property
    def stand_in(self):
        return self.app.state.stand_in


@dataclass
class StripeAccountsSandbox:
    url: str
    accounts: dict[str, AccountSandbox]
    handle: ServerHandle = field(repr=False)

    def __getitem__(self, name: str) -> AccountSandbox:
        return self.accounts[name]

    def stop(self) -> None:
        for account in self.accounts.values():
            account.stand_in.dispatcher.shutdown()
        self.handle.stop()

    def __enter__(self) -> StripeAccountsSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stripe_accounts(
    names: Sequence[str], port: int = 0, per_account: Mapping[str, Mapping[str, Any]] | None = None, **overrides: Any
) -> StripeAccountsSandbox:
    """Serve one stand-in per account name on one 127.0.0.1 address; `overrides` set every account's config,
    `per_account[name]` one account's (its own seed, hence its own ids, or its own webhook secret)."""
    apps = {}
    built = {}
    for name in names:
        own = {**overrides, **(per_account or {}).get(name, {})}
        config = dataclasses.replace(StripeConfig(), api_key_prefix=account_key(name), **own)
        state = StripeState(seed=config.seed)
        apps[name] = create_stripe_app(state, config)
        built[name] = (state, config)
    handle = serve_in_thread(AccountRouter(apps), port=port)
    accounts = {
        name: AccountSandbox(name, f"{handle.url}{ACCOUNT_PATH}{name}", handle.url, *built[name], apps[name])
        for name in names
    }
    return StripeAccountsSandbox(url=handle.url, accounts=accounts, handle=handle)
