"""The Starlette app: NetSuite's REST paths behind governance, faults and auth, plus /_sandbox control.

REST (OAuth 1.0a or Bearer; governed: concurrency limit, latency, faults):
    GET|POST            /services/rest/record/v1/{type}
    GET|PATCH|PUT|DELETE /services/rest/record/v1/{type}/{id | eid:X}   (PUT only with eid:)
    GET                 /services/rest/record/v1/{type}/{id}/{sublist}
    POST                /services/rest/record/v1/invoice/{id}/!transform/creditMemo
    POST                /services/rest/query/v1/suiteql?limit=&offset=  (Prefer: transient)
    POST                /services/rest/auth/oauth2/v1/token             (governed, no auth)

Control (no auth, never governed or faulted):
    GET  /_sandbox/stats          -> Stats.to_json(): {"requests", "by_method": {"GET": {"200": n}},
                                     "by_status": {"200": n}, "by_record_type": {"invoice": {"PUT": {"204": n}}},
                                     "writes_applied", "writes_by_record_type", "suiteql_queries", "tokens_issued",
                                     "auth_failures", "concurrency_rejections",
                                     "faults": {"error", "timeout", "lost_response"}, "in_flight", "peak_concurrency",
                                     "writes_held"}
                                     (a lost response counts under status "lost")
    POST /_sandbox/stats/reset    -> {"ok": true}
    GET|POST /_sandbox/config     -> the NetSuiteConfig as JSON (POST body: fields to change; 400 on unknown ones)
    GET  /_sandbox/records/{type} -> {"type", "count", "records": [record as GET ?expandSubResources=true shows it]}
    POST /_sandbox/records/{type} -> 201 + the record: create one directly (no auth/governance; same rules)
    PATCH /_sandbox/records/{type}/{id | eid:X} -> the record after changing fields as someone editing it in
                                     NetSuite would (same rules, totals re-derived; not counted as a write)
    POST /_sandbox/records/{type}/{id | eid:X}/duplicate -> 201 + a second record with the same external id,
                                     which the REST API refuses but an import or a hand-made copy can leave
    GET  /_sandbox/precision_violations -> [{"recordType", "id", "externalId", "field" ("item[1].amount"), "sent",
                                     "stored", "currency", "currencyId", "currencyPrecision", "at"}]: amounts saved
                                     with more decimals than their currency holds, which NetSuite rounded
    POST /_sandbox/oauth2/expire_tokens -> {"expired": n}: every bearer token issued so far stops working (as when
                                     its hour lapses or the M2M mapping is revoked); the next REST call with one
                                     gets 401 INVALID_LOGIN, and a new token must be fetched
    POST /_sandbox/reset          -> empty every writable type, forget nonces and bearer tokens
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..server import ResponseLostResponse
from . import suiteql
from .auth import TOKEN_PATH, BearerTokens, OAuth1Verifier, OAuth2Error, parse_form
from .config import AccountRules, NetSuiteConfig
from .errors import (
    CONCURRENCY_DETAIL,
    CONCURRENCY_LIMIT_EXCEEDED,
    INVALID_CONTENT,
    INVALID_PARAMETER,
    UNEXPECTED_ERROR,
    NetSuiteError,
    bad_request,
    error_body,
    invalid_login,
)
from .jsonio import DecimalJSONResponse, loads
from .schema import WRITABLE_TYPES, canonical_type
from .state import RECORD_PATH, NetSuiteState

REST_PREFIX = "/services/rest"
SUITEQL_NEEDS_PREFER_TRANSIENT = True
FAULT_STATUS = 500
Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Stats:
    """What the stand-in saw since the last reset (GET /_sandbox/stats)."""

    requests: int = 0
    by_method: dict[str, dict[str, int]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    by_status: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_record_type: dict[str, dict[str, dict[str, int]]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    )
    writes_applied: int = 0
    writes_by_record_type: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    suiteql_queries: int = 0
    tokens_issued: int = 0
    auth_failures: int = 0
    concurrency_rejections: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {"error": 0, "timeout": 0, "lost_response": 0})
    in_flight: int = 0
    peak_concurrency: int = 0
    writes_held: int = 0  # write requests waiting right now behind `hold_writes_after`

    def count(self, method: str, status: str, record_type: str | None) -> None:
        self.requests += 1
        self.by_method[method][status] += 1
        self.by_status[status] += 1
        if record_type:
            self.by_record_type[record_type][method][status] += 1

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.__dict__))


def _json_error(error: NetSuiteError) -> Response:
    return JSONResponse(error.body(), status_code=error.status)


def _record_type_of(request: Request) -> str | None:
    try:
        return canonical_type(request.path_params["record_type"]) if "record_type" in request.path_params else None
    except NetSuiteError:
        return None


class NetSuiteApp:
    """Owns the state, the config, the counters and the auth bookkeeping of one stand-in."""

    def __init__(self, state: NetSuiteState, config: NetSuiteConfig) -> None:
        self.state = state
        self.config = config
        self.stats = Stats()
        self.oauth1 = OAuth1Verifier()
        self.tokens = BearerTokens()
        self.random = random.Random(config.seed)

    # ---- governance, faults, auth: around every REST request ------------------------------------
    def governed(self, handler: Handler, authenticate: bool = True) -> Handler:
        async def endpoint(request: Request) -> Response:
            record_type = _record_type_of(request)
            response = await self._governed(request, handler, authenticate)
            status = "lost" if isinstance(response, ResponseLostResponse) else str(response.status_code)
            self.stats.count(request.method, status, record_type)
            return response

        return endpoint

    async def _governed(self, request: Request, handler: Handler, authenticate: bool) -> Response:
        stats, config = self.stats, self.config
        # Checked before authentication: NetSuite counts every request against the account's concurrency
        # limit (shared by SOAP, REST and RESTlets) and turns the excess away at once (wire-protocols.md §A).
        if stats.in_flight >= config.concurrency_limit:
            stats.concurrency_rejections += 1
            return JSONResponse(
                error_body(config.concurrency_status, CONCURRENCY_LIMIT_EXCEEDED, CONCURRENCY_DETAIL),
                status_code=config.concurrency_status,
            )
        stats.in_flight += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.in_flight)
        # `latency_ms` is NetSuite's response time, its own work included: the stand-in's processing is part of
        # it, not added to it, so `limit / latency` is the account's ceiling as NetSuite would impose it
        # (wire-protocols.md, Governance). Slower processing than the latency is simply slower.
        answer_at = time.monotonic() + config.latency_ms / 1000
        try:
            response = await self._answer(request, handler, authenticate)
        finally:
            remaining = answer_at - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
            stats.in_flight -= 1
        return response

    async def _answer(self, request: Request, handler: Handler, authenticate: bool) -> Response:
        config = self.config
        try:
            if authenticate:
                await self._authenticate(request)
            fault = self._draw_fault()
            if fault == "error":
                return JSONResponse(
                    error_body(FAULT_STATUS, UNEXPECTED_ERROR, "An unexpected error occurred (sandbox fault)."),
                    status_code=FAULT_STATUS,
                )
            if fault == "timeout":
                # A timeout still applies the request after the wait: the client gave up, the write happened anyway,
                # which is what an idempotent upsert has to survive.
                await asyncio.sleep(config.timeout_seconds)
            response = await self._handle(request, handler)
            # Lost after the handler ran: the record is written but the client never learns its id.
            return ResponseLostResponse() if fault == "lost_response" else response
        except NetSuiteError as error:
            if error.status == 401:
                self.stats.auth_failures += 1
            return _json_error(error)

    async def _handle(self, request: Request, handler: Handler) -> Response:
        try:
            return await handler(request)
        except NetSuiteError as error:
            return _json_error(error)

    def _draw_fault(self) -> str | None:
        config = self.config
        if not (config.error_rate or config.timeout_rate or config.lost_response_rate):
            return None
        draw = self.random.random()
        for name, rate in (
            ("error", config.error_rate),
            ("timeout", config.timeout_rate),
            ("lost_response", config.lost_response_rate),
        ):
            if draw < rate:
                self.stats.faults[name] += 1
                return name
            # One draw over consecutive bands: the rates are exclusive and add up, as configured.
            draw -= rate
        return None

    async def _authenticate(self, request: Request) -> None:
        authorization = request.headers.get("authorization", "")
        scheme = authorization.split(" ", 1)[0].lower()
        if scheme == "bearer":
            self.tokens.verify(authorization[7:].strip())
        elif scheme == "oauth":
            scope = request.scope
            self.oauth1.verify(
                self.config,
                request.method,
                scope["scheme"],
                # The base string uses the URL exactly as the client signed it (host as sent, raw path and query),
                # or the signatures would never match.
                _base_url(request).split("://", 1)[1],
                (scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
                scope.get("query_string", b"").decode("latin-1"),
                authorization,
                await request.body(),
                request.headers.get("content-type", ""),
            )
        else:
            raise invalid_login()

    # ---- record API ------------------------------------------------------------------------------
    def rules(self) -> AccountRules:
        return AccountRules.of(self.config)

    async def list_or_create(self, request: Request) -> Response:
        record_type = canonical_type(request.path_params["record_type"])
        if request.method == "POST":
            body = await _json_body(request)
            await self._hold_write()
            rid = self.state.create(record_type, body, self.rules())
            return self._written(request, record_type, rid)
        limit, offset = _paging(request, default_limit=1000)
        ids = self.state.list_ids(record_type)
        page = ids[offset : offset + limit]
        base = _base_url(request)
        return DecimalJSONResponse(
            {
                "links": [{"rel": "self", "href": f"{base}{RECORD_PATH}/{record_type}"}],
                "count": len(page),
                "hasMore": offset + len(page) < len(ids),
                "items": [
                    {"links": [{"rel": "self", "href": f"{base}{RECORD_PATH}/{record_type}/{rid}"}], "id": rid}
                    for rid in page
                ],
                "offset": offset,
                "totalResults": len(ids),
            }
        )

    async def instance(self, request: Request) -> Response:
        record_type = canonical_type(request.path_params["record_type"])
        key = request.path_params["key"]
        state = self.state
        if request.method == "GET":
            rid = state.resolve_key(record_type, key)
            expand = request.query_params.get("expandSubResources", "").lower() == "true"
            return DecimalJSONResponse(state.render(record_type, rid, _base_url(request), expand))
        if request.method == "DELETE":
            await self._hold_write()
            state.delete(record_type, key)
            self._count_write(record_type)
            return Response(status_code=204)
        body = await _json_body(request)
        # PUT is NetSuite's upsert and only works by external id; by internal id it is a PATCH.
        if request.method == "PUT" and not key.startswith("eid:"):
            raise bad_request(
                "PUT (upsert) needs an external id in the URL: .../{type}/eid:{externalId}", INVALID_PARAMETER
            )
        await self._hold_write()
        if request.method == "PATCH":
            return self._written(request, record_type, state.update(record_type, key, body, self.rules()))
        rid, _created = state.upsert(record_type, key[4:], body, self.rules())
        return self._written(request, record_type, rid)

    async def sublist(self, request: Request) -> Response:
        record_type = canonical_type(request.path_params["record_type"])
        rid = self.state.resolve_key(record_type, request.path_params["key"])
        body = self.state.render_sublist(record_type, rid, request.path_params["sublist"], _base_url(request))
        return DecimalJSONResponse(body)

    async def transform(self, request: Request) -> Response:
        """invoice -> creditMemo: a credit memo for the invoice's lines, createdFrom the invoice."""
        source_type = canonical_type(request.path_params["record_type"])
        target_type = canonical_type(request.path_params["target"])
        if (source_type, target_type) != ("invoice", "creditMemo"):
            raise bad_request(f"The sandbox cannot transform {source_type} into {target_type}.", INVALID_PARAMETER)
        overrides = await _json_body(request) if await request.body() else {}
        await self._hold_write()
        rid = self.state.resolve_key(source_type, request.path_params["key"])
        invoice = self.state.render(source_type, rid, "", expand=True)
        # What NetSuite's transform copies from the invoice: header references and the item lines; the
        # request body may override any of them.
        seed = {
            name: invoice[name]
            for name in ("entity", "subsidiary", "currency", "department", "class", "location")
            if name in invoice
        }
        seed["item"] = {
            "items": [
                {k: v for k, v in line.items() if k in ("item", "quantity", "rate", "amount", "description")}
                for line in invoice["item"]["items"]
            ]
        }
        seed["tranDate"] = invoice.get("tranDate")
        seed["createdFrom"] = {"id": rid}
        created = self.state.create(target_type, {**seed, **overrides}, self.rules())
        return self._written(request, target_type, created)

    async def _hold_write(self) -> None:
        """With `hold_writes_after` = N, a write arriving once N writes are applied waits until the knob is
        cleared: a test can stop a run after exactly N writes, however fast the machine is. Nothing awaits
        between this returning and the write, so no more than N ever get through."""
        limit = self.config.hold_writes_after
        if not limit or self.stats.writes_applied < limit:
            return
        self.stats.writes_held += 1
        try:
            while self.config.hold_writes_after and self.stats.writes_applied >= self.config.hold_writes_after:
                await asyncio.sleep(0.01)
        finally:
            self.stats.writes_held -= 1

    def _written(self, request: Request, record_type: str, rid: str) -> Response:
        self._count_write(record_type)
        location = f"{_base_url(request)}{RECORD_PATH}/{record_type}/{rid}"
        return Response(status_code=204, headers={"Location": location})

    def _count_write(self, record_type: str) -> None:
        self.stats.writes_applied += 1
        self.stats.writes_by_record_type[record_type] += 1

    async def run_suiteql(self, request: Request) -> Response:
        # NetSuite refuses SuiteQL over REST without `Prefer: transient` (wire-protocols.md §A, SuiteQL).
        if SUITEQL_NEEDS_PREFER_TRANSIENT and "transient" not in request.headers.get("prefer", "").lower():
            raise bad_request("SuiteQL requests need the header 'Prefer: transient'.", INVALID_PARAMETER)
        body = await _json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("q"), str):
            raise bad_request('The body must be {"q": "<SuiteQL query>"}.', INVALID_CONTENT)
        limit, offset = _paging(request, default_limit=suiteql.DEFAULT_PAGE_SIZE)
        self.stats.suiteql_queries += 1
        return DecimalJSONResponse(suiteql.execute(self.state, body["q"], limit, offset, _base_url(request)))

    async def issue_token(self, request: Request) -> Response:
        token_url = f"{_base_url(request)}{TOKEN_PATH}"
        try:
            answer = self.tokens.issue(self.config, parse_form(await request.body()), token_url)
        except OAuth2Error as error:
            return JSONResponse(error.body(), status_code=error.status)
        self.stats.tokens_issued += 1
        return JSONResponse(answer)

    # ---- /_sandbox control (no auth, no governance) ----------------------------------------------
    async def get_stats(self, request: Request) -> Response:
        return JSONResponse(self.stats.to_json())

    async def reset_stats(self, request: Request) -> Response:
        # Requests still running will decrement these when they finish; zeroing them would go negative.
        self.stats = Stats(in_flight=self.stats.in_flight, writes_held=self.stats.writes_held)
        return JSONResponse({"ok": True})

    async def config_endpoint(self, request: Request) -> Response:
        if request.method == "POST":
            try:
                changes = await request.json()
                if not isinstance(changes, dict):
                    raise ValueError("the body must be a JSON object of NetSuiteConfig fields")
                self.config.update(changes)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if "seed" in changes:
                self.random.seed(self.config.seed)
        return JSONResponse(self.config.to_json())

    async def records_endpoint(self, request: Request) -> Response:
        try:
            record_type = canonical_type(request.path_params["record_type"])
            if request.method == "POST":  # seed a record directly (e.g. a customer that pre-exists in NetSuite)
                rid = self.state.create(record_type, await _json_body(request), self.rules())
                return DecimalJSONResponse(
                    self.state.render(record_type, rid, _base_url(request), True), status_code=201
                )
        except NetSuiteError as error:
            return _json_error(error)
        records = self.state.rendered(record_type, _base_url(request))
        return DecimalJSONResponse({"type": record_type, "count": len(records), "records": records})

    # Changes made behind the pipeline's back, so that its after-sync checks can be seen failing.
    async def patch_record(self, request: Request) -> Response:
        try:
            record_type = canonical_type(request.path_params["record_type"])
            rid = self.state.update(record_type, request.path_params["key"], await _json_body(request), self.rules())
            return DecimalJSONResponse(self.state.render(record_type, rid, _base_url(request), True))
        except NetSuiteError as error:
            return _json_error(error)

    async def duplicate_record(self, request: Request) -> Response:
        try:
            record_type = canonical_type(request.path_params["record_type"])
            rid = self.state.duplicate(record_type, request.path_params["key"])
            return DecimalJSONResponse(self.state.render(record_type, rid, _base_url(request), True), status_code=201)
        except NetSuiteError as error:
            return _json_error(error)

    async def get_precision_violations(self, request: Request) -> Response:
        with self.state.lock:
            return DecimalJSONResponse(list(self.state.precision_violations))

    async def expire_tokens(self, request: Request) -> Response:
        return JSONResponse({"expired": self.tokens.expire_all()})

    async def reset_state(self, request: Request) -> Response:
        self.state.account_file = self.config.account_file  # reference lists reload from the configured file
        self.state.reset()
        self.oauth1 = OAuth1Verifier()
        self.tokens = BearerTokens()
        return JSONResponse({"ok": True, "writable_types": list(WRITABLE_TYPES)})

    def routes(self) -> list[Route]:
        record = f"{REST_PREFIX}/record/v1/{{record_type}}"
        return [
            Route(record, self.governed(self.list_or_create), methods=["GET", "POST"]),
            Route(f"{record}/{{key}}", self.governed(self.instance), methods=["GET", "PATCH", "PUT", "DELETE"]),
            Route(f"{record}/{{key}}/!transform/{{target}}", self.governed(self.transform), methods=["POST"]),
            Route(f"{record}/{{key}}/{{sublist}}", self.governed(self.sublist), methods=["GET"]),
            Route(suiteql.SUITEQL_PATH, self.governed(self.run_suiteql), methods=["POST"]),
            Route(TOKEN_PATH, self.governed(self.issue_token, authenticate=False), methods=["POST"]),
            Route("/_sandbox/stats", self.get_stats, methods=["GET"]),
            Route("/_sandbox/stats/reset", self.reset_stats, methods=["POST"]),
            Route("/_sandbox/config", self.config_endpoint, methods=["GET", "POST"]),
            Route("/_sandbox/records/{record_type}", self.records_endpoint, methods=["GET", "POST"]),
            Route("/_sandbox/records/{record_type}/{key}", self.patch_record, methods=["PATCH"]),
            Route("/_sandbox/records/{record_type}/{key}/duplicate", self.duplicate_record, methods=["POST"]),
            Route("/_sandbox/precision_violations", self.get_precision_violations, methods=["GET"]),
            Route("/_sandbox/oauth2/expire_tokens", self.expire_tokens, methods=["POST"]),
            Route("/_sandbox/reset", self.reset_state, methods=["POST"]),
        ]


def _base_url(request: Request) -> str:
    """scheme://host[:port] as the client addressed us (Location headers and links are absolute)."""
    scope = request.scope
    # The Host header, not the bound address: behind a proxy or a port map the client's view is what
    # Location headers must point at.
    host = request.headers.get("host") or "{}:{}".format(*scope["server"])
    return f"{scope['scheme']}://{host}"


async def _json_body(request: Request) -> Any:
    try:
        return loads(await request.body())
    except ValueError as exc:
        raise bad_request(f"Invalid JSON in the request body: {exc}", INVALID_CONTENT) from None


def _paging(request: Request, default_limit: int) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", default_limit))
        offset = int(request.query_params.get("offset", 0))
    except ValueError:
        raise bad_request("limit and offset must be integers.", INVALID_PARAMETER) from None
    suiteql.check_paging(limit, offset)
    return limit, offset


def create_netsuite_app(state: NetSuiteState, config: NetSuiteConfig) -> Starlette:
    """The stand-in as an ASGI app; `app.state.netsuite` is the NetSuiteApp (stats, config, state)."""
    netsuite = NetSuiteApp(state, config)
    app = Starlette(routes=netsuite.routes())
    app.state.netsuite = netsuite
    return app
