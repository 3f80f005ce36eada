"""The Starlette app: Salesforce REST (sobjects, collections, SOQL), SOAP login, and /_sandbox control.

Paths and bodies follow what simple-salesforce sends and reads (see wire-protocols.md §B).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import xml.etree.ElementTree as ElementTree
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any
from xml.sax.saxutils import escape as xml_escape

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..server import ResponseLostResponse
from . import soql
from .schema import (
    API_VERSIONS,
    COLLECTION_LIMIT,
    DEFAULT_API_VERSION,
    OBJECTS,
    OBJECTS_BY_PREFIX,
    ORG_ID,
    UPSERT_BODY_SINCE_VERSION,
    ObjectSpec,
    SalesforceApiError,
    bad_request,
    make_id,
    normalize_id,
    not_found,
    to_json_value,
)
from .state import MultipleMatches, Record, SalesforceState, object_spec

USER_ID = "0055g00000SbxIntAAA"
# Salesforce drops a query cursor left idle for 15 minutes; its nextRecordsUrl then answers
# INVALID_QUERY_LOCATOR.
CURSOR_IDLE_SECONDS = 15 * 60
USAGE_WINDOW_SECONDS = 24 * 60 * 60
_VERSION = re.compile(r"^\d{1,3}\.\d$")
_JSON_TYPE = "application/json;charset=UTF-8"


@dataclass
class SalesforceConfig:
    """Behaviour knobs; all realistic or off by default. Changeable at run time via POST /_sandbox/config."""

    latency_ms: float = 0
    seed: int = 0
    query_batch_size: int = 2000
    daily_request_limit: int = 15000
    session_timeout_seconds: float = 2 * 60 * 60
    # Salesforce keeps at most 10 open query cursors per user; opening another drops the oldest.
    max_open_cursors: int = 10
    username: str = "integration@sync-pipeline.sandbox"
    password: str = "sandbox-password"
    security_token: str = "SandboxSecurityToken1"
    # False: external-id fields accept duplicate values (an org whose admin did not tick "unique").
    unique_external_ids: bool = True
    server_error_rate: float = 0
    lost_response_rate: float = 0
    # Where start-up writes the throw-away CA and server certificate (a temporary directory when None).
    tls_dir: str | None = None


@dataclass
class SalesforceStats:
    requests: int = 0
    by_method: Counter = field(default_factory=Counter)
    by_status: Counter = field(default_factory=Counter)
    by_operation: Counter = field(default_factory=Counter)
    writes: int = 0
    records_written: int = 0
    in_flight: int = 0
    peak_concurrency: int = 0
    logins: int = 0
    failed_logins: int = 0
    injected_errors: int = 0
    lost_responses: int = 0

    def as_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it rebuilds a Counter from (key, count) pairs, counting the pairs.
        values = {knob.name: getattr(self, knob.name) for knob in fields(self)}
        return {key: dict(value) if isinstance(value, Counter) else value for key, value in values.items()}


class RollingUsage:
    """API requests in the last 24 hours, counted in one-minute buckets."""

    def __init__(self) -> None:
        self._buckets: deque[list[int]] = deque()
        self._total = 0

    def used(self, now: float) -> int:
        # The allocation is a rolling 24 hours, not a calendar day: requests drop out minute by minute.
        oldest_minute = int((now - USAGE_WINDOW_SECONDS) // 60)
        while self._buckets and self._buckets[0][0] <= oldest_minute:
            self._total -= self._buckets.popleft()[1]
        return self._total

    def add(self, now: float) -> None:
        minute = int(now // 60)
        if self._buckets and self._buckets[-1][0] == minute:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([minute, 1])
        self._total += 1


@dataclass
class _Cursor:
    rows: list[Record]
    version: str
    endpoint: str
    batch_size: int
    last_used: float


class _Org:
    """What the app holds besides the state: config, stats, usage, open query cursors, randomness."""

    def __init__(self, state: SalesforceState, config: SalesforceConfig) -> None:
        self.state = state
        self.config = config
        self.stats = SalesforceStats()
        self.usage = RollingUsage()
        self.cursors: OrderedDict[str, _Cursor] = OrderedDict()
        self.cursor_count = 0
        self.random = random.Random(config.seed)

    def limit_header(self) -> dict[str, str]:
        used = self.usage.used(time.time())
        return {"Sforce-Limit-Info": f"api-usage={used}/{self.config.daily_request_limit}"}

    def open_cursor(self, cursor: _Cursor) -> str:
        now = time.time()
        for locator in [key for key, old in self.cursors.items() if now - old.last_used > CURSOR_IDLE_SECONDS]:
            del self.cursors[locator]
        self.cursor_count += 1
        locator = make_id("01g", self.cursor_count)
        self.cursors[locator] = cursor
        while len(self.cursors) > max(1, self.config.max_open_cursors):
            self.cursors.popitem(last=False)
        return locator


@dataclass
class Call:
    """One API request, as the handlers see it."""

    request: Request
    org: _Org
    body: bytes

    @property
    def version(self) -> str:
        return self.request.path_params.get("version", DEFAULT_API_VERSION)

    @property
    def state(self) -> SalesforceState:
        return self.org.state

    def param(self, name: str) -> str:
        return self.request.path_params[name]

    def query(self, name: str, default: str | None = None) -> str | None:
        return self.request.query_params.get(name, default)

    def flag(self, name: str) -> bool:
        return (self.query(name) or "").lower() == "true"

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null", parse_float=Decimal)
        except ValueError as error:
            raise bad_request("JSON_PARSER_ERROR", f"Unexpected character in request body: {error}") from None

    @property
    def enforce_unique(self) -> bool:
        return self.org.config.unique_external_ids


Handler = Callable[[Call], tuple[int, Any]]


def _json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    if status == 204:
        return Response(status_code=204, headers=headers)
    content = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(content, status_code=status, media_type=_JSON_TYPE, headers=headers)


def _method_not_allowed(method: str, allowed: list[str]) -> SalesforceApiError:
    return SalesforceApiError(
        405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}"
    )


def api_endpoint(operation: str, handlers: dict[str, Handler], writes: bool = False, authenticated: bool = True):
    """An endpoint of the real API: auth, daily limit, latency, faults, stats, the limit header."""

    async def endpoint(request: Request) -> Response:
        org: _Org = request.app.state.org
        stats = org.stats
        stats.requests += 1
        stats.by_method[request.method] += 1
        stats.by_operation[operation] += 1
        stats.in_flight += 1
        stats.peak_concurrency = max(stats.peak_concurrency, stats.in_flight)
        response: Response
        try:
            response = await _answer(request, org, handlers, writes, authenticated)
        finally:
            stats.in_flight -= 1
        stats.by_status["lost" if isinstance(response, ResponseLostResponse) else str(response.status_code)] += 1
        return response

    return endpoint


async def _answer(
    request: Request, org: _Org, handlers: dict[str, Handler], writes: bool, authenticated: bool
) -> Response:
    try:
        handler = handlers.get(request.method)
        version = request.path_params.get("version")
        if version is not None and not _VERSION.match(version):
            raise not_found()
        if authenticated:
            _authenticate(request, org)
        if handler is None:
            raise _method_not_allowed(request.method, sorted(handlers))
        if org.config.latency_ms > 0:
            await asyncio.sleep(org.config.latency_ms / 1000)
        if org.config.server_error_rate > 0 and org.random.random() < org.config.server_error_rate:
            org.stats.injected_errors += 1
            raise SalesforceApiError(
                500,
                "UNKNOWN_EXCEPTION",
                "An unexpected error occurred. Please include this ErrorId if you contact support: "
                f"{org.random.randrange(10**9)}-{org.random.randrange(10**5)} (-{org.random.randrange(10**9)})",
            )
        body = await request.body() if request.method in ("POST", "PATCH", "PUT") else b""
        status, payload = handler(Call(request, org, body))
        if writes and request.method != "GET":
            org.stats.writes += 1
            if org.config.lost_response_rate > 0 and org.random.random() < org.config.lost_response_rate:
                # Applied, but the client never hears so: it must retry idempotently.
                org.stats.lost_responses += 1
                return ResponseLostResponse()
        return _json_response(status, payload, org.limit_header())
    except MultipleMatches as error:
        urls = [
            OBJECTS[error.sobject].url(request.path_params.get("version", DEFAULT_API_VERSION), rid)
            for rid in error.record_ids
        ]
        # 300 Multiple Choices: the body lists the URLs of the records the external id matched.
        return _json_response(300, urls, org.limit_header())
    except SalesforceApiError as error:
        return _json_response(error.status, error.rest_body(), org.limit_header() if authenticated else None)


def _authenticate(request: Request, org: _Org) -> None:
    header = request.headers.get("authorization", "")
    scheme, _, session_id = header.partition(" ")
    valid = scheme.lower() in ("bearer", "oauth") and org.state.session_valid(
        session_id.strip(), org.config.session_timeout_seconds
    )
    if not valid:
        raise SalesforceApiError(401, "INVALID_SESSION_ID", "Session expired or invalid")
    now = time.time()
    # Checked after the session: an invalid session is a 401 whatever the usage, and counts nothing.
    if org.usage.used(now) >= org.config.daily_request_limit:
        raise SalesforceApiError(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
    org.usage.add(now)


# ------------------------------------------------------------------------------ record shapes


def record_json(spec: ObjectSpec, record: Record, version: str, field_names: list[str] | None = None) -> Record:
    output: Record = {"attributes": {"type": spec.name, "url": spec.url(version, record["Id"])}}
    names = field_names if field_names is not None else list(spec.fields)
    for name in names:
        output[name] = to_json_value(record.get(name))
    return output


def _field_list(spec: ObjectSpec, text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = []
    for raw in text.split(","):
        field_spec = spec.field(raw.strip())
        if field_spec is None:
            raise bad_request("INVALID_FIELD", f"No such column '{raw.strip()}' on entity '{spec.name}'")
        names.append(field_spec.name)
    return names


def _save_result(record_id: str | None, **extra: Any) -> Record:
    return {"id": record_id, "success": True, "errors": [], **extra}


def _save_failure(error: SalesforceApiError, record_id: str | None = None) -> Record:
    result: Record = {"success": False, "errors": [error.save_error()]}
    if record_id is not None:
        result = {"id": record_id, **result}
    return result


# ------------------------------------------------------------------------------ REST: sobjects


def list_versions(call: Call) -> tuple[int, Any]:
    return 200, [
        {"label": f"API {version}", "url": f"/services/data/v{version}", "version": version} for version in API_VERSIONS
    ]


def list_resources(call: Call) -> tuple[int, Any]:
    base = f"/services/data/v{call.version}"
    names = ("sobjects", "query", "queryAll", "composite", "limits")
    return 200, {name: f"{base}/{name}" for name in names}


def get_limits(call: Call) -> tuple[int, Any]:
    limit = call.org.config.daily_request_limit
    used = call.org.usage.used(time.time())
    return 200, {"DailyApiRequests": {"Max": limit, "Remaining": max(0, limit - used)}}


def describe_global(call: Call) -> tuple[int, Any]:
    return 200, {
        "encoding": "UTF-8",
        "maxBatchSize": COLLECTION_LIMIT,
        "sobjects": [spec.summary(call.version) for spec in OBJECTS.values()],
    }


def describe_object(call: Call) -> tuple[int, Any]:
    return 200, object_spec(call.param("sobject")).describe(call.version)


def object_info(call: Call) -> tuple[int, Any]:
    return 200, {"objectDescribe": object_spec(call.param("sobject")).summary(call.version), "recentItems": []}


def create_record(call: Call) -> tuple[int, Any]:
    spec = object_spec(call.param("sobject"))
    record_id = call.state.insert(spec.name, call.json(), enforce_unique=call.enforce_unique)
    call.org.stats.records_written += 1
    return 201, {"id": record_id, "success": True, "errors": []}


def _existing(call: Call, spec: ObjectSpec, record_id: str) -> Record:
    record = call.state.get(spec.name, record_id)
    if record is None:
        raise not_found()
    return record


def get_record(call: Call) -> tuple[int, Any]:
    spec = object_spec(call.param("sobject"))
    record_id = call.param("record_id")
    if normalize_id(record_id) is None:
        raise not_found(f"Provided external ID field does not exist or is not accessible: {record_id}")
    record = _existing(call, spec, record_id)
    return 200, record_json(spec, record, call.version, _field_list(spec, call.query("fields")))


def update_record(call: Call) -> tuple[int, Any]:
    spec = object_spec(call.param("sobject"))
    call.state.update(spec.name, call.param("record_id"), call.json(), enforce_unique=call.enforce_unique)
    call.org.stats.records_written += 1
    return 204, None


def delete_record(call: Call) -> tuple[int, Any]:
    spec = object_spec(call.param("sobject"))
    call.state.delete(spec.name, call.param("record_id"))
    call.org.stats.records_written += 1
    return 204, None


def _match_one(call: Call) -> tuple[ObjectSpec, str]:
    """The single record an external-id path names: 404 when none, 300 (MultipleMatches) when several."""
    spec = object_spec(call.param("sobject"))
    field_name = call.param("field")
    field_spec = spec.field(field_name)
    if field_spec is None or not (field_spec.external_id or field_spec.name == "Id"):
        raise not_found(f"Provided external ID field does not exist or is not accessible: {field_name}")
    matches = call.state.lookup(spec, field_spec, call.param("value"))
    if len(matches) > 1:
        raise MultipleMatches(spec.name, field_spec.name, matches)
    if not matches:
        raise not_found()
    return spec, matches[0]


def get_by_external_id(call: Call) -> tuple[int, Any]:
    with call.state.lock:
        spec, record_id = _match_one(call)
        record = _existing(call, spec, record_id)
    return 200, record_json(spec, record, call.version, _field_list(spec, call.query("fields")))


def delete_by_external_id(call: Call) -> tuple[int, Any]:
    with call.state.lock:
        spec, record_id = _match_one(call)
        call.state.delete(spec.name, record_id)
    call.org.stats.records_written += 1
    return 204, None


def upsert_record(call: Call) -> tuple[int, Any]:
    record_id, created = call.state.upsert(
        call.param("sobject"),
        call.param("field"),
        call.param("value"),
        call.json(),
        update_only=call.flag("updateOnly"),
        enforce_unique=call.enforce_unique,
    )
    call.org.stats.records_written += 1
    if created:
        return 201, _save_result(record_id, created=True)
    # Before API 46.0 an upsert that updated answered 204 with no body; since then 200 and created=false.
    if float(call.version) < UPSERT_BODY_SINCE_VERSION:
        return 204, None
    return 200, _save_result(record_id, created=False)


# ------------------------------------------------------------------------------ REST: SOQL


def run_query(call: Call, include_deleted: bool) -> tuple[int, Any]:
    query = soql.parse(call.query("q") or "")
    rows = soql.execute(call.state, query, include_deleted, call.version)
    if query.count_only:
        return 200, {"totalSize": len(rows), "done": True, "records": []}
    batch_size = _batch_size(call)
    endpoint = "queryAll" if include_deleted else "query"
    cursor = _Cursor(rows, call.version, endpoint, batch_size, time.time())
    locator = call.org.open_cursor(cursor) if len(rows) > batch_size else ""
    return 200, _batch(cursor, locator, 0)


def _batch_size(call: Call) -> int:
    size = max(1, call.org.config.query_batch_size)
    options = call.request.headers.get("sforce-query-options", "")
    match = re.search(r"batchSize=(\d+)", options)
    if match:
        # Sforce-Query-Options batchSize is clamped to 200..2000 and only ever lowers the batch.
        # https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/headers_queryoptions.htm
        size = min(size, max(200, min(2000, int(match.group(1)))))
    return size


def _batch(cursor: _Cursor, locator: str, offset: int) -> dict[str, Any]:
    end = offset + cursor.batch_size
    body: dict[str, Any] = {"totalSize": len(cursor.rows), "done": end >= len(cursor.rows)}
    if not body["done"]:
        # A path, not a URL, as Salesforce sends it: <locator>-<offset of the next batch>.
        body["nextRecordsUrl"] = f"/services/data/v{cursor.version}/{cursor.endpoint}/{locator}-{end}"
    body["records"] = cursor.rows[offset:end]
    return body


def query_more(call: Call) -> tuple[int, Any]:
    locator, _, offset_text = call.param("locator").rpartition("-")
    cursor = call.org.cursors.get(locator)
    # Only offsets this cursor handed out are valid: a made-up one is refused as Salesforce does.
    if cursor is None or not offset_text.isdigit() or int(offset_text) % cursor.batch_size:
        raise bad_request("INVALID_QUERY_LOCATOR", "invalid query locator")
    cursor.last_used = time.time()
    call.org.cursors.move_to_end(locator)
    return 200, _batch(cursor, locator, int(offset_text))


# ------------------------------------------------------------------------------ REST: collections


def _collection_records(call: Call) -> tuple[list[Record], bool]:
    body = call.json()
    if not isinstance(body, dict) or not isinstance(body.get("records"), list):
        raise bad_request("JSON_PARSER_ERROR", "The request body must be an object with a records list")
    records = body["records"]
    _check_collection_size(len(records))
    return records, bool(body.get("allOrNone", False))


def _check_collection_size(count: int) -> None:
    if count > COLLECTION_LIMIT:
        raise bad_request(
            "EXCEEDED_ID_LIMIT",
            f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records into this call",
        )


def _record_type(record: Any) -> str:
    attributes = record.get("attributes") if isinstance(record, dict) else None
    sobject = attributes.get("type") if isinstance(attributes, dict) else None
    if not sobject:
        raise bad_request("INVALID_TYPE", "Must send a concrete entity type.")
    return object_spec(sobject).name


def _apply_each(
    call: Call,
    records: list[Any],
    all_or_none: bool,
    apply: Callable[[Any], Record],
    failure_id: Callable[[Any], str | None],
) -> tuple[int, Any]:
    """Run `apply` per record (a SaveResult each); with allOrNone, one failure undoes them all."""
    results: list[Record] = []
    with call.state.savepoint() as point:
        for record in records:
            try:
                results.append(apply(record))
            except SalesforceApiError as error:
                results.append(_save_failure(error, failure_id(record)))
        failed = any(not result["success"] for result in results)
        # allOrNone: the failed records keep their own errors, every other one is rolled back and reported
        # ALL_OR_NONE_OPERATION_ROLLED_BACK; the request itself still answers 200.
        # (Salesforce REST API Developer Guide: sObject Collections.)
        if all_or_none and failed:
            call.state.rollback(point)
            rolled_back = SalesforceApiError(
                400,
                "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                "Record rolled back because not all records were valid and the request was using AllOrNone header",
            )
            results = [
                result if not result["success"] else _save_failure(rolled_back, failure_id(record))
                for record, result in zip(records, results, strict=True)
            ]
    call.org.stats.records_written += sum(1 for result in results if result["success"])
    return 200, results


def create_collection(call: Call) -> tuple[int, Any]:
    records, all_or_none = _collection_records(call)

    def create(record: Any) -> Record:
        return _save_result(call.state.insert(_record_type(record), record, enforce_unique=call.enforce_unique))

    return _apply_each(call, records, all_or_none, create, lambda record: None)


def _record_id(record: Any) -> str | None:
    if not isinstance(record, dict):
        return None
    return next((value for key, value in record.items() if key.lower() == "id"), None)


def update_collection(call: Call) -> tuple[int, Any]:
    records, all_or_none = _collection_records(call)

    def update(record: Any) -> Record:
        sobject = _record_type(record)
        record_id = _record_id(record)
        if not record_id:
            raise bad_request("MISSING_ARGUMENT", "Id not specified in an update call")
        body = {key: value for key, value in record.items() if key.lower() != "id"}
        call.state.update(sobject, record_id, body, enforce_unique=call.enforce_unique)
        return _save_result(normalize_id(record_id))

    return _apply_each(call, records, all_or_none, update, _record_id)


def upsert_collection(call: Call) -> tuple[int, Any]:
    records, all_or_none = _collection_records(call)
    spec = object_spec(call.param("sobject"))
    field_spec = spec.field(call.param("field"))
    if field_spec is None or not (field_spec.external_id or field_spec.name == "Id"):
        raise bad_request(
            "INVALID_FIELD", f"Provided external ID field does not exist or is not accessible: {call.param('field')}"
        )
    values = [_external_value(record, field_spec.name) for record in records]
    # The same external id twice in one request fails both records: Salesforce cannot order them.
    repeated = {value for value, count in Counter(values).items() if value is not None and count > 1}

    def upsert(record: Any) -> Record:
        if _record_type(record) != spec.name:
            raise bad_request("INVALID_TYPE", f"Record type must be {spec.name} for this upsert")
        value = _external_value(record, field_spec.name)
        if value is None:
            raise bad_request("MISSING_ARGUMENT", f"{field_spec.name} not specified", [field_spec.name])
        if value in repeated:
            raise bad_request("DUPLICATE_EXTERNAL_ID", f"Duplicate external id specified: {value}", [field_spec.name])
        record_id, created = call.state.upsert(
            spec.name, field_spec.name, value, record, enforce_unique=call.enforce_unique
        )
        return _save_result(record_id, created=created)

    return _apply_each(call, records, all_or_none, upsert, lambda record: None)


def _external_value(record: Any, field_name: str) -> str | None:
    if not isinstance(record, dict):
        return None
    value = next((value for key, value in record.items() if key.lower() == field_name.lower()), None)
    return None if value is None else str(value)


def retrieve_collection(call: Call) -> tuple[int, Any]:
    spec = object_spec(call.param("sobject"))
    if call.request.method == "POST":
        body = call.json() or {}
        ids, names = body.get("ids") or [], body.get("fields") or []
    else:
        ids = [part for part in (call.query("ids") or "").split(",") if part]
        names = [part for part in (call.query("fields") or "").split(",") if part]
    if not ids or not names:
        raise bad_request("MISSING_ARGUMENT", "Both ids and fields are required")
    field_names = _field_list(spec, ",".join(names))
    output = []
    for record_id in ids:
        record = call.state.get(spec.name, record_id)
        output.append(record_json(spec, record, call.version, field_names) if record else None)
    return 200, output


def delete_collection(call: Call) -> tuple[int, Any]:
    ids = [part for part in (call.query("ids") or "").split(",") if part]
    if not ids:
        raise bad_request("MISSING_ARGUMENT", "ids is required")
    _check_collection_size(len(ids))

    def delete(record_id: str) -> Record:
        normalized = normalize_id(record_id)
        spec = OBJECTS_BY_PREFIX.get((normalized or "")[:3])
        if spec is None:
            raise bad_request("MALFORMED_ID", f"malformed id {record_id}")
        call.state.delete(spec.name, record_id)
        return _save_result(normalized)

    return _apply_each(call, ids, call.flag("allOrNone"), delete, lambda record_id: record_id)


_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


def not_a_resource(call: Call) -> tuple[int, Any]:
    raise not_found()


# ------------------------------------------------------------------------------ SOAP login

_SOAP_ENVELOPE = (
    '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"'
    ' xmlns="urn:partner.soap.sforce.com" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    ' xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>'
)
_INVALID_LOGIN = "Invalid username, password, security token; or user locked out."


def _soap_response(body: str, status: int) -> Response:
    return Response(_SOAP_ENVELOPE.format(body=body), status_code=status, media_type="text/xml;charset=UTF-8")


def _soap_fault(code: str, message: str) -> Response:
    return _soap_response(
        f"<soapenv:Fault><faultcode>sf:{code}</faultcode><faultstring>{code}: {xml_escape(message)}</faultstring>"
        f'<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{xml_escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>"
        "</soapenv:Fault>",
        500,
    )


def _login_credentials(body: bytes) -> tuple[str, str] | None:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    found: dict[str, str] = {}
    for element in root.iter():
        local = element.tag.rsplit("}", 1)[-1]
        if local in ("username", "password"):
            found[local] = element.text or ""
    if set(found) != {"username", "password"}:
        return None
    return found["username"], found["password"]


async def soap_login(request: Request) -> Response:
    org: _Org = request.app.state.org
    credentials = _login_credentials(await request.body())
    config = org.config
    if credentials is None:
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    username, password = credentials
    # The SOAP login takes the password with the security token appended (unless the IP is trusted).
    if username != config.username or password != config.password + config.security_token:
        org.stats.failed_logins += 1
        return _soap_fault("INVALID_LOGIN", _INVALID_LOGIN)
    org.stats.logins += 1
    session_id = org.state.new_session()
    version = request.path_params["version"]
    base = str(request.base_url).rstrip("/")
    org15 = ORG_ID[:15]
    return _soap_response(
        "<loginResponse><result>"
        f"<metadataServerUrl>{base}/services/Soap/m/{version}/{org15}</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{base}/services/Soap/u/{version}/{org15}</serverUrl>"
        f"<sessionId>{session_id}</sessionId><userId>{USER_ID}</userId>"
        "<userInfo><currencySymbol>$</currencySymbol><organizationId>"
        f"{ORG_ID}</organizationId><organizationMultiCurrency>true</organizationMultiCurrency>"
        "<organizationName>Sync Pipeline Sandbox</organizationName><orgDefaultCurrencyIsoCode>USD"
        f"</orgDefaultCurrencyIsoCode><sessionSecondsValid>{int(config.session_timeout_seconds)}"
        f"</sessionSecondsValid><userEmail>{xml_escape(username)}</userEmail><userFullName>Integration User"
        f"</userFullName><userId>{USER_ID}</userId><userName>{xml_escape(username)}</userName>"
        "</userInfo></result></loginResponse>",
        200,
    )


# ------------------------------------------------------------------------------ /_sandbox control


def _sandbox_json(body: Any, status: int = 200) -> Response:
    return _json_response(status, body)


async def sandbox_stats(request: Request) -> Response:
    org: _Org = request.app.state.org
    return _sandbox_json(
        {
            **org.stats.as_json(),
            "api_usage": org.usage.used(time.time()),
            "daily_request_limit": org.config.daily_request_limit,
            "open_query_cursors": len(org.cursors),
            "active_sessions": len(org.state.sessions),
            "records": {name: len(org.state.live_table(name)) for name in OBJECTS},
        }
    )


async def sandbox_stats_reset(request: Request) -> Response:
    org: _Org = request.app.state.org
    org.stats = SalesforceStats()
    org.usage = RollingUsage()
    return _sandbox_json({"reset": True})


async def sandbox_config(request: Request) -> Response:
    org: _Org = request.app.state.org
    if request.method == "POST":
        try:
            changes = json.loads(await request.body() or b"{}")
            apply_config_changes(org.config, changes)
        except (ValueError, TypeError) as error:
            return _sandbox_json({"error": str(error)}, 400)
        if "seed" in changes:
            org.random = random.Random(org.config.seed)
    return _sandbox_json(asdict(org.config))


def apply_config_changes(config: SalesforceConfig, changes: Any) -> None:
    """Set config knobs from JSON, coerced to each knob's type; unknown names are an error."""
    if not isinstance(changes, dict):
        raise ValueError("body must be a JSON object of config fields")
    known = {knob.name: knob for knob in fields(config)}
    unknown = sorted(set(changes) - set(known))
    if unknown:
        raise ValueError(f"unknown config fields: {', '.join(unknown)}")
    for name, value in changes.items():
        current = getattr(config, name)
        if isinstance(current, bool):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be true or false")
        elif isinstance(current, (int, float)) and value is not None:
            value = type(current)(value)
        setattr(config, name, value)


async def sandbox_records(request: Request) -> Response:
    org: _Org = request.app.state.org
    spec = OBJECTS.get(request.path_params["sobject"])
    if spec is None:
        return _sandbox_json({"error": f"unknown object {request.path_params['sobject']}"}, 404)
    if request.method == "POST":
        return _seed_records(org, spec, await request.body())
    include_deleted = request.query_params.get("include_deleted", "").lower() == "true"
    rows = org.state.records(spec.name, include_deleted=include_deleted)
    return _sandbox_json([record_json(spec, row, DEFAULT_API_VERSION) for row in rows])


def _seed_records(org: _Org, spec: ObjectSpec, raw: bytes) -> Response:
    try:
        body = json.loads(raw or b"[]", parse_float=Decimal)
    except ValueError as error:
        return _sandbox_json({"error": str(error)}, 400)
    records = body if isinstance(body, list) else [body]
    try:
        ids = [org.state.insert(spec.name, record) for record in records]
    except SalesforceApiError as error:
        return _sandbox_json(error.rest_body(), error.status)
    return _sandbox_json({"ids": ids}, 201)


async def sandbox_reset(request: Request) -> Response:
    org: _Org = request.app.state.org
    org.state.reset()
    org.cursors.clear()
    return _sandbox_json({"reset": True})


async def sandbox_expire_sessions(request: Request) -> Response:
    org: _Org = request.app.state.org
    return _sandbox_json({"expired": org.state.expire_sessions()})


async def sandbox_new_session(request: Request) -> Response:
    org: _Org = request.app.state.org
    return _sandbox_json({"session_id": org.state.new_session()}, 201)


# ------------------------------------------------------------------------------ the app


def _route(path: str, endpoint: Callable) -> Route:
    # Every method reaches the endpoint, which answers 405 in Salesforce's format itself.
    return Route(path, endpoint, methods=list(_ALL_METHODS))


def _routes(path: str, endpoint: Callable) -> list[Route]:
    """The path with and without a trailing slash (simple-salesforce uses both styles)."""
    return [_route(path, endpoint), _route(path + "/", endpoint)]


def _api_routes() -> list[Route]:
    data = "/services/data/v{version}"
    sobject = data + "/sobjects/{sobject}"
    collections = data + "/composite/sobjects"
    return [
        *_routes("/services/data", api_endpoint("versions", {"GET": list_versions}, authenticated=False)),
        *_routes(data, api_endpoint("resources", {"GET": list_resources})),
        *_routes(data + "/limits", api_endpoint("limits", {"GET": get_limits})),
        *_routes(data + "/sobjects", api_endpoint("describe_global", {"GET": describe_global})),
        *_routes(sobject, api_endpoint("sobject", {"GET": object_info, "POST": create_record}, writes=True)),
        # Starlette takes the first matching route: /describe must come before /{record_id}, and the
        # catch-all last.
        *_routes(sobject + "/describe", api_endpoint("describe", {"GET": describe_object})),
        _route(
            sobject + "/{record_id}",
            api_endpoint("record", {"GET": get_record, "PATCH": update_record, "DELETE": delete_record}, writes=True),
        ),
        _route(
            sobject + "/{field}/{value:path}",
            api_endpoint(
                "external_id",
                {"GET": get_by_external_id, "PATCH": upsert_record, "DELETE": delete_by_external_id},
                writes=True,
            ),
        ),
        *_routes(data + "/query", api_endpoint("query", {"GET": lambda call: run_query(call, False)})),
        *_routes(data + "/queryAll", api_endpoint("query_all", {"GET": lambda call: run_query(call, True)})),
        _route(data + "/query/{locator}", api_endpoint("query_more", {"GET": query_more})),
        _route(data + "/queryAll/{locator}", api_endpoint("query_more", {"GET": query_more})),
        *_routes(
            collections,
            api_endpoint(
                "collection",
                {"POST": create_collection, "PATCH": update_collection, "DELETE": delete_collection},
                writes=True,
            ),
        ),
        *_routes(
            collections + "/{sobject}",
            api_endpoint("collection_retrieve", {"GET": retrieve_collection, "POST": retrieve_collection}),
        ),
        *_routes(
            collections + "/{sobject}/{field}",
            api_endpoint("collection_upsert", {"PATCH": upsert_collection}, writes=True),
        ),
        _route(data + "/{rest:path}", api_endpoint("unknown", dict.fromkeys(_ALL_METHODS, not_a_resource))),
    ]


def _sandbox_routes() -> list[Route]:
    return [
        Route("/_sandbox/stats", sandbox_stats, methods=["GET"]),
        Route("/_sandbox/stats/reset", sandbox_stats_reset, methods=["POST"]),
        Route("/_sandbox/config", sandbox_config, methods=["GET", "POST"]),
        Route("/_sandbox/records/{sobject}", sandbox_records, methods=["GET", "POST"]),
        Route("/_sandbox/reset", sandbox_reset, methods=["POST"]),
        Route("/_sandbox/expire-sessions", sandbox_expire_sessions, methods=["POST"]),
        Route("/_sandbox/sessions", sandbox_new_session, methods=["POST"]),
    ]


def create_salesforce_app(state: SalesforceState, config: SalesforceConfig) -> Starlette:
    routes = [
        *_api_routes(),
        Route("/services/Soap/u/{version}", soap_login, methods=["POST"]),
        Route("/services/Soap/u/{version}/{org:path}", soap_login, methods=["POST"]),
        *_sandbox_routes(),
    ]
    app = Starlette(routes=routes)
    app.state.org = _Org(state, config)
    return app
