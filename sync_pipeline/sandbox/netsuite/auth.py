"""NetSuite's two ways in: token-based auth (OAuth 1.0a, HMAC-SHA256) and OAuth 2.0 client
credentials (a JWT assertion signed with the key of a certificate mapped to the integration,
exchanged for a bearer token; help "The Request Token Structure" and "POST Request to the Token
Endpoint and the Access Token Response").

OAuth 1.0a signatures are recomputed per RFC 5849 with oauthlib's escaping, parameter collection
(query, form body) and base-string-URI rules; the header parsing, escaping fast path and
normalisation are small local equivalents of oauthlib's (profiled hot spots), checked against
oauthlib's functions in the tests.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import hmac
import re
import secrets
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from oauthlib.oauth1.rfc5849 import signature, utils

from .config import NetSuiteConfig
from .errors import invalid_login

SIGNATURE_METHOD = "HMAC-SHA256"
TOKEN_PATH = "/services/rest/auth/oauth2/v1/token"
JWT_BEARER_ASSERTION = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
# What NetSuite documents for the assertion's `alg` ("The Request Token Structure"): RSA-PSS or ECDSA, never
# RS256 (RSA PKCS#1 v1.5), which it refuses.
M2M_ALGORITHMS = ("PS256", "PS384", "PS512", "ES256", "ES384", "ES512")
M2M_SCOPE = "rest_webservices"
# The other scopes an assertion may name (comma-separated, or a JSON list as in NetSuite's own sample).
M2M_KNOWN_SCOPES = frozenset({"restlets", "rest_webservices", "suite_analytics"})
MAX_ASSERTION_SECONDS = 3600
# iat a little ahead of our clock is a client clock skew, not a forgery.
ASSERTION_CLOCK_LEEWAY_SECONDS = 30
# NetSuite's sample answer shows expires_in as the string "3600" (unconfirmed whether always): clients must take
# a string or a number, so the stand-in sends the string.
EXPIRES_IN_AS_STRING = True
TOKEN_TYPE = "Bearer"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@functools.lru_cache(maxsize=16)
def _hmac_key(consumer_secret: str, token_secret: str) -> bytes:
    # RFC 5849 3.4.2: key = escape(consumer secret) & escape(token secret); cached because it never changes.
    return f"{utils.escape(consumer_secret)}&{utils.escape(token_secret)}".encode()


def sign_base_string(base_string: str, consumer_secret: str, token_secret: str) -> str:
    digest = hmac.new(_hmac_key(consumer_secret, token_secret), base_string.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


_UNRESERVED = re.compile(r"[A-Za-z0-9._~-]*")
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_]+)\s*=\s*(?:"([^"]*)"|([^,\s]*))\s*(?:,|$)')


def oauth_escape(value: str) -> str:
    """RFC 5849 3.6 percent-encoding, as oauthlib's `utils.escape`; unreserved-only text (most of a
    header: keys, nonces, timestamps) is returned as is without the encode/quote round trip."""
    return value if _UNRESERVED.fullmatch(value) else utils.escape(value)


def parse_oauth_header(authorization: str) -> list[tuple[str, str]]:
    """`OAuth k="v", ...` -> [(k, v)], oauth_* values unescaped (what oauthlib's collect_parameters
    yields for the header; a regex instead of urllib's generic list parser, which was a hot spot)."""
    if authorization[:6].lower() != "oauth ":
        raise ValueError("not an OAuth authorization header")
    text, position, params = authorization[6:], 0, []
    while position < len(text):
        match = _AUTH_PARAM.match(text, position)
        if match is None or match.end() == position:
            raise ValueError("malformed OAuth authorization header")
        name, value = match.group(1), match.group(2) if match.group(2) is not None else match.group(3)
        if name.startswith("oauth_") and "%" in value:
            value = utils.unescape(value)
        params.append((name, value))
        position = match.end()
    return params


@functools.lru_cache(maxsize=64)
def base_uri_prefix(scheme: str, host: str) -> str:
    """oauthlib's base string URI for scheme + Host (lower-cased, default port dropped), without the path."""
    return signature.base_string_uri(f"{scheme}://{host}/")[:-1]


def signature_base_string(method: str, base_uri: str, params: list[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: the same text as oauthlib's normalize_parameters + signature_base_string."""
    pairs = sorted((oauth_escape(k), oauth_escape(v)) for k, v in params)
    normalized = "&".join(f"{k}={v}" for k, v in pairs)
    # Every pair is already escaped (unreserved characters and %XX only), so escaping the joined text
    # changes just these three characters: exact, and much cheaper than quoting it again.
    escaped_normalized = normalized.replace("%", "%25").replace("&", "%26").replace("=", "%3D")
    return f"{oauth_escape(method.upper())}&{oauth_escape(base_uri)}&{escaped_normalized}"


@dataclass
class OAuth1Verifier:
    """Checks `Authorization: OAuth ...` headers; remembers nonces to refuse replays."""

    seen_nonces: dict[str, float] = field(default_factory=dict)
    _next_prune: float = 0.0

    def verify(
        self,
        config: NetSuiteConfig,
        method: str,
        scheme: str,
        host: str,
        raw_path: str,
        query: str,
        authorization: str,
        body: bytes,
        content_type: str,
    ) -> None:
        """Raise INVALID_LOGIN unless the request is signed by the configured consumer and token.

        `raw_path` is the path as sent (still percent-encoded), `host` the Host header: the URL the client signed.
        """
        form_body = body.decode("utf-8", "replace") if content_type.startswith(FORM_CONTENT_TYPE) else None
        try:
            header_params = parse_oauth_header(authorization)
            request_params = signature.collect_parameters(uri_query=query, body=form_body) if query or form_body else []
        except (ValueError, TypeError):
            raise invalid_login() from None
        oauth = dict(header_params)
        self._check_identity(config, oauth)
        signed = [(k, v) for k, v in header_params if k not in ("realm", "oauth_signature")] + request_params
        base_string = signature_base_string(method, base_uri_prefix(scheme, host) + raw_path, signed)
        expected = sign_base_string(base_string, config.consumer_secret, config.token_secret)
        if not hmac.compare_digest(expected, oauth.get("oauth_signature", "")):
            raise invalid_login()
        if "oauth_body_hash" in oauth and not _body_hash_matches(oauth["oauth_body_hash"], body):
            raise invalid_login()
        if config.replay_protection:
            self._check_fresh(config, oauth)

    @staticmethod
    def _check_identity(config: NetSuiteConfig, oauth: Mapping[str, str]) -> None:
        if (
            oauth.get("realm") != config.account_id
            or oauth.get("oauth_signature_method") != SIGNATURE_METHOD
            or oauth.get("oauth_version", "1.0") != "1.0"
            or not hmac.compare_digest(oauth.get("oauth_consumer_key", ""), config.consumer_key)
            or not hmac.compare_digest(oauth.get("oauth_token", ""), config.token_id)
        ):
            raise invalid_login()

    def _check_fresh(self, config: NetSuiteConfig, oauth: Mapping[str, str]) -> None:
        now = time.time()
        try:
            timestamp = int(oauth.get("oauth_timestamp", ""))
        except ValueError:
            raise invalid_login() from None
        nonce = oauth.get("oauth_nonce", "")
        window = config.timestamp_tolerance_seconds
        if not nonce or abs(now - timestamp) > window or nonce in self.seen_nonces:
            raise invalid_login()
        self.seen_nonces[nonce] = now
        if now >= self._next_prune:
            # A nonce older than the window cannot come back: its timestamp would be refused.
            self.seen_nonces = {n: seen for n, seen in self.seen_nonces.items() if now - seen <= window}
            self._next_prune = now + min(window, 60)


def _body_hash_matches(received: str, body: bytes) -> bool:
    # oauthlib hashes the body with SHA-1 (draft-eaton-oauth-bodyhash) whatever the signature method.
    candidates = (hashlib.sha1(body).digest(), hashlib.sha256(body).digest())  # noqa: S324 - protocol-defined
    return any(hmac.compare_digest(received, base64.b64encode(d).decode()) for d in candidates)


# ---- OAuth 2.0 client credentials (M2M) ----------------------------------------------------------
class OAuth2Error(Exception):
    """RFC 6749 5.2 error response."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


@dataclass
class BearerTokens:
    """Access tokens issued by the token endpoint, with their expiry (epoch seconds)."""

    expiry: dict[str, float] = field(default_factory=dict)

    def issue(self, config: NetSuiteConfig, form: Mapping[str, str], token_url: str) -> dict[str, object]:
        verify_client_assertion(config, form, token_url)
        token = secrets.token_urlsafe(32)
        now = time.time()
        self.expiry = {t: e for t, e in self.expiry.items() if e > now}
        self.expiry[token] = now + config.access_token_seconds
        seconds = config.access_token_seconds
        return {
            "access_token": token,
            "expires_in": format(seconds, "g") if EXPIRES_IN_AS_STRING else seconds,
            "token_type": TOKEN_TYPE,
        }

    def verify(self, token: str) -> None:
        """An unknown, revoked or expired token gets NetSuite's 401 INVALID_LOGIN."""
        if self.expiry.get(token, 0.0) <= time.time():
            raise invalid_login()

    def expire_all(self) -> int:
        """End every token issued so far (as a revoked mapping or a lapsed hour would); returns how many were live."""
        now = time.time()
        live = sum(1 for e in self.expiry.values() if e > now)
        self.expiry = {}
        return live


def verify_client_assertion(config: NetSuiteConfig, form: Mapping[str, str], token_url: str) -> None:
    """Check the assertion as NetSuite does: alg, kid (a mapped certificate), signature with that certificate's
    public key, iss = client id, aud = token URL, exp/iat (at most an hour apart), scope."""
    if form.get("grant_type") != "client_credentials":
        raise OAuth2Error("unsupported_grant_type", "grant_type must be client_credentials")
    if form.get("client_assertion_type") != JWT_BEARER_ASSERTION:
        raise OAuth2Error("invalid_request", f"client_assertion_type must be {JWT_BEARER_ASSERTION}")
    assertion = form.get("client_assertion", "")
    try:
        header = jwt.get_unverified_header(assertion)
    except jwt.PyJWTError as exc:
        raise OAuth2Error("invalid_request", f"client_assertion is not a JWT: {exc}") from None
    algorithm, certificate = header.get("alg"), config.m2m_certificates.get(str(header.get("kid")))
    if algorithm not in M2M_ALGORITHMS:
        raise OAuth2Error("invalid_client", f"JWT alg must be one of {', '.join(M2M_ALGORITHMS)}", 401)
    if certificate is None:
        raise OAuth2Error("invalid_client", "JWT kid names no certificate mapped to this integration", 401)
    try:
        claims = jwt.decode(
            assertion,
            public_key_of(certificate),
            algorithms=[algorithm],
            audience=token_url,
            issuer=config.m2m_client_id,
            leeway=ASSERTION_CLOCK_LEEWAY_SECONDS,
            options={"require": ["exp", "iat", "iss", "aud", "scope"]},
        )
    except (jwt.PyJWTError, ValueError) as exc:
        raise OAuth2Error("invalid_client", f"client_assertion refused: {exc}", 401) from None
    scope = claims["scope"]
    scopes = {str(s).strip() for s in scope} if isinstance(scope, list) else set(re.split(r"[\s,]+", str(scope)))
    scopes.discard("")
    if M2M_SCOPE not in scopes or not scopes <= M2M_KNOWN_SCOPES:
        raise OAuth2Error(
            "invalid_scope", f"scope must include {M2M_SCOPE} and only {', '.join(sorted(M2M_KNOWN_SCOPES))}"
        )
    if int(claims["exp"]) > int(claims["iat"]) + MAX_ASSERTION_SECONDS:
        raise OAuth2Error("invalid_client", f"exp may be at most {MAX_ASSERTION_SECONDS} s after iat", 401)


def public_key_of(pem: str) -> object:
    """The public key of an X.509 certificate PEM (what NetSuite's M2M setup uploads) or of a bare public key PEM."""
    data = pem.encode()
    if b"-----BEGIN CERTIFICATE-----" in data:
        certificate = x509.load_pem_x509_certificate(data)
        now = dt.datetime.now(dt.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise ValueError("the mapped certificate is not valid now (expired or not yet valid)")
        return certificate.public_key()
    return serialization.load_pem_public_key(data)


def _new_private_key(algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    if algorithm not in M2M_ALGORITHMS:
        raise ValueError(f"algorithm must be one of {M2M_ALGORITHMS}")
    if algorithm.startswith("PS"):
        return rsa.generate_private_key(65537, 2048)
    curve = {"ES256": ec.SECP256R1(), "ES384": ec.SECP384R1(), "ES512": ec.SECP521R1()}[algorithm]
    return ec.generate_private_key(curve)


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def self_signed_certificate(private_pem: str, common_name: str = "sync-pipeline sandbox M2M", days: int = 730) -> str:
    """A self-signed X.509 certificate (PEM) for a private key, as one makes with `openssl req -x509` to upload to
    NetSuite's OAuth 2.0 Client Credentials (M2M) Setup (which takes certificates valid up to two years)."""
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def generate_m2m_certificate(algorithm: str = "PS256") -> tuple[str, str]:
    """A fresh (private key PEM, self-signed certificate PEM) for the M2M flow."""
    private_pem = _private_pem(_new_private_key(algorithm))
    return private_pem, self_signed_certificate(private_pem)


def generate_m2m_key_pair(algorithm: str = "PS256") -> tuple[str, str]:
    """A fresh (private PEM, public PEM) pair for the M2M flow: RSA 2048 for PS*, the matching curve for ES*."""
    key = _new_private_key(algorithm)
    private_pem = _private_pem(key)
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private_pem, public_pem


def parse_form(body: bytes) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
