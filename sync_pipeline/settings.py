"""Every setting the pipeline reads, in one catalogue: name, meaning, default, and how it is checked.

Configuration comes from environment variables only. A missing or malformed value fails at start-up
with one line naming the variable and what is expected, never the value (a database URL is shown with
its password hidden). Nothing here runs at import: every value is read when a command or the code
location asks for it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from sync_pipeline import stripe_accounts
from sync_pipeline.mapping.field_mapping import billing_start_problem, read_field_mapping

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Beside the package, not in the working directory: a code server started from / finds it too.
DEFAULT_FIELD_MAPPING = PROJECT_ROOT / "field_mapping.yaml"


class ConfigError(Exception):
    """A setting is missing or malformed. `str()` is one line a user can act on."""


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    default: str | None = None
    # Returns None when the value is acceptable, else what is expected (never the value itself).
    check: Callable[[str], str | None] | None = None


def _url(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        try:
            parsed = urlparse(value)
        except ValueError:  # e.g. an unclosed [ in an IPv6 host
            parsed = urlparse("")
        if parsed.scheme not in schemes or not parsed.netloc:
            return f"a URL starting with {' or '.join(s + '://' for s in schemes)}"
        return None

    return check


def _pattern(regex: str, expected: str) -> Callable[[str], str | None]:
    compiled = re.compile(regex)
    return lambda value: None if compiled.fullmatch(value) else expected


# ASCII digits only: str.isdigit and \d also accept "²" or "٣", which int() and dates then refuse.
_ASCII_WHOLE_NUMBER = re.compile(r"[0-9]+")


def _positive_int(value: str) -> str | None:
    ok = _ASCII_WHOLE_NUMBER.fullmatch(value) and 0 < int(value) <= 1000
    return None if ok else "a whole number from 1 to 1000"


def _whole_number_up_to(most: int) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        ok = _ASCII_WHOLE_NUMBER.fullmatch(value) and int(value) <= most
        return None if ok else f"a whole number from 0 to {most}"

    return check


def _iso_date(value: str) -> str | None:
    # The pattern first: fromisoformat alone also takes 20260101 and 2026-W01-1.
    try:
        ok = re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) and dt.date.fromisoformat(value)
    except ValueError:
        ok = None
    return None if ok else "a date as YYYY-MM-DD"


def _existing_file(value: str) -> str | None:
    return None if Path(value).is_file() else "the path of an existing file"


_PEM_KEY_EXPECTED = "an unencrypted PEM private key (RSA or EC), -----BEGIN PRIVATE KEY----- and its lines"


def _pem_private_key(value: str) -> str | None:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        key = load_pem_private_key(value.encode(), password=None)
    except (ValueError, TypeError):  # TypeError: encrypted, and we have no passphrase to give
        return _PEM_KEY_EXPECTED
    return None if isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else _PEM_KEY_EXPECTED


def _pem_private_key_file(value: str) -> str | None:
    try:
        text = Path(value).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "the path of a readable file holding " + _PEM_KEY_EXPECTED
    return None if _pem_private_key(text) is None else "a file holding " + _PEM_KEY_EXPECTED


def _database_url(value: str) -> str | None:
    if value.startswith("sqlite:///"):
        return None
    if value.startswith("postgresql+psycopg2://"):
        try:
            urlparse(value).port  # noqa: B018 - raises for a port that is not a number
        except ValueError:
            return "a URL whose port is a number, e.g. postgresql+psycopg2://user@host:5432/db"
        return None
    if value.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy 2.1 picks psycopg3 for a bare postgresql:// URL, which is not installed.
        return "the scheme postgresql+psycopg2:// (not postgresql://)"
    return "a SQLAlchemy URL: sqlite:///path/to/file.sqlite or postgresql+psycopg2://user@host/db"


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "STRIPE_API_KEY",
        "Stripe secret or restricted key",
        check=_pattern(r"(sk|rk)_(test|live)_[0-9A-Za-z_]+", "a Stripe key like sk_live_... or rk_live_..."),
    ),
    Setting("STRIPE_API_BASE", "override of the Stripe API address (sandbox or proxy)", check=_url(("http", "https"))),
    Setting(
        "STRIPE_WEBHOOK_SECRET",
        "signing secret of the webhook endpoint",
        check=_pattern(r"whsec_[0-9A-Za-z_]+", "a webhook signing secret like whsec_..."),
    ),
    Setting(
        "NETSUITE_ACCOUNT_ID",
        "NetSuite account id, e.g. 123456 or 123456_SB1",
        check=_pattern(r"[0-9A-Za-z_]+", "a NetSuite account id such as 123456 or 123456_SB1"),
    ),
    Setting("NETSUITE_CONSUMER_KEY", "integration record's consumer key (TBA)"),
    Setting("NETSUITE_CONSUMER_SECRET", "integration record's consumer secret (TBA)"),
    Setting("NETSUITE_TOKEN_ID", "access token id (TBA)"),
    Setting("NETSUITE_TOKEN_SECRET", "access token secret (TBA)"),
    Setting("NETSUITE_CLIENT_ID", "integration record's client id (OAuth 2.0 client credentials, M2M)"),
    Setting("NETSUITE_CERTIFICATE_ID", "certificate id of the M2M mapping (OAuth 2.0 Client Credentials (M2M) Setup)"),
    Setting("NETSUITE_PRIVATE_KEY", "private key of the mapped certificate, as PEM text (M2M)", check=_pem_private_key),
    Setting(
        "NETSUITE_PRIVATE_KEY_FILE",
        "path of the private key of the mapped certificate, a PEM file (M2M; instead of NETSUITE_PRIVATE_KEY)",
        check=_pem_private_key_file,
    ),
    Setting(
        "NETSUITE_BASE_URL",
        "override of https://<account>.suitetalk.api.netsuite.com (sandbox or proxy)",
        check=_url(("http", "https")),
    ),
    Setting(
        "NETSUITE_CONCURRENCY", "the account's concurrent-request governance limit", default="5", check=_positive_int
    ),
    Setting("SALESFORCE_INSTANCE_URL", "Salesforce instance or My Domain URL", check=_url(("https",))),
    Setting("SALESFORCE_SESSION_ID", "an existing session id (instead of username/password)"),
    Setting("SALESFORCE_USERNAME", "integration user's username"),
    Setting("SALESFORCE_PASSWORD", "integration user's password"),
    Setting("SALESFORCE_SECURITY_TOKEN", "integration user's security token"),
    Setting(
        "SALESFORCE_CA_BUNDLE", "CA file to trust for Salesforce (the sandbox's throw-away CA)", check=_existing_file
    ),
    Setting("SYNC_DATABASE_URL", "ledger, webhook inbox and exceptions database (SQLAlchemy URL)", check=_database_url),
    # Checked with its content by check_configuration (read_field_mapping names this variable).
    Setting("SYNC_FIELD_MAPPING", f"path of the field-mapping YAML (default {DEFAULT_FIELD_MAPPING})"),
    Setting("SYNC_START_DATE", "first daily partition (UTC)", default="2026-01-01", check=_iso_date),
    Setting(
        "SYNC_EVENT_SOURCE",
        "where the Stripe event sensor reads: the Events API, or the webhook inbox that "
        "`sync-pipeline webhooks serve` fills",
        default="events_api",
        check=_pattern(r"events_api|webhooks", "events_api or webhooks"),
    ),
    Setting(
        "SYNC_EVENT_RUN_MAX_DOCUMENTS",
        "a sensor run syncs only the documents its events name, up to this many per day (more: the whole day; "
        "0: sensor runs always sync whole days)",
        default="500",
        check=_whole_number_up_to(100_000),
    ),
    Setting(
        stripe_accounts.ACCOUNTS_SETTING,
        "several Stripe accounts (legal entities), e.g. us,eu: each with STRIPE_API_KEY_<NAME>, "
        "STRIPE_WEBHOOK_SECRET_<NAME> and its subsidiary under stripe_accounts: in the field mapping",
        check=stripe_accounts.account_names_problem,
    ),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# What each part of the pipeline cannot run without.
REQUIRED_FOR: dict[str, tuple[str, ...]] = {
    "stripe": ("STRIPE_API_KEY",),
    # Plus the credentials of one authentication method: see netsuite_credential_problems.
    "netsuite": ("NETSUITE_ACCOUNT_ID",),
    "salesforce": ("SALESFORCE_INSTANCE_URL",),
    "webhooks": ("STRIPE_WEBHOOK_SECRET",),
}


def _problem(name: str, expected: str) -> str:
    return f"{name}: expected {expected}"


def check_environment(environ: Mapping[str, str] | None = None, require: tuple[str, ...] = ()) -> list[str]:
    """Every problem with the environment, one line each (empty when all is well).

    Malformed values are always reported; missing ones only for the parts named in `require`.
    """
    env = os.environ if environ is None else environ
    problems: list[str] = []
    for setting in SETTINGS:
        value = env.get(setting.name)
        if value in (None, ""):
            continue
        expected = setting.check(value) if setting.check else None
        if expected:
            problems.append(_problem(setting.name, expected))
    several = is_set(stripe_accounts.ACCOUNTS_SETTING, env)
    if several:
        key, secret = (BY_NAME[n].check for n in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET"))
        problems += stripe_accounts.environment_problems(env, require, key, secret)
    for part in require:
        for name in REQUIRED_FOR[part]:
            if not env.get(name) and not (several and name.startswith("STRIPE_")):
                problems.append(_problem(name, f"a value ({BY_NAME[name].description}); it is not set"))
        if part == "salesforce" and env.get("SALESFORCE_INSTANCE_URL"):
            has_session = bool(env.get("SALESFORCE_SESSION_ID"))
            has_login = all(env.get(n) for n in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD"))
            if not (has_session or has_login):
                problems.append(
                    "SALESFORCE_SESSION_ID: expected a session id, or SALESFORCE_USERNAME + SALESFORCE_PASSWORD"
                    " + SALESFORCE_SECURITY_TOKEN for a login that renews itself"
                )
    return problems + netsuite_credential_problems(env, "netsuite" in require)


def check_configuration(environ: Mapping[str, str] | None = None, require: tuple[str, ...] = ()) -> list[str]:
    """Every problem with the environment and with the field-mapping file it points at, one line each."""
    mapping, problems = read_field_mapping(field_mapping_path(environ))
    # Billing refuses to start without a start date, so a deployment that requires Salesforce needs one.
    not_started = billing_start_problem(mapping) if mapping is not None and "salesforce" in require else None
    accounts = stripe_accounts.mapping_problems(mapping, environ) if mapping is not None else []
    return [*check_environment(environ, require), *problems, *accounts, *([not_started] if not_started else [])]


def require_environment(require: tuple[str, ...] = (), environ: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError with the first problem (one line) if the environment is not usable."""
    problems = check_environment(environ, require)
    if problems:
        raise ConfigError(first_problem(problems))


def first_problem(problems: list[str]) -> str:
    """The first problem, and how many more there are, as one line (the rest: `sync-pipeline check-config`)."""
    more = f" (and {len(problems) - 1} more: run `sync-pipeline check-config`)" if len(problems) > 1 else ""
    return problems[0] + more


def get(name: str, environ: Mapping[str, str] | None = None) -> str | None:
    """The value of a setting, or its default; malformed values raise ConfigError."""
    env = os.environ if environ is None else environ
    setting = BY_NAME[name]
    value = env.get(name) or setting.default
    if value is not None and setting.check:
        expected = setting.check(value)
        if expected:
            raise ConfigError(_problem(name, expected))
    return value


def is_set(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether a setting has a value (an empty one counts as unset, as everywhere here)."""
    env = os.environ if environ is None else environ
    return bool(env.get(BY_NAME[name].name))


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def default_database_url() -> str:
    """The embedded ledger: a SQLite file kept beside Dagster's own storage."""
    return f"sqlite:///{dagster_home().resolve() / 'sync_ledger.sqlite'}"


def database_url(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_DATABASE_URL", environ) or default_database_url()


# user:password@ right after the scheme. The password runs to the last @: an unescaped @ in it must not
# leave its end on show (hiding a little more than the password is harmless).
_URL_PASSWORD = re.compile(r"^(?P<head>[\w+]+://[^:/@]*:)(?P<password>.*)@")
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<password>[^&]*)", re.IGNORECASE)


def database_open_problem(url: str, reason: str) -> str:
    """One line for a database that cannot be opened; its password is shown nowhere, URL nor reason."""
    passwords = [m["password"] for m in (_URL_PASSWORD.match(url), *_QUERY_PASSWORD.finditer(url)) if m]
    shown = _QUERY_PASSWORD.sub(r"\g<head>***", _URL_PASSWORD.sub(r"\g<head>***@", url))
    lines = [line.strip() for line in str(reason).splitlines() if line.strip()]
    why = "; ".join(lines) or "no reason given"
    for password in passwords:
        for spelling in {password, unquote(password)} - {""}:
            why = why.replace(spelling, "***")
    return f"SYNC_DATABASE_URL: cannot open {shown} ({why})"


def field_mapping_path(environ: Mapping[str, str] | None = None) -> Path:
    """Absolute path of the field mapping: SYNC_FIELD_MAPPING (relative to the working directory) or the default."""
    value = get("SYNC_FIELD_MAPPING", environ)
    return Path(os.path.abspath(value)) if value else DEFAULT_FIELD_MAPPING


def start_date(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_START_DATE", environ) or "2026-01-01"


def event_source(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_EVENT_SOURCE", environ) or "events_api"


# ---- NetSuite authentication: TBA today, OAuth 2.0 M2M from 2027.1 on ----------------------------------------
NETSUITE_TBA_VARIABLES = (
    "NETSUITE_CONSUMER_KEY",
    "NETSUITE_CONSUMER_SECRET",
    "NETSUITE_TOKEN_ID",
    "NETSUITE_TOKEN_SECRET",
)
NETSUITE_M2M_VARIABLES = ("NETSUITE_CLIENT_ID", "NETSUITE_CERTIFICATE_ID")
NETSUITE_KEY_VARIABLES = ("NETSUITE_PRIVATE_KEY", "NETSUITE_PRIVATE_KEY_FILE")
# NetSuite help: "As of 2027.1, no new integrations using TBA can be created for ... REST web services".
TBA_END_WARNING = (
    "warning: NetSuite accepts no new token-based (TBA) integrations from release 2027.1; existing ones keep "
    "working, but plan the move to OAuth 2.0 M2M (NETSUITE_CLIENT_ID, NETSUITE_CERTIFICATE_ID, "
    "NETSUITE_PRIVATE_KEY_FILE; README, NetSuite authentication)"
)


def netsuite_auth_method(environ: Mapping[str, str] | None = None) -> str | None:
    """ "m2m" once any OAuth 2.0 M2M variable is set (then it must be complete, and TBA is ignored), else "tba"
    once any TBA variable is set, else None. Deciding by *any* M2M variable means a half-done M2M set-up is an
    error naming what is missing, never a silent fall-back to TBA."""
    env = os.environ if environ is None else environ
    if any(env.get(name) for name in (*NETSUITE_M2M_VARIABLES, *NETSUITE_KEY_VARIABLES)):
        return "m2m"
    if any(env.get(name) for name in NETSUITE_TBA_VARIABLES):
        return "tba"
    return None


def netsuite_credential_problems(env: Mapping[str, str], required: bool) -> list[str]:
    """An incomplete or ambiguous M2M set-up, always; missing TBA credentials only when NetSuite is required."""
    method = netsuite_auth_method(env)
    if method == "m2m":
        problems = [
            _problem(name, f"a value ({BY_NAME[name].description}): OAuth 2.0 M2M is half configured")
            for name in NETSUITE_M2M_VARIABLES
            if not env.get(name)
        ]
        keys = [name for name in NETSUITE_KEY_VARIABLES if env.get(name)]
        if not keys:
            problems.append(
                "NETSUITE_PRIVATE_KEY_FILE: expected the path of the private key of certificate NETSUITE_CERTIFICATE_ID"
                " (or the PEM text in NETSUITE_PRIVATE_KEY): OAuth 2.0 M2M is half configured"
            )
        elif len(keys) == 2 and not any(BY_NAME[name].check(env[name]) for name in keys):
            # Two sources of one secret: after a key rotation one of them is stale, and which one was used would
            # decide whether NetSuite accepts the run. Refused rather than ranked. (A malformed one is already
            # reported on its own line.)
            problems.append(
                "NETSUITE_PRIVATE_KEY: expected either NETSUITE_PRIVATE_KEY or NETSUITE_PRIVATE_KEY_FILE, not both;"
                " unset one"
            )
        return problems
    if not required:
        return []
    return [
        _problem(name, f"a value ({BY_NAME[name].description}); it is not set")
        for name in NETSUITE_TBA_VARIABLES
        if not env.get(name)
    ]


def netsuite_auth_description(environ: Mapping[str, str] | None = None) -> str:
    """Which NetSuite authentication the environment selects, in words (names and certificate id, no secret)."""
    env = os.environ if environ is None else environ
    method = netsuite_auth_method(env)
    if method == "m2m":
        ignored = " (the TBA variables set are ignored)" if any(env.get(n) for n in NETSUITE_TBA_VARIABLES) else ""
        certificate = env.get("NETSUITE_CERTIFICATE_ID") or "not set"
        return f"NetSuite auth: OAuth 2.0 M2M (certificate {certificate}){ignored}"
    if method == "tba":
        return "NetSuite auth: token-based authentication (TBA)"
    return "NetSuite auth: not configured (neither OAuth 2.0 M2M nor TBA variables are set)"
