"""The Starlette app: `/v1/...` as Stripe serves it (auth, form bodies, idempotency, expand, errors)
and the `/_sandbox/...` inspection and control API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sync_pipeline.sandbox.server import ResponseLostResponse

# Importing the resource modules registers their routes.
from sync_pipeline.sandbox.stripe import catalog, events, invoicing, payments, subscriptions  # noqa: F401  (registers routes)
from sync_pipeline.sandbox.stripe.config import API_VERSION, StripeConfig
from sync_pipeline.sandbox.stripe.errors import StripeApiError, invalid_param
from sync_pipeline.sandbox.stripe.events import WebhookDispatcher
from sync_pipeline.sandbox.stripe.expand import expand, parse_expand
from sync_pipeline.sandbox.stripe.params import decode_form
from sync_pipeline.sandbox.stripe.payments import (
    account_fee,
    balance_adjustment,
    close_dispute,
    create_payout,
    fail_payout,
    open_dispute,
    settle,
)
from sync_pipeline.sandbox.stripe.routing import ROUTES, Router
from sync_pipeline.sandbox.stripe.seeding import seed_paid_invoices
from sync_pipeline.sandbox.stripe.state import Ctx, IdempotencyRecord, StripeState
from sync_pipeline.sandbox.stripe.subscriptions import advance_subscription

JSON = "application/json"
# Responses Stripe saves under an Idempotency-Key: anything that ran (a success, a decline, a 500).
# Validation failures (400/404) did not run, so a corrected retry with the same key may proceed.
CACHEABLE_STATUS = (200, 402)
MAX_IDEMPOTENCY_KEY = 255  # docs.stripe.com/idempotency: keys up to 255 characters


class Stats:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.requests = 0
        self.by_method: Counter[str] = Counter()
        self.by_status: Counter[str] = Counter()
        self.by_route: Counter[str] = Counter()
        self.writes = 0
        self.idempotent_replays = 0
        self.faults: Counter[str] = Counter()
        self.concurrency = 0
        self.peak_concurrency = 0
        self.started = time.time()

    def to_dict(self, state: StripeState, dispatcher: WebhookDispatcher) -> dict[str, Any]:
        deliveries = state.webhook_deliveries
        return {
            "requests": self.requests,
            "by_method": dict(self.by_method),
            "by_status": dict(self.by_status),
            "by_route": dict(self.by_route),
            "writes": self.writes,
            "idempotent_replays": self.idempotent_replays,
            "faults": dict(self.faults),
            "peak_concurrency": self.peak_concurrency,
            "since": self.started,
            "objects": {kind: len(coll) for kind, coll in state.collections.items()},
            "webhooks": {
                "attempts": len(deliveries),
                "delivered": sum(1 for d in deliveries if d["delivered"]),
                "failed_attempts": sum(1 for d in deliveries if not d["delivered"]),
                "pending": dispatcher.pending(),
            },
        }


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=JSON)


class StripeApp:
    """Holds what one running stand-in needs besides its state: config, router, stats, webhooks."""

    def __init__(self, state: StripeState, config: StripeConfig) -> None:
        self.state = state
        self.config = config
        self.router = Router(ROUTES)
        self.stats = Stats()
        self.dispatcher = WebhookDispatcher(state, config)
        self.random = random.Random(config.seed)
        # The per-second limiter's clock; a test may replace it to make "within one second" exact.
        self.monotonic: Callable[[], float] = time.monotonic
        self._window_start = 0.0
        self._window_count = 0
        self._every = (0, 0)  # (rate_limit_every in force, requests counted since it was set)

    # --- /v1 ------------------------------------------------------------------------------------

    async def api(self, request: Request) -> Response:
        stats = self.stats
        stats.requests += 1
        stats.concurrency += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.concurrency)
        try:
            self.dispatcher.ensure_running()
            if self.config.latency_ms:
                await asyncio.sleep(self.config.latency_ms / 1000)
            body = await request.body() if request.method == "POST" else b""
            response = self._handle(request, body)
            stats.by_status[str(response.status_code)] += 1
            self.dispatcher.notify()
            return response
        finally:
            stats.concurrency -= 1

    def _handle(self, request: Request, body: bytes) -> Response:
        method = request.method
        path = request.scope["path"]
        self.stats.by_method[method] += 1
        # Stripe answers every request with a Request-Id (clients log it for support) and the version the
        # response was rendered in.
        request_id = "req_" + self.state.new_id("req")[4:]
        headers = {"Request-Id": request_id, "Stripe-Version": API_VERSION}
        # Failures up to here (auth, rate limit, unknown URL, bad form) are returned before the idempotency
        # lookup: the request never started executing, and Stripe saves no result for it under the key.
        try:
            self._authenticate(request)
            self._check_rate_limit()
            matched = self.router.match(method, path)
            if matched is None:
                raise StripeApiError(
                    404,
                    "invalid_request_error",
                    f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help "
                    "at https://support.stripe.com/.",
                )
            route, path_values = matched
            self.stats.by_route[f"{method} {route.pattern}"] += 1
            params = decode_form(request.scope["query_string"].decode("latin-1"))
            if body:
                params.update(decode_form(body.decode("utf-8")))
        except StripeApiError as error:
            return _json(error.body(request_id), error.status, headers)

        # Stripe honours Idempotency-Key on POST only; GET and DELETE are idempotent by definition.
        key = request.headers.get("idempotency-key") if method == "POST" else None
        if key is not None:
            headers["Idempotency-Key"] = key
            replay = self._replay(key, method, path, params, headers, request_id)
            if replay is not None:
                return replay
        if route.writes:
            self.stats.writes += 1
        status, payload = self._run(route, path_values, params, request_id, key)
        if key is not None and (status in CACHEABLE_STATUS or status >= 500):
            record = IdempotencyRecord(
                _fingerprint(method, path, params), status, payload, self.state.clock.now(), path
            )
            self.state.remember_response(key, record, self.config.idempotency_ttl_seconds)
        # The lost response is injected after the write ran and its response was saved: the client sees a
        # dropped connection for work that happened, which only a retry with the same key handles without a
        # duplicate. Reads are left alone, since losing one costs nothing but a retry.
        if route.writes and status == 200 and self._roll(self.config.lost_response_rate):
            self.stats.faults["lost_response"] += 1
            return ResponseLostResponse()
        return Response(payload, status_code=status, headers=headers, media_type=JSON)

    def _run(self, route, path_values: list[str], params: dict, request_id: str, key: str | None) -> tuple[int, bytes]:
        try:
            # Injected inside the run, so an injected 500 under a key is saved and replayed like Stripe's.
            if self._roll(self.config.error_rate):
                self.stats.faults["api_error"] += 1
                raise StripeApiError(500, "api_error", "An unknown error occurred (sandbox fault injection).")
            expand_paths = parse_expand(params.pop("expand", None))
            with self.state.lock:
                ctx = Ctx(self.state, self.config, self.state.clock.now(), request_id, key)
                # There is no background clock: funds becoming available and payouts arriving are applied
                # lazily, before each request, so every response reflects the current (possibly frozen) time.
                settle(ctx)
                result = route.handler(ctx, params, *path_values)
                if expand_paths:
                    result = expand(self.state, result, expand_paths)
                return 200, orjson.dumps(result)
        except StripeApiError as error:
            return error.status, orjson.dumps(error.body(request_id))

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        # Stripe takes the secret key as Bearer token or as the Basic-auth user name with an empty password
        # (`curl -u sk_test_...:`); both must work.
        if scheme.lower() == "basic":
            try:
                credential = base64.b64decode(credential).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                credential = ""
        elif scheme.lower() != "bearer":
            credential = ""
        if not credential:
            raise StripeApiError(
                401,
                "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the Authorization header, using "
                "Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )
        shown = credential[:8] + "*" * max(len(credential) - 12, 0) + credential[-4:]  # masked as Stripe shows it
        # A restricted key is limited to some resources and gets 403, not 401, outside them: it is a valid key.
        allowed_paths = self.config.restricted_keys.get(credential)
        if allowed_paths is not None:
            if not any(request.url.path.startswith(prefix) for prefix in allowed_paths):
                raise StripeApiError(
                    403,
                    "invalid_request_error",
                    f"The provided key '{shown}' does not have the required permissions for this endpoint on account "
                    "'acct_sandbox'. Having the required read permission would allow this request to continue.",
                )
        elif not credential.startswith(self.config.api_key_prefix):
            raise StripeApiError(
                401, "invalid_request_error", f"Invalid API Key provided: {shown}", code="api_key_invalid"
            )
        version = request.headers.get("stripe-version")
        # Real Stripe renders any requested version; this stand-in has one shape per object. Strict mode
        # catches a client that stopped pinning API_VERSION instead of serving it shapes it did not ask for.
        if self.config.strict_api_version and version and version != API_VERSION:
            raise invalid_param(f"This sandbox serves API version {API_VERSION} only, not {version}.", None)

    def _check_rate_limit(self) -> None:
        every = self.config.rate_limit_every
        # Counted from the knob's last change, so a test knows which of its requests get the 429.
        counted = self._every[1] + 1 if self._every[0] == every else 1
        self._every = (every, counted)
        limited = bool(every) and counted % every == 0
        limit = self.config.rate_limit_per_second
        # A fixed one-second window, simpler than Stripe's limiter but enough to produce its 429 with code
        # `rate_limit` (stripe-python's RateLimitError); set it to 25 to match a test-mode key.
        if limit:
            now = self.monotonic()
            if now - self._window_start >= 1.0:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            limited = limited or self._window_count > limit
        if limited:
            self.stats.faults["rate_limit"] += 1
            raise StripeApiError(
                429, "invalid_request_error", "Too many requests hit the API too quickly.", code="rate_limit"
            )

    def _replay(
        self, key: str, method: str, path: str, params: dict, headers: dict, request_id: str
    ) -> Response | None:
        if len(key) > MAX_IDEMPOTENCY_KEY:
            error = invalid_param(f"Idempotency-Key must be at most {MAX_IDEMPOTENCY_KEY} characters.", None)
            return _json(error.body(request_id), 400, headers)
        record = self.state.idempotency.get(key)
        if record is None:
            return None
        # Stripe prunes keys after at least 24 h; an expired key starts a new request rather than replaying.
        if self.state.clock.now() - record.created > self.config.idempotency_ttl_seconds:
            del self.state.idempotency[key]
            return None
        if record.fingerprint != _fingerprint(method, path, params):
            error = StripeApiError(
                400,
                "idempotency_error",
                f"Keys for idempotent requests can only be used with the same parameters they were first used with. "
                f"Try using a key other than '{key}' if you meant to execute a different request.",
            )
            return _json(error.body(request_id), 400, headers)
        self.stats.idempotent_replays += 1
        return Response(
            record.body, status_code=record.status, headers={**headers, "Idempotent-Replayed": "true"}, media_type=JSON
        )

    def _roll(self, rate: float) -> bool:
        return rate > 0 and self.random.random() < rate

    # --- /_sandbox ------------------------------------------------------------------------------

    def automatic_ctx(self) -> Ctx:
        ctx = Ctx(self.state, self.config, self.state.clock.now())
        settle(ctx)
        return ctx

    def control_endpoint(self, path: str):
        async def endpoint(request: Request) -> Response:
            return await self.control(request, CONTROL_HANDLERS[(request.method, path)])

        return endpoint

    async def control(self, request: Request, handler) -> Response:
        """Every control endpoint: JSON in, JSON out, Stripe-style errors."""
        try:
            raw = await request.body()
            body = orjson.loads(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise invalid_param("The body must be a JSON object.")
            with self.state.lock:
                result = handler(self, body, **request.path_params)
            self.dispatcher.ensure_running()
            self.dispatcher.notify()
            return _json(result)
        except StripeApiError as error:
            return _json(error.body(), error.status)
        except orjson.JSONDecodeError as exc:
            return _json(invalid_param(f"Invalid JSON: {exc}").body(), 400)


def _fingerprint(method: str, path: str, params: dict) -> str:
    # Reusing a key with other parameters (or on another endpoint) is Stripe's idempotency_error; keys are
    # sorted so the same parameters sent in another order still match.
    canonical = orjson.dumps([method, path, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


# --- control handlers: (app, json body, **path params) -> JSON-able --------------------------------


def _stats(app: StripeApp, body: dict) -> dict:
    return app.stats.to_dict(app.state, app.dispatcher)


def _reset_stats(app: StripeApp, body: dict) -> dict:
    app.stats.reset()
    return {"reset": True}


def _get_config(app: StripeApp, body: dict) -> dict:
    return app.config.to_dict()


def _set_config(app: StripeApp, body: dict) -> dict:
    try:
        app.config.update(body)
    except KeyError as exc:
        raise invalid_param(f"Unknown config knob: {exc.args[0]}", str(exc.args[0])) from None
    except (TypeError, ValueError) as exc:
        raise invalid_param(f"Invalid config value: {exc}") from None
    return app.config.to_dict()


EXTRA_RECORDS = {
    "line_item": lambda state: [line for lines in state.lines.values() for line in lines],
    "credit_note_line_item": lambda state: [line for lines in state.credit_note_lines.values() for line in lines],
    "webhook_delivery": lambda state: list(state.webhook_deliveries),
}


def _records(app: StripeApp, body: dict, kind: str) -> list:
    state = app.state
    if kind in EXTRA_RECORDS:
        return EXTRA_RECORDS[kind](state)
    coll = state.collections.get(kind)
    if coll is None:
        raise invalid_param(
            f"Unknown record type: {kind}. Known: {', '.join(sorted([*state.collections, *EXTRA_RECORDS]))}"
        )
    return [coll.objects[entry[2]] for entry in coll.index.entries]  # index order, so the listing is stable


def _reset(app: StripeApp, body: dict) -> dict:
    app.state.reset()
    return {"reset": True}


def _clock(app: StripeApp, body: dict) -> dict:
    clock = app.state.clock
    if body.get("real"):
        clock.real()
    if "now" in body:
        clock.freeze(int(body["now"]))
    if "advance" in body:
        clock.advance(float(body["advance"]))
    app.automatic_ctx()  # let funds settle and payouts arrive at the new time
    return clock.to_dict()


def _get_clock(app: StripeApp, body: dict) -> dict:
    return app.state.clock.to_dict()


def _create_dispute(app: StripeApp, body: dict) -> dict:
    ctx = app.automatic_ctx()
    charge_id = body.get("charge")
    if not charge_id and body.get("payment_intent"):
        charge_id = app.state.get("payment_intent", body["payment_intent"], "payment_intent")["latest_charge"]
    if not charge_id:
        raise invalid_param("Pass a charge or a payment_intent.", "charge")
    charge = app.state.get("charge", charge_id, "charge")
    return open_dispute(ctx, charge, body.get("reason", "general"), body.get("amount"))


def _close_dispute(app: StripeApp, body: dict, dispute_id: str) -> dict:
    return close_dispute(app.automatic_ctx(), app.state.get("dispute", dispute_id), body.get("outcome", ""))


def _advance_subscription(app: StripeApp, body: dict, subscription_id: str) -> dict:
    ctx = app.automatic_ctx()
    result = advance_subscription(
        ctx, app.state.get("subscription", subscription_id), bool(body.get("move_clock", True))
    )
    # Settled again: with move_clock the clock is now past the new period, and the payments just made
    # must become available at that time, as a request would see them.
    settle(Ctx(app.state, app.config, app.state.clock.now()))
    return result


def _automatic_payouts(app: StripeApp, body: dict) -> list:
    """Stripe's automatic payout: the whole available balance of each currency (or the one asked)."""
    ctx = app.automatic_ctx()
    currencies = (
        [body["currency"]]
        if body.get("currency")
        else sorted({txn["currency"] for txn in app.state.collections["balance_transaction"].objects.values()})
    )
    made = []
    for currency in currencies:
        if payments.available_balance(app.state, currency) > 0:
            made.append(create_payout(ctx, currency, automatic=True))
    return made


def _fail_payout(app: StripeApp, body: dict, payout_id: str) -> dict:
    return fail_payout(
        app.automatic_ctx(), app.state.get("payout", payout_id), body.get("failure_code") or "account_closed"
    )


def _balance_adjustment(app: StripeApp, body: dict) -> dict:
    return balance_adjustment(
        app.automatic_ctx(), body.get("currency", ""), body.get("amount"), body.get("description")
    )


def _account_fee(app: StripeApp, body: dict) -> dict:
    return account_fee(app.automatic_ctx(), body.get("currency", ""), body.get("amount"), body.get("description"))


def _seed(app: StripeApp, body: dict) -> dict:
    ids = seed_paid_invoices(
        app.state,
        app.config,
        int(body.get("invoices", 0)),
        currency=body.get("currency", "usd"),
        unit_amount=int(body.get("unit_amount", 1000)),
        customers=int(body.get("customers", 100)),
        record_events=bool(body.get("events", False)),
    )
    return {"invoices": len(ids), "first": ids[0] if ids else None, "last": ids[-1] if ids else None}


def _webhooks(app: StripeApp, body: dict) -> dict:
    return {"pending": app.dispatcher.pending(), "deliveries": list(app.state.webhook_deliveries)}


CONTROL_HANDLERS = {
    ("GET", "/_sandbox/stats"): _stats,
    ("POST", "/_sandbox/stats/reset"): _reset_stats,
    ("GET", "/_sandbox/config"): _get_config,
    ("POST", "/_sandbox/config"): _set_config,
    ("GET", "/_sandbox/records/{kind}"): _records,
    ("POST", "/_sandbox/reset"): _reset,
    ("GET", "/_sandbox/clock"): _get_clock,
    ("POST", "/_sandbox/clock"): _clock,
    ("POST", "/_sandbox/disputes"): _create_dispute,
    ("POST", "/_sandbox/disputes/{dispute_id}/close"): _close_dispute,
    ("POST", "/_sandbox/subscriptions/{subscription_id}/advance"): _advance_subscription,
    ("POST", "/_sandbox/payouts"): _automatic_payouts,
    ("POST", "/_sandbox/payouts/{payout_id}/fail"): _fail_payout,
    ("POST", "/_sandbox/balance_adjustments"): _balance_adjustment,
    ("POST", "/_sandbox/account_fees"): _account_fee,
    ("POST", "/_sandbox/seed"): _seed,
    ("GET", "/_sandbox/webhooks"): _webhooks,
}


def create_stripe_app(state: StripeState, config: StripeConfig) -> Starlette:
    stand_in = StripeApp(state, config)
    control_paths: dict[str, list[str]] = {}
    for method, path in CONTROL_HANDLERS:
        control_paths.setdefault(path, []).append(method)
    # The API route first: it takes nearly every request.
    routes = [Route("/v1/{rest:path}", stand_in.api, methods=["GET", "POST", "DELETE"])]
    routes += [Route(path, stand_in.control_endpoint(path), methods=methods) for path, methods in control_paths.items()]
    app = Starlette(routes=routes)
    app.state.stand_in = stand_in
    return app
