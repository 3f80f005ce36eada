"""Money movement: payment intents, charges, refunds, disputes, balance transactions, payouts.

Every movement of money writes a balance transaction with Stripe's fee, so a payout's
transactions sum to the payout amount to the minor unit.
"""

from __future__ import annotations

import hashlib
import heapq
from decimal import Decimal
from typing import Any

from sync_pipeline.sandbox.stripe.catalog import resolve_payment_method, test_card_of
from sync_pipeline.sandbox.stripe.common import (
    apply_update,
    metadata_change,
    retrieve_route,
    string_changes,
    update_route,
)
from sync_pipeline.sandbox.stripe.errors import (
    StripeApiError,
    card_error,
    invalid_param,
    invalid_state,
    missing_param,
)
from sync_pipeline.sandbox.stripe.listing import in_range, list_filtered, paginate, parse_range, search
from sync_pipeline.sandbox.stripe.money import (
    check_amount,
    check_currency,
    convert,
    dispute_fee,
    exchange_rate,
    processing_fee,
)
from sync_pipeline.sandbox.stripe.params import get_bool, get_choice, get_dict, get_int, get_str, merge_metadata
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx, StripeState, snapshot

DAY = 86400
STATEMENT_DESCRIPTOR = "SANDBOX"
SANDBOX_BANK_ACCOUNT = "ba_sandbox_payouts"

# --- balance transactions -------------------------------------------------------------------------


def new_balance_transaction(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    txn_type: str,
    category: str,
    source: str | None,
    description: str | None,
    fee: int = 0,
    fee_description: str = "Stripe processing fees",
    available_days: int = 0,
    rate: Decimal | float | None = None,
) -> dict[str, Any]:
    # Card funds settle after a delay; until then the transaction is pending and cannot be paid out.
    # https://docs.stripe.com/payouts#standard-payout-timing
    available_on = ctx.now + available_days * DAY
    txn = {
        "id": ctx.state.new_id("txn"),
        "object": "balance_transaction",
        "amount": amount,
        "available_on": available_on,
        "created": ctx.now,
        "currency": currency,
        "description": description,
        # A number on the wire, as Stripe sends it: amount in the charge's currency x rate = this amount.
        "exchange_rate": float(rate) if rate is not None else None,
        "fee": fee,
        "fee_details": (
            [
                {
                    "amount": fee,
                    "application": None,
                    "currency": currency,
                    "description": fee_description,
                    "type": "stripe_fee",
                }
            ]
            if fee
            else []
        ),
        "net": amount - fee,
        "reporting_category": category,
        "source": source,
        "status": "available" if available_on <= ctx.now else "pending",
        "type": txn_type,
        "balance_type": "payments",
    }
    ctx.state.insert("balance_transaction", txn)
    if txn["status"] == "pending":
        # Kept by availability date, so `settle` releases funds without scanning every transaction.
        heapq.heappush(_pending_balance(ctx.state), (available_on, txn["id"]))
    return txn


def settlement_for(ctx: Ctx, currency: str) -> tuple[str, Decimal | None]:
    """Where a charge in `currency` settles, and the rate (None when it settles in its own currency)."""
    currencies = [c.lower() for c in ctx.config.settlement_currencies]
    if not currencies or currency in currencies:
        return currency, None
    return currencies[0], exchange_rate(ctx.config.exchange_rates, currency, currencies[0])


def charge_settlement(ctx: Ctx, charge: dict[str, Any]) -> tuple[str, Decimal | None]:
    """Where a charge's money went: refunds and disputes of it settle there, at the charge's rate.
    (Stripe converts them at the rate of the day they happen; one rate keeps the sandbox's sums exact.)"""
    txn = ctx.state.collections["balance_transaction"].get(charge["balance_transaction"] or "")
    if txn is None or txn["exchange_rate"] is None:
        return charge["currency"], None
    return txn["currency"], Decimal(repr(txn["exchange_rate"]))


def settled_amount(amount: int, currency: str, settlement: tuple[str, Decimal | None]) -> int:
    """`amount` (may be negative) in the settlement currency; half-even rounding is symmetric around zero."""
    target, rate = settlement
    if rate is None:
        return amount
    converted = convert(abs(amount), currency, target, rate)
    return converted if amount >= 0 else -converted


def _pending_balance(state: StripeState) -> list[tuple[int, str]]:
    # Built lazily (e.g. after a saved state is loaded); inserts keep it current from then on.
    if state.pending_funds is None:
        txns = state.collections["balance_transaction"].objects.values()
        state.pending_funds = [(t["available_on"], t["id"]) for t in txns if t["status"] == "pending"]
        heapq.heapify(state.pending_funds)
    return state.pending_funds


def _payouts_in_transit(state: StripeState) -> list[tuple[int, str]]:
    if state.payouts_in_transit is None:
        payouts = state.collections["payout"].objects.values()
        state.payouts_in_transit = [
            (p["arrival_date"], p["id"]) for p in payouts if p["status"] in ("pending", "in_transit")
        ]
        heapq.heapify(state.payouts_in_transit)
    return state.payouts_in_transit


def settle(ctx: Ctx) -> None:
    """Let the clock act: pending funds become available, payouts arrive (`payout.paid`)."""
    heap = _pending_balance(ctx.state)
    txns = ctx.state.collections["balance_transaction"].objects
    while heap and heap[0][0] <= ctx.now:
        _, txn_id = heapq.heappop(heap)
        if txn_id in txns:
            txns[txn_id]["status"] = "available"
    payouts = _payouts_in_transit(ctx.state)
    while payouts and payouts[0][0] <= ctx.now:
        _, payout_id = heapq.heappop(payouts)
        payout = ctx.state.collections["payout"].get(payout_id)
        if payout and payout["status"] in ("pending", "in_transit"):
            # The payout arriving is Stripe's own doing: its events carry no request.
            auto = ctx.automatic()
            apply_update(
                auto,
                payout,
                {"status": "paid", "reconciliation_status": "completed" if payout["automatic"] else "not_applicable"},
                "payout.updated",
            )
            ctx.state.emit(auto, "payout.paid", payout)


retrieve_route("balance_transaction", "/v1/balance_transactions/{id}")


@route("GET", "/v1/balance_transactions")
def list_balance_transactions(ctx: Ctx, params: dict) -> dict:
    coll = ctx.state.collections["balance_transaction"]
    filters = {
        "type": get_str(params, "type"),
        "source": get_str(params, "source"),
        "currency": get_str(params, "currency"),
    }
    payout_id = get_str(params, "payout")
    if payout_id:
        ctx.state.get("payout", payout_id, "payout")
        index = coll.index_for("payout", payout_id)
        predicate = _equals(filters)
        return paginate(coll, params, "/v1/balance_transactions", index=index, predicate=predicate)
    return list_filtered(coll, params, "/v1/balance_transactions", filters)


def _equals(filters: dict[str, Any]):
    wanted = {k: v for k, v in filters.items() if v is not None}
    if not wanted:
        return None
    return lambda obj: all(obj.get(k) == v for k, v in wanted.items())


@route("GET", "/v1/balance")
def retrieve_balance(ctx: Ctx, params: dict) -> dict:
    available: dict[str, int] = {}
    pending: dict[str, int] = {}
    for txn in ctx.state.collections["balance_transaction"].objects.values():
        bucket = available if txn["status"] == "available" else pending
        bucket[txn["currency"]] = bucket.get(txn["currency"], 0) + txn["net"]
    # An account with no transactions still reports its default currency, with zero amounts.
    currencies = sorted(set(available) | set(pending)) or ["usd"]

    def rows(bucket: dict[str, int]) -> list[dict]:
        return [
            {"amount": bucket.get(c, 0), "currency": c, "source_types": {"card": bucket.get(c, 0)}} for c in currencies
        ]

    return {
        "object": "balance",
        "available": rows(available),
        "connect_reserved": [{"amount": 0, "currency": c} for c in currencies],
        "livemode": False,
        "pending": rows(pending),
    }


# --- charges --------------------------------------------------------------------------------------


def _card_details(pm: dict[str, Any], amount: int) -> dict[str, Any]:
    card = pm["card"]
    return {
        "card": {
            "amount_authorized": amount,
            "authorization_code": None,
            "brand": card["brand"],
            "checks": card["checks"],
            "country": card["country"],
            "exp_month": card["exp_month"],
            "exp_year": card["exp_year"],
            "extended_authorization": {"status": "disabled"},
            "fingerprint": card["fingerprint"],
            "funding": card["funding"],
            "incremental_authorization": {"status": "unavailable"},
            "installments": None,
            "last4": card["last4"],
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": card["brand"],
            "network_token": {"used": False},
            "network_transaction_id": None,
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": card["regulated_status"],
            "three_d_secure": None,
            "wallet": None,
        },
        "type": "card",
    }


def create_charge(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    pm: dict[str, Any],
    description: str | None,
    metadata: dict[str, str],
    payment_intent: str | None,
    receipt_email: str | None = None,
) -> dict[str, Any]:
    """One attempt on a card: succeeded (with a balance transaction and fee) or failed."""
    card = test_card_of(pm)
    charge_id = ctx.state.new_id("ch")
    declined = card.decline
    charge = {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": 0 if declined else amount,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": None,
        "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": STATEMENT_DESCRIPTOR,
        "captured": not declined,
        "created": ctx.now,
        "currency": currency,
        "customer": customer,
        "description": description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": declined[0] if declined else None,
        "failure_message": declined[2] if declined else None,
        "fraud_details": {},
        "livemode": False,
        "metadata": dict(metadata),
        "on_behalf_of": None,
        "outcome": {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "declined_by_network" if declined else "approved_by_network",
            "reason": declined[1] if declined else None,
            "risk_level": "normal",
            "risk_score": 20,
            "seller_message": (
                "The bank did not return any further details with this decline." if declined else "Payment complete."
            ),
            "type": "issuer_declined" if declined else "authorized",
        },
        "paid": not declined,
        "payment_intent": payment_intent,
        "payment_method": pm["id"],
        "payment_method_details": _card_details(pm, amount),
        "receipt_email": receipt_email,
        "receipt_number": None,
        "receipt_url": f"https://pay.stripe.com/receipts/sandbox/{charge_id}",
        "refunded": False,
        "review": None,
        "shipping": None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "failed" if declined else "succeeded",
        "transfer_data": None,
        "transfer_group": None,
        "source": None,
    }
    if not declined:
        # A charge in a currency the account does not settle in is converted: its balance transaction is in the
        # settlement currency, with the rate, and the fee is taken from the converted amount.
        settlement = settlement_for(ctx, currency)
        settled = settled_amount(amount, currency, settlement)
        txn = new_balance_transaction(
            ctx,
            amount=settled,
            currency=settlement[0],
            txn_type="charge",
            category="charge",
            source=charge_id,
            description=description,
            # Stripe takes its fee out of the charge's balance transaction: net = amount - fee.
            fee=processing_fee(settled, settlement[0]),
            available_days=ctx.config.balance_available_days,
            rate=settlement[1],
        )
        charge["balance_transaction"] = txn["id"]
    ctx.state.insert("charge", charge)
    ctx.state.emit(ctx, "charge.failed" if declined else "charge.succeeded", charge)
    return charge


# A decline answers 402 card_error naming the charge (and, for an intent, the intent as it now is).
# https://docs.stripe.com/error-handling#payment-errors
def decline_error(charge: dict[str, Any], payment_intent: dict[str, Any] | None = None) -> StripeApiError:
    extra: dict[str, Any] = {
        "charge": charge["id"],
        "payment_method": {"id": charge["payment_method"], "object": "payment_method"},
    }
    if payment_intent is not None:
        extra["payment_intent"] = snapshot(payment_intent)
    return card_error(charge["failure_message"], charge["failure_code"], charge["outcome"]["reason"], **extra)


@route("POST", "/v1/charges")
def create_legacy_charge(ctx: Ctx, params: dict) -> dict:
    """The old Charges API (`source=tok_visa`), for invoice-less one-off charges."""
    currency = check_currency(get_str(params, "currency", required=True))
    amount = check_amount(get_int(params, "amount", required=True), currency)
    customer_id = get_str(params, "customer")
    if customer_id:
        ctx.state.get("customer", customer_id, "customer")
    source = get_str(params, "source")
    if source:
        pm = resolve_payment_method(ctx, source, None, "source")
    elif customer_id:
        pm = _customer_default_payment_method(ctx, customer_id)
    else:
        raise missing_param("source")
    charge = create_charge(
        ctx,
        amount=amount,
        currency=currency,
        customer=customer_id,
        pm=pm,
        description=get_str(params, "description"),
        metadata=merge_metadata({}, params),
        payment_intent=None,
        receipt_email=get_str(params, "receipt_email"),
    )
    if charge["status"] == "failed":
        raise decline_error(charge)
    _maybe_dispute(ctx, charge, pm)
    return charge


retrieve_route("charge", "/v1/charges/{id}")


update_route("charge", "/v1/charges/{id}", ("description", "receipt_email"), "charge.updated")


@route("GET", "/v1/charges")
def list_charges(ctx: Ctx, params: dict) -> dict:
    filters = {"customer": get_str(params, "customer"), "payment_intent": get_str(params, "payment_intent")}
    return list_filtered(ctx.state.collections["charge"], params, "/v1/charges", filters)


@route("GET", "/v1/charges/search")
def search_charges(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["charge"], params, "/v1/charges/search")


@route("GET", "/v1/charges/{id}/refunds")
def list_charge_refunds(ctx: Ctx, params: dict, charge_id: str) -> dict:
    ctx.state.get("charge", charge_id)
    return list_filtered(
        ctx.state.collections["refund"], params, f"/v1/charges/{charge_id}/refunds", {"charge": charge_id}
    )


def _customer_default_payment_method(ctx: Ctx, customer_id: str) -> dict[str, Any]:
    customer = ctx.state.get("customer", customer_id, "customer")
    pm_id = (customer.get("invoice_settings") or {}).get("default_payment_method")
    if not pm_id:
        raise invalid_state(
            f"Customer {customer_id} has no attached payment source or default payment method.",
            "missing",
            "payment_method",
        )
    return ctx.state.get("payment_method", pm_id, "payment_method")


# --- payment intents ------------------------------------------------------------------------------


def new_payment_intent(
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    description: str | None,
    metadata: dict[str, str],
    payment_method: str | None = None,
    receipt_email: str | None = None,
) -> dict[str, Any]:
    pi_id = ctx.state.new_id("pi")
    # Derived from the id, not random, so a seeded sandbox produces the same objects every run.
    secret = hashlib.sha256(f"{pi_id}:secret".encode()).hexdigest()[:24]
    intent = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": f"{pi_id}_secret_{secret}",
        "confirmation_method": "automatic",
        "created": ctx.now,
        "currency": currency,
        "customer": customer,
        "description": description,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "metadata": dict(metadata),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": payment_method,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": receipt_email,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        # https://docs.stripe.com/payments/paymentintents/lifecycle
        "status": "requires_confirmation" if payment_method else "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
        "source": None,
        "excluded_payment_method_types": None,
        "customer_account": None,
        "managed_payments": None,
    }
    ctx.state.insert("payment_intent", intent)
    ctx.state.emit(ctx, "payment_intent.created", intent)
    return intent


def confirm_payment_intent(ctx: Ctx, intent: dict[str, Any], pm: dict[str, Any]) -> dict[str, Any]:
    """Charge the card; returns the charge. On a decline the intent waits for a new method."""
    if intent["status"] in ("succeeded", "canceled"):
        raise invalid_state(
            f"This PaymentIntent's status is {intent['status']}, so it cannot be confirmed.",
            "payment_intent_unexpected_state",
        )
    charge = create_charge(
        ctx,
        amount=intent["amount"],
        currency=intent["currency"],
        customer=intent["customer"],
        pm=pm,
        description=intent["description"],
        metadata=intent["metadata"],
        payment_intent=intent["id"],
        receipt_email=intent["receipt_email"],
    )
    if charge["status"] == "succeeded":
        changes = {
            "status": "succeeded",
            "amount_received": intent["amount"],
            "latest_charge": charge["id"],
            "payment_method": pm["id"],
            "last_payment_error": None,
        }
        apply_update(ctx, intent, changes)
        ctx.state.emit(ctx, "payment_intent.succeeded", intent)
    else:
        error = {
            "advice_code": None,
            "charge": charge["id"],
            "code": charge["failure_code"],
            "decline_code": charge["outcome"]["reason"],
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": charge["failure_message"],
            "network_advice_code": None,
            "network_decline_code": None,
            "param": None,
            "payment_method": snapshot(pm),
            "type": "card_error",
        }
        changes = {
            # After a decline the intent waits for another payment method; it can be confirmed again.
            "status": "requires_payment_method",
            "latest_charge": charge["id"],
            "payment_method": None,
            "last_payment_error": error,
        }
        apply_update(ctx, intent, changes)
        ctx.state.emit(ctx, "payment_intent.payment_failed", intent)
    return charge


def _maybe_dispute(ctx: Ctx, charge: dict[str, Any], pm: dict[str, Any]) -> None:
    reason = test_card_of(pm).dispute_reason
    if reason and charge["status"] == "succeeded":
        open_dispute(ctx, charge, reason)


@route("POST", "/v1/payment_intents")
def create_payment_intent(ctx: Ctx, params: dict) -> dict:
    currency = check_currency(get_str(params, "currency", required=True))
    amount = check_amount(get_int(params, "amount", required=True), currency)
    if amount <= 0:
        raise invalid_param("Amount must be at least 1.", "amount", code="amount_too_small")
    # Authorise-now-capture-later is not emulated; automatic_async settles like automatic here.
    if get_str(params, "capture_method", "automatic") not in ("automatic", "automatic_async"):
        raise invalid_param("The sandbox supports capture_method=automatic only.", "capture_method")
    customer_id = get_str(params, "customer")
    if customer_id:
        ctx.state.get("customer", customer_id, "customer")
    pm = None
    if params.get("payment_method"):
        pm = resolve_payment_method(ctx, params["payment_method"], None)
    intent = new_payment_intent(
        ctx,
        amount=amount,
        currency=currency,
        customer=customer_id,
        description=get_str(params, "description"),
        metadata=merge_metadata({}, params),
        payment_method=pm["id"] if pm else None,
        receipt_email=get_str(params, "receipt_email"),
    )
    if get_bool(params, "confirm", False):
        return _confirm_or_raise(ctx, intent, pm)
    return intent


def _confirm_or_raise(ctx: Ctx, intent: dict[str, Any], pm: dict[str, Any] | None) -> dict[str, Any]:
    if pm is None:
        raise invalid_state(
            "You cannot confirm this PaymentIntent because it's missing a payment method.",
            "payment_intent_unexpected_state",
            "payment_method",
        )
    charge = confirm_payment_intent(ctx, intent, pm)
    if charge["status"] == "failed":
        raise decline_error(charge, intent)
    _maybe_dispute(ctx, charge, pm)
    return intent


@route("POST", "/v1/payment_intents/{id}/confirm")
def confirm_payment_intent_endpoint(ctx: Ctx, params: dict, pi_id: str) -> dict:
    intent = ctx.state.get("payment_intent", pi_id)
    pm = None
    if params.get("payment_method"):
        pm = resolve_payment_method(ctx, params["payment_method"], None)
    elif intent["payment_method"]:
        pm = ctx.state.get("payment_method", intent["payment_method"])
    return _confirm_or_raise(ctx, intent, pm)


@route("POST", "/v1/payment_intents/{id}/cancel")
def cancel_payment_intent(ctx: Ctx, params: dict, pi_id: str) -> dict:
    intent = ctx.state.get("payment_intent", pi_id)
    if intent["status"] in ("succeeded", "canceled"):
        raise invalid_state(
            f"You cannot cancel this PaymentIntent because it has a status of {intent['status']}.",
            "payment_intent_unexpected_state",
        )
    reason = get_choice(
        params, "cancellation_reason", ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
    )
    apply_update(ctx, intent, {"status": "canceled", "canceled_at": ctx.now, "cancellation_reason": reason})
    ctx.state.emit(ctx, "payment_intent.canceled", intent)
    return intent


retrieve_route("payment_intent", "/v1/payment_intents/{id}")


@route("POST", "/v1/payment_intents/{id}")
def update_payment_intent(ctx: Ctx, params: dict, pi_id: str) -> dict:
    intent = ctx.state.get("payment_intent", pi_id)
    changes = {**metadata_change(intent, params), **string_changes(params, ("description", "receipt_email"))}
    return apply_update(ctx, intent, changes, "payment_intent.updated" if changes.keys() - {"metadata"} else None)


@route("GET", "/v1/payment_intents")
def list_payment_intents(ctx: Ctx, params: dict) -> dict:
    return list_filtered(
        ctx.state.collections["payment_intent"],
        params,
        "/v1/payment_intents",
        {"customer": get_str(params, "customer")},
    )


@route("GET", "/v1/payment_intents/search")
def search_payment_intents(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["payment_intent"], params, "/v1/payment_intents/search")


# --- refunds --------------------------------------------------------------------------------------


def refund_charge(
    ctx: Ctx,
    charge: dict[str, Any],
    amount: int | None,
    reason: str | None = None,
    metadata: dict[str, str] | None = None,
    param: str = "amount",
) -> dict[str, Any]:
    """A refund bounded by what is left of the charge; updates the charge and writes a balance transaction."""
    if charge["status"] != "succeeded":
        raise invalid_state(f"Charge {charge['id']} has not succeeded; it cannot be refunded.", "charge_not_refundable")
    if charge["disputed"]:
        # A disputed charge cannot be refunded (charge_disputed): the dispute decides where the money goes.
        raise invalid_state(f"Charge {charge['id']} has been charged back; cannot issue a refund.", "charge_disputed")
    remaining = charge["amount"] - charge["amount_refunded"]
    if remaining <= 0:
        raise invalid_state(f"Charge {charge['id']} has already been refunded.", "charge_already_refunded")
    amount = remaining if amount is None else amount
    if amount <= 0:
        raise invalid_param("Refund amount must be a positive integer.", param)
    check_amount(amount, charge["currency"], param)
    if amount > remaining:
        raise invalid_param(
            f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            param,
            code="amount_too_large",
        )
    refund_id = ctx.state.new_id("re")
    settlement = charge_settlement(ctx, charge)
    txn = new_balance_transaction(
        ctx,
        amount=settled_amount(-amount, charge["currency"], settlement),
        currency=settlement[0],
        rate=settlement[1],
        txn_type="refund",
        category="refund",
        source=refund_id,
        # No fee on a refund: Stripe does not return the charge's processing fee, so the refund's
        # transaction is just -amount. https://support.stripe.com/questions/understanding-fees-for-refunded-payments
        description="REFUND FOR CHARGE" + (f" ({charge['description']})" if charge["description"] else ""),
    )
    refund = {
        "id": refund_id,
        "object": "refund",
        "amount": amount,
        "balance_transaction": txn["id"],
        "charge": charge["id"],
        "created": ctx.now,
        "currency": charge["currency"],
        "destination_details": {
            "card": {
                "reference": None,
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "metadata": dict(metadata or {}),
        "payment_intent": charge["payment_intent"],
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
        "customer": charge["customer"],
        "customer_account": None,
        "payment_method": charge["payment_method"],
    }
    ctx.state.insert("refund", refund)
    refunded_total = charge["amount_refunded"] + amount
    apply_update(
        ctx,
        charge,
        # `refunded` turns true only when the whole amount is back; partial refunds only raise amount_refunded.
        {"amount_refunded": refunded_total, "refunded": refunded_total == charge["amount"]},
        "charge.refunded",
    )
    ctx.state.emit(ctx, "refund.created", refund)
    return refund


def charge_for_refund(ctx: Ctx, params: dict) -> dict[str, Any]:
    if params.get("charge"):
        return ctx.state.get("charge", params["charge"], "charge")
    if params.get("payment_intent"):
        intent = ctx.state.get("payment_intent", params["payment_intent"], "payment_intent")
        if intent["status"] != "succeeded" or not intent["latest_charge"]:
            raise invalid_state(
                f"PaymentIntent {intent['id']} does not have a successful charge to refund.", "charge_not_refundable"
            )
        return ctx.state.get("charge", intent["latest_charge"])
    raise missing_param("charge")


@route("POST", "/v1/refunds")
def create_refund(ctx: Ctx, params: dict) -> dict:
    charge = charge_for_refund(ctx, params)
    reason = get_choice(params, "reason", ("duplicate", "fraudulent", "requested_by_customer"))
    return refund_charge(ctx, charge, get_int(params, "amount"), reason, merge_metadata({}, params))


retrieve_route("refund", "/v1/refunds/{id}")


update_route("refund", "/v1/refunds/{id}", event="refund.updated")


@route("GET", "/v1/refunds")
def list_refunds(ctx: Ctx, params: dict) -> dict:
    filters = {"charge": get_str(params, "charge"), "payment_intent": get_str(params, "payment_intent")}
    return list_filtered(ctx.state.collections["refund"], params, "/v1/refunds", filters)


# --- disputes -------------------------------------------------------------------------------------

EVIDENCE_FIELDS = (
    "access_activity_log billing_address cancellation_policy cancellation_policy_disclosure cancellation_rebuttal "
    "customer_communication customer_email_address customer_name customer_purchase_ip customer_signature "
    "duplicate_charge_documentation duplicate_charge_explanation duplicate_charge_id product_description receipt "
    "refund_policy refund_policy_disclosure refund_refusal_explanation service_date service_documentation "
    "shipping_address shipping_carrier shipping_date shipping_documentation shipping_tracking_number "
    "uncategorized_file uncategorized_text"
).split()
DISPUTE_REASONS = (
    "bank_cannot_process",
    "credit_not_processed",
    "customer_initiated",
    "debit_not_authorized",
    "duplicate",
    "fraudulent",
    "general",
    "incorrect_account_details",
    "insufficient_funds",
    "product_not_received",
    "product_unacceptable",
    "subscription_canceled",
    "unrecognized",
)
TEST_EVIDENCE_OUTCOMES = {"winning_evidence": "won", "losing_evidence": "lost"}
NETWORK_REASON_CODES = {"fraudulent": "10.4", "duplicate": "12.6.1", "product_not_received": "13.1"}


def open_dispute(
    ctx: Ctx, charge: dict[str, Any], reason: str = "general", amount: int | None = None
) -> dict[str, Any]:
    if charge["status"] != "succeeded":
        raise invalid_state(f"Charge {charge['id']} has not succeeded; it cannot be disputed.")
    if charge["disputed"]:
        raise invalid_state(f"Charge {charge['id']} is already disputed.")
    if reason not in DISPUTE_REASONS:
        raise invalid_param(f"Invalid reason: {reason}", "reason")
    disputable = charge["amount"] - charge["amount_refunded"]
    amount = disputable if amount is None else amount
    if not 0 < amount <= disputable:
        raise invalid_param(f"Dispute amount must be between 1 and {disputable}.", "amount")
    dispute_id = ctx.state.new_id("dp")
    # Opening a dispute withdraws the disputed amount and the dispute fee at once, in one transaction.
    # https://docs.stripe.com/disputes/how-disputes-work
    settlement = charge_settlement(ctx, charge)
    fee = dispute_fee(settlement[0])
    txn = new_balance_transaction(
        ctx,
        amount=settled_amount(-amount, charge["currency"], settlement),
        currency=settlement[0],
        rate=settlement[1],
        txn_type="adjustment",
        category="dispute",
        source=dispute_id,
        description=f"Chargeback withdrawal for {charge['id']}",
        fee=fee,
        fee_description="Dispute fee",
    )
    card = charge["payment_method_details"]["card"]
    dispute = {
        "id": dispute_id,
        "object": "dispute",
        "amount": amount,
        "balance_transactions": [txn],
        "charge": charge["id"],
        "created": ctx.now,
        "currency": charge["currency"],
        "evidence": {**{name: None for name in EVIDENCE_FIELDS}, "enhanced_evidence": {}},
        "evidence_details": {
            # Evidence deadlines vary by card network (7 to 21 days); the sandbox takes the shortest.
            "due_by": ctx.now + 7 * DAY,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
            "enhanced_eligibility": {},
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "payment_method_details": {
            "card": {
                "brand": card["brand"],
                "case_type": "chargeback",
                "network_reason_code": NETWORK_REASON_CODES.get(reason, "13.7"),
                "network": card["network"],
            },
            "type": "card",
        },
        "reason": reason,
        "status": "needs_response",
        "enhanced_eligibility_types": [],
    }
    ctx.state.insert("dispute", dispute)
    apply_update(ctx, charge, {"disputed": True}, "charge.updated")
    ctx.state.emit(ctx, "charge.dispute.created", dispute)
    # Stripe sends both: the dispute opened, and the money taken from the balance.
    ctx.state.emit(ctx, "charge.dispute.funds_withdrawn", dispute)
    return dispute


def close_dispute(ctx: Ctx, dispute: dict[str, Any], outcome: str) -> dict[str, Any]:
    if dispute["status"] in ("won", "lost"):
        raise invalid_state(f"Dispute {dispute['id']} is already closed ({dispute['status']}).")
    if outcome not in ("won", "lost"):
        raise invalid_param("outcome must be won or lost", "outcome")
    # A won dispute returns the amount and the dispute fee (a negative fee) in a second transaction;
    # a lost one leaves the withdrawal as it is.
    transactions = dispute["balance_transactions"]
    if outcome == "won":
        withdrawal = transactions[0]
        charge = ctx.state.get("charge", dispute["charge"])
        txn = new_balance_transaction(
            ctx,
            amount=-withdrawal["amount"],
            currency=withdrawal["currency"],
            rate=withdrawal["exchange_rate"],
            txn_type="adjustment",
            category="dispute_reversal",
            source=dispute["id"],
            description=f"Chargeback reversal for {charge['id']}",
            fee=-withdrawal["fee"],
            fee_description="Dispute fee refund",
        )
        transactions = [*transactions, txn]
    apply_update(ctx, dispute, {"status": outcome, "balance_transactions": transactions})
    if outcome == "won":
        ctx.state.emit(ctx, "charge.dispute.funds_reinstated", dispute)
    ctx.state.emit(ctx, "charge.dispute.closed", dispute)
    return dispute


retrieve_route("dispute", "/v1/disputes/{id}")


@route("POST", "/v1/disputes/{id}")
def update_dispute(ctx: Ctx, params: dict, dispute_id: str) -> dict:
    dispute = ctx.state.get("dispute", dispute_id)
    changes = metadata_change(dispute, params)
    evidence = get_dict(params, "evidence")
    if evidence:
        unknown = set(evidence) - set(EVIDENCE_FIELDS)
        if unknown:
            raise invalid_param(f"Received unknown parameter: evidence[{sorted(unknown)[0]}]", "evidence")
        changes["evidence"] = {**dispute["evidence"], **evidence}
        changes["evidence_details"] = {**dispute["evidence_details"], "has_evidence": True}
    submitted = get_bool(params, "submit", False) and dispute["status"] in ("needs_response", "warning_needs_response")
    if submitted:
        changes["status"] = "under_review"
        details = changes.get("evidence_details", dispute["evidence_details"])
        changes["evidence_details"] = {**details, "submission_count": details["submission_count"] + 1}
    apply_update(ctx, dispute, changes, "charge.dispute.updated")
    # Test mode's magic evidence decides the dispute on submission.
    outcome = TEST_EVIDENCE_OUTCOMES.get(dispute["evidence"].get("uncategorized_text") or "")
    if submitted and outcome:
        close_dispute(ctx, dispute, outcome)
    return dispute


@route("POST", "/v1/disputes/{id}/close")
def accept_dispute(ctx: Ctx, params: dict, dispute_id: str) -> dict:
    """Closing a dispute through the API accepts it: the merchant loses."""
    return close_dispute(ctx, ctx.state.get("dispute", dispute_id), "lost")


@route("GET", "/v1/disputes")
def list_disputes(ctx: Ctx, params: dict) -> dict:
    filters = {"charge": get_str(params, "charge"), "payment_intent": get_str(params, "payment_intent")}
    return list_filtered(ctx.state.collections["dispute"], params, "/v1/disputes", filters)


# --- balance adjustments and account fees ---------------------------------------------------------


def balance_adjustment(ctx: Ctx, currency: str, amount: int, description: str | None = None) -> dict[str, Any]:
    """Money Stripe adds to (amount > 0) or takes from the balance outside any payment: `type: adjustment`,
    `reporting_category: other_adjustment`, available at once. Its `source` is an `adj_` id that no API object
    answers to (expanding it leaves the id)."""
    currency = check_currency(currency)
    if not isinstance(amount, int) or isinstance(amount, bool) or amount == 0:
        raise invalid_param("amount must be a non-zero integer (minor units; negative takes money out).", "amount")
    check_amount(amount, currency, allow_negative=True)
    return new_balance_transaction(
        ctx,
        amount=amount,
        currency=currency,
        txn_type="adjustment",
        category="other_adjustment",
        source=ctx.state.new_id("adj"),
        description=description or "Balance adjustment",
    )


def account_fee(ctx: Ctx, currency: str, amount: int, description: str | None = None) -> dict[str, Any]:
    """A fee Stripe charges the account itself (Billing, Radar, ...): `type: stripe_fee`, `reporting_category:
    fee`, amount -fee and fee 0 (the whole transaction is the fee), no `source`, available at once."""
    currency = check_currency(currency)
    if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
        raise invalid_param("amount must be a positive integer (the fee charged, in minor units).", "amount")
    check_amount(amount, currency)
    return new_balance_transaction(
        ctx,
        amount=-amount,
        currency=currency,
        txn_type="stripe_fee",
        category="fee",
        source=None,
        description=description or "Billing - Usage Fee",
    )


# --- payouts --------------------------------------------------------------------------------------


def _unpaid_available(state: StripeState, currency: str) -> list[dict[str, Any]]:
    coll = state.collections["balance_transaction"]
    # Transactions already in a payout's index are never paid out twice.
    paid_out = {entry[2] for index in coll.secondary.get("payout", {}).values() for entry in index.entries}
    return [
        txn
        for txn in coll.objects.values()
        if txn["currency"] == currency and txn["status"] == "available" and txn["id"] not in paid_out
    ]


def available_balance(state: StripeState, currency: str) -> int:
    return sum(
        txn["net"]
        for txn in state.collections["balance_transaction"].objects.values()
        if txn["currency"] == currency and txn["status"] == "available"
    )


def create_payout(
    ctx: Ctx,
    currency: str,
    amount: int | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
    automatic: bool = False,
    statement_descriptor: str | None = None,
) -> dict[str, Any]:
    """Pay out the available balance. The full balance links every transaction it contains
    (`GET /v1/balance_transactions?payout=`); a partial amount is a manual payout, which Stripe
    does not break down."""
    available = available_balance(ctx.state, currency)
    amount = available if amount is None else amount
    if amount <= 0:
        raise invalid_param("Payout amount must be greater than 0.", "amount", code="amount_too_small")
    check_amount(amount, currency)
    if amount > available:
        raise invalid_state(
            "You have insufficient funds in your Stripe account for this transfer. Your card balance is too low. "
            "You can use the /v1/balance endpoint to view your Stripe balance.",
            "balance_insufficient",
            "amount",
        )
    # The payout's own negative transaction joins the linked ones below, so `?payout=` lists nets to zero.
    contained = _unpaid_available(ctx.state, currency) if amount == available else []
    payout_id = ctx.state.new_id("po")
    txn = new_balance_transaction(
        ctx,
        amount=-amount,
        currency=currency,
        txn_type="payout",
        category="payout",
        source=payout_id,
        description=description or "STRIPE PAYOUT",
    )
    linked = bool(contained)
    arrival = ctx.now + ctx.config.payout_arrival_days * DAY
    payout = {
        "id": payout_id,
        "object": "payout",
        "amount": amount,
        "application_fee": None,
        "application_fee_amount": None,
        "arrival_date": arrival,
        "automatic": automatic or linked,
        "balance_transaction": txn["id"],
        "created": ctx.now,
        "currency": currency,
        "description": description or "STRIPE PAYOUT",
        "destination": SANDBOX_BANK_ACCOUNT,
        "failure_balance_transaction": None,
        "failure_code": None,
        "failure_message": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "method": "standard",
        "original_payout": None,
        "reconciliation_status": "in_progress" if linked else "not_applicable",
        "reversed_by": None,
        "source_type": "card",
        "statement_descriptor": statement_descriptor,
        "status": "pending",
        "type": "bank_account",
        "trace_id": {"status": "pending", "value": None},
        "payout_method": None,
    }
    ctx.state.insert("payout", payout)
    coll = ctx.state.collections["balance_transaction"]
    if linked:
        for member in [*contained, txn]:
            coll.add_to_secondary("payout", payout_id, coll.entries[member["id"]])
    heapq.heappush(_payouts_in_transit(ctx.state), (arrival, payout_id))
    ctx.state.emit(ctx, "payout.created", payout)
    return payout


@route("POST", "/v1/payouts")
def create_payout_endpoint(ctx: Ctx, params: dict) -> dict:
    currency = check_currency(get_str(params, "currency", "usd"))
    return create_payout(
        ctx,
        currency,
        get_int(params, "amount"),
        get_str(params, "description"),
        merge_metadata({}, params),
        statement_descriptor=get_str(params, "statement_descriptor"),
    )


# Payout failure codes and the messages Stripe gives them (docs.stripe.com/api/payouts/failures).
PAYOUT_FAILURES = {
    "account_closed": "The bank account has been closed.",
    "account_frozen": "The bank account has been frozen.",
    "bank_account_restricted": "The bank account has restrictions on either the type, or the number, of payouts "
    "allowed. This normally indicates that the bank account is a savings or other non-checking account.",
    "bank_ownership_changed": "The destination bank account is no longer valid because its branch has changed "
    "ownership.",
    "could_not_process": "The bank could not process this payout.",
    "debit_not_authorized": "Debit transactions are not approved on the bank account.",
    "declined": "The bank has declined this transfer.",
    "insufficient_funds": "Your Stripe account has insufficient funds to cover the payout.",
    "invalid_account_number": "The routing number seems correct, but the account number is invalid.",
    "incorrect_account_holder_name": "Your bank notified us that the bank account holder name on file is incorrect.",
    "invalid_currency": "The bank was unable to process this payout because of its currency.",
    "no_account": "The bank account details on file are probably incorrect. No bank account could be located with "
    "those details.",
}


def _reverse_payout(ctx: Ctx, payout: dict[str, Any], txn_type: str, description: str) -> dict[str, Any]:
    """The transaction that puts a failed or canceled payout's money back in the balance. It is in no payout's
    list: the next automatic payout of the currency pays it out (with whatever else is available then)."""
    return new_balance_transaction(
        ctx,
        amount=payout["amount"],
        currency=payout["currency"],
        txn_type=txn_type,
        category="payout_reversal",
        source=payout["id"],
        description=description,
    )


def fail_payout(ctx: Ctx, payout: dict[str, Any], failure_code: str = "account_closed") -> dict[str, Any]:
    """The bank returns a payout. "Some payouts that fail might initially show as paid, then change to failed"
    (Stripe's payout object), so a paid payout can fail too."""
    if payout["status"] not in ("pending", "in_transit", "paid"):
        raise invalid_state(
            f"Payout {payout['id']} is {payout['status']}; only a pending, in-transit or paid payout can fail."
        )
    if failure_code not in PAYOUT_FAILURES:
        raise invalid_param(
            f"Invalid failure_code: {failure_code}. Use one of {', '.join(sorted(PAYOUT_FAILURES))}.", "failure_code"
        )
    txn = _reverse_payout(ctx, payout, "payout_failure", f"Payout failure for {payout['id']}")
    changes = {
        "status": "failed",
        "failure_code": failure_code,
        "failure_message": PAYOUT_FAILURES[failure_code],
        "failure_balance_transaction": txn["id"],
    }
    apply_update(ctx, payout, changes, "payout.updated")
    ctx.state.emit(ctx, "payout.failed", payout)
    return payout


@route("POST", "/v1/payouts/{id}/cancel")
def cancel_payout(ctx: Ctx, params: dict, payout_id: str) -> dict:
    """A pending manual payout, canceled: its money returns to the available balance (`payout_cancel`)."""
    payout = ctx.state.get("payout", payout_id)
    # https://docs.stripe.com/api/payouts/cancel: "You can't cancel automatic Stripe payouts."
    if payout["automatic"]:
        raise invalid_state(f"Payout {payout_id} is an automatic payout; automatic payouts cannot be canceled.")
    if payout["status"] != "pending":
        raise invalid_state(
            f"Payout {payout_id} cannot be canceled because it has a status of {payout['status']}; only pending "
            "payouts can be canceled."
        )
    txn = _reverse_payout(ctx, payout, "payout_cancel", f"Payout cancellation for {payout_id}")
    apply_update(ctx, payout, {"status": "canceled", "failure_balance_transaction": txn["id"]}, "payout.updated")
    ctx.state.emit(ctx, "payout.canceled", payout)
    return payout


retrieve_route("payout", "/v1/payouts/{id}")


update_route("payout", "/v1/payouts/{id}", event="payout.updated")


@route("GET", "/v1/payouts")
def list_payouts(ctx: Ctx, params: dict) -> dict:
    arrival = parse_range(params, "arrival_date")
    predicate = (lambda payout: in_range(payout["arrival_date"], arrival)) if arrival != (None, None) else None
    return list_filtered(
        ctx.state.collections["payout"], params, "/v1/payouts", {"status": get_str(params, "status")}, predicate
    )
