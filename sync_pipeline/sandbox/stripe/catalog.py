"""Customers, products, prices, coupons, tax rates, payment methods (the test cards) and discounts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sync_pipeline.sandbox.stripe.common import (
    add_interval,
    address,
    apply_update,
    create_and_announce,
    metadata_change,
    number,
    retrieve_route,
    string_changes,
)
from sync_pipeline.sandbox.stripe.errors import invalid_param, invalid_state, missing_param, resource_missing
from sync_pipeline.sandbox.stripe.listing import list_filtered, search
from sync_pipeline.sandbox.stripe.money import check_amount, check_currency, decimal_text
from sync_pipeline.sandbox.stripe.params import (
    get_bool,
    get_choice,
    get_dict,
    get_int,
    get_list,
    get_str,
    merge_metadata,
)
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx

# --- test payment methods -------------------------------------------------------------------------


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    funding: str = "credit"
    country: str = "US"
    # (code, decline_code, message) when a charge on this card fails
    decline: tuple[str, str, str] | None = None
    dispute_reason: str | None = None


_DECLINED = ("card_declined", "generic_decline", "Your card was declined.")
TEST_CARDS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556", funding="debit"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_amex": TestCard("amex", "8431"),
    "pm_card_jcb": TestCard("jcb", "0505", country="JP"),
    "pm_card_chargeDeclined": TestCard("visa", "0002", decline=_DECLINED),
    "pm_card_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", decline=("card_declined", "insufficient_funds", "Your card has insufficient funds.")
    ),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "0069", decline=("expired_card", "expired_card", "Your card has expired.")
    ),
    # Attaches fine, fails when charged: the card for "customer's saved card stopped working".
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", decline=_DECLINED),
    "pm_card_createDispute": TestCard("visa", "0259", dispute_reason="fraudulent"),
}
# A stored payment method keeps only brand and last4, so its test behaviour is found again by last4
# (each test card above has its own).
CARD_BY_LAST4 = {card.last4: card for card in TEST_CARDS.values()}
# Stripe's test card numbers, so `card[number]` works too (only brand and last4 are kept).
CARD_NUMBERS = {
    "4242424242424242": "pm_card_visa",
    "4000056655665556": "pm_card_visa_debit",
    "5555555555554444": "pm_card_mastercard",
    "378282246310005": "pm_card_amex",
    "3566002020360505": "pm_card_jcb",
    "4000000000000002": "pm_card_chargeDeclined",
    "4000000000009995": "pm_card_chargeDeclinedInsufficientFunds",
    "4000000000000069": "pm_card_chargeDeclinedExpiredCard",
    "4000000000000341": "pm_card_chargeCustomerFail",
    "4000000000000259": "pm_card_createDispute",
}


def test_card_of(payment_method: dict[str, Any]) -> TestCard:
    return CARD_BY_LAST4.get((payment_method.get("card") or {}).get("last4", ""), TEST_CARDS["pm_card_visa"])


def token_to_test_name(token: str) -> str | None:
    if token in TEST_CARDS:
        return token
    if token.startswith("tok_"):
        candidate = "pm_card_" + token[4:]
        return candidate if candidate in TEST_CARDS else None
    return None


# The same card gives the same fingerprint in one sandbox, as Stripe's per-account fingerprints do.
def _fingerprint(ctx: Ctx, last4: str) -> str:
    return hashlib.sha256(f"{ctx.state.seed}:{last4}".encode()).hexdigest()[:16]


def create_payment_method(
    ctx: Ctx, test_name: str, customer: str | None = None, billing: dict | None = None
) -> dict[str, Any]:
    card = TEST_CARDS[test_name]
    pm = {
        "id": ctx.state.new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": {
            "address": None,
            "email": None,
            "name": None,
            "phone": None,
            "tax_id": None,
            **(billing or {}),
        },
        "card": {
            "brand": card.brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": card.country,
            "display_brand": card.brand,
            "exp_month": 12,
            # Test cards accept any future expiry; a fixed one keeps seeded objects identical.
            "exp_year": 2034,
            "fingerprint": _fingerprint(ctx, card.last4),
            "funding": card.funding,
            "generated_from": None,
            "last4": card.last4,
            "networks": {"available": [card.brand], "preferred": None},
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
            "regulated_status": "unregulated",
        },
        "created": ctx.now,
        "customer": customer,
        "livemode": False,
        "metadata": {},
        "type": "card",
        "customer_account": None,
    }
    return ctx.state.insert("payment_method", pm)


def resolve_payment_method(
    ctx: Ctx, value: str, customer: str | None = None, param: str = "payment_method"
) -> dict[str, Any]:
    """A stored `pm_...`, or a test token (`pm_card_visa`, `tok_visa`) that makes a new one."""
    test_name = token_to_test_name(value)
    if test_name is not None:
        pm = create_payment_method(ctx, test_name)
        if customer:
            attach_payment_method(ctx, pm, customer)
        return pm
    pm = ctx.state.collections["payment_method"].get(value)
    if pm is None:
        raise resource_missing("PaymentMethod", value, param)
    return pm


# A payment method belongs to one customer for good: attaching it to another is refused.
# https://docs.stripe.com/api/payment_methods/attach
def attach_payment_method(ctx: Ctx, pm: dict[str, Any], customer_id: str) -> None:
    if pm.get("customer") == customer_id:
        return
    if pm.get("customer"):
        raise invalid_state(
            "The payment method you provided has already been attached to a customer.",
            "payment_method_unexpected_state",
        )
    coll = ctx.state.collections["payment_method"]
    pm["customer"] = customer_id
    coll.add_to_secondary("customer", customer_id, coll.entries[pm["id"]])
    ctx.state.emit(ctx, "payment_method.attached", pm)


@route("POST", "/v1/payment_methods")
def create_payment_method_endpoint(ctx: Ctx, params: dict) -> dict:
    get_choice(params, "type", ("card",), "card")
    card = get_dict(params, "card")
    test_name = None
    if card.get("token"):
        test_name = token_to_test_name(card["token"])
    elif card.get("number"):
        test_name = CARD_NUMBERS.get(str(card["number"]).replace(" ", ""))
    if test_name is None:
        raise invalid_param("Your card number is incorrect. Use a Stripe test card number or token.", "card[number]")
    pm = create_payment_method(ctx, test_name)
    pm["metadata"] = merge_metadata({}, params)
    return pm


retrieve_route("payment_method", "/v1/payment_methods/{id}")


@route("POST", "/v1/payment_methods/{id}/attach")
def attach_payment_method_endpoint(ctx: Ctx, params: dict, pm_id: str) -> dict:
    # `pm_card_visa` and friends work here too: each attach makes a new card, as in test mode.
    pm = resolve_payment_method(ctx, pm_id, None, "payment_method")
    customer = ctx.state.get("customer", get_str(params, "customer", required=True), "customer")
    attach_payment_method(ctx, pm, customer["id"])
    return pm


@route("GET", "/v1/payment_methods")
def list_payment_methods(ctx: Ctx, params: dict) -> dict:
    coll = ctx.state.collections["payment_method"]
    return list_filtered(
        coll, params, "/v1/payment_methods", {"customer": get_str(params, "customer"), "type": get_str(params, "type")}
    )


@route("GET", "/v1/customers/{id}/payment_methods")
def list_customer_payment_methods(ctx: Ctx, params: dict, customer_id: str) -> dict:
    ctx.state.get("customer", customer_id)
    coll = ctx.state.collections["payment_method"]
    return list_filtered(coll, params, f"/v1/customers/{customer_id}/payment_methods", {"customer": customer_id})


# --- customers ------------------------------------------------------------------------------------


def _invoice_settings(ctx: Ctx, params: dict, current: dict | None, customer_id: str, attached: dict[str, str]) -> dict:
    settings = dict(
        current or {"custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None}
    )
    raw = get_dict(params, "invoice_settings")
    if "default_payment_method" in raw:
        value = raw["default_payment_method"]
        if not value:
            settings["default_payment_method"] = None
        elif value in attached:
            settings["default_payment_method"] = attached[value]
        else:
            pm = resolve_payment_method(ctx, value, customer_id, "invoice_settings[default_payment_method]")
            attach_payment_method(ctx, pm, customer_id)
            settings["default_payment_method"] = pm["id"]
    if "footer" in raw:
        settings["footer"] = raw["footer"] or None
    return settings


# Stable per customer, so invoice numbers in a replayed sandbox come out the same.
def _invoice_prefix(customer_id: str) -> str:
    return hashlib.sha256(customer_id.encode()).hexdigest()[:8].upper()


@route("POST", "/v1/customers")
def create_customer(ctx: Ctx, params: dict) -> dict:
    customer_id = ctx.state.new_id("cus")
    customer = {
        "id": customer_id,
        "object": "customer",
        "address": address(params),
        "balance": get_int(params, "balance", 0),
        "created": ctx.now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": get_str(params, "description"),
        "discount": None,
        "email": get_str(params, "email"),
        "invoice_prefix": get_str(params, "invoice_prefix") or _invoice_prefix(customer_id),
        "invoice_settings": None,
        "livemode": False,
        "metadata": merge_metadata({}, params),
        "name": get_str(params, "name"),
        "next_invoice_sequence": 1,
        "phone": get_str(params, "phone"),
        "preferred_locales": [str(v) for v in get_list(params, "preferred_locales")],
        "shipping": None,
        "tax_exempt": get_choice(params, "tax_exempt", ("none", "exempt", "reverse"), "none"),
        "test_clock": None,
    }
    ctx.state.insert("customer", customer)
    attached: dict[str, str] = {}
    if params.get("payment_method"):
        pm = resolve_payment_method(ctx, params["payment_method"], customer_id)
        attach_payment_method(ctx, pm, customer_id)
        attached[params["payment_method"]] = pm["id"]
    customer["invoice_settings"] = _invoice_settings(ctx, params, None, customer_id, attached)
    ctx.state.emit(ctx, "customer.created", customer)
    return customer


retrieve_route("customer", "/v1/customers/{id}", show_deleted=True)


@route("POST", "/v1/customers/{id}")
def update_customer(ctx: Ctx, params: dict, customer_id: str) -> dict:
    customer = ctx.state.get("customer", customer_id)
    changes = {**metadata_change(customer, params), **string_changes(params, ("email", "name", "description", "phone"))}
    if "address" in params:
        changes["address"] = address(params)
    if "balance" in params:
        # Setting the balance directly is recorded as an `adjustment` for the difference, as in Stripe.
        balance = get_int(params, "balance")
        if balance != customer["balance"]:
            if customer["currency"] is None:
                raise invalid_param(
                    "This customer has no currency yet; create a balance transaction with a currency instead.",
                    "balance",
                )
            balance_transaction(ctx, customer, balance - customer["balance"], "adjustment")
    attached: dict[str, str] = {}
    if params.get("payment_method"):
        pm = resolve_payment_method(ctx, params["payment_method"], customer_id)
        attached[params["payment_method"]] = pm["id"]
    if "invoice_settings" in params:
        changes["invoice_settings"] = _invoice_settings(
            ctx, params, customer["invoice_settings"], customer_id, attached
        )
    return apply_update(ctx, customer, changes, "customer.updated")


@route("DELETE", "/v1/customers/{id}")
def delete_customer(ctx: Ctx, params: dict, customer_id: str) -> dict:
    customer = ctx.state.get("customer", customer_id)
    stub = ctx.state.remove("customer", customer_id)
    ctx.state.emit(ctx, "customer.deleted", customer)
    return stub


@route("GET", "/v1/customers")
def list_customers(ctx: Ctx, params: dict) -> dict:
    return list_filtered(
        ctx.state.collections["customer"], params, "/v1/customers", {"email": get_str(params, "email")}
    )


@route("GET", "/v1/customers/search")
def search_customers(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["customer"], params, "/v1/customers/search")


# --- customer balance transactions ------------------------------------------------------------------
# The customer's invoice credit balance is a ledger: every change is a customer balance transaction, and
# `customer.balance` is the last one's `ending_balance`. Negative is credit (we owe the customer), positive
# is debit. https://docs.stripe.com/billing/customer/balance
BALANCE_TRANSACTION_TYPES = (
    "adjustment",  # made through the API (or by setting `balance` on the customer)
    "applied_to_invoice",  # applied at an invoice's finalization; a negative total's credit lands here too
    "credit_note",  # a credit note's `credit_amount`
    "invoice_too_small",  # an amount due below the minimum charge, moved to the balance as a debit
    "unapplied_from_invoice",  # what a voided invoice had applied, given back
)


def balance_transaction(
    ctx: Ctx,
    customer: dict[str, Any],
    amount: int,
    txn_type: str,
    *,
    currency: str | None = None,
    invoice: str | None = None,
    credit_note: str | None = None,
    description: str | None = None,
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Move the customer's balance by `amount` and record it; emits `customer.updated` for the balance."""
    currency = currency or customer["currency"]
    if customer["currency"] is not None and currency != customer["currency"]:
        # Stripe keeps credit in other currencies apart (`invoice_credit_balance`); this stand-in keeps the
        # balance of the customer's own currency only, and says so rather than mixing currencies.
        raise invalid_param(
            f"This sandbox keeps a customer's balance in the customer's currency ({customer['currency']}) only.",
            "currency",
        )
    ending = customer["balance"] + amount
    txn = {
        "id": ctx.state.new_id("cbtxn"),
        "object": "customer_balance_transaction",
        "amount": amount,
        "checkout_session": None,
        "created": ctx.now,
        "credit_note": credit_note,
        "currency": currency,
        "customer": customer["id"],
        "customer_account": None,
        "description": description,
        "ending_balance": ending,
        "invoice": invoice,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "type": txn_type,
    }
    ctx.state.insert("customer_balance_transaction", txn)
    changes: dict[str, Any] = {"balance": ending}
    if customer["currency"] is None:
        # The first balance transaction sets a currency-less customer's currency, as Stripe documents.
        changes["currency"] = currency
    apply_update(ctx, customer, changes, "customer.updated")
    return txn


@route("POST", "/v1/customers/{id}/balance_transactions")
def create_balance_transaction(ctx: Ctx, params: dict, customer_id: str) -> dict:
    customer = ctx.state.get("customer", customer_id)
    amount = get_int(params, "amount", required=True)
    currency = check_currency(get_str(params, "currency", required=True))
    check_amount(amount, currency, allow_negative=True)
    if amount == 0:
        raise invalid_param("The amount must not be zero.", "amount")
    return balance_transaction(
        ctx,
        customer,
        amount,
        "adjustment",
        currency=currency,
        description=get_str(params, "description"),
        metadata=merge_metadata({}, params),
    )


def _customer_balance_transaction(ctx: Ctx, customer_id: str, txn_id: str) -> dict:
    ctx.state.get("customer", customer_id)
    txn = ctx.state.get("customer_balance_transaction", txn_id)
    if txn["customer"] != customer_id:
        raise resource_missing("customer_balance_transaction", txn_id)
    return txn


@route("GET", "/v1/customers/{id}/balance_transactions/{txn}")
def retrieve_balance_transaction(ctx: Ctx, params: dict, customer_id: str, txn_id: str) -> dict:
    return _customer_balance_transaction(ctx, customer_id, txn_id)


@route("POST", "/v1/customers/{id}/balance_transactions/{txn}")
def update_balance_transaction(ctx: Ctx, params: dict, customer_id: str, txn_id: str) -> dict:
    # The ledger is immutable: only the description and metadata change.
    txn = _customer_balance_transaction(ctx, customer_id, txn_id)
    return apply_update(ctx, txn, {**metadata_change(txn, params), **string_changes(params, ("description",))})


@route("GET", "/v1/customers/{id}/balance_transactions")
def list_balance_transactions(ctx: Ctx, params: dict, customer_id: str) -> dict:
    ctx.state.get("customer", customer_id)
    coll = ctx.state.collections["customer_balance_transaction"]
    filters = {"customer": customer_id, "invoice": get_str(params, "invoice")}
    return list_filtered(coll, params, f"/v1/customers/{customer_id}/balance_transactions", filters)


# --- products and prices --------------------------------------------------------------------------


def _new_product(ctx: Ctx, params: dict, product_id: str | None = None) -> dict:
    name = get_str(params, "name", required=True)
    product = {
        "id": product_id or ctx.state.new_id("prod"),
        "object": "product",
        "active": get_bool(params, "active", True),
        "created": ctx.now,
        "default_price": None,
        "description": get_str(params, "description"),
        "images": [str(v) for v in get_list(params, "images")],
        "livemode": False,
        "marketing_features": [],
        "metadata": merge_metadata({}, params),
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": get_str(params, "statement_descriptor"),
        "tax_code": get_str(params, "tax_code"),
        "unit_label": get_str(params, "unit_label"),
        "updated": ctx.now,
        "url": get_str(params, "url"),
        "type": "service",
    }
    return create_and_announce(ctx, "product", product)


@route("POST", "/v1/products")
def create_product(ctx: Ctx, params: dict) -> dict:
    product_id = get_str(params, "id")
    if product_id and ctx.state.collections["product"].get(product_id):
        raise invalid_param(f"Product already exists: {product_id}", "id", code="resource_already_exists")
    product = _new_product(ctx, params, product_id)
    price_data = get_dict(params, "default_price_data")
    if price_data:
        price = _new_price(ctx, {**price_data, "product": product["id"]})
        product["default_price"] = price["id"]
    return product


retrieve_route("product", "/v1/products/{id}")


@route("POST", "/v1/products/{id}")
def update_product(ctx: Ctx, params: dict, product_id: str) -> dict:
    product = ctx.state.get("product", product_id)
    changes = {
        **metadata_change(product, params),
        **string_changes(params, ("description", "statement_descriptor", "unit_label", "url")),
    }
    if "name" in params:
        changes["name"] = get_str(params, "name")
    if "active" in params:
        changes["active"] = get_bool(params, "active")
    if "default_price" in params:
        changes["default_price"] = ctx.state.get("price", params["default_price"], "default_price")["id"]
    if changes:
        changes["updated"] = ctx.now
    return apply_update(ctx, product, changes, "product.updated")


@route("GET", "/v1/products")
def list_products(ctx: Ctx, params: dict) -> dict:
    return list_filtered(
        ctx.state.collections["product"], params, "/v1/products", {"active": get_bool(params, "active")}
    )


@route("GET", "/v1/products/search")
def search_products(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["product"], params, "/v1/products/search")


def _recurring(params: dict) -> dict | None:
    raw = get_dict(params, "recurring")
    if not raw:
        return None
    interval = get_choice(raw, "interval", ("day", "week", "month", "year"))
    if interval is None:
        raise missing_param("recurring[interval]")
    return {
        "interval": interval,
        "interval_count": get_int(raw, "interval_count", 1, param="recurring[interval_count]"),
        "meter": None,
        "usage_type": "licensed",
        "trial_period_days": None,
    }


def _new_price(ctx: Ctx, params: dict) -> dict:
    currency = check_currency(get_str(params, "currency", required=True))
    if params.get("product_data"):
        product_id = _new_product(ctx, get_dict(params, "product_data"))["id"]
    else:
        product_id = ctx.state.get("product", get_str(params, "product", required=True), "product")["id"]
    unit_amount = get_int(params, "unit_amount")
    if unit_amount is not None:
        check_amount(unit_amount, currency, "unit_amount")
        unit_decimal = Decimal(unit_amount)
    elif params.get("unit_amount_decimal") is not None:
        # Kept to the digit (up to 12 decimal places): an amount billed at this price is the unit amount
        # times the quantity, rounded then. `unit_amount` is "a whole integer if possible", else null.
        unit_decimal = decimal_param(params, "unit_amount_decimal")
        if unit_decimal < 0:
            raise invalid_param("This value must be greater than or equal to 0.", "unit_amount_decimal")
        unit_amount = int(unit_decimal) if unit_decimal == unit_decimal.to_integral_value() else None
    else:
        raise missing_param("unit_amount")
    recurring = _recurring(params)
    price = {
        "id": ctx.state.new_id("price"),
        "object": "price",
        "active": get_bool(params, "active", True),
        "billing_scheme": "per_unit",
        "created": ctx.now,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": get_str(params, "lookup_key"),
        "metadata": merge_metadata({}, params),
        "nickname": get_str(params, "nickname"),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": get_choice(params, "tax_behavior", ("exclusive", "inclusive", "unspecified"), "unspecified"),
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": decimal_text(unit_decimal),
    }
    return create_and_announce(ctx, "price", price)


def decimal_param(params: dict, name: str) -> Decimal:
    """A `*_decimal` parameter: a decimal string with at most 12 decimal places, as Stripe takes it."""
    try:
        value = Decimal(str(params[name]))
    except (ArithmeticError, ValueError):
        raise invalid_param(f"Invalid decimal: {params[name]}", name) from None
    if not value.is_finite() or -value.as_tuple().exponent > 12:
        raise invalid_param(f"Invalid decimal: {params[name]} (at most 12 decimal places).", name)
    return value


@route("POST", "/v1/prices")
def create_price(ctx: Ctx, params: dict) -> dict:
    return _new_price(ctx, params)


retrieve_route("price", "/v1/prices/{id}")


@route("POST", "/v1/prices/{id}")
def update_price(ctx: Ctx, params: dict, price_id: str) -> dict:
    price = ctx.state.get("price", price_id)
    changes = {**metadata_change(price, params), **string_changes(params, ("nickname", "lookup_key"))}
    if "active" in params:
        changes["active"] = get_bool(params, "active")
    return apply_update(ctx, price, changes, "price.updated")


@route("GET", "/v1/prices")
def list_prices(ctx: Ctx, params: dict) -> dict:
    filters = {
        "product": get_str(params, "product"),
        "active": get_bool(params, "active"),
        "type": get_str(params, "type"),
        "currency": get_str(params, "currency"),
    }
    lookup_keys = set(get_list(params, "lookup_keys"))
    predicate = (lambda price: price["lookup_key"] in lookup_keys) if lookup_keys else None
    return list_filtered(ctx.state.collections["price"], params, "/v1/prices", filters, predicate)


def price_for(ctx: Ctx, price_id: str, param: str = "price") -> dict:
    price = ctx.state.get("price", price_id, param)
    # Archived prices stay readable but cannot be billed: Stripe refuses them on new items.
    if not price["active"]:
        raise invalid_param("The price specified is inactive. This field only accepts active prices.", param)
    return price


# --- coupons, discounts, tax rates ----------------------------------------------------------------


@route("POST", "/v1/coupons")
def create_coupon(ctx: Ctx, params: dict) -> dict:
    coupon_id = get_str(params, "id") or hashlib.sha256(ctx.state.new_id("coupon").encode()).hexdigest()[:8].upper()
    if ctx.state.collections["coupon"].get(coupon_id):
        raise invalid_param("Coupon already exists.", "id", code="resource_already_exists")
    percent_off = params.get("percent_off")
    amount_off = get_int(params, "amount_off")
    if (percent_off is None) == (amount_off is None):
        raise invalid_param("You must pass exactly one of percent_off or amount_off.", "percent_off")
    currency = None
    if amount_off is not None:
        currency = check_currency(get_str(params, "currency", required=True))
        check_amount(amount_off, currency, "amount_off")
    percent = number(percent_off, "percent_off") if percent_off is not None else None
    if percent is not None and not 0 < percent <= 100:
        raise invalid_param("percent_off must be between 0 and 100.", "percent_off")
    # Stripe's default duration is `once`. https://docs.stripe.com/api/coupons/create#create_coupon-duration
    duration = get_choice(params, "duration", ("forever", "once", "repeating"), "once")
    coupon = {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": ctx.now,
        "currency": currency,
        "duration": duration,
        "duration_in_months": get_int(params, "duration_in_months") if duration == "repeating" else None,
        "livemode": False,
        "max_redemptions": get_int(params, "max_redemptions"),
        "metadata": merge_metadata({}, params),
        "name": get_str(params, "name"),
        "percent_off": percent,
        "redeem_by": get_int(params, "redeem_by"),
        "times_redeemed": 0,
        "valid": True,
    }
    return create_and_announce(ctx, "coupon", coupon)


retrieve_route("coupon", "/v1/coupons/{id}")


@route("POST", "/v1/coupons/{id}")
def update_coupon(ctx: Ctx, params: dict, coupon_id: str) -> dict:
    coupon = ctx.state.get("coupon", coupon_id)
    return apply_update(
        ctx, coupon, {**metadata_change(coupon, params), **string_changes(params, ("name",))}, "coupon.updated"
    )


@route("DELETE", "/v1/coupons/{id}")
def delete_coupon(ctx: Ctx, params: dict, coupon_id: str) -> dict:
    coupon = ctx.state.get("coupon", coupon_id)
    stub = ctx.state.remove("coupon", coupon_id)
    ctx.state.emit(ctx, "coupon.deleted", coupon)
    return stub


@route("GET", "/v1/coupons")
def list_coupons(ctx: Ctx, params: dict) -> dict:
    return list_filtered(ctx.state.collections["coupon"], params, "/v1/coupons")


def redeem_coupon(ctx: Ctx, coupon_id: str, param: str, currency: str, **attached_to: str | None) -> dict:
    """A Discount (`di_...`) applying a coupon to an invoice or subscription."""
    coupon = ctx.state.get("coupon", coupon_id, param)
    if not coupon["valid"]:
        raise invalid_param(f"Coupon {coupon_id} is no longer valid.", param, code="coupon_expired")
    # An amount_off coupon is money in one currency; it cannot discount an invoice in another.
    if coupon["amount_off"] is not None and coupon["currency"] != currency:
        raise invalid_param(f"Coupon {coupon_id} is in {coupon['currency']}, not {currency}.", param)
    if coupon["max_redemptions"] is not None and coupon["times_redeemed"] >= coupon["max_redemptions"]:
        raise invalid_param(f"Coupon {coupon_id} has been fully redeemed.", param, code="coupon_expired")
    coupon["times_redeemed"] += 1
    if coupon["max_redemptions"] is not None and coupon["times_redeemed"] >= coupon["max_redemptions"]:
        # The last allowed redemption retires the coupon, as Stripe marks it `valid: false`.
        coupon["valid"] = False
    discount = {
        "id": ctx.state.new_id("di"),
        "object": "discount",
        "checkout_session": None,
        "customer": attached_to.get("customer"),
        "end": (
            add_interval(ctx.now, "month", coupon["duration_in_months"], datetime.fromtimestamp(ctx.now, UTC).day)
            # A repeating coupon ends duration_in_months after it is redeemed, on the same day of month.
            if coupon["duration"] == "repeating" and coupon["duration_in_months"]
            else None
        ),
        "invoice": attached_to.get("invoice"),
        "invoice_item": None,
        "promotion_code": None,
        "start": ctx.now,
        "subscription": attached_to.get("subscription"),
        "subscription_item": None,
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "customer_account": None,
    }
    return ctx.state.insert("discount", discount)


def discounts_param(ctx: Ctx, params: dict, currency: str, **attached_to: str | None) -> list[str]:
    """`discounts[0][coupon]=...` (or `discounts[0][discount]=di_...`) as discount ids."""
    ids = []
    for position, item in enumerate(get_list(params, "discounts")):
        if not isinstance(item, dict):
            raise invalid_param("Invalid discounts", f"discounts[{position}]")
        if item.get("discount"):
            ids.append(ctx.state.get("discount", item["discount"], f"discounts[{position}][discount]")["id"])
        elif item.get("coupon"):
            ids.append(
                redeem_coupon(ctx, item["coupon"], f"discounts[{position}][coupon]", currency, **attached_to)["id"]
            )
    if params.get("coupon"):
        ids.append(redeem_coupon(ctx, params["coupon"], "coupon", currency, **attached_to)["id"])
    return ids


@route("POST", "/v1/tax_rates")
def create_tax_rate(ctx: Ctx, params: dict) -> dict:
    if params.get("percentage") is None:
        raise missing_param("percentage")
    percentage = number(params["percentage"], "percentage")
    if not 0 <= percentage <= 100:
        raise invalid_param("percentage must be between 0 and 100.", "percentage")
    inclusive = get_bool(params, "inclusive")
    if inclusive is None:
        raise missing_param("inclusive")
    rate = {
        "id": ctx.state.new_id("txr"),
        "object": "tax_rate",
        "active": get_bool(params, "active", True),
        "country": get_str(params, "country"),
        "created": ctx.now,
        "description": get_str(params, "description"),
        "display_name": get_str(params, "display_name", required=True),
        "effective_percentage": percentage,
        "inclusive": inclusive,
        "jurisdiction": get_str(params, "jurisdiction"),
        "jurisdiction_level": None,
        "livemode": False,
        "metadata": merge_metadata({}, params),
        "percentage": percentage,
        "state": get_str(params, "state"),
        "tax_type": get_str(params, "tax_type"),
        "flat_amount": None,
        "rate_type": "percentage",
    }
    return create_and_announce(ctx, "tax_rate", rate)


retrieve_route("tax_rate", "/v1/tax_rates/{id}")


@route("POST", "/v1/tax_rates/{id}")
def update_tax_rate(ctx: Ctx, params: dict, rate_id: str) -> dict:
    rate = ctx.state.get("tax_rate", rate_id)
    changes = {
        **metadata_change(rate, params),
        **string_changes(params, ("description", "display_name", "jurisdiction")),
    }
    if "active" in params:
        changes["active"] = get_bool(params, "active")
    return apply_update(ctx, rate, changes, "tax_rate.updated")


@route("GET", "/v1/tax_rates")
def list_tax_rates(ctx: Ctx, params: dict) -> dict:
    filters = {"active": get_bool(params, "active"), "inclusive": get_bool(params, "inclusive")}
    return list_filtered(ctx.state.collections["tax_rate"], params, "/v1/tax_rates", filters)


def tax_rate_ids(ctx: Ctx, params: dict, name: str) -> list[str]:
    ids = []
    for position, value in enumerate(get_list(params, name)):
        rate = ctx.state.get("tax_rate", value, f"{name}[{position}]")
        if not rate["active"]:
            raise invalid_param(f"Tax rate {value} is inactive.", f"{name}[{position}]")
        ids.append(rate["id"])
    return ids
