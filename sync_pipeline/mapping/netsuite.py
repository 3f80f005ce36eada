"""Stripe objects -> NetSuite records: the mapping table of DESIGN.md §4 as pure functions.

Inputs are Stripe objects as `StripeObject.to_dict()` returns them in API version
`2026-10-28.endive` (Invoice has no charge/payment_intent/paid; payments are InvoicePayment
objects; lines carry `pricing`/`parent`/`taxes`). Any reference may be an id string or an
expanded dict. Outputs are `NetSuiteRecord`s whose bodies are ready for `PUT .../eid:<id>`:
references to records this pipeline syncs are `{"externalId": "stripe-..."}` (the sync layer may
resolve them to internal ids through the ledger), references to configured NetSuite data are
`{"id": "..."}`, money is `Decimal` with the currency's exponent.

Every public function returns a `MappingResult` and never raises on bad data: a Stripe object that
must not be booked gives a `Skip` with the reason, one that cannot be booked gives a `SyncIssue`
naming the record, field, value and fix.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from sync_pipeline.errors import FIELD_MAPPING_FILE, PARTY_FIELDS, SyncIssue, make_issue
from sync_pipeline.mapping.external_ids import (
    ExternalIdError,
    netsuite_external_id,
    refund_credit_memo_external_id,
    void_credit_memo_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping, reference
from sync_pipeline.mapping.money import (
    MoneyError,
    currency_exponent,
    format_amount,
    normalize_currency,
    to_decimal,
)
from sync_pipeline.mapping.stripe_refs import id_of

CUSTOMER = "customer"
INVOICE = "invoice"
CREDIT_MEMO = "creditMemo"
CUSTOMER_PAYMENT = "customerPayment"
CUSTOMER_REFUND = "customerRefund"

# Stripe's invoice lifecycle is draft -> open -> paid | void | uncollectible. Only a finalized invoice has a
# number and frozen lines, so only these statuses are booked; a draft can still change or be deleted.
FINALIZED_INVOICE_STATUSES = ("open", "paid", "void", "uncollectible")
# Statuses in which Stripe stops collecting: what is still open on the NetSuite invoice is closed by a credit
# memo (`_closing_credit_memo`), which keeps the invoice and its reversal both visible in the books.
CLOSED_INVOICE_STATUSES = ("void", "uncollectible")


@dataclass(frozen=True)
class NetSuiteRecord:
    record_type: str
    external_id: str
    body: dict
    source_id: str  # the Stripe object it came from
    depends_on: tuple[tuple[str, str], ...] = ()  # (record_type, external_id) that must be in NetSuite first
    amount_minor: int = 0  # the record's total in the currency's minor unit (0 for customers)
    currency: str = ""  # ISO code, upper case ("" for a customer without currency)
    # (body field, where its value came from) for values not from field_mapping.yaml's defaults, so a fix text
    # can name the place to correct (e.g. a Stripe customer's metadata).
    value_sources: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Skip:
    """A Stripe object deliberately not booked (draft invoice, failed charge, ...), and why."""

    record_type: str
    source_id: str
    reason: str
    external_id: str | None = None


@dataclass
class MappingResult:
    records: list[NetSuiteRecord] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)
    issues: list[SyncIssue] = field(default_factory=list)

    def extend(self, other: MappingResult) -> MappingResult:
        self.records.extend(other.records)
        self.skips.extend(other.skips)
        self.issues.extend(other.issues)
        return self

    def of_type(self, record_type: str) -> list[NetSuiteRecord]:
        return [r for r in self.records if r.record_type == record_type]


class _Blocked(Exception):
    """Raised inside the mapping when a record cannot be built; turned into an issue at the boundary."""

    def __init__(self, issue: SyncIssue):
        super().__init__(issue.message)
        self.issue = issue


def _never_raises(record_type: str) -> Callable:
    """Public mapping functions report bad data as issues instead of raising."""

    def decorate(fn: Callable[..., MappingResult]) -> Callable[..., MappingResult]:
        @functools.wraps(fn)
        def wrapper(obj: Any, *args: Any, **kwargs: Any) -> MappingResult:
            try:
                return fn(obj, *args, **kwargs)
            except _Blocked as blocked:
                return MappingResult(issues=[blocked.issue])
            # The errors a malformed dict raises while being read; one bad Stripe object must become an
            # issue for that record, not abort the batch it came in with.
            except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
                source_id = id_of(obj) or "?"
                eid = _safe_external_id(source_id)
                return MappingResult(
                    issues=[
                        make_issue(
                            "INVALID_STRIPE_DATA",
                            record_type=record_type,
                            external_id=eid,
                            source_id=source_id,
                            field=str(exc.args[0]) if isinstance(exc, KeyError) else "",
                            value=None,
                            expected=f"a well-formed Stripe object ({type(exc).__name__}: {exc})",
                        )
                    ]
                )

        return wrapper

    return decorate


# -- small readers tolerant of id-or-expanded references -------------------------------------------


def _dig(obj: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _list(value: Any) -> list:
    """A Stripe list object (`{"data": [...]}`) or a plain list -> list."""
    if isinstance(value, Mapping):
        value = value.get("data")
    return list(value) if isinstance(value, list) else []


def _safe_external_id(stripe_id: str, suffix: str | None = None) -> str:
    try:
        return netsuite_external_id(stripe_id, suffix)
    except ExternalIdError:
        return ""


def _external_id(record_type: str, stripe_id: Any, suffix: str | None = None) -> str:
    try:
        return netsuite_external_id(stripe_id, suffix)
    except ExternalIdError as exc:
        raise _Blocked(
            make_issue(
                "INVALID_EXTERNAL_ID",
                record_type=record_type,
                external_id="",
                source_id=str(stripe_id),
                field="externalId",
                value=stripe_id,
                how=str(exc),
            )
        ) from None


def _utc_date(timestamp: Any) -> str | None:
    # Stripe timestamps are Unix seconds; the date is taken in UTC so a rerun on a host in another time
    # zone gives the same tranDate. `bool` is excluded because it is a subclass of `int`.
    if isinstance(timestamp, bool) or not isinstance(timestamp, int):
        return None
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).date().isoformat()


def _minor(value: Any, record_type: str, external_id: str, source_id: str, field_name: str) -> int:
    # Stripe amounts are integers in the minor unit; a float or string here means the input was not a Stripe
    # object, and guessing its scale would book a wrong amount.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field=field_name,
                value=value,
                expected="an integer amount in minor units",
            )
        )
    return value


# -- currency, subsidiary, customer ----------------------------------------------------------------


@dataclass(frozen=True)
class _Money:
    code: str  # ISO upper
    netsuite_id: str
    subsidiary: str | None

    def amount(self, minor: int) -> Decimal:
        return to_decimal(minor, self.code)


def _money(currency: Any, fm: FieldMapping, record_type: str, external_id: str, source_id: str) -> _Money:
    try:
        code = normalize_currency(currency)
    except MoneyError:
        raise _Blocked(
            make_issue(
                "INVALID_CURRENCY",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field="currency",
                value=currency,
            )
        ) from None
    mapping = fm.currency(code)
    if mapping is None:
        raise _Blocked(
            make_issue(
                "UNMAPPED_CURRENCY",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field="currency",
                value=code,
                currency=code,
            )
        )
    # A currency mapped to its own subsidiary wins over the record type's default: in NetSuite a subsidiary
    # transacts in its base currency and those enabled for it, so the currency decides where the record lives.
    subsidiary = mapping.subsidiary or _type_default_id(fm, record_type, "subsidiary")
    return _Money(code=code, netsuite_id=mapping.netsuite_id, subsidiary=subsidiary)


def _type_default_id(fm: FieldMapping, record_type: str, field_name: str) -> str | None:
    value = fm.defaults.get(record_type, {}).get(field_name)
    return value.get("id") if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class CustomerRef:
    """How a transaction names its customer: our synced record, a linked one, or the global one."""

    ref: dict
    depends_on: tuple[tuple[str, str], ...] = ()
    linked_by: str = ""  # why it is not our own record ("global", "metadata.netsuite_customer_id", "guest")
    source: str = ""  # where the NetSuite id came from, as a fix text names it

    def sources(self, party_field: str) -> tuple[tuple[str, str], ...]:
        return ((party_field, self.source),) if self.source else ()


def resolve_customer(customer_field: Any, fm: FieldMapping, customer: Mapping | None = None) -> CustomerRef | None:
    """The NetSuite customer for a document's `customer` field (id or expanded), or None if it has none.

    Pass the Stripe `customer` object when the field is only an id, so a link through
    `metadata.<link_metadata_key>` is honoured.
    """
    # Precedence: global mode books everything to one customer; an explicit metadata link to an existing
    # NetSuite customer beats our own record (it avoids a duplicate of a customer that predates the sync);
    # the guest customer is only for documents without any Stripe customer.
    if fm.customers.mode == "global":
        return CustomerRef(
            ref=reference(fm.customers.global_customer_id),
            linked_by="global",
            source=f"`customers.global_customer_id` in {FIELD_MAPPING_FILE}",
        )
    customer_id = id_of(customer_field)
    expanded = customer_field if isinstance(customer_field, Mapping) else None
    if expanded is None and isinstance(customer, Mapping) and id_of(customer) == customer_id:
        expanded = customer
    link_key = fm.customers.link_metadata_key
    linked = _dig(expanded, "metadata", link_key) if link_key else None
    if isinstance(linked, (str, int)) and not isinstance(linked, bool) and str(linked).strip():
        return CustomerRef(
            ref=reference(str(linked).strip()),
            linked_by=f"metadata.{link_key}",
            source=f"`metadata.{link_key}` on Stripe customer {customer_id}",
        )
    if customer_id:
        eid = netsuite_external_id(customer_id)
        return CustomerRef(ref={"externalId": eid}, depends_on=((CUSTOMER, eid),))
    if fm.customers.guest_customer_id:
        return CustomerRef(
            ref=reference(fm.customers.guest_customer_id),
            linked_by="guest",
            source=f"`customers.guest_customer_id` in {FIELD_MAPPING_FILE}",
        )
    return None


def _party(
    customer_field: Any, fm: FieldMapping, customer: Mapping | None, record_type: str, external_id: str, source_id: str
) -> CustomerRef:
    try:
        party = resolve_customer(customer_field, fm, customer)
    except ExternalIdError as exc:
        raise _Blocked(
            make_issue(
                "INVALID_EXTERNAL_ID",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field="customer",
                value=id_of(customer_field),
                how=str(exc),
            )
        ) from None
    if party is None:
        raise _Blocked(
            make_issue(
                "MISSING_CUSTOMER",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field="customer",
                value=None,
            )
        )
    return party


# -- defaults and record assembly ------------------------------------------------------------------


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == {}


def _with_defaults(record_type: str, body: dict, fm: FieldMapping) -> dict:
    out = dict(body)
    # The subsidiary is settled first because the other defaults (department, class, location) may be
    # configured per subsidiary; NetSuite refuses a reference belonging to another subsidiary, and a missing
    # one gives "Please enter value(s) for: Department" (USER_ERROR).
    if _is_empty(out.get("subsidiary")) and _type_default_id(fm, record_type, "subsidiary"):
        out["subsidiary"] = reference(_type_default_id(fm, record_type, "subsidiary"))
    subsidiary = _dig(out, "subsidiary", "id")
    for name, value in fm.defaults_for(record_type, subsidiary).items():
        if _is_empty(out.get(name)):
            out[name] = dict(value) if isinstance(value, Mapping) else value
    return out


def apply_defaults(record: NetSuiteRecord, fm: FieldMapping) -> NetSuiteRecord:
    """Fill header fields the record lacks from field_mapping.yaml (by record type and subsidiary).

    Never overrides a value the record has. The mapping functions already call it; it is
    idempotent, so applying it again (e.g. after a config reload) is safe.
    """
    return replace(record, body=_with_defaults(record.record_type, record.body, fm))


def _record(
    record_type: str,
    external_id: str,
    body: dict,
    source_id: str,
    fm: FieldMapping,
    *,
    depends_on: Iterable[tuple[str, str]] = (),
    amount_minor: int = 0,
    currency: str = "",
    fallbacks: Mapping[str, Any] | None = None,
    party: CustomerRef | None = None,
) -> NetSuiteRecord:
    """A record with field_mapping.yaml's defaults; a transaction's `party` brings its customer dependency first
    and says where the customer id came from (`value_sources`)."""
    if party is not None:
        depends_on = (*party.depends_on, *depends_on)
    body = _with_defaults(record_type, {"externalId": external_id, **body}, fm)
    for name, value in (fallbacks or {}).items():
        if value is not None and _is_empty(body.get(name)):
            body[name] = value
    return NetSuiteRecord(
        record_type=record_type,
        external_id=external_id,
        body=body,
        source_id=source_id,
        depends_on=tuple(dict.fromkeys(depends_on)),  # de-duplicated, order kept: it is the write order
        amount_minor=amount_minor,
        currency=currency,
        value_sources=party.sources(PARTY_FIELDS[record_type]) if party is not None else (),
    )


def _header(money: _Money, party_field: str, party: CustomerRef, tran_date: str | None, memo: str) -> dict:
    body: dict[str, Any] = {
        party_field: dict(party.ref),
        "currency": reference(money.netsuite_id),
        "tranDate": tran_date,
        "memo": memo,
    }
    if money.subsidiary:
        body["subsidiary"] = reference(money.subsidiary)
    # Unknown values are left out rather than sent as null: on PUT/PATCH NetSuite treats `null` as "clear the
    # field", which would wipe a value set earlier or by hand.
    return {k: v for k, v in body.items() if v is not None}


def _account_ref(account_id: str | None) -> dict | None:
    return reference(account_id) if account_id else None


# -- customers ---------------------------------------------------------------------------------------


@_never_raises(CUSTOMER)
def map_customer(customer: Mapping, fm: FieldMapping, currency: str | None = None) -> MappingResult:
    """A Stripe Customer -> NetSuite customer (per-customer mode), or a Skip when it is linked or global.

    `currency` (e.g. the invoice's) decides the subsidiary when the customer has no currency yet.
    """
    customer_id = customer["id"]
    external_id = _external_id(CUSTOMER, customer_id)
    if customer.get("deleted"):
        return MappingResult(skips=[Skip(CUSTOMER, customer_id, "the Stripe customer is deleted", external_id)])
    party = resolve_customer(customer, fm)
    if party is not None and party.linked_by:
        where = f"NetSuite customer {party.ref['id']}"
        reason = (
            f"customers.mode is global: transactions are booked to {where}"
            if party.linked_by == "global"
            else f"linked to the existing {where} through {party.linked_by}"
        )
        return MappingResult(skips=[Skip(CUSTOMER, customer_id, reason, external_id)])
    # A new Stripe customer has no currency until its first invoice; the invoice's currency then picks the
    # customer's primary currency, since NetSuite refuses transactions outside the customer's currency list.
    code = customer.get("currency") or currency
    body: dict[str, Any] = {
        "companyName": customer.get("name") or customer.get("email") or customer_id,
        "isPerson": False,
    }
    if customer.get("email"):
        body["email"] = customer["email"]
    if customer.get("phone"):
        body["phone"] = customer["phone"]
    body.update(_salesforce_enrichment(customer))
    iso = ""
    if code:
        money = _money(code, fm, CUSTOMER, external_id, customer_id)
        iso = money.code
        body["currency"] = reference(money.netsuite_id)
        if money.subsidiary:
            body["subsidiary"] = reference(money.subsidiary)
    return MappingResult(records=[_record(CUSTOMER, external_id, body, customer_id, fm, currency=iso)])


# Stripe address -> NetSuite addressbook address.
_ADDRESS_FIELDS = {
    "line1": "addr1",
    "line2": "addr2",
    "city": "city",
    "state": "state",
    "postal_code": "zip",
    "country": "country",
}
SALESFORCE_ACCOUNT_FIELD = "custentity_sf_account_id"


def _salesforce_enrichment(customer: Mapping) -> dict[str, Any]:
    """A customer billed from a Salesforce Account (metadata.salesforce_account_id) carries the Account's id
    and its billing address (which the Closed-Won flow copied onto the Stripe customer)."""
    account_id = (customer.get("metadata") or {}).get("salesforce_account_id")
    if not account_id:
        return {}
    fields: dict[str, Any] = {SALESFORCE_ACCOUNT_FIELD: str(account_id)}
    address = {
        ns: customer["address"][stripe]
        for stripe, ns in _ADDRESS_FIELDS.items()
        if isinstance(customer.get("address"), Mapping) and customer["address"].get(stripe)
    }
    if address:
        fields["addressBook"] = {
            "items": [{"defaultBilling": True, "defaultShipping": False, "addressBookAddress": address}]
        }
    return fields


# -- invoices ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Line:
    item_id: str
    amount_minor: int
    description: str
    quantity: Decimal | int | None = None


def _line_price_and_product(line: Mapping) -> tuple[str | None, str | None]:
    details = _dig(line, "pricing", "price_details") or {}
    price = details.get("price") or line.get("price")  # `price` is the pre-basil shape
    product = details.get("product") or (price.get("product") if isinstance(price, Mapping) else None)
    return id_of(price), id_of(product)


def _is_proration(line: Mapping) -> bool:
    # Since 2025-03-31.basil the flag lives under `parent.<parent.type>.proration` (e.g.
    # `parent.subscription_item_details.proration`); the top-level `proration` is the older shape.
    parent = line.get("parent")
    if isinstance(parent, Mapping):
        details = parent.get(parent.get("type") or "")
        if isinstance(details, Mapping) and "proration" in details:
            return bool(details["proration"])
    return bool(line.get("proration"))


def _line_taxes(line: Mapping) -> list[tuple[int, bool, str]]:
    """(amount, inclusive, tax rate id) of a line; `tax_amounts` is the pre-basil shape."""
    out = []
    for tax in _list(line.get("taxes")):
        rate = id_of(_dig(tax, "tax_rate_details", "tax_rate")) or ""
        out.append((tax["amount"], tax.get("tax_behavior") == "inclusive", rate))
    for tax in _list(line.get("tax_amounts")):
        out.append((tax["amount"], bool(tax.get("inclusive")), id_of(tax.get("tax_rate")) or ""))
    return out


def _quantity(line: Mapping) -> Decimal | int | None:
    # `quantity_decimal` (a string, for fractional metered usage) is more precise than the integer
    # `quantity`, so it wins; a whole decimal becomes an int so the body matches what NetSuite echoes back.
    if line.get("quantity_decimal") not in (None, ""):
        quantity = Decimal(str(line["quantity_decimal"]))
        return int(quantity) if quantity == quantity.to_integral_value() else quantity
    quantity = line.get("quantity")
    return quantity if isinstance(quantity, int) and not isinstance(quantity, bool) else None


class _InvoiceContext:
    def __init__(self, invoice: Mapping, fm: FieldMapping, external_id: str):
        self.invoice = invoice
        self.fm = fm
        self.external_id = external_id
        self.source_id = invoice["id"]

    def unmapped(self, what: str, how: str, value: Any = None, field_name: str = "item") -> _Blocked:
        return _Blocked(
            make_issue(
                "UNMAPPED_ITEM",
                record_type=INVOICE,
                external_id=self.external_id,
                source_id=self.source_id,
                field=field_name,
                value=value,
                what=what,
                how=how,
            )
        )

    def configured_item(self, name: str, what: str) -> str:
        item_id = getattr(self.fm.items, name)
        if not item_id:
            raise self.unmapped(
                what,
                f"set `items.{name}` in field_mapping.yaml to the NetSuite item for {what}",
                field_name=f"items.{name}",
            )
        return item_id

    def item_line_item(self, line: Mapping) -> str:
        price_id, product_id = _line_price_and_product(line)
        if _is_proration(line) and self.fm.items.proration:
            return self.fm.items.proration
        item_id = self.fm.item_for(price_id, product_id)
        if not item_id:
            stripe_ref = price_id or product_id or line.get("id")
            raise self.unmapped(
                f"Stripe line {line.get('id')} (price {price_id}, product {product_id})",
                f"add `{price_id or product_id}` under items.by_price/by_product, or set "
                "`items.default` in field_mapping.yaml",
                value=stripe_ref,
            )
        return item_id


def _invoice_lines(invoice: Mapping, ctx: _InvoiceContext) -> list[_Line]:
    """NetSuite lines for a Stripe invoice: items, then discounts, credits and taxes, summing to `total`."""
    lines_obj = invoice.get("lines")
    # An invoice embeds only the first page of its lines; booking a partial list would under-state
    # the invoice, so a truncated list is refused rather than mapped.
    if isinstance(lines_obj, Mapping) and lines_obj.get("has_more"):
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=INVOICE,
                external_id=ctx.external_id,
                source_id=ctx.source_id,
                field="lines.has_more",
                value=True,
                expected="all invoice lines (the extract must page through /v1/invoices/<id>/lines)",
            )
        )
    stripe_lines = _list(lines_obj)
    out: list[_Line] = []
    taxes: dict[str, list[int]] = {}  # tax rate -> amounts, first-seen order
    line_discounts: dict[str, int] = {}
    for line in stripe_lines:
        line_taxes = _line_taxes(line)
        inclusive = sum(amount for amount, is_inclusive, _ in line_taxes if is_inclusive)
        for amount, _, rate in line_taxes:
            taxes.setdefault(rate, []).append(amount)
        for discount in _list(line.get("discount_amounts")):
            key = id_of(discount.get("discount")) or ""
            line_discounts[key] = line_discounts.get(key, 0) + discount["amount"]
        description = line.get("description") or line.get("id") or ""
        # Inclusive tax is already inside Stripe's line amount; it is taken out here because it is booked
        # again on the tax line below, and counting it twice would break the sum to `total`.
        out.append(_Line(ctx.item_line_item(line), line["amount"] - inclusive, description, _quantity(line)))

    discount_amounts = invoice.get("total_discount_amounts")
    # Invoice-level totals when Stripe gives them, else the sum of the lines' discount amounts.
    if isinstance(discount_amounts, list):
        discounts = [(id_of(d.get("discount")) or "", d["amount"], d.get("discount")) for d in discount_amounts]
    else:
        discounts = [(key, amount, key) for key, amount in line_discounts.items()]
    for discount_id, amount, discount in discounts:
        if amount:
            item_id = ctx.configured_item("discount", "discounts")
            out.append(_Line(item_id, -amount, f"Discount {_discount_label(discount) or discount_id}".strip(), 1))
    # Billing credit grants reduce the amount before tax, like a discount; other pretax credit types are
    # not booked here, and `_require_lines_sum` reports the invoice if they change its total.
    for credit in _list(invoice.get("total_pretax_credit_amounts")):
        if credit.get("type") == "credit_balance_transaction" and credit.get("amount"):
            item_id = ctx.configured_item("discount", "credit grants")
            label = id_of(credit.get("credit_balance_transaction")) or ""
            out.append(_Line(item_id, -credit["amount"], f"Credit grant {label}".strip(), 1))

    if not taxes:
        # No per-line tax detail: only exclusive invoice-level taxes add to the lines; inclusive ones
        # are already inside the line amounts.
        for tax in _list(invoice.get("total_taxes")):
            if tax.get("tax_behavior") != "inclusive":
                rate = id_of(_dig(tax, "tax_rate_details", "tax_rate")) or ""
                taxes.setdefault(rate, []).append(tax["amount"])
    for rate, amounts in taxes.items():
        if sum(amounts):
            item_id = ctx.configured_item("tax", "tax")
            out.append(_Line(item_id, sum(amounts), f"Tax {rate}".strip(), 1))
    return out


def _discount_label(discount: Any) -> str:
    if not isinstance(discount, Mapping):
        return ""
    coupon = _dig(discount, "source", "coupon") or discount.get("coupon")  # 2025-09-30.clover moved it to source
    if isinstance(coupon, Mapping):
        return str(coupon.get("name") or coupon.get("id") or "")
    return str(coupon or "")


def _line_body(line: _Line, money: _Money) -> dict:
    amount = money.amount(line.amount_minor)
    body: dict[str, Any] = {"item": reference(line.item_id)}
    if line.quantity:
        body["quantity"] = line.quantity
        rate = amount / line.quantity
        quantum = Decimal(1).scaleb(-currency_exponent(money.code))
        # Send a rate only when it is exact at the currency's precision; NetSuite keeps `amount` as sent.
        # A rounded rate would make NetSuite's rate x quantity differ from the amount by a cent, which is
        # worse than leaving the rate for NetSuite to derive.
        if rate == rate.quantize(quantum):
            body["rate"] = rate.quantize(quantum)
    body["amount"] = amount
    if line.description:
        body["description"] = line.description
    return body


def _invoice_memo(invoice: Mapping) -> str:
    number = invoice.get("number")
    return f"Stripe invoice {number} ({invoice['id']})" if number else f"Stripe {invoice['id']}"


@_never_raises(INVOICE)
def map_invoice(invoice: Mapping, fm: FieldMapping, customer: Mapping | None = None) -> MappingResult:
    """A finalized Stripe Invoice -> NetSuite invoice (+ a credit memo closing it if void/uncollectible).

    Drafts are skipped. Lines: one per Stripe line (item from price/product mapping, proration item for
    prorations), then one negative line per discount, one line per tax rate; they sum to `total` exactly.
    """
    invoice_id = invoice["id"]
    external_id = _external_id(INVOICE, invoice_id)
    status = invoice.get("status")
    if status == "draft":
        return MappingResult(
            skips=[
                Skip(
                    INVOICE, invoice_id, "draft invoice: not posted to the books until Stripe finalizes it", external_id
                )
            ]
        )
    if status not in FINALIZED_INVOICE_STATUSES:
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=INVOICE,
                external_id=external_id,
                source_id=invoice_id,
                field="status",
                value=status,
                expected=f"one of {', '.join(('draft',) + FINALIZED_INVOICE_STATUSES)}",
            )
        )
    money = _money(invoice.get("currency"), fm, INVOICE, external_id, invoice_id)
    party = _party(invoice.get("customer"), fm, customer, INVOICE, external_id, invoice_id)
    total = _minor(invoice.get("total"), INVOICE, external_id, invoice_id, "total")
    lines = _invoice_lines(invoice, _InvoiceContext(invoice, fm, external_id))
    _require_lines_sum(lines, total, money, INVOICE, external_id, invoice_id)

    # The invoice is issued when it is finalized (subscription drafts wait about an hour, manual ones can
    # wait days), so that is the accounting date; `created` is the fallback for objects without transitions.
    tran_ts = _dig(invoice, "status_transitions", "finalized_at") or invoice.get("created")
    body = _header(money, "entity", party, _utc_date(tran_ts), _invoice_memo(invoice))
    if _utc_date(invoice.get("due_date")):
        body["dueDate"] = _utc_date(invoice.get("due_date"))
    body["item"] = {"items": [_line_body(line, money) for line in lines]}
    record = _record(
        INVOICE,
        external_id,
        body,
        invoice_id,
        fm,
        party=party,
        amount_minor=total,
        currency=money.code,
    )
    result = MappingResult(records=[record])
    if status in CLOSED_INVOICE_STATUSES:
        result.extend(_closing_credit_memo(invoice, record, lines, money, party, fm))
    return result


def _require_lines_sum(
    lines: Sequence[_Line], total: int, money: _Money, record_type: str, external_id: str, source_id: str
) -> None:
    """Refuse an invoice whose NetSuite lines would not add up to Stripe's `total`.

    NetSuite computes the transaction total from its lines, so any gap would surface later as an
    unexplained difference between the two ledgers; it is reported now, with the invoice named.
    """
    line_total = sum(line.amount_minor for line in lines)
    if line_total != total:
        raise _Blocked(
            make_issue(
                "LINES_DO_NOT_SUM",
                record_type=record_type,
                external_id=external_id,
                source_id=source_id,
                field="item",
                value=money.amount(line_total),
                line_total=format_amount(line_total, money.code),
                total=format_amount(total, money.code),
                how="the Stripe invoice has amounts the mapping does not book as lines (shipping, or credits "
                "of another kind); book the difference by hand and report the invoice shape",
            )
        )


def _credit_item(fm: FieldMapping, external_id: str, source_id: str, what: str) -> str:
    """The item a credit memo line books to when it does not mirror an invoice line (a refund, a write-off)."""
    item_id = fm.items.refund or fm.items.default
    if not item_id:
        raise _Blocked(
            make_issue(
                "UNMAPPED_ITEM",
                record_type=CREDIT_MEMO,
                external_id=external_id,
                source_id=source_id,
                field="items.refund",
                what=what,
                how="set `items.refund` or `items.default` in field_mapping.yaml",
            )
        )
    return item_id


def _closing_credit_memo(
    invoice: Mapping,
    invoice_record: NetSuiteRecord,
    lines: Sequence[_Line],
    money: _Money,
    party: CustomerRef,
    fm: FieldMapping,
) -> MappingResult:
    invoice_id = invoice["id"]
    external_id = void_credit_memo_external_id(invoice_id)
    status = invoice["status"]
    if fm.void_invoices == "none":
        return MappingResult(
            skips=[
                Skip(
                    CREDIT_MEMO,
                    invoice_id,
                    f"the invoice is {status} but void_invoices is "
                    "`none` in field_mapping.yaml: the NetSuite invoice stays open; close it "
                    "by hand",
                    external_id,
                )
            ]
        )
    # Only what is still open is credited: payments already taken stay applied to the NetSuite invoice, and
    # crediting them too would leave the customer with a balance Stripe does not have.
    paid = invoice.get("amount_paid") or 0
    open_minor = invoice_record.amount_minor - paid
    if open_minor <= 0:
        return MappingResult(
            skips=[
                Skip(
                    CREDIT_MEMO,
                    invoice_id,
                    f"the invoice is {status} with nothing left open: no credit memo needed",
                    external_id,
                )
            ]
        )
    if open_minor == invoice_record.amount_minor:
        cm_lines = list(lines)  # a full reversal mirrors the invoice line for line
        # so revenue and tax are reversed on the same items; a partial one cannot be split back over the
        # lines without guessing, so it goes to the single write-off item.
    else:
        item_id = _credit_item(fm, external_id, invoice_id, "the write-off line")
        cm_lines = [_Line(item_id, open_minor, f"Open balance of Stripe invoice {invoice_id} ({status})", 1)]
    closed_ts = _dig(invoice, "status_transitions", "voided_at") or _dig(
        invoice, "status_transitions", "marked_uncollectible_at"
    )
    tran_date = _utc_date(closed_ts) or invoice_record.body.get("tranDate")
    body = _header(money, "entity", party, tran_date, f"Closes {_invoice_memo(invoice)}: marked {status} in Stripe")
    body["createdFrom"] = {"externalId": invoice_record.external_id}
    body["item"] = {"items": [_line_body(line, money) for line in cm_lines]}
    body["apply"] = {
        "items": [
            {"doc": {"externalId": invoice_record.external_id}, "apply": True, "amount": money.amount(open_minor)}
        ]
    }
    record = _record(
        CREDIT_MEMO,
        external_id,
        body,
        invoice_id,
        fm,
        party=party,
        depends_on=((INVOICE, invoice_record.external_id),),
        amount_minor=open_minor,
        currency=money.code,
    )
    return MappingResult(records=[record])


# -- payments ------------------------------------------------------------------------------------------


def _charge_id_of_payment(invoice_payment: Mapping, charge: Mapping | None) -> str | None:
    if charge is not None:
        return id_of(charge)
    payment = invoice_payment.get("payment") or {}
    return id_of(payment.get("charge")) if payment.get("type") == "charge" else None


@_never_raises(CUSTOMER_PAYMENT)
def map_invoice_payment(
    invoice_payment: Mapping,
    invoice: Mapping,
    charge: Mapping | None,
    fm: FieldMapping,
    customer: Mapping | None = None,
) -> MappingResult:
    """A paid Stripe InvoicePayment -> customer payment applied to the invoice.

    External id `stripe-<charge id>` when the payment has a charge (pass it, e.g. the PaymentIntent's
    latest charge), else `stripe-<inpay id>`. Unpaid (open/failed/canceled) payments are skipped.
    """
    payment_id = invoice_payment["id"]
    # Keyed by the charge when there is one, so the same money gets the same external id whichever way it
    # is found (invoice payment or bare charge); the upsert then cannot create it twice.
    charge_id = _charge_id_of_payment(invoice_payment, charge)
    external_id = _external_id(CUSTOMER_PAYMENT, charge_id or payment_id)
    source_id = charge_id or payment_id
    status = invoice_payment.get("status")
    if status != "paid":
        return MappingResult(
            skips=[
                Skip(
                    CUSTOMER_PAYMENT,
                    source_id,
                    f"invoice payment {payment_id} is {status}: nothing was collected, the NetSuite invoice stays open",
                    external_id,
                )
            ]
        )
    if invoice.get("status") == "draft":
        return MappingResult(skips=[Skip(CUSTOMER_PAYMENT, source_id, "its invoice is a draft", external_id)])
    invoice_eid = _external_id(INVOICE, invoice["id"])
    money = _money(
        invoice_payment.get("currency") or invoice.get("currency"), fm, CUSTOMER_PAYMENT, external_id, source_id
    )
    if money.code != normalize_currency(invoice.get("currency")):
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=CUSTOMER_PAYMENT,
                external_id=external_id,
                source_id=source_id,
                field="currency",
                value=money.code,
                expected=f"the invoice's currency {invoice.get('currency')}",
            )
        )
    amount = _minor(invoice_payment.get("amount_paid"), CUSTOMER_PAYMENT, external_id, source_id, "amount_paid")
    invoice_total = invoice.get("total") or 0
    # NetSuite refuses an apply line larger than the invoice's amount due; catching it here names the
    # Stripe objects instead of surfacing a generic 400 on write.
    if amount > invoice_total:
        raise _Blocked(
            make_issue(
                "OVER_APPLIED",
                record_type=CUSTOMER_PAYMENT,
                external_id=external_id,
                source_id=source_id,
                field="apply.amount",
                value=money.amount(amount),
                applied=format_amount(amount, money.code),
                doc=invoice_eid,
                available=format_amount(invoice_total, money.code),
            )
        )
    party = _party(invoice.get("customer"), fm, customer, CUSTOMER_PAYMENT, external_id, source_id)
    # The date money was collected, most precise first: the InvoicePayment's paid_at, then the charge.
    paid_ts = (
        _dig(invoice_payment, "status_transitions", "paid_at")
        or _dig(charge, "created")
        or invoice_payment.get("created")
    )
    memo = f"Stripe payment {source_id} for {_invoice_memo(invoice)}"
    body = _header(money, "customer", party, _utc_date(paid_ts), memo)
    body["payment"] = money.amount(amount)
    body["apply"] = {"items": [{"doc": {"externalId": invoice_eid}, "apply": True, "amount": money.amount(amount)}]}
    record = _record(
        CUSTOMER_PAYMENT,
        external_id,
        body,
        source_id,
        fm,
        party=party,
        depends_on=((INVOICE, invoice_eid),),
        amount_minor=amount,
        currency=money.code,
        fallbacks={"account": _account_ref(fm.accounts.payments)},
    )
    return MappingResult(records=[record])


def _charge_skip_reason(charge: Mapping) -> str | None:
    status = charge.get("status")
    if status == "failed":
        why = charge.get("failure_message") or charge.get("failure_code") or "no reason given"
        return f"failed charge ({why}): no money was collected"
    if status != "succeeded":
        return f"charge is {status}: it is booked once it succeeds"
    if charge.get("captured") is False:
        return "authorized but not captured: it is booked once captured"
    return None


@_never_raises(CUSTOMER_PAYMENT)
def map_charge_payment(charge: Mapping, fm: FieldMapping, customer: Mapping | None = None) -> MappingResult:
    """A succeeded Stripe charge that belongs to no invoice -> unapplied customer payment (customer balance).

    The Charge object no longer says whether it paid an invoice: call this only for charges no
    InvoicePayment refers to. Failed, pending and uncaptured charges are skipped.
    """
    charge_id = charge["id"]
    external_id = _external_id(CUSTOMER_PAYMENT, charge_id)
    reason = _charge_skip_reason(charge)
    if reason:
        return MappingResult(skips=[Skip(CUSTOMER_PAYMENT, charge_id, reason, external_id)])
    money = _money(charge.get("currency"), fm, CUSTOMER_PAYMENT, external_id, charge_id)
    # A partial capture books what was captured, not what was authorized; `amount` covers older objects.
    amount = charge.get("amount_captured") or charge.get("amount")
    amount = _minor(amount, CUSTOMER_PAYMENT, external_id, charge_id, "amount_captured")
    party = _party(charge.get("customer"), fm, customer, CUSTOMER_PAYMENT, external_id, charge_id)
    memo = f"Stripe charge {charge_id}" + (f": {charge['description']}" if charge.get("description") else "")
    body = _header(money, "customer", party, _utc_date(charge.get("created")), memo)
    body["payment"] = money.amount(amount)
    record = _record(
        CUSTOMER_PAYMENT,
        external_id,
        body,
        charge_id,
        fm,
        party=party,
        amount_minor=amount,
        currency=money.code,
        fallbacks={"account": _account_ref(fm.accounts.payments)},
    )
    return MappingResult(records=[record])


# -- refunds -------------------------------------------------------------------------------------------


@_never_raises(CUSTOMER_REFUND)
def map_refund(
    refund: Mapping, charge: Mapping | None, invoice: Mapping | None, fm: FieldMapping, customer: Mapping | None = None
) -> MappingResult:
    """A succeeded Stripe refund -> NetSuite records giving the money back.

    Refund of an invoiced charge: a credit memo `stripe-<re>-cm` made from the invoice, and a customer
    refund `stripe-<re>` applying that credit memo. Refund of an invoice-less charge: a customer refund
    applying the charge's customer payment `stripe-<ch>`. Pending, failed and canceled refunds are skipped.
    """
    refund_id = refund["id"]
    external_id = _external_id(CUSTOMER_REFUND, refund_id)
    status = refund.get("status")
    if status != "succeeded":
        why = "it is booked once it succeeds" if status in ("pending", "requires_action") else "no money went back"
        return MappingResult(skips=[Skip(CUSTOMER_REFUND, refund_id, f"refund is {status}: {why}", external_id)])
    charge_id = id_of(charge) or id_of(refund.get("charge"))
    if not charge_id:
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=CUSTOMER_REFUND,
                external_id=external_id,
                source_id=refund_id,
                field="charge",
                value=None,
                expected="the refunded charge (refunds of other payment kinds are not mapped)",
            )
        )
    money = _money(refund.get("currency"), fm, CUSTOMER_REFUND, external_id, refund_id)
    amount = _minor(refund.get("amount"), CUSTOMER_REFUND, external_id, refund_id, "amount")
    charged = _dig(charge, "amount_captured") or _dig(charge, "amount")
    if isinstance(charged, int) and amount > charged:
        raise _Blocked(
            make_issue(
                "OVER_APPLIED",
                record_type=CUSTOMER_REFUND,
                external_id=external_id,
                source_id=refund_id,
                field="apply.amount",
                value=money.amount(amount),
                applied=format_amount(amount, money.code),
                doc=f"charge {charge_id}",
                available=format_amount(charged, money.code),
            )
        )
    customer_field = _dig(charge, "customer") or refund.get("customer") or _dig(invoice, "customer")
    party = _party(customer_field, fm, customer, CUSTOMER_REFUND, external_id, refund_id)
    tran_date = _utc_date(refund.get("created"))
    result = MappingResult()
    # A NetSuite customer refund can only apply credits (credit memos, payments), never an invoice directly;
    # so a refund of an invoiced charge first needs a credit memo made from the invoice.
    if invoice is not None:
        credit_memo = _refund_credit_memo(refund, charge_id, invoice, money, amount, party, tran_date, fm)
        result.records.append(credit_memo)
        applies_to = (CREDIT_MEMO, credit_memo.external_id)
        memo = f"Stripe refund {refund_id} of charge {charge_id} ({_invoice_memo(invoice)})"
    else:
        # the charge's payment (record type given only for error reports; the id is the payment's)
        applies_to = (CUSTOMER_PAYMENT, _external_id(CUSTOMER_REFUND, charge_id))
        memo = f"Stripe refund {refund_id} of charge {charge_id}"
    body = _header(money, "customer", party, tran_date, memo)
    body["apply"] = {"items": [{"doc": {"externalId": applies_to[1]}, "apply": True, "amount": money.amount(amount)}]}
    result.records.append(
        _record(
            CUSTOMER_REFUND,
            external_id,
            body,
            refund_id,
            fm,
            party=party,
            depends_on=(applies_to,),
            amount_minor=amount,
            currency=money.code,
            fallbacks={"account": _account_ref(fm.accounts.refunds)},
        )
    )
    return result


def _refund_credit_memo(
    refund: Mapping,
    charge_id: str,
    invoice: Mapping,
    money: _Money,
    amount: int,
    party: CustomerRef,
    tran_date: str | None,
    fm: FieldMapping,
) -> NetSuiteRecord:
    refund_id = refund["id"]
    external_id = refund_credit_memo_external_id(refund_id)
    invoice_eid = _external_id(CREDIT_MEMO, invoice["id"])
    item_id = _credit_item(fm, external_id, refund_id, "the refund credit memo line")
    if normalize_currency(invoice.get("currency")) != money.code:
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=CREDIT_MEMO,
                external_id=external_id,
                source_id=refund_id,
                field="currency",
                value=money.code,
                expected=f"the invoice's currency {invoice.get('currency')}",
            )
        )
    line = _Line(item_id, amount, f"Refund {refund_id} of charge {charge_id}", 1)
    body = _header(money, "entity", party, tran_date, f"Stripe refund {refund_id} of {_invoice_memo(invoice)}")
    body["createdFrom"] = {"externalId": invoice_eid}
    body["item"] = {"items": [_line_body(line, money)]}
    return _record(
        CREDIT_MEMO,
        external_id,
        body,
        refund_id,
        fm,
        party=party,
        depends_on=((INVOICE, invoice_eid),),
        amount_minor=amount,
        currency=money.code,
    )


# -- a whole invoice with its children -----------------------------------------------------------------


def _charge_for_payment(invoice_payment: Mapping, charges: Mapping[str, Mapping]) -> Mapping | None:
    # Since basil the Charge no longer names its invoice; the link runs InvoicePayment -> payment -> charge
    # or -> PaymentIntent -> latest_charge.
    payment = invoice_payment.get("payment") or {}
    if payment.get("type") == "charge":
        charge = payment.get("charge")
        return charge if isinstance(charge, Mapping) else charges.get(id_of(charge) or "")
    intent_id = id_of(payment.get("payment_intent"))
    if intent_id:
        intent = payment.get("payment_intent")
        latest = _dig(intent, "latest_charge") if isinstance(intent, Mapping) else None
        if isinstance(latest, Mapping):
            return latest
        if id_of(latest) in charges:
            return charges[id_of(latest)]
        succeeded = [
            c
            for c in charges.values()
            if id_of(c.get("payment_intent")) == intent_id and c.get("status") == "succeeded"
        ]
        # A PaymentIntent has at most one succeeded charge (earlier attempts failed), so the last one is it.
        return succeeded[-1] if succeeded else None
    return None


def map_invoice_tree(
    invoice: Mapping,
    fm: FieldMapping,
    *,
    customer: Mapping | None = None,
    invoice_payments: Iterable[Mapping] = (),
    charges: Iterable[Mapping] = (),
    refunds: Iterable[Mapping] = (),
) -> MappingResult:
    """An invoice with its customer, payments and refunds -> every NetSuite record, in dependency order.

    `charges` are the charges behind the invoice's payments; `refunds` those of these charges.
    """
    charges_by_id = {c["id"]: c for c in charges if isinstance(c, Mapping) and c.get("id")}
    result = MappingResult()
    if invoice.get("status") == "draft":
        return map_invoice(invoice, fm, customer)  # just the Skip; a draft's customer needs no record yet
    customer_obj = invoice.get("customer") if isinstance(invoice.get("customer"), Mapping) else customer
    if isinstance(customer_obj, Mapping):
        result.extend(map_customer(customer_obj, fm, currency=invoice.get("currency")))
    result.extend(map_invoice(invoice, fm, customer))
    for invoice_payment in invoice_payments:
        charge = _charge_for_payment(invoice_payment, charges_by_id)
        result.extend(map_invoice_payment(invoice_payment, invoice, charge, fm, customer=customer))
    for refund in refunds:
        charge = charges_by_id.get(id_of(refund.get("charge")) or "")
        result.extend(map_refund(refund, charge, invoice, fm, customer=customer))
    return result
