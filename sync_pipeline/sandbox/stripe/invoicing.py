"""Invoice items, invoices (draft -> open -> paid/void/uncollectible), invoice payments, credit notes.

Shapes follow API version 2025-03-31.basil and later: an invoice carries no charge or payment
intent; each payment is an InvoicePayment (`inpay_...`) pointing at a PaymentIntent, lines use
`pricing`/`parent`/`taxes`, and the subscription sits under `parent.subscription_details`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sync_pipeline.sandbox.stripe.catalog import (
    balance_transaction,
    decimal_param,
    discounts_param,
    price_for,
    resolve_payment_method,
    tax_rate_ids,
)
from sync_pipeline.sandbox.stripe.common import (
    apply_update,
    metadata_change,
    retrieve_route,
    string_changes,
    update_route,
)
from sync_pipeline.sandbox.stripe.errors import StripeApiError, invalid_param, invalid_state, missing_param
from sync_pipeline.sandbox.stripe.listing import list_filtered, list_object, parse_limit, search
from sync_pipeline.sandbox.stripe.money import (
    amount_grid,
    check_amount,
    check_currency,
    decimal_text,
    round_minor,
)
from sync_pipeline.sandbox.stripe.params import (
    get_bool,
    get_choice,
    get_dict,
    get_int,
    get_list,
    get_str,
    merge_metadata,
)
from sync_pipeline.sandbox.stripe.payments import (
    _maybe_dispute,
    confirm_payment_intent,
    decline_error,
    new_payment_intent,
    refund_charge,
)
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx, StripeState

DAY = 86400
# An invoice embeds its first lines only (`lines.has_more` says there are more); the rest are paged
# from /v1/invoices/{id}/lines.
EMBEDDED_LINES = 10
ACCOUNT_NAME = "Sandbox Inc."
# Fields Stripe still lets you change once an invoice is finalized.
MUTABLE_AFTER_FINALIZE = {"metadata", "description", "footer", "due_date", "auto_advance", "expand"}
# Smart Retries' first retry, for invoices that collect automatically.
RETRY_DELAY = 3 * DAY
# Stripe's minimum charge amounts, in minor units (docs.stripe.com/currencies#minimum-and-maximum-charge-amounts);
# an invoice whose amount due is below it is not charged.
MINIMUM_CHARGE = {"usd": 50, "eur": 50, "gbp": 30, "jpy": 50, "cad": 50, "aud": 50, "chf": 50}

# --- invoice items --------------------------------------------------------------------------------


def _pricing(price: dict[str, Any] | None, unit_amount: int | Decimal) -> dict[str, Any]:
    return {
        "price_details": {"price": price["id"], "product": price["product"]} if price else None,
        "type": "price_details",
        # Kept to the digit: a unit amount of 0.5 cent stays "0.5", and the line amount rounds the product.
        "unit_amount_decimal": decimal_text(Decimal(unit_amount)),
    }


def unit_amount_of(price: dict[str, Any]) -> Decimal:
    """A price's unit amount with its fraction of a minor unit (`unit_amount` is null for those)."""
    return Decimal(price["unit_amount_decimal"])


def new_invoice_item(
    ctx: Ctx,
    *,
    customer: str,
    currency: str,
    unit_amount: int | Decimal,
    quantity: int,
    description: str | None,
    price: dict[str, Any] | None = None,
    invoice: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    discountable: bool = True,
    tax_rates: list[dict[str, Any]] | None = None,
    period: dict[str, int] | None = None,
    proration: bool = False,
    subscription: str | None = None,
    subscription_item: str | None = None,
    amount: int | None = None,
) -> dict[str, Any]:
    amount = round_minor(Decimal(unit_amount) * quantity, currency) if amount is None else amount
    item = {
        "id": ctx.state.new_id("ii"),
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "date": ctx.now,
        "description": description,
        # Prorations are never discounted: the lines they adjust were discounted already.
        # https://docs.stripe.com/api/invoiceitems/create#create_invoiceitem-discountable
        "discountable": discountable and not proration,
        "discounts": [],
        "invoice": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "period": period or {"end": ctx.now, "start": ctx.now},
        "proration": proration,
        "quantity": quantity,
        "tax_rates": tax_rates or [],
        "test_clock": None,
        "parent": (
            {
                "subscription_details": {"subscription": subscription, "subscription_item": subscription_item},
                "type": "subscription_details",
            }
            if subscription
            else None
        ),
        "pricing": _pricing(price, unit_amount),
        "net_amount": amount,
        "customer_account": None,
        "quantity_decimal": str(quantity),
    }
    ctx.state.insert("invoiceitem", item)
    if invoice is not None:
        attach_item(ctx.state, invoice, item)
    ctx.state.emit(ctx, "invoiceitem.created", item)
    return item


def attach_item(state: StripeState, invoice: dict[str, Any], item: dict[str, Any]) -> None:
    coll = state.collections["invoiceitem"]
    item["invoice"] = invoice["id"]
    coll.add_to_secondary("invoice", invoice["id"], coll.entries[item["id"]])
    # Since basil a line names its source in `parent`: an item of a subscription item (a proration) makes a
    # subscription_item_details line, any other (a one-time `add_invoice_items` price too, which names its
    # subscription but no subscription item) an invoice_item_details line.
    details = (item.get("parent") or {}).get("subscription_details") or {}
    subscription = details.get("subscription")
    if subscription and details.get("subscription_item"):
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": item["id"],
                "proration": item["proration"],
                "proration_details": {"credited_items": None},
                "subscription": subscription,
                "subscription_item": item["parent"]["subscription_details"]["subscription_item"],
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": item["proration"],
                "proration_details": {"credited_items": None},
                "subscription": subscription,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    add_line(
        state,
        invoice,
        amount=item["amount"],
        description=item["description"],
        discountable=item["discountable"],
        metadata=item["metadata"],
        period=item["period"],
        quantity=item["quantity"],
        subscription=subscription,
        parent=parent,
        pricing=item["pricing"],
    )


def _item_amounts(ctx: Ctx, params: dict, current: dict[str, Any] | None, currency: str | None):
    """(price, unit_amount, quantity, amount, currency) from `amount` | `price`/`pricing[price]` |
    `unit_amount` | `unit_amount_decimal`; the unit amount is a Decimal, since `unit_amount_decimal` may
    carry a fraction of a minor unit (up to 12 decimal places), which the line amount then rounds."""
    quantity = get_int(params, "quantity", current["quantity"] if current else 1)
    if quantity is None or quantity < 0:
        raise invalid_param("quantity must be a non-negative integer.", "quantity")
    price_id = get_str(params, "price") or get_dict(params, "pricing").get("price")
    if price_id:
        price = price_for(ctx, price_id)
        unit = unit_amount_of(price)
        return price, unit, quantity, round_minor(unit * quantity, price["currency"]), price["currency"]
    currency = check_currency(
        get_str(params, "currency") or currency or (current or {}).get("currency") or "", "currency"
    )
    if params.get("amount") is not None:
        amount = get_int(params, "amount")
        check_amount(amount, currency, allow_negative=True)
        # `amount` alone is a quantity-1 item of that amount; a negative one is a manual credit line.
        return None, Decimal(amount), 1, amount, currency
    unit_amount = get_int(params, "unit_amount")
    if unit_amount is not None:
        check_amount(unit_amount, currency, "unit_amount", allow_negative=True)
        return None, Decimal(unit_amount), quantity, unit_amount * quantity, currency
    if params.get("unit_amount_decimal") is not None:
        unit = decimal_param(params, "unit_amount_decimal")
        return None, unit, quantity, round_minor(unit * quantity, currency), currency
    if current is None:
        raise missing_param("amount")
    unit = Decimal(current["pricing"]["unit_amount_decimal"])
    price = ctx.state.find((current["pricing"].get("price_details") or {}).get("price") or "")
    return price, unit, quantity, round_minor(unit * quantity, currency), currency


def _full_tax_rates(ctx: Ctx, params: dict, name: str) -> list[dict[str, Any]]:
    return [ctx.state.get("tax_rate", rate_id) for rate_id in tax_rate_ids(ctx, params, name)]


def _period(params: dict, default: dict[str, int] | None, now: int) -> dict[str, int]:
    raw = get_dict(params, "period")
    if not raw:
        return default or {"end": now, "start": now}
    return {
        "end": get_int(raw, "end", now, param="period[end]"),
        "start": get_int(raw, "start", now, param="period[start]"),
    }


@route("POST", "/v1/invoiceitems")
def create_invoice_item(ctx: Ctx, params: dict) -> dict:
    customer = ctx.state.get("customer", get_str(params, "customer", required=True), "customer")
    invoice = None
    if params.get("invoice"):
        invoice = ctx.state.get("invoice", params["invoice"], "invoice")
        _require_draft(invoice, "invoice")
        if invoice["customer"] != customer["id"]:
            raise invalid_param("The invoice belongs to another customer.", "invoice")
    price, unit_amount, quantity, amount, currency = _item_amounts(
        ctx, params, None, invoice["currency"] if invoice else customer["currency"] or "usd"
    )
    if invoice is not None and currency != invoice["currency"]:
        raise invalid_param(f"The currency ({currency}) must match the invoice's ({invoice['currency']}).", "currency")
    item = new_invoice_item(
        ctx,
        customer=customer["id"],
        currency=currency,
        unit_amount=unit_amount,
        quantity=quantity,
        amount=amount,
        description=get_str(params, "description") or _price_description(ctx, price),
        price=price,
        invoice=invoice,
        metadata=merge_metadata({}, params),
        discountable=get_bool(params, "discountable", True),
        tax_rates=_full_tax_rates(ctx, params, "tax_rates"),
        period=_period(params, None, ctx.now),
    )
    if invoice is not None:
        recompute_totals(ctx.state, invoice)
    return item


def _price_description(ctx: Ctx, price: dict[str, Any] | None) -> str | None:
    if price is None:
        return None
    product = ctx.state.find(price["product"])
    return product["name"] if product else None


def _item_invoice(ctx: Ctx, item: dict[str, Any]) -> dict[str, Any] | None:
    if not item["invoice"]:
        return None
    invoice = ctx.state.get("invoice", item["invoice"])
    if invoice["status"] != "draft":
        raise invalid_state(
            f"The invoice item {item['id']} is on a finalized invoice and can no longer be changed.",
            "invoice_not_editable",
        )
    return invoice


@route("POST", "/v1/invoiceitems/{id}")
def update_invoice_item(ctx: Ctx, params: dict, item_id: str) -> dict:
    item = ctx.state.get("invoiceitem", item_id)
    invoice = _item_invoice(ctx, item)
    changes = {**metadata_change(item, params), **string_changes(params, ("description",))}
    if {"amount", "price", "pricing", "quantity", "unit_amount", "unit_amount_decimal"} & params.keys():
        price, unit_amount, quantity, amount, _ = _item_amounts(ctx, params, item, item["currency"])
        changes.update(
            amount=amount,
            quantity=quantity,
            net_amount=amount,
            quantity_decimal=str(quantity),
            pricing=_pricing(price, unit_amount),
        )
    if "discountable" in params:
        changes["discountable"] = get_bool(params, "discountable")
    if "tax_rates" in params:
        changes["tax_rates"] = _full_tax_rates(ctx, params, "tax_rates")
    if "period" in params:
        changes["period"] = _period(params, item["period"], ctx.now)
    apply_update(ctx, item, changes, "invoiceitem.updated")
    if invoice is not None:
        line = _line_of_item(ctx.state, invoice, item_id)
        line.update(
            amount=item["amount"],
            subtotal=item["amount"],
            quantity=item["quantity"],
            quantity_decimal=str(item["quantity"]),
            description=item["description"],
            metadata=item["metadata"],
            discountable=item["discountable"],
            period=item["period"],
            pricing=item["pricing"],
        )
        recompute_totals(ctx.state, invoice)
    return item


def _line_of_item(state: StripeState, invoice: dict[str, Any], item_id: str) -> dict[str, Any]:
    for line in state.lines.get(invoice["id"], []):
        details = line["parent"].get("invoice_item_details") or line["parent"].get("subscription_item_details") or {}
        if details.get("invoice_item") == item_id:
            return line
    raise KeyError(item_id)


@route("DELETE", "/v1/invoiceitems/{id}")
def delete_invoice_item(ctx: Ctx, params: dict, item_id: str) -> dict:
    item = ctx.state.get("invoiceitem", item_id)
    invoice = _item_invoice(ctx, item)
    if invoice is not None:
        line = _line_of_item(ctx.state, invoice, item_id)
        ctx.state.lines[invoice["id"]].remove(line)
        recompute_totals(ctx.state, invoice)
    stub = ctx.state.remove("invoiceitem", item_id)
    ctx.state.emit(ctx, "invoiceitem.deleted", item)
    return stub


retrieve_route("invoiceitem", "/v1/invoiceitems/{id}")


@route("GET", "/v1/invoiceitems")
def list_invoice_items(ctx: Ctx, params: dict) -> dict:
    filters = {"customer": get_str(params, "customer"), "invoice": get_str(params, "invoice")}
    pending = get_bool(params, "pending")
    predicate = None
    if pending is not None:
        predicate = lambda item: (item["invoice"] is None) == pending  # noqa: E731
    return list_filtered(ctx.state.collections["invoiceitem"], params, "/v1/invoiceitems", filters, predicate)


# --- lines and totals -----------------------------------------------------------------------------


def add_line(
    state: StripeState,
    invoice: dict[str, Any],
    *,
    amount: int,
    description: str | None,
    discountable: bool,
    metadata: dict[str, str],
    period: dict[str, int],
    quantity: int,
    subscription: str | None,
    parent: dict[str, Any],
    pricing: dict[str, Any],
) -> dict[str, Any]:
    line = {
        "id": state.new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": invoice["currency"],
        "description": description,
        "discount_amounts": [],
        "discountable": discountable,
        "discounts": [],
        "invoice": invoice["id"],
        "livemode": False,
        "metadata": dict(metadata),
        "period": dict(period),
        "quantity": quantity,
        "subscription": subscription,
        "pretax_credit_amounts": [],
        "taxes": [],
        "parent": parent,
        "pricing": pricing,
        "subtotal": amount,
        "quantity_decimal": str(quantity),
    }
    state.lines.setdefault(invoice["id"], []).append(line)
    state.register("line_item", line)
    state.line_owner[line["id"]] = invoice["id"]
    return line


def refresh_invoice_lines(state: StripeState, invoice: dict[str, Any]) -> None:
    lines = state.lines.get(invoice["id"], [])
    invoice["lines"] = list_object(
        lines[:EMBEDDED_LINES], f"/v1/invoices/{invoice['id']}/lines", len(lines) > EMBEDDED_LINES
    )


def _line_tax_rates(state: StripeState, invoice: dict[str, Any], line: dict[str, Any]) -> list[dict[str, Any]]:
    parent = line["parent"]
    details = parent.get("invoice_item_details") or parent.get("subscription_item_details") or {}
    own: list[dict[str, Any]] = []
    if details.get("invoice_item"):
        item = state.find(details["invoice_item"])
        own = (item or {}).get("tax_rates") or []
    elif details.get("subscription_item"):
        sub_item = state.find(details["subscription_item"])
        own = (sub_item or {}).get("tax_rates") or []
    # A line's own rates replace the invoice's defaults rather than adding to them.
    # https://docs.stripe.com/billing/taxes/tax-rates
    return own or invoice["default_tax_rates"]


def _line_discounts(
    lines: list[dict[str, Any]], discounts: list[dict[str, Any]], coupons: dict[str, dict], currency: str
) -> dict[str, list[int]]:
    """Per discount id, the amount taken off each line (same order as `lines`)."""
    result: dict[str, list[int]] = {}
    grid = amount_grid(currency)
    # Non-discountable and credit lines take no share; each discount applies to what the ones before it
    # left, so stacked discounts never take a line below zero.
    remaining = [line["amount"] if line["discountable"] and line["amount"] > 0 else 0 for line in lines]
    for discount in discounts:
        coupon = coupons[discount["id"]]
        if coupon["percent_off"] is not None:
            percent = Decimal(str(coupon["percent_off"]))
            # Each share is rounded as Stripe rounds any computed amount: half up, to a multiple of 10
            # minor units in a three-decimal currency (10% of KWD 12.345 is 1.230, never 1.235).
            shares = [min(rest, round_minor(Decimal(rest) * percent / 100, currency)) for rest in remaining]
        else:
            base = sum(remaining)
            # Worked in steps of the currency's grid, so KWD shares stay multiples of 10 fils too.
            off = min(coupon["amount_off"], base) // grid
            units = [rest // grid for rest in remaining]
            base_units = sum(units)
            shares = [off * unit // base_units if base_units else 0 for unit in units]
            # Largest lines absorb the rounding remainder, so the shares sum to the coupon.
            for position in sorted(range(len(shares)), key=lambda i: -remaining[i])[: off - sum(shares)]:
                shares[position] += 1
            shares = [share * grid for share in shares]
        result[discount["id"]] = shares
        remaining = [rest - share for rest, share in zip(remaining, shares, strict=True)]
    return result


def line_taxes(base: int, rates: list[dict[str, Any]], currency: str) -> list[tuple[int, int]]:
    """(tax, taxable amount) of a line amount for each of its rates, in the order of `rates`.

    Inclusive rates are inside the amount, together: the net is the amount over (1 + the sum of their
    percentages), and the inclusive taxes are what remains, split by rate, so net + every inclusive tax
    is the line amount exactly, however many rates there are and however they round. Exclusive rates
    add to the amount, each on the whole base. Every tax is rounded half up, to a multiple of 10 minor
    units in a three-decimal currency.
    """
    inclusive = [Decimal(str(rate["percentage"])) for rate in rates if rate["inclusive"]]
    net = round_minor(Decimal(base) * 100 / (100 + sum(inclusive)), currency) if inclusive else base
    inclusive_taxes = [round_minor(Decimal(net) * percent / 100, currency) for percent in inclusive]
    if inclusive_taxes:
        # The rounding difference goes to the largest rate, so the taxes sum to amount - net.
        largest = max(range(len(inclusive)), key=lambda i: inclusive[i])
        inclusive_taxes[largest] += base - net - sum(inclusive_taxes)
    results: list[tuple[int, int]] = []
    position = 0
    for rate in rates:
        if rate["inclusive"]:
            results.append((inclusive_taxes[position], net))
            position += 1
        else:
            results.append((round_minor(Decimal(base) * Decimal(str(rate["percentage"])) / 100, currency), base))
    return results


def recompute_totals(state: StripeState, invoice: dict[str, Any]) -> None:
    """Subtotal, discounts, taxes and total from the lines (drafts only; finalized totals are fixed)."""
    lines = state.lines.get(invoice["id"], [])
    discounts = [state.find(discount_id) for discount_id in invoice["discounts"]]
    discounts = [d for d in discounts if d]
    coupons = {d["id"]: state.find(d["source"]["coupon"]) or {"percent_off": 0, "amount_off": None} for d in discounts}
    shares = _line_discounts(lines, discounts, coupons, invoice["currency"])
    tax_totals: dict[str, dict[str, Any]] = {}
    inclusive_tax = exclusive_tax = 0
    for position, line in enumerate(lines):
        line_discounts = [
            {"amount": shares[d["id"]][position], "discount": d["id"]} for d in discounts if line["discountable"]
        ]
        line["discount_amounts"] = line_discounts
        line["discounts"] = [d["discount"] for d in line_discounts] if line_discounts else []
        line["pretax_credit_amounts"] = [
            {"amount": d["amount"], "credit_balance_transaction": None, "discount": d["discount"], "type": "discount"}
            for d in line_discounts
        ]
        base = line["amount"] - sum(d["amount"] for d in line_discounts)
        taxes = []
        rates = _line_tax_rates(state, invoice, line)
        for rate, (tax, taxable) in zip(rates, line_taxes(base, rates, invoice["currency"]), strict=True):
            behavior = "inclusive" if rate["inclusive"] else "exclusive"
            taxes.append(
                {
                    "amount": tax,
                    "tax_behavior": behavior,
                    "tax_rate_details": {"tax_rate": rate["id"]},
                    "taxability_reason": "standard_rated",
                    "taxable_amount": taxable,
                    "type": "tax_rate_details",
                }
            )
            total = tax_totals.setdefault(
                rate["id"],
                {
                    "amount": 0,
                    "tax_behavior": behavior,
                    "tax_rate_details": {"tax_rate": rate["id"]},
                    "taxability_reason": "standard_rated",
                    "taxable_amount": 0,
                    "type": "tax_rate_details",
                },
            )
            total["amount"] += tax
            total["taxable_amount"] += taxable
            if rate["inclusive"]:
                inclusive_tax += tax
            else:
                exclusive_tax += tax
        line["taxes"] = taxes
    subtotal = sum(line["amount"] for line in lines)
    discount_total = sum(sum(values) for values in shares.values())
    # Inclusive tax is inside the subtotal already; only exclusive tax adds to the total.
    total = subtotal - discount_total + exclusive_tax
    invoice.update(
        subtotal=subtotal,
        subtotal_excluding_tax=subtotal - inclusive_tax,
        total_discount_amounts=[{"amount": sum(shares[d["id"]]), "discount": d["id"]} for d in discounts],
        total_pretax_credit_amounts=[
            {
                "amount": sum(shares[d["id"]]),
                "credit_balance_transaction": None,
                "discount": d["id"],
                "type": "discount",
            }
            for d in discounts
        ],
        total_taxes=list(tax_totals.values()),
        total=total,
        total_excluding_tax=total - exclusive_tax - inclusive_tax,
        # Nothing is due on a negative total; finalizing credits it to the customer balance (see `finalize`).
        amount_due=max(total, 0),
        amount_remaining=max(total, 0),
    )
    refresh_invoice_lines(state, invoice)


# --- invoices -------------------------------------------------------------------------------------


def new_invoice(
    ctx: Ctx,
    customer: dict[str, Any],
    *,
    currency: str,
    billing_reason: str = "manual",
    collection_method: str = "charge_automatically",
    auto_advance: bool = False,
    days_until_due: int | None = None,
    due_date: int | None = None,
    description: str | None = None,
    footer: str | None = None,
    metadata: dict[str, str] | None = None,
    default_payment_method: str | None = None,
    default_tax_rates: list[dict[str, Any]] | None = None,
    subscription: dict[str, Any] | None = None,
    period: tuple[int, int] | None = None,
) -> dict[str, Any]:
    invoice_id = ctx.state.new_id("in")
    invoice = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": ACCOUNT_NAME,
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "enabled": False,
            "liability": None,
            "status": None,
            "disabled_reason": None,
            "provider": None,
        },
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "created": ctx.now,
        "currency": currency,
        "custom_fields": None,
        "customer": customer["id"],
        "customer_address": customer["address"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": customer["shipping"],
        "customer_tax_exempt": customer["tax_exempt"],
        "customer_tax_ids": [],
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": default_tax_rates or [],
        "description": description,
        "discounts": [],
        "due_date": due_date,
        "effective_at": None,
        "ending_balance": None,
        "footer": footer,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": None,
        "livemode": False,
        "metadata": dict(metadata or {}),
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": period[1] if period else ctx.now,
        "period_start": period[0] if period else ctx.now,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": {
            "amount_tax_display": None,
            "pdf": {"page_size": "auto"},
            "template": None,
            "template_version": None,
        },
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subscription": None,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "webhooks_delivered_at": ctx.now,
        # Stripe finalizes an auto-advancing draft about an hour after it is created.
        # https://docs.stripe.com/invoicing/integration/automatic-advancement-collection
        "automatically_finalizes_at": ctx.now + 3600 if auto_advance else None,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "amount_overpaid": 0,
        "parent": (
            {
                "quote_details": None,
                "subscription_details": {
                    "metadata": dict(subscription["metadata"]),
                    "subscription": subscription["id"],
                },
                "type": "subscription_details",
            }
            if subscription
            else None
        ),
        "customer_account": None,
    }
    # A sent invoice needs a due date; 30 days unless the caller says otherwise.
    if collection_method == "send_invoice" and due_date is None:
        invoice["due_date"] = ctx.now + (days_until_due if days_until_due is not None else 30) * DAY
    ctx.state.lines.setdefault(invoice_id, [])
    ctx.state.insert("invoice", invoice)
    refresh_invoice_lines(ctx.state, invoice)
    return invoice


def _require_draft(invoice: dict[str, Any], param: str | None = None) -> None:
    if invoice["status"] != "draft":
        raise invalid_state(
            f"You can only modify draft invoices; invoice {invoice['id']} is {invoice['status']}.",
            "invoice_not_editable",
            param,
        )


@route("POST", "/v1/invoices")
def create_invoice(ctx: Ctx, params: dict) -> dict:
    customer = ctx.state.get("customer", get_str(params, "customer", required=True), "customer")
    # `exclude` has been the default since API version 2022-08-01: a new invoice takes pending items
    # only when asked to.
    behaviour = get_choice(params, "pending_invoice_items_behavior", ("exclude", "include"), "exclude")
    coll = ctx.state.collections["invoiceitem"]
    pending = (
        [
            item
            for item in coll.newest_first(coll.index_for("customer", customer["id"]))
            # Prorations wait for their subscription's next invoice; a one-off invoice never sweeps them up.
            if item["invoice"] is None and not item["proration"]
        ]
        if behaviour == "include"
        else []
    )
    currency = (
        get_str(params, "currency") or (pending[0]["currency"] if pending else None) or customer["currency"] or "usd"
    )
    currency = check_currency(currency)
    collection_method = get_choice(
        params, "collection_method", ("charge_automatically", "send_invoice"), "charge_automatically"
    )
    days_until_due = get_int(params, "days_until_due")
    due_date = get_int(params, "due_date")
    if collection_method == "send_invoice" and days_until_due is None and due_date is None:
        raise invalid_param("Missing required param: days_until_due or due_date (for send_invoice).", "days_until_due")
    pm_id = None
    if params.get("default_payment_method"):
        pm_id = resolve_payment_method(ctx, params["default_payment_method"], customer["id"], "default_payment_method")[
            "id"
        ]
    invoice = new_invoice(
        ctx,
        customer,
        currency=currency,
        collection_method=collection_method,
        auto_advance=get_bool(params, "auto_advance", False),
        days_until_due=days_until_due,
        due_date=due_date,
        description=get_str(params, "description"),
        footer=get_str(params, "footer"),
        metadata=merge_metadata({}, params),
        default_payment_method=pm_id,
        default_tax_rates=_full_tax_rates(ctx, params, "default_tax_rates"),
    )
    invoice["discounts"] = discounts_param(ctx, params, currency, customer=customer["id"], invoice=invoice["id"])
    # Backdating: the date of issue, kept through finalization (which otherwise sets it to its own time).
    invoice["effective_at"] = get_int(params, "effective_at")
    # Oldest first; items in another currency stay pending for an invoice in theirs.
    for item in reversed(pending):
        if item["currency"] == currency:
            attach_item(ctx.state, invoice, item)
    recompute_totals(ctx.state, invoice)
    ctx.state.emit(ctx, "invoice.created", invoice)
    return invoice


retrieve_route("invoice", "/v1/invoices/{id}", show_deleted=True)


@route("POST", "/v1/invoices/{id}")
def update_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] != "draft":
        if invoice["status"] == "void":
            raise invalid_state("You can't update a voided invoice.", "invoice_not_editable")
        forbidden = sorted(set(params) - MUTABLE_AFTER_FINALIZE)
        if forbidden:
            raise invalid_state(
                f"Finalized invoices can't be updated in this way ({forbidden[0]}).",
                "invoice_not_editable",
                forbidden[0],
            )
    changes = {**metadata_change(invoice, params), **string_changes(params, ("description", "footer"))}
    if "due_date" in params:
        if invoice["collection_method"] != "send_invoice":
            raise invalid_param("due_date is only for invoices with collection_method=send_invoice.", "due_date")
        changes["due_date"] = get_int(params, "due_date")
    if "auto_advance" in params:
        changes["auto_advance"] = get_bool(params, "auto_advance")
    if invoice["status"] == "draft":
        _draft_changes(ctx, invoice, params, changes)
    # `previous_attributes` also shows the totals a change moved (a new discount changes total and
    # amount_due), not only the fields the request named.
    watched = {*changes, "subtotal", "total", "amount_due", "amount_remaining", "total_discount_amounts", "total_taxes"}
    before = {key: invoice.get(key) for key in watched}
    invoice.update(changes)
    if invoice["status"] == "draft":
        recompute_totals(ctx.state, invoice)
    previous = {key: value for key, value in before.items() if invoice.get(key) != value}
    if previous:
        ctx.state.emit(ctx, "invoice.updated", invoice, previous)
    return invoice


def _draft_changes(ctx: Ctx, invoice: dict[str, Any], params: dict, changes: dict[str, Any]) -> None:
    if "collection_method" in params:
        changes["collection_method"] = get_choice(params, "collection_method", ("charge_automatically", "send_invoice"))
    if "days_until_due" in params:
        changes["due_date"] = ctx.now + get_int(params, "days_until_due") * DAY
    if "default_payment_method" in params:
        value = params["default_payment_method"]
        changes["default_payment_method"] = (
            resolve_payment_method(ctx, value, invoice["customer"], "default_payment_method")["id"] if value else None
        )
    if "default_tax_rates" in params:
        changes["default_tax_rates"] = _full_tax_rates(ctx, params, "default_tax_rates")
    if "effective_at" in params:
        changes["effective_at"] = get_int(params, "effective_at")
    if "discounts" in params or "coupon" in params:
        changes["discounts"] = discounts_param(
            ctx, params, invoice["currency"], customer=invoice["customer"], invoice=invoice["id"]
        )


@route("DELETE", "/v1/invoices/{id}")
def delete_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] != "draft":
        raise invalid_state("You can only delete draft invoices.", "invoice_not_editable")
    for line in ctx.state.lines.get(invoice_id, []):
        details = line["parent"].get("invoice_item_details") or line["parent"].get("subscription_item_details") or {}
        item = ctx.state.find(details.get("invoice_item") or "")
        if item is not None:
            item["invoice"] = None  # back to pending, as Stripe does
    stub = ctx.state.remove("invoice", invoice_id)
    ctx.state.emit(ctx, "invoice.deleted", invoice)
    return stub


def finalize(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    _require_draft(invoice)
    customer = ctx.state.get("customer", invoice["customer"], "customer")
    recompute_totals(ctx.state, invoice)
    # The first finalized invoice fixes the customer's currency, as in Stripe.
    if customer["currency"] is None:
        customer["currency"] = invoice["currency"]
    # The customer balance (negative: credit held for the customer) is applied at finalization: a credit
    # lowers amount_due, a debit raises it, an unused credit stays on the customer, and a negative total
    # adds to the credit. Only an invoice in the customer's currency touches that balance (credit in other
    # currencies is kept apart by Stripe). https://docs.stripe.com/invoicing/customer/balance
    starting_balance = customer["balance"] if invoice["currency"] == customer["currency"] else 0
    applied = invoice["total"] + starting_balance
    ending_balance = min(applied, 0)
    if ending_balance != starting_balance:
        balance_transaction(
            ctx, customer, ending_balance - starting_balance, "applied_to_invoice", invoice=invoice["id"]
        )
    amount_due = max(applied, 0)
    # An amount due below the minimum Stripe can charge is not collected: the invoice is paid and the amount
    # moves to the customer balance as a debit, for the next invoice (customers without a cash balance).
    too_small = 0 < amount_due < MINIMUM_CHARGE.get(invoice["currency"], 0)
    if too_small:
        if invoice["currency"] != customer["currency"]:
            raise invalid_state(
                f"The amount due ({amount_due}) is below the minimum charge, and this sandbox keeps a customer's "
                f"balance in the customer's currency ({customer['currency']}) only.",
                "invoice_payment_intent_requires_action",
            )
        ending_balance = balance_transaction(ctx, customer, amount_due, "invoice_too_small", invoice=invoice["id"])[
            "ending_balance"
        ]
    # Numbers are given at finalization, never to drafts, per customer (Stripe's default numbering).
    number = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
    customer["next_invoice_sequence"] += 1
    changes = {
        "status": "open",
        "number": number,
        "starting_balance": starting_balance,
        "ending_balance": ending_balance,
        "amount_due": amount_due,
        "amount_remaining": 0 if too_small else amount_due,
        # A backdated invoice keeps the date it was given (`effective_at` on create or update); otherwise
        # it takes effect when finalized. https://docs.stripe.com/api/invoices/object#invoice_object-effective_at
        "effective_at": invoice["effective_at"] if invoice["effective_at"] is not None else ctx.now,
        "automatically_finalizes_at": None,
        "hosted_invoice_url": f"https://invoice.stripe.com/i/sandbox/{invoice['id']}",
        "invoice_pdf": f"https://pay.stripe.com/invoice/sandbox/{invoice['id']}/pdf",
        "status_transitions": {**invoice["status_transitions"], "finalized_at": ctx.now},
        "customer_address": customer["address"],
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        # Automatic collection first tries the card about an hour after finalization.
        "next_payment_attempt": (
            ctx.now + 3600
            if invoice["auto_advance"] and invoice["collection_method"] == "charge_automatically"
            else None
        ),
    }
    apply_update(ctx, invoice, changes)
    ctx.state.emit(ctx, "invoice.finalized", invoice)
    # Nothing due (a zero total, one the customer's credit covers, or one too small to charge): paid at
    # once, with no payment.
    if invoice["amount_remaining"] == 0:
        _mark_paid(ctx, invoice, 0)
    return invoice


def _mark_paid(ctx: Ctx, invoice: dict[str, Any], amount: int, attempted: bool = True) -> None:
    """Paid: `amount` more was paid (a charge when `attempted`, else outside Stripe or by a credit)."""
    changes = {
        "status": "paid",
        "amount_paid": invoice["amount_paid"] + amount,
        "amount_remaining": 0,
        "next_payment_attempt": None,
        "status_transitions": {**invoice["status_transitions"], "paid_at": ctx.now},
    }
    if amount and attempted:
        # Settled with nothing to pay, or paid outside Stripe, an invoice was never attempted: only a
        # charge Stripe made counts in attempt_count.
        changes.update(attempted=True, attempt_count=invoice["attempt_count"] + 1)
    apply_update(ctx, invoice, changes)
    ctx.state.emit(ctx, "invoice.paid", invoice)
    ctx.state.emit(ctx, "invoice.payment_succeeded", invoice)


def _invoice_payment_method(ctx: Ctx, invoice: dict[str, Any], requested: str | None) -> dict[str, Any]:
    if requested:
        return resolve_payment_method(ctx, requested, invoice["customer"])
    # Stripe's order: the invoice's default payment method, then the subscription's, then the
    # customer's invoice_settings default.
    candidates = [invoice["default_payment_method"]]
    subscription_id = ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if subscription_id:
        candidates.append((ctx.state.find(subscription_id) or {}).get("default_payment_method"))
    customer = ctx.state.get("customer", invoice["customer"], "customer")
    candidates.append((customer.get("invoice_settings") or {}).get("default_payment_method"))
    for pm_id in candidates:
        if pm_id:
            return ctx.state.get("payment_method", pm_id, "payment_method")
    raise StripeApiError(
        400,
        "invalid_request_error",
        f"This customer has no attached payment source or default payment method. Please consider adding a default "
        f"payment method (customer {customer['id']}).",
        code="parameter_missing",
        param="payment_method",
    )


def _default_invoice_payment(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    """The invoice's open InvoicePayment and its PaymentIntent, reused across attempts as Stripe does."""
    coll = ctx.state.collections["invoice_payment"]
    for payment in coll.newest_first(coll.index_for("invoice", invoice["id"])):
        if payment["status"] == "open" and payment["is_default"]:
            intent = ctx.state.get("payment_intent", payment["payment"]["payment_intent"])
            # A credit note since the last attempt changed what is due: the stale intent is canceled and a new
            # one made for the new amount.
            if intent["amount"] == invoice["amount_remaining"]:
                return payment
            apply_update(
                ctx,
                payment,
                {
                    "status": "canceled",
                    "is_default": False,
                    "status_transitions": {**payment["status_transitions"], "canceled_at": ctx.now},
                },
            )
    intent = new_payment_intent(
        ctx,
        amount=invoice["amount_remaining"],
        currency=invoice["currency"],
        customer=invoice["customer"],
        description=f"Payment for Invoice {invoice['number']}",
        metadata={},
    )
    payment = {
        "id": ctx.state.new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": None,
        "amount_requested": invoice["amount_remaining"],
        "created": ctx.now,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": True,
        "livemode": False,
        "payment": {"payment_intent": intent["id"], "type": "payment_intent"},
        "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }
    return ctx.state.insert("invoice_payment", payment)


def attempt_payment(ctx: Ctx, invoice: dict[str, Any], requested_pm: str | None = None) -> dict[str, Any] | None:
    """Charge the invoice's amount remaining. Returns the failed charge on a decline, else None."""
    pm = _invoice_payment_method(ctx, invoice, requested_pm)
    payment = _default_invoice_payment(ctx, invoice)
    intent = ctx.state.get("payment_intent", payment["payment"]["payment_intent"])
    charge = confirm_payment_intent(ctx, intent, pm)
    if charge["status"] == "succeeded":
        apply_update(
            ctx,
            payment,
            {
                "status": "paid",
                "amount_paid": charge["amount"],
                "status_transitions": {**payment["status_transitions"], "paid_at": ctx.now},
            },
        )
        ctx.state.emit(ctx, "invoice_payment.paid", payment)
        _mark_paid(ctx, invoice, charge["amount"])
        _maybe_dispute(ctx, charge, pm)
        return None
    changes = {
        "attempted": True,
        "attempt_count": invoice["attempt_count"] + 1,
        "next_payment_attempt": ctx.now + RETRY_DELAY if invoice["auto_advance"] else None,
    }
    previous = {key: invoice[key] for key in changes}
    apply_update(ctx, invoice, changes)
    ctx.state.emit(ctx, "invoice.payment_failed", invoice)
    ctx.state.emit(ctx, "invoice.updated", invoice, previous)
    return charge


@route("POST", "/v1/invoices/{id}/finalize")
def finalize_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] != "draft":
        raise invalid_state(
            f"This invoice is already finalized; its status is {invoice['status']}.", "invoice_not_editable"
        )
    if get_bool(params, "auto_advance") is not None:
        invoice["auto_advance"] = get_bool(params, "auto_advance")
    return finalize(ctx, invoice)


@route("POST", "/v1/invoices/{id}/pay")
def pay_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] == "draft":
        finalize(ctx, invoice)
    if invoice["status"] == "paid":
        raise invalid_state("Invoice is already paid.", "invoice_unexpected_state")
    if invoice["status"] == "void":
        raise invalid_state("You cannot pay a void invoice.", "invoice_unexpected_state")
    # Paid outside Stripe (a bank transfer, a cheque): marked paid without a charge.
    # https://docs.stripe.com/api/invoices/pay#pay_invoice-paid_out_of_band
    if get_bool(params, "paid_out_of_band", False):
        _cancel_open_payments(ctx, invoice)
        _mark_paid(ctx, invoice, invoice["amount_remaining"], attempted=False)
        return invoice
    failed = attempt_payment(ctx, invoice, get_str(params, "payment_method"))
    if failed is not None:
        raise decline_error(failed)
    return invoice


@route("POST", "/v1/invoices/{id}/attach_payment")
def attach_payment(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    """A PaymentIntent made apart from the invoice pays part (or all) of it: partial payments, since
    2025-05-28.basil. https://docs.stripe.com/api/invoices/attach_payment"""
    invoice = ctx.state.get("invoice", invoice_id)
    intent = ctx.state.get("payment_intent", get_str(params, "payment_intent", required=True), "payment_intent")
    if invoice["status"] != "open":
        raise invalid_state(
            f"Payments can only be attached to open invoices; this one is {invoice['status']}.",
            "invoice_unexpected_state",
        )
    coll = ctx.state.collections["invoice_payment"]
    if coll.index_for("payment_intent", intent["id"]).entries:
        raise invalid_param(f"PaymentIntent {intent['id']} is already attached to an invoice.", "payment_intent")
    if intent["currency"] != invoice["currency"] or intent["customer"] not in (None, invoice["customer"]):
        raise invalid_param("The PaymentIntent's currency and customer must be the invoice's.", "payment_intent")
    # Stripe credits a PaymentIntent when it succeeds, attached before or after; this sandbox attaches succeeded
    # ones only, and does not model overpayment (`amount_overpaid`, `invoice_overpaid` balance transactions).
    if intent["status"] != "succeeded":
        raise invalid_state("This sandbox attaches PaymentIntents that have already succeeded.", None, "payment_intent")
    amount = intent["amount_received"]
    if amount > invoice["amount_remaining"]:
        raise invalid_param(
            f"The payment ({amount}) exceeds the invoice's amount remaining ({invoice['amount_remaining']}); "
            "this sandbox does not model overpayment.",
            "payment_intent",
        )
    payment = {
        "id": ctx.state.new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": amount,
        "amount_requested": amount,
        "created": ctx.now,
        "currency": invoice["currency"],
        "invoice": invoice["id"],
        "is_default": False,
        "livemode": False,
        "payment": {"payment_intent": intent["id"], "type": "payment_intent"},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": ctx.now},
    }
    ctx.state.insert("invoice_payment", payment)
    ctx.state.emit(ctx, "invoice_payment.paid", payment)
    if amount == invoice["amount_remaining"]:
        _cancel_open_payments(ctx, invoice)
        _mark_paid(ctx, invoice, amount, attempted=False)
        return invoice
    previous = {"amount_paid": invoice["amount_paid"], "amount_remaining": invoice["amount_remaining"]}
    apply_update(
        ctx,
        invoice,
        {"amount_paid": invoice["amount_paid"] + amount, "amount_remaining": invoice["amount_remaining"] - amount},
    )
    # The default payment follows what is still due (its intent is re-made for that amount at the next attempt).
    ctx.state.emit(ctx, "invoice.updated", invoice, previous)
    return invoice


@route("POST", "/v1/invoices/{id}/void")
def void_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] not in ("open", "uncollectible"):
        raise invalid_state(
            f"You can only void open or uncollectible invoices; this one is {invoice['status']}.",
            "invoice_not_editable",
        )
    _cancel_open_payments(ctx, invoice)
    # The customer balance the invoice applied (a credit used, a debit collected, a negative total's credit) is
    # given back when it is voided (since API version 2019-12-03).
    applied = (invoice["ending_balance"] or 0) - invoice["starting_balance"]
    if applied:
        customer = ctx.state.get("customer", invoice["customer"])
        balance_transaction(ctx, customer, -applied, "unapplied_from_invoice", invoice=invoice["id"])
    return _close(ctx, invoice, "void", "voided_at", "invoice.voided")


def _close(ctx: Ctx, invoice: dict[str, Any], status: str, stamp: str, event_type: str) -> dict[str, Any]:
    """An open invoice that will not be paid: void or uncollectible, with both events."""
    previous = {"status": invoice["status"]}
    apply_update(
        ctx,
        invoice,
        {
            "status": status,
            "next_payment_attempt": None,
            "status_transitions": {**invoice["status_transitions"], stamp: ctx.now},
        },
    )
    ctx.state.emit(ctx, event_type, invoice)
    ctx.state.emit(ctx, "invoice.updated", invoice, previous)
    return invoice


def _cancel_open_payments(ctx: Ctx, invoice: dict[str, Any]) -> None:
    coll = ctx.state.collections["invoice_payment"]
    for payment in coll.newest_first(coll.index_for("invoice", invoice["id"])):
        if payment["status"] == "open":
            apply_update(
                ctx,
                payment,
                {"status": "canceled", "status_transitions": {**payment["status_transitions"], "canceled_at": ctx.now}},
            )
            intent = ctx.state.get("payment_intent", payment["payment"]["payment_intent"])
            if intent["status"] not in ("succeeded", "canceled"):
                apply_update(
                    ctx, intent, {"status": "canceled", "canceled_at": ctx.now, "cancellation_reason": "void_invoice"}
                )
                ctx.state.emit(ctx, "payment_intent.canceled", intent)


@route("POST", "/v1/invoices/{id}/mark_uncollectible")
def mark_uncollectible(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["status"] != "open":
        raise invalid_state(
            f"You can only mark open invoices uncollectible; this one is {invoice['status']}.", "invoice_not_editable"
        )
    return _close(ctx, invoice, "uncollectible", "marked_uncollectible_at", "invoice.marked_uncollectible")


@route("POST", "/v1/invoices/{id}/send")
def send_invoice(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    invoice = ctx.state.get("invoice", invoice_id)
    if invoice["collection_method"] != "send_invoice":
        raise invalid_state(
            "You can only manually send an invoice if its collection method is 'send_invoice'.", "invoice_not_editable"
        )
    if invoice["status"] == "draft":
        finalize(ctx, invoice)
    if invoice["status"] != "open":
        raise invalid_state(
            f"You can only send open invoices; this one is {invoice['status']}.", "invoice_not_editable"
        )
    ctx.state.emit(ctx, "invoice.sent", invoice)
    return invoice


def page_of_lines(lines: list[dict[str, Any]], params: dict, url: str) -> dict:
    """A page of a document's lines, in document order: `limit` and `starting_after`/`ending_before`."""
    limit = parse_limit(params)
    ids = [line["id"] for line in lines]
    start, end = 0, len(lines)
    for name in ("starting_after", "ending_before"):
        cursor = params.get(name)
        if cursor:
            if cursor not in ids:
                raise invalid_param(f"No such line item: '{cursor}'", name)
            if name == "starting_after":
                start = ids.index(cursor) + 1
            else:
                end = ids.index(cursor)
    if params.get("ending_before") and not params.get("starting_after"):
        start = max(start, end - limit)
        return list_object(lines[start:end], url, start > 0)
    return list_object(lines[start : min(start + limit, end)], url, start + limit < end)


@route("GET", "/v1/invoices/{id}/lines")
def list_invoice_lines(ctx: Ctx, params: dict, invoice_id: str) -> dict:
    ctx.state.get("invoice", invoice_id)
    return page_of_lines(ctx.state.lines.get(invoice_id, []), params, f"/v1/invoices/{invoice_id}/lines")


def _invoice_subscription(invoice: dict[str, Any]) -> str | None:
    return ((invoice.get("parent") or {}).get("subscription_details") or {}).get("subscription")


@route("GET", "/v1/invoices")
def list_invoices(ctx: Ctx, params: dict) -> dict:
    filters = {
        "customer": get_str(params, "customer"),
        "subscription": get_str(params, "subscription"),
        "status": get_choice(params, "status", ("draft", "open", "paid", "uncollectible", "void")),
        "collection_method": get_str(params, "collection_method"),
    }
    return list_filtered(ctx.state.collections["invoice"], params, "/v1/invoices", filters)


def _invoice_search_field(invoice: dict[str, Any], name: str) -> Any:
    if name == "subscription":
        return _invoice_subscription(invoice)
    return invoice.get(name)


@route("GET", "/v1/invoices/search")
def search_invoices(ctx: Ctx, params: dict) -> dict:
    return search(ctx.state.collections["invoice"], params, "/v1/invoices/search", _invoice_search_field)


# --- invoice payments -----------------------------------------------------------------------------


retrieve_route("invoice_payment", "/v1/invoice_payments/{id}")


@route("GET", "/v1/invoice_payments")
def list_invoice_payments(ctx: Ctx, params: dict) -> dict:
    payment = get_dict(params, "payment")
    filters = {
        "invoice": get_str(params, "invoice"),
        "payment_intent": payment.get("payment_intent"),
        "status": get_choice(params, "status", ("canceled", "open", "paid")),
    }
    payment_type = payment.get("type")
    predicate = (lambda p: p["payment"]["type"] == payment_type) if payment_type else None
    return list_filtered(ctx.state.collections["invoice_payment"], params, "/v1/invoice_payments", filters, predicate)


# --- credit notes ---------------------------------------------------------------------------------


def refresh_credit_note_lines(state: StripeState, note: dict[str, Any]) -> None:
    lines = state.credit_note_lines.get(note["id"], [])
    note["lines"] = list_object(
        lines[:EMBEDDED_LINES], f"/v1/credit_notes/{note['id']}/lines", len(lines) > EMBEDDED_LINES
    )


def _scaled(value: int, numerator: int, denominator: int, currency: str) -> int:
    """`value` * numerator / denominator, rounded as Stripe rounds computed amounts in `currency`."""
    return round_minor(Decimal(value) * numerator / denominator, currency) if denominator else 0


def _credit_line(ctx: Ctx, invoice: dict[str, Any], raw: dict[str, Any], position: int) -> dict[str, Any]:
    param = f"lines[{position}]"
    line_type = get_choice(raw, "type", ("invoice_line_item", "custom_line_item"))
    if line_type is None:
        raise missing_param(f"{param}[type]")
    base = {
        "id": ctx.state.new_id("cnli"),
        "object": "credit_note_line_item",
        "livemode": False,
        "description": get_str(raw, "description"),
        "metadata": None,
    }
    if line_type == "custom_line_item":
        quantity = get_int(raw, "quantity", 1, param=f"{param}[quantity]")
        unit_amount = get_int(raw, "unit_amount", required=True, param=f"{param}[unit_amount]")
        amount = check_amount(unit_amount * quantity, invoice["currency"], f"{param}[unit_amount]")
        return {
            **base,
            "amount": amount,
            "discount_amount": 0,
            "discount_amounts": [],
            "invoice_line_item": None,
            "quantity": quantity,
            "tax_rates": [],
            "type": line_type,
            "unit_amount": unit_amount,
            "unit_amount_decimal": str(unit_amount),
            "pretax_credit_amounts": [],
            "taxes": [],
        }
    line_id = get_str(raw, "invoice_line_item", required=True)
    line = ctx.state.find_line(line_id)
    if line is None or line["invoice"] != invoice["id"]:
        raise invalid_param(f"No such line item on invoice {invoice['id']}: '{line_id}'", f"{param}[invoice_line_item]")
    if raw.get("amount") is not None:
        amount = get_int(raw, "amount", param=f"{param}[amount]")
        quantity = line["quantity"]
    else:
        quantity = get_int(raw, "quantity", line["quantity"], param=f"{param}[quantity]")
        if not 0 < quantity <= line["quantity"]:
            raise invalid_param(f"quantity must be between 1 and {line['quantity']}.", f"{param}[quantity]")
        # Part of a line's quantity credits that share of its amount; its discounts and taxes below are
        # scaled the same way, each rounded half up.
        amount = _scaled(line["amount"], quantity, line["quantity"], invoice["currency"])
    if not 0 < amount <= line["amount"]:
        raise invalid_param(
            f"The credit amount must be between 1 and the line amount ({line['amount']}).", f"{param}[amount]"
        )
    discounts = [
        {"amount": _scaled(d["amount"], amount, line["amount"], invoice["currency"]), "discount": d["discount"]}
        for d in line["discount_amounts"]
    ]
    taxes = [
        {
            **tax,
            "amount": _scaled(tax["amount"], amount, line["amount"], invoice["currency"]),
            "taxable_amount": _scaled(tax["taxable_amount"], amount, line["amount"], invoice["currency"]),
        }
        for tax in line["taxes"]
    ]
    rates = [ctx.state.find(tax["tax_rate_details"]["tax_rate"]) for tax in line["taxes"]]
    return {
        **base,
        "description": base["description"] or line["description"],
        "amount": amount,
        "discount_amount": sum(d["amount"] for d in discounts),
        "discount_amounts": discounts,
        "invoice_line_item": line_id,
        "quantity": quantity,
        "tax_rates": [r for r in rates if r],
        "type": line_type,
        "unit_amount": None,
        "unit_amount_decimal": None,
        "pretax_credit_amounts": [
            {"amount": d["amount"], "credit_balance_transaction": None, "discount": d["discount"], "type": "discount"}
            for d in discounts
        ],
        "taxes": taxes,
    }


def _credit_totals(lines: list[dict[str, Any]]) -> dict[str, Any]:
    subtotal = sum(line["amount"] for line in lines)
    discount = sum(line["discount_amount"] for line in lines)
    exclusive = sum(t["amount"] for line in lines for t in line["taxes"] if t["tax_behavior"] == "exclusive")
    inclusive = sum(t["amount"] for line in lines for t in line["taxes"] if t["tax_behavior"] == "inclusive")
    by_rate: dict[str, dict[str, Any]] = {}
    for line in lines:
        for tax in line["taxes"]:
            row = by_rate.setdefault(tax["tax_rate_details"]["tax_rate"], {**tax, "amount": 0, "taxable_amount": 0})
            row["amount"] += tax["amount"]
            row["taxable_amount"] += tax["taxable_amount"]
    total = subtotal - discount + exclusive
    discounts: dict[str, int] = {}
    for line in lines:
        for d in line["discount_amounts"]:
            discounts[d["discount"]] = discounts.get(d["discount"], 0) + d["amount"]
    return {
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal - inclusive,
        "discount_amount": discount,
        "discount_amounts": [{"amount": a, "discount": d} for d, a in discounts.items()],
        "pretax_credit_amounts": [
            {"amount": a, "credit_balance_transaction": None, "discount": d, "type": "discount"}
            for d, a in discounts.items()
        ],
        "total": total,
        "total_excluding_tax": total - exclusive - inclusive,
        "total_taxes": list(by_rate.values()),
        "amount": total,
    }


def _paid_charge(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any] | None:
    coll = ctx.state.collections["invoice_payment"]
    for payment in coll.newest_first(coll.index_for("invoice", invoice["id"])):
        if payment["status"] == "paid" and payment["payment"].get("payment_intent"):
            intent = ctx.state.get("payment_intent", payment["payment"]["payment_intent"])
            return ctx.state.find(intent["latest_charge"] or "")
    return None


@route("POST", "/v1/credit_notes")
def create_credit_note(ctx: Ctx, params: dict) -> dict:
    invoice = ctx.state.get("invoice", get_str(params, "invoice", required=True), "invoice")
    if invoice["status"] not in ("open", "paid"):
        raise invalid_state(
            f"Credit notes can only be issued for open or paid invoices; this one is {invoice['status']}.",
            "invoice_not_editable",
            "invoice",
        )
    raw_lines = get_list(params, "lines")
    if raw_lines:
        lines = [_credit_line(ctx, invoice, raw, position) for position, raw in enumerate(raw_lines)]
    elif params.get("amount") is not None:
        lines = [
            _credit_line(
                ctx,
                invoice,
                {
                    "type": "custom_line_item",
                    "unit_amount": params["amount"],
                    "quantity": "1",
                    "description": get_str(params, "memo") or "Credit",
                },
                0,
            )
        ]
    else:
        raise missing_param("lines")
    totals = _credit_totals(lines)
    total = totals["total"]
    # All credit notes together may not exceed the invoice's total.
    # https://docs.stripe.com/invoicing/integration/programmatic-credit-notes
    credited = invoice["pre_payment_credit_notes_amount"] + invoice["post_payment_credit_notes_amount"]
    if total <= 0 or total + credited > invoice["total"]:
        raise invalid_param(
            f"The credit note total ({total}) must be positive and at most what is left to credit on the invoice "
            f"({invoice['total'] - credited}).",
            "lines",
            code="credit_note_amount_too_large" if total > 0 else "parameter_invalid",
        )
    # A credit note first lowers what is still due on an open invoice, not below zero (its pre_payment_amount);
    # the rest (post_payment_amount) was paid already, so it must say where the money goes: refunded, credited to
    # the customer balance, or paid back outside Stripe, the three adding up to it. A note with both parts (an
    # invoice partly paid) is `mixed`. https://docs.stripe.com/changelog/basil/2025-05-28/partial-payments
    pre_payment = min(total, invoice["amount_remaining"]) if invoice["status"] == "open" else 0
    post_payment = total - pre_payment
    note_type = "pre_payment" if not post_payment else "post_payment" if not pre_payment else "mixed"
    refund_amount = get_int(params, "refund_amount", 0)
    out_of_band = get_int(params, "out_of_band_amount", 0)
    credit_amount = get_int(params, "credit_amount")
    if not post_payment:
        if refund_amount or out_of_band or credit_amount:
            raise invalid_param(
                f"The credit note only reduces the invoice's amount remaining ({invoice['amount_remaining']}); there "
                "is nothing paid to refund, credit or pay back.",
                "refund_amount",
            )
    else:
        if credit_amount is None:
            credit_amount = post_payment - refund_amount - out_of_band
        if (
            refund_amount + out_of_band + credit_amount != post_payment
            or min(refund_amount, out_of_band, credit_amount) < 0
        ):
            raise invalid_param(
                f"refund_amount + credit_amount + out_of_band_amount must equal the credit note's post-payment "
                f"amount ({post_payment}: its total less the invoice's amount remaining).",
                "refund_amount",
            )
    refunds = []
    if refund_amount:
        charge = _paid_charge(ctx, invoice)
        if charge is None:
            raise invalid_param("The invoice has no payment to refund.", "refund_amount")
        refund = refund_charge(ctx, charge, refund_amount, "requested_by_customer", param="refund_amount")
        refunds.append(
            {
                "amount_refunded": refund["amount"],
                "refund": refund["id"],
                "payment_record_refund": None,
                "type": "refund",
            }
        )
    coll = ctx.state.collections["credit_note"]
    # Credit note numbers extend the invoice's: <invoice number>-CN-01, -CN-02, ...
    sequence = len(coll.index_for("invoice", invoice["id"])) + 1
    note = {
        "id": ctx.state.new_id("cn"),
        "object": "credit_note",
        "amount_shipping": 0,
        "created": ctx.now,
        "currency": invoice["currency"],
        "customer": invoice["customer"],
        "customer_balance_transaction": None,
        # Backdating: the date printed as the note's date of issue, when it differs from its creation.
        "effective_at": get_int(params, "effective_at", ctx.now),
        "invoice": invoice["id"],
        "lines": None,
        "livemode": False,
        "memo": get_str(params, "memo"),
        "metadata": merge_metadata({}, params),
        "number": f"{invoice['number']}-CN-{sequence:02d}",
        "out_of_band_amount": out_of_band or None,
        "pdf": "https://pay.stripe.com/credit_notes/sandbox/pdf",
        "shipping_cost": None,
        "status": "issued",
        "type": note_type,
        "voided_at": None,
        "refunds": refunds,
        "post_payment_amount": post_payment,
        "pre_payment_amount": pre_payment,
        "reason": get_choice(params, "reason", ("duplicate", "fraudulent", "order_change", "product_unsatisfactory")),
        "customer_account": None,
        **totals,
    }
    ctx.state.insert("credit_note", note)
    ctx.state.credit_note_lines[note["id"]] = lines
    refresh_credit_note_lines(ctx.state, note)
    _apply_credit(ctx, invoice, note, credit_amount or 0, sign=1)
    ctx.state.emit(ctx, "credit_note.created", note)
    return note


def _apply_credit(ctx: Ctx, invoice: dict[str, Any], note: dict[str, Any], credit_amount: int, sign: int) -> None:
    pre_payment, post_payment = note["pre_payment_amount"] * sign, note["post_payment_amount"] * sign
    watched = (
        "pre_payment_credit_notes_amount",
        "post_payment_credit_notes_amount",
        "amount_remaining",
        "amount_due",
        "status",
    )
    previous = {key: invoice[key] for key in watched}
    apply_update(
        ctx,
        invoice,
        {
            "pre_payment_credit_notes_amount": invoice["pre_payment_credit_notes_amount"] + pre_payment,
            "amount_remaining": invoice["amount_remaining"] - pre_payment,
            "amount_due": invoice["amount_due"] - pre_payment,
            "post_payment_credit_notes_amount": invoice["post_payment_credit_notes_amount"] + post_payment,
        },
    )
    if credit_amount:
        customer = ctx.state.get("customer", invoice["customer"])
        # A balance in the customer's favour is negative, so a credit lowers it.
        txn = balance_transaction(
            ctx,
            customer,
            -credit_amount * sign,
            "credit_note",
            currency=note["currency"],
            invoice=invoice["id"],
            credit_note=note["id"],
        )
        note["customer_balance_transaction"] = txn["id"]
    # A credit note that leaves nothing to pay settles the open invoice: paid with what was paid so far, and
    # its open PaymentIntent canceled so the card is not charged after all.
    if pre_payment and invoice["status"] == "open" and invoice["amount_remaining"] == 0:
        _cancel_open_payments(ctx, invoice)
        _mark_paid(ctx, invoice, 0)
    ctx.state.emit(ctx, "invoice.updated", invoice, {k: v for k, v in previous.items() if invoice[k] != v})


@route("POST", "/v1/credit_notes/{id}/void")
def void_credit_note(ctx: Ctx, params: dict, note_id: str) -> dict:
    note = ctx.state.get("credit_note", note_id)
    if note["status"] == "void":
        raise invalid_state("This credit note is already void.")
    # Money a note refunded, credited or paid back cannot be taken back by voiding it.
    if note["refunds"] or note["type"] != "pre_payment":
        raise invalid_state("Only credit notes that reduced an open invoice's amount due can be voided.")
    invoice = ctx.state.get("invoice", note["invoice"])
    if invoice["status"] != "open":
        raise invalid_state(f"The invoice is {invoice['status']}; its credit notes can no longer be voided.")
    apply_update(ctx, note, {"status": "void", "voided_at": ctx.now})
    _apply_credit(ctx, invoice, note, 0, sign=-1)
    ctx.state.emit(ctx, "credit_note.voided", note)
    return note


retrieve_route("credit_note", "/v1/credit_notes/{id}")


update_route("credit_note", "/v1/credit_notes/{id}", ("memo",), "credit_note.updated")


@route("GET", "/v1/credit_notes/{id}/lines")
def list_credit_note_lines(ctx: Ctx, params: dict, note_id: str) -> dict:
    ctx.state.get("credit_note", note_id)
    return page_of_lines(ctx.state.credit_note_lines.get(note_id, []), params, f"/v1/credit_notes/{note_id}/lines")


@route("GET", "/v1/credit_notes")
def list_credit_notes(ctx: Ctx, params: dict) -> dict:
    filters = {"invoice": get_str(params, "invoice"), "customer": get_str(params, "customer")}
    return list_filtered(ctx.state.collections["credit_note"], params, "/v1/credit_notes", filters)
