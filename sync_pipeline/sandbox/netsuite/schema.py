"""Record types, their reference fields and sublists, and the request bodies the stand-in accepts.

The spec confirms customer, invoice, customerPayment and journalEntry bodies; the others are modelled
on them here, in one place:

    customer:       the spec's body, plus "currencyList": {"items": [{"currency": {"id"}}]}? (the currencies
                     it may transact in besides its primary `currency`; a write adds lines, never drops them)
    creditMemo:     {"externalId", "entity": {"id"}, "subsidiary"?, "currency": {"id"}, "tranDate",
                     "createdFrom": {"id": <invoice>}?,
                     "item": {"items": [{"item": {"id"}, "quantity", "rate", "amount"?}]},
                     "apply": {"items": [{"doc": {"id": <invoice>}, "apply": true, "amount"?}]}?}
    customerPayment: the spec's body, plus credits it uses up (memos, unapplied payments) towards its `apply`
                     lines: "credit": {"items": [{"doc": {"id"}, "apply": true, "amount"?}]}?; `payment` may be 0;
                     "exchangeRate"? (a positive number: the payment's currency -> its subsidiary's base currency;
                     stored and echoed, used when a deposit in the base currency takes a foreign-currency payment)
    customerRefund: {"externalId", "customer": {"id"}, "currency": {"id"}, "tranDate", "account"?,
                     "apply": {"items": [{"doc": {"id": <credit memo or payment>}, "apply": true, "amount"}]}}
    deposit:        {"externalId", "account": {"id": <bank account>}, "subsidiary"?, "currency"?, "tranDate",
                     "memo"?, "exchangeRate"?,
                     "payment": {"items": [{"id": <customer payment internal id, "1234" or 1234>,
                                            "deposit": true}]}?,
                     "other": {"items": [{"account": {"id"}, "amount": 1.00, "memo"?}]}?,
                     "cashback": {"items": [{"account": {"id"}, "amount": 2.90, "memo"?}]}?}
    journalEntry:   {"externalId"?, "subsidiary": {"id"}, "currency"?, "tranDate"?, "memo"?,
                     "line": {"items": [{"account": {"id"}, "debit": 1.00 | "credit": 1.00, "memo"?}]}}

The deposit, as modelled (sources: docs/research/cash-payouts-fees-disputes.md section 2, which cites the
Record REST v1 browser 2026.1 for `deposit` and Oracle's help sections named below):
  Confirmed [doc]:
  - REST names: body `account` (the bank receiving the funds), `subsidiary`, `currency`, `exchangeRate`,
    `tranDate`, `memo`, `externalId`, `total`; sublists `payment`, `other`, `cashback` (lower-case b), each
    `{"items": [...]}`. A `payment` element has `id` (int64, internal id of the deposited transaction) and
    `deposit` (boolean), plus read-only `paymentAmount`, `transactionAmount`, `currency`, `type`, ...; an `other`
    element `account`, `amount`, `entity`, `memo`, ...; a `cashback` element `account`, `amount`, `memo` (no entity).
  - "Every deposit record must have at least one line ... the net sum of all line amounts must be positive";
    total = payments + other - cash back ("Deposit Usage Notes and Field Summary", section_3941934330).
  - Other Deposits: "The amount of each line must be positive". Cash Back: "the amount field in this sublist
    can take a negative value ... the system saves the Cash Back line as a line in the Other Deposits sublist"
    (same section): the stand-in moves such a line to `other` with the opposite (positive) amount.
  - Payments: "Each line must reference an existing record for a transaction ... that posted to the
    Undeposited Funds account" (same section); its status "cannot be Deposited" ("Adding a Record With Payment
    Lines", section_3941950392). `deposit: false` removes a line ("Updating the Deposit Record",
    section_3948125053, SOAP).
  - A deposited payment's status is Deposited, an undeposited one Not Deposited (Stripe connector docs).
  - 5,000 lines per transaction through SOAP web services and CSV import ("Entering Transaction Line Items",
    section_N550610).
  Assumed here:
  - REST takes the SOAP payment-line shape `{"id", "deposit"}` (no REST sample posts payment lines); `id` may be
    a string or an integer. A line without `deposit` counts as `deposit: true`.
  - The 5,000-line limit holds for REST too, for every transaction type, counting the lines of all its
    sublists (`max_transaction_lines`, a NetSuiteConfig knob).
  - A customer payment without `account` posted to Undeposited Funds (NetSuite's default when "Undep. Funds"
    is selected); the Undeposited Funds account is the one the account file flags `undepositedFunds: true`.
  - The errors for a payment that is unknown, already in another deposit, or not in Undeposited Funds are
    INVALID_KEY_OR_REF on the line's `id` (NetSuite does not list such a payment on the deposit, so its key is
    not a valid line key); the wording after the first sentence is the stand-in's.
  - A bank account with a `currency` takes deposits in that currency only (Stripe's connector picks the bank
    account per payout currency); the deposit's currency defaults to it.
  - A payment in another currency than the deposit may be deposited only when the deposit is in its
    subsidiary's base currency and the payment carries `exchangeRate`; its line amount (`paymentAmount`) is the
    payment total x exchangeRate rounded half-up to the deposit currency's precision, `transactionAmount` the
    payment total in its own currency (the connector's "75 EUR as 100 USD" example; labels of the REST fields).
  - A payment must belong to the deposit's subsidiary (when the deposit names one).

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
    "deposit": ("payment", "other", "cashback"),
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
}
# Keyed sublists whose key is a line field that is read-only elsewhere: a deposit's payment line is keyed by the
# internal id of the payment (`id`), kept as a string.
SUBLIST_KEY_FIELDS: dict[tuple[str, str], str] = {("deposit", "payment"): "id"}
# ... except on a payment's `credit` lines, which name the credits it uses: memos and unapplied payments.
SUBLIST_DOC_TARGETS: dict[tuple[str, str], tuple[str, ...]] = {
    ("customerPayment", "credit"): ("creditMemo", "customerPayment"),
}
NUMBER_FIELDS = frozenset({"quantity", "rate", "amount", "payment", "debit", "credit", "exchangeRate"})
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
        "paymentAmount",
        "transactionAmount",
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
JOURNAL_APPROVED = ("B", "Approved for Posting")  # no approval routing on the sandbox account (assumed)


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
