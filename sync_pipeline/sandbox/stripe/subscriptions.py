"""Subscriptions: the first invoice on create, prorations on change, renewal invoices per period.

Since API version 2025-03-31.basil the billing period lives on each subscription item
(`current_period_start/end`), and invoices point back through `parent.subscription_details`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sync_pipeline.sandbox.stripe.catalog import (
    attach_payment_method,
    discounts_param,
    price_for,
    resolve_payment_method,
    tax_rate_ids,
)
from sync_pipeline.sandbox.stripe.common import (
    add_interval,
    apply_update,
    metadata_change,
    retrieve_route,
    string_changes,
)
from sync_pipeline.sandbox.stripe.errors import invalid_param, invalid_state, missing_param
from sync_pipeline.sandbox.stripe.invoicing import (
    _pricing,
    add_line,
    attach_item,
    attempt_payment,
    finalize,
    new_invoice,
    new_invoice_item,
    recompute_totals,
    unit_amount_of,
    void_invoice,
)
from sync_pipeline.sandbox.stripe.listing import list_filtered, list_object, search
from sync_pipeline.sandbox.stripe.money import exponent, round_minor
from sync_pipeline.sandbox.stripe.params import get_bool, get_choice, get_int, get_list, get_str, merge_metadata
from sync_pipeline.sandbox.stripe.payments import decline_error
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx, StripeState, snapshot

DAY = 86400
# Statuses that still renew: Stripe keeps cutting renewal invoices for past_due and unpaid subscriptions
# (its retries and dunning act on those); canceled and incomplete_expired ones never renew.
# https://docs.stripe.com/billing/subscriptions/overview#subscription-statuses
ACTIVE_STATUSES = ("active", "past_due", "trialing", "incomplete", "unpaid")
PRORATION_BEHAVIORS = ("create_prorations", "none", "always_invoice")


# Subscription items still carry the deprecated `plan` beside `price`; Stripe derives it from the price,
# so it is rebuilt from the price whenever the item's price changes.
def _plan(price: dict[str, Any]) -> dict[str, Any]:
    recurring = price["recurring"]
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": "per_unit",
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": False,
        "metadata": price["metadata"],
        "meter": None,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": "licensed",
    }


def refresh_subscription_items(state: StripeState, subscription: dict[str, Any]) -> None:
    coll = state.collections["subscription_item"]
    index = coll.index_for("subscription", subscription["id"])
    items = [coll.objects[entry[2]] for entry in index.entries]
    subscription["items"] = list_object(items, f"/v1/subscription_items?subscription={subscription['id']}")


def _items(state: StripeState, subscription: dict[str, Any]) -> list[dict[str, Any]]:
    return list(subscription["items"]["data"])


def _period(state: StripeState, subscription: dict[str, Any]) -> tuple[int, int]:
    # Since basil the period lives on each item; `_check_price` keeps every item on one interval, so
    # the first item's period is the subscription's.
    first = _items(state, subscription)[0]
    return first["current_period_start"], first["current_period_end"]


def _new_item(
    ctx: Ctx,
    subscription: dict[str, Any],
    price: dict[str, Any],
    quantity: int,
    tax_rates: list,
    metadata: dict,
    period: tuple[int, int],
) -> dict[str, Any]:
    item = {
        "id": ctx.state.new_id("si"),
        "object": "subscription_item",
        "created": ctx.now,
        "discounts": [],
        "metadata": metadata,
        "price": price,
        "quantity": quantity,
        "subscription": subscription["id"],
        "tax_rates": tax_rates,
        "plan": _plan(price),
        "current_period_end": period[1],
        "current_period_start": period[0],
        "billing_thresholds": None,
    }
    return ctx.state.insert("subscription_item", item)


def _check_price(price: dict[str, Any], currency: str | None, interval: tuple[str, int] | None, param: str) -> None:
    if price["type"] != "recurring":
        raise invalid_param(
            f"The price specified ({price['id']}) is a one-time price; subscriptions need recurring prices.", param
        )
    # One invoice per period needs one currency and one billing cycle: Stripe refuses mixed prices.
    if currency and price["currency"] != currency:
        raise invalid_param("All prices on a subscription must have the same currency.", param)
    if interval and (price["recurring"]["interval"], price["recurring"]["interval_count"]) != interval:
        raise invalid_param("All prices on a subscription must have the same recurring interval.", param)


def _line_description(ctx: Ctx, price: dict[str, Any], quantity: int) -> str:
    product = ctx.state.find(price["product"]) or {"name": price["product"]}
    amount = unit_amount_of(price).scaleb(-exponent(price["currency"]))
    return (
        f"{quantity} × {product['name']} (at {amount} {price['currency'].upper()} / {price['recurring']['interval']})"
    )


def _add_item_line(ctx: Ctx, invoice: dict[str, Any], item: dict[str, Any], period: tuple[int, int]) -> None:
    price = item["price"]
    add_line(
        ctx.state,
        invoice,
        amount=round_minor(unit_amount_of(price) * item["quantity"], price["currency"]),
        description=_line_description(ctx, price, item["quantity"]),
        discountable=True,
        metadata={},
        period={"end": period[1], "start": period[0]},
        quantity=item["quantity"],
        subscription=item["subscription"],
        parent={
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": item["subscription"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        pricing=_pricing(price, unit_amount_of(price)),
    )


def _pending_items(ctx: Ctx, subscription: dict[str, Any]) -> list[dict[str, Any]]:
    coll = ctx.state.collections["invoiceitem"]
    items = coll.newest_first(coll.index_for("customer", subscription["customer"]))
    pending = [
        item
        for item in items
        if item["invoice"] is None
        and ((item.get("parent") or {}).get("subscription_details") or {}).get("subscription") == subscription["id"]
    ]
    # Oldest first, so the invoice lists the items in the order they were created.
    return list(reversed(pending))


def _subscription_invoice(
    ctx: Ctx,
    subscription: dict[str, Any],
    billing_reason: str,
    item_period: tuple[int, int] | None,
    invoice_period: tuple[int, int],
) -> dict[str, Any]:
    """Create, finalize and (when collecting automatically) pay a subscription invoice."""
    customer = ctx.state.get("customer", subscription["customer"])
    invoice = new_invoice(
        ctx,
        customer,
        currency=subscription["currency"],
        billing_reason=billing_reason,
        collection_method=subscription["collection_method"],
        auto_advance=True,
        days_until_due=subscription["days_until_due"],
        description=subscription["description"],
        default_payment_method=subscription["default_payment_method"],
        default_tax_rates=subscription["default_tax_rates"],
        subscription=subscription,
        period=invoice_period,
    )
    invoice["discounts"] = _use_discounts(ctx, subscription)
    # Pending items of this subscription (the prorations `create_prorations` left) ride on its next
    # invoice: https://docs.stripe.com/billing/subscriptions/prorations
    for item in _pending_items(ctx, subscription):
        attach_item(ctx.state, invoice, item)
    # None for an update's `always_invoice` invoice: it bills the prorations only, not a new period.
    if item_period is not None:
        for item in _items(ctx.state, subscription):
            _add_item_line(ctx, invoice, item, item_period)
    recompute_totals(ctx.state, invoice)
    ctx.state.emit(ctx, "invoice.created", invoice)
    finalize(ctx, invoice)
    return invoice


def _use_discounts(ctx: Ctx, subscription: dict[str, Any]) -> list[str]:
    """The discounts this invoice gets; a `once` coupon is used up, a `repeating` one runs out."""
    applied, kept = [], []
    for discount_id in subscription["discounts"]:
        discount = ctx.state.find(discount_id)
        if discount is None or (discount["end"] is not None and ctx.now >= discount["end"]):
            continue
        applied.append(discount_id)
        coupon = ctx.state.find(discount["source"]["coupon"]) or {}
        # `once` discounts the next invoice only; `repeating` runs until the discount's `end` (set when it
        # was redeemed); `forever` never ends. https://docs.stripe.com/api/coupons/object#coupon_object-duration
        if coupon.get("duration") == "once":
            discount["end"] = ctx.now
        else:
            kept.append(discount_id)
    subscription["discounts"] = kept
    return applied


def _collect(ctx: Ctx, subscription: dict[str, Any], invoice: dict[str, Any]) -> dict[str, Any] | None:
    """Pay a finalized subscription invoice; returns the failed charge on a decline."""
    if subscription["collection_method"] != "charge_automatically" or invoice["status"] != "open":
        return None
    return attempt_payment(ctx, invoice)


# Stripe accepts up to 20 `add_invoice_items` per request.
# https://docs.stripe.com/api/subscriptions/create#create_subscription-add_invoice_items
MAX_ADD_INVOICE_ITEMS = 20


def _add_invoice_items(ctx: Ctx, params: dict, currency: str | None) -> list[tuple[dict[str, Any], int, dict]]:
    """`add_invoice_items`: one-time prices in the subscription's currency, billed on its first invoice only."""
    raw_items = get_list(params, "add_invoice_items")
    if len(raw_items) > MAX_ADD_INVOICE_ITEMS:
        raise invalid_param(f"You may pass up to {MAX_ADD_INVOICE_ITEMS} add_invoice_items.", "add_invoice_items")
    out = []
    for position, raw in enumerate(raw_items):
        param = f"add_invoice_items[{position}][price]"
        if not isinstance(raw, dict) or not raw.get("price"):
            raise missing_param(param)
        price = price_for(ctx, raw["price"], param)
        if price["type"] != "one_time":
            raise invalid_param(
                f"The price specified ({price['id']}) is a recurring price; add_invoice_items only accepts "
                "one-time prices.",
                param,
            )
        if price["currency"] != currency:
            raise invalid_param(
                f"The price specified ({price['id']}) is in {price['currency']}, the subscription in {currency}: "
                "all prices must have the same currency.",
                param,
            )
        quantity = get_int(raw, "quantity", 1, param=f"add_invoice_items[{position}][quantity]")
        out.append((price, quantity, merge_metadata({}, raw)))
    return out


def _one_time_description(ctx: Ctx, price: dict[str, Any]) -> str:
    product = ctx.state.find(price["product"]) or {"name": price["product"]}
    return str(product["name"])


@route("POST", "/v1/subscriptions")
def create_subscription(ctx: Ctx, params: dict) -> dict:
    customer = ctx.state.get("customer", get_str(params, "customer", required=True), "customer")
    raw_items = get_list(params, "items")
    if not raw_items:
        raise missing_param("items")
    prices = []
    currency = interval = None
    for position, raw in enumerate(raw_items):
        if not isinstance(raw, dict) or not raw.get("price"):
            raise missing_param(f"items[{position}][price]")
        price = price_for(ctx, raw["price"], f"items[{position}][price]")
        _check_price(price, currency, interval, f"items[{position}][price]")
        currency, interval = price["currency"], (price["recurring"]["interval"], price["recurring"]["interval_count"])
        quantity = get_int(raw, "quantity", 1, param=f"items[{position}][quantity]")
        prices.append(
            (
                price,
                quantity,
                [ctx.state.get("tax_rate", r) for r in tax_rate_ids(ctx, raw, "tax_rates")],
                merge_metadata({}, raw),
            )
        )
    one_time = _add_invoice_items(ctx, params, currency)
    collection_method = get_choice(
        params, "collection_method", ("charge_automatically", "send_invoice"), "charge_automatically"
    )
    payment_behavior = get_choice(
        params,
        "payment_behavior",
        ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete"),
        "allow_incomplete",
    )
    days_until_due = get_int(params, "days_until_due")
    if collection_method == "send_invoice" and days_until_due is None:
        raise missing_param("days_until_due")
    pm_id = None
    if params.get("default_payment_method"):
        pm = resolve_payment_method(ctx, params["default_payment_method"], customer["id"], "default_payment_method")
        attach_payment_method(ctx, pm, customer["id"])
        pm_id = pm["id"]
    start = ctx.now
    # The anchor's day of month: a period starting on the 31st ends on the 30th (or 28th) in shorter
    # months and goes back to the 31st after. https://docs.stripe.com/billing/subscriptions/billing-cycle
    anchor_day = datetime.fromtimestamp(start, UTC).day
    end = add_interval(start, interval[0], interval[1], anchor_day)
    subscription_id = ctx.state.new_id("sub")
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"enabled": False, "liability": None, "disabled_reason": None},
        "billing_cycle_anchor": start,
        "billing_cycle_anchor_config": None,
        "cancel_at": None,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": collection_method,
        "created": ctx.now,
        "currency": currency,
        "customer": customer["id"],
        "days_until_due": days_until_due,
        "default_payment_method": pm_id,
        "default_source": None,
        "default_tax_rates": [ctx.state.get("tax_rate", r) for r in tax_rate_ids(ctx, params, "default_tax_rates")],
        "description": get_str(params, "description"),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": None,
        "latest_invoice": None,
        "livemode": False,
        "metadata": merge_metadata({}, params),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": start,
        # send_invoice subscriptions are active at once (the customer pays later); charge_automatically
        # ones stay incomplete until their first invoice is paid.
        "status": "active" if collection_method == "send_invoice" else "incomplete",
        "test_clock": None,
        "transfer_data": None,
        "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
        "cancel_at_period_end": get_bool(params, "cancel_at_period_end", False),
        "billing_thresholds": None,
        "billing_mode": {"type": "classic", "flexible": None},
        "customer_account": None,
        "managed_payments": None,
        "billing_schedules": [],
    }
    ctx.state.insert("subscription", subscription)
    subscription["discounts"] = discounts_param(
        ctx, params, currency, customer=customer["id"], subscription=subscription_id
    )
    for price, quantity, rates, metadata in prices:
        _new_item(ctx, subscription, price, quantity, rates, metadata, (start, end))
    refresh_subscription_items(ctx.state, subscription)
    for price, quantity, metadata in one_time:
        # Pending items of the subscription: `_subscription_invoice` puts them on the first invoice, once.
        new_invoice_item(
            ctx,
            customer=customer["id"],
            currency=currency,
            unit_amount=unit_amount_of(price),
            quantity=quantity,
            description=_one_time_description(ctx, price),
            price=price,
            metadata=metadata,
            subscription=subscription_id,
        )
    ctx.state.emit(ctx, "customer.subscription.created", subscription)
    # The first invoice bills the coming period in advance (its lines run start..end), while the
    # invoice's own period_start/period_end both sit at the creation time, as on Stripe's first invoices.
    invoice = _subscription_invoice(ctx, subscription, "subscription_create", (start, end), (start, start))
    subscription["latest_invoice"] = invoice["id"]
    failed = None
    # default_incomplete leaves the first invoice open for the client to confirm; the others charge now.
    if payment_behavior != "default_incomplete":
        failed = _collect(ctx, subscription, invoice)
    # error_if_incomplete: a declined first payment voids the invoice, expires the subscription and
    # answers 402. https://docs.stripe.com/api/subscriptions/create#create_subscription-payment_behavior
    if failed is not None and payment_behavior == "error_if_incomplete":
        void_invoice(ctx, {}, invoice["id"])
        apply_update(
            ctx, subscription, {"status": "incomplete_expired", "ended_at": ctx.now}, "customer.subscription.updated"
        )
        raise decline_error(failed)
    if invoice["status"] == "paid" and subscription["status"] == "incomplete":
        apply_update(ctx, subscription, {"status": "active"}, "customer.subscription.updated")
    return subscription


def _proration(
    ctx: Ctx,
    subscription: dict[str, Any],
    item: dict[str, Any],
    price: dict[str, Any],
    quantity: int,
    proration_date: int,
    period: tuple[int, int],
    credit: bool,
) -> dict[str, Any] | None:
    start, end = period
    # Stripe prorates to the second: the share of the period left after proration_date, times the
    # full price. https://docs.stripe.com/billing/subscriptions/prorations
    remaining = end - proration_date
    if remaining <= 0 or end <= start:
        return None
    # Rounded once, half up; prorated KWD amounts end in 0 like every three-decimal Stripe amount.
    amount = round_minor(unit_amount_of(price) * quantity * remaining / (end - start), subscription["currency"])
    when = datetime.fromtimestamp(proration_date, UTC).strftime("%d %b %Y")
    product = ctx.state.find(price["product"]) or {"name": price["product"]}
    description = f"{'Unused' if credit else 'Remaining'} time on {quantity} × {product['name']} after {when}"
    return new_invoice_item(
        ctx,
        customer=subscription["customer"],
        currency=subscription["currency"],
        unit_amount=unit_amount_of(price),
        quantity=quantity,
        amount=-amount if credit else amount,
        description=description,
        price=price,
        period={"end": end, "start": proration_date},
        proration=True,
        subscription=subscription["id"],
        subscription_item=item["id"],
        tax_rates=item["tax_rates"],
    )


def _apply_item_changes(
    ctx: Ctx, subscription: dict[str, Any], params: dict, behavior: str, proration_date: int
) -> list[dict]:
    """Change, add or delete items; returns the proration invoice items it created."""
    period = _period(ctx.state, subscription)
    current = {item["id"]: item for item in _items(ctx.state, subscription)}
    interval = (
        subscription["items"]["data"][0]["price"]["recurring"]["interval"],
        subscription["items"]["data"][0]["price"]["recurring"]["interval_count"],
    )
    prorations: list[dict] = []

    def prorate(item: dict, price: dict, quantity: int, credit: bool) -> None:
        if behavior != "none":
            created = _proration(ctx, subscription, item, price, quantity, proration_date, period, credit)
            if created is not None:
                prorations.append(created)

    for position, raw in enumerate(get_list(params, "items")):
        if not isinstance(raw, dict):
            raise invalid_param("Invalid items", f"items[{position}]")
        param = f"items[{position}]"
        item = current.get(raw.get("id")) if raw.get("id") else None
        if raw.get("id") and item is None:
            raise invalid_param(f"No such subscription item on this subscription: '{raw['id']}'", f"{param}[id]")
        if item is not None and get_bool(raw, "deleted", False):
            prorate(item, item["price"], item["quantity"], credit=True)
            ctx.state.remove("subscription_item", item["id"])
            continue
        price = price_for(ctx, raw["price"], f"{param}[price]") if raw.get("price") else (item or {}).get("price")
        if price is None:
            raise missing_param(f"{param}[price]")
        _check_price(price, subscription["currency"], interval, f"{param}[price]")
        quantity = get_int(raw, "quantity", item["quantity"] if item else 1, param=f"{param}[quantity]")
        if item is None:
            rates = [ctx.state.get("tax_rate", r) for r in tax_rate_ids(ctx, raw, "tax_rates")]
            item = _new_item(ctx, subscription, price, quantity, rates, merge_metadata({}, raw), period)
            prorate(item, price, quantity, credit=False)
            continue
        # A change is a credit for the unused time at the old price and quantity plus a charge for the rest
        # of the period at the new ones: two proration items, as Stripe makes them.
        if price["id"] == item["price"]["id"] and quantity == item["quantity"]:
            continue
        prorate(item, item["price"], item["quantity"], credit=True)
        prorate(item, price, quantity, credit=False)
        item.update(price=price, plan=_plan(price), quantity=quantity)
        if "metadata" in raw:
            item["metadata"] = merge_metadata(item["metadata"], raw)
    refresh_subscription_items(ctx.state, subscription)
    if not subscription["items"]["data"]:
        raise invalid_param("A subscription needs at least one item.", "items")
    return prorations


@route("POST", "/v1/subscriptions/{id}")
def update_subscription(ctx: Ctx, params: dict, subscription_id: str) -> dict:
    subscription = ctx.state.get("subscription", subscription_id)
    if subscription["status"] in ("canceled", "incomplete_expired"):
        raise invalid_state(
            "A canceled subscription can only update its cancellation_details and metadata.", "resource_missing"
        )
    behavior = get_choice(params, "proration_behavior", PRORATION_BEHAVIORS, "create_prorations")
    start, end = _period(ctx.state, subscription)
    # Clamped into the current period: a date outside it would credit or charge more than the period.
    proration_date = min(max(get_int(params, "proration_date", ctx.now), start), end)
    before = snapshot(subscription)
    prorations = _apply_item_changes(ctx, subscription, params, behavior, proration_date) if "items" in params else []
    changes = {**metadata_change(subscription, params), **string_changes(params, ("description",))}
    if "cancel_at_period_end" in params:
        cancel = get_bool(params, "cancel_at_period_end")
        changes.update(cancel_at_period_end=cancel, cancel_at=end if cancel else None)
    if "default_payment_method" in params:
        value = params["default_payment_method"]
        if value:
            pm = resolve_payment_method(ctx, value, subscription["customer"], "default_payment_method")
            attach_payment_method(ctx, pm, subscription["customer"])
            changes["default_payment_method"] = pm["id"]
        else:
            changes["default_payment_method"] = None
    if "days_until_due" in params:
        changes["days_until_due"] = get_int(params, "days_until_due")
    if "default_tax_rates" in params:
        changes["default_tax_rates"] = [
            ctx.state.get("tax_rate", r) for r in tax_rate_ids(ctx, params, "default_tax_rates")
        ]
    if "discounts" in params or "coupon" in params:
        changes["discounts"] = discounts_param(
            ctx, params, subscription["currency"], customer=subscription["customer"], subscription=subscription["id"]
        )
    subscription.update(changes)
    # always_invoice bills the prorations at once; create_prorations leaves them pending for the renewal.
    if behavior == "always_invoice" and prorations:
        invoice = _subscription_invoice(ctx, subscription, "subscription_update", None, (proration_date, end))
        subscription["latest_invoice"] = invoice["id"]
        if _collect(ctx, subscription, invoice) is not None:
            subscription["status"] = "past_due"
    # The event's `previous_attributes`: only the keys that changed, with their old values.
    previous = {key: before[key] for key in subscription if key in before and subscription[key] != before[key]}
    if previous:
        ctx.state.emit(ctx, "customer.subscription.updated", subscription, previous)
    return subscription


def advance_subscription(ctx: Ctx, subscription: dict[str, Any], move_clock: bool = True) -> dict[str, Any]:
    """Sandbox control: move to the next billing period, producing the renewal invoice.

    The clock jumps to the period end first (when it is behind), so the renewal invoice, its
    payment and its events carry the renewal date.
    """
    if subscription["status"] not in ACTIVE_STATUSES:
        raise invalid_state(f"Subscription {subscription['id']} is {subscription['status']}; it does not renew.")
    start, end = _period(ctx.state, subscription)
    if move_clock and ctx.now < end:
        ctx.state.clock.advance(end - ctx.now)
        ctx.now = ctx.state.clock.now()
    before = snapshot(subscription)
    if subscription["cancel_at_period_end"]:
        _cancel(ctx, subscription, end)
        return {"subscription": subscription, "invoice": None}
    price = subscription["items"]["data"][0]["price"]["recurring"]
    anchor_day = datetime.fromtimestamp(subscription["billing_cycle_anchor"], UTC).day
    next_end = add_interval(end, price["interval"], price["interval_count"], anchor_day)
    for item in _items(ctx.state, subscription):
        item.update(current_period_start=end, current_period_end=next_end)
    refresh_subscription_items(ctx.state, subscription)
    # Licensed prices bill in advance: the renewal's lines cover the new period (end..next_end), while
    # the invoice's period_start/period_end name the period just ended, as Stripe's cycle invoices do.
    invoice = _subscription_invoice(ctx, subscription, "subscription_cycle", (end, next_end), (start, end))
    subscription["latest_invoice"] = invoice["id"]
    failed = _collect(ctx, subscription, invoice)
    if failed is not None:
        subscription["status"] = "past_due"
    # A paid renewal brings a past_due subscription back to active.
    elif subscription["status"] == "past_due" or subscription["status"] == "incomplete":
        subscription["status"] = "active"
    previous = {key: before[key] for key in subscription if subscription[key] != before[key]}
    ctx.state.emit(ctx, "customer.subscription.updated", subscription, previous)
    return {"subscription": subscription, "invoice": invoice}


def _cancel(ctx: Ctx, subscription: dict[str, Any], at: int) -> None:
    apply_update(
        ctx,
        subscription,
        {
            "status": "canceled",
            "canceled_at": ctx.now,
            "ended_at": at,
            "cancellation_details": {"comment": None, "feedback": None, "reason": "cancellation_requested"},
        },
    )
    ctx.state.emit(ctx, "customer.subscription.deleted", subscription)


@route("DELETE", "/v1/subscriptions/{id}")
def cancel_subscription(ctx: Ctx, params: dict, subscription_id: str) -> dict:
    subscription = ctx.state.get("subscription", subscription_id)
    if subscription["status"] == "canceled":
        raise invalid_state("This subscription is already canceled.", "resource_missing")
    _cancel(ctx, subscription, ctx.now)
    return subscription


retrieve_route("subscription", "/v1/subscriptions/{id}")


@route("GET", "/v1/subscriptions")
def list_subscriptions(ctx: Ctx, params: dict) -> dict:
    status = get_str(params, "status")
    price_id = get_str(params, "price")
    checks = []
    # Stripe's default list leaves canceled subscriptions out; `all` takes every status and `ended` means
    # canceled or incomplete_expired. https://docs.stripe.com/api/subscriptions/list#list_subscriptions-status
    if status is None:
        checks.append(lambda s: s["status"] not in ("canceled", "incomplete_expired"))
    elif status not in ("all", "ended"):
        checks.append(lambda s: s["status"] == status)
    elif status == "ended":
        checks.append(lambda s: s["status"] in ("canceled", "incomplete_expired"))
    if price_id:
        checks.append(lambda s: any(i["price"]["id"] == price_id for i in s["items"]["data"]))
    predicate = (lambda s: all(check(s) for check in checks)) if checks else None
    filters = {"customer": get_str(params, "customer"), "collection_method": get_str(params, "collection_method")}
    return list_filtered(ctx.state.collections["subscription"], params, "/v1/subscriptions", filters, predicate)


@route("GET", "/v1/subscriptions/search")
def search_subscriptions(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["subscription"], params, "/v1/subscriptions/search")


@route("GET", "/v1/subscription_items")
def list_subscription_items(ctx: Ctx, params: dict) -> dict:
    subscription_id = get_str(params, "subscription", required=True)
    ctx.state.get("subscription", subscription_id, "subscription")
    coll = ctx.state.collections["subscription_item"]
    return list_filtered(coll, params, "/v1/subscription_items", {"subscription": subscription_id})


retrieve_route("subscription_item", "/v1/subscription_items/{id}")
