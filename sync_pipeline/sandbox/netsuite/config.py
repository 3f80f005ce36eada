"""The stand-in's knobs (`NetSuiteConfig`) and the sandbox account file (reference lists + rules)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SANDBOX_ACCOUNT_ID = "123456_SB1"
SANDBOX_M2M_CERTIFICATE_ID = "sandbox-m2m-certificate"
PIPELINE_AUTH_METHODS = ("tba", "m2m")
ACCOUNT_FILE = Path(__file__).resolve().parent.parent / "netsuite_account.yaml"
CURRENCY_PRECISIONS = frozenset({0, 2})


@dataclass
class NetSuiteConfig:
    """Credentials, account rules, governance and faults. Every field can change at run time
    (`POST /_sandbox/config`); rates are fractions of REST requests in [0, 1]."""

    # Token-based auth (OAuth 1.0a); the realm must equal account_id.
    account_id: str = SANDBOX_ACCOUNT_ID
    consumer_key: str = "sandbox-consumer-key"
    consumer_secret: str = "sandbox-consumer-secret"
    token_id: str = "sandbox-token-id"
    token_secret: str = "sandbox-token-secret"
    # OAuth 2.0 client credentials (M2M): client id and certificate id -> certificate (or public key) PEM.
    m2m_client_id: str = "sandbox-m2m-client-id"
    m2m_certificates: dict[str, str] = field(default_factory=dict)
    access_token_seconds: int = 3600
    # Which credentials `env()` hands the pipeline: "tba", or "m2m" (a key pair and self-signed certificate are
    # made at start, the certificate mapped under SANDBOX_M2M_CERTIFICATE_ID, the private key written to
    # m2m_key_file, or kept from it when it exists; without m2m_key_file, to a private temporary file).
    pipeline_auth: str = "tba"
    m2m_key_file: str = ""
    # Reject a re-used nonce, and timestamps further than this from the server clock.
    replay_protection: bool = True
    timestamp_tolerance_seconds: int = 300
    # The account: reference lists and rules; None means "as in the account file".
    account_file: str = str(ACCOUNT_FILE)
    required_fields: dict[str, list[str]] | None = None
    mandatory_fields: dict[str, list[str]] | None = None
    transaction_subsidiary_must_match_customer: bool | None = None
    # Lines one transaction may have (all its sublists together); more are refused with a 400. NetSuite documents
    # 5,000 for SOAP web services and CSV import (help "Entering Transaction Line Items", section_N550610); the
    # REST figure is not stated and assumed the same.
    max_transaction_lines: int = 5000
    # Governance: more requests in flight than this are refused at once.
    concurrency_limit: int = 5
    concurrency_status: int = 429  # one capture shows 400 for the same error body
    # NetSuite's response time, the stand-in's own work included (it waits only what is left), so that
    # concurrency_limit / latency is the ceiling a client can reach, as wire-protocols.md states it.
    latency_ms: float = 0
    # Faults on /services/rest paths (never on /_sandbox).
    error_rate: float = 0
    timeout_rate: float = 0
    timeout_seconds: float = 30.0
    lost_response_rate: float = 0
    seed: int = 0
    # Once this many writes are applied (since the stats were reset), further writes wait until it is set
    # back to 0: a run can be stopped mid-write at an exact count (0 = never hold).
    hold_writes_after: int = 0

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply a JSON object of changes; unknown names or bad values raise ValueError, nothing changed."""
        coerced = {name: self._coerce(name, value) for name, value in changes.items()}
        for name, value in coerced.items():
            setattr(self, name, value)

    def _coerce(self, name: str, value: Any) -> Any:
        declared = {f.name: f for f in dataclasses.fields(self)}
        if name not in declared:
            raise ValueError(f"unknown NetSuiteConfig field {name!r}")
        spec = declared[name]
        current = spec.default_factory() if spec.default is dataclasses.MISSING else spec.default  # type: ignore[misc]
        if name in _OPTIONAL_FIELDS and value is None:
            return None
        if isinstance(current, bool) or name == "transaction_subsidiary_must_match_customer":
            if not isinstance(value, bool):
                raise ValueError(f"{name} must be true or false")
            return value
        if isinstance(current, (int, float)):
            # Rates, latencies and timeouts are fractional even where the default is written as 0.
            fractional = isinstance(current, float) or name.endswith(("_rate", "_ms", "_seconds"))
            number = float(value) if fractional else int(value)
            if name.endswith("_rate") and not 0 <= number <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
            if number < 0 or (name in ("concurrency_limit", "max_transaction_lines") and number < 1):
                raise ValueError(f"{name} out of range: {value!r}")
            return number
        if name in ("required_fields", "mandatory_fields"):
            return _field_lists(name, value)
        if name == "pipeline_auth" and value not in PIPELINE_AUTH_METHODS:
            raise ValueError(f"pipeline_auth must be one of {', '.join(PIPELINE_AUTH_METHODS)}")
        if name == "m2m_certificates":
            if not isinstance(value, dict):
                raise ValueError("m2m_certificates must map certificate id -> public key PEM")
            return {str(k): str(v) for k, v in value.items()}
        return str(value)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_OPTIONAL_FIELDS = {"required_fields", "mandatory_fields", "transaction_subsidiary_must_match_customer"}


def _field_lists(name: str, value: Any) -> dict[str, list[str]]:
    if not isinstance(value, dict) or not all(isinstance(v, list) for v in value.values()):
        raise ValueError(f"{name} must map record type -> list of field names")
    return {str(k): [str(f) for f in v] for k, v in value.items()}


@dataclass(frozen=True)
class AccountFile:
    """The parsed account file: reference records by type and id, and the account's rules."""

    reference: Mapping[str, Mapping[str, Mapping[str, Any]]]
    required_fields: Mapping[str, tuple[str, ...]]
    mandatory_fields: Mapping[str, tuple[str, ...]]
    field_labels: Mapping[str, str]
    transaction_subsidiary_must_match_customer: bool


@functools.lru_cache(maxsize=8)
def load_account_file(path: str = str(ACCOUNT_FILE)) -> AccountFile:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    rules = data.get("rules", {})
    reference = {
        record_type: {str(row["id"]): {**row, "id": str(row["id"])} for row in rows}
        for record_type, rows in data.get("reference", {}).items()
    }
    for currency in reference.get("currency", {}).values():
        # An account file cannot describe a currency NetSuite could not hold (help: "Currency Decimal Precision").
        if currency.get("currencyPrecision", 2) not in CURRENCY_PRECISIONS:
            raise ValueError(
                f"{path}: currency {currency.get('name')} has currencyPrecision {currency['currencyPrecision']}; "
                f"NetSuite supports only {sorted(CURRENCY_PRECISIONS)}"
            )
    return AccountFile(
        reference=reference,
        required_fields=_tuples(rules.get("required_fields", {})),
        mandatory_fields=_tuples(rules.get("mandatory_fields", {})),
        field_labels=dict(data.get("field_labels", {})),
        transaction_subsidiary_must_match_customer=bool(rules.get("transaction_subsidiary_must_match_customer", True)),
    )


def _tuples(mapping: Mapping[str, list[str] | None]) -> dict[str, tuple[str, ...]]:
    return {record_type: tuple(fields or ()) for record_type, fields in mapping.items()}


@dataclass(frozen=True)
class AccountRules:
    """The rules in force for one request: the account file overridden by the config."""

    required_fields: Mapping[str, tuple[str, ...]]
    mandatory_fields: Mapping[str, tuple[str, ...]]
    field_labels: Mapping[str, str]
    transaction_subsidiary_must_match_customer: bool
    max_transaction_lines: int = 5000

    @classmethod
    def of(cls, config: NetSuiteConfig) -> AccountRules:
        account = load_account_file(config.account_file)
        match = config.transaction_subsidiary_must_match_customer
        return cls(
            required_fields=_tuples(config.required_fields)
            if config.required_fields is not None
            else account.required_fields,
            mandatory_fields=_tuples(config.mandatory_fields)
            if config.mandatory_fields is not None
            else account.mandatory_fields,
            field_labels=account.field_labels,
            transaction_subsidiary_must_match_customer=account.transaction_subsidiary_must_match_customer
            if match is None
            else match,
            max_transaction_lines=config.max_transaction_lines,
        )

    def fields_required(self, record_type: str) -> tuple[str, ...]:
        required = self.required_fields.get(record_type, ())
        extra = tuple(f for f in self.mandatory_fields.get(record_type, ()) if f not in required)
        return required + extra

    def label(self, field_name: str) -> str:
        if field_name in self.field_labels:
            return self.field_labels[field_name]
        # camelCase -> "Camel Case", the way NetSuite labels most fields.
        spaced = "".join(f" {c}" if c.isupper() else c for c in field_name)
        return spaced.strip().title()
