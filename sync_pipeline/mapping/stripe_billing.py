"""Salesforce Closed-Won opportunities -> a Stripe billing plan and the Stripe request bodies that bill it.

Pure module: no HTTP, no Dagster. `flatten_opportunity` turns a SOQL record (with its line items)
into one flat dict; `plan_billing` maps it through `salesforce: product_prices:` and the Stripe
price catalogue to a `BillingPlan`; the `*_params` functions build the exact Stripe request bodies
(deterministic, so a repeated request with the same Idempotency-Key has the same parameters), and
`idempotency_key` names each request. What is written back onto Salesforce afterwards is
`salesforce_writeback.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from sync_pipeline.errors import FIELD_MAPPING_FILE
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.field_mapping import SalesforceConfig
from sync_pipeline.mapping.money import MoneyError, normalize_currency, to_decimal, to_minor

# Ledger keys of the billing: target + record type (external id = the Salesforce record id).
STRIPE_TARGET = "stripe"
BILLED_OPPORTUNITY = "opportunity"
STRIPE_CUSTOMER = "customer"
SUBSCRIPTION, INVOICE = "subscription", "invoice"
# send_invoice: the customer has no payment method in Stripe yet; the invoice is emailed with this term.
DAYS_UNTIL_DUE = 30

ADDRESS_FIELDS = {
    "BillingStreet": "line1",
    "BillingCity": "city",
    "BillingState": "state",
    "BillingPostalCode": "postal_code",
    "BillingCountry": "country",
}
# The fields read from Salesforce: what `flatten_opportunity` and the account snapshot use.
OPPORTUNITY_FIELDS = (
    "Id, Name, AccountId, Account.Name, Account.Stripe_Customer_Id__c, "
    + ", ".join(f"Account.{name}" for name in ADDRESS_FIELDS)
    + ", StageName, IsWon, Amount, "
    "CurrencyIsoCode, CloseDate, SystemModstamp, Stripe_Subscription_Id__c, Stripe_Invoice_Id__c, "
    "NetSuite_Invoice_Id__c, Billing_Status__c, (SELECT Id, Product2Id, Product2.Name, Quantity, UnitPrice, "
    "TotalPrice FROM OpportunityLineItems ORDER BY Id)"
)
ACCOUNT_FIELDS = (
    "Id, Name, " + ", ".join(ADDRESS_FIELDS) + ", Stripe_Customer_Id__c, NetSuite_Customer_Id__c, SystemModstamp"
)


def idempotency_key(source_id: str, action: str) -> str:
    """The Stripe Idempotency-Key of one action on one Salesforce record, e.g. `sf-006...-subscription`."""
    return f"sf-{source_id}-{action}"


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    if isinstance(value, float):
        # simple-salesforce parses with parse_float=Decimal; a float here would already be inexact.
        raise TypeError(f"Salesforce numbers must arrive as Decimal, got float {value!r}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def flatten_opportunity(record: Mapping[str, Any]) -> dict[str, Any]:
    """A SOQL Opportunity (Account.* parent fields, OpportunityLineItems subquery) as one flat dict."""
    account = record.get("Account") or {}
    items = (record.get("OpportunityLineItems") or {}).get("records") or []
    lines = [
        {
            "Id": item.get("Id"),
            "Product2Id": item.get("Product2Id"),
            "ProductName": _text((item.get("Product2") or {}).get("Name")),
            "Quantity": _text(item.get("Quantity")),
            "UnitPrice": _text(item.get("UnitPrice")),
            "TotalPrice": _text(item.get("TotalPrice")),
        }
        for item in items
    ]
    flat = {
        name: record.get(name)
        for name in (
            "Id",
            "Name",
            "AccountId",
            "StageName",
            "IsWon",
            "CloseDate",
            "SystemModstamp",
            "Stripe_Subscription_Id__c",
            "Stripe_Invoice_Id__c",
            "NetSuite_Invoice_Id__c",
            "Billing_Status__c",
        )
    }
    flat.update(
        {
            "Amount": _text(record.get("Amount")),
            "CurrencyIsoCode": _text(record.get("CurrencyIsoCode")),
            "AccountName": _text(account.get("Name")),
            **{name: _text(account.get(name)) for name in ADDRESS_FIELDS},
            "lines": sorted(lines, key=lambda line: _text(line["Id"])),
            "AccountStripeCustomerId": account.get("Stripe_Customer_Id__c"),
        }
    )
    return flat


def fingerprint(opportunity: Mapping[str, Any]) -> str:
    """What billing depends on in Salesforce: a change to any of it after billing is reported, not billed."""
    amount = _decimal(opportunity.get("Amount"))
    return content_hash(
        {
            "account": _text(opportunity.get("AccountId")),
            "currency": _text(opportunity.get("CurrencyIsoCode")).upper(),
            "amount": amount,
            "lines": [
                [_text(line.get("Product2Id")), _decimal(line.get("Quantity")), _decimal(line.get("TotalPrice"))]
                for line in opportunity.get("lines") or ()
            ],
        }
    )


def is_billed_in_salesforce(opportunity: Mapping[str, Any]) -> str | None:
    """The Stripe id already written back onto the opportunity, if any (billed, whatever the ledger says)."""
    return opportunity.get("Stripe_Subscription_Id__c") or opportunity.get("Stripe_Invoice_Id__c") or None


@dataclass(frozen=True)
class BillingLine:
    line_id: str
    product_id: str
    product_name: str
    price_id: str | None
    quantity: int | None
    amount_minor: int | None  # the line's TotalPrice in Salesforce
    recurring: bool
    problem: str = ""  # why the mapped price cannot bill this line ("" when it can)
    fix: str = ""  # how to fix `problem` when it is the field mapping's, with the exact line to write


@dataclass(frozen=True)
class BillingPlan:
    opportunity_id: str
    opportunity_name: str
    account_id: str
    account_name: str
    currency: str  # ISO upper case as Salesforce sends it ("" when missing)
    amount: Decimal | None
    amount_minor: int | None  # None when missing or with more decimals than the currency has
    lines: tuple[BillingLine, ...]
    fingerprint: str
    address: Mapping[str, str] = field(default_factory=dict)

    @property
    def mode(self) -> str:
        return SUBSCRIPTION if any(line.recurring for line in self.lines) else INVOICE

    @property
    def lines_total_minor(self) -> int | None:
        amounts = [line.amount_minor for line in self.lines]
        return None if any(a is None for a in amounts) else sum(amounts)  # type: ignore[misc]

    @property
    def amount_text(self) -> str:
        """The amount with the currency's decimals (`1200.00`), as billed and as reported."""
        if self.amount_minor is not None:
            return str(to_decimal(self.amount_minor, self.currency))
        return "" if self.amount is None else str(self.amount)

    @property
    def unmapped_products(self) -> list[BillingLine]:
        """Lines whose product is not under `product_prices` at all (one mapped in other currencies is a problem)."""
        return [line for line in self.lines if line.price_id is None and not line.problem]

    @property
    def recurring_lines(self) -> list[BillingLine]:
        return [line for line in self.lines if line.recurring]

    @property
    def one_time_lines(self) -> list[BillingLine]:
        return [line for line in self.lines if not line.recurring and line.price_id is not None]


def _minor(amount: Decimal | None, currency: str) -> int | None:
    if amount is None:
        return None
    try:
        return to_minor(amount, currency)
    except (MoneyError, TypeError):
        return None


def _currency(code: str) -> str:
    try:
        return normalize_currency(code)
    except MoneyError:
        return code


def _price_problem(
    price: Mapping[str, Any] | None, price_id: str, currency: str, quantity: int | None, amount_minor: int | None
) -> str:
    if price is None:
        return f"Stripe has no price {price_id}"
    if not price.get("active", True):
        return f"Stripe price {price_id} is archived"
    if _text(price.get("currency")).upper() != currency:
        return f"Stripe price {price_id} is in {_text(price.get('currency')).upper()}, the opportunity in {currency}"
    if price.get("unit_amount") is None:
        return f"Stripe price {price_id} has no fixed unit amount"
    if quantity is None:
        return "the quantity is not a whole number (Stripe bills whole quantities)"
    billed = int(price["unit_amount"]) * quantity
    if amount_minor is not None and billed != amount_minor:
        return (
            f"Stripe price {price_id} bills {to_decimal(billed, currency)} for {quantity}, the line is "
            f"{to_decimal(amount_minor, currency)}"
        )
    return ""


def _whole_quantity(value: Decimal | None) -> int | None:
    """Stripe bills whole, positive quantities; Salesforce allows 1.5 (None then, reported by validation)."""
    if value is None or value <= 0 or value != value.to_integral_value():
        return None
    return int(value)


def product_prices_line(
    product_id: str, mapped: str | Mapping[str, str], currency: str, prices: Mapping[str, Mapping[str, Any]]
) -> str:
    """The `product_prices` line that bills the product in `currency` too: `01t...: {USD: price_a, EUR: price_...}`.

    A single price (the older form) becomes its currency's entry, read from Stripe.
    """
    if isinstance(mapped, str):
        mapped = {_text((prices.get(mapped) or {}).get("currency")).upper() or "???": mapped}
    entries = {**{code: price for code, price in mapped.items() if code != currency}, currency: "price_..."}
    return f"{product_id[:15]}: {{" + ", ".join(f"{code}: {price}" for code, price in entries.items()) + "}"


def _mapping_problem(
    product_id: str, currency: str, config: SalesforceConfig, prices: Mapping[str, Mapping[str, Any]]
) -> tuple[str, str]:
    """(problem, fix) when the product is mapped, but to no usable price in the deal's currency."""
    mapped = config.prices_of_product(product_id)
    price_id = config.price_for_product(product_id, currency)
    price = prices.get(price_id) if price_id else None
    if mapped is None or (price is not None and _text(price.get("currency")).upper() == currency):
        return "", ""
    line = product_prices_line(product_id, mapped, currency, prices)
    fix = f"write `{line}` under `salesforce: product_prices:` in {FIELD_MAPPING_FILE}, with the Stripe price in "
    fix += f"{currency} of this product; the opportunity is billed on the next run"
    if price_id is None:
        return f"has no Stripe price in {currency}", fix
    return "", fix  # a price of another currency: `_price_problem` says which


def _line(
    raw: Mapping[str, Any], currency: str, config: SalesforceConfig, prices: Mapping[str, Mapping[str, Any]]
) -> BillingLine:
    product_id = _text(raw.get("Product2Id"))
    price_id = config.price_for_product(product_id, currency)
    quantity = _whole_quantity(_decimal(raw.get("Quantity")))
    amount_minor = _minor(_decimal(raw.get("TotalPrice")), currency) if currency else None
    price = prices.get(price_id) if price_id else None
    problem, fix = _mapping_problem(product_id, currency, config, prices) if currency else ("", "")
    if price_id:
        problem = _price_problem(price, price_id, currency, quantity, amount_minor)
    return BillingLine(
        line_id=_text(raw.get("Id")),
        product_id=product_id,
        product_name=_text(raw.get("ProductName")),
        price_id=price_id,
        quantity=quantity,
        amount_minor=amount_minor,
        recurring=bool(price and price.get("recurring")),
        problem=problem,
        fix=fix if problem else "",
    )


def plan_billing(
    opportunity: Mapping[str, Any], config: SalesforceConfig, prices: Mapping[str, Mapping[str, Any]]
) -> BillingPlan:
    """The Stripe billing of one opportunity; problems stay in the plan for validation to report."""
    currency = _currency(_text(opportunity.get("CurrencyIsoCode")).upper())
    amount = _decimal(opportunity.get("Amount"))
    address = {
        stripe_name: _text(opportunity.get(sf_name))
        for sf_name, stripe_name in ADDRESS_FIELDS.items()
        if opportunity.get(sf_name)
    }
    return BillingPlan(
        opportunity_id=_text(opportunity.get("Id")),
        opportunity_name=_text(opportunity.get("Name")),
        account_id=_text(opportunity.get("AccountId")),
        account_name=_text(opportunity.get("AccountName")).strip(),
        currency=currency,
        amount=amount,
        amount_minor=_minor(amount, currency),
        lines=tuple(_line(raw, currency, config, prices) for raw in opportunity.get("lines") or ()),
        fingerprint=fingerprint(opportunity),
        address=address,
    )


# -- Stripe request bodies ----------------------------------------------------------------------------


def recurring_amount_text(plan: BillingPlan) -> str:
    """What the subscription bills each period, as billed (`600.00`); "" for a one-off invoice."""
    if not plan.recurring_lines or any(line.amount_minor is None for line in plan.recurring_lines):
        return ""
    return str(to_decimal(sum(line.amount_minor or 0 for line in plan.recurring_lines), plan.currency))


def billing_metadata(plan: BillingPlan) -> dict[str, str]:
    """Written on every Stripe object of the billing: the look-up key, and what was billed.

    Kept on the Stripe object itself (Stripe keeps metadata through upgrades, and it survives a lost ledger):
    the amount, currency and per-period amount billed are what a reconciliation compares with the
    subscription as it is now (`changed_in_stripe`) and with the opportunity as it is now.
    """
    metadata = {
        "salesforce_opportunity_id": plan.opportunity_id,
        "salesforce_account_id": plan.account_id,
        "salesforce_amount": plan.amount_text,
        "salesforce_currency": plan.currency,
        "salesforce_fingerprint": plan.fingerprint,
    }
    if plan.mode == SUBSCRIPTION:
        metadata["salesforce_recurring_amount"] = recurring_amount_text(plan)
    return metadata


def changed_in_stripe(subscription: Mapping[str, Any]) -> str:
    """`recurring 600.00 → 1200.00 USD`: a subscription changed in Stripe (an upgrade) since it was billed.

    "" when it bills what was billed, or when that is not known (billed before the per-period amount was kept).
    """
    metadata = subscription.get("metadata") or {}
    billed, currency = metadata.get("salesforce_recurring_amount"), _text(metadata.get("salesforce_currency"))
    if not billed or not currency:
        return ""
    items = (subscription.get("items") or {}).get("data") or []
    now_minor = sum(int((i.get("price") or {}).get("unit_amount") or 0) * int(i.get("quantity") or 0) for i in items)
    now = to_decimal(now_minor, currency)
    changes = []
    if now != Decimal(billed):
        changes.append(f"recurring {billed} → {now} {currency}")
    if _text(subscription.get("currency")).upper() not in ("", currency):
        changes.append(f"currency {currency} → {_text(subscription.get('currency')).upper()}")
    return ", ".join(changes)


def customer_params(plan: BillingPlan) -> dict[str, Any]:
    params: dict[str, Any] = {"name": plan.account_name, "metadata": {"salesforce_account_id": plan.account_id}}
    if plan.address:
        params["address"] = dict(plan.address)
    return params


def subscription_params(plan: BillingPlan, customer_id: str) -> dict[str, Any]:
    """The subscription of the recurring lines; one-time lines (a setup fee) ride on its first invoice.

    `add_invoice_items` is part of the one create request, so the fee is billed by the same Idempotency-Key
    and found by the same metadata look-up as the subscription: it cannot be billed twice or lost half-way.
    """
    params: dict[str, Any] = {
        "customer": customer_id,
        "collection_method": "send_invoice",
        "days_until_due": DAYS_UNTIL_DUE,
        "items": [{"price": line.price_id, "quantity": line.quantity} for line in plan.recurring_lines],
        "metadata": billing_metadata(plan),
    }
    if plan.one_time_lines:
        params["add_invoice_items"] = [
            {
                "price": line.price_id,
                "quantity": line.quantity,
                "metadata": {"salesforce_opportunity_id": plan.opportunity_id, "salesforce_line_id": line.line_id},
            }
            for line in plan.one_time_lines
        ]
    return params


def invoice_params(plan: BillingPlan, customer_id: str) -> dict[str, Any]:
    return {
        "customer": customer_id,
        "currency": plan.currency.lower(),
        "collection_method": "send_invoice",
        "days_until_due": DAYS_UNTIL_DUE,
        "pending_invoice_items_behavior": "exclude",
        "description": plan.opportunity_name,
        "metadata": billing_metadata(plan),
    }


def invoice_item_params(plan: BillingPlan, line: BillingLine, customer_id: str, invoice_id: str) -> dict[str, Any]:
    """One line of the opportunity's one-off invoice, attached to that (draft) invoice."""
    return {
        "customer": customer_id,
        "invoice": invoice_id,
        "pricing": {"price": line.price_id},
        "quantity": line.quantity,
        "metadata": {"salesforce_opportunity_id": plan.opportunity_id, "salesforce_line_id": line.line_id},
    }


def find_by_metadata(objects: Iterable[Mapping[str, Any]], key: str, value: str) -> dict[str, Any] | None:
    """The first object whose metadata[key] is value (the look-up that precedes every write)."""
    for obj in objects:
        if (obj.get("metadata") or {}).get(key) == value:
            return dict(obj)
    return None


def changes_since_billing(billed: Mapping[str, str], plan: BillingPlan) -> str:
    """`amount 1200.00 → 1500.00`, from the metadata of what was billed and the opportunity now."""
    changes = []
    if billed.get("salesforce_amount", "") != plan.amount_text:
        changes.append(f"amount {billed.get('salesforce_amount') or '(none)'} → {plan.amount_text or '(none)'}")
    if billed.get("salesforce_currency", plan.currency) != plan.currency:
        changes.append(f"currency {billed.get('salesforce_currency')} → {plan.currency}")
    if billed.get("salesforce_account_id", plan.account_id) != plan.account_id:
        changes.append(f"account {billed.get('salesforce_account_id')} → {plan.account_id}")
    return ", ".join(changes) or "products or quantities changed"
