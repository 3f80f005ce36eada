"""NetSuite's accounting rules per record type: totals from lines, what a document may apply to,
and the amounts remaining/unapplied that follow.

Each `derive_*` validates a merged record (the stored one with the request's changes) WITHOUT
changing the state and returns what to commit: its total, the amounts it applies to other
documents, and the payments a deposit gathers. Re-saving a document therefore recomputes its
applications (they replace the old ones) instead of adding to them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .config import AccountRules
from .errors import (
    INVALID_KEY_OR_REF,
    LINE_ITEM_REQUIRED_DETAIL,
    OUT_OF_BALANCE_DETAIL,
    NetSuiteError,
    bad_request,
    invalid_reference,
    missing_values,
)
from .schema import (
    CREDIT_FULLY_APPLIED,
    CREDIT_OPEN,
    INVOICE_OPEN,
    INVOICE_PAID,
    JOURNAL_APPROVED,
    MONEY_FIELDS,
    PAYMENT_DEPOSITED,
    PAYMENT_NOT_DEPOSITED,
    SUBLISTS,
    TRANSACTION_TYPES,
    quantize,
)

if TYPE_CHECKING:
    from .state import NetSuiteState

ZERO = Decimal(0)
Record = dict[str, Any]


@dataclass(frozen=True)
class Derived:
    total: Decimal | None = None
    outgoing: dict[str, Decimal] = field(default_factory=dict)
    credits: dict[str, Decimal] = field(default_factory=dict)  # a payment's credit lines: credit -> amount used
    deposits: frozenset[str] = frozenset()
    currency: str | None = None  # set where the record may omit it (deposit, journal entry)


def derive(state: NetSuiteState, record_type: str, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    return _DERIVERS[record_type](state, record, rid, rules)


# ---- checks shared by the record types ----------------------------------------------------------
def _check_currency_allowed(state: NetSuiteState, subsidiary_id: str | None, currency_id: str | None) -> None:
    if not subsidiary_id or not currency_id:
        return
    subsidiary = state.reference["subsidiary"][subsidiary_id]
    # In OneWorld a transaction's currency must be the subsidiary's base currency or one it allows;
    # NetSuite answers INVALID_KEY_OR_REF on the currency field otherwise.
    allowed = [str(c) for c in subsidiary.get("allowedCurrencies", [subsidiary.get("currency")])]
    if currency_id not in allowed:
        names = ", ".join(state.ref_name("currency", c) for c in allowed)
        raise bad_request(
            f"Invalid Field Value {currency_id} for the following field: currency. "
            f"Currency {state.ref_name('currency', currency_id)} is not allowed for subsidiary {subsidiary_id} "
            f"({subsidiary['name']}); allowed: {names}.",
            INVALID_KEY_OR_REF,
        )


def _check_customer_context(state: NetSuiteState, record: Record, customer_field: str, rules: AccountRules) -> None:
    """The transaction's subsidiary is its customer's, and its currency is allowed there."""
    customer = state.get("customer", record.get(customer_field) or "") or {}
    subsidiary = record.get("subsidiary") or customer.get("subsidiary")
    if (
        rules.transaction_subsidiary_must_match_customer
        and record.get("subsidiary")
        and customer.get("subsidiary")
        and record["subsidiary"] != customer["subsidiary"]
    ):
        raise bad_request(
            f"Invalid Field Value {record['subsidiary']} for the following field: subsidiary. "
            f"The customer {state.ref_name('customer', customer['id'])} belongs to subsidiary "
            f"{customer['subsidiary']} ({state.ref_name('subsidiary', customer['subsidiary'])}).",
            INVALID_KEY_OR_REF,
        )
    _check_currency_allowed(state, subsidiary, record.get("currency"))
    currency = record.get("currency")
    if customer and currency and currency not in customer_currencies(state, customer):
        # NetSuite's answer for a transaction outside the customer's currency list (wire-protocols.md §A).
        raise bad_request(
            f"Invalid currency reference key {currency} for entity {customer['id']}.", INVALID_KEY_OR_REF, "currency"
        )


def customer_currencies(state: NetSuiteState, customer: Record) -> list[str]:
    """What a customer may transact in: its primary currency, then those on its currency list."""
    # A customer saved before it had a currency (or loaded from an older state file) falls back to the base
    # currency of its subsidiary, which is what NetSuite defaults the primary currency to.
    primary = customer.get("currency") or _base_currency(state, customer.get("subsidiary"))
    listed = [line["currency"] for line in customer.get("currencyList", []) if line.get("currency")]
    return list(dict.fromkeys([primary, *listed]))


def _check_same_party(state: NetSuiteState, record: Record, customer_field: str, doc_id: str) -> Record:
    """A document this record applies to must belong to the same customer and be in the same currency."""
    doc_type = state.type_of[doc_id]
    doc = state.records[doc_type][doc_id]
    doc_name = state.ref_name(doc_type, doc_id)
    # Invoices and credit memos name their customer in `entity`, payments and refunds in `customer`.
    if (doc.get("entity") or doc.get("customer")) != record.get(customer_field):
        raise bad_request(f"{doc_name} belongs to another customer than this transaction's.", INVALID_KEY_OR_REF)
    if record.get("currency") and doc.get("currency") != record.get("currency"):
        raise bad_request(
            f"{doc_name} is in {state.ref_name('currency', doc.get('currency', ''))}, this transaction in "
            f"{state.ref_name('currency', record['currency'])}.",
        )
    return doc


def _base_currency(state: NetSuiteState, subsidiary_id: str | None) -> str:
    return str(state.reference["subsidiary"].get(subsidiary_id or "1", {}).get("currency", "1"))


# ---- amounts remaining ------------------------------------------------------------------------
def invoice_remaining(state: NetSuiteState, invoice_id: str, excluding: str | None = None) -> Decimal:
    return state.records["invoice"][invoice_id]["total"] - state.applied_to(invoice_id, excluding)


def credit_unapplied(state: NetSuiteState, doc_id: str, excluding: str | None = None) -> Decimal:
    """What is left of a credit memo or payment after its applications, refunds and use as a payment's credit."""
    doc = state.records[state.type_of[doc_id]][doc_id]
    # Unapplied = total - what it pays to invoices (outgoing) + the credits a payment used towards that
    # - what refunds took from it (incoming) - what other payments used of it as credit.
    return (
        doc["total"]
        - state.applied_from(doc_id)
        + state.credits_given(doc_id)
        - state.applied_to(doc_id, excluding)
        - state.credit_taken(doc_id, excluding)
    )


def _taken_from(state: NetSuiteState, rid: str | None) -> Decimal:
    """What refunds and other payments' credit lines already took from this credit memo or payment."""
    return state.applied_to(rid) + state.credit_taken(rid) if rid else ZERO


def _item_total(state: NetSuiteState, record: Record) -> Decimal:
    """Sum of item lines; a line without amount is quantity x rate, rounded to the currency's precision."""
    precision = state.precision(record.get("currency"))
    total = ZERO
    for line in record.get("item", []):
        if not line.get("item"):
            raise missing_values(["Item"])
        amount = line.get("amount")
        if amount is None:
            if line.get("rate") is None:
                raise missing_values(["Amount"])
            amount = line.get("quantity", Decimal(1)) * line["rate"]
        # Rounded per line, as NetSuite does, so the total is the sum of the rounded lines (precision 0 or 2).
        line["amount"] = quantize(amount, precision)
        total += line["amount"]
    if total < 0:
        raise bad_request("The total of this transaction cannot be negative.")
    return total


def _selected_docs(lines: list[Record], flag: str, label: str) -> Iterator[tuple[Record, str]]:
    """Lines not switched off by `flag` (apply: false), each with the document it names in `doc`."""
    for line in lines:
        if line.get(flag) is False:
            continue
        if not line.get("doc"):
            raise missing_values([label])
        yield line, line["doc"]


def _apply_lines(
    state: NetSuiteState,
    record: Record,
    rid: str | None,
    customer_field: str,
    remaining_of: Callable[[NetSuiteState, str, str | None], Decimal],
    budget: Decimal | None,
    sublist: str = "apply",
) -> dict[str, Decimal]:
    """The `apply` (or a payment's `credit`) sublist -> {document id: amount}; each within the document's remaining.

    A line without amount takes what the document has remaining (bounded by what is left of `budget`).
    """
    precision = state.precision(record.get("currency"))
    applied: dict[str, Decimal] = {}
    for line, doc_id in _selected_docs(record.get(sublist, []), "apply", "Applied To"):
        if doc_id == rid:
            raise bad_request("A transaction cannot be applied to itself.")
        _check_same_party(state, record, customer_field, doc_id)
        # `rid` excluded: on a re-save this document's own earlier application is replaced, not counted twice.
        remaining = remaining_of(state, doc_id, rid) - applied.get(doc_id, ZERO)
        if line.get("amount") is None:
            left = None if budget is None else budget - sum(applied.values(), ZERO)
            amount = remaining if left is None else min(remaining, left)
        else:
            amount = quantize(line["amount"], precision)
        if amount < 0:
            raise bad_request("An applied amount cannot be negative.")
        if amount > remaining:
            raise bad_request(
                f"You cannot apply {amount} to {state.ref_name(state.type_of[doc_id], doc_id)}: "
                f"its amount remaining is {remaining}."
            )
        line["amount"] = amount
        if amount:
            applied[doc_id] = applied.get(doc_id, ZERO) + amount
    return applied


# ---- per record type --------------------------------------------------------------------------
def derive_customer(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    """Primary currency (the subsidiary's base one when omitted) and the currency list, primary first."""
    subsidiary = record.get("subsidiary")
    if not record.get("currency"):
        record["currency"] = _base_currency(state, subsidiary)
    # A write adds currencies to the list and never drops one: NetSuite keeps a currency the customer has
    # transactions in, and a pipeline re-upserting a customer with only its newest currency must not lose the rest.
    stored = state.records["customer"].get(rid or "", {}).get("currencyList", [])
    lines: dict[str, Record] = {}
    for line in [*stored, *record.get("currencyList", [])]:
        if not line.get("currency"):
            raise missing_values(["Currency"])
        lines[line["currency"]] = {**lines.get(line["currency"], {}), **line}
    primary = lines.pop(record["currency"], {"currency": record["currency"]})
    record["currencyList"] = [primary, *lines.values()]
    for currency in customer_currencies(state, record):
        _check_currency_allowed(state, subsidiary, currency)
    return Derived()


def derive_invoice(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    _check_customer_context(state, record, "entity", rules)
    total = _item_total(state, record)
    applied = state.applied_to(rid) if rid else ZERO
    if total < applied:
        raise bad_request(f"The total {total} is less than the amount already applied to this invoice ({applied}).")
    return Derived(total=total)


def derive_credit_memo(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    """Applies to the invoices its `apply` sublist names; without that sublist, to its `createdFrom` invoice
    while that is open (on a paid invoice it stays unapplied credit)."""
    _check_customer_context(state, record, "entity", rules)
    total = _item_total(state, record)
    taken = _taken_from(state, rid)
    if total < taken:
        raise bad_request(
            f"The total {total} is less than the amount already refunded or credited from this credit memo ({taken})."
        )
    available = total - taken
    outgoing: dict[str, Decimal] = {}
    if "apply" in record:
        # An apply sublist is authoritative, as NetSuite's Apply subtab: lines switched off (or none at all) leave
        # the memo unapplied even with createdFrom.
        outgoing = _apply_lines(state, record, rid, "entity", invoice_remaining, budget=available)
        applied = sum(outgoing.values(), ZERO)
        if applied > available:
            raise bad_request(
                f"The total applied ({applied}) exceeds the amount of this credit memo available to apply "
                f"({available})."
            )
        return Derived(total=total, outgoing=outgoing)
    invoice_id = record.get("createdFrom")
    if invoice_id:
        _check_same_party(state, record, "entity", invoice_id)
        # Applied up to what the invoice still owes; the rest stays on the memo as unapplied credit.
        amount = min(available, invoice_remaining(state, invoice_id, rid))
        if amount > 0:
            outgoing[invoice_id] = amount
    return Derived(total=total, outgoing=outgoing)


def derive_customer_payment(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    """Applies the payment plus the credits it uses (its `credit` lines) to invoices; what the invoices do not
    take stays unapplied on the payment."""
    _check_customer_context(state, record, "customer", rules)
    payment = quantize(record["payment"], state.precision(record.get("currency")))
    if payment < 0:
        raise bad_request("The payment amount cannot be negative.")
    if record.get("exchangeRate") is not None and record["exchangeRate"] <= 0:
        raise bad_request(f"Invalid Field Value {record['exchangeRate']} for the following field: exchangeRate")
    record["payment"] = payment
    # Each credit within its own unapplied amount; they add to what the payment can apply (NetSuite's "To Apply").
    credits = _apply_lines(state, record, rid, "customer", credit_unapplied, budget=None, sublist="credit")
    credited = sum(credits.values(), ZERO)
    to_apply = payment + credited
    outgoing = _apply_lines(state, record, rid, "customer", invoice_remaining, budget=to_apply)
    applied = sum(outgoing.values(), ZERO)
    if applied > to_apply:
        with_credits = f" plus the credits applied ({credited})" if credited else ""
        raise bad_request(f"The total applied ({applied}) exceeds the payment amount ({payment}){with_credits}.")
    taken = _taken_from(state, rid)
    if applied + taken > to_apply:
        raise bad_request(
            f"The payment amount {payment} is less than what is applied ({applied}) and refunded or credited ({taken})."
        )
    return Derived(total=payment, outgoing=outgoing, credits=credits)


def derive_customer_refund(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    """Pays back a credit memo's or payment's unapplied money; cannot take more than is unapplied."""
    _check_customer_context(state, record, "customer", rules)
    outgoing = _apply_lines(state, record, rid, "customer", credit_unapplied, budget=None)
    if not outgoing:
        raise bad_request(LINE_ITEM_REQUIRED_DETAIL)
    return Derived(total=sum(outgoing.values(), ZERO), outgoing=outgoing)


def derive_deposit(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    """Customer payments taken out of Undeposited Funds (each in one deposit only) + other deposits - cash back,
    into the bank account `account` (schema.py's docstring says what is confirmed and what assumed)."""
    account_id = record.get("account")
    bank = state.reference["account"].get(account_id or "", {})
    if account_id and bank.get("acctType") != "Bank":
        raise invalid_reference("account", account_id)
    # A bank account in a currency takes deposits in that currency; the deposit's currency defaults to it.
    currency = record.get("currency") or bank.get("currency") or _base_currency(state, record.get("subsidiary"))
    if bank.get("currency") and currency != bank["currency"]:
        raise bad_request(
            f"Invalid Field Value {currency} for the following field: currency. The bank account "
            f"{bank['name']} is in {state.ref_name('currency', bank['currency'])}; a deposit into it must be too.",
            INVALID_KEY_OR_REF,
            "currency",
        )
    _check_currency_allowed(state, record.get("subsidiary"), currency)
    record["currency"] = currency
    precision = state.precision(currency)
    payment_ids = _deposited_payments(state, record, rid, currency)
    # A negative cash back line debits its account, which NetSuite saves as an Other Deposits line.
    cashback = []
    for line in record.get("cashback", []):
        _check_account_line(line, precision)
        if line["amount"] < 0:
            record.setdefault("other", []).append({**line, "amount": -line["amount"]})
        else:
            cashback.append(line)
    if "cashback" in record:
        record["cashback"] = cashback
    for line in record.get("other", []):
        _check_account_line(line, precision)
        if line["amount"] <= 0:
            raise bad_request(f"The amount of each Other Deposits line must be positive, not {line['amount']}.")
    if not (payment_ids or record.get("other") or cashback):
        raise bad_request(LINE_ITEM_REQUIRED_DETAIL)
    total = (
        sum((line["paymentAmount"] for line in record.get("payment", [])), ZERO)
        + sum((line["amount"] for line in record.get("other", [])), ZERO)
        - sum((line["amount"] for line in cashback), ZERO)
    )
    if total <= 0:
        raise bad_request(
            f"The net sum of all line amounts must be positive: payments plus other deposits less cash back is {total}."
        )
    return Derived(total=total, deposits=frozenset(payment_ids), currency=currency)


def undeposited_funds_accounts(state: NetSuiteState) -> frozenset[str]:
    """The account file flags the Undeposited Funds account (`undepositedFunds: true`) rather than naming it."""
    return frozenset(rid for rid, row in state.reference["account"].items() if row.get("undepositedFunds") is True)


def _deposited_payments(state: NetSuiteState, record: Record, rid: str | None, currency: str) -> list[str]:
    """The payment lines switched on: each a payment in Undeposited Funds, in no other deposit. Sets each line's
    `paymentAmount` (deposit currency), `transactionAmount` (the payment's own currency) and `currency`."""
    undeposited = undeposited_funds_accounts(state)
    base = _base_currency(state, record.get("subsidiary"))
    precision = state.precision(currency)
    payment_ids: list[str] = []
    for line in record.get("payment", []):
        payment_id = line.get("id")
        if not payment_id:
            raise missing_values(["Payment"])
        if line.get("deposit") is False:
            continue

        def refuse(reason: str, payment_id: str = payment_id) -> NetSuiteError:
            return bad_request(
                f"Invalid Field Value {payment_id} for the following field: id. {reason}", INVALID_KEY_OR_REF, "payment"
            )

        if state.type_of.get(payment_id) != "customerPayment":
            raise refuse("No customer payment has this internal id.")
        payment = state.records["customerPayment"][payment_id]
        name = state.ref_name("customerPayment", payment_id)
        # A payment leaves Undeposited Funds once: a second deposit of it is refused (re-saving its own
        # deposit is fine).
        holder = state.deposited_in.get(payment_id)
        if holder not in (None, rid):
            raise refuse(f"{name} has already been deposited in {state.ref_name('deposit', holder)}.")
        if payment_id in payment_ids:
            raise refuse(f"{name} is listed twice on this deposit.")
        if payment.get("account") and payment["account"] not in undeposited:
            account_name = state.ref_name("account", payment["account"])
            raise refuse(f"{name} did not post to Undeposited Funds (its account is {account_name}).")
        customer = state.get("customer", payment.get("customer") or "") or {}
        payment_subsidiary = payment.get("subsidiary") or customer.get("subsidiary")
        if record.get("subsidiary") and payment_subsidiary and payment_subsidiary != record["subsidiary"]:
            raise refuse(f"{name} belongs to subsidiary {state.ref_name('subsidiary', payment_subsidiary)}.")
        line["paymentAmount"] = _deposit_amount(state, payment, name, currency, base, precision)
        line["transactionAmount"] = payment["total"]
        line["currency"] = payment.get("currency")
        payment_ids.append(payment_id)
    if "payment" in record:  # a line switched off leaves the deposit (its payment is Not Deposited again)
        record["payment"] = [line for line in record["payment"] if line.get("deposit") is not False]
    return payment_ids


def _deposit_amount(
    state: NetSuiteState, payment: Record, name: str, currency: str, base: str, precision: int
) -> Decimal:
    """The payment in the deposit's currency: as it is, or converted at its exchangeRate into the base currency."""
    if payment.get("currency") == currency:
        return payment["total"]
    if currency != base or payment.get("exchangeRate") is None:
        raise bad_request(
            f"{name} is in {state.ref_name('currency', payment.get('currency', ''))}, this deposit in "
            f"{state.ref_name('currency', currency)}: a payment in another currency can only be deposited in the "
            "subsidiary's base currency, at the exchange rate on the payment.",
        )
    return quantize(payment["total"] * payment["exchangeRate"], precision)


def _check_account_line(line: Record, precision: int) -> None:
    if not line.get("account"):
        raise missing_values(["Account"])
    if line.get("amount") is None:
        raise missing_values(["Amount"])
    line["amount"] = quantize(line["amount"], precision)


def check_line_count(record_type: str, record: Record, rules: AccountRules) -> None:
    """NetSuite's line limit per transaction (5,000 through web services; REST assumed the same), over all sublists."""
    if record_type not in TRANSACTION_TYPES:
        return
    lines = sum(len(record.get(name) or []) for name in SUBLISTS.get(record_type, ()))
    if lines > rules.max_transaction_lines:
        raise bad_request(
            f"This transaction has {lines} lines. The limit for transactions submitted through web services is "
            f"{rules.max_transaction_lines} lines per transaction."
        )


def _check_account_currency(state: NetSuiteState, account_id: str, currency: str) -> None:
    """A bank account in a currency takes postings in that currency only (assumed for journals as for deposits)."""
    account = state.reference["account"].get(account_id, {})
    if account.get("currency") and account["currency"] != currency:
        raise bad_request(
            f"Invalid Field Value {account_id} for the following field: account. The account {account['name']} is "
            f"in {state.ref_name('currency', account['currency'])}, this transaction in "
            f"{state.ref_name('currency', currency)}.",
            INVALID_KEY_OR_REF,
            "account",
        )


def derive_journal_entry(state: NetSuiteState, record: Record, rid: str | None, rules: AccountRules) -> Derived:
    currency = record.get("currency") or _base_currency(state, record.get("subsidiary"))
    _check_currency_allowed(state, record.get("subsidiary"), currency)
    record["currency"] = currency
    precision = state.precision(currency)
    debits = credits = ZERO
    for line in record.get("line", []):
        if not line.get("account"):
            raise missing_values(["Account"])
        _check_account_currency(state, line["account"], currency)
        for side in ("debit", "credit"):
            if line.get(side) is not None:
                line[side] = quantize(line[side], precision)
                if line[side] < 0:
                    raise bad_request(f"A journal line's {side} cannot be negative.")
        debits += line.get("debit", ZERO)
        credits += line.get("credit", ZERO)
    # Compared after rounding each line to the currency's precision, as NetSuite balances the entry.
    if debits != credits:
        raise bad_request(OUT_OF_BALANCE_DETAIL)
    return Derived(total=debits, currency=currency)


_DERIVERS: dict[str, Callable[[NetSuiteState, Record, str | None, AccountRules], Derived]] = {
    "customer": derive_customer,
    "invoice": derive_invoice,
    "creditMemo": derive_credit_memo,
    "customerPayment": derive_customer_payment,
    "customerRefund": derive_customer_refund,
    "deposit": derive_deposit,
    "journalEntry": derive_journal_entry,
}


# ---- precision journal (sandbox only) ----------------------------------------------------------
def precision_violations(state: NetSuiteState, record_type: str, sent: Record, currency: str | None) -> list[Record]:
    """Amounts a request sent with more decimals than the currency holds (NetSuite rounds them when saving).

    Only what the request itself carried counts (a line's amount, not quantity x rate), and a value that fits,
    such as 12.340 at precision 2, is no violation: nothing is lost rounding it.
    """
    precision = state.precision(currency)
    found: list[Record] = []

    def check(path: str, value: Any) -> None:
        if isinstance(value, Decimal) and (stored := quantize(value, precision)) != value:
            found.append(
                {
                    "recordType": record_type,
                    "field": path,
                    "sent": value,
                    "stored": stored,
                    "currency": state.ref_name("currency", currency or ""),
                    "currencyId": currency,
                    "currencyPrecision": precision,
                }
            )

    for name, value in sent.items():
        if name in SUBLISTS.get(record_type, ()) and isinstance(value, list):
            for index, line in enumerate(value, start=1):
                for key in MONEY_FIELDS:
                    check(f"{name}[{index}].{key}", line.get(key))
        elif name in MONEY_FIELDS:
            check(name, value)
    return found


# ---- read side ---------------------------------------------------------------------------------
def status_of(state: NetSuiteState, record_type: str, rid: str) -> tuple[str, str] | None:
    if record_type == "invoice":
        # A zero-total invoice is Paid In Full from the start, as in NetSuite.
        return INVOICE_OPEN if invoice_remaining(state, rid) > 0 else INVOICE_PAID
    if record_type == "creditMemo":
        return CREDIT_OPEN if credit_unapplied(state, rid) > 0 else CREDIT_FULLY_APPLIED
    if record_type == "customerPayment":
        return PAYMENT_DEPOSITED if rid in state.deposited_in else PAYMENT_NOT_DEPOSITED
    if record_type == "journalEntry":
        return JOURNAL_APPROVED
    return None


def amount_remaining(state: NetSuiteState, record_type: str, rid: str) -> Decimal | None:
    """SuiteQL's foreignamountremaining: open balance of an invoice, unapplied credit of a memo or payment."""
    if record_type == "invoice":
        return invoice_remaining(state, rid)
    if record_type in ("creditMemo", "customerPayment"):
        return credit_unapplied(state, rid)
    return None


def derived_fields(state: NetSuiteState, record_type: str, rid: str) -> dict[str, Any]:
    """Read-only fields a GET shows: amounts remaining/applied and the status."""
    status = status_of(state, record_type, rid)
    fields: dict[str, Any] = {}
    if record_type == "invoice":
        remaining = invoice_remaining(state, rid)
        fields = {"amountRemaining": remaining, "amountPaid": state.records["invoice"][rid]["total"] - remaining}
    elif record_type in ("creditMemo", "customerPayment"):
        fields = {"applied": state.applied_from(rid), "unapplied": credit_unapplied(state, rid)}
    if status:
        fields["status"] = {"id": status[0], "refName": status[1]}
    return fields
