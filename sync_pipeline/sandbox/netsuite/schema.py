"""Record types, their reference fields and sublists, and the request bodies the stand-in accepts.

The spec confirms customer, invoice, customerPayment and journalEntry bodies; the other three
are modelled on them here, in one place:

    customer:       the spec's body, plus "currencyList": {"items": [{"currency": {"id"}}]}? (the currencies
                     it may transact in besides its primary `currency`; a write adds lines, never drops them)
    creditMemo:     {"externalId", "entity": {"id"}, "subsidiary"?, "currency": {"id"}, "tranDate",
                     "createdFrom": {"id": <invoice>}?,
                     "item": {"items": [{"item": {"id"}, "quantity", "rate", "amount"?}]},
                     "apply": {"items": [{"doc": {"id": <invoice>}, "apply": true, "amount"?}]}?}
    customerPayment: the spec's body, plus credits it uses up (memos, unapplied payments) towards its `apply`
                     lines: "credit": {"items": [{"doc": {"id"}, "apply": true, "amount"?}]}?; `payment` may be 0
    customerRefund: {"externalId", "customer": {"id"}, "currency": {"id"}, "tranDate", "account"?,
                     "apply": {"items": [{"doc": {"id": <credit memo or payment>}, "apply": true, "amount"}]}}
    deposit:        {"externalId", "account": {"id": <bank account>}, "subsidiary"?, "currency"?, "tranDate",
                     "payment": {"items": [{"doc": {"id": <customer payment>}, "deposit": true}]},
                     "other": {"items": [{"account": {"id"}, "amount": -2.90, "memo"?}]},
                     "cashBack": {"items": [{"account": {"id"}, "amount": 10.00, "memo"?}]}}

Fields the schema does not name are stored and echoed unchanged (NetSuite has hundreds).
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

from .errors import INVALID_PARAMETER, NetSuiteError, bad_request

# SuiteQL `type` codes of the transaction record types.
TRANSACTION_TYPE_CODES: dict[str, str] = {
    "invoice": "CustInvc",
    "customerPayment": "CustPymt",
    "creditMemo": "CustCred",
    "customerRefund": "CustRfnd",
    "deposit": "Deposit",
    "journalEntry": "Journal",
}
TRANSACTION_LABELS: dict[str, str] = {
    "invoice": "Invoice",
    "customerPayment": "Payment",
    "creditMemo": "Credit Memo",
    "customerRefund": "Customer Refund",
    "deposit": "Deposit",
    "journalEntry": "Journal",
}
# Document numbers (tranId) NetSuite's auto-numbering would give: prefix + running number.
TRAN_ID_PREFIXES: dict[str, str] = {
    "invoice": "INV",
    "customerPayment": "PYMT",
    "creditMemo": "CM",
    "customerRefund": "RFND",
    "deposit": "DEP",
    "journalEntry": "JE",
}
FIRST_TRAN_NUMBER = 1001
FIRST_INTERNAL_ID = 1001

TRANSACTION_TYPES: tuple[str, ...] = tuple(TRANSACTION_TYPE_CODES)
WRITABLE_TYPES: tuple[str, ...] = ("customer", *TRANSACTION_TYPES)
REFERENCE_TYPES: tuple[str, ...] = (
    "subsidiary",
    "currency",
    "department",
    "classification",
    "location",
    "item",
    "account",
)
RECORD_TYPES: tuple[str, ...] = WRITABLE_TYPES + REFERENCE_TYPES
_TYPES_BY_LOWER = {name.lower(): name for name in RECORD_TYPES}

SUBLISTS: dict[str, tuple[str, ...]] = {
    "customer": ("currencyList",),
    "invoice": ("item",),
    "creditMemo": ("item", "apply"),
    "customerPayment": ("apply", "credit"),
    "customerRefund": ("apply",),
    "deposit": ("payment", "other", "cashBack"),
    "journalEntry": ("line",),
}
# Field name -> record types its reference may point at (same meaning on header and lines).
REFERENCE_TARGETS: dict[str, tuple[str, ...]] = {
    "subsidiary": ("subsidiary",),
    "currency": ("currency",),
    "department": ("department",),
    "class": ("classification",),
    "location": ("location",),
    "item": ("item",),
    "account": ("account",),
    "entity": ("customer",),
    "customer": ("customer",),
    "createdFrom": ("invoice",),
}
# `doc` on an apply/payment line names a transaction whose type depends on the record.
DOC_TARGETS: dict[str, tuple[str, ...]] = {
    "creditMemo": ("invoice",),
    "customerPayment": ("invoice",),
    "customerRefund": ("creditMemo", "customerPayment"),
    "deposit": ("customerPayment",),
}
# ... except on a payment's `credit` lines, which name the credits it uses: memos and unapplied payments.
SUBLIST_DOC_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("customerPayment", "credit"): ("creditMemo", "customerPayment"),
}
NUMBER_FIELDS = frozenset({"quantity", "rate", "amount", "payment", "debit", "credit"})
# Of those, the money amounts NetSuite rounds to the currency's precision (rates and quantities keep their decimals).
MONEY_FIELDS: tuple[str, ...] = ("amount", "payment", "debit", "credit")
# Computed by the stand-in; a client sending them back (e.g. from a GET) has them ignored.
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "links",
        "refName",
        "line",
        "total",
        "subTotal",
        "amountRemaining",
        "amountPaid",
        "applied",
        "unapplied",
        "status",
        "createdDate",
        "lastModifiedDate",
    }
)
EXTERNAL_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]+")

# Status (SuiteQL letter, REST refName). Letters follow NetSuite's transaction status codes (unconfirmed
# for payments).
INVOICE_OPEN = ("A", "Open")
INVOICE_PAID = ("B", "Paid In Full")
CREDIT_OPEN = ("A", "Open")
CREDIT_FULLY_APPLIED = ("B", "Fully Applied")
PAYMENT_NOT_DEPOSITED = ("B", "Not Deposited")
PAYMENT_DEPOSITED = ("C", "Deposited")


def canonical_type(name: str) -> str:
    """NetSuite matches record type names case-insensitively (`customerpayment` works)."""
    record_type = _TYPES_BY_LOWER.get(name.lower())
    if record_type is None:
        raise NetSuiteError(404, INVALID_PARAMETER, f"Record type '{name}' does not exist.")
    return record_type


def reference_targets(record_type: str, field_name: str, sublist: str = "") -> tuple[str, ...]:
    if field_name == "doc":
        return SUBLIST_DOC_TARGETS.get((record_type, sublist), DOC_TARGETS.get(record_type, ()))
    return REFERENCE_TARGETS.get(field_name, ())


def check_external_id(value: object) -> str:
    if not isinstance(value, str) or not EXTERNAL_ID_PATTERN.fullmatch(value):
        raise bad_request(
            f"Invalid Field Value {value} for the following field: externalId. "
            "An external ID may contain only letters, digits, underscores (_) and hyphens (-).",
            INVALID_PARAMETER,
        )
    return value


def to_number(field_name: str, value: object) -> Decimal:
    """A JSON number as Decimal (the body was parsed with parse_float=Decimal); strings are refused."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return Decimal(value)
    raise bad_request(f"Invalid Field Value {value} for the following field: {field_name}", INVALID_PARAMETER)


def quantize(amount: Decimal, precision: int) -> Decimal:
    """Round to the currency's precision the way NetSuite does (half up)."""
    return amount.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)
