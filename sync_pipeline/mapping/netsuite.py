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
    dispute_reinstated_external_id,
    netsuite_external_id,
    out_of_band_external_id,
    refund_credit_memo_external_id,
    reversal_external_id,
    sale_invoice_external_id,
    void_credit_memo_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping, reference
from sync_pipeline.mapping.money import (
    MoneyError,
    allocate,
    format_amount,
    normalize_currency,
    round_document,
    to_minor,
    to_precision,
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
    # Stripe's exact total less what NetSuite holds, in Stripe's minor units: non-zero only for a document in a
    # three-decimal currency sent at NetSuite's precision (below one unit of it), reported per day.
    residue_minor: int = 0


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
    precision: int  # NetSuite's decimals for the currency (0 or 2)

    def amount(self, minor: int) -> Decimal:
        """Stripe minor units at NetSuite's precision: exact, except a three-decimal currency's last digit."""
        return to_precision(minor, self.code, self.precision)


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
    return _Money(code=code, netsuite_id=mapping.netsuite_id, subsidiary=subsidiary, precision=mapping.precision)


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
    residue_minor: int = 0,
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
        residue_minor=residue_minor,
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


def stripe_exchange_rate(obj: Any) -> Decimal | None:
    """The rate Stripe converted a charge or refund at, when it settled in another currency (its balance
    transaction expanded by the extract): the NetSuite payment or refund carries it, so its deposit in the
    settlement currency holds Stripe's amount, as Stripe's connector does."""
    rate = _dig(obj, "balance_transaction", "exchange_rate")
    if rate is None or isinstance(rate, bool):
        return None
    return Decimal(str(rate))


def _account_ref(account_id: str | None) -> dict | None:
    return reference(account_id) if account_id else None


# -- customers ---------------------------------------------------------------------------------------


@_never_raises(CUSTOMER)
def map_customer(
    customer: Mapping, fm: FieldMapping, currency: str | None = None, other_currencies: Iterable[str] = ()
) -> MappingResult:
    """A Stripe Customer -> NetSuite customer (per-customer mode), or a Skip when it is linked or global.

    `currency` (e.g. the invoice's) decides the subsidiary when the customer has no currency yet;
    `other_currencies` are those its other documents use: NetSuite refuses a transaction in a currency
    that is not on the customer's currency list, so each is added to it.
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
        listed = [money.netsuite_id]
        for other in other_currencies:
            other_id = _money(other, fm, CUSTOMER, external_id, customer_id).netsuite_id
            if other_id not in listed:
                listed.append(other_id)
        # The primary currency is listed too, as NetSuite lists it; sending the whole list keeps a re-sync
        # from dropping a currency an earlier day added (NetSuite keeps lines it already has).
        if len(listed) > 1:
            body["currencyList"] = {"items": [{"currency": reference(c)} for c in listed]}
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


# -- document lines --------------------------------------------------------------------------------------


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


class _DocumentContext:
    """The Stripe document being mapped (invoice or credit note), for items and error reports."""

    def __init__(self, document: Mapping, fm: FieldMapping, record_type: str, external_id: str):
        self.document = document
        self.fm = fm
        self.record_type = record_type
        self.external_id = external_id
        self.source_id = document["id"]

    def issue(self, code: str, field_name: str, value: Any, **params: Any) -> _Blocked:
        return _Blocked(
            make_issue(
                code,
                record_type=self.record_type,
                external_id=self.external_id,
                source_id=self.source_id,
                field=field_name,
                value=value,
                **params,
            )
        )

    def unmapped(self, what: str, how: str, value: Any = None, field_name: str = "item") -> _Blocked:
        return self.issue("UNMAPPED_ITEM", field_name, value, what=what, how=how)

    def configured_item(self, name: str, what: str) -> str:
        item_id = getattr(self.fm.items, name)
        if not item_id:
            raise self.unmapped(
                what,
                f"set `items.{name}` in field_mapping.yaml to the NetSuite item for {what}",
                field_name=f"items.{name}",
            )
        return item_id

    def credit_item(self, what: str) -> str:
        """The item of a credit line that mirrors no invoice line (a refund, a custom credit note line)."""
        item_id = self.fm.items.refund or self.fm.items.default
        if not item_id:
            raise self.unmapped(
                what, "set `items.refund` or `items.default` in field_mapping.yaml", None, "items.refund"
            )
        return item_id

    def item_line_item(self, line: Mapping) -> str:
        price_id, product_id = _line_price_and_product(line)
        if _is_proration(line) and self.fm.items.proration:
            return self.fm.items.proration
        item_id = self.fm.item_for(price_id, product_id)
        if not item_id:
            if product_id and self.fm.items.unmapped_products == "hold":
                # The product is the thing finance names an item for; its id is what the yaml line needs.
                raise self.unmapped(
                    f"Stripe product {product_id} (line {line.get('id')}, price {price_id})",
                    f'add `{product_id}: "<NetSuite item id>"` under items.by_product in field_mapping.yaml '
                    "(or map its price under items.by_price), then retry the day",
                    value=product_id,
                )
            stripe_ref = price_id or product_id or line.get("id")
            raise self.unmapped(
                f"Stripe line {line.get('id')} (price {price_id}, product {product_id})",
                f"add `{price_id or product_id}` under items.by_price/by_product, or set "
                "`items.default` in field_mapping.yaml",
                value=stripe_ref,
            )
        return item_id

    def all_lines(self, lines_obj: Any) -> list[Mapping]:
        # A document embeds only the first page of its lines; booking a partial list would under-state it,
        # so a truncated list is refused rather than mapped.
        if isinstance(lines_obj, Mapping) and lines_obj.get("has_more"):
            raise self.issue(
                "INVALID_STRIPE_DATA",
                "lines.has_more",
                True,
                expected="all lines (the extract must page through the document's /lines)",
            )
        return _list(lines_obj)


def _document_lines(
    stripe_lines: Sequence[Mapping],
    ctx: _DocumentContext,
    item_of: Callable[[Mapping], str],
    discounts: Sequence[tuple[str, int, Any]] | None = None,
    pretax_credits: Sequence[Mapping] = (),
    invoice_taxes: Sequence[Mapping] = (),
) -> list[_Line]:
    """NetSuite lines of a Stripe invoice or credit note: items, then discounts, credits and taxes, summing to
    its `total`. `discounts` are the document's own totals (else the lines' are summed)."""
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
        out.append(_Line(item_of(line), line["amount"] - inclusive, description, _quantity(line)))
    if discounts is None:
        discounts = [(key, amount, key) for key, amount in line_discounts.items()]
    for discount_id, amount, discount in discounts:
        if amount:
            item_id = ctx.configured_item("discount", "discounts")
            out.append(_Line(item_id, -amount, f"Discount {_discount_label(discount) or discount_id}".strip(), 1))
    # Billing credit grants reduce the amount before tax, like a discount; other pretax credit types are
    # not booked here, and `_require_lines_sum` reports the document if they change its total.
    for credit in pretax_credits:
        if credit.get("type") == "credit_balance_transaction" and credit.get("amount"):
            item_id = ctx.configured_item("discount", "credit grants")
            label = id_of(credit.get("credit_balance_transaction")) or ""
            out.append(_Line(item_id, -credit["amount"], f"Credit grant {label}".strip(), 1))
    if not taxes:
        # No per-line tax detail: only exclusive document-level taxes add to the lines; inclusive ones
        # are already inside the line amounts.
        for tax in invoice_taxes:
            if tax.get("tax_behavior") != "inclusive":
                rate = id_of(_dig(tax, "tax_rate_details", "tax_rate")) or ""
                taxes.setdefault(rate, []).append(tax["amount"])
    for rate, amounts in taxes.items():
        if sum(amounts):
            item_id = ctx.configured_item("tax", "tax")
            out.append(_Line(item_id, sum(amounts), f"Tax {rate}".strip(), 1))
    return out


def _invoice_lines(invoice: Mapping, ctx: _DocumentContext) -> list[_Line]:
    discount_amounts = invoice.get("total_discount_amounts")
    # Invoice-level totals when Stripe gives them, else the sum of the lines' discount amounts.
    discounts = (
        [(id_of(d.get("discount")) or "", d["amount"], d.get("discount")) for d in discount_amounts]
        if isinstance(discount_amounts, list)
        else None
    )
    return _document_lines(
        ctx.all_lines(invoice.get("lines")),
        ctx,
        ctx.item_line_item,
        discounts=discounts,
        pretax_credits=_list(invoice.get("total_pretax_credit_amounts")),
        invoice_taxes=_list(invoice.get("total_taxes")),
    )


def _discount_label(discount: Any) -> str:
    if not isinstance(discount, Mapping):
        return ""
    coupon = _dig(discount, "source", "coupon") or discount.get("coupon")  # 2025-09-30.clover moved it to source
    if isinstance(coupon, Mapping):
        return str(coupon.get("name") or coupon.get("id") or "")
    return str(coupon or "")


def _line_body(line: _Line, amount: Decimal, money: _Money) -> dict:
    body: dict[str, Any] = {"item": reference(line.item_id)}
    if line.quantity:
        body["quantity"] = line.quantity
        rate = amount / line.quantity
        quantum = Decimal(1).scaleb(-money.precision)
        # Send a rate only when it is exact at NetSuite's precision; NetSuite keeps `amount` as sent.
        # A rounded rate would make NetSuite's rate x quantity differ from the amount by a cent, which is
        # worse than leaving the rate for NetSuite to derive.
        if rate == rate.quantize(quantum):
            body["rate"] = rate.quantize(quantum)
    body["amount"] = amount
    if line.description:
        body["description"] = line.description
    return body


@dataclass(frozen=True)
class _Sublist:
    body: dict  # {"items": [...]} ready for the record
    total: Decimal  # what NetSuite's total will be
    residue_minor: int  # Stripe's exact total - `total`, in Stripe minor units


def _item_sublist(lines: Sequence[_Line], money: _Money, ctx: _DocumentContext) -> _Sublist:
    """The `item` sublist at NetSuite's precision: each line rounded half-even, and one rounding line
    (`items.rounding`) when needed so the lines sum to Stripe's total rounded half-even."""
    rounded = round_document([line.amount_minor for line in lines], money.code, money.precision)
    items = [_line_body(line, amount, money) for line, amount in zip(lines, rounded.lines, strict=True)]
    if rounded.rounding:
        item_id = ctx.configured_item("rounding", f"rounding {money.code} to NetSuite's {money.precision} decimals")
        items.append(
            {
                "item": reference(item_id),
                "amount": rounded.rounding,
                "description": f"Rounding: Stripe's {money.code} lines to {money.precision} decimals",
            }
        )
    return _Sublist({"items": items}, rounded.total, to_minor(rounded.residue, money.code))


def _require_lines_sum(lines: Sequence[_Line], total: int, money: _Money, ctx: _DocumentContext) -> None:
    """Refuse a document whose NetSuite lines would not add up to Stripe's `total`.

    NetSuite computes the transaction total from its lines, so any gap would surface later as an
    unexplained difference between the two ledgers; it is reported now, with the document named.
    """
    line_total = sum(line.amount_minor for line in lines)
    if line_total != total:
        raise ctx.issue(
            "LINES_DO_NOT_SUM",
            "item",
            money.amount(line_total),
            line_total=format_amount(line_total, money.code),
            total=format_amount(total, money.code),
            how="the Stripe document has amounts the mapping does not book as lines (shipping, or credits "
            "of another kind); book the difference by hand and report the document's shape",
        )


def _share_of_lines(lines: Sequence[_Line], amount: int, fallback: Callable[[], _Line]) -> list[_Line]:
    """`amount` spread over `lines` in proportion (largest remainder, to the unit): a partial refund or write-off
    reverses each item, discount and tax line by its share. Lines that sum to nothing cannot be shared, nor an
    amount larger than them (a payment that also settled a prior debit balance): one `fallback` line then."""
    whole = sum(line.amount_minor for line in lines)
    if whole <= 0 or not 0 < amount <= whole:
        return [replace(fallback(), amount_minor=amount)]
    if amount == whole:
        return list(lines)
    shares = allocate(amount, [line.amount_minor for line in lines])
    return [
        replace(line, amount_minor=share, quantity=1 if line.quantity else None)
        for line, share in zip(lines, shares, strict=True)
        if share
    ]


# -- invoices ------------------------------------------------------------------------------------------


def _invoice_memo(invoice: Mapping) -> str:
    number = invoice.get("number")
    return f"Stripe invoice {number} ({invoice['id']})" if number else f"Stripe {invoice['id']}"


def _invoice_date(invoice: Mapping) -> str | None:
    # Stripe's `effective_at` is the invoice's accounting date: its finalization unless backdated. Older objects
    # lack it; then finalization (subscription drafts wait about an hour, manual ones days), then `created`.
    return _utc_date(
        invoice.get("effective_at") or _dig(invoice, "status_transitions", "finalized_at") or invoice.get("created")
    )


@dataclass(frozen=True)
class _MappedInvoice:
    record: NetSuiteRecord
    lines: list[_Line]
    money: _Money
    party: CustomerRef
    ctx: _DocumentContext


def _map_invoice_document(invoice: Mapping, fm: FieldMapping, customer: Mapping | None) -> _MappedInvoice | Skip:
    invoice_id = invoice["id"]
    external_id = _external_id(INVOICE, invoice_id)
    status = invoice.get("status")
    if status == "draft":
        return Skip(
            INVOICE, invoice_id, "draft invoice: not posted to the books until Stripe finalizes it", external_id
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
    ctx = _DocumentContext(invoice, fm, INVOICE, external_id)
    lines = _invoice_lines(invoice, ctx)
    _require_lines_sum(lines, total, money, ctx)
    if total < 0:
        # NetSuite refuses a negative invoice; Stripe credits it to the customer balance, so in NetSuite it is
        # what a credit is: a credit memo, left unapplied as the customer's credit.
        return _negative_invoice(invoice, lines, money, party, fm)
    body = _header(money, "entity", party, _invoice_date(invoice), _invoice_memo(invoice))
    if _utc_date(invoice.get("due_date")):
        body["dueDate"] = _utc_date(invoice.get("due_date"))
    items = _item_sublist(lines, money, ctx)
    body["item"] = items.body
    record = _record(
        INVOICE,
        external_id,
        body,
        invoice_id,
        fm,
        party=party,
        amount_minor=total,
        currency=money.code,
        residue_minor=items.residue_minor,
    )
    return _MappedInvoice(record, lines, money, party, ctx)


def _negative_invoice(
    invoice: Mapping, lines: list[_Line], money: _Money, party: CustomerRef, fm: FieldMapping
) -> _MappedInvoice:
    invoice_id = invoice["id"]
    external_id = _external_id(CREDIT_MEMO, invoice_id)
    ctx = _DocumentContext(invoice, fm, CREDIT_MEMO, external_id)
    credit_lines = [replace(line, amount_minor=-line.amount_minor) for line in lines]
    body = _header(
        money,
        "entity",
        party,
        _invoice_date(invoice),
        f"{_invoice_memo(invoice)}: a negative invoice, credited to the customer's balance in Stripe",
    )
    items = _item_sublist(credit_lines, money, ctx)
    body["item"] = items.body
    record = _record(
        CREDIT_MEMO,
        external_id,
        body,
        invoice_id,
        fm,
        party=party,
        amount_minor=-invoice["total"],
        currency=money.code,
        residue_minor=items.residue_minor,
    )
    return _MappedInvoice(record, credit_lines, money, party, ctx)


@_never_raises(INVOICE)
def map_invoice(invoice: Mapping, fm: FieldMapping, customer: Mapping | None = None) -> MappingResult:
    """A finalized Stripe Invoice -> NetSuite invoice (+ the credit memo closing it if void/uncollectible).

    Drafts are skipped. Lines: one per Stripe line (item from price/product mapping, proration item for
    prorations), then one negative line per discount, one line per tax rate; they sum to `total` exactly
    (and to its rounding at NetSuite's precision, with a rounding line). A negative invoice is a credit memo.
    """
    mapped = _map_invoice_document(invoice, fm, customer)
    if isinstance(mapped, Skip):
        return MappingResult(skips=[mapped])
    result = MappingResult(records=[mapped.record])
    if mapped.record.record_type == INVOICE:
        result.extend(_closing_records(invoice, mapped, fm))
    return result


# -- closing an invoice Stripe stopped collecting ---------------------------------------------------------


def _applied_credit_memo(
    source: Mapping,
    external_id: str,
    money: _Money,
    party: CustomerRef,
    fm: FieldMapping,
    lines: Sequence[_Line],
    tran_date: str | None,
    memo: str,
    created_from: str | None,
    apply_to: str | None,
    depends_on: Iterable[tuple[str, str]] = (),
    apply_minor: int | None = None,
) -> NetSuiteRecord:
    """A credit memo of `lines`, applied to `apply_to` (an invoice's external id) in full or for `apply_minor`,
    or left unapplied.

    The apply sublist always names the memo's invoice: `apply: false` says in so many words that the credit
    stays the customer's (NetSuite would otherwise apply a memo to the invoice it was created from).
    """
    ctx = _DocumentContext(source, fm, CREDIT_MEMO, external_id)
    items = _item_sublist(lines, money, ctx)
    body = _header(money, "entity", party, tran_date, memo)
    if created_from:
        body["createdFrom"] = {"externalId": created_from}
    body["item"] = items.body
    apply_lines = []
    if apply_to:
        whole = apply_minor is None or apply_minor >= sum(line.amount_minor for line in lines)
        amount = items.total if whole else money.amount(apply_minor)
        apply_lines.append({"doc": {"externalId": apply_to}, "apply": True, "amount": amount})
    if created_from and created_from != apply_to:
        apply_lines.append({"doc": {"externalId": created_from}, "apply": False})
    if apply_lines:
        body["apply"] = {"items": apply_lines}
    depends = [(INVOICE, eid) for eid in (created_from, apply_to) if eid]
    return _record(
        CREDIT_MEMO,
        external_id,
        body,
        source["id"],
        fm,
        party=party,
        depends_on=(*depends, *depends_on),
        amount_minor=sum(line.amount_minor for line in lines),
        currency=money.code,
        residue_minor=items.residue_minor,
    )


def _reversal_invoice(
    credit: NetSuiteRecord,
    lines: Sequence[_Line],
    money: _Money,
    party: CustomerRef,
    fm: FieldMapping,
    source: Mapping,
    tran_date: str | None,
    memo: str,
) -> NetSuiteRecord:
    """An invoice with a credit memo's lines, to which that memo is applied: the credit is undone in the books
    while both documents stay visible (a voided credit note, a write-off paid after all)."""
    external_id = reversal_external_id(credit.external_id)
    ctx = _DocumentContext(source, fm, INVOICE, external_id)
    items = _item_sublist(lines, money, ctx)
    body = _header(money, "entity", party, tran_date, memo)
    body["item"] = items.body
    return _record(
        INVOICE,
        external_id,
        body,
        source["id"],
        fm,
        party=party,
        amount_minor=credit.amount_minor,
        currency=money.code,
        residue_minor=items.residue_minor,
    )


def _written_off_minor(invoice: Mapping, paid_before: int) -> int:
    """What Stripe stopped collecting when it marked the invoice uncollectible."""
    if invoice.get("status") == "uncollectible":
        return invoice.get("amount_remaining") or 0
    # Paid after all: what was due, less what had been paid before the mark.
    return max((invoice.get("amount_due") or 0) - paid_before, 0)


def _closing_records(
    invoice: Mapping, mapped: _MappedInvoice, fm: FieldMapping, paid_before_mark: int = 0
) -> MappingResult:
    """Void: a credit memo reversing what is open, line by line (revenue and tax). Uncollectible: a write-off
    to `items.bad_debt` (revenue and tax stay) or nothing, per `uncollectible_invoices`. An invoice paid after
    being marked uncollectible keeps its write-off, reversed by an invoice, so the payment applies."""
    invoice_id = invoice["id"]
    external_id = void_credit_memo_external_id(invoice_id)
    status = invoice.get("status")
    marked_at = _dig(invoice, "status_transitions", "marked_uncollectible_at")
    if status == "void":
        if fm.void_invoices == "none":
            return _skip_closing(
                invoice_id,
                external_id,
                "the invoice is void but void_invoices is `none` in field_mapping.yaml: "
                "the NetSuite invoice stays open; close it by hand",
            )
        # What is still open is reversed (Stripe's amount_remaining): payments and pre-payment credit notes
        # already applied stay, and reversing them too would leave the customer a balance Stripe does not have.
        open_minor = invoice.get("amount_remaining") or 0
        if open_minor <= 0:
            return _skip_closing(invoice_id, external_id, "the invoice is void with nothing left open")
        lines = _share_of_lines(
            mapped.lines, open_minor, lambda: _Line(mapped.ctx.credit_item("the void line"), 0, "Void", 1)
        )
        when = _dig(invoice, "status_transitions", "voided_at")
        memo = f"Closes {_invoice_memo(invoice)}: voided in Stripe"
        return MappingResult(
            records=[
                _applied_credit_memo(
                    invoice,
                    external_id,
                    mapped.money,
                    mapped.party,
                    fm,
                    lines,
                    _utc_date(when) or mapped.record.body.get("tranDate"),
                    memo,
                    mapped.record.external_id,
                    mapped.record.external_id,
                )
            ]
        )
    if status != "uncollectible" and not (status == "paid" and marked_at):
        return MappingResult()
    if fm.uncollectible_invoices == "leave_open":
        return _skip_closing(
            invoice_id,
            external_id,
            "the invoice is uncollectible and uncollectible_invoices is `leave_open`: "
            "the NetSuite invoice stays open for collections",
        )
    written_off = _written_off_minor(invoice, paid_before_mark)
    if written_off <= 0:
        return _skip_closing(invoice_id, external_id, "the invoice was marked uncollectible with nothing left open")
    item_id = mapped.ctx.configured_item("bad_debt", "writing off uncollectible invoices")
    lines = [_Line(item_id, written_off, f"Bad debt: {_invoice_memo(invoice)} marked uncollectible in Stripe", 1)]
    when = _utc_date(marked_at) or mapped.record.body.get("tranDate")
    memo = f"Writes off {_invoice_memo(invoice)}: marked uncollectible in Stripe"
    invoice_eid = mapped.record.external_id
    if status == "uncollectible":
        write_off = _applied_credit_memo(
            invoice, external_id, mapped.money, mapped.party, fm, lines, when, memo, invoice_eid, invoice_eid
        )
        return MappingResult(records=[write_off])
    # Paid after the write-off: the memo is applied to an invoice reversing it, not to the paid invoice.
    reversal_eid = reversal_external_id(external_id)
    write_off = _applied_credit_memo(
        invoice, external_id, mapped.money, mapped.party, fm, lines, when, memo, invoice_eid, reversal_eid
    )
    paid_at = _utc_date(_dig(invoice, "status_transitions", "paid_at")) or when
    reversal = _reversal_invoice(
        write_off,
        lines,
        mapped.money,
        mapped.party,
        fm,
        invoice,
        paid_at,
        f"Reverses the write-off of {_invoice_memo(invoice)}: paid after being marked uncollectible",
    )
    return MappingResult(records=[reversal, write_off])


def _skip_closing(invoice_id: str, external_id: str, reason: str) -> MappingResult:
    return MappingResult(skips=[Skip(CREDIT_MEMO, invoice_id, reason, external_id)])


# -- payments ------------------------------------------------------------------------------------------

# InvoicePayment kinds whose money passed through Stripe; any other (a payment record of money received
# elsewhere) is out of band and never goes to Undeposited Funds.
STRIPE_PAYMENT_TYPES = ("payment_intent", "charge")


def _charge_id_of_payment(invoice_payment: Mapping, charge: Mapping | None) -> str | None:
    if charge is not None:
        return id_of(charge)
    payment = invoice_payment.get("payment") or {}
    return id_of(payment.get("charge")) if payment.get("type") == "charge" else None


def _is_stripe_payment(invoice_payment: Mapping) -> bool:
    return (invoice_payment.get("payment") or {}).get("type", "payment_intent") in STRIPE_PAYMENT_TYPES


def _payable_minor(invoice: Mapping) -> int:
    """What payments can apply to the NetSuite invoice: its total less pre-payment credit notes (their memos
    are applied to it)."""
    return (invoice.get("total") or 0) - (invoice.get("pre_payment_credit_notes_amount") or 0)


@_never_raises(CUSTOMER_PAYMENT)
def map_invoice_payment(
    invoice_payment: Mapping,
    invoice: Mapping,
    charge: Mapping | None,
    fm: FieldMapping,
    customer: Mapping | None = None,
    apply_limit: int | None = None,
    also_apply: Sequence[tuple[str, int]] = (),
) -> MappingResult:
    """A paid Stripe InvoicePayment -> customer payment applied to the invoice.

    External id `stripe-<charge id>` when the payment has a charge (pass it, e.g. the PaymentIntent's
    latest charge), else `stripe-<inpay id>`. Unpaid (open/failed/canceled) payments are skipped. The payment
    applies at most `apply_limit` (default: what the invoice has payable); the rest of a larger payment (a
    prior debit balance Stripe added to the amount due) is applied to `also_apply` (the invoices holding that
    debit), or else stays unapplied on the payment, as the customer's.
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
    limit = _payable_minor(invoice) if apply_limit is None else apply_limit
    applied = max(min(amount, limit), 0)
    extra_applies = [(eid, share) for eid, share in also_apply if share > 0]
    applied += sum(share for _, share in extra_applies)
    party = _party(invoice.get("customer"), fm, customer, CUSTOMER_PAYMENT, external_id, source_id)
    # The date money was collected, most precise first: the InvoicePayment's paid_at, then the charge.
    paid_ts = (
        _dig(invoice_payment, "status_transitions", "paid_at")
        or _dig(charge, "created")
        or invoice_payment.get("created")
    )
    memo = f"Stripe payment {source_id} for {_invoice_memo(invoice)}"
    if applied < amount:
        memo += f"; {format_amount(amount - applied, money.code)} beyond the invoice stays the customer's credit"
    body = _header(money, "customer", party, _utc_date(paid_ts), memo)
    body["payment"] = money.amount(amount)
    if (rate := stripe_exchange_rate(charge)) is not None:
        body["exchangeRate"] = rate
    on_invoice = applied - sum(share for _, share in extra_applies)
    body["apply"] = {
        "items": [
            {"doc": {"externalId": invoice_eid}, "apply": on_invoice > 0, "amount": money.amount(on_invoice)},
            *(
                {"doc": {"externalId": eid}, "apply": True, "amount": money.amount(share)}
                for eid, share in extra_applies
            ),
        ]
    }
    record = _record(
        CUSTOMER_PAYMENT,
        external_id,
        body,
        source_id,
        fm,
        party=party,
        depends_on=((INVOICE, invoice_eid), *((INVOICE, eid) for eid, _ in extra_applies)),
        amount_minor=amount,
        currency=money.code,
        fallbacks={"account": _account_ref(fm.accounts.payments)},
    )
    return MappingResult(records=[record])


def _out_of_band_payment(invoice: Mapping, mapped: _MappedInvoice, amount: int, fm: FieldMapping) -> MappingResult:
    """Money Stripe recorded as paid outside it (`paid_out_of_band`, a payment record): never Undeposited Funds,
    which holds only cash that passed through Stripe. Per `out_of_band_payments`: a customer payment to
    `accounts.out_of_band`, or a credit memo on `items.out_of_band`; either closes the invoice."""
    invoice_id = invoice["id"]
    external_id = out_of_band_external_id(invoice_id)
    money, party = mapped.money, mapped.party
    paid_at = _utc_date(_dig(invoice, "status_transitions", "paid_at")) or mapped.record.body.get("tranDate")
    memo = f"{_invoice_memo(invoice)} paid outside Stripe"
    invoice_eid = mapped.record.external_id
    if fm.out_of_band_payments == "credit_memo":
        item_id = mapped.ctx.configured_item("out_of_band", "invoices paid outside Stripe")
        line = _Line(item_id, amount, memo, 1)
        return MappingResult(
            records=[
                _applied_credit_memo(
                    invoice, external_id, money, party, fm, [line], paid_at, memo, invoice_eid, invoice_eid
                )
            ]
        )
    if not fm.accounts.out_of_band:
        raise _Blocked(
            make_issue(
                "UNMAPPED_ACCOUNT",
                record_type=CUSTOMER_PAYMENT,
                external_id=external_id,
                source_id=invoice_id,
                field="accounts.out_of_band",
                what="money paid outside Stripe",
                how="set `accounts.out_of_band` in field_mapping.yaml to a clearing account (never Undeposited "
                "Funds), or `out_of_band_payments: credit_memo` with `items.out_of_band`",
            )
        )
    body = _header(money, "customer", party, paid_at, memo)
    body["payment"] = money.amount(amount)
    body["account"] = reference(fm.accounts.out_of_band)
    body["apply"] = {"items": [{"doc": {"externalId": invoice_eid}, "apply": True, "amount": money.amount(amount)}]}
    record = _record(
        CUSTOMER_PAYMENT,
        external_id,
        body,
        invoice_id,
        fm,
        party=party,
        depends_on=((INVOICE, invoice_eid),),
        amount_minor=amount,
        currency=money.code,
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
    """A succeeded Stripe charge that belongs to no invoice -> a sale: an invoice `stripe-<ch>-sale` and the customer
    payment `stripe-<ch>` paying it (`invoiceless_charges: sale`), or an unapplied payment (`customer_credit`).

    Stripe holds no receivable for such a charge, so neither does NetSuite in the default mode. The Charge object
    no longer says whether it paid an invoice: call this only for charges no InvoicePayment refers to. Failed,
    pending and uncaptured charges are skipped.
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
    when = _utc_date(charge.get("created"))
    body = _header(money, "customer", party, when, memo)
    body["payment"] = money.amount(amount)
    if (rate := stripe_exchange_rate(charge)) is not None:
        body["exchangeRate"] = rate
    result = MappingResult()
    depends: tuple[tuple[str, str], ...] = ()
    if fm.invoiceless_charges == "sale":
        sale = _sale_invoice(charge, amount, money, party, fm, when, memo)
        result.records.append(sale)
        body["apply"] = {
            "items": [{"doc": {"externalId": sale.external_id}, "apply": True, "amount": money.amount(amount)}]
        }
        depends = ((INVOICE, sale.external_id),)
    result.records.append(
        _record(
            CUSTOMER_PAYMENT,
            external_id,
            body,
            charge_id,
            fm,
            party=party,
            depends_on=depends,
            amount_minor=amount,
            currency=money.code,
            fallbacks={"account": _account_ref(fm.accounts.payments)},
        )
    )
    return result


def _sale_line(charge: Mapping, amount: int, fm: FieldMapping, external_id: str) -> _Line:
    ctx = _DocumentContext(charge, fm, INVOICE, external_id)
    item_id = ctx.configured_item("default", "charges without a Stripe invoice")
    return _Line(item_id, amount, str(charge.get("description") or f"Stripe charge {charge['id']}"), 1)


def _sale_invoice(
    charge: Mapping, amount: int, money: _Money, party: CustomerRef, fm: FieldMapping, when: str | None, memo: str
) -> NetSuiteRecord:
    external_id = sale_invoice_external_id(charge["id"])
    ctx = _DocumentContext(charge, fm, INVOICE, external_id)
    items = _item_sublist([_sale_line(charge, amount, fm, external_id)], money, ctx)
    body = _header(money, "entity", party, when, memo)
    body["item"] = items.body
    return _record(
        INVOICE,
        external_id,
        body,
        charge["id"],
        fm,
        party=party,
        amount_minor=amount,
        currency=money.code,
        residue_minor=items.residue_minor,
    )


# -- credit notes --------------------------------------------------------------------------------------


def _credit_note_memo(note: Mapping, invoice: Mapping) -> str:
    number = note.get("number")
    label = f"Stripe credit note {number} ({note['id']})" if number else f"Stripe credit note {note['id']}"
    return f"{label} for {_invoice_memo(invoice)}"


def _credit_note_lines(note: Mapping, mapped: _MappedInvoice, fm: FieldMapping, external_id: str) -> list[_Line]:
    """The credit note's own lines: each credits its invoice line's item, with its share of discounts and tax."""
    ctx = _DocumentContext(note, fm, CREDIT_MEMO, external_id)
    invoice_lines = {line.get("id"): line for line in _list(_dig(mapped.ctx.document, "lines"))}

    def item_of(line: Mapping) -> str:
        invoice_line = invoice_lines.get(id_of(line.get("invoice_line_item")) or "")
        if invoice_line is not None:
            return mapped.ctx.item_line_item(invoice_line)
        return ctx.credit_item(f"credit note line {line.get('id')} (not an invoice line)")

    return _document_lines(ctx.all_lines(note.get("lines")), ctx, item_of)


@_never_raises(CREDIT_MEMO)
def map_credit_note(
    note: Mapping, invoice: Mapping, fm: FieldMapping, customer: Mapping | None = None
) -> MappingResult:
    """A Stripe credit note -> credit memo `stripe-cn_…` with the note's lines (items, discounts, tax).

    Before payment (pre_payment) it is applied to the invoice, lowering what is due as in Stripe. After payment
    it stays unapplied: its refunded part is paid out by the refund's customer refund (`map_refund` with
    `credit_note`), its out-of-band part by a customer refund from `accounts.out_of_band` (`stripe-cn_…-oob`),
    and what Stripe credited to the customer balance stays on it as the customer's credit. A voided credit
    note's memo is applied to an invoice reversing it (`stripe-cn_…-reversal`), so the invoice owes again.
    """
    note_id = note["id"]
    external_id = _external_id(CREDIT_MEMO, note_id)
    mapped = _map_invoice_document(invoice, fm, customer)
    if isinstance(mapped, Skip) or mapped.record.record_type != INVOICE:
        reason = "its invoice is a draft" if isinstance(mapped, Skip) else "its invoice is negative (a credit memo)"
        return MappingResult(skips=[Skip(CREDIT_MEMO, note_id, reason, external_id)])
    money, party = mapped.money, mapped.party
    if normalize_currency(note.get("currency") or invoice.get("currency")) != money.code:
        raise _Blocked(
            make_issue(
                "INVALID_STRIPE_DATA",
                record_type=CREDIT_MEMO,
                external_id=external_id,
                source_id=note_id,
                field="currency",
                value=note.get("currency"),
                expected=f"the invoice's currency {invoice.get('currency')}",
            )
        )
    total = _minor(note.get("total"), CREDIT_MEMO, external_id, note_id, "total")
    lines = _credit_note_lines(note, mapped, fm, external_id)
    _require_lines_sum(lines, total, money, _DocumentContext(note, fm, CREDIT_MEMO, external_id))
    invoice_eid = mapped.record.external_id
    when = _utc_date(note.get("effective_at") or note.get("created"))
    memo = _credit_note_memo(note, invoice)
    pre_payment = note.get("pre_payment_amount")
    pre_payment = total if pre_payment is None and note.get("type") == "pre_payment" else (pre_payment or 0)
    if note.get("status") == "void":
        reversal_eid = reversal_external_id(external_id)
        credit = _applied_credit_memo(
            note, external_id, money, party, fm, lines, when, memo, invoice_eid, reversal_eid, apply_minor=total
        )
        reversal = _reversal_invoice(
            credit,
            lines,
            money,
            party,
            fm,
            note,
            _utc_date(note.get("voided_at")) or when,
            f"Reverses {memo}: voided in Stripe",
        )
        return MappingResult(records=[reversal, credit])
    credit = _applied_credit_memo(
        note,
        external_id,
        money,
        party,
        fm,
        lines,
        when,
        memo,
        invoice_eid,
        invoice_eid if pre_payment else None,
        apply_minor=pre_payment,
    )
    result = MappingResult(records=[credit])
    out_of_band = note.get("out_of_band_amount") or 0
    if out_of_band > 0:
        result.records.append(_out_of_band_refund(note, credit, out_of_band, money, party, fm, when))
    return result


def _out_of_band_refund(
    note: Mapping,
    credit: NetSuiteRecord,
    amount: int,
    money: _Money,
    party: CustomerRef,
    fm: FieldMapping,
    tran_date: str | None,
) -> NetSuiteRecord:
    """The part of a credit note the merchant paid back outside Stripe: a customer refund of the credit memo
    from `accounts.out_of_band`, so it never touches the Stripe cash accounts."""
    external_id = out_of_band_external_id(note["id"])
    if not fm.accounts.out_of_band:
        raise _Blocked(
            make_issue(
                "UNMAPPED_ACCOUNT",
                record_type=CUSTOMER_REFUND,
                external_id=external_id,
                source_id=note["id"],
                field="accounts.out_of_band",
                what="money refunded outside Stripe",
                how="set `accounts.out_of_band` in field_mapping.yaml to a clearing account (never Undeposited Funds)",
            )
        )
    body = _header(money, "customer", party, tran_date, f"Refunded outside Stripe: {credit.body.get('memo')}")
    body["account"] = reference(fm.accounts.out_of_band)
    body["apply"] = {
        "items": [{"doc": {"externalId": credit.external_id}, "apply": True, "amount": money.amount(amount)}]
    }
    return _record(
        CUSTOMER_REFUND,
        external_id,
        body,
        note["id"],
        fm,
        party=party,
        depends_on=((CREDIT_MEMO, credit.external_id),),
        amount_minor=amount,
        currency=money.code,
    )


# -- refunds -------------------------------------------------------------------------------------------


@_never_raises(CUSTOMER_REFUND)
def map_refund(
    refund: Mapping,
    charge: Mapping | None,
    invoice: Mapping | None,
    fm: FieldMapping,
    customer: Mapping | None = None,
    credit_note: Mapping | None = None,
) -> MappingResult:
    """A succeeded Stripe refund -> NetSuite records giving the money back.

    Refund made by a credit note: a customer refund `stripe-<re>` applying the note's credit memo. Refund of an
    invoiced charge: a credit memo `stripe-<re>-cm` reversing the invoice's lines by their share of the refund
    (items, discounts and tax, largest remainder), left unapplied, and a customer refund applying it. Refund of
    an invoice-less charge: a customer refund applying the charge's payment `stripe-<ch>`. Pending, failed and
    canceled refunds are skipped.
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
    # so a refund of an invoiced charge pays out a credit memo: the credit note's, or one of its own.
    if credit_note is not None:
        applies_to = (CREDIT_MEMO, _external_id(CUSTOMER_REFUND, credit_note["id"]))
        note_label = credit_note.get("number") or credit_note["id"]
        memo = f"Stripe refund {refund_id} of charge {charge_id} (credit note {note_label})"
    elif invoice is not None:
        credit_memo = _refund_credit_memo(refund, charge_id, invoice, money, amount, party, tran_date, fm, customer)
        result.records.append(credit_memo)
        applies_to = (CREDIT_MEMO, credit_memo.external_id)
        memo = f"Stripe refund {refund_id} of charge {charge_id} ({_invoice_memo(invoice)})"
    elif fm.invoiceless_charges == "sale" and isinstance(charge, Mapping):
        # The sale's payment is applied in full, so the refund pays out a credit memo reversing the sale.
        sale_eid = sale_invoice_external_id(charge_id)
        cm_eid = refund_credit_memo_external_id(refund_id)
        line = replace(_sale_line(charge, amount, fm, cm_eid), description=f"Refund {refund_id} of charge {charge_id}")
        credit_memo = _applied_credit_memo(
            refund,
            cm_eid,
            money,
            party,
            fm,
            [line],
            tran_date,
            f"Stripe refund {refund_id} of charge {charge_id}",
            sale_eid,
            None,
        )
        result.records.append(credit_memo)
        applies_to = (CREDIT_MEMO, cm_eid)
        memo = f"Stripe refund {refund_id} of charge {charge_id}"
    else:
        # the charge's payment (record type given only for error reports; the id is the payment's)
        applies_to = (CUSTOMER_PAYMENT, _external_id(CUSTOMER_REFUND, charge_id))
        memo = f"Stripe refund {refund_id} of charge {charge_id}"
    body = _header(money, "customer", party, tran_date, memo)
    if (rate := stripe_exchange_rate(refund)) is not None:
        body["exchangeRate"] = rate
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
    customer: Mapping | None,
) -> NetSuiteRecord:
    refund_id = refund["id"]
    external_id = refund_credit_memo_external_id(refund_id)
    invoice_eid = _external_id(CREDIT_MEMO, invoice["id"])
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
    ctx = _DocumentContext(refund, fm, CREDIT_MEMO, external_id)
    mapped = _map_invoice_document(invoice, fm, customer)
    invoice_lines = mapped.lines if isinstance(mapped, _MappedInvoice) and mapped.record.record_type == INVOICE else []
    lines = _share_of_lines(
        invoice_lines,
        amount,
        lambda: _Line(
            ctx.credit_item("the refund credit memo line"), 0, f"Refund {refund_id} of charge {charge_id}", 1
        ),
    )
    # Left unapplied, whatever the invoice still owes: Stripe's refund does not change the invoice's amount
    # remaining, and the customer refund takes this credit out at once.
    return _applied_credit_memo(
        refund,
        external_id,
        money,
        party,
        fm,
        lines,
        tran_date,
        f"Stripe refund {refund_id} of {_invoice_memo(invoice)}",
        invoice_eid,
        None,
    )


# -- disputes (chargebacks) -------------------------------------------------------------------------------

DISPUTE_WITHDRAWN = "dispute"  # balance transaction reporting categories of a dispute's two money movements
DISPUTE_REINSTATED = "dispute_reversal"


def dispute_movement(dispute: Mapping, category: str) -> Mapping | None:
    """The dispute's balance transaction of `category` (withdrawn or reinstated), or None (an inquiry or warning
    moves no money; a dispute not yet won has no reinstatement)."""
    for txn in _list(dispute.get("balance_transactions")):
        if isinstance(txn, Mapping) and txn.get("reporting_category") == category:
            return txn
    # Older objects without reporting_category: the first transaction withdraws, a second one reinstates.
    txns = [t for t in _list(dispute.get("balance_transactions")) if isinstance(t, Mapping)]
    if txns and not any(t.get("reporting_category") for t in txns):
        index = 0 if category == DISPUTE_WITHDRAWN else 1
        return txns[index] if len(txns) > index else None
    return None


@_never_raises(CUSTOMER_REFUND)
def map_dispute(
    dispute: Mapping, charge: Mapping | None, fm: FieldMapping, customer: Mapping | None = None
) -> MappingResult:
    """A Stripe dispute whose funds moved -> the chargeback in the books, dated when the money moved.

    Funds withdrawn: a credit memo `stripe-<dp>-cm` on `items.dispute` (unapplied: the invoice stays paid, as in
    Stripe) and a customer refund `stripe-<dp>` paying it out from `accounts.refunds`, which the payout's
    deposit clears with a cash-back line. Funds reinstated (dispute won): the reverse, an invoice
    `stripe-<dp>-cm-reversal` on the same item and a customer payment `stripe-<dp>-reinstated` into Undeposited
    Funds paying it, which the payout's deposit takes in. Inquiries and warnings move no money: skipped. The
    dispute fee and its return are lines of the payout's deposit, not of these documents.
    """
    dispute_id = dispute["id"]
    refund_eid = _external_id(CUSTOMER_REFUND, dispute_id)
    withdrawn = dispute_movement(dispute, DISPUTE_WITHDRAWN)
    if withdrawn is None:
        return MappingResult(
            skips=[
                Skip(
                    CUSTOMER_REFUND,
                    dispute_id,
                    f"dispute {dispute_id} is {dispute.get('status')}: no funds were withdrawn, nothing to book",
                    refund_eid,
                )
            ]
        )
    memo_eid = refund_credit_memo_external_id(dispute_id)
    money = _money(dispute.get("currency"), fm, CREDIT_MEMO, memo_eid, dispute_id)
    amount = _minor(dispute.get("amount"), CREDIT_MEMO, memo_eid, dispute_id, "amount")
    charge_id = id_of(dispute.get("charge")) or "?"
    party = _party(_dig(charge, "customer") or customer, fm, customer, CREDIT_MEMO, memo_eid, dispute_id)
    ctx = _DocumentContext(dispute, fm, CREDIT_MEMO, memo_eid)
    item_id = ctx.configured_item("dispute", "disputes (chargebacks)")
    label = f"Stripe dispute {dispute_id} ({dispute.get('reason') or 'chargeback'}) of charge {charge_id}"
    line = _Line(item_id, amount, f"Chargeback: {label}", 1)
    withdrawn_on = _utc_date(withdrawn.get("created")) or _utc_date(dispute.get("created"))
    taken = f"{label}: funds withdrawn"
    credit_memo = _applied_credit_memo(dispute, memo_eid, money, party, fm, [line], withdrawn_on, taken, None, None)
    money_out = _settling(
        CUSTOMER_REFUND, refund_eid, dispute, (CREDIT_MEMO, memo_eid), amount, money, party, fm, withdrawn_on, taken
    )
    result = MappingResult(records=[credit_memo, money_out])
    reinstated = dispute_movement(dispute, DISPUTE_REINSTATED)
    if reinstated is None:
        return result
    reinstated_on = _utc_date(reinstated.get("created"))
    won = f"{label}: funds reinstated (dispute won)"
    invoice = _reversal_invoice(credit_memo, [line], money, party, fm, dispute, reinstated_on, won)
    payment_eid = dispute_reinstated_external_id(dispute_id)
    money_in = _settling(
        CUSTOMER_PAYMENT,
        payment_eid,
        dispute,
        (INVOICE, invoice.external_id),
        amount,
        money,
        party,
        fm,
        reinstated_on,
        won,
    )
    result.records.extend([invoice, money_in])
    return result


def _settling(
    record_type: str,
    external_id: str,
    source: Mapping,
    applies_to: tuple[str, str],
    amount: int,
    money: _Money,
    party: CustomerRef,
    fm: FieldMapping,
    tran_date: str | None,
    memo: str,
) -> NetSuiteRecord:
    """The money of a dispute moving: a customer refund paying out a credit memo (funds withdrawn, from
    `accounts.refunds`) or a customer payment paying an invoice (funds reinstated, into Undeposited Funds), in full."""
    body = _header(money, "customer", party, tran_date, memo)
    if record_type == CUSTOMER_PAYMENT:
        body["payment"] = money.amount(amount)
    body["apply"] = {"items": [{"doc": {"externalId": applies_to[1]}, "apply": True, "amount": money.amount(amount)}]}
    account = fm.accounts.payments if record_type == CUSTOMER_PAYMENT else fm.accounts.refunds
    return _record(
        record_type,
        external_id,
        body,
        source["id"],
        fm,
        party=party,
        depends_on=(applies_to,),
        amount_minor=amount,
        currency=money.code,
        fallbacks={"account": _account_ref(account)},
    )


# -- the customer balance ---------------------------------------------------------------------------------


@dataclass
class _Credit:
    """An entry on a Stripe customer balance (a credit, or a debit the customer owes) and the NetSuite document
    that holds it (a credit memo, or an invoice for a debit; None: not booked)."""

    external_id: str | None
    origin: str  # what it came from, for messages
    left: int  # minor units not yet used by an invoice
    adjustment: Mapping | None = None  # a balance transaction made by hand, booked when an invoice uses it


def _credit_source(txn: Mapping) -> _Credit:
    amount = -int(txn.get("amount") or 0)
    kind = txn.get("type")
    if kind == "credit_note" and id_of(txn.get("credit_note")):
        note = id_of(txn.get("credit_note"))
        return _Credit(netsuite_external_id(note), f"credit note {note}", amount)
    if kind == "applied_to_invoice" and id_of(txn.get("invoice")):
        # A negative invoice credited to the balance at finalization: its credit memo carries the credit.
        invoice_id = id_of(txn.get("invoice"))
        return _Credit(netsuite_external_id(invoice_id), f"negative invoice {invoice_id}", amount)
    if kind == "adjustment":
        return _Credit(_external_id(CREDIT_MEMO, txn["id"]), f"balance adjustment {txn['id']}", amount, txn)
    return _Credit(None, f"a balance transaction of type {kind} ({txn.get('id')})", amount)


def _debit_source(txn: Mapping) -> _Credit:
    amount = int(txn.get("amount") or 0)
    kind = txn.get("type")
    if kind == "adjustment":
        return _Credit(_external_id(INVOICE, txn["id"]), f"balance adjustment {txn['id']}", amount, txn)
    if kind == "invoice_too_small" and id_of(txn.get("invoice")):
        # Too small to charge: Stripe carries it to the next invoice, whose payment then pays the small one.
        invoice_id = id_of(txn.get("invoice"))
        return _Credit(netsuite_external_id(invoice_id), f"invoice {invoice_id} (too small to charge)", amount)
    return _Credit(None, f"a balance transaction of type {kind} ({txn.get('id')})", amount)


@dataclass
class _BalanceUse:
    """What an invoice took from the customer's balance at finalization."""

    txn: Mapping | None = None  # its applied_to_invoice balance transaction
    credits: list[tuple[_Credit, int]] = field(default_factory=list)  # credit used to pay it
    debits: list[tuple[_Credit, int]] = field(default_factory=list)  # debit added to what it asked the card for


def _take(queue: list[_Credit], need: int) -> tuple[list[tuple[_Credit, int]], int]:
    """Spend `need` from the queue, first in first out; what was taken from each, and what the queue lacked."""
    taken = []
    for entry in queue:
        if need == 0:
            break
        take = min(entry.left, need)
        if take:
            entry.left -= take
            need -= take
            taken.append((entry, take))
    return taken, need


def _balance_use(invoice_id: str, transactions: Sequence[Mapping]) -> _BalanceUse:
    """Replays the customer's balance history, oldest first: a credit (negative amount) first settles what the
    customer owes, a debit first spends the customer's credit, each first in, first out; the rest waits on the
    balance. Returns what the transaction applying the balance to `invoice_id` took."""
    credits: list[_Credit] = []
    debits: list[_Credit] = []
    for txn in transactions:
        amount = int(txn.get("amount") or 0)
        ours = txn.get("type") == "applied_to_invoice" and id_of(txn.get("invoice")) == invoice_id
        if amount < 0:
            settled, rest = _take(debits, -amount)
            if rest:
                credits.append(replace(_credit_source(txn), left=rest))
            if ours:
                return _BalanceUse(txn, debits=settled)
        elif amount > 0:
            used, rest = _take(credits, amount)
            if rest:
                debits.append(replace(_debit_source(txn), left=rest))
            if ours:
                return _BalanceUse(txn, credits=used)
    return _BalanceUse()


@_never_raises(CUSTOMER_PAYMENT)
def map_balance_application(
    invoice: Mapping, transactions: Sequence[Mapping], fm: FieldMapping, customer: Mapping | None = None
) -> MappingResult:
    """The part of an invoice Stripe paid from the customer's credit balance -> a customer payment of 0 that
    applies the credit memos holding that credit (credit notes, negative invoices, adjustments) to the invoice,
    first in, first out, as NetSuite's payment `credit` sublist does. A credit given on the balance by hand
    becomes a credit memo on `items.customer_balance` when an invoice uses it."""
    invoice_id = invoice["id"]
    use = _balance_use(invoice_id, transactions)
    txn, used = use.txn, use.credits
    if txn is None or not used:
        return MappingResult()
    external_id = _external_id(CUSTOMER_PAYMENT, txn["id"])
    money = _money(invoice.get("currency"), fm, CUSTOMER_PAYMENT, external_id, txn["id"])
    party = _party(invoice.get("customer"), fm, customer, CUSTOMER_PAYMENT, external_id, txn["id"])
    total_used = sum(amount for _, amount in used)
    unbooked = [credit for credit, _ in used if credit.external_id is None]
    if unbooked:
        raise _unbooked_balance(unbooked[0], total_used, money, CUSTOMER_PAYMENT, external_id, txn["id"])
    when = _utc_date(txn.get("created")) or _invoice_date(invoice)
    result = MappingResult()
    for credit, _ in used:
        if credit.adjustment is not None:
            result.records.append(_adjustment_credit_memo(credit, money, party, fm, invoice))
    invoice_eid = _external_id(INVOICE, invoice_id)
    memo = f"{_invoice_memo(invoice)}: {format_amount(total_used, money.code)} paid from the customer's Stripe balance"
    body = _header(money, "customer", party, when, memo)
    body["payment"] = money.amount(0)
    body["credit"] = {
        "items": [
            {"doc": {"externalId": credit.external_id}, "apply": True, "amount": money.amount(amount)}
            for credit, amount in used
        ]
    }
    body["apply"] = {"items": [{"doc": {"externalId": invoice_eid}, "apply": True, "amount": money.amount(total_used)}]}
    result.records.append(
        _record(
            CUSTOMER_PAYMENT,
            external_id,
            body,
            txn["id"],
            fm,
            party=party,
            depends_on=((INVOICE, invoice_eid), *((CREDIT_MEMO, c.external_id) for c, _ in used if c.external_id)),
            amount_minor=0,
            currency=money.code,
            fallbacks={"account": _account_ref(fm.accounts.payments)},
        )
    )
    return result


def _unbooked_balance(entry: _Credit, amount: int, money: _Money, record_type: str, external_id: str, source: str):
    return _Blocked(
        make_issue(
            "UNBOOKED_BALANCE",
            record_type=record_type,
            external_id=external_id,
            source_id=source,
            field="credit",
            value=money.amount(amount),
            amount=format_amount(amount, money.code),
            origin=entry.origin,
        )
    )


@_never_raises(INVOICE)
def _debit_invoices(
    invoice: Mapping, debits: Sequence[tuple[_Credit, int]], fm: FieldMapping, customer: Mapping | None
) -> MappingResult:
    """Debits the customer owed on its Stripe balance (charged by hand) that this invoice's amount due carried: an
    invoice `stripe-<cbtxn>` on `items.customer_balance` each, which the invoice's payment then pays."""
    result = MappingResult()
    for debit, amount in debits:
        if debit.external_id is None:
            raise _unbooked_balance(
                debit,
                amount,
                _money(invoice.get("currency"), fm, INVOICE, "", invoice["id"]),
                INVOICE,
                netsuite_external_id(invoice["id"]),
                invoice["id"],
            )
        txn = debit.adjustment
        if txn is None:
            continue  # an invoice too small to charge: already an invoice of its own
        money = _money(invoice.get("currency"), fm, INVOICE, debit.external_id, txn["id"])
        party = _party(invoice.get("customer"), fm, customer, INVOICE, debit.external_id, txn["id"])
        ctx = _DocumentContext(txn, fm, INVOICE, debit.external_id)
        item_id = ctx.configured_item("customer_balance", "amounts charged on the Stripe customer balance by hand")
        line = _Line(
            item_id, int(txn.get("amount") or 0), str(txn.get("description") or f"Stripe balance {txn['id']}"), 1
        )
        items = _item_sublist([line], money, ctx)
        body = _header(
            money,
            "entity",
            party,
            _utc_date(txn.get("created")),
            f"Charged on the Stripe customer balance ({txn['id']})",
        )
        body["item"] = items.body
        result.records.append(
            _record(
                INVOICE,
                debit.external_id,
                body,
                txn["id"],
                fm,
                party=party,
                amount_minor=line.amount_minor,
                currency=money.code,
                residue_minor=items.residue_minor,
            )
        )
    return result


def _adjustment_credit_memo(
    credit: _Credit, money: _Money, party: CustomerRef, fm: FieldMapping, invoice: Mapping
) -> NetSuiteRecord:
    txn = credit.adjustment or {}
    ctx = _DocumentContext(txn, fm, CREDIT_MEMO, credit.external_id or "")
    item_id = ctx.configured_item("customer_balance", "credits given on the Stripe customer balance by hand")
    amount = -int(txn.get("amount") or 0)
    description = txn.get("description") or f"Stripe customer balance adjustment {txn.get('id')}"
    line = _Line(item_id, amount, str(description), 1)
    return _applied_credit_memo(
        txn,
        credit.external_id or "",
        money,
        party,
        fm,
        [line],
        _utc_date(txn.get("created")),
        f"Credit on the Stripe customer balance ({txn.get('id')})",
        None,
        None,
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


def _paid_at(invoice_payment: Mapping) -> int:
    return _dig(invoice_payment, "status_transitions", "paid_at") or invoice_payment.get("created") or 0


@_never_raises(INVOICE)
def _invoice_and_closing(
    invoice: Mapping, fm: FieldMapping, customer: Mapping | None, stripe_payments: Sequence[Mapping]
) -> MappingResult:
    mapped = _map_invoice_document(invoice, fm, customer)
    if isinstance(mapped, Skip):
        return MappingResult(skips=[mapped])
    result = MappingResult(records=[mapped.record])
    if mapped.record.record_type != INVOICE:
        return result
    marked_at = _dig(invoice, "status_transitions", "marked_uncollectible_at") or 0
    paid_before_mark = sum(p.get("amount_paid") or 0 for p in stripe_payments if _paid_at(p) < marked_at)
    result.extend(_closing_records(invoice, mapped, fm, paid_before_mark))
    return result


@_never_raises(CUSTOMER_PAYMENT)
def _out_of_band(invoice: Mapping, fm: FieldMapping, customer: Mapping | None, amount: int) -> MappingResult:
    mapped = _map_invoice_document(invoice, fm, customer)
    if isinstance(mapped, Skip) or mapped.record.record_type != INVOICE:
        return MappingResult()
    return _out_of_band_payment(invoice, mapped, amount, fm)


def map_invoice_tree(
    invoice: Mapping,
    fm: FieldMapping,
    *,
    customer: Mapping | None = None,
    invoice_payments: Iterable[Mapping] = (),
    charges: Iterable[Mapping] = (),
    refunds: Iterable[Mapping] = (),
    credit_notes: Iterable[Mapping] = (),
    balance_transactions: Sequence[Mapping] = (),
    disputes: Iterable[Mapping] = (),
    with_customer: bool = True,
) -> MappingResult:
    """An invoice with its customer, payments, credit notes and refunds -> every NetSuite record, in dependency
    order. `charges` are the charges behind the invoice's payments; `refunds` those of these charges.
    `with_customer=False` leaves the customer to the caller (a partition maps each customer once)."""
    charges_by_id = {c["id"]: c for c in charges if isinstance(c, Mapping) and c.get("id")}
    result = MappingResult()
    if invoice.get("status") == "draft":
        return map_invoice(invoice, fm, customer)  # just the Skip; a draft's customer needs no record yet
    customer_obj = invoice.get("customer") if isinstance(invoice.get("customer"), Mapping) else customer
    if with_customer and isinstance(customer_obj, Mapping):
        result.extend(map_customer(customer_obj, fm, currency=invoice.get("currency")))
    payments = sorted(invoice_payments, key=_paid_at)
    through_stripe = [p for p in payments if _is_stripe_payment(p)]
    paid_through_stripe = [p for p in through_stripe if p.get("status") == "paid"]
    result.extend(_invoice_and_closing(invoice, fm, customer, paid_through_stripe))
    use = _balance_use(invoice["id"], balance_transactions) if balance_transactions else _BalanceUse()
    if use.debits:
        result.extend(_debit_invoices(invoice, use.debits, fm, customer))
    # Debits the invoice's amount due carried, still to be paid by its payments: [external id, amount left].
    debits = [[d.external_id, amount] for d, amount in use.debits if d.external_id]
    payable = _payable_minor(invoice)
    for invoice_payment in through_stripe:
        charge = _charge_for_payment(invoice_payment, charges_by_id)
        paid = (invoice_payment.get("amount_paid") or 0) if invoice_payment.get("status") == "paid" else 0
        left = paid - min(paid, max(payable, 0))
        also_apply = []
        for debit in debits:
            share = min(left, debit[1])
            if share:
                also_apply.append((debit[0], share))
                debit[1] -= share
                left -= share
        result.extend(
            map_invoice_payment(
                invoice_payment, invoice, charge, fm, customer=customer, apply_limit=payable, also_apply=also_apply
            )
        )
        payable -= min(paid, max(payable, 0))
    if balance_transactions:
        result.extend(map_balance_application(invoice, balance_transactions, fm, customer=customer))
    # What Stripe counts as paid beyond the charges' money was paid outside Stripe (paid_out_of_band, a payment
    # record): booked apart from Undeposited Funds.
    out_of_band = (invoice.get("amount_paid") or 0) - sum(p.get("amount_paid") or 0 for p in paid_through_stripe)
    if out_of_band > 0 and invoice.get("status") == "paid":
        result.extend(_out_of_band(invoice, fm, customer, out_of_band))
    notes = [n for n in credit_notes if isinstance(n, Mapping)]
    note_of_refund: dict[str, Mapping] = {}
    for note in notes:
        result.extend(map_credit_note(note, invoice, fm, customer=customer))
        if note.get("status") != "void":
            for part in note.get("refunds") or ():
                refund_id = id_of(part.get("refund")) if isinstance(part, Mapping) else id_of(part)
                if refund_id:
                    note_of_refund[refund_id] = note
    for refund in refunds:
        charge = charges_by_id.get(id_of(refund.get("charge")) or "")
        note = note_of_refund.get(refund.get("id") or "")
        result.extend(map_refund(refund, charge, invoice, fm, customer=customer, credit_note=note))
    for dispute in disputes:
        result.extend(map_dispute(dispute, charges_by_id.get(id_of(dispute.get("charge")) or ""), fm, customer))
    return result
