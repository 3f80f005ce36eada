"""Salesforce REST through simple-salesforce: SOQL, external-id upserts, sObject collections.

Writes are upserts by external id (`Stripe_Customer_Id__c`, ...), so retrying one after a 5xx or
a lost response updates what the first attempt created instead of duplicating it. Sessions are
renewed by logging in again when a username and password are configured; a bare session id
cannot be renewed and fails with a message saying what to set.
"""

from __future__ import annotations

import datetime as dt
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote, urlparse
from xml.sax.saxutils import escape

import dagster as dg
import requests
import requests.adapters
import urllib3.exceptions
from pydantic import Field, PrivateAttr
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceError,
    SalesforceExpiredSession,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
)

from sync_pipeline import exact_json
from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry

T = TypeVar("T")

DEFAULT_API_VERSION = "59.0"
# sObject collections take at most 200 records a request.
COLLECTION_LIMIT = 200
# Ids per `WHERE Id IN (...)`: keeps a SOQL statement well under its 100,000-character limit.
IDS_PER_QUERY = 200
# Records committed in the same second as the last run, or by a long transaction, can carry a
# SystemModstamp a little older than the high-water mark: an incremental read re-reads a short window.
LOOK_BACK = dt.timedelta(minutes=5)
REQUEST_LIMIT_EXCEEDED = "REQUEST_LIMIT_EXCEEDED"
SESSION_ID_EXPIRED_MESSAGE = (
    "SALESFORCE_SESSION_ID has expired; set SALESFORCE_USERNAME/PASSWORD/SECURITY_TOKEN for automatic"
    " renewal or provide a new session id"
)
_PARTNER_NS = "urn:partner.soap.sforce.com"


LOGIN_VARIABLES = "SALESFORCE_INSTANCE_URL, SALESFORCE_USERNAME, SALESFORCE_PASSWORD and SALESFORCE_SECURITY_TOKEN"


class SalesforceAccessDenied(AccessDenied):
    """Salesforce refused the integration user (a 403 on a request, not one record's data problem)."""

    def __init__(self, line: str) -> None:
        super().__init__("salesforce", line)


class SalesforceSessionExpired(SalesforceAccessDenied):
    """The session is no longer valid and cannot be renewed with the configured settings."""


class SalesforceLoginFailed(SalesforceAccessDenied):
    """The SOAP login was refused (the message has Salesforce's code and text, never the password)."""


class SalesforceRequestLimitExceeded(Exception):
    """The org's rolling 24-hour API request allocation is used up; retrying now cannot help."""


class SalesforceDuplicateMatch(Exception):
    """An external-id upsert matched several records (HTTP 300): Salesforce cannot tell which to update."""

    def __init__(self, sobject: str, field_name: str, value: str, record_ids: list[str]) -> None:
        self.sobject = sobject
        self.field_name = field_name
        self.value = value
        self.record_ids = record_ids
        super().__init__(sobject, field_name, value, record_ids)

    def __str__(self) -> str:
        return (
            f"{self.sobject}.{self.field_name} = {self.value!r} matches {len(self.record_ids)} records "
            f"({', '.join(self.record_ids)}); make the field unique, then merge or clear the duplicates"
        )


@dataclass(frozen=True)
class SaveResult:
    """One record's outcome in an sObject collection request."""

    external_id: str
    id: str | None
    success: bool
    created: bool | None
    errors: list[dict[str, Any]] = field(default_factory=list)


def is_retryable(error: BaseException) -> bool:
    """5xx, timeouts and broken connections (for idempotent requests: reads and upserts)."""
    if isinstance(error, SalesforceError):
        return (error.status or 0) >= 500
    return isinstance(error, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError))


def is_retryable_before_sent(error: BaseException) -> bool:
    """Only failures where the request cannot have reached Salesforce (for non-idempotent creates)."""
    if isinstance(error, requests.ConnectTimeout):
        return True
    if isinstance(error, requests.ConnectionError) and error.args:
        reason = getattr(error.args[0], "reason", None)
        return isinstance(reason, urllib3.exceptions.NewConnectionError)
    return False


def _error_codes(error: SalesforceError) -> set[str]:
    content = error.content
    if isinstance(content, list):
        return {str(item.get("errorCode")) for item in content if isinstance(item, Mapping)}
    return set()


def _record_ids(content: Any) -> list[str]:
    """Ids in a 300 answer: a list of record URLs (or of records with `Id`/attributes.url)."""
    ids = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, Mapping):
            item = item.get("Id") or item.get("id") or (item.get("attributes") or {}).get("url") or ""
        last = str(item).rstrip("/").rsplit("/", 1)[-1]
        if last:
            ids.append(last)
    return ids


class _TrustAdapter(requests.adapters.HTTPAdapter):
    """Pins the CA file for every request: a session's `verify` alone loses to REQUESTS_CA_BUNDLE."""

    def __init__(self, ca_bundle: str) -> None:
        self._ca_bundle = ca_bundle
        super().__init__(max_retries=0)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        kwargs["verify"] = self._ca_bundle
        return super().send(request, **kwargs)


def parse_modstamp(value: str) -> dt.datetime:
    """Salesforce's `2026-11-24T08:00:00.000+0000` as an aware datetime."""
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def soql_datetime(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def modified_since(cursor: str | None, look_back: dt.timedelta = LOOK_BACK) -> str:
    """The WHERE clause of an incremental read: everything changed since the high-water mark minus a look-back."""
    if not cursor:
        return ""
    return f" WHERE SystemModstamp >= {soql_datetime(parse_modstamp(cursor) - look_back)}"


def newest_modstamp(records: Iterable[Mapping[str, Any]], current: str | None) -> str | None:
    """The high-water mark after reading `records`: their newest SystemModstamp, never older than `current`."""
    stamps = [r["SystemModstamp"] for r in records if r.get("SystemModstamp")]
    if current:
        stamps.append(current)
    return max(stamps, key=parse_modstamp) if stamps else None


def soap_login_envelope(username: str, password: str, security_token: str) -> str:
    return (
        '<?xml version="1.0" encoding="utf-8" ?>'
        '<env:Envelope xmlns:xsd="http://www.w3.org/2001/XMLSchema"'
        ' xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
        ' xmlns:env="http://schemas.xmlsoap.org/soap/envelope/">'
        f'<env:Body><n1:login xmlns:n1="{_PARTNER_NS}">'
        f"<n1:username>{escape(username)}</n1:username>"
        f"<n1:password>{escape(password + security_token)}</n1:password>"
        "</n1:login></env:Body></env:Envelope>"
    )


def _xml_values(document: bytes) -> dict[str, str]:
    """Text of each element by local name (first occurrence): sessionId, serverUrl, faultstring, ..."""
    values: dict[str, str] = {}
    for element in ElementTree.fromstring(document).iter():
        name = element.tag.rsplit("}", 1)[-1]
        if name not in values and element.text and element.text.strip():
            values[name] = element.text.strip()
    return values


class SalesforceResource(dg.ConfigurableResource):
    """Salesforce REST at a fixed API version; wire with `dg.EnvVar("SALESFORCE_...")`.

    Either `session_id`, or `username` + `password` (+ `security_token` unless the IP is trusted)
    for a login that renews itself. `ca_bundle` trusts a private CA (the sandbox's).
    """

    instance_url: str = Field(description="https://<my-domain>.my.salesforce.com (or the sandbox's URL)")
    session_id: str | None = Field(default=None, repr=False, description="an existing session id")
    username: str | None = Field(default=None, description="integration user's username")
    password: str | None = Field(default=None, repr=False, description="integration user's password")
    security_token: str | None = Field(default=None, repr=False, description="integration user's security token")
    ca_bundle: str | None = Field(default=None, description="CA file to trust instead of the system store")
    api_version: str = Field(default=DEFAULT_API_VERSION, description="REST API version, e.g. 59.0")
    timeout_seconds: float = Field(default=120.0, description="per-request timeout")

    _connection: Salesforce | None = PrivateAttr(default=None)
    _http: requests.Session | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _retry_policy: RetryPolicy = PrivateAttr(default=DEFAULT_RETRY_POLICY)
    _logins: int = PrivateAttr(default=0)

    # -- public operations ---------------------------------------------------------------------

    def query_all(self, soql: str) -> Iterator[dict[str, Any]]:
        """Every record of a SOQL query, batch after batch (`nextRecordsUrl`); numbers as Decimal."""
        page = self._call(lambda sf: sf.query(soql, timeout=self.timeout_seconds), "query")
        while True:
            yield from page["records"]
            if page.get("done", True) or not page.get("nextRecordsUrl"):
                return
            next_url = page["nextRecordsUrl"]
            page = self._call(
                lambda sf, url=next_url: sf.query_more(url, identifier_is_url=True, timeout=self.timeout_seconds),
                "query_more",
            )

    def select(self, sobject: str, fields: str, where: str = "") -> Iterator[dict[str, Any]]:
        """`SELECT fields FROM sobject`, narrowed by a WHERE clause such as `modified_since`'s, oldest change first."""
        # Oldest change first, so the high-water mark only moves past what was read; Id breaks ties
        # between records changed in the same millisecond.
        return self.query_all(f"SELECT {fields} FROM {sobject}{where} ORDER BY SystemModstamp, Id")

    def select_by_ids(self, sobject: str, fields: str, ids: Sequence[str]) -> Iterator[dict[str, Any]]:
        """The records with these ids (anything but a Salesforce id is left out of the SOQL)."""
        for start in range(0, len(ids), IDS_PER_QUERY):
            # Salesforce ids are alphanumeric: anything else is dropped, so no quote can reach the SOQL.
            quoted = ", ".join(f"'{i}'" for i in ids[start : start + IDS_PER_QUERY] if i.isalnum())
            if quoted:
                yield from self.select(sobject, fields, f" WHERE Id IN ({quoted})")

    def upsert(self, sobject: str, field_name: str, value: str, data: Mapping[str, Any]) -> int:
        """Create or update the record whose `field_name` is `value`: 201 created, 200 updated.

        (204 is Salesforce's answer for an update before API 46.) Several matches raise
        `SalesforceDuplicateMatch` with their ids.
        """
        path = f"sobjects/{sobject}/{field_name}/{quote(value, safe='')}"
        try:
            result = self._call(lambda sf: self._send(sf, path, "PATCH", data), f"PATCH {path}")
        except SalesforceMoreThanOneRecord as error:
            raise SalesforceDuplicateMatch(sobject, field_name, value, _record_ids(error.content)) from None
        if not result:
            return 204
        return 201 if result.get("created") else 200

    def upsert_many(
        self, sobject: str, external_id_field: str, records: Sequence[Mapping[str, Any]], all_or_none: bool = False
    ) -> list[SaveResult]:
        """Upsert by external id through sObject collections, 200 records a request; results in input order."""
        for index, record in enumerate(records):
            if not record.get(external_id_field):
                raise ValueError(f"record {index} has no {external_id_field}: every record needs its external id")
        path = f"composite/sobjects/{sobject}/{external_id_field}"
        results: list[SaveResult] = []
        # allOrNone holds within one request only: an earlier chunk stays written if a later one fails.
        for start in range(0, len(records), COLLECTION_LIMIT):
            chunk = records[start : start + COLLECTION_LIMIT]
            body = {
                "allOrNone": all_or_none,
                "records": [{"attributes": {"type": sobject}, **record} for record in chunk],
            }
            answers = self._call(lambda sf, body=body: self._send(sf, path, "PATCH", body), f"PATCH {path}")
            results.extend(
                SaveResult(
                    external_id=str(record[external_id_field]),
                    id=answer.get("id"),
                    success=bool(answer.get("success")),
                    created=answer.get("created"),
                    errors=list(answer.get("errors") or []),
                )
                for record, answer in zip(chunk, answers or [], strict=True)
            )
        return results

    def create(self, sobject: str, data: Mapping[str, Any]) -> str:
        """Create a record; returns its id. Not idempotent: only retried when it cannot have been sent."""
        path = f"sobjects/{sobject}/"
        result = self._call(
            lambda sf: self._send(sf, path, "POST", data), f"POST {path}", is_retryable=is_retryable_before_sent
        )
        return str(result["id"])

    def update(self, sobject: str, record_id: str, data: Mapping[str, Any]) -> None:
        path = f"sobjects/{sobject}/{quote(record_id, safe='')}"
        self._call(lambda sf: self._send(sf, path, "PATCH", data), f"PATCH {path}")

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._http is not None:
            self._http.close()

    @property
    def logins(self) -> int:
        """How many SOAP logins this resource has made (initial and renewals)."""
        return self._logins

    # -- sessions -------------------------------------------------------------------------------

    def _call(
        self,
        operation: Callable[[Salesforce], T],
        description: str,
        is_retryable: Callable[[BaseException], bool] = is_retryable,
    ) -> T:
        """Run `operation` under the retry policy, renewing an expired session once."""
        renewed = False
        while True:
            connection = self._get_connection()
            try:
                return call_with_retry(
                    lambda connection=connection: operation(connection),
                    is_retryable,
                    policy=self._retry_policy,
                    description=description,
                )
            # Sessions time out after inactivity (2 hours by default): renew once by logging in again; a
            # second refusal right after a fresh login is a configuration problem, not an expiry.
            except SalesforceExpiredSession as error:
                if not self._can_log_in:
                    raise SalesforceSessionExpired(SESSION_ID_EXPIRED_MESSAGE) from error
                if renewed:
                    raise SalesforceSessionExpired(
                        f"Salesforce refused a session just issued to {self.username} (INVALID_SESSION_ID): check"
                        f" {LOGIN_VARIABLES}, that the user's profile has API Enabled and its session settings"
                        " (e.g. Lock sessions to the IP address)"
                    ) from error
                self._renew(connection)
                renewed = True
            except SalesforceRefusedRequest as error:
                if REQUEST_LIMIT_EXCEEDED in _error_codes(error):
                    raise SalesforceRequestLimitExceeded(
                        "Salesforce's 24-hour API request limit is used up (REQUEST_LIMIT_EXCEEDED); retrying now"
                        " cannot help: wait for the rolling window, or raise the org's allocation"
                    ) from error
                codes = ", ".join(sorted(_error_codes(error))) or "HTTP 403"
                raise SalesforceAccessDenied(
                    f"Salesforce refused {description} ({codes}): give the integration user"
                    f" ({self.username or 'the user of SALESFORCE_SESSION_ID'}) API access and permission on the"
                    " object and fields (profile or permission set), or use another user"
                ) from error

    def _send(self, sf: Salesforce, path: str, method: str, body: Any) -> Any:
        # Bodies are written here, not by simple-salesforce, so Decimals go out digit for digit.
        return sf.restful(path, method=method, data=exact_json.dumps(body), timeout=self.timeout_seconds)

    @property
    def _can_log_in(self) -> bool:
        return bool(self.username and self.password)

    def _get_connection(self) -> Salesforce:
        with self._lock:
            if self._connection is None:
                if self.session_id:
                    self._connection = self._connect(self.session_id, self.instance_url)
                elif self._can_log_in:
                    self._connection = self._connect(*self._login())
                else:
                    raise ValueError(
                        "Salesforce needs SALESFORCE_SESSION_ID, or SALESFORCE_USERNAME + SALESFORCE_PASSWORD"
                        " (+ SALESFORCE_SECURITY_TOKEN) for a login that renews itself"
                    )
            return self._connection

    def _renew(self, expired: Salesforce) -> None:
        with self._lock:
            # Another thread may have renewed it already while this one waited.
            if self._connection is expired:
                self._connection = self._connect(*self._login())

    def _connect(self, session_id: str, instance_url: str) -> Salesforce:
        return Salesforce(
            instance_url=instance_url,
            session_id=session_id,
            session=self._http_session(),
            version=self.api_version,
            parse_float=Decimal,
            object_pairs_hook=dict,
        )

    def _http_session(self) -> requests.Session:
        if self._http is None:
            session = requests.Session()
            if self.ca_bundle:
                session.verify = self.ca_bundle
                session.mount("https://", _TrustAdapter(self.ca_bundle))
            self._http = session
        return self._http

    def _login(self) -> tuple[str, str]:
        """SOAP partner login at the instance itself: returns (session id, instance URL).

        simple-salesforce would log in at https://{domain}.salesforce.com, which cannot reach a My
        Domain-only org or the sandbox.
        """
        assert self.username and self.password
        soap_url = f"{self.instance_url.rstrip('/')}/services/Soap/u/{self.api_version}"
        envelope = soap_login_envelope(self.username, self.password, self.security_token or "")
        response = call_with_retry(
            lambda: self._http_session().post(
                soap_url,
                data=envelope.encode("utf-8"),
                headers={"Content-Type": "text/xml; charset=UTF-8", "SOAPAction": "login"},
                timeout=self.timeout_seconds,
            ),
            is_retryable_before_sent,
            policy=self._retry_policy,
            description=f"POST {soap_url}",
        )
        try:
            values = _xml_values(response.content)
        except ElementTree.ParseError:
            values = {}
        if response.status_code != 200 or "sessionId" not in values or "serverUrl" not in values:
            reason = values.get("exceptionMessage") or values.get("faultstring") or f"HTTP {response.status_code}"
            code = values.get("exceptionCode") or values.get("faultcode") or "LOGIN_FAILED"
            raise SalesforceLoginFailed(
                f"Salesforce login as {self.username} at {soap_url} failed ({code}: {reason}): check {LOGIN_VARIABLES}"
            )
        self._logins += 1
        server = urlparse(values["serverUrl"])
        # Classic instance hosts answer the SOAP API as `na1-api.salesforce.com`; REST is `na1.`.
        host = server.netloc.replace("-api.", ".")
        return values["sessionId"], f"{server.scheme}://{host}"
