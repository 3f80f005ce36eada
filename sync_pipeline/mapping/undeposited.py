"""Undeposited Funds per currency from Stripe's own objects: what entered it, what payouts carried out of it.

This pipeline books a customer payment into Undeposited Funds (`accounts.payments`) for the money that passed
through Stripe: each succeeded charge (`stripe-ch_…`, its captured amount, dated when the charge was created) and
each won dispute's reinstated funds (`stripe-dp_…-reinstated`, dated when they came back). A payout's deposit takes
them out as payment lines: its charge, payment and reinstated-dispute balance transactions, dated the payout's
arrival day. Refunds and chargebacks are paid from `accounts.refunds`, so they never touch Undeposited Funds.

Stripe says which payout carried a charge, never the reverse, so the balance is cumulative from `SYNC_START_DATE`:
UF(D) = what entered on [start, D] - what the payouts arriving on [start, D] carried out (their balance transactions
created since the start; older ones hold the deposit back, `PAYOUT_BEFORE_SYNC_START`). `day_movements` gives one
day's partition its part; `balance` adds the parts up to D. A partition's movements may be dated after its day (an
invoice of day P paid on a later day), never before it.

Amounts are at NetSuite's precision, each document rounded as its NetSuite record is (a KWD charge's third decimal;
a charge Stripe converted leaves in the payout's currency at the payment's amount times Stripe's rate, as NetSuite
converts it), so the sum is the one NetSuite can hold. Per transaction currency, as NetSuite's foreign amounts are:
a converted charge enters in its own currency and leaves in the payout's.

Given what the day's writers did (`in_netsuite`, `deposited`), the movements whose NetSuite record was held back (an
open exception with its fix, or a deposit waiting for its payments) are also rows of their own (`held_in`,
`held_out`): Stripe's figure stays whole, and a difference they account for exactly is known, not a new one (a
payment held back on day P would otherwise turn every later day red). No HTTP, no Dagster.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from decimal import Decimal

from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.cash import converted_amount, is_deposited, undeposited_payment
from sync_pipeline.mapping.external_ids import dispute_reinstated_external_id, netsuite_external_id
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import to_precision
from sync_pipeline.mapping.netsuite import _utc_date

IN, OUT = "in", "out"
HELD_IN, HELD_OUT = "held_in", "held_out"  # the same movements, whose NetSuite record the writers held back
HELD = (HELD_IN, HELD_OUT)
# One day's movements: per currency, the day a movement is dated and its direction, how many documents, and their
# sum (Decimal text at NetSuite's precision). A handful of rows per day, so a year of days is cheap to add up.
MOVEMENT_COLUMNS = ["currency", "date", "direction", "documents", "amount"]


def mapped_currency(currency: object, fm: FieldMapping) -> str | None:
    """The currency's code when field_mapping.yaml maps it (an unmapped one is not synced: an exception says so)."""
    code = str(currency or "").upper()
    return code if fm.currency(code) is not None else None


def collected_minor(charge: Mapping) -> int | None:
    """What a charge collected (its captured amount), or None when it collected nothing (failed, not captured)."""
    if charge.get("status") != "succeeded" or charge.get("captured") is False:
        return None
    return int(charge.get("amount_captured") or charge.get("amount") or 0)


def _entered(invoice_trees: Iterable[Mapping], charge_trees: Iterable[Mapping]) -> Iterable[tuple[Mapping, str]]:
    """(charge or dispute, kind) of every document of the day's trees that may put money into Undeposited Funds."""
    for tree in invoice_trees:
        yield from ((charge, "charge") for charge in tree.get("charges") or ())
        yield from ((dispute, "dispute") for dispute in tree.get("disputes") or ())
    for tree in charge_trees:
        yield tree["charge"], "charge"
        yield from ((dispute, "dispute") for dispute in tree.get("disputes") or ())


def entered(
    invoice_trees: Iterable[Mapping], charge_trees: Iterable[Mapping], fm: FieldMapping
) -> list[tuple[str, str, Decimal, str]]:
    """(currency, date, amount at NetSuite's precision, the payment's external id) of each payment into Undeposited
    Funds the trees hold."""
    out = []
    for document, kind in _entered(invoice_trees, charge_trees):
        code = mapped_currency(document.get("currency"), fm)
        if code is None:
            continue  # an unmapped currency is not synced (an exception says so)
        if kind == "charge":
            minor, when = collected_minor(document), document.get("created")
            payment = netsuite_external_id(document["id"])
        else:
            movement = ns.dispute_movement(document, ns.DISPUTE_REINSTATED)
            minor = None if movement is None else int(document.get("amount") or 0)
            when = None if movement is None else movement.get("created")
            payment = dispute_reinstated_external_id(document["id"])
        day = _utc_date(when)
        if minor is not None and day is not None:
            out.append((code, day, to_precision(minor, code, fm.netsuite_precision(code)), payment))
    return out


def carried_out(
    payouts: Iterable[tuple[Mapping, Iterable[Mapping]]], fm: FieldMapping, sync_start: str
) -> list[tuple[str, str, Decimal, str]]:
    """(currency, arrival date, amount at NetSuite's precision, payout id) of each payment line the day's deposited
    payouts take out of Undeposited Funds: their charge and reinstated-dispute balance transactions created since
    `sync_start` (YYYY-MM-DD)."""
    out = []
    for payout, txns in payouts:
        code, day = mapped_currency(payout.get("currency"), fm), _utc_date(payout.get("arrival_date"))
        if code is None or day is None or not is_deposited(payout):
            continue
        precision = fm.netsuite_precision(code)
        for txn in txns:
            source = txn.get("source")
            if not undeposited_payment(txn.get("type"), txn.get("reporting_category"), source):
                continue
            if (_utc_date(txn.get("created")) or "") < sync_start:
                continue
            presented, rate = txn.get("presented"), txn.get("exchange_rate")
            if rate is not None and presented:
                amount = converted_amount(int(presented["amount"]), str(presented["currency"]), rate, precision)
            else:
                amount = to_precision(int(txn.get("amount") or 0), code, precision)
            out.append((code, day, amount, payout["id"]))
    return out


def day_movements(
    invoice_trees: Iterable[Mapping],
    charge_trees: Iterable[Mapping],
    payouts: Iterable[tuple[Mapping, Iterable[Mapping]]],
    fm: FieldMapping,
    sync_start: str,
    in_netsuite: Collection[str] | None = None,
    deposited: Collection[str] | None = None,
) -> list[dict[str, str]]:
    """One day's part of Undeposited Funds: rows of MOVEMENT_COLUMNS, amounts as Decimal text. With what the day's
    writers left in NetSuite (`in_netsuite`: customer payments' external ids; `deposited`: payout ids whose
    deposits all are), the movements whose record is not there are also `held_in` / `held_out` rows."""
    sums: dict[tuple[str, str, str], list] = {}
    moves = [
        *((IN, m, in_netsuite) for m in entered(invoice_trees, charge_trees, fm)),
        *((OUT, m, deposited) for m in carried_out(payouts, fm, sync_start)),
    ]
    for direction, (code, day, amount, record), booked in moves:
        held = [HELD_IN if direction == IN else HELD_OUT] if booked is not None and record not in booked else []
        for kind in (direction, *held):
            entry = sums.setdefault((code, day, kind), [0, Decimal(0)])
            entry[0] += 1
            entry[1] += amount
    return [
        {"currency": code, "date": day, "direction": direction, "documents": str(count), "amount": str(amount)}
        for (code, day, direction), (count, amount) in sorted(sums.items())
    ]


def balance(
    movements: Iterable[Mapping], through: str, kinds: tuple[str, str] = (IN, OUT)
) -> dict[str, tuple[Decimal, int]]:
    """Per currency, (Undeposited Funds at the end of `through`, documents that moved it) from the movements of
    every day since the start: what entered less what was carried out, dated on or before `through`. `kinds`
    (HELD_IN, HELD_OUT): the part of it whose NetSuite records were held back."""
    totals: dict[str, list] = defaultdict(lambda: [Decimal(0), 0])
    for row in movements:
        if str(row["date"]) > through or row["direction"] not in kinds:
            continue
        sign = 1 if row["direction"] == kinds[0] else -1
        totals[str(row["currency"])][0] += sign * Decimal(str(row["amount"]))
        totals[str(row["currency"])][1] += int(row["documents"])
    return {code: (amount, count) for code, (amount, count) in sorted(totals.items())}
