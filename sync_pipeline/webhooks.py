"""The Stripe webhook receiver: verify `Stripe-Signature`, store the event once in the inbox, answer 2xx.

Nothing else happens on the request path (no Stripe or NetSuite call): Stripe wants a fast answer and
retries otherwise. The `stripe_to_netsuite_on_events` sensor turns inbox events into runs
(`SYNC_EVENT_SOURCE=webhooks`).
Served by uvicorn: `sync-pipeline webhooks serve --host 0.0.0.0 --port 8000`, endpoint
`POST /webhooks/stripe`. With several Stripe accounts (SYNC_STRIPE_ACCOUNTS=us,eu) each other account has its
own endpoint, `POST /webhooks/stripe/eu`, verified with its own `STRIPE_WEBHOOK_SECRET_EU`, and its events are
stored in the inbox as that account's, for that account's sensor only; the default account keeps
`/webhooks/stripe` (and answers at `/webhooks/stripe/us` too).

The endpoint is public, so every request is hostile until its signature holds. In order:
1. the body: `Content-Length` over `MAX_BODY_BYTES` is refused (413) before a byte is read; otherwise at
   most that many bytes are read, chunk by chunk (also for chunked bodies), within `BODY_TIMEOUT_SECONDS`
   (408), so no request can hold more than the limit in memory or a worker forever;
2. the signature (400), before any parsing;
3. the event's shape (400): JSON, a Stripe event, nested at most `MAX_JSON_DEPTH` deep, and fields the
   inbox can hold (`inbox_event_problem`);
4. the insert; a failure there answers 500 (Stripe retries) and logs the error class and event id only,
   never the payload or the SQL parameters.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import stripe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_pipeline.mapping.events import is_stripe_event
from sync_pipeline.resources.ledger import InboxConflict, InboxStatus, Ledger, inbox_event_problem

WEBHOOK_PATH = "/webhooks/stripe"
# Stripe's own default: a signature older than five minutes may be a replay by someone who captured it.
DEFAULT_TOLERANCE_SECONDS = 300
# The SDK treats a tolerance of 0 as "do not check the timestamp at all": a year-old capture would pass.
MIN_TOLERANCE_SECONDS = 1
# A Stripe event carries one object's snapshot: a few KB, tens of KB for an invoice with many lines and
# full metadata (embedded lists are cut to their first page, metadata to 50 keys of 500 characters).
# Stripe documents no maximum, and refusing a real event makes Stripe retry it for days and then disable
# the endpoint, so the limit is generous: 1 MiB, dozens of times the largest event we expect, while one
# request can never hold more than that in memory.
MAX_BODY_BYTES = 1024 * 1024
# Stripe sends a whole event at once; 1 MiB takes well under a second on any link it uses. A body that
# has not arrived in 10 s is a stalled or hostile client holding a connection open.
BODY_TIMEOUT_SECONDS = 10.0
# Stripe objects nest about a dozen levels. The sensor parses stored payloads again in another process,
# so anything deeper than this (near Python's recursion limit) would fail there on every tick.
MAX_JSON_DEPTH = 64

log = logging.getLogger("uvicorn.error")


def account_path(account: str | None) -> str:
    """The webhook endpoint of a Stripe account: WEBHOOK_PATH for the default, `/webhooks/stripe/eu` for `eu`."""
    return f"{WEBHOOK_PATH}/{account}" if account else WEBHOOK_PATH


@dataclass(frozen=True)
class ReceiverConfig:
    secret: str = field(repr=False)  # the default account's
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS
    max_body_bytes: int = MAX_BODY_BYTES
    body_timeout_seconds: float = BODY_TIMEOUT_SECONDS
    # Several Stripe accounts: every other account's signing secret by name (its endpoint: `account_path`), and
    # the default account's name, under which its endpoint answers too.
    other_accounts: Mapping[str, str] = field(default_factory=dict, repr=False)
    default_name: str = ""

    def __post_init__(self) -> None:
        if self.tolerance_seconds < MIN_TOLERANCE_SECONDS:
            raise ValueError(tolerance_problem(self.tolerance_seconds))

    def endpoint(self, account: str | None) -> tuple[str | None, str] | None:
        """(the account whose inbox rows the events become: None for the default, its signing secret) of the
        endpoint `account_path(account)`, or None when there is no such endpoint."""
        if not account or account == self.default_name:
            return None, self.secret
        if account in self.other_accounts:
            return account, self.other_accounts[account]
        return None


def tolerance_problem(tolerance_seconds: int) -> str:
    return (
        f"--tolerance: expected at least {MIN_TOLERANCE_SECONDS} second(s), got {tolerance_seconds} "
        "(below that the Stripe SDK stops checking a signature's age, so replays would be accepted)"
    )


class Refused(Exception):
    """A request answered with a 4xx and a reason (no secret and no payload in the reason)."""

    def __init__(self, status_code: int, reason: str, *, close: bool = False):
        super().__init__(reason)
        self.status_code, self.reason, self.close = status_code, reason, close

    def response(self) -> JSONResponse:
        # A refused body may still be on its way: closing the connection stops reading it.
        headers = {"Connection": "close"} if self.close else None
        return JSONResponse({"error": self.reason}, status_code=self.status_code, headers=headers)


async def read_body(request: Request, config: ReceiverConfig) -> bytes:
    """At most `max_body_bytes` of the body, within `body_timeout_seconds`; raises Refused otherwise."""
    limit = config.max_body_bytes
    too_large = Refused(413, f"the body is larger than {limit} bytes", close=True)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()):
            raise Refused(400, "Content-Length is not a number", close=True)
        if int(declared) > limit:
            raise too_large
    body = bytearray()
    try:
        async with asyncio.timeout(config.body_timeout_seconds):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise too_large
    except TimeoutError:
        raise Refused(408, f"the body did not arrive within {config.body_timeout_seconds:g} s", close=True) from None
    except ClientDisconnect:
        raise Refused(400, "the client went away before the body ended", close=True) from None
    return bytes(body)


def verify(payload: bytes, header: str | None, config: ReceiverConfig, secret: str | None = None) -> str | None:
    """None when the signature holds for `secret` (default: the default account's), else why it does not (no
    secret value is ever echoed)."""
    if not header:
        return "missing Stripe-Signature header"
    if not header.isascii():
        # The SDK compares signatures with hmac.compare_digest, which raises TypeError on non-ASCII text.
        return "invalid Stripe-Signature: the header is not ASCII"
    try:
        stripe.WebhookSignature.verify_header(
            payload, header, secret or config.secret, tolerance=config.tolerance_seconds
        )
    except stripe.SignatureVerificationError as exc:
        return f"invalid Stripe-Signature: {exc.user_message}"
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    return None


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether containers nest deeper than `limit` (iterative: a deep value must not exhaust the stack)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def parse_event(text: str) -> dict:
    """The verified body as an event the inbox can store; raises Refused (400) with the reason."""
    try:
        event = json.loads(text)
    except RecursionError:
        raise Refused(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if json_depth_exceeds(event):
        raise Refused(400, f"the body nests deeper than {MAX_JSON_DEPTH} levels")
    problem = is_stripe_event(event) or inbox_event_problem(event)
    if problem:
        raise Refused(400, problem)
    return event


def create_webhook_app(config: ReceiverConfig, ledger: Ledger) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        event_id = None
        endpoint = config.endpoint(request.path_params.get("account"))
        if endpoint is None:
            return JSONResponse({"error": "no such webhook endpoint"}, status_code=404)
        account, secret = endpoint
        try:
            payload = await read_body(request, config)
            # Each account's secret on its own path: an event signed for another account is refused here.
            problem = verify(payload, request.headers.get("stripe-signature"), config, secret)
            if problem:
                raise Refused(400, problem)
            text = payload.decode("utf-8")  # verify() decoded it already, so this cannot fail
            event = parse_event(text)
            event_id = event["id"]
            # The inbox's primary key is the event id: a redelivery is stored once and still answered 2xx.
            stored = await run_in_threadpool(ledger.for_account(account).add_event, event, text)
        except Refused as refused:
            return refused.response()
        except InboxConflict as conflict:
            log.error("webhook event %r not stored: %s", event_id, conflict)
            return JSONResponse({"error": str(conflict)}, status_code=409)
        except Exception as exc:  # a storage failure (or a bug): Stripe retries a 5xx, so nothing is lost
            # Driver and SQLAlchemy messages quote the SQL parameters, i.e. the whole event, and uvicorn
            # would log the traceback with them: log the class and the event id only.
            log.error("webhook event %r not stored: %s (payload not logged)", event_id, type(exc).__name__)
            return JSONResponse({"error": "the event could not be stored; Stripe will retry it"}, status_code=500)
        return JSONResponse({"received": event_id, "duplicate": not stored})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route(WEBHOOK_PATH, receive, methods=["POST"]),
            Route(WEBHOOK_PATH + "/{account}", receive, methods=["POST"]),
            Route("/healthz", health, methods=["GET"]),
        ]
    )


def inbox_lines(status: InboxStatus) -> list[str]:
    return [
        f"inbox depth: {status.depth} unprocessed event(s)",
        "oldest unprocessed: " + _describe(status.oldest_unprocessed, "received_at"),
        "last processed: " + _describe(status.last_processed, "processed_at"),
    ]


def _describe(row: dict | None, when: str) -> str:
    if not row:
        return "none"
    return f"{row['event_id']} {row['event_type']} ({when.replace('_at', '')} {row[when]})"


# --- the `sync-pipeline webhooks` commands ------------------------------------------------------------


def _ledger_from_settings() -> Ledger:
    from pathlib import Path

    from sync_pipeline import settings

    url = settings.database_url()
    if url.startswith("sqlite:///"):
        folder = Path(url.removeprefix("sqlite:///")).parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # e.g. a path under a file: one line, like any database that cannot be opened
            blocking = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
            reason = f"{blocking} is not a directory" if blocking else (exc.strerror or str(exc))
            raise settings.ConfigError(settings.database_open_problem(url, reason)) from None
    return Ledger(url)


def receiver_config(tolerance_seconds: int, environ: Mapping[str, str] | None = None) -> ReceiverConfig:
    """Every configured Stripe account's endpoint, with its signing secret from its environment variable
    (STRIPE_WEBHOOK_SECRET, or STRIPE_WEBHOOK_SECRET_<NAME> per account of SYNC_STRIPE_ACCOUNTS)."""
    import os

    from sync_pipeline.stripe_accounts import WEBHOOK_SECRET, configured_accounts

    env = os.environ if environ is None else environ
    default, *others = configured_accounts(env)
    return ReceiverConfig(
        secret=env.get(default.env_var(WEBHOOK_SECRET)) or "",
        tolerance_seconds=tolerance_seconds,
        other_accounts={a.name: env.get(a.env_var(WEBHOOK_SECRET)) or "" for a in others},
        default_name=default.name,
    )


def cmd_serve(args) -> int:
    import uvicorn

    from sync_pipeline import settings

    if args.tolerance < MIN_TOLERANCE_SECONDS:
        raise settings.ConfigError(tolerance_problem(args.tolerance))
    settings.require_environment(require=("webhooks",))
    config = receiver_config(args.tolerance)
    app = create_webhook_app(config, _ledger_from_settings())
    for name in (None, *config.other_accounts):
        of = f" (Stripe account {name or config.default_name})" if config.other_accounts else ""
        print(f"Stripe webhooks on http://{args.host}:{args.port}{account_path(name)}{of}")
    print("Inbox: the ledger database; set SYNC_EVENT_SOURCE=webhooks for the sensors to read it.")
    # h11, not httptools: httptools buffers a header of any size (a 200 MB header took the process past
    # 400 MB), h11 refuses one over 16 KB with 400. Stripe sends a few hundred bytes of headers.
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        log_level=args.log_level,
        proxy_headers=True,
        server_header=False,
        http="h11",
    )
    return 0


def cmd_status(args) -> int:
    from sync_pipeline import settings
    from sync_pipeline.stripe_accounts import configured_accounts

    ledger = _ledger_from_settings()
    accounts = configured_accounts()
    if len(accounts) == 1:
        status = ledger.inbox_status()
        if args.json:
            print(json.dumps(asdict(status), default=str, indent=2))
        else:
            print("\n".join([*inbox_lines(status), f"sensor reads: {settings.event_source()} (SYNC_EVENT_SOURCE)"]))
        return 0
    # Several Stripe accounts: each account's inbox, as its sensor drains it.
    statuses = {a.name: ledger.for_account(a.prefix).inbox_status() for a in accounts}
    if args.json:
        print(json.dumps({name: asdict(status) for name, status in statuses.items()}, default=str, indent=2))
        return 0
    for name, status in statuses.items():
        print(f"Stripe account {name}:", *(f"  {line}" for line in inbox_lines(status)), sep="\n")
    print(f"sensors read: {settings.event_source()} (SYNC_EVENT_SOURCE)")
    return 0


def add_webhook_commands(sub) -> None:
    """`sync-pipeline webhooks serve|status` (sub is the CLI's subparsers object)."""
    webhooks = sub.add_parser("webhooks", help="the Stripe webhook receiver and its inbox")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = commands.add_parser("serve", help="receive signed Stripe webhooks into the inbox (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--tolerance",
        type=int,
        default=DEFAULT_TOLERANCE_SECONDS,
        help=f"reject signatures older than this many seconds (at least {MIN_TOLERANCE_SECONDS})",
    )
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)
    status = commands.add_parser("status", help="inbox depth, oldest unprocessed and last processed event")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
