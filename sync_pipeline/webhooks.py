"""The Stripe webhook receiver: verify `Stripe-Signature`, store the event once in the inbox, answer 2xx.

Nothing else happens on the request path (no Stripe or NetSuite call): Stripe wants a fast answer and
retries otherwise. The `stripe_events_sensor` turns inbox events into runs (`SYNC_EVENT_SOURCE=webhooks`).
Served by uvicorn: `sync-pipeline webhooks serve --host 0.0.0.0 --port 8000`, endpoint
`POST /webhooks/stripe`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import stripe
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sync_pipeline.mapping.events import is_stripe_event
from sync_pipeline.resources.ledger import Ledger

WEBHOOK_PATH = "/webhooks/stripe"
# Stripe's own default: a signature older than five minutes may be a replay by someone who captured it.
DEFAULT_TOLERANCE_SECONDS = 300
MAX_BODY_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ReceiverConfig:
    secret: str
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS


def _reject(reason: str) -> JSONResponse:
    return JSONResponse({"error": reason}, status_code=400)


def verify(payload: bytes, header: str | None, config: ReceiverConfig) -> str | None:
    """None when the signature holds, else why it does not (no secret value is ever echoed)."""
    if not header:
        return "missing Stripe-Signature header"
    try:
        stripe.WebhookSignature.verify_header(payload, header, config.secret, tolerance=config.tolerance_seconds)
    except stripe.SignatureVerificationError as exc:
        return f"invalid Stripe-Signature: {exc.user_message}"
    except UnicodeDecodeError:
        return "the body is not UTF-8"
    return None


def create_webhook_app(config: ReceiverConfig, ledger: Ledger) -> Starlette:
    async def receive(request: Request) -> JSONResponse:
        payload = await request.body()
        if len(payload) > MAX_BODY_BYTES:
            return _reject(f"the body is larger than {MAX_BODY_BYTES} bytes")
        problem = verify(payload, request.headers.get("stripe-signature"), config)
        if problem:
            return _reject(problem)
        try:
            event = json.loads(payload)
        except ValueError:
            return _reject("the body is not JSON")
        problem = is_stripe_event(event)
        if problem:
            return _reject(problem)
        # The inbox's primary key is the event id: a redelivery is stored once and still answered 2xx.
        stored = await run_in_threadpool(ledger.add_event, event, payload.decode("utf-8"))
        return JSONResponse({"received": event["id"], "duplicate": not stored})

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route(WEBHOOK_PATH, receive, methods=["POST"]),
                             Route("/healthz", health, methods=["GET"])])


@dataclass(frozen=True)
class InboxReport:
    depth: int
    oldest_unprocessed: dict | None
    last_processed: dict | None

    def lines(self) -> list[str]:
        return [
            f"inbox depth: {self.depth} unprocessed event(s)",
            "oldest unprocessed: " + _describe(self.oldest_unprocessed, "received_at"),
            "last processed: " + _describe(self.last_processed, "processed_at"),
        ]

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str, indent=2)


def _describe(row: dict | None, when: str) -> str:
    if not row:
        return "none"
    return f"{row['event_id']} {row['event_type']} ({when.replace('_at', '')} {row[when]})"


def inbox_report(ledger: Ledger) -> InboxReport:
    status = ledger.inbox_status()
    return InboxReport(status.depth, status.oldest_unprocessed, status.last_processed)


# --- the `sync-pipeline webhooks` commands ------------------------------------------------------------

def _ledger_from_settings() -> Ledger:
    from pathlib import Path

    from sync_pipeline import settings

    url = settings.database_url()
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return Ledger(url)


def cmd_serve(args) -> int:
    import uvicorn

    from sync_pipeline import settings

    settings.require_environment(require=("webhooks",))
    config = ReceiverConfig(secret=settings.get("STRIPE_WEBHOOK_SECRET") or "", tolerance_seconds=args.tolerance)
    app = create_webhook_app(config, _ledger_from_settings())
    print(f"Stripe webhooks on http://{args.host}:{args.port}{WEBHOOK_PATH} (inbox: the ledger database); "
          "set SYNC_EVENT_SOURCE=webhooks for the sensor to read it.")
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level=args.log_level,
                proxy_headers=True, server_header=False)
    return 0


def cmd_status(args) -> int:
    from sync_pipeline import settings

    report = inbox_report(_ledger_from_settings())
    if args.json:
        print(report.to_json())
    else:
        print("\n".join([*report.lines(), f"sensor reads: {settings.event_source()} (SYNC_EVENT_SOURCE)"]))
    return 0


def add_webhook_commands(sub) -> None:
    """`sync-pipeline webhooks serve|status` (sub is the CLI's subparsers object)."""
    webhooks = sub.add_parser("webhooks", help="the Stripe webhook receiver and its inbox")
    commands = webhooks.add_subparsers(dest="webhooks_command", required=True)
    serve = commands.add_parser("serve", help="receive signed Stripe webhooks into the inbox (uvicorn)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--tolerance", type=int, default=DEFAULT_TOLERANCE_SECONDS,
                       help="reject signatures older than this many seconds")
    serve.add_argument("--log-level", default="info")
    serve.set_defaults(func=cmd_serve)
    status = commands.add_parser("status", help="inbox depth, oldest unprocessed and last processed event")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)
