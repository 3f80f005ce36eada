"""The Events API, webhook endpoints, and webhook delivery (signed, at least once, optionally
duplicated and shuffled, retried with backoff), run as an asyncio task beside the API."""

from __future__ import annotations

import asyncio
import fnmatch
import hashlib
import hmac
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from sync_pipeline.sandbox.stripe.common import apply_update, metadata_change, string_changes
from sync_pipeline.sandbox.stripe.config import StripeConfig
from sync_pipeline.sandbox.stripe.errors import invalid_param, missing_param, resource_missing
from sync_pipeline.sandbox.stripe.listing import list_filtered, list_object, paginate
from sync_pipeline.sandbox.stripe.params import get_bool, get_list, get_str, merge_metadata
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx, StripeState

log = logging.getLogger(__name__)
DAY = 86400
MAX_TYPES = 20  # Stripe's limit on `types[]` in GET /v1/events
MAX_DELIVERY_LOG = 10_000  # bounds memory over a long soak run; only the recent attempts are inspected

# --- events ---------------------------------------------------------------------------------------


def _retention_floor(ctx: Ctx) -> int:
    # Stripe keeps events for 30 days only; older ones are gone from both list and retrieve, which is what
    # forces clients to fall back to listing objects by `created`. The events stay stored here, only hidden.
    return ctx.now - ctx.config.event_retention_days * DAY


@route("GET", "/v1/events/{id}")
def retrieve_event(ctx: Ctx, params: dict, event_id: str) -> dict:
    event = ctx.state.get("event", event_id)
    if event["created"] < _retention_floor(ctx):
        raise resource_missing("event", event_id)
    return event


@route("GET", "/v1/events")
def list_events(ctx: Ctx, params: dict) -> dict:
    coll = ctx.state.collections["event"]
    floor = _retention_floor(ctx)
    event_type = get_str(params, "type")
    types = [str(t) for t in get_list(params, "types")]
    if event_type and types:
        raise invalid_param("You may pass either type or types, not both.", "types")
    if len(types) > MAX_TYPES:
        raise invalid_param(f"You may pass at most {MAX_TYPES} types.", "types")
    # `type` accepts `*` wildcards (`invoice.*`); an exact type can use the index instead of a scan.
    if event_type and "*" not in event_type:
        return paginate(coll, params, "/v1/events", index=coll.index_for("type", event_type), min_created=floor)
    predicate: Callable[[dict[str, Any]], bool] | None = None
    if event_type:
        matcher = re.compile(fnmatch.translate(event_type))
        predicate = lambda event: matcher.match(event["type"]) is not None  # noqa: E731
    elif types:
        wanted = set(types)
        predicate = lambda event: event["type"] in wanted  # noqa: E731
    return paginate(coll, params, "/v1/events", predicate=predicate, min_created=floor)


# --- webhook endpoints ----------------------------------------------------------------------------


def _public(endpoint: dict[str, Any]) -> dict[str, Any]:
    """The secret is shown once, in the create response."""
    return {key: value for key, value in endpoint.items() if key != "secret"}


def _enabled_events(params: dict, required: bool) -> list[str] | None:
    events = [str(e) for e in get_list(params, "enabled_events")]
    if not events:
        if required:
            raise missing_param("enabled_events")
        return None
    return events


def _url(params: dict, required: bool) -> str | None:
    url = get_str(params, "url", required=required)
    if url is not None and not url.startswith(("http://", "https://")):
        raise invalid_param("Invalid URL: the URL must start with http:// or https://", "url", code="url_invalid")
    return url


@route("POST", "/v1/webhook_endpoints")
def create_webhook_endpoint(ctx: Ctx, params: dict) -> dict:
    endpoint_id = ctx.state.new_id("we")
    # A configured secret lets a receiver be set up before the endpoint exists; otherwise it is derived
    # from the seed so a replayed run gets the same secret.
    secret = (
        ctx.config.webhook_secret
        or "whsec_" + hashlib.sha256(f"{ctx.state.seed}:{endpoint_id}".encode()).hexdigest()[:32]
    )
    endpoint = {
        "id": endpoint_id,
        "object": "webhook_endpoint",
        "api_version": get_str(params, "api_version"),  # null: the account's default version, as in Stripe
        "application": None,
        "created": ctx.now,
        "description": get_str(params, "description"),
        "enabled_events": _enabled_events(params, required=True),
        "livemode": False,
        "metadata": merge_metadata({}, params),
        "status": "enabled",
        "url": _url(params, required=True),
        "secret": secret,
    }
    ctx.state.insert("webhook_endpoint", endpoint)
    return dict(endpoint)


@route("GET", "/v1/webhook_endpoints/{id}")
def retrieve_webhook_endpoint(ctx: Ctx, params: dict, endpoint_id: str) -> dict:
    return _public(ctx.state.get("webhook_endpoint", endpoint_id))


@route("POST", "/v1/webhook_endpoints/{id}")
def update_webhook_endpoint(ctx: Ctx, params: dict, endpoint_id: str) -> dict:
    endpoint = ctx.state.get("webhook_endpoint", endpoint_id)
    changes = {**metadata_change(endpoint, params), **string_changes(params, ("description",))}
    if "url" in params:
        changes["url"] = _url(params, required=True)
    events = _enabled_events(params, required=False)
    if events is not None:
        changes["enabled_events"] = events
    if "disabled" in params:
        changes["status"] = "disabled" if get_bool(params, "disabled") else "enabled"
    return _public(apply_update(ctx, endpoint, changes))


@route("DELETE", "/v1/webhook_endpoints/{id}")
def delete_webhook_endpoint(ctx: Ctx, params: dict, endpoint_id: str) -> dict:
    return ctx.state.remove("webhook_endpoint", endpoint_id)


@route("GET", "/v1/webhook_endpoints")
def list_webhook_endpoints(ctx: Ctx, params: dict) -> dict:
    page = list_filtered(ctx.state.collections["webhook_endpoint"], params, "/v1/webhook_endpoints")
    return list_object([_public(e) for e in page["data"]], page["url"], page["has_more"])


def wants(endpoint: dict[str, Any], event_type: str) -> bool:
    # An endpoint's `enabled_events` takes exact types or "*" alone; prefix wildcards are an Events API
    # feature only.
    return endpoint["status"] == "enabled" and any(
        enabled == "*" or enabled == event_type for enabled in endpoint["enabled_events"]
    )


# --- delivery -------------------------------------------------------------------------------------


def sign(payload: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme: `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<payload>">` keyed by the whsec_ secret.

    The key is the whole `whsec_...` string as UTF-8 (not base64-decoded), as stripe-python's `_webhook.py`
    verifies it; the timestamp is inside the MAC so a replayed body fails the receiver's 300 s tolerance.
    """
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


class WebhookDispatcher:
    """Runs in the server's event loop; the API only appends events to `state.outbox`.

    One worker per endpoint sends in order; a failed attempt is re-queued after a backoff
    instead of blocking the ones behind it, so delivery is at least once and, like Stripe's,
    not strictly ordered.
    """

    POLL_SECONDS = 0.05

    def __init__(self, state: StripeState, config: StripeConfig) -> None:
        self.state = state
        self.config = config
        self.random = random.Random(config.seed)
        self._task: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None
        self._client: httpx.AsyncClient | None = None
        self._queues: dict[str, asyncio.Queue] = {}
        self._workers: dict[str, asyncio.Task] = {}
        self._background: set[asyncio.Task] = set()
        self.in_flight = 0

    def ensure_running(self) -> None:
        """Start on first use from inside the loop (uvicorn runs these apps without lifespan)."""
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._loop = asyncio.get_running_loop()
            self._task = self._loop.create_task(self._run())

    def shutdown(self, timeout: float = 5.0) -> None:
        """From another thread, before the server stops: cancel delivery and close the HTTP client."""
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed() or not loop.is_running():
            return
        try:
            asyncio.run_coroutine_threadsafe(self._close(), loop).result(timeout)
        except Exception:  # noqa: BLE001 - shutting down anyway
            log.debug("webhook dispatcher did not close cleanly", exc_info=True)

    async def _close(self) -> None:
        tasks = [t for t in (self._task, *self._workers.values(), *self._background) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = None
        self._queues.clear()
        self._workers.clear()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def notify(self) -> None:
        if self._wake is not None and self.state.outbox:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        self._client = httpx.AsyncClient(timeout=self.config.webhook_timeout_seconds)
        while True:
            # The timeout is a safety net: events appended without a `notify()` (or before the loop had
            # its event) are still picked up within POLL_SECONDS.
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.POLL_SECONDS)
            except TimeoutError:
                pass
            self._wake.clear()
            batch = []
            while self.state.outbox:
                batch.append(self.state.outbox.popleft())
            if batch:
                self._dispatch(batch)

    def _dispatch(self, events: list[dict[str, Any]]) -> None:
        endpoints = [e for e in self.state.collections["webhook_endpoint"].objects.values() if e["status"] == "enabled"]
        if not endpoints:
            return
        # Stripe does not guarantee delivery order; shuffling within a small window reorders events that happen
        # close together (e.g. invoice.paid before invoice.finalized) without making distant ones arrive
        # hours out of place. Seeded, so a failing order can be replayed.
        if self.config.webhook_shuffle:
            window = max(self.config.webhook_shuffle_window, 1)
            for start in range(0, len(events), window):
                chunk = events[start : start + window]
                self.random.shuffle(chunk)
                events[start : start + window] = chunk
        for event in events:
            targets = [endpoint for endpoint in endpoints if wants(endpoint, event["type"])]
            if not targets:
                continue
            event["pending_webhooks"] = len(targets)  # as on Stripe's event: endpoints yet to acknowledge it
            # Serialized once: every copy and retry carries the same bytes, and the signature is over those raw
            # bytes. Stripe sends pretty-printed JSON, so a receiver that verifies a re-serialized body fails
            # here as it would against Stripe.
            payload = orjson.dumps(event, option=orjson.OPT_INDENT_2)
            for endpoint in targets:
                # Stripe documents that an endpoint may receive the same event more than once.
                copies = 2 if self.random.random() < self.config.webhook_duplicate_rate else 1
                for _ in range(copies):
                    self._enqueue(endpoint["id"], (event, payload, 1))

    def _enqueue(self, endpoint_id: str, job: tuple[dict[str, Any], bytes, int]) -> None:
        queue = self._queues.get(endpoint_id)
        if queue is None:
            queue = self._queues[endpoint_id] = asyncio.Queue()
            self._workers[endpoint_id] = asyncio.get_running_loop().create_task(self._worker(endpoint_id, queue))
        self.in_flight += 1
        queue.put_nowait(job)

    async def _worker(self, endpoint_id: str, queue: asyncio.Queue) -> None:
        while True:
            event, payload, attempt = await queue.get()
            try:
                await self._deliver(endpoint_id, event, payload, attempt)
            except Exception:  # noqa: BLE001 - a delivery bug must not kill the worker
                log.exception("webhook delivery crashed")
            finally:
                self.in_flight -= 1

    async def _deliver(self, endpoint_id: str, event: dict[str, Any], payload: bytes, attempt: int) -> None:
        endpoint = self.state.collections["webhook_endpoint"].get(endpoint_id)
        # Checked at each attempt, not at enqueue: disabling or deleting an endpoint stops its pending retries,
        # as it does on Stripe.
        if endpoint is None or endpoint["status"] != "enabled":
            return
        # Signed with wall-clock time (not the sandbox clock): receivers check it against theirs.
        header = sign(payload, endpoint["secret"], int(time.time()))
        status: int | None = None
        error: str | None = None
        assert self._client is not None
        try:
            response = await self._client.post(
                endpoint["url"],
                content=payload,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": header,
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
            status = response.status_code
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        # Only 2xx acknowledges: Stripe treats redirects and every other status as a failure to retry
        # (httpx does not follow redirects by default, so a 3xx lands here as itself).
        delivered = status is not None and 200 <= status < 300
        self._record(endpoint, event, attempt, status, error, delivered)
        if delivered:
            event["pending_webhooks"] = max(event["pending_webhooks"] - 1, 0)
        elif attempt < self.config.webhook_max_attempts:
            self._retry_later(endpoint_id, (event, payload, attempt + 1))

    def _retry_later(self, endpoint_id: str, job: tuple[dict[str, Any], bytes, int]) -> None:
        # Exponential backoff like Stripe's (which spreads retries over days in live mode), scaled down: the
        # second attempt waits the base delay, each later one twice the one before.
        delay = self.config.webhook_retry_base_seconds * 2 ** (job[2] - 2)

        async def later() -> None:
            await asyncio.sleep(delay)
            self._enqueue(endpoint_id, job)
            self.in_flight -= 1

        # A sleeping retry counts as in flight (handed over to `_enqueue`'s count once re-queued), so
        # `pending()` does not report an idle dispatcher while a redelivery is still due.
        self.in_flight += 1
        task = asyncio.get_running_loop().create_task(later())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _record(
        self, endpoint: dict, event: dict, attempt: int, status: int | None, error: str | None, delivered: bool
    ) -> None:
        log_ = self.state.webhook_deliveries
        log_.append(
            {
                "event": event["id"],
                "type": event["type"],
                "endpoint": endpoint["id"],
                "url": endpoint["url"],
                "attempt": attempt,
                "status": status,
                "error": error,
                "delivered": delivered,
                "at": time.time(),
            }
        )
        if len(log_) > MAX_DELIVERY_LOG:
            del log_[: len(log_) - MAX_DELIVERY_LOG]

    def pending(self) -> int:
        return len(self.state.outbox) + self.in_flight
