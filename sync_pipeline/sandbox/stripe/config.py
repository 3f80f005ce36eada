"""Behaviour knobs of the Stripe stand-in, and the API version it serves."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

# The version whose shapes the stand-in serves (invoices paid through InvoicePayment objects,
# subscription under `parent`, `Discount.source.coupon`). The pipeline pins the same value on
# its own side; the sandbox must not import it from there.
API_VERSION = "2026-10-28.endive"

TEST_KEY_PREFIX = "sk_test_"
DEFAULT_API_KEY = "sk_test_sandbox"
DEFAULT_WEBHOOK_SECRET = "whsec_sandbox_default"


@dataclass
class StripeConfig:
    """Everything defaults to "off" or to Stripe's own behaviour."""

    latency_ms: float = 0
    seed: int = 0
    # Keys accepted as `Authorization: Bearer <key>`: any key with this prefix.
    api_key_prefix: str = TEST_KEY_PREFIX
    # Restricted keys (`rk_test_...`) and the API paths each may use (prefixes such as "/v1/customers");
    # any other path answers 403 as Stripe does for a restricted key without the permission.
    restricted_keys: dict[str, list[str]] = field(default_factory=dict)
    # 400 when a client sends another Stripe-Version; Stripe itself would render that version.
    strict_api_version: bool = False
    event_retention_days: int = 30
    idempotency_ttl_seconds: int = 24 * 3600
    # Funds of a charge become available (and can be paid out) this many days after it.
    balance_available_days: int = 2
    payout_arrival_days: int = 2
    # Currencies the account settles in (it has a bank account in each). Empty: every charge settles in its own
    # currency. Otherwise a charge in any other currency settles in the first one: its balance transaction is in
    # that currency, converted at `exchange_rates["<charge currency>:<settlement>"]` (a decimal string, units of
    # settlement per unit of the charge's currency; without one, a rough built-in rate). Refunds and disputes of
    # such a charge convert at the charge's rate, and settle where the charge did.
    settlement_currencies: list[str] = field(default_factory=list)
    exchange_rates: dict[str, str] = field(default_factory=dict)
    # Webhook delivery: at least once, optionally duplicated and shuffled like the real thing.
    # Every endpoint gets this secret when set (so it can be known before the endpoint exists);
    # empty: a deterministic `whsec_` per endpoint, returned once by `POST /v1/webhook_endpoints`.
    webhook_secret: str = ""
    webhook_max_attempts: int = 4
    webhook_retry_base_seconds: float = 0.05
    webhook_timeout_seconds: float = 5.0
    webhook_duplicate_rate: float = 0.0
    webhook_shuffle: bool = False
    webhook_shuffle_window: int = 5
    # Faults: a 500 `api_error` before the request runs (replayed under its Idempotency-Key, as
    # Stripe does), 429 `rate_limit` above `rate_limit_per_second` (0 = unlimited), and a write
    # that commits but whose response is lost on the wire.
    error_rate: float = 0.0
    rate_limit_per_second: float = 0.0
    # 429 `rate_limit` for every Nth API request (0 = never). Counted, not timed: a test gets the same
    # 429s however fast or loaded the machine is, where a per-second limit depends on its speed.
    rate_limit_every: int = 0
    lost_response_rate: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON body of knob changes (the `/_sandbox/config` endpoint); unknown names raise."""
        known = {f.name: f for f in dataclasses.fields(self)}
        for name, value in changes.items():
            if name not in known:
                raise KeyError(name)
            current = getattr(self, name)
            if isinstance(current, bool):
                value = bool(value)
            elif isinstance(current, int) and not isinstance(value, bool):
                value = int(value)
            elif isinstance(current, float):
                value = float(value)
            elif isinstance(current, list) and isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            setattr(self, name, value)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
