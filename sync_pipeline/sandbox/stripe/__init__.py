"""A Stripe stand-in that the real `stripe` SDK talks to unchanged (API version `2026-10-28.endive`).

    with start_stripe() as sandbox:
        client = stripe.StripeClient(sandbox.api_key, base_addresses={"api": sandbox.url})
        client.v1.customers.create(params={"email": "a@example.com"})

Money: every charge, refund, dispute, payout, payout failure or cancellation (`POST /v1/payouts/<id>/cancel`,
pending manual payouts only), balance adjustment and account fee writes a balance transaction. With the
`settlement_currencies` knob set, a charge in another currency settles in the first of them, converted at
`exchange_rates` (`{"eur:usd": "1.0850"}`); its refunds and disputes convert at the charge's rate.

Control endpoints (no auth, JSON bodies) live under `/_sandbox/`:

    GET  stats | POST stats/reset          request counts by method/status/route, writes, faults,
                                           peak concurrency, objects per type, webhook deliveries
    GET  config | POST config              read / change any StripeConfig knob at run time
    GET  records/<type>                    everything stored of a type (customer, invoice, ...,
                                           line_item, credit_note_line_item, webhook_delivery)
    POST reset                             empty the state (ids restart; the clock returns to real)
    GET  clock | POST clock                {"now": unix} freezes, {"advance": s} moves, {"real": true}
    POST disputes                          {"charge" | "payment_intent", "reason"?, "amount"?} opens one
    POST disputes/<id>/close               {"outcome": "won" | "lost"}
    POST subscriptions/<id>/advance        next period: renewal invoice, charged; the clock moves to
                                           the period end unless {"move_clock": false}
    POST payouts                           automatic payouts of the available balance ({"currency"?}); each
                                           links what it pays (`GET /v1/balance_transactions?payout=`)
    POST payouts/<id>/fail                 {"failure_code"?: "account_closed"} the bank returns a pending,
                                           in-transit or paid payout: `payout_failure` transaction (+amount,
                                           category payout_reversal), paid out again by the next payout
    POST balance_adjustments               {"currency", "amount" (signed minor units), "description"?}:
                                           `adjustment` / other_adjustment, source an `adj_` id
    POST account_fees                      {"currency", "amount" (> 0, the fee), "description"?}: `stripe_fee`
                                           / fee transaction of -amount, no source ("Billing - Usage Fee")
    POST seed                              {"invoices": n, "currency"?, "customers"?, "events"?} bulk
    GET  webhooks                          pending deliveries and the delivery log
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from sync_pipeline.sandbox.server import ServerHandle, serve_in_thread
from sync_pipeline.sandbox.stripe.app import StripeApp, create_stripe_app
from sync_pipeline.sandbox.stripe.config import API_VERSION, DEFAULT_API_KEY, StripeConfig
from sync_pipeline.sandbox.stripe.seeding import seed_paid_invoices
from sync_pipeline.sandbox.stripe.state import StripeState

__all__ = [
    "API_VERSION",
    "DEFAULT_API_KEY",
    "StripeConfig",
    "StripeSandbox",
    "StripeState",
    "create_stripe_app",
    "seed_paid_invoices",
    "start_stripe",
]


@dataclass
class StripeSandbox:
    """A running stand-in: where it listens, its state and config, and how to stop it."""

    url: str
    state: StripeState
    config: StripeConfig
    app: Any = field(repr=False)
    handle: ServerHandle = field(repr=False)
    api_key: str = DEFAULT_API_KEY

    @property
    def stand_in(self) -> StripeApp:
        return self.app.state.stand_in

    def webhook_secret(self) -> str:
        """The configured secret, else the newest enabled endpoint's, else ""."""
        if self.config.webhook_secret:
            return self.config.webhook_secret
        endpoints = self.state.collections["webhook_endpoint"]
        for endpoint in endpoints.newest_first():
            if endpoint["status"] == "enabled":
                return endpoint["secret"]
        return ""

    def env(self) -> dict[str, str]:
        return {
            "STRIPE_API_KEY": self.api_key,
            "STRIPE_API_BASE": self.url,
            "STRIPE_WEBHOOK_SECRET": self.webhook_secret(),
        }

    def stop(self) -> None:
        self.stand_in.dispatcher.shutdown()
        self.handle.stop()

    def __enter__(self) -> StripeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_stripe(
    config: StripeConfig | None = None, state: StripeState | None = None, port: int = 0, **overrides: Any
) -> StripeSandbox:
    """Serve the stand-in on 127.0.0.1 from a thread; `overrides` set Config fields (`latency_ms=5`)."""
    config = dataclasses.replace(config or StripeConfig(), **overrides)
    state = state if state is not None else StripeState(seed=config.seed)
    app = create_stripe_app(state, config)
    handle = serve_in_thread(app, port=port)
    return StripeSandbox(url=handle.url, state=state, config=config, app=app, handle=handle)
