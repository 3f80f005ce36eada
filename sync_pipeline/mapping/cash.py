"""Stripe payouts -> NetSuite bank deposits: the cash leg of the books, as pure functions.

A payout is one deposit `stripe-po_…` into the bank account of its currency (`currencies.X.bank`, else
`accounts.bank`), built from the payout's own balance transactions (`GET /v1/balance_transactions?payout=`),
the way Stripe's NetSuite connector books it ("all fees and transactions associated with a payout into a single
deposit record"):

| balance transaction                          | deposit line                                                  |
|----------------------------------------------|---------------------------------------------------------------|
| charge / payment                             | payment line: the customer payment `stripe-<ch>` leaves       |
|                                              | Undeposited Funds                                             |
| refund / payment_refund                      | cash back to `accounts.refunds` (the customer refund `stripe- |
|                                              | <re>` was paid from there)                                    |
| adjustment, dispute withdrawn                | cash back to `accounts.refunds` (customer refund `stripe-<dp>`)|
| adjustment, dispute reinstated (won)         | payment line: the customer payment `stripe-<dp>-reinstated`   |
| payout_failure / payout_cancel               | other deposit from `accounts.returned_payouts`                |
| any other type (adjustment, stripe_fee, ...) | `payouts.balance_transactions.<type>`; unlisted: held back    |
| every fee (`fee_details`)                    | cash back per fee type (or one per payout) to its account;    |
|                                              | a fee returned (negative) is an other deposit line            |

The deposit is written only when its lines sum to the payout's amount to the cent. A payout that failed or was
canceled after it was deposited gets a journal entry `stripe-po_…-returned` taking the money out of the bank
again into `accounts.returned_payouts`; Stripe pays it out once more in a later payout, whose `payout_failure`
line clears that account. No HTTP, no Dagster.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sync_pipeline.errors import make_issue
from sync_pipeline.mapping.external_ids import (
    deposit_external_id,
    dispute_reinstated_external_id,
    netsuite_external_id,
    returned_payout_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping, reference
from sync_pipeline.mapping.money import currency_exponent, format_amount, to_decimal, to_minor, to_precision
from sync_pipeline.mapping.netsuite import (
    CUSTOMER_PAYMENT,
    CUSTOMER_REFUND,
    MappingResult,
    NetSuiteRecord,
    Skip,
    _Blocked,
    _money,
    _record,
    _utc_date,
)
from sync_pipeline.mapping.stripe_refs import id_of

DEPOSIT = "deposit"
JOURNAL_ENTRY = "journalEntry"

PAYMENT_LINE, OTHER_LINE, CASH_BACK_LINE = "payment", "other", "cashback"
CHARGE_TYPES = ("charge", "payment")
REFUND_TYPES = ("refund", "payment_refund")
RETURNED_PAYOUT_TYPES = ("payout_failure", "payout_cancel")
PAYOUT_TYPE = "payout"
DISPUTE_CATEGORIES = ("dispute", "dispute_reversal")
RETURNED_STATUSES = ("failed", "canceled")


@dataclass(frozen=True)
class DepositLine:
    """One line of a deposit, in the payout's currency minor units. `amount_minor` is what the line adds to the
    deposit (cash back lines subtract: they are stored with the opposite sign of what NetSuite is sent)."""

    sublist: str
    amount_minor: int  # signed contribution to the deposit's total
    memo: str
    account: str | None = None
    payment_external_id: str | None = None
    depends_on: tuple[tuple[str, str], ...] = ()
    transactions: tuple[str, ...] = ()  # the balance transactions behind the line
    # A payment in another currency: what NetSuite converts it to at the rate on the payment (it may differ from
    # Stripe's amount by a rounding unit, which the deposit's rounding line carries).
    netsuite_amount: Decimal | None = None


@dataclass
class PayoutPlan:
    """What a payout's balance transactions become, before they are cut into deposits."""

    lines: list[DepositLine] = field(default_factory=list)
    fees: dict[tuple[str, str], int] = field(default_factory=lambda: defaultdict(int))  # (account, type) -> minor
    fee_transactions: dict[tuple[str, str], list[str]] = field(default_factory=lambda: defaultdict(list))


# Stripe's own fee transactions (Billing, Radar, Tax on fees, currency conversion fees), besides the fees on charges.
FEE_TRANSACTION_TYPES = ("stripe_fee", "tax_fee", "stripe_fx_fee")


def stripe_fees_minor(txn_type: object, fee: int, amount: int) -> int:
    """What one balance transaction of a payout costs in Stripe fees: its own fee, and the whole of a fee
    transaction (negative: money Stripe took); nothing for the payout's own transaction."""
    if txn_type == PAYOUT_TYPE:
        return 0
    return fee - (amount if txn_type in FEE_TRANSACTION_TYPES else 0)


def fee_type_of(txn: Mapping, detail: Mapping) -> str:
    """The fee type a `fee_details` entry books under: a dispute's fee is a `dispute_fee` whatever Stripe calls it."""
    if txn.get("reporting_category") in DISPUTE_CATEGORIES or id_of(txn.get("source") or "").startswith(("dp_", "du_")):
        return "dispute_fee"
    return str(detail.get("type") or "stripe_fee")


def fee_parts(txn: Mapping) -> list[tuple[str, int]]:
    """(fee type, minor units) of a balance transaction's fee; a fee without details is a Stripe fee."""
    details = [d for d in txn.get("fee_details") or () if isinstance(d, Mapping)]
    parts = [(fee_type_of(txn, d), int(d.get("amount") or 0)) for d in details]
    if sum(a for _, a in parts) != (txn.get("fee") or 0):
        parts.append((fee_type_of(txn, {}), (txn.get("fee") or 0) - sum(a for _, a in parts)))
    return [(t, a) for t, a in parts if a]


class _Payout:
    """The payout being mapped, for error reports."""

    def __init__(self, payout: Mapping, fm: FieldMapping):
        self.payout = payout
        self.fm = fm
        self.id = payout["id"]
        self.external_id = deposit_external_id(self.id)

    def issue(self, code: str, field_name: str, value: Any, **params: Any) -> _Blocked:
        return _Blocked(
            make_issue(
                code,
                record_type=DEPOSIT,
                external_id=self.external_id,
                source_id=self.id,
                field=field_name,
                value=value,
                **params,
            )
        )

    def account(self, account_id: str | None, setting: str, what: str) -> str:
        if not account_id:
            raise self.issue(
                "UNMAPPED_ACCOUNT",
                setting,
                None,
                what=what,
                how=f"set `{setting}` in field_mapping.yaml to the NetSuite account for {what}",
            )
        return account_id


def _sync_start_problem(ctx: _Payout, txn: Mapping, sync_start: dt.date | None) -> None:
    created = txn.get("created")
    if sync_start is None or not isinstance(created, int):
        return
    day = dt.datetime.fromtimestamp(created, tz=dt.UTC).date()
    if day < sync_start:
        raise ctx.issue(
            "PAYOUT_BEFORE_SYNC_START",
            f"balance transaction {txn.get('id')}",
            id_of(txn.get("source")),
            day=day.isoformat(),
            start=sync_start.isoformat(),
        )


def _line_for(ctx: _Payout, txn: Mapping, sync_start: dt.date | None) -> DepositLine | None:
    """The deposit line of one balance transaction (its fee is booked apart), None for the payout's own."""
    fm = ctx.fm
    txn_type = txn.get("type")
    txn_id = str(txn.get("id"))
    source = id_of(txn.get("source"))
    amount = int(txn.get("amount") or 0)
    category = txn.get("reporting_category")
    if txn_type == PAYOUT_TYPE:
        return None
    if txn_type in CHARGE_TYPES:
        _sync_start_problem(ctx, txn, sync_start)
        eid = netsuite_external_id(source)
        return DepositLine(
            PAYMENT_LINE,
            amount,
            f"Stripe charge {source}",
            payment_external_id=eid,
            depends_on=((CUSTOMER_PAYMENT, eid),),
            transactions=(txn_id,),
            netsuite_amount=_converted(ctx, txn, source),
        )
    if txn_type in REFUND_TYPES and source:
        _sync_start_problem(ctx, txn, sync_start)
        refunds = ctx.account(fm.accounts.refunds, "accounts.refunds", "customer refunds")
        return DepositLine(
            CASH_BACK_LINE,
            amount,
            f"Stripe refund {source}",
            account=refunds,
            depends_on=((CUSTOMER_REFUND, netsuite_external_id(source)),),
            transactions=(txn_id,),
        )
    if txn_type == "adjustment" and category == "dispute" and source:
        refunds = ctx.account(fm.accounts.refunds, "accounts.refunds", "chargebacks (dispute withdrawals)")
        return DepositLine(
            CASH_BACK_LINE,
            amount,
            f"Stripe dispute {source}: funds withdrawn",
            account=refunds,
            depends_on=((CUSTOMER_REFUND, netsuite_external_id(source)),),
            transactions=(txn_id,),
        )
    if txn_type == "adjustment" and category == "dispute_reversal" and source:
        eid = dispute_reinstated_external_id(source)
        return DepositLine(
            PAYMENT_LINE,
            amount,
            f"Stripe dispute {source}: funds reinstated",
            payment_external_id=eid,
            depends_on=((CUSTOMER_PAYMENT, eid),),
            transactions=(txn_id,),
        )
    if txn_type in RETURNED_PAYOUT_TYPES:
        account = ctx.account(fm.accounts.returned_payouts, "accounts.returned_payouts", "failed payouts paid again")
        return DepositLine(
            OTHER_LINE if amount >= 0 else CASH_BACK_LINE,
            amount,
            f"Stripe {txn_type.replace('_', ' ')} of {source} paid out again",
            account=account,
            transactions=(txn_id,),
        )
    account = fm.payouts.balance_transactions.get(str(txn_type))
    if not account:
        raise ctx.issue(
            "UNMAPPED_BALANCE_TRANSACTION",
            "payouts.balance_transactions",
            txn_type,
            txn_type=txn_type,
            txn=txn_id,
            amount=format_amount(amount, str(txn.get("currency"))),
            description=txn.get("description") or category or "no description",
        )
    return DepositLine(
        OTHER_LINE if amount >= 0 else CASH_BACK_LINE,
        amount,
        f"Stripe {txn_type} {txn_id}: {txn.get('description') or category or ''}".rstrip(": "),
        account=account,
        transactions=(txn_id,),
    )


def _converted(ctx: _Payout, txn: Mapping, source: str) -> Decimal | None:
    """A charge Stripe converted into the payout's currency: NetSuite takes its payment in at the payment's own
    amount times the exchange rate on it (Stripe's, set by the mapping when `payouts.settles_in` names the
    currency), rounded half-up to the deposit currency's precision."""
    rate, presented = txn.get("exchange_rate"), txn.get("presented")
    if rate is None:
        return None
    code = str((presented or {}).get("currency") or "?")
    settled = str(txn.get("currency") or "").upper()
    if not presented or ctx.fm.payouts.settles_in.get(code) != settled:
        raise ctx.issue(
            "CROSS_CURRENCY_NOT_CONFIGURED",
            f"payouts.settles_in.{code}",
            source,
            presented=code,
            settled=settled,
            rate=rate,
        )
    return converted_amount(int(presented["amount"]), code, rate, ctx.fm.netsuite_precision(settled))


def converted_amount(presented_minor: int, presented_currency: str, rate: Any, precision: int) -> Decimal:
    """What NetSuite takes a converted payment in at: its own amount times the exchange rate on it, rounded half-up
    to the deposit currency's precision."""
    exact = to_decimal(presented_minor, presented_currency) * Decimal(str(rate))
    return exact.quantize(Decimal(1).scaleb(-precision), rounding=ROUND_HALF_UP)


def undeposited_payment(txn_type: object, category: object, source: str | None) -> str | None:
    """The customer payment a payout's balance transaction takes out of Undeposited Funds (a payment line of its
    deposit): a charge's `stripe-<ch>`, a won dispute's `stripe-<dp>-reinstated`; None for any other line."""
    if not source:
        return None
    if txn_type in CHARGE_TYPES:
        return netsuite_external_id(source)
    if txn_type == "adjustment" and category == "dispute_reversal":
        return dispute_reinstated_external_id(source)
    return None


def is_deposited(payout: Mapping) -> bool:
    """Whether a payout has its deposit: it arrived (a pending or in-transit one is booked when it arrives), or it
    failed after it was paid."""
    return payout.get("status") not in ("pending", "in_transit") or bool(payout.get("failure_balance_transaction"))


def _fee_lines(ctx: _Payout, txns: Sequence[Mapping], currency: str) -> list[DepositLine]:
    """Fees summed per fee type and account (or per payout): cash back, or other deposit when fees came back."""
    fm = ctx.fm
    sums: dict[tuple[str, str], int] = defaultdict(int)
    behind: dict[tuple[str, str], list[str]] = defaultdict(list)
    for txn in txns:
        if txn.get("type") == PAYOUT_TYPE:
            continue
        for fee_type, amount in fee_parts(txn):
            if fm.payouts.fee_lines == "per_payout":
                key = (ctx.account(fm.accounts.stripe_fees, "accounts.stripe_fees", "Stripe fees"), "all")
            else:
                setting = f"payouts.fee_accounts.{fee_type}"
                key = (ctx.account(fm.fee_account(fee_type), setting, f"Stripe {fee_type} fees"), fee_type)
            sums[key] += amount
            behind[key].append(str(txn.get("id")))
    lines = []
    for (account, fee_type), amount in sums.items():
        if not amount:
            continue
        label = "Stripe fees" if fee_type == "all" else f"Stripe fees: {fee_type.replace('_', ' ')}"
        lines.append(
            DepositLine(
                CASH_BACK_LINE if amount > 0 else OTHER_LINE,
                -amount,
                f"{label} ({len(behind[(account, fee_type)])} transactions, {format_amount(amount, currency)})",
                account=account,
                transactions=tuple(behind[(account, fee_type)]),
            )
        )
    return lines


def _line_body(line: DepositLine, amount: Decimal) -> dict:
    if line.sublist == PAYMENT_LINE:
        # NetSuite's deposit payment line is keyed by the payment's internal id (`id`); the writer resolves it.
        return {"id": {"externalId": line.payment_external_id}, "deposit": True}
    sent = amount if line.sublist == OTHER_LINE else -amount
    return {"account": reference(line.account), "amount": sent, "memo": line.memo[:4000]}


def _parts(ctx: _Payout, lines: list[DepositLine], room: int, fees: Mapping[str, int]) -> list[list[DepositLine]]:
    """The lines cut into as few deposits of at most `room` lines as can hold them, each with a positive total
    (NetSuite refuses a deposit whose lines net to zero or less): money in is spread over the parts largest first,
    then each line of money out goes to the part with the most money in it and room left. A line weighs what it
    brings net of its transactions' fees (`fees`: transaction id -> minor units), as each part carries the fee
    lines of its own transactions."""
    if len(lines) <= room:
        return [lines]

    def net(line: DepositLine) -> int:
        return line.amount_minor - sum(fees.get(t, 0) for t in line.transactions)

    count = -(-len(lines) // room)
    parts: list[list[DepositLine]] = [[] for _ in range(count)]
    totals = [0] * count
    incoming = sorted((line for line in lines if net(line) > 0), key=lambda line: -net(line))
    outgoing = sorted((line for line in lines if net(line) <= 0), key=net)
    for line in [*incoming, *outgoing]:
        open_parts = [i for i in range(count) if len(parts[i]) < room]
        pick = (min if net(line) > 0 else max)(open_parts, key=lambda i: totals[i])
        parts[pick].append(line)
        totals[pick] += net(line)
    if min(totals) <= 0:
        raise ctx.issue(
            "DEPOSIT_CANNOT_BE_SPLIT",
            "payouts.max_lines_per_deposit",
            len(lines),
            limit=room,
            parts=count,
        )
    return parts


@dataclass(frozen=True)
class PayoutSummary:
    """A payout's figures from Stripe, for the deposit checks."""

    payout_id: str
    currency: str
    amount_minor: int
    status: str
    lines_minor: int  # what the balance transactions add up to (the payout's own excluded)
    fees_by_type: Mapping[str, int]
    transactions: int


def summarize_payout(payout: Mapping, txns: Sequence[Mapping]) -> PayoutSummary:
    fees: dict[str, int] = defaultdict(int)
    for txn in txns:
        if txn.get("type") != PAYOUT_TYPE:
            for fee_type, amount in fee_parts(txn):
                fees[fee_type] += amount
    return PayoutSummary(
        payout_id=payout["id"],
        currency=str(payout.get("currency") or "").upper(),
        amount_minor=int(payout.get("amount") or 0),
        status=str(payout.get("status")),
        lines_minor=sum(int(t.get("net") or 0) for t in txns if t.get("type") != PAYOUT_TYPE),
        fees_by_type=dict(fees),
        transactions=sum(1 for t in txns if t.get("type") != PAYOUT_TYPE),
    )


def map_payout(
    payout: Mapping, txns: Sequence[Mapping], fm: FieldMapping, sync_start: dt.date | None = None
) -> MappingResult:
    """A Stripe payout and its balance transactions -> its deposit(s), and a journal entry if it came back.

    Never raises on bad data: a payout that cannot be booked exactly is one issue naming why and the fix.
    """
    ctx = _Payout(payout, fm)
    try:
        return _map_payout(ctx, payout, txns, sync_start)
    except _Blocked as blocked:
        return MappingResult(issues=[blocked.issue])


def _map_payout(ctx: _Payout, payout: Mapping, txns: Sequence[Mapping], sync_start: dt.date | None) -> MappingResult:
    fm = ctx.fm
    status = payout.get("status")
    if not is_deposited(payout):
        reason = f"payout {ctx.id} is {status}: its deposit is booked when it arrives"
        return MappingResult(skips=[Skip(DEPOSIT, ctx.id, reason, ctx.external_id)])
    money = _money(payout.get("currency"), fm, DEPOSIT, ctx.external_id, ctx.id)
    currency = money.code
    bank = ctx.account(fm.bank_account(currency), f"currencies.{currency}.bank", f"{currency} Stripe payouts")
    amount = int(payout.get("amount") or 0)
    own = [t for t in txns if t.get("type") != PAYOUT_TYPE]
    if not own:
        raise ctx.issue("PAYOUT_NOT_ITEMIZED", "balance_transactions", None, amount=format_amount(amount, currency))
    wrong_currency = [t for t in own if str(t.get("currency") or "").upper() != currency]
    if wrong_currency:
        raise ctx.issue(
            "INVALID_STRIPE_DATA",
            "currency",
            wrong_currency[0].get("currency"),
            expected=f"the payout's currency {currency} on balance transaction {wrong_currency[0].get('id')}",
        )
    lines = [line for line in (_line_for(ctx, t, sync_start) for t in own) if line is not None]
    nets = sum(int(t.get("net") or 0) for t in own)
    if nets != amount:
        raise ctx.issue(
            "DEPOSIT_NOT_EQUAL_PAYOUT",
            "amount",
            format_amount(amount, currency),
            lines=format_amount(nets, currency),
            difference=format_amount(amount - nets, currency),
            transactions=len(own),
        )
    arrival = _utc_date(payout.get("arrival_date"))
    result = MappingResult()
    # Each part carries its own fee lines (a handful: one per fee type) and maybe a rounding line.
    may_round = currency_exponent(currency) > money.precision or any(line.netsuite_amount for line in lines)
    room = max(1, fm.payouts.max_lines_per_deposit - len(_fee_lines(ctx, own, currency)) - int(may_round))
    fees = {str(t.get("id")): sum(amount for _, amount in fee_parts(t)) for t in own}
    parts = _parts(ctx, lines, room, fees)
    for number, part_lines in enumerate(parts, start=1):
        part_txn_ids = {t for line in part_lines for t in line.transactions}
        part_txns = [t for t in own if str(t.get("id")) in part_txn_ids]
        fee_lines = _fee_lines(ctx, part_txns, currency)
        result.records.append(
            _deposit(ctx, number, len(parts), [*part_lines, *fee_lines], money, bank, arrival, part_txns)
        )
    if status in RETURNED_STATUSES:
        result.records.append(_returned_payout_journal(ctx, payout, money, bank, amount))
    return result


def _deposit(
    ctx: _Payout,
    number: int,
    of: int,
    lines: list[DepositLine],
    money: Any,
    bank: str,
    arrival: str | None,
    txns: Sequence[Mapping],
) -> NetSuiteRecord:
    fm = ctx.fm
    currency = money.code
    exact = sum(line.amount_minor for line in lines)
    sublists: dict[str, list[dict]] = {PAYMENT_LINE: [], OTHER_LINE: [], CASH_BACK_LINE: []}
    rounded_total = Decimal(0)
    for line in lines:
        amount = to_precision(line.amount_minor, currency, money.precision)
        if line.netsuite_amount is not None:
            amount = line.netsuite_amount
        rounded_total += amount
        sublists[line.sublist].append(_line_body(line, amount))
    target = to_precision(exact, currency, money.precision)
    if rounded_total != target:
        # A three-decimal currency at NetSuite's two: the lines' rounding is carried by one line.
        # Rounding: a three-decimal currency at NetSuite's two, or a converted payment NetSuite rounds its own way.
        rounding = ctx.account(fm.accounts.rounding, "accounts.rounding", f"rounding {currency} deposits")
        gap = target - rounded_total
        sublist = OTHER_LINE if gap > 0 else CASH_BACK_LINE
        sublists[sublist].append(
            {"account": reference(rounding), "amount": abs(gap), "memo": f"Rounding to Stripe's {currency} payout"}
        )
    external_id = deposit_external_id(ctx.id, number)
    part = f" (part {number} of {of})" if of > 1 else ""
    body: dict[str, Any] = {
        "account": reference(bank),
        "currency": reference(money.netsuite_id),
        "tranDate": arrival,
        "memo": f"Stripe payout {ctx.id}{part}: {len(txns)} balance transactions",
    }
    if money.subsidiary:
        body["subsidiary"] = reference(money.subsidiary)
    body.update({name: {"items": items} for name, items in sublists.items() if items})
    depends = tuple(d for line in lines for d in line.depends_on)
    return _record(
        DEPOSIT,
        external_id,
        body,
        ctx.id,
        fm,
        depends_on=depends,
        amount_minor=exact,
        currency=currency,
        residue_minor=exact - to_minor(target, currency),
    )


def _returned_payout_journal(ctx: _Payout, payout: Mapping, money: Any, bank: str, amount: int) -> NetSuiteRecord:
    """A payout that failed or was canceled after it was deposited: the bank never got the money; it waits in
    `accounts.returned_payouts` until Stripe pays it out again (that payout's `payout_failure` line clears it)."""
    fm = ctx.fm
    external_id = returned_payout_external_id(ctx.id)
    returned = ctx.account(fm.accounts.returned_payouts, "accounts.returned_payouts", "failed payouts")
    failure = payout.get("failure_balance_transaction")
    when = _utc_date(failure.get("created")) if isinstance(failure, Mapping) else None
    when = when or _utc_date(payout.get("arrival_date"))
    value = to_precision(amount, money.code, money.precision)
    why = payout.get("failure_code") or payout.get("status")
    memo = f"Stripe payout {ctx.id} {payout.get('status')} ({why}): the money returned to the Stripe balance"
    body: dict[str, Any] = {
        "currency": reference(money.netsuite_id),
        "tranDate": when,
        "memo": memo,
        "line": {
            "items": [
                {"account": reference(returned), "debit": value, "memo": memo},
                {"account": reference(bank), "credit": value, "memo": memo},
            ]
        },
    }
    if money.subsidiary:
        body["subsidiary"] = reference(money.subsidiary)
    return _record(
        JOURNAL_ENTRY,
        external_id,
        body,
        ctx.id,
        fm,
        depends_on=((DEPOSIT, deposit_external_id(ctx.id)),),
        amount_minor=amount,
        currency=money.code,
    )
