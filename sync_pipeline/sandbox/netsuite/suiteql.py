"""A SuiteQL subset over the `customer`, `transaction`, `transactionline` and `transactionaccountingline` tables.

Supported: `SELECT * | item [AS alias], ... FROM table [alias] [[INNER] JOIN table [alias] ON a.x = b.y [AND ...]]
... [WHERE ...] [GROUP BY col, ...] [ORDER BY col|alias [ASC|DESC], ...]`, where an item is a column, `COUNT(*)`
or `SUM(col)` (with aggregates, every plain column must be grouped), and conditions combine with AND / OR / NOT
and parentheses: `col = | <> | != | < | <= | > | >= value`, `col [NOT] IN (v, ...)`, `col [NOT] LIKE 'x%'`,
`col IS [NOT] NULL`; values are 'strings', numbers or TO_DATE('2026-11-02', 'YYYY-MM-DD'). Joins are inner, on
column equalities (hashed, so a join costs what its tables hold). Anything else (outer joins, other functions,
expressions, HAVING, subqueries) is refused with NetSuite's 400. What the reconciliation asks: a document's lines
(`... FROM transactionline WHERE transaction IN (<ids>) AND mainline = 'F'`), and an account's balance per
currency at a date (`SUM` over `transactionaccountingline` joined to `transactionline` and `transaction`).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from . import documents
from .errors import INVALID_PARAMETER, SUITEQL_ERROR_PREFIX, bad_request
from .schema import TRANSACTION_TYPE_CODES, TRANSACTION_TYPES

if TYPE_CHECKING:
    from .state import NetSuiteState

# How items carry values (NetSuite's SuiteQL sends every value as a string and leaves out null
# columns; numbers lose trailing zeros: 100.00 -> "100"). Dates are ISO 'YYYY-MM-DD' here (NetSuite
# uses the account's date format preference).
SUITEQL_VALUES_AS_STRINGS = True
SUITEQL_OMITS_NULL_COLUMNS = True
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 1000
# NetSuite refuses an offset that is not a multiple of the limit (pages follow the `next` links).
OFFSET_MUST_BE_MULTIPLE_OF_LIMIT = True
SUITEQL_PATH = "/services/rest/query/v1/suiteql"

Row = dict[str, Any]
Predicate = Callable[[Row], bool]

# ---- tables -------------------------------------------------------------------------------------
TRANSACTION_COLUMNS = (
    "id",
    "externalid",
    "tranid",
    "type",
    "recordtype",
    "entity",
    "currency",
    "subsidiary",
    "trandate",
    "duedate",
    "foreigntotal",
    "foreignamountremaining",
    "status",
    "createdfrom",
    "memo",
    "department",
    "class",
    "location",
    "account",
    "exchangerate",
    "createddate",
    "lastmodifieddate",
)
CUSTOMER_COLUMNS = (
    "id",
    "externalid",
    "entityid",
    "companyname",
    "firstname",
    "lastname",
    "email",
    "subsidiary",
    "currency",
    "isperson",
    "isinactive",
    "datecreated",
    "lastmodifieddate",
)
# `transactionline`: NetSuite's line table. What public sources confirm, and what the stand-in assumes:
#
# Confirmed (column names and meaning):
#   - `transaction` is the internal id of the line's transaction; `mainline` 'T'/'F' marks the one header line
#     each transaction has; `taxline` 'T' marks tax lines; item lines have `item`, `quantity`, `rate`, `memo`,
#     `foreignamount`, `netamount`, `linesequencenumber` (public SuiteQL filtering `mainline = 'F' AND taxline =
#     'F' ORDER BY linesequencenumber`, reading `tl.item, tl.quantity, tl.rate, tl.netamount, tl.memo`; CData's
#     NetSuite driver, cdn.cdata.com/help/DNK/ado/pg_SuiteQLtable-transactionline.htm, lists the table's columns
#     with `uniquekey` and `id` as its keys; netsuitediagnostics.com/posts/suiteql-transactionline-mainline:
#     "Each transaction has exactly one main line").
#   - `foreignamount` is in the transaction's currency (meir.prolecto.com/2023/02/19/sql-ar-and-ap-fields/), as
#     are transaction line amount fields in general (NetSuite help "Currency in Datasets and Workbooks",
#     docs.oracle.com/en/cloud/saas/netsuite/ns-online-help/section_1544129169.html).
#   - Signs: an invoice's item lines post as credits to income, so their `foreignamount` and `quantity` are
#     NEGATIVE while `rate` is not (public SuiteScript reading invoice lines as `-tl.quantity, tl.rate,
#     -tl.foreignamount` with the comment "Invoice item lines - post negative against income"; public reports
#     summing `-tl.foreignamount` / `-tl.netamount` over `CustInvc` lines with `mainline = 'F' AND taxline = 'F'`,
#     whose comments note that "CustCred and CustRfnd sign-flip correctly under -tl.foreignamount", i.e. credit
#     memo item lines are POSITIVE; a project note "Invoice line `foreignamount` is NEGATIVE").
#   - A line's position: `linesequencenumber` follows the line's place in the sublist, `id` (the "Line ID") is
#     given when the line is created; both equal 1, 2, 3 on item lines never removed, and the header line is
#     line 0 (netsuiterp.com/2019/02/line-id-vs-line-sequence-number.html; netsuite.smash-ict.com "Understand Line
#     ID vs. Line Sequence Number": "Line Sequence Number = 0" / "Line = 0" select the main line, whose Memo is
#     the header memo).
# Assumed here (not confirmed by a source):
#   - The main line carries the document's total with the opposite sign of its item lines (debit-positive, as
#     for A/R: invoice +total, credit memo -total), so a document's lines sum to 0 (no tax, discount or COGS
#     lines in the stand-in). Its `item`, `quantity` and `rate` are null.
#     (The `transaction` table above shows a credit memo's `foreigntotal` positive; its main line here is -total.)
#   - `netamount` equals `foreignamount` (no tax or discounts are modelled); in NetSuite it excludes tax.
#   - An item line's `memo` is the line's `description` as sent over REST; `rate` and `quantity` are null when
#     the request left them out (NetSuite may fill them in).
#   - `id` = `linesequencenumber` = the line's 1-based position in the `item` sublist (the REST `line` number),
#     renumbered when lines are replaced (NetSuite keeps a removed line's id unused); `uniquekey` is not served.
#   - `taxline` is always 'F' (the stand-in has no tax lines). Every transaction has rows (see customer payments
#     and refunds below).
#
# Deposits and journal entries (the cash side):
#   Confirmed: `transactionline` has the columns `expenseaccount`, `createdfrom`, `debitforeignamount` and
#     `creditforeignamount` ("Amount (Debit)/(Credit) (Transaction Currency)") (CData's column list above; a
#     public dump of an account's TransactionLine fields). A posting line's GL account is `account` in
#     `transactionaccountingline` (Tim Dietrich's public "journal entries GL impact" SuiteQL), a table this
#     stand-in does not serve.
#   Assumed here:
#   - A deposit's and a journal's line account is `expenseaccount` (the transactionline column public queries
#     read for the account of non-item lines); the deposit's main line carries the bank account.
#   - Signs are debit-positive, as for invoices (a credit is negative): the deposit's main line debits the bank,
#     +total; a payment line credits Undeposited Funds, -amount in the deposit's currency; an `other` line
#     credits its account (e.g. income from a won dispute), -amount; a `cashback` line debits its account (a
#     Stripe fee to the fee expense), +amount. A deposit's lines therefore sum to 0, like an invoice's.
#     (Oracle's help words the Other/Cash Back postings the other way round; the research notes read them as
#     here, which is what Stripe's connector's use of the sublists implies.)
#   - A journal line: debit -> +debit, credit -> -credit; `debitforeignamount`/`creditforeignamount` hold the
#     unsigned side on every line. A journal has no separate main line here: each journal line is a row with
#     `mainline` 'F', numbered 1, 2, ... (NetSuite may flag its first line as the main line: read a journal's
#     lines without filtering on `mainline`).
#   - Which payments a deposit holds: its payment lines, each with `createdfrom` = the payment's internal id
#     (NetSuite links them through NextTransactionLineLink / PreviousTransactionLineLink, not served here).
#   - Deposit lines are numbered payment lines first, then `other`, then `cashback`, in sublist order.
#   - In `transaction`, a deposit (type 'Deposit') has no `status` (null, so left out of items: NetSuite lists no
#     deposit statuses); a journal (type 'Journal') is 'B' (Approved for Posting); `foreigntotal` is a deposit's
#     net total and a journal's total debits, `account` a deposit's bank account, `exchangerate` the
#     `exchangeRate` a payment (or deposit) was saved with.
#
# Customer payments and refunds (what the Undeposited Funds balance is summed from):
#   Assumed here (NetSuite serves lines for them; which columns it fills on them is not confirmed by a source):
#   - A payment's main line (line 0) debits the account the payment was received into (its `account`: Undeposited
#     Funds unless it names another), +total; line 1 credits Accounts Receivable, -total (applied or not: an
#     unapplied payment is a credit on the customer's receivable). A refund the other way round: its main line
#     credits the account it was paid from, -total; line 1 debits Accounts Receivable, +total.
#   - Their `item`, `quantity`, `rate` and `expenseaccount` are null (the account is served through
#     `transactionaccountingline`, below).
TRANSACTION_LINE_COLUMNS = (
    "transaction",
    "id",
    "linesequencenumber",
    "mainline",
    "taxline",
    "item",
    "quantity",
    "rate",
    "foreignamount",
    "netamount",
    "debitforeignamount",
    "creditforeignamount",
    "expenseaccount",
    "createdfrom",
    "memo",
)
# `transactionaccountingline`: a line's posting to the general ledger, per accounting book.
#   Confirmed: its columns `transaction`, `transactionline`, `accountingbook`, `account`, `posting`, `amount`, `debit`,
#     `credit`, `netamount`, `exchangerate` (CData's column list, cdn.cdata.com/help/DNN/ado/
#     pg_SuiteQLtable-transactionaccountingline.htm); it joins `transactionline` on `tal.transaction =
#     tl.transaction AND tal.transactionline = tl.id` (Tim Dietrich's public "GL impact" SuiteQL); its amounts are
#     in the accounting book's currency (the subsidiary's base currency), the line's own currency amounts stay in
#     `transactionline.foreignamount` / `debitforeignamount` / `creditforeignamount`.
#   Assumed here:
#   - One accounting book (id 1), and every line of every transaction posts (`posting` 'T'): the stand-in holds
#     no non-posting transactions (orders, estimates).
#   - `account` is the line's GL account: a deposit's and a journal's line account (`expenseaccount` above), a
#     payment's or refund's main line its record's `account` (a payment without one: Undeposited Funds), the
#     Accounts Receivable line of an invoice, credit memo, payment or refund the account file's first `AcctRec`
#     account; an item line's income account is not modelled: null.
#   - `amount` = the line's `foreignamount` times the transaction's `exchangerate` (1 when it has none: the
#     stand-in converts nothing else), not rounded; `netamount` = `amount`; `debit`/`credit` its unsigned sides.
TRANSACTION_ACCOUNTING_LINE_COLUMNS = (
    "transaction",
    "transactionline",
    "accountingbook",
    "account",
    "posting",
    "amount",
    "debit",
    "credit",
    "netamount",
    "exchangerate",
)
TABLE_COLUMNS = {
    "transaction": TRANSACTION_COLUMNS,
    "customer": CUSTOMER_COLUMNS,
    "transactionline": TRANSACTION_LINE_COLUMNS,
    "transactionaccountingline": TRANSACTION_ACCOUNTING_LINE_COLUMNS,
}
PRIMARY_ACCOUNTING_BOOK = 1
# A line's GL account for `transactionaccountingline` where `expenseaccount` does not say it (not a column).
LINE_ACCOUNT = "_account"
# The sign of item lines' `foreignamount`/`netamount`/`quantity` per record type (credits negative); the main
# line takes the opposite sign.
ITEM_LINE_SIGNS: dict[str, int] = {"invoice": -1, "creditMemo": 1}


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") and str(value).isdigit() else None


def _flag(value: Any) -> str:
    return "T" if value is True else "F"


def transaction_rows(state: NetSuiteState) -> list[Row]:
    rows = []
    for record_type in TRANSACTION_TYPES:
        for record in state.iter_records(record_type):
            rid = record["id"]
            customer_id = record.get("entity") or record.get("customer")
            customer = state.get("customer", customer_id or "") or {}
            status = documents.status_of(state, record_type, rid)
            rows.append(
                {
                    "id": int(rid),
                    "externalid": record.get("externalId"),
                    "tranid": record.get("tranId"),
                    "type": TRANSACTION_TYPE_CODES[record_type],
                    "recordtype": record_type.lower(),
                    "entity": _int_or_none(customer_id),
                    "currency": _int_or_none(record.get("currency")),
                    "subsidiary": _int_or_none(record.get("subsidiary") or customer.get("subsidiary")),
                    "trandate": record.get("tranDate"),
                    "duedate": record.get("dueDate"),
                    "foreigntotal": record.get("total"),
                    "foreignamountremaining": documents.amount_remaining(state, record_type, rid),
                    "status": status[0] if status else None,
                    "createdfrom": _int_or_none(record.get("createdFrom")),
                    "memo": record.get("memo"),
                    "department": _int_or_none(record.get("department")),
                    "class": _int_or_none(record.get("class")),
                    "location": _int_or_none(record.get("location")),
                    "account": _int_or_none(record.get("account")),
                    "exchangerate": record.get("exchangeRate"),
                    "createddate": record.get("createdDate"),
                    "lastmodifieddate": record.get("lastModifiedDate"),
                }
            )
    return rows


def customer_rows(state: NetSuiteState) -> list[Row]:
    return [
        {
            "id": int(record["id"]),
            "externalid": record.get("externalId"),
            "entityid": record.get("entityId"),
            "companyname": record.get("companyName"),
            "firstname": record.get("firstName"),
            "lastname": record.get("lastName"),
            "email": record.get("email"),
            "subsidiary": _int_or_none(record.get("subsidiary")),
            "currency": _int_or_none(record.get("currency")),
            "isperson": _flag(record.get("isPerson")),
            "isinactive": _flag(record.get("isInactive")),
            "datecreated": record.get("createdDate"),
            "lastmodifieddate": record.get("lastModifiedDate"),
        }
        for record in state.iter_records("customer")
    ]


def _signed(value: Any, sign: int) -> Decimal | None:
    return None if value is None else Decimal(value) * sign


def _line_row(transaction: int, number: int, amount: Decimal | None, **columns: Any) -> Row:
    """One transactionline row: `amount` signed debit-positive; the other columns null unless given."""
    row: Row = dict.fromkeys(TRANSACTION_LINE_COLUMNS)
    row.update(
        transaction=transaction,
        id=number,
        linesequencenumber=number,
        mainline="F",
        taxline="F",
        foreignamount=amount,
        netamount=amount,
        debitforeignamount=amount if amount is not None and amount > 0 else None,
        creditforeignamount=-amount if amount is not None and amount < 0 else None,
    )
    row.update(columns)
    return row


def _receivables_account(state: NetSuiteState) -> int | None:
    """The account file's first Accounts Receivable account (the A/R line of invoices, memos, payments, refunds)."""
    ids = [rid for rid, row in state.reference["account"].items() if row.get("acctType") == "AcctRec"]
    return _int_or_none(min(ids, key=int)) if ids else None


def _item_document_lines(record: dict[str, Any], sign: int, receivable: int | None) -> list[Row]:
    transaction = int(record["id"])
    main = _signed(record.get("total"), -sign)
    rows = [_line_row(transaction, 0, main, mainline="T", memo=record.get("memo"), **{LINE_ACCOUNT: receivable})]
    for number, line in enumerate(record.get("item", []), start=1):
        rows.append(
            _line_row(
                transaction,
                number,
                _signed(line.get("amount"), sign),
                item=_int_or_none(line.get("item")),
                quantity=_signed(line.get("quantity"), sign),
                rate=line.get("rate"),
                memo=line.get("description") or line.get("memo"),
            )
        )
    return rows


def _deposit_lines(state: NetSuiteState, record: dict[str, Any]) -> list[Row]:
    transaction = int(record["id"])
    header = _line_row(
        transaction,
        0,
        _signed(record.get("total"), 1),
        mainline="T",
        expenseaccount=_int_or_none(record.get("account")),
        memo=record.get("memo"),
    )
    undeposited = sorted(documents.undeposited_funds_accounts(state))
    lines: list[tuple[Decimal | None, dict[str, Any]]] = []
    for line in record.get("payment", []):
        payment = state.get("customerPayment", line["id"]) or {}
        account = payment.get("account") or (undeposited[0] if undeposited else None)
        lines.append(
            (
                _signed(line.get("paymentAmount"), -1),
                {"expenseaccount": _int_or_none(account), "createdfrom": _int_or_none(line["id"])},
            )
        )
    for name, sign in (("other", -1), ("cashback", 1)):
        for line in record.get(name, []):
            lines.append(
                (
                    _signed(line.get("amount"), sign),
                    {"expenseaccount": _int_or_none(line.get("account")), "memo": line.get("memo")},
                )
            )
    return [header] + [_line_row(transaction, n, amount, **cols) for n, (amount, cols) in enumerate(lines, start=1)]


def _journal_lines(record: dict[str, Any]) -> list[Row]:
    transaction = int(record["id"])
    rows = []
    for number, line in enumerate(record.get("line", []), start=1):
        amount = Decimal(line.get("debit") or 0) - Decimal(line.get("credit") or 0)
        rows.append(
            _line_row(
                transaction, number, amount, expenseaccount=_int_or_none(line.get("account")), memo=line.get("memo")
            )
        )
    return rows


def _cash_document_lines(record: dict[str, Any], sign: int, account: Any, receivable: int | None) -> list[Row]:
    """A customer payment's (`sign` +1: debit where the money went) or refund's (-1: credit where it came from) main
    line, and its Accounts Receivable line the other way."""
    transaction = int(record["id"])
    return [
        _line_row(
            transaction,
            0,
            _signed(record.get("total"), sign),
            mainline="T",
            memo=record.get("memo"),
            **{LINE_ACCOUNT: _int_or_none(account)},
        ),
        _line_row(transaction, 1, _signed(record.get("total"), -sign), **{LINE_ACCOUNT: receivable}),
    ]


def transaction_line_rows(state: NetSuiteState) -> list[Row]:
    rows = []
    receivable = _receivables_account(state)
    for record_type, sign in ITEM_LINE_SIGNS.items():
        for record in state.iter_records(record_type):
            rows.extend(_item_document_lines(record, sign, receivable))
    undeposited = sorted(documents.undeposited_funds_accounts(state), key=int)
    for record in state.iter_records("customerPayment"):
        account = record.get("account") or (undeposited[0] if undeposited else None)
        rows.extend(_cash_document_lines(record, 1, account, receivable))
    for record in state.iter_records("customerRefund"):
        rows.extend(_cash_document_lines(record, -1, record.get("account"), receivable))
    for record in state.iter_records("deposit"):
        rows.extend(_deposit_lines(state, record))
    for record in state.iter_records("journalEntry"):
        rows.extend(_journal_lines(record))
    return rows


def transaction_accounting_line_rows(state: NetSuiteState) -> list[Row]:
    rates = {
        int(record["id"]): Decimal(str(record["exchangeRate"]))
        for record_type in TRANSACTION_TYPES
        for record in state.iter_records(record_type)
        if record.get("exchangeRate") is not None
    }
    rows = []
    for line in transaction_line_rows(state):
        rate = rates.get(line["transaction"])
        amount = None if line["foreignamount"] is None else line["foreignamount"] * (rate or 1)
        rows.append(
            {
                "transaction": line["transaction"],
                "transactionline": line["id"],
                "accountingbook": PRIMARY_ACCOUNTING_BOOK,
                "account": line.get(LINE_ACCOUNT) or line["expenseaccount"],
                "posting": "T",
                "amount": amount,
                "debit": amount if amount is not None and amount > 0 else None,
                "credit": -amount if amount is not None and amount < 0 else None,
                "netamount": amount,
                "exchangerate": rate or Decimal(1),
            }
        )
    return rows


TABLE_ROWS: dict[str, Callable[[NetSuiteState], list[Row]]] = {
    "transaction": transaction_rows,
    "customer": customer_rows,
    "transactionline": transaction_line_rows,
    "transactionaccountingline": transaction_accounting_line_rows,
}
# Rows come in this order unless ORDER BY says otherwise (a line's `id` is unique only within its transaction).
TABLE_KEYS: dict[str, Callable[[Row], Any]] = {
    "transactionline": lambda row: (row["transaction"], row["id"]),
    "transactionaccountingline": lambda row: (row["transaction"], row["transactionline"]),
}


# ---- parsing ------------------------------------------------------------------------------------
def query_error(message: str):
    return bad_request(SUITEQL_ERROR_PREFIX + message, INVALID_PARAMETER)


_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<op><=|>=|<>|!=|=|<|>)"
    r"|(?P<punct>[(),*])|(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?))"
)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str

    @property
    def upper(self) -> str:
        return self.text.upper()


def tokenize(sql: str) -> list[Token]:
    tokens, position, text = [], 0, sql.strip().rstrip(";")
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise query_error(f"Unsupported SuiteQL near '{text[position : position + 20].strip()}'.")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind)))
        position = match.end()
        while position < len(text) and text[position].isspace():
            position += 1
    return tokens


@dataclass(frozen=True)
class Source:
    """A table of the FROM clause and its alias (the table's name when it has none)."""

    table: str
    alias: str


@dataclass(frozen=True)
class Join:
    source: Source
    pairs: tuple[tuple[str, str], ...]  # (key of the rows joined so far, column of the joined table)


@dataclass(frozen=True)
class SelectItem:
    kind: str  # COLUMN, COUNT or SUM
    key: str  # where the value is in a result row
    name: str  # the output name (NetSuite lower-cases it)
    column: str | None = None  # SUM's column


COLUMN, COUNT, SUM = "column", "count", "sum"
AGGREGATES = (COUNT, SUM)
# Words that end a table reference (so they are never read as its alias).
_CLAUSE_WORDS = frozenset({"WHERE", "ORDER", "GROUP", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "CROSS", "ON"})


@dataclass
class Query:
    sources: list[Source]
    joins: list[Join]
    items: list[SelectItem]
    where: Predicate | None
    group: list[str] | None  # GROUP BY keys; [] when aggregates stand alone (one group)
    order: list[tuple[str, bool]]  # (key, descending)

    @property
    def table(self) -> str:
        return self.sources[0].table

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(key in a result row, output name) of each selected value."""
        return [(item.key, item.name) for item in self.items]


class _Parser:
    """Recursive descent over the tokens; column names are checked against their tables.

    A query of one table reads its rows as they are, keyed by column name (a qualifier is accepted and ignored); a
    query with joins keys each row's values by `alias.column`, and an unqualified column must belong to one table.
    """

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.position = 0
        self.sources: list[Source] = []
        self.joined = any(token.upper == "JOIN" for token in tokens)

    # token helpers
    def peek(self, offset: int = 0) -> Token | None:
        index = self.position + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise query_error("Unexpected end of the query.")
        self.position += 1
        return token

    def accept(self, *words: str) -> bool:
        token = self.peek()
        if token is not None and token.upper in words:
            self.position += 1
            return True
        return False

    def expect(self, word: str) -> None:
        token = self.peek()
        if not self.accept(word):
            raise query_error(f"Expected {word} near '{token.text if token else 'end of query'}'.")

    # grammar
    def parse(self) -> Query:
        self.expect("SELECT")
        select_start = self.position
        while self.peek() is not None and self.peek().upper != "FROM":  # type: ignore[union-attr]
            self.position += 1
        select_end = self.position
        self.expect("FROM")
        self.sources.append(self.source())
        joins = []
        while self.peek() is not None and self.peek().upper in ("INNER", "JOIN"):  # type: ignore[union-attr]
            self.accept("INNER")
            self.expect("JOIN")
            source = self.source()
            self.sources.append(source)
            self.expect("ON")
            joins.append(Join(source, self.join_condition(source)))
        after_from = self.position
        self.position = select_start
        items = self.select_list(select_end)
        self.position = after_from
        where = self.condition() if self.accept("WHERE") else None
        group = None
        if self.accept("GROUP"):
            self.expect("BY")
            group = [self.column()]
            while self.accept(","):
                group.append(self.column())
        if group is None and any(item.kind in AGGREGATES for item in items):
            group = []
        if group is not None:
            for item in items:
                if item.kind == COLUMN and item.key not in group:
                    raise query_error(f"'{item.name}' is not a GROUP BY expression.")
        order = self.order_by(items, group) if self.accept("ORDER") else []
        if self.peek() is not None:
            raise query_error(f"Unsupported SuiteQL near '{self.peek().text}'.")  # type: ignore[union-attr]
        return Query(self.sources, joins, items, where, group, order)

    def source(self) -> Source:
        table = self.take().text.lower()
        if table not in TABLE_COLUMNS:
            raise query_error(f"Record '{table}' was not found.")
        alias = table
        token = self.peek()
        if token is not None and token.kind == "word" and token.upper not in _CLAUSE_WORDS:
            alias = self.take().text.lower()
        if any(s.alias == alias for s in self.sources):
            raise query_error(f"The table alias '{alias}' is used twice.")
        return Source(table, alias)

    def join_condition(self, joined: Source) -> tuple[tuple[str, str], ...]:
        """`a.x = b.y [AND ...]`: equalities between the joined table and the tables before it."""
        pairs = []
        while True:
            left, right = self.column(), None
            token = self.take()
            if token.text != "=":
                raise query_error(f"This subset joins on column equalities only, near '{token.text}'.")
            right = self.column()
            ours = joined.alias + "."
            if right.startswith(ours) and not left.startswith(ours):
                pairs.append((left, right[len(ours) :]))
            elif left.startswith(ours) and not right.startswith(ours):
                pairs.append((right, left[len(ours) :]))
            else:
                raise query_error(f"The join condition of '{joined.alias}' must relate it to a table before it.")
            if not self.accept("AND"):
                return tuple(pairs)

    def column(self) -> str:
        """A column's key in the rows: its name, or `alias.name` in a query with joins."""
        token = self.take()
        if token.kind != "word":
            raise query_error(f"Expected a column near '{token.text}'.")
        qualifier, _, name = token.text.lower().rpartition(".")
        if not self.joined:
            table = self.sources[0].table
            if name not in TABLE_COLUMNS[table]:
                raise query_error(f"Field '{name}' for record '{table}' was not found.")
            return name
        if qualifier:
            source = next((s for s in self.sources if s.alias == qualifier), None)
            if source is None:
                raise query_error(f"'{qualifier}' is not a table of this query.")
            if name not in TABLE_COLUMNS[source.table]:
                raise query_error(f"Field '{name}' for record '{source.table}' was not found.")
            return f"{source.alias}.{name}"
        holders = [s for s in self.sources if name in TABLE_COLUMNS[s.table]]
        if len(holders) != 1:
            where = "is ambiguous" if holders else "was not found in any table of this query"
            raise query_error(f"Field '{name}' {where}.")
        return f"{holders[0].alias}.{name}"

    def alias(self, default: str) -> str:
        if self.accept("AS"):
            return self.take().text.lower()
        return default

    def select_list(self, end: int) -> list[SelectItem]:
        if self.accept("*"):
            if self.joined:
                raise query_error("SELECT * is not supported with joins in this subset: name the columns.")
            return [SelectItem(COLUMN, c, c) for c in TABLE_COLUMNS[self.sources[0].table]]
        items: list[SelectItem] = []
        while True:
            token, following = self.peek(), self.peek(1)
            unnamed = f"expr{sum(1 for i in items if i.kind in AGGREGATES) + 1}"
            if token is not None and token.upper == "COUNT" and following is not None and following.text == "(":
                self.position += 1
                for symbol in ("(", "*", ")"):
                    self.expect(symbol)
                items.append(SelectItem(COUNT, f"#{len(items)}", self.alias(unnamed)))
            elif token is not None and token.upper == "SUM" and following is not None and following.text == "(":
                self.position += 2
                column = self.column()
                self.expect(")")
                items.append(SelectItem(SUM, f"#{len(items)}", self.alias(unnamed), column))
            else:
                key = self.column()
                items.append(SelectItem(COLUMN, key, self.alias(key.rpartition(".")[2])))
            if self.position >= end or not self.accept(","):
                break
        if self.position != end:
            raise query_error(f"Unsupported select list near '{self.peek().text}'.")  # type: ignore[union-attr]
        return items

    def order_by(self, items: list[SelectItem], group: list[str] | None) -> list[tuple[str, bool]]:
        self.expect("BY")
        named = {item.name: item.key for item in items}
        order = []
        while True:
            token = self.peek()
            if group is not None and token is not None and token.text.lower() in named:
                self.position += 1
                key = named[token.text.lower()]
            else:
                key = self.column()
                if group is not None and key not in group:
                    raise query_error(f"ORDER BY '{key}' is not a GROUP BY expression.")
            descending = self.accept("DESC")
            if not descending:
                self.accept("ASC")
            order.append((key, descending))
            if not self.accept(","):
                return order

    def condition(self) -> Predicate:
        parts = [self.conjunction()]
        while self.accept("OR"):
            parts.append(self.conjunction())
        return parts[0] if len(parts) == 1 else (lambda row: any(p(row) for p in parts))

    def conjunction(self) -> Predicate:
        parts = [self.unary()]
        while self.accept("AND"):
            parts.append(self.unary())
        return parts[0] if len(parts) == 1 else (lambda row: all(p(row) for p in parts))

    def unary(self) -> Predicate:
        if self.accept("NOT"):
            inner = self.unary()
            return lambda row: not inner(row)
        if self.accept("("):
            inner = self.condition()
            self.expect(")")
            return inner
        return self.predicate()

    def predicate(self) -> Predicate:
        name = self.column()
        negate = self.accept("NOT")
        if self.accept("IN"):
            values = self.value_list()
            # Text columns compare as text: a set makes `externalid IN (500 ids)` one lookup per row.
            as_text = frozenset(str(v) for v in values if v is not None)
            # Numbers compare as numbers, through a set too (equal Decimals hash alike: 7 == 7.0), so
            # `transaction IN (500 ids)` over every line stays one lookup per row.
            as_number = frozenset(_number(v) for v in values if _number(v) is not None)

            def member(value: Any) -> bool:
                if isinstance(value, (int, Decimal)):
                    return Decimal(value) in as_number
                return str(value) in as_text

            return lambda row: (row[name] is not None and member(row[name])) != negate
        if self.accept("LIKE"):
            pattern = _like_pattern(self.literal())
            return lambda row: (row[name] is not None and bool(pattern.fullmatch(str(row[name])))) != negate
        if negate:
            raise query_error("NOT must be followed by IN or LIKE here.")
        if self.accept("IS"):
            is_not = self.accept("NOT")
            self.expect("NULL")
            return lambda row: (row[name] is None) != is_not
        token = self.take()
        if token.kind != "op":
            raise query_error(f"Unsupported operator near '{token.text}'.")
        value = self.literal()
        test = _OPERATORS[token.text]
        return lambda row: (c := _compare(row[name], value)) is not None and test(c)

    def value_list(self) -> list[Any]:
        self.expect("(")
        values = [self.literal()]
        while self.accept(","):
            values.append(self.literal())
        self.expect(")")
        return values

    def literal(self) -> Any:
        token = self.take()
        if token.kind == "string":
            return token.text[1:-1].replace("''", "'")
        if token.kind == "number":
            return Decimal(token.text)
        if token.upper == "TO_DATE":
            self.expect("(")
            text = self.literal()
            if self.accept(","):
                if str(self.literal()).upper() != "YYYY-MM-DD":
                    raise query_error("TO_DATE supports only the format 'YYYY-MM-DD'.")
            self.expect(")")
            return str(text)
        raise query_error(f"Expected a value near '{token.text}'.")


_OPERATORS: dict[str, Callable[[int], bool]] = {
    "=": lambda c: c == 0,
    "<>": lambda c: c != 0,
    "!=": lambda c: c != 0,
    "<": lambda c: c < 0,
    "<=": lambda c: c <= 0,
    ">": lambda c: c > 0,
    ">=": lambda c: c >= 0,
}


def _number(value: Any) -> Decimal | None:
    """A literal as a number, if it is one (`7`, `'7'`), for numeric IN lists."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    try:
        number = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return number if number.is_finite() else None


def _compare(value: Any, literal: Any) -> int | None:
    """-1/0/1, numerically for number columns, as text otherwise; None when either side is null."""
    if value is None or literal is None:
        return None
    if isinstance(value, (int, Decimal)):
        try:
            left, right = Decimal(value), Decimal(str(literal))
        except InvalidOperation:
            return None
    else:
        left, right = str(value), str(literal)  # type: ignore[assignment]
    return (left > right) - (left < right)


def _like_pattern(text: Any) -> re.Pattern[str]:
    parts = ("." if ch == "_" else ".*" if ch == "%" else re.escape(ch) for ch in str(text))
    return re.compile("".join(parts), re.DOTALL)


def parse(sql: str) -> Query:
    return _Parser(tokenize(sql)).parse()


# ---- execution ----------------------------------------------------------------------------------
def _format(value: Any) -> Any:
    if not SUITEQL_VALUES_AS_STRINGS:
        return value
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    return str(value)


def _item(row: Row, columns: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "links": [],
        **{out: _format(row[col]) for col, out in columns if not (SUITEQL_OMITS_NULL_COLUMNS and row[col] is None)},
    }


def _sorted(rows: list[Row], order: list[tuple[str, bool]], default: Callable[[Row], Any] | None) -> list[Row]:
    rows = sorted(rows, key=default) if default is not None else list(rows)
    for name, descending in reversed(order):
        present = [r for r in rows if r[name] is not None]
        missing = [r for r in rows if r[name] is None]
        present.sort(key=lambda row: row[name], reverse=descending)
        # Oracle puts nulls last ascending and first descending.
        rows = missing + present if descending else present + missing
    return rows


def _join_key(value: Any) -> Any:
    """A value as a join compares it: numbers as numbers (7 joins '7' and 7.0), anything else as text."""
    number = _number(value)
    return number if number is not None else str(value)


def _joined_rows(tables: Mapping[str, list[Row]], query: Query) -> list[Row]:
    """Inner joins by hashing each joined table on its join columns; rows keyed `alias.column`."""
    first = query.sources[0].alias
    rows = [{f"{first}.{column}": value for column, value in row.items()} for row in tables[first]]
    for join in query.joins:
        index: dict[tuple, list[Row]] = defaultdict(list)
        for row in tables[join.source.alias]:
            values = [row[column] for _, column in join.pairs]
            if None not in values:  # null never equals anything
                index[tuple(_join_key(v) for v in values)].append(row)
        prefix = join.source.alias + "."
        joined = []
        for row in rows:
            values = [row[key] for key, _ in join.pairs]
            if None in values:
                continue
            for match in index.get(tuple(_join_key(v) for v in values), ()):
                joined.append({**row, **{prefix + column: value for column, value in match.items()}})
        rows = joined
    return rows


def _aggregate(item: SelectItem, rows: list[Row]) -> Any:
    if item.kind == COUNT:
        return len(rows)
    values = [Decimal(row[item.column]) for row in rows if row[item.column] is not None]  # type: ignore[index]
    return sum(values, Decimal(0)) if values else None  # SUM over no value is null, as in Oracle


def _grouped(rows: list[Row], query: Query) -> list[Row]:
    """One result row per group (one in all when aggregates stand without GROUP BY, even over no rows)."""
    keys = query.group or []
    groups: dict[tuple, list[Row]] = defaultdict(list)
    for row in rows:
        groups[tuple(row[key] for key in keys)].append(row)
    if not keys and not groups:
        groups[()] = []
    out = []
    for values in sorted(groups, key=lambda vs: tuple((v is None, v if v is not None else 0) for v in vs)):
        result = dict(zip(keys, values, strict=True))
        for item in query.items:
            if item.kind in AGGREGATES:
                result[item.key] = _aggregate(item, groups[values])
        out.append(result)
    return out


def check_paging(limit: int, offset: int) -> None:
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise bad_request(
            f"Invalid 'limit' parameter value. The value must be between 1 and {MAX_PAGE_SIZE}.", INVALID_PARAMETER
        )
    if offset < 0 or (OFFSET_MUST_BE_MULTIPLE_OF_LIMIT and offset % limit):
        raise bad_request(
            "Invalid 'offset' parameter value. The offset must be a non-negative multiple of limit.", INVALID_PARAMETER
        )


def _table_rows(state: NetSuiteState, table: str) -> list[Row]:
    """A table's rows, built once per state of the records (their derived columns, such as amount remaining, read
    every application): a read-back of 10,000 documents in 500-id chunks would otherwise rebuild them 20 times,
    an emulator's cost NetSuite's indexes do not have. Callers never change the rows."""
    generation, rows = state.row_cache.get(table, (None, []))
    if generation != state.generation:
        rows = TABLE_ROWS[table](state)
        state.row_cache[table] = (state.generation, rows)
    return rows


def execute(state: NetSuiteState, sql: str, limit: int, offset: int, base_url: str) -> dict[str, Any]:
    """Run a query and return NetSuite's page: links, count, hasMore, offset, totalResults, items."""
    check_paging(limit, offset)
    query = parse(sql)
    with state.lock:
        tables = {source.alias: _table_rows(state, source.table) for source in query.sources}
    rows = _joined_rows(tables, query) if query.joins else tables[query.sources[0].alias]
    if query.where is not None:
        rows = [row for row in rows if query.where(row)]
    if query.group is not None:
        rows = _sorted(_grouped(rows, query), query.order, None)
    else:
        default = None if query.joins else TABLE_KEYS.get(query.table, lambda row: row["id"])
        rows = _sorted(rows, query.order, default)
    total = len(rows)
    items = [_item(row, query.columns) for row in rows[offset : offset + limit]]
    has_more = offset + len(items) < total
    return {
        "links": _page_links(base_url, limit, offset, total, has_more),
        "count": len(items),
        "hasMore": has_more,
        "offset": offset,
        "totalResults": total,
        "items": items,
    }


def _page_links(base_url: str, limit: int, offset: int, total: int, has_more: bool) -> list[dict[str, str]]:
    def href(at: int) -> str:
        return f"{base_url}{SUITEQL_PATH}?limit={limit}&offset={at}"

    last = max(0, (total - 1) // limit * limit)
    links = []
    if offset > 0:
        links.append({"rel": "previous", "href": href(max(0, offset - limit))})
    links.append({"rel": "first", "href": href(0)})
    if has_more:
        links.append({"rel": "next", "href": href(offset + limit)})
    links.append({"rel": "last", "href": href(last)})
    links.append({"rel": "self", "href": href(offset)})
    return links
