"""A bulk path for benchmarks and demos: many paid invoices in-process, through the same billing
logic the API uses, with `created` times spread into the past."""

from __future__ import annotations

from sync_pipeline.sandbox.stripe.catalog import create_customer, create_price, create_product
from sync_pipeline.sandbox.stripe.config import StripeConfig
from sync_pipeline.sandbox.stripe.invoicing import (
    attempt_payment,
    finalize,
    new_invoice,
    new_invoice_item,
    recompute_totals,
)
from sync_pipeline.sandbox.stripe.payments import refund_charge
from sync_pipeline.sandbox.stripe.state import Ctx, StripeState

SEEDED_PRODUCT = "prod_pro"


def seed_paid_invoices(
    state: StripeState,
    config: StripeConfig,
    count: int,
    *,
    currency: str = "usd",
    unit_amount: int = 1000,
    customers: int = 100,
    start: int | None = None,
    spacing_seconds: int = 60,
    record_events: bool = False,
    refund_every: int = 0,
) -> list[str]:
    """`count` one-line invoices, finalized and paid by card, the i-th created at start + i*spacing; with
    `refund_every` n, every n-th invoice's charge is refunded by a quarter a minute after it was paid.

    Events are off by default: 10,000 invoices would otherwise keep ~100,000 event snapshots.
    """
    with state.lock:
        now = state.clock.now()
        first = start if start is not None else now - count * spacing_seconds
        ctx = Ctx(state, config, first)
        previous_recording = state.record_events
        state.record_events = record_events
        try:
            # One product across seedings: `prod_pro`, an id a mapping can name (the example maps it to an item).
            product = state.find(SEEDED_PRODUCT) or create_product(ctx, {"id": SEEDED_PRODUCT, "name": "Pro plan"})
            price = create_price(ctx, {"product": product["id"], "currency": currency, "unit_amount": str(unit_amount)})
            customer_ids = [
                create_customer(
                    ctx,
                    {
                        "email": f"seed{n}@example.com",
                        "name": f"Seed customer {n}",
                        "payment_method": "pm_card_visa",
                        "invoice_settings": {"default_payment_method": "pm_card_visa"},
                    },
                )["id"]
                for n in range(max(1, min(customers, count)))
            ]
            invoice_ids = []
            for n in range(count):
                ctx.now = first + n * spacing_seconds
                customer = state.collections["customer"].objects[customer_ids[n % len(customer_ids)]]
                invoice = new_invoice(ctx, customer, currency=currency, metadata={"seed": str(n)})
                new_invoice_item(
                    ctx,
                    customer=customer["id"],
                    currency=currency,
                    unit_amount=unit_amount,
                    quantity=1,
                    description="Seeded plan",
                    price=price,
                    invoice=invoice,
                )
                recompute_totals(state, invoice)
                finalize(ctx, invoice)
                attempt_payment(ctx, invoice)
                if refund_every and n % refund_every == refund_every - 1:
                    ctx.now += 60
                    refund_charge(ctx, _charge_of(state, invoice["id"]), unit_amount // 4)
                invoice_ids.append(invoice["id"])
            return invoice_ids
        finally:
            state.record_events = previous_recording


def _charge_of(state: StripeState, invoice_id: str) -> dict:
    payments = state.collections["invoice_payment"]
    for payment in payments.newest_first(payments.index_for("invoice", invoice_id)):
        if payment["status"] == "paid":
            return state.get(
                "charge", state.get("payment_intent", payment["payment"]["payment_intent"])["latest_charge"]
            )
    raise ValueError(f"invoice {invoice_id} has no paid payment to refund")


def seed_history(
    state: StripeState, config: StripeConfig, *, days: int, invoices: int, first_day: int, refund_every: int = 10
) -> list[str]:
    """A history for backfills: `invoices` paid invoices spread evenly over `days` UTC days from `first_day` (Unix
    seconds of its midnight), a customer per 20 invoices, every `refund_every`-th partly refunded the same day."""
    spacing = max(1, (days * 86400 - 3600) // max(invoices, 1))
    return seed_paid_invoices(
        state,
        config,
        invoices,
        customers=max(1, invoices // 20),
        start=first_day + 60,
        spacing_seconds=spacing,
        refund_every=refund_every,
    )
