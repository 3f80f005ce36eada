"""Every setting the pipeline reads, in one catalogue: name, meaning, default, and how it is checked.

Configuration comes from environment variables only. A missing or malformed value fails at start-up
with one line naming the variable and what is expected; secret values are never echoed back.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse


class ConfigError(Exception):
    """A setting is missing or malformed. `str()` is one line a user can act on."""


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    secret: bool = False
    default: str | None = None
    # Returns None when the value is acceptable, else what is expected (never the value itself).
    check: Callable[[str], str | None] | None = None


def _url(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        parsed = urlparse(value)
        if parsed.scheme not in schemes or not parsed.netloc:
            return f"a URL starting with {' or '.join(s + '://' for s in schemes)}"
        return None

    return check


def _pattern(regex: str, expected: str) -> Callable[[str], str | None]:
    compiled = re.compile(regex)
    return lambda value: None if compiled.fullmatch(value) else expected


def _positive_int(value: str) -> str | None:
    return None if value.isdigit() and 0 < int(value) <= 1000 else "a whole number from 1 to 1000"


def _iso_date(value: str) -> str | None:
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return "a date as YYYY-MM-DD"
    return None if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value) else "a date as YYYY-MM-DD"


def _existing_file(value: str) -> str | None:
    return None if Path(value).is_file() else "the path of an existing file"


def _database_url(value: str) -> str | None:
    if value.startswith("sqlite:///"):
        return None
    if value.startswith("postgresql+psycopg2://"):
        return None
    if value.startswith(("postgresql://", "postgres://")):
        # SQLAlchemy 2.1 picks psycopg3 for a bare postgresql:// URL, which is not installed.
        return "the scheme postgresql+psycopg2:// (not postgresql://)"
    return "a SQLAlchemy URL: sqlite:///path/to/file.sqlite or postgresql+psycopg2://user@host/db"


SETTINGS: tuple[Setting, ...] = (
    Setting("STRIPE_API_KEY", "Stripe secret or restricted key", secret=True,
            check=_pattern(r"(sk|rk)_(test|live)_[0-9A-Za-z_]+", "a Stripe key like sk_live_... or rk_live_...")),
    Setting("STRIPE_API_BASE", "override of the Stripe API address (sandbox or proxy)", check=_url(("http", "https"))),
    Setting("STRIPE_WEBHOOK_SECRET", "signing secret of the webhook endpoint", secret=True,
            check=_pattern(r"whsec_[0-9A-Za-z_]+", "a webhook signing secret like whsec_...")),
    Setting("NETSUITE_ACCOUNT_ID", "NetSuite account id, e.g. 123456 or 123456_SB1",
            check=_pattern(r"[0-9A-Za-z_]+", "a NetSuite account id such as 123456 or 123456_SB1")),
    Setting("NETSUITE_CONSUMER_KEY", "integration record's consumer key (TBA)", secret=True),
    Setting("NETSUITE_CONSUMER_SECRET", "integration record's consumer secret (TBA)", secret=True),
    Setting("NETSUITE_TOKEN_ID", "access token id (TBA)", secret=True),
    Setting("NETSUITE_TOKEN_SECRET", "access token secret (TBA)", secret=True),
    Setting("NETSUITE_BASE_URL", "override of https://<account>.suitetalk.api.netsuite.com (sandbox or proxy)",
            check=_url(("http", "https"))),
    Setting("NETSUITE_CONCURRENCY", "the account's concurrent-request governance limit", default="5",
            check=_positive_int),
    Setting("SALESFORCE_INSTANCE_URL", "Salesforce instance or My Domain URL", check=_url(("https",))),
    Setting("SALESFORCE_SESSION_ID", "an existing session id (instead of username/password)", secret=True),
    Setting("SALESFORCE_USERNAME", "integration user's username"),
    Setting("SALESFORCE_PASSWORD", "integration user's password", secret=True),
    Setting("SALESFORCE_SECURITY_TOKEN", "integration user's security token", secret=True),
    Setting("SALESFORCE_CA_BUNDLE", "CA file to trust for Salesforce (the sandbox's throw-away CA)",
            check=_existing_file),
    Setting("SYNC_DATABASE_URL", "ledger, webhook inbox and exceptions database (SQLAlchemy URL)",
            check=_database_url),
    Setting("SYNC_FIELD_MAPPING", "path of the field-mapping YAML", default="field_mapping.yaml",
            check=_existing_file),
    Setting("SYNC_START_DATE", "first daily partition (UTC)", default="2026-01-01", check=_iso_date),
    Setting("SYNC_EVENT_SOURCE", "where the Stripe event sensor reads: the Events API, or the webhook inbox that "
            "`sync-pipeline webhooks serve` fills", default="events_api",
            check=_pattern(r"events_api|webhooks", "events_api or webhooks")),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

# What each part of the pipeline cannot run without.
REQUIRED_FOR: dict[str, tuple[str, ...]] = {
    "stripe": ("STRIPE_API_KEY",),
    "netsuite": ("NETSUITE_ACCOUNT_ID", "NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET",
                 "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET"),
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
    for part in require:
        for name in REQUIRED_FOR[part]:
            if not env.get(name):
                problems.append(_problem(name, f"a value ({BY_NAME[name].description}); it is not set"))
        if part == "salesforce" and env.get("SALESFORCE_INSTANCE_URL"):
            has_session = bool(env.get("SALESFORCE_SESSION_ID"))
            has_login = all(env.get(n) for n in ("SALESFORCE_USERNAME", "SALESFORCE_PASSWORD"))
            if not (has_session or has_login):
                problems.append(
                    "SALESFORCE_SESSION_ID: expected a session id, or SALESFORCE_USERNAME + SALESFORCE_PASSWORD"
                    " + SALESFORCE_SECURITY_TOKEN for a login that renews itself"
                )
    return problems


def require_environment(require: tuple[str, ...] = (), environ: Mapping[str, str] | None = None) -> None:
    """Raise ConfigError with the first problem (one line) if the environment is not usable."""
    problems = check_environment(environ, require)
    if problems:
        more = f" (and {len(problems) - 1} more: run `sync-pipeline check-config`)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)


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


def dagster_home() -> Path:
    return Path(os.environ.get("DAGSTER_HOME") or Path.cwd() / ".dagster_home")


def default_database_url() -> str:
    """The embedded ledger: a SQLite file kept beside Dagster's own storage."""
    return f"sqlite:///{dagster_home().resolve() / 'sync_ledger.sqlite'}"


def database_url(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_DATABASE_URL", environ) or default_database_url()


def start_date(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_START_DATE", environ) or "2026-01-01"


def event_source(environ: Mapping[str, str] | None = None) -> str:
    return get("SYNC_EVENT_SOURCE", environ) or "events_api"


def redact(text: str, environ: Mapping[str, str] | None = None) -> str:
    """Replace every secret setting's value in `text` (for log lines and metadata built from errors)."""
    env = os.environ if environ is None else environ
    for setting in SETTINGS:
        value = env.get(setting.name)
        if setting.secret and value and len(value) >= 4:
            text = text.replace(value, f"<{setting.name}>")
    return text
