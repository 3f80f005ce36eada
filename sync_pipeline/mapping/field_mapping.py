"""The user-owned field-mapping config (`field_mapping.yaml`): loading, checking, and looking things up.

The file says what the Stripe data cannot: which NetSuite subsidiary books a currency, which item a
Stripe price is, which department an invoice carries, which accounts payments and refunds use.
`parse_field_mapping(raw, source)` is the one check of the file: every problem, one line each
(`source: key.path: what is wrong. Fix: what to write`), so a finance user can correct the file in one
pass. `sync-pipeline check-config`, the code location and `FieldMapping.load` all use it. No HTTP, no
Dagster; the only I/O is `read_field_mapping` reading the file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from sync_pipeline.mapping.external_ids import ACCOUNT_NAME_PATTERN
from sync_pipeline.mapping.money import NETSUITE_PRECISIONS, MoneyError, default_netsuite_precision, normalize_currency

RECORD_TYPES = ("customer", "invoice", "creditMemo", "customerPayment", "customerRefund", "deposit", "journalEntry")
CUSTOMER_MODES = ("per_customer", "global")
VOID_INVOICE_MODES = ("credit_memo", "none")
# bad_debt: what Stripe stopped collecting is written off to `items.bad_debt` (an expense), revenue and tax stay;
# leave_open: the NetSuite invoice stays open for collections to handle.
UNCOLLECTIBLE_MODES = ("bad_debt", "leave_open")
# account: money paid outside Stripe is a customer payment to `accounts.out_of_band` (a clearing account);
# credit_memo: it closes the invoice with a credit memo on `items.out_of_band`.
OUT_OF_BAND_MODES = ("account", "credit_memo")
# sale: a charge without a Stripe invoice is a sale: an invoice (`stripe-ch_…-sale`, items.default) its payment pays,
# so nothing stays open; customer_credit: an unapplied payment, the customer's credit (a prepayment).
INVOICELESS_CHARGE_MODES = ("sale", "customer_credit")
# default: a Stripe product mapped nowhere books on items.default; hold: its line is held back (UNMAPPED_ITEM)
# until the product gets its item, so a newly launched product never books revenue on a catch-all item unseen.
UNMAPPED_PRODUCT_MODES = ("default", "hold")
SINGLE_ITEMS = (
    "default",
    "discount",
    "tax",
    "proration",
    "refund",
    "rounding",
    "bad_debt",
    "out_of_band",
    "customer_balance",
    "dispute",
)
SINGLE_ACCOUNTS = (
    "payments",
    "refunds",
    "stripe_fees",
    "dispute_fees",
    "bank",
    "returned_payouts",
    "rounding",
    "out_of_band",
)
# per_type: one cash-back line per fee type and account in each payout's deposit (processing, application, tax on
# fees, dispute fees); per_payout: one line for all of a payout's fees, on accounts.stripe_fees.
FEE_LINE_MODES = ("per_type", "per_payout")
# Stripe's `fee_details[].type` values (docs.stripe.com/api/balance_transactions/object), plus `dispute_fee`: the
# fee on a dispute's balance transaction.
FEE_TYPES = ("stripe_fee", "application_fee", "payment_method_passthrough_fee", "tax", "dispute_fee")
# NetSuite documents 5,000 lines per transaction for web services (help: "Entering Transaction Line Items").
DEFAULT_MAX_DEPOSIT_LINES = 5000
DEFAULT_LINK_METADATA_KEY = "netsuite_customer_id"

# Header fields that hold a reference to another NetSuite record: a default `department: 3` is sent
# as {"id": "3"}. Other fields are sent as written; `{id: "7"}` forces a reference (custom lists).
REFERENCE_FIELDS = frozenset(
    {
        "subsidiary",
        "department",
        "class",
        "location",
        "account",
        "currency",
        "terms",
        "entity",
        "customer",
        "item",
        "salesRep",
        "partner",
        "arAcct",
        "paymentMethod",
        "taxItem",
        "taxCode",
        "postingPeriod",
        "customForm",
        "leadSource",
        "category",
        "priceLevel",
        "territory",
        "nexus",
        "creditCardProcessor",
    }
)
# Fields the mapping sets from the Stripe data itself; a default for them would be misleading.
MAPPED_FIELDS = frozenset(
    {
        "externalId",
        "entity",
        "customer",
        "currency",
        "tranDate",
        "dueDate",
        "item",
        "apply",
        "createdFrom",
        "payment",
        "exchangeRate",
        "memo",
        "companyName",
        "email",
    }
)
_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Salesforce record ids: 15 characters (case-sensitive) or 18 (with a case checksum); Product2 starts 01t.
_SALESFORCE_PRODUCT_ID = re.compile(r"01t[A-Za-z0-9]{12}(?:[A-Za-z0-9]{3})?")
# NetSuite internal ids are whole numbers (negative for a few built-in records); ASCII digits only.
_NETSUITE_ID = re.compile(r"-?[0-9]+")
# ISO 4217 codes, plus the retired ones Stripe still lists (EEK HRK LTL LVL MRO STD VEF ...).
ISO_CURRENCIES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BOV BRL BSD BTN BWP BYN BYR BZD
    CAD CDF CHE CHF CHW CLF CLP CNY COP COU CRC CUC CUP CVE CZK DJF DKK DOP DZD EEK EGP ERN ETB EUR FJD FKP GBP
    GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW
    KWD KYD KZT LAK LBP LKR LRD LSL LTL LVL LYD MAD MDL MGA MKD MMK MNT MOP MRO MRU MUR MVR MWK MXN MXV MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE
    SLL SOS SRD SSP STD STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD USN UYI UYU UYW UZS VED
    VEF VES VND VUV WST XAF XAG XAU XBA XBB XBC XBD XCD XCG XDR XOF XPD XPF XPT XSU XUA YER ZAR ZMK ZMW ZWG ZWL
""".split()
)
_TOP_LEVEL_KEYS = (
    "version",
    "customers",
    "subsidiary",
    "currencies",
    "subsidiaries",
    "defaults",
    "required_fields",
    "items",
    "accounts",
    "payouts",
    "void_invoices",
    "uncollectible_invoices",
    "out_of_band_payments",
    "invoiceless_charges",
    "salesforce",
    "stripe_accounts",
)


class FieldMappingError(ValueError):
    """The field-mapping file is unusable; `problems` holds one line each: `source: key: what. Fix: how`."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the field mapping:\n{lines}")


@dataclass(frozen=True)
class CurrencyMapping:
    code: str  # ISO, upper case
    netsuite_id: str
    subsidiary: str | None
    precision: int = 2  # decimals of the NetSuite currency (0 or 2): amounts are sent at this precision
    bank: str | None = None  # the bank account this currency's Stripe payouts arrive in (else accounts.bank)


@dataclass(frozen=True)
class SubsidiaryConfig:
    id: str
    name: str = ""
    currencies: tuple[str, ...] | None = None  # the currencies NetSuite allows it, when listed
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # "all" or record type -> fields


@dataclass(frozen=True)
class CustomerConfig:
    mode: Literal["per_customer", "global"] = "per_customer"
    global_customer_id: str | None = None
    link_metadata_key: str = DEFAULT_LINK_METADATA_KEY
    guest_customer_id: str | None = None


@dataclass(frozen=True)
class ItemConfig:
    default: str | None = None
    discount: str | None = None
    tax: str | None = None
    proration: str | None = None
    refund: str | None = None
    rounding: str | None = None  # carries the difference when a document is rounded to NetSuite's precision
    bad_debt: str | None = None  # write-off of uncollectible invoices (its account: bad-debt expense)
    out_of_band: str | None = None  # closes invoices paid outside Stripe (out_of_band_payments: credit_memo)
    customer_balance: str | None = None  # credit memos of credits given on the Stripe customer balance by hand
    dispute: str | None = None  # chargebacks: the credit memo of a dispute's withdrawn funds, the invoice of reinstated
    by_price: Mapping[str, str] = field(default_factory=dict)
    by_product: Mapping[str, str] = field(default_factory=dict)
    unmapped_products: str = "default"  # see UNMAPPED_PRODUCT_MODES


@dataclass(frozen=True)
class AccountConfig:
    payments: str | None = None  # customer payments land here (Undeposited Funds)
    refunds: str | None = None  # customer refunds are paid from here
    stripe_fees: str | None = None  # expense lines of deposits
    dispute_fees: str | None = None  # dispute fees (default: stripe_fees, as Stripe's connector does)
    bank: str | None = None  # the bank account Stripe payouts arrive in
    returned_payouts: str | None = None  # clearing for a failed payout's money until Stripe pays it out again
    rounding: str | None = None  # a deposit's sub-unit rounding (three-decimal currencies at NetSuite's two)
    out_of_band: str | None = None  # money paid or refunded outside Stripe (never Undeposited Funds)


@dataclass(frozen=True)
class PayoutConfig:
    """How a Stripe payout becomes a NetSuite deposit (field_mapping.yaml `payouts:`)."""

    fee_lines: Literal["per_type", "per_payout"] = "per_type"
    # fee type (FEE_TYPES) -> account; a type not listed books to accounts.stripe_fees (dispute fees: dispute_fees)
    fee_accounts: Mapping[str, str] = field(default_factory=dict)
    # balance transaction type -> account, for every type besides charges, refunds, disputes and payouts
    # (adjustments, Stripe Billing/Radar fees, reserves, top-ups, ...); a type not listed holds its deposit back
    balance_transactions: Mapping[str, str] = field(default_factory=dict)
    max_lines_per_deposit: int = DEFAULT_MAX_DEPOSIT_LINES
    # presentment currency -> the currency Stripe settles it in (your Stripe account's settlement setting), e.g.
    # {"EUR": "USD"}: payments and refunds in EUR then carry Stripe's exchange rate, so their deposit matches
    settles_in: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SalesforceConfig:
    # Product2 id (its case-sensitive first 15 characters) -> the Stripe price per ISO currency
    # ({"USD": "price_a", "EUR": "price_b"}), or one Stripe price id for every currency (the older form:
    # it bills deals in that price's currency only).
    product_prices: Mapping[str, str | Mapping[str, str]] = field(default_factory=dict)
    # Closed-Won opportunities with an earlier CloseDate are never billed (deals billed before the pipeline).
    bill_closed_won_from: dt.date | None = None

    def prices_of_product(self, product_id: str | None) -> str | Mapping[str, str] | None:
        return self.product_prices.get(product_id[:15]) if product_id else None

    def price_for_product(self, product_id: str | None, currency: str) -> str | None:
        """The Stripe price billed for the product in a deal of `currency` (None: none mapped for it)."""
        prices = self.prices_of_product(product_id)
        return prices if isinstance(prices, str) or prices is None else prices.get(currency.upper())

    def price_ids(self) -> set[str]:
        return {
            price
            for prices in self.product_prices.values()
            for price in ([prices] if isinstance(prices, str) else prices.values())
        }


def billing_start_problem(mapping: FieldMapping) -> str | None:
    """The one line that keeps Salesforce → Stripe billing from starting, or None when it may start.

    No default date: a first run without one would bill every historic Closed-Won deal that carries no
    Stripe id in Salesforce, including deals billed by hand in Stripe before this pipeline.
    """
    if mapping.salesforce.bill_closed_won_from is not None:
        return None
    return (
        f"{mapping.source}: salesforce.bill_closed_won_from: not set, so nothing is billed. Fix: set it to the "
        "first CloseDate to bill (YYYY-MM-DD, e.g. today's date); deals closed earlier are never billed "
        "(preview with `sync-pipeline plan`)"
    )


@dataclass(frozen=True)
class FieldMapping:
    customers: CustomerConfig = CustomerConfig()
    currencies: Mapping[str, CurrencyMapping] = field(default_factory=dict)
    subsidiaries: Mapping[str, SubsidiaryConfig] = field(default_factory=dict)
    defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # record type -> field -> body value
    required_fields: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    items: ItemConfig = ItemConfig()
    accounts: AccountConfig = AccountConfig()
    payouts: PayoutConfig = PayoutConfig()
    void_invoices: Literal["credit_memo", "none"] = "credit_memo"
    uncollectible_invoices: Literal["bad_debt", "leave_open"] = "bad_debt"
    out_of_band_payments: Literal["account", "credit_memo"] = "account"
    invoiceless_charges: Literal["sale", "customer_credit"] = "sale"
    salesforce: SalesforceConfig = SalesforceConfig()
    source: str = "<field mapping>"
    subsidiary: str | None = None  # the top-level `subsidiary:`, the default Stripe account's
    # Several Stripe accounts (SYNC_STRIPE_ACCOUNTS): account name -> its NetSuite subsidiary.
    stripe_accounts: Mapping[str, str] = field(default_factory=dict)

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> FieldMapping:
        """Read and check `path`; raises FieldMappingError naming every problem and its fix."""
        return _usable(*read_field_mapping(path), str(path))

    @classmethod
    def from_dict(cls, data: Any, source: str = "<field mapping>") -> FieldMapping:
        """Build from already-parsed YAML; same checks as `load`."""
        parser = _Parser(source)
        return _usable(parser.parse(data), parser.problems, source)

    def for_account(self, account: str) -> FieldMapping:
        """The mapping as Stripe account `account` books: every currency that books to the top-level `subsidiary`
        books to the account's instead, and a currency the account's subsidiary does not allow is unmapped for it
        (held back as UNMAPPED_CURRENCY, naming it). A currency with a subsidiary of its own keeps it."""
        if account not in self.stripe_accounts:
            raise FieldMappingError(
                self.source,
                [
                    f"{self.source}: stripe_accounts: no entry for Stripe account {account} (SYNC_STRIPE_ACCOUNTS "
                    f'lists it). Fix: add `{account}: {{subsidiary: "<NetSuite subsidiary id>"}}` under stripe_accounts'
                ],
            )
        subsidiary = self.stripe_accounts[account]
        allowed = self.subsidiaries[subsidiary].currencies if subsidiary in self.subsidiaries else None
        currencies = {}
        for code, mapping in self.currencies.items():
            if mapping.subsidiary != self.subsidiary:
                currencies[code] = mapping
            elif allowed is None or code in allowed:
                currencies[code] = dataclasses.replace(mapping, subsidiary=subsidiary)
        return dataclasses.replace(self, currencies=currencies, subsidiary=subsidiary)

    # -- look-ups the mapping uses ---------------------------------------------------------------
    def currency(self, code: str) -> CurrencyMapping | None:
        return self.currencies.get(code.upper()) if isinstance(code, str) else None

    def netsuite_precision(self, code: str) -> int:
        mapping = self.currency(code)
        return mapping.precision if mapping is not None else default_netsuite_precision(code)

    def defaults_for(self, record_type: str, subsidiary: str | None) -> dict[str, Any]:
        """Field defaults for a record, most specific winning: subsidiary+type > subsidiary `all` > type."""
        merged: dict[str, Any] = dict(self.defaults.get(record_type, {}))
        sub = self.subsidiaries.get(subsidiary) if subsidiary is not None else None
        if sub is not None:
            merged.update(sub.defaults.get("all", {}))
            merged.update(sub.defaults.get(record_type, {}))
        return merged

    def required_fields_for(self, record_type: str) -> tuple[str, ...]:
        return self.required_fields.get(record_type, ())

    def missing_required_defaults(self) -> list[str]:
        """Required fields no default covers, per record type and subsidiary (for `check-config`).

        Such records are held back by validation unless the Stripe data fills the field.
        """
        gaps = []
        subsidiaries = sorted(set(self.subsidiaries) | {c.subsidiary for c in self.currencies.values() if c.subsidiary})
        for record_type, fields in self.required_fields.items():
            for subsidiary in subsidiaries:
                defaults = self.defaults_for(record_type, subsidiary)
                for name in fields:
                    if name not in defaults and name not in MAPPED_FIELDS and name != "subsidiary":
                        gaps.append(f"{record_type} of subsidiary {subsidiary}: no default `{name}`")
        return gaps

    def bank_account(self, code: str) -> str | None:
        """The bank account a payout in `code` is deposited to: the currency's own, else accounts.bank."""
        mapping = self.currencies.get(code)
        return (mapping.bank if mapping else None) or self.accounts.bank

    def fee_account(self, fee_type: str) -> str | None:
        own = self.payouts.fee_accounts.get(fee_type)
        if own:
            return own
        if fee_type == "dispute_fee":
            return self.accounts.dispute_fees or self.accounts.stripe_fees
        return self.accounts.stripe_fees

    def item_for(self, price_id: str | None, product_id: str | None) -> str | None:
        """The NetSuite item for a Stripe price or product, else the default item (None if neither, or if
        the line has a product and `items.unmapped_products` is `hold`)."""
        if price_id and price_id in self.items.by_price:
            return self.items.by_price[price_id]
        if product_id and product_id in self.items.by_product:
            return self.items.by_product[product_id]
        if (price_id or product_id) and self.items.unmapped_products == "hold":
            return None
        return self.items.default


def read_field_mapping(path: str | Path) -> tuple[FieldMapping | None, list[str]]:
    """The mapping in the file at `path` and every problem with it (see `parse_field_mapping`)."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        return None, [
            f"SYNC_FIELD_MAPPING: expected the path of your field_mapping.yaml; cannot read {path} "
            f"({exc.strerror or exc})"
        ]
    return parse_field_mapping(raw, str(path))


def parse_field_mapping(raw: bytes, source: str) -> tuple[FieldMapping | None, list[str]]:
    """The mapping a file's bytes hold and every problem with it, one line each (None when there is any).

    Encoding, YAML syntax (with line and column), then every section's content.
    """
    try:
        text = raw.decode("utf-8-sig")  # -sig: Windows editors may start the file with a byte-order mark
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, [
            f"{source}: not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}). Fix: save the file "
            "as UTF-8 in your editor"
        ]
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        return None, [f"{source}: not valid YAML{_yaml_error_text(exc)}. Fix: check indentation and quoting there"]
    parser = _Parser(source)
    mapping = parser.parse(data)
    return (None if parser.problems else mapping), parser.problems


def _yaml_error_text(exc: yaml.YAMLError) -> str:
    """` at line L, column C (what)`, plus where the enclosing block starts: the cause is often there."""

    def at(mark: Any) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}"

    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or str(exc)
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark:
        what += f", {context} that starts at {at(context_mark)}"
    return (f" at {at(mark)}" if mark else "") + f" ({' '.join(what.split())})"


def _usable(mapping: FieldMapping | None, problems: list[str], source: str) -> FieldMapping:
    if problems or mapping is None:
        raise FieldMappingError(source, problems)
    return mapping


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one section (plain YAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set[str] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=True)
            if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key, Hashable):
                continue
            if str(key) in seen:  # str: the sections read `1:` and `"1":` as the same id
                raise yaml.constructor.ConstructorError(
                    None, None, f"{key} is written twice in this section", key_node.start_mark
                )
            seen.add(str(key))
        return super().construct_mapping(node, deep)


def reference(value: str) -> dict[str, str]:
    """A NetSuite reference to a record by internal id, as the record API takes it."""
    return {"id": str(value)}


class _Parser:
    """Checks the parsed YAML section by section, collecting every problem before raising."""

    def __init__(self, source: str):
        self.source = source
        self.problems: list[str] = []

    def problem(self, path: str, what: str, fix: str) -> None:
        where = f"{self.source}: {path}" if path else self.source
        self.problems.append(f"{where}: {what}. Fix: {fix}")

    # -- generic readers -------------------------------------------------------------------------
    def mapping(self, value: Any, path: str, allowed: tuple[str, ...] | None = None) -> dict:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.problem(
                path,
                f"expected a section of `key: value` lines, got {type(value).__name__} {value!r}",
                f"write `{path.rsplit('.', 1)[-1]}:` followed by indented `key: value` lines",
            )
            return {}
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    self.problem(
                        f"{path}.{key}" if path else str(key),
                        "unknown key",
                        f"use one of: {', '.join(allowed)} (check the spelling)",
                    )
        return {str(k): v for k, v in value.items()}

    def netsuite_id(self, value: Any, path: str, required: bool = False) -> str | None:
        if value is None or value == "":
            if required:
                self.problem(path, "missing", "write the NetSuite internal id (the number in the record's URL, id=...)")
            return None
        text = str(value).strip() if isinstance(value, (int, str)) and not isinstance(value, bool) else ""
        if not _NETSUITE_ID.fullmatch(text):
            self.problem(
                path,
                f"expected a NetSuite internal id, got {value!r}",
                'write the internal id (the number after id= in the record\'s URL), e.g. "3"',
            )
            return None
        return text

    def choice(self, value: Any, path: str, choices: tuple[str, ...], default: str) -> str:
        if value is None:
            return default
        if value not in choices:
            self.problem(path, f"{value!r} is not a valid choice", f"use one of: {', '.join(choices)}")
            return default
        return value

    def record_type(self, key: str, path: str, extra: tuple[str, ...] = ()) -> bool:
        if key in RECORD_TYPES or key in extra:
            return True
        self.problem(
            path,
            f"{key!r} is not a NetSuite record type this pipeline writes",
            f"use one of: {', '.join(extra + RECORD_TYPES)} (names are case-sensitive)",
        )
        return False

    def field_values(self, value: Any, path: str) -> dict[str, Any]:
        """A `field: value` block of defaults -> body values ({"id": ...} for references)."""
        out: dict[str, Any] = {}
        for name, raw in self.mapping(value, path).items():
            where = f"{path}.{name}"
            if not _FIELD_NAME.fullmatch(name):
                self.problem(
                    where, "not a NetSuite field id", "use the field's script id, e.g. department or custbody_region"
                )
                continue
            if name in MAPPED_FIELDS:
                self.problem(where, "this field is filled from the Stripe data and cannot have a default", "remove it")
                continue
            body_value = self.body_value(name, raw, where)
            if body_value is not None:
                out[name] = body_value
        return out

    def body_value(self, name: str, raw: Any, where: str) -> Any:
        if isinstance(raw, Mapping):
            keys = set(raw)
            if keys == {"id"}:
                ref_id = self.netsuite_id(raw["id"], f"{where}.id", required=True)
                return reference(ref_id) if ref_id else None
            self.problem(
                where,
                f"unexpected block {dict(raw)!r}",
                'write a plain value, or {id: "<internal id>"} for a reference',
            )
            return None
        if name in REFERENCE_FIELDS:
            ref_id = self.netsuite_id(raw, where, required=True)
            return reference(ref_id) if ref_id else None
        if isinstance(raw, float):
            self.problem(where, f"decimal number {raw!r} would be read as a float", f'quote it: {name}: "{raw}"')
            return None
        if isinstance(raw, (str, int, bool)):
            return raw
        self.problem(where, f"unsupported value {raw!r}", "write a text, a number or true/false")
        return None

    # -- sections ----------------------------------------------------------------------------------
    def parse(self, data: Any) -> FieldMapping | None:
        if not isinstance(data, Mapping):
            what = "the file is empty" if data is None else "the file is not a YAML mapping of sections"
            self.problem("", what, "start from the example field_mapping.yaml at the repository root")
            return None
        top = self.mapping(data, "", allowed=_TOP_LEVEL_KEYS)
        if not top.get("currencies"):
            # Without currencies every Stripe transaction is held back as UNMAPPED_CURRENCY.
            self.problem(
                "currencies",
                "missing: no currency is mapped",
                'list each currency you sell in, e.g. `USD: {netsuite_id: "1", subsidiary: "1"}`',
            )
        version = top.get("version", 1)
        if version != 1:
            self.problem("version", f"version {version!r} is not supported", "write `version: 1`")
        subsidiaries = self.subsidiaries(top.get("subsidiaries"))
        # One Stripe account is one legal entity: every currency books to its subsidiary unless a currency names
        # its own (an explicit choice, with intercompany consequences: see field_mapping.yaml).
        account_subsidiary = self.netsuite_id(top.get("subsidiary"), "subsidiary")
        if account_subsidiary and subsidiaries and account_subsidiary not in subsidiaries:
            self.problem(
                "subsidiary",
                f"subsidiary {account_subsidiary} is not listed under `subsidiaries:`",
                f'add subsidiary "{account_subsidiary}" under `subsidiaries:` or correct the id',
            )
        currencies = self.currencies(top.get("currencies"), subsidiaries, account_subsidiary)
        result = FieldMapping(
            customers=self.customers(top.get("customers")),
            currencies=currencies,
            subsidiaries=subsidiaries,
            defaults=self.defaults(top.get("defaults")),
            required_fields=self.required_fields(top.get("required_fields")),
            items=self.items(top.get("items")),
            accounts=self.accounts(top.get("accounts")),
            payouts=self.payouts(top.get("payouts")),
            void_invoices=self.choice(top.get("void_invoices"), "void_invoices", VOID_INVOICE_MODES, "credit_memo"),
            uncollectible_invoices=self.choice(
                top.get("uncollectible_invoices"), "uncollectible_invoices", UNCOLLECTIBLE_MODES, "bad_debt"
            ),
            out_of_band_payments=self.choice(
                top.get("out_of_band_payments"), "out_of_band_payments", OUT_OF_BAND_MODES, "account"
            ),
            invoiceless_charges=self.choice(
                top.get("invoiceless_charges"), "invoiceless_charges", INVOICELESS_CHARGE_MODES, "sale"
            ),
            salesforce=self.salesforce(top.get("salesforce")),
            source=self.source,
            subsidiary=account_subsidiary,
            stripe_accounts=self.stripe_accounts(top.get("stripe_accounts"), subsidiaries),
        )
        return result

    def stripe_accounts(self, value: Any, subsidiaries: Mapping[str, SubsidiaryConfig]) -> dict[str, str]:
        out = {}
        for name, raw in self.mapping(value, "stripe_accounts").items():
            path = f"stripe_accounts.{name}"
            if not isinstance(name, str) or not ACCOUNT_NAME_PATTERN.fullmatch(name):
                self.problem(path, "not an account name", "use the name SYNC_STRIPE_ACCOUNTS gives it (e.g. eu)")
                continue
            section = self.mapping(raw, path, allowed=("subsidiary",))
            subsidiary = self.netsuite_id(section.get("subsidiary"), f"{path}.subsidiary")
            if not subsidiary:
                self.problem(path, "no subsidiary", f'write `{name}: {{subsidiary: "<NetSuite subsidiary id>"}}`')
            elif subsidiaries and subsidiary not in subsidiaries:
                self.problem(
                    f"{path}.subsidiary",
                    f"subsidiary {subsidiary} is not listed under `subsidiaries:`",
                    f'add subsidiary "{subsidiary}" under `subsidiaries:` or correct the id',
                )
            else:
                out[name] = subsidiary
        return out

    def customers(self, value: Any) -> CustomerConfig:
        section = self.mapping(
            value, "customers", allowed=("mode", "global_customer_id", "link_metadata_key", "guest_customer_id")
        )
        mode = self.choice(section.get("mode"), "customers.mode", CUSTOMER_MODES, "per_customer")
        global_id = self.netsuite_id(
            section.get("global_customer_id"), "customers.global_customer_id", required=(mode == "global")
        )
        link_key = section.get("link_metadata_key", DEFAULT_LINK_METADATA_KEY)
        if link_key is not None and (not isinstance(link_key, str) or not link_key):
            self.problem(
                "customers.link_metadata_key",
                f"expected a Stripe metadata key, got {link_key!r}",
                f"write `link_metadata_key: {DEFAULT_LINK_METADATA_KEY}`, or null to never link",
            )
            link_key = DEFAULT_LINK_METADATA_KEY
        return CustomerConfig(
            mode=mode,
            global_customer_id=global_id,
            link_metadata_key=link_key or "",
            guest_customer_id=self.netsuite_id(section.get("guest_customer_id"), "customers.guest_customer_id"),
        )

    def currency_code(self, code: Any, path: str) -> str | None:
        try:
            upper = normalize_currency(code)
        except MoneyError:
            upper = None
        if upper not in ISO_CURRENCIES:
            self.problem(
                path, f"{code!r} is not a three-letter ISO 4217 currency code", "write codes like USD, EUR, JPY"
            )
            return None
        return upper

    def subsidiaries(self, value: Any) -> dict[str, SubsidiaryConfig]:
        out: dict[str, SubsidiaryConfig] = {}
        for key, raw in self.mapping(value, "subsidiaries").items():
            path = f"subsidiaries.{key}"
            sub_id = self.netsuite_id(key, path)
            section = self.mapping(raw, path, allowed=("name", "currencies", "defaults"))
            currencies = None
            if section.get("currencies") is not None:
                listed = section["currencies"]
                if not isinstance(listed, list):
                    self.problem(f"{path}.currencies", "expected a list", "write e.g. `currencies: [USD, EUR]`")
                else:
                    codes = [self.currency_code(c, f"{path}.currencies") for c in listed]
                    currencies = tuple(c for c in codes if c)
            defaults: dict[str, dict[str, Any]] = {}
            for record_type, fields in self.mapping(section.get("defaults"), f"{path}.defaults").items():
                if self.record_type(record_type, f"{path}.defaults.{record_type}", extra=("all",)):
                    defaults[record_type] = self.field_values(fields, f"{path}.defaults.{record_type}")
            if sub_id:
                out[sub_id] = SubsidiaryConfig(
                    id=sub_id, name=str(section.get("name") or ""), currencies=currencies, defaults=defaults
                )
        return out

    def currencies(
        self, value: Any, subsidiaries: Mapping[str, SubsidiaryConfig], account_subsidiary: str | None = None
    ) -> dict[str, CurrencyMapping]:
        out: dict[str, CurrencyMapping] = {}
        for key, raw in self.mapping(value, "currencies").items():
            path = f"currencies.{key}"
            code = self.currency_code(key, path)
            section = self.mapping(raw, path, allowed=("netsuite_id", "subsidiary", "precision", "bank"))
            netsuite_id = self.netsuite_id(section.get("netsuite_id"), f"{path}.netsuite_id", required=True)
            subsidiary = self.netsuite_id(section.get("subsidiary"), f"{path}.subsidiary") or account_subsidiary
            if subsidiary and subsidiary not in subsidiaries:
                self.problem(
                    f"{path}.subsidiary",
                    f"subsidiary {subsidiary} is not listed under `subsidiaries:`",
                    f'add subsidiary "{subsidiary}" under `subsidiaries:` or correct the id',
                )
            allowed = subsidiaries.get(subsidiary).currencies if subsidiary in subsidiaries else None
            if code and allowed is not None and code not in allowed:
                self.problem(
                    f"{path}.subsidiary",
                    f"subsidiary {subsidiary} does not allow {code} (it allows {', '.join(allowed)})",
                    f"map {code} to a subsidiary that allows it, or add {code} to "
                    f"subsidiaries.{subsidiary}.currencies once NetSuite allows it",
                )
            precision = self.precision(section.get("precision"), f"{path}.precision", code)
            if code and netsuite_id:
                out[code] = CurrencyMapping(
                    code=code,
                    netsuite_id=netsuite_id,
                    subsidiary=subsidiary,
                    precision=precision,
                    bank=self.netsuite_id(section.get("bank"), f"{path}.bank"),
                )
        return out

    def precision(self, value: Any, path: str, code: str | None) -> int:
        default = default_netsuite_precision(code) if code else 2
        if value is None:
            return default
        if isinstance(value, bool) or value not in NETSUITE_PRECISIONS:
            self.problem(
                path,
                f"{value!r} is not a NetSuite currency precision (NetSuite supports only 0 and 2 decimals)",
                f"write `precision: 0` or `precision: 2`, as the NetSuite currency record shows (default {default})",
            )
            return default
        return value

    def defaults(self, value: Any) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for record_type, fields in self.mapping(value, "defaults").items():
            if self.record_type(record_type, f"defaults.{record_type}"):
                out[record_type] = self.field_values(fields, f"defaults.{record_type}")
        return out

    def required_fields(self, value: Any) -> dict[str, tuple[str, ...]]:
        out: dict[str, tuple[str, ...]] = {}
        for record_type, names in self.mapping(value, "required_fields").items():
            path = f"required_fields.{record_type}"
            if not self.record_type(record_type, path):
                continue
            if not isinstance(names, list) or not all(isinstance(n, str) and _FIELD_NAME.fullmatch(n) for n in names):
                self.problem(
                    path,
                    f"expected a list of NetSuite field ids, got {names!r}",
                    "write e.g. `invoice: [department, class]`",
                )
                continue
            out[record_type] = tuple(names)
        return out

    def items(self, value: Any) -> ItemConfig:
        section = self.mapping(value, "items", allowed=(*SINGLE_ITEMS, "by_price", "by_product", "unmapped_products"))
        single = {name: self.netsuite_id(section.get(name), f"items.{name}") for name in SINGLE_ITEMS}
        return ItemConfig(
            **single,
            by_price=self.stripe_id_table(section.get("by_price"), "items.by_price", "price_"),
            by_product=self.stripe_id_table(section.get("by_product"), "items.by_product", "prod_"),
            unmapped_products=self.choice(
                section.get("unmapped_products"), "items.unmapped_products", UNMAPPED_PRODUCT_MODES, "default"
            ),
        )

    def stripe_id_table(self, value: Any, path: str, prefix: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for stripe_id, item in self.mapping(value, path).items():
            where = f"{path}.{stripe_id}"
            if not stripe_id.startswith(prefix):
                self.problem(
                    where,
                    f"{stripe_id!r} is not a Stripe id starting with {prefix}",
                    f"copy the id ({prefix}...) from the Stripe dashboard",
                )
                continue
            item_id = self.netsuite_id(item, where, required=True)
            if item_id:
                out[stripe_id] = item_id
        return out

    def accounts(self, value: Any) -> AccountConfig:
        section = self.mapping(value, "accounts", allowed=SINGLE_ACCOUNTS)
        return AccountConfig(
            **{name: self.netsuite_id(section.get(name), f"accounts.{name}") for name in SINGLE_ACCOUNTS}
        )

    def payouts(self, value: Any) -> PayoutConfig:
        section = self.mapping(
            value,
            "payouts",
            allowed=("fee_lines", "fee_accounts", "balance_transactions", "max_lines_per_deposit", "settles_in"),
        )
        settles_in: dict[str, str] = {}
        for presented, settled in self.mapping(section.get("settles_in"), "payouts.settles_in").items():
            where = f"payouts.settles_in.{presented}"
            source_code, target_code = self.currency_code(presented, where), self.currency_code(settled, where)
            if source_code and target_code:
                settles_in[source_code] = target_code
        fee_accounts: dict[str, str] = {}
        for fee_type, account in self.mapping(section.get("fee_accounts"), "payouts.fee_accounts").items():
            where = f"payouts.fee_accounts.{fee_type}"
            if fee_type not in FEE_TYPES:
                self.problem(where, f"{fee_type!r} is not a Stripe fee type", f"use one of: {', '.join(FEE_TYPES)}")
            elif account_id := self.netsuite_id(account, where, required=True):
                fee_accounts[fee_type] = account_id
        by_type: dict[str, str] = {}
        for txn_type, account in self.mapping(
            section.get("balance_transactions"), "payouts.balance_transactions"
        ).items():
            where = f"payouts.balance_transactions.{txn_type}"
            if not _FIELD_NAME.fullmatch(txn_type):
                self.problem(where, "not a Stripe balance transaction type", "use the type's name, e.g. adjustment")
            elif account_id := self.netsuite_id(account, where, required=True):
                by_type[txn_type] = account_id
        max_lines = section.get("max_lines_per_deposit", DEFAULT_MAX_DEPOSIT_LINES)
        if isinstance(max_lines, bool) or not isinstance(max_lines, int) or max_lines < 2:
            self.problem(
                "payouts.max_lines_per_deposit",
                f"expected a whole number of at least 2, got {max_lines!r}",
                f"write the most lines NetSuite takes in one deposit (default {DEFAULT_MAX_DEPOSIT_LINES})",
            )
            max_lines = DEFAULT_MAX_DEPOSIT_LINES
        return PayoutConfig(
            fee_lines=self.choice(section.get("fee_lines"), "payouts.fee_lines", FEE_LINE_MODES, "per_type"),
            fee_accounts=fee_accounts,
            balance_transactions=by_type,
            max_lines_per_deposit=max_lines,
            settles_in=settles_in,
        )

    def salesforce(self, value: Any) -> SalesforceConfig:
        section = self.mapping(value, "salesforce", allowed=("product_prices", "bill_closed_won_from"))
        prices: dict[str, str | dict[str, str]] = {}
        for product_id, raw in self.mapping(section.get("product_prices"), "salesforce.product_prices").items():
            where = f"salesforce.product_prices.{product_id}"
            if not _SALESFORCE_PRODUCT_ID.fullmatch(product_id):
                self.problem(
                    where,
                    f"{product_id!r} is not a Salesforce Product2 id (01t..., 15 or 18 characters)",
                    "copy the id from the product's URL in Salesforce",
                )
            elif isinstance(raw, dict):
                per_currency = {}
                for code, price_id in raw.items():
                    currency = self.currency_code(code, f"{where}.{code}")
                    if currency and self.price_id(price_id, f"{where}.{code}"):
                        per_currency[currency] = price_id
                prices[product_id[:15]] = per_currency
            elif self.price_id(raw, where):
                prices[product_id[:15]] = raw
        return SalesforceConfig(
            product_prices=prices,
            bill_closed_won_from=self.date(section.get("bill_closed_won_from"), "salesforce.bill_closed_won_from"),
        )

    def price_id(self, value: Any, path: str) -> bool:
        if isinstance(value, str) and value.startswith("price_"):
            return True
        self.problem(
            path,
            f"{value!r} is not a Stripe price id starting with price_, nor prices per currency",
            "copy the price id (price_...) from the product's page in the Stripe dashboard, one per currency: "
            "`01t...: {USD: price_..., EUR: price_...}`",
        )
        return False

    def date(self, value: Any, path: str) -> dt.date | None:
        if value is None or isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError:
            self.problem(path, f"{value!r} is not a date", "write it as YYYY-MM-DD, e.g. 2026-12-01")
            return None
