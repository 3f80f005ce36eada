"""NetSuite SuiteTalk REST client: record upserts by external id, gets, deletes and SuiteQL.

Every write is `PUT /record/v1/<type>/eid:<externalId>`, never a bare POST, so any write can be
retried — after a 429, a 5xx, a timeout, or a response lost after NetSuite committed — without
creating a duplicate. NetSuite's throughput ceiling is its per-account concurrency limit, so
every request passes one client-side semaphore of that size: with one client per run step, the
step's threads can never exceed it (and a Dagster pool keeps steps and runs from stacking up).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import dagster as dg
import requests
import requests.adapters
from pydantic import Field, PrivateAttr

from sync_pipeline import exact_json
from sync_pipeline.mapping.external_ids import EXTERNAL_ID_PATTERN
from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.oauth1 import OAuth1HmacSha256
from sync_pipeline.resources.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry, parse_retry_after

logger = logging.getLogger(__name__)

RECORD_API_PATH = "/services/rest/record/v1"
SUITEQL_PATH = "/services/rest/query/v1/suiteql"
OAUTH2_TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
SUITEQL_MAX_PAGE_SIZE = 1000
CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
# Our own code for a request that never got an HTTP answer (after retries).
CONNECTION_ERROR = "CONNECTION_ERROR"
AUTH_CODES = frozenset(
    {
        "INVALID_LOGIN",
        "INVALID_LOGIN_ATTEMPT",
        "INVALID_LOGIN_CREDENTIALS",
        "invalid_client",
        "invalid_grant",
        "unauthorized_client",
    }
)
PERMISSION_CODES = frozenset({"INSUFFICIENT_PERMISSION"})
# What a user checks when NetSuite refuses the credentials, per authentication method.
CREDENTIAL_VARIABLES = {
    "oauth1-tba": "NETSUITE_ACCOUNT_ID, NETSUITE_CONSUMER_KEY, NETSUITE_CONSUMER_SECRET, NETSUITE_TOKEN_ID and "
    "NETSUITE_TOKEN_SECRET",
    "oauth2-m2m": "NETSUITE_ACCOUNT_ID, NETSUITE_CLIENT_ID, NETSUITE_CERTIFICATE_ID and NETSUITE_PRIVATE_KEY "
    "(or NETSUITE_PRIVATE_KEY_FILE)",
}
# What else to check when the credentials are refused, per method.
CREDENTIAL_CHECKS = {
    "oauth1-tba": "that the token is active and that its role has Web Services access",
    "oauth2-m2m": "that the private key is the one of the certificate uploaded under NETSUITE_CERTIFICATE_ID in "
    "Setup > Integration > Manage Authentication > OAuth 2.0 Client Credentials (M2M) Setup, that the mapping is "
    "active and not expired, and that its role has REST Web Services and Log in using OAuth 2.0 Access Tokens",
}
ROLE_OF_CREDENTIALS = {
    "oauth1-tba": "the role of the access token (NETSUITE_TOKEN_ID)",
    "oauth2-m2m": "the role mapped to the certificate (NETSUITE_CERTIFICATE_ID)",
}
_WRITE_METHODS = frozenset({"PUT", "POST", "PATCH", "DELETE"})
# A bearer token is replaced this long before NetSuite says it expires (or at half its life, if shorter),
# so no request goes out with a token that expires on the way.
OAUTH2_REFRESH_MARGIN_SECONDS = 300.0
OAUTH2_ASSERTION_LIFETIME_SECONDS = 300


def account_host_slug(account_id: str) -> str:
    """The account id as NetSuite spells it in host names: `123456_SB1` -> `123456-sb1`."""
    return account_id.strip().lower().replace("_", "-")


def default_base_url(account_id: str) -> str:
    return f"https://{account_host_slug(account_id)}.suitetalk.api.netsuite.com"


def eid(external_id: str) -> str:
    """The `eid:` reference NetSuite accepts wherever an internal id goes."""
    if not EXTERNAL_ID_PATTERN.fullmatch(external_id):
        raise ValueError(f"NetSuite external ids allow only letters, digits, '_' and '-': {external_id!r}")
    return f"eid:{external_id}"


class NetSuiteError(Exception):
    """An error NetSuite answered with (or, with status None, a request that got no answer).

    `code`, `detail` and `path` come from the first `o:errorDetails` entry (`path` is the field,
    `o:errorPath`, when NetSuite names one); `details` has them all; `request` is "METHOD /path".
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        detail: str,
        path: str | None = None,
        body: Any = None,
        *,
        request: str = "",
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status = status
        self.attempts = attempts
        self.code = code
        self.detail = detail
        self.path = path
        self.body = body
        self.request = request
        self.retry_after = retry_after
        # Set on the first 401 of a request sent with an OAuth 2.0 bearer token: retried once with a new token.
        self.refetch_token = False
        super().__init__(status, code, detail, path)

    @property
    def details(self) -> list[dict[str, Any]]:
        if isinstance(self.body, Mapping) and isinstance(self.body.get("o:errorDetails"), list):
            return [d for d in self.body["o:errorDetails"] if isinstance(d, Mapping)]
        return []

    @property
    def codes(self) -> set[str]:
        return {self.code} | {str(d.get("o:errorCode")) for d in self.details if d.get("o:errorCode")}

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        where = f" (field {self.path})" if self.path else ""
        request = f" [{self.request}]" if self.request else ""
        return f"NetSuite {status} {self.code}{where}: {self.detail}{request}"

    def __repr__(self) -> str:
        return (
            f"NetSuiteError({self.status!r}, {self.code!r}, {self.detail!r}, {self.path!r}, request={self.request!r})"
        )

    @classmethod
    def from_response(cls, response: requests.Response, request: str) -> NetSuiteError:
        try:
            body: Any = exact_json.loads(response.content)
        except ValueError:
            body = response.text[:2000]
        first: Mapping[str, Any] = {}
        title = None
        if isinstance(body, Mapping):
            details = body.get("o:errorDetails")
            if isinstance(details, list) and details and isinstance(details[0], Mapping):
                first = details[0]
            title = body.get("title")
            if not first and isinstance(body.get("error"), str):
                # The OAuth 2.0 token endpoint answers in RFC 6749's shape: {"error", "error_description"}.
                first = {"o:errorCode": body["error"], "detail": body.get("error_description") or body["error"]}
        detail = first.get("detail") or title or (body if isinstance(body, str) else "") or response.reason or ""
        return cls(
            response.status_code,
            str(first.get("o:errorCode") or f"HTTP_{response.status_code}"),
            str(detail),
            first.get("o:errorPath"),
            body,
            request=request,
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )


def is_retryable(error: BaseException) -> bool:
    """429, 5xx, CONCURRENCY_LIMIT_EXCEEDED (seen as 429 and as 400), timeouts and broken connections."""
    if isinstance(error, NetSuiteError):
        if error.status is None:
            return False
        return error.status == 429 or error.status >= 500 or CONCURRENCY_LIMIT_EXCEEDED in error.codes
    # ChunkedEncodingError is a response that broke off mid-body: the write may have committed,
    # which is harmless for an eid: upsert.
    return isinstance(
        error,
        (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            requests.exceptions.ContentDecodingError,
        ),
    )


def _retry_after(error: BaseException) -> float | None:
    if isinstance(error, NetSuiteError):
        # A refused bearer token is replaced at once: there is nothing to wait for.
        return 0.0 if error.refetch_token else error.retry_after
    return None


def _retryable_or_token_refetch(error: BaseException) -> bool:
    return is_retryable(error) or (isinstance(error, NetSuiteError) and error.refetch_token)


def access_denied(error: NetSuiteError, auth_method: str) -> AccessDenied | None:
    """The step-stopping failure for a refused login or a missing permission, else None (a record's problem)."""
    if error.status is None or error.status == 429 or error.status >= 500:
        return None
    said = f"HTTP {error.status} {error.code}: {error.detail}"
    # The OAuth 2.0 token endpoint answers a bad client or key with 400 invalid_client / invalid_grant.
    if error.status == 401 or error.codes & AUTH_CODES or error.request.endswith(OAUTH2_TOKEN_PATH):
        return AccessDenied(
            "netsuite",
            (
                f"NetSuite refused the credentials ({said}): check {CREDENTIAL_VARIABLES[auth_method]}, "
                f"{CREDENTIAL_CHECKS[auth_method]} (NetSuite's Login Audit Trail says why)"
            ),
        )
    if error.status == 403 or error.codes & PERMISSION_CODES:
        return AccessDenied(
            "netsuite",
            (
                f"NetSuite denied {error.request or 'a request'} ({said}): give {ROLE_OF_CREDENTIALS[auth_method]} the "
                "permission for this record type (Setup > Users/Roles > Manage Roles), or use credentials of a role "
                "that has it"
            ),
        )
    return None


@dataclass(frozen=True)
class OAuth1Credentials:
    """Token-based authentication (OAuth 1.0a, HMAC-SHA256)."""

    consumer_key: str = field(repr=False)
    consumer_secret: str = field(repr=False)
    token_id: str = field(repr=False)
    token_secret: str = field(repr=False)


@dataclass(frozen=True)
class OAuth2M2MCredentials:
    """OAuth 2.0 client credentials (machine to machine), TBA's successor from 2027.1.

    `private_key_pem` is the key of the certificate uploaded to NetSuite (RSA -> PS256, EC -> ES256/384/512 by
    curve; NetSuite refuses RS256).
    """

    client_id: str = field(repr=False)
    certificate_id: str
    private_key_pem: str = field(repr=False)


@dataclass(frozen=True)
class NetSuiteCounters:
    """What this client has done so far (HTTP attempts, including retried ones)."""

    requests: int
    writes: int
    retries: int
    peak_in_flight: int
    in_flight: int


class _ConcurrencyLimiter:
    """A bounded semaphore every request passes, with an in-flight gauge and its peak."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"NetSuite concurrency must be at least 1, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self.in_flight = 0
        self.peak = 0

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._slots:
            with self._lock:
                self.in_flight += 1
                self.peak = max(self.peak, self.in_flight)
            try:
                yield
            finally:
                with self._lock:
                    self.in_flight -= 1


class _OAuth2BearerAuth(requests.auth.AuthBase):
    """Bearer token from the client-credentials flow, fetched with a signed JWT and renewed before expiry."""

    def __init__(self, credentials: OAuth2M2MCredentials, token_url: str, timeout: float, policy: RetryPolicy) -> None:
        self._credentials = credentials
        self._token_url = token_url
        self._timeout = timeout
        self._policy = policy
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def __repr__(self) -> str:
        return f"<NetSuite OAuth 2.0 M2M auth, certificate {self._credentials.certificate_id}>"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self.token()}"
        return request

    def forget(self, authorization: str | None) -> None:
        """Drop the cached token NetSuite just refused (unless another thread has already replaced it)."""
        with self._lock:
            if self._token is not None and authorization == f"Bearer {self._token}":
                self._token = None

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.time() >= self._refresh_at:
                self._token, lifetime = call_with_retry(
                    self._fetch,
                    is_retryable,
                    retry_after=_retry_after,
                    policy=self._policy,
                    description=f"POST {OAUTH2_TOKEN_PATH}",
                )
                self._refresh_at = time.time() + lifetime - min(OAUTH2_REFRESH_MARGIN_SECONDS, lifetime / 2)
            return self._token

    def _fetch(self) -> tuple[str, float]:
        response = requests.post(
            self._token_url,
            data={
                "grant_type": "client_credentials",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": self._assertion(),
            },
            timeout=self._timeout,
        )
        if response.status_code != 200:
            raise NetSuiteError.from_response(response, f"POST {OAUTH2_TOKEN_PATH}")
        payload = response.json()
        return str(payload["access_token"]), float(payload.get("expires_in") or 3600)

    def _assertion(self) -> str:
        import jwt  # PyJWT (with cryptography): only needed for M2M
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        key = load_pem_private_key(self._credentials.private_key_pem.encode(), password=None)
        algorithm = (
            _EC_ALGORITHMS.get(key.curve.name, "ES256") if isinstance(key, ec.EllipticCurvePrivateKey) else "PS256"
        )
        now = int(time.time())
        claims = {
            "iss": self._credentials.client_id,
            "scope": "rest_webservices",
            "aud": self._token_url,
            "iat": now,
            "exp": now + OAUTH2_ASSERTION_LIFETIME_SECONDS,
        }
        return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": self._credentials.certificate_id})


# ECDSA's JWT algorithm is fixed by the key's curve (RFC 7518 3.4).
_EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}


class NetSuiteClient:
    """A thread-safe NetSuite REST client; share one per run step so its limiter covers every thread."""

    def __init__(
        self,
        account_id: str,
        *,
        oauth1: OAuth1Credentials | None = None,
        oauth2: OAuth2M2MCredentials | None = None,
        base_url: str | None = None,
        concurrency: int = 5,
        timeout_seconds: float = 120.0,
        retry_policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    ) -> None:
        if oauth1 is None and oauth2 is None:
            raise ValueError("NetSuiteClient needs OAuth 1.0a (TBA) or OAuth 2.0 M2M credentials")
        self.account_id = account_id
        self.base_url = (base_url or default_base_url(account_id)).rstrip("/")
        self._timeout = timeout_seconds
        self._retry_policy = retry_policy
        self._limiter = _ConcurrencyLimiter(concurrency)
        self._denied: AccessDenied | None = None
        self._counter_lock = threading.Lock()
        self._requests = 0
        self._writes = 0
        self._retries = 0
        self._session = requests.Session()
        # One pooled connection per permitted in-flight request; our own retries replace urllib3's.
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=max(concurrency, 10), max_retries=0)
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)
        self._bearer: _OAuth2BearerAuth | None = None
        if oauth2 is not None:
            self.auth_method = "oauth2-m2m"
            token_url = self.base_url + OAUTH2_TOKEN_PATH
            self._bearer = _OAuth2BearerAuth(oauth2, token_url, timeout_seconds, retry_policy)
            self._session.auth = self._bearer
        else:
            assert oauth1 is not None
            self.auth_method = "oauth1-tba"
            # The realm is the raw account id (123456_SB1), not the host slug.
            self._session.auth = OAuth1HmacSha256(
                oauth1.consumer_key, oauth1.consumer_secret, oauth1.token_id, oauth1.token_secret, realm=account_id
            )

    def __repr__(self) -> str:
        return (
            f"NetSuiteClient(account_id={self.account_id!r}, base_url={self.base_url!r}, "
            f"auth={self.auth_method!r}, concurrency={self.concurrency})"
        )

    def __enter__(self) -> NetSuiteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    @property
    def concurrency(self) -> int:
        return self._limiter.limit

    @property
    def counters(self) -> NetSuiteCounters:
        with self._counter_lock:
            return NetSuiteCounters(
                requests=self._requests,
                writes=self._writes,
                retries=self._retries,
                peak_in_flight=self._limiter.peak,
                in_flight=self._limiter.in_flight,
            )

    # -- record API -------------------------------------------------------------------------

    def upsert(self, record_type: str, external_id: str, body: Mapping[str, Any]) -> str:
        """Create or update the record with this external id; returns its internal id.

        `body` may hold Decimals (sent digit for digit). Safe to repeat: it is the same upsert.
        """
        path = f"{RECORD_API_PATH}/{record_type}/{eid(external_id)}"
        response = self._request("PUT", path, body=body)
        internal_id = _internal_id_from_location(response.headers.get("Location"))
        if internal_id is None:
            # Tolerate a success without a usable Location: ask for the record by external id.
            internal_id = str(self.get(record_type, eid(external_id))["id"])
        return internal_id

    def get(self, record_type: str, id_or_eid: str, expand_sub_resources: bool = False) -> dict[str, Any]:
        """The record by internal id (`"107"`) or external id (`"eid:stripe-in_1"`); numbers as Decimal."""
        params = {"expandSubResources": "true"} if expand_sub_resources else None
        response = self._request("GET", f"{RECORD_API_PATH}/{record_type}/{_record_key(id_or_eid)}", params=params)
        return exact_json.loads(response.content)

    def delete(self, record_type: str, id_or_eid: str, missing_ok: bool = False) -> None:
        try:
            self._request("DELETE", f"{RECORD_API_PATH}/{record_type}/{_record_key(id_or_eid)}")
        except NetSuiteError as error:
            if not (missing_ok and error.status == 404):
                raise

    def suiteql(self, query: str, page_size: int = SUITEQL_MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """Rows of a SuiteQL query, page after page (`hasMore`); column names come back lower-case.

        NetSuite stops at 100,000 rows a query: narrow the WHERE clause for more.
        """
        if not 1 <= page_size <= SUITEQL_MAX_PAGE_SIZE:
            raise ValueError(f"SuiteQL page size must be 1..{SUITEQL_MAX_PAGE_SIZE}, got {page_size}")
        offset = 0
        while True:
            response = self._request(
                "POST",
                SUITEQL_PATH,
                params={"limit": page_size, "offset": offset},
                body={"q": query},
                headers={"Prefer": "transient"},
                is_write=False,
            )
            page = exact_json.loads(response.content)
            items = page.get("items") or []
            for item in items:
                yield {key: value for key, value in item.items() if key != "links"}
            if not page.get("hasMore") or not items:
                return
            offset += len(items)

    # -- transport ---------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        is_write: bool | None = None,
    ) -> requests.Response:
        description = f"{method} {path}"
        request_headers = {"Accept": "application/json", **(headers or {})}
        data = None
        if body is not None:
            data = exact_json.dumps(body).encode("utf-8")
            request_headers["Content-Type"] = "application/json"
        counts_as_write = method in _WRITE_METHODS if is_write is None else is_write
        attempts = 0
        token_refetched = False

        def attempt() -> requests.Response:
            nonlocal attempts, token_refetched
            attempts += 1
            try:
                return self._send_once(method, path, params, data, request_headers, counts_as_write)
            except NetSuiteError as error:
                # A bearer token can end before its announced expiry (revoked mapping, clock skew): fetch a new
                # one and try once more, at once. A second 401 is the credentials' fault and stops the step.
                if error.status == 401 and self._bearer is not None and not token_refetched:
                    token_refetched = error.refetch_token = True
                raise

        try:
            return call_with_retry(
                attempt,
                _retryable_or_token_refetch,
                retry_after=_retry_after,
                policy=self._retry_policy,
                on_retry=self._count_retry,
                description=description,
            )
        except NetSuiteError as error:
            error.attempts = attempts
            denied = access_denied(error, self.auth_method)
            if denied is not None:
                self._denied = denied
                raise denied from error
            raise
        except requests.RequestException as error:
            # No HTTP answer after every attempt: a write may or may not have been saved.
            raise NetSuiteError(
                None, CONNECTION_ERROR, type(error).__name__, request=description, attempts=attempts
            ) from error

    def _send_once(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        data: bytes | None,
        headers: Mapping[str, str],
        is_write: bool,
    ) -> requests.Response:
        # Sign and prepare outside the slot: a slot is the account's scarce resource, and OAuth signing
        # is client CPU that need not hold it (this keeps throughput near limit / latency).
        prepared = self._session.prepare_request(
            requests.Request(method, self.base_url + path, params=params, data=data, headers=headers)
        )
        send_settings = self._session.merge_environment_settings(prepared.url, {}, None, None, None)
        authorization = prepared.headers.get("Authorization")
        with self._limiter.slot():
            if self._denied is not None:
                # Refused once, refused always: requests queued behind the first refusal are not sent.
                raise AccessDenied(self._denied.system, self._denied.line)
            with self._counter_lock:
                self._requests += 1
                self._writes += int(is_write)
            # Not streamed: the whole body is read inside the slot, so a response that breaks off
            # mid-body fails here, as part of this attempt.
            response = self._session.send(prepared, timeout=(min(10.0, self._timeout), self._timeout), **send_settings)
        if response.status_code >= 400:
            if response.status_code == 401 and self._bearer is not None:
                self._bearer.forget(authorization)
            raise NetSuiteError.from_response(response, f"{method} {path}")
        return response

    def _count_retry(self, error: BaseException, seconds: float) -> None:
        with self._counter_lock:
            self._retries += 1


def _record_key(id_or_eid: str) -> str:
    if id_or_eid.startswith("eid:"):
        return eid(id_or_eid[4:])
    if not EXTERNAL_ID_PATTERN.fullmatch(id_or_eid):
        raise ValueError(f"not a NetSuite internal id or eid: reference: {id_or_eid!r}")
    return id_or_eid


def _internal_id_from_location(location: str | None) -> str | None:
    """`.../record/v1/customer/647` -> "647" (absolute or relative URL)."""
    if not location:
        return None
    last = urlparse(location).path.rstrip("/").rsplit("/", 1)[-1]
    return last if last and not last.startswith("eid:") else None


class NetSuiteResource(dg.ConfigurableResource):
    """NetSuite SuiteTalk REST, authenticated with TBA (OAuth 1.0a) or OAuth 2.0 M2M.

    Wire each field with `dg.EnvVar("NETSUITE_...")`. Set either the four TBA fields or the M2M fields
    (client id, certificate id, and the private key as PEM or a file); M2M wins when both are complete.
    `concurrency` is the account's governance limit; `get_client()` returns one client per resource
    instance (per step), so all threads of a step share that limit.
    """

    account_id: str = Field(description="NetSuite account id, e.g. 123456 or 123456_SB1")
    consumer_key: str | None = Field(default=None, repr=False, description="TBA consumer key")
    consumer_secret: str | None = Field(default=None, repr=False, description="TBA consumer secret")
    token_id: str | None = Field(default=None, repr=False, description="TBA token id")
    token_secret: str | None = Field(default=None, repr=False, description="TBA token secret")
    oauth2_client_id: str | None = Field(default=None, repr=False, description="M2M integration client id")
    oauth2_certificate_id: str | None = Field(default=None, description="M2M certificate id (JWT kid)")
    oauth2_private_key: str | None = Field(default=None, repr=False, description="M2M private key, PEM")
    oauth2_private_key_file: str | None = Field(
        default=None, description="path of the M2M private key (PEM), instead of oauth2_private_key"
    )
    base_url: str | None = Field(default=None, description="override of https://<account>.suitetalk.api.netsuite.com")
    concurrency: int = Field(default=5, description="the account's concurrent-request limit")
    timeout_seconds: float = Field(default=120.0, description="per-request timeout")
    # The shared retry policy's budget; a write still unanswered after it is an exception the next run retries.
    retry_max_attempts: int = Field(
        default=DEFAULT_RETRY_POLICY.max_attempts, description="attempts per request before giving up"
    )
    retry_max_seconds: float = Field(
        default=DEFAULT_RETRY_POLICY.max_seconds, description="time budget per request, waits included"
    )

    _client: NetSuiteClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def get_client(self) -> NetSuiteClient:
        with self._client_lock:
            if self._client is None:
                oauth1, oauth2 = self._oauth1(), self._oauth2()
                if oauth1 is None and oauth2 is None:
                    raise ValueError(
                        "NetSuite credentials are incomplete: set NETSUITE_CLIENT_ID, NETSUITE_CERTIFICATE_ID and"
                        " NETSUITE_PRIVATE_KEY or NETSUITE_PRIVATE_KEY_FILE (OAuth 2.0 M2M), or NETSUITE_CONSUMER_KEY,"
                        " NETSUITE_CONSUMER_SECRET, NETSUITE_TOKEN_ID and NETSUITE_TOKEN_SECRET (TBA);"
                        " `sync-pipeline check-config` says which is active"
                    )
                self._client = NetSuiteClient(
                    self.account_id,
                    oauth1=oauth1,
                    oauth2=oauth2,
                    base_url=self.base_url or None,
                    concurrency=self.concurrency,
                    timeout_seconds=self.timeout_seconds,
                    retry_policy=replace(
                        DEFAULT_RETRY_POLICY, max_attempts=self.retry_max_attempts, max_seconds=self.retry_max_seconds
                    ),
                )
            return self._client

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._client is not None:
            self._client.close()

    def _oauth1(self) -> OAuth1Credentials | None:
        values = (self.consumer_key, self.consumer_secret, self.token_id, self.token_secret)
        if not all(values):
            return None
        return OAuth1Credentials(*values)  # type: ignore[arg-type]

    def _oauth2(self) -> OAuth2M2MCredentials | None:
        if not (self.oauth2_client_id and self.oauth2_certificate_id):
            return None
        private_key = self.oauth2_private_key
        if not private_key and self.oauth2_private_key_file:
            # Read when the client is made, so a rotated key file is picked up by the next run without a reload.
            private_key = Path(self.oauth2_private_key_file).read_text(encoding="utf-8")
        if not private_key:
            return None
        return OAuth2M2MCredentials(self.oauth2_client_id, self.oauth2_certificate_id, private_key)
