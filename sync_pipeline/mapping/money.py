"""The one money conversion of the pipeline: Stripe's integer minor units <-> exact `Decimal`.

Stripe sends amounts as integers in the currency's minor unit (cents, yen, fils). NetSuite takes
decimal amounts. Everything stays an integer until the record body is built, then becomes a
`Decimal` with exactly the currency's number of decimals. Floats are refused everywhere: 0.1 + 0.2
is not 0.3, and a ledger that is off by a cent does not reconcile.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal, InvalidOperation

# Stripe's zero-decimal currencies in the API (docs.stripe.com/currencies#zero-decimal). UGX is shown
# zero-decimal but Stripe's API still takes it in two decimals ("special cases", like ISK), so it is not here.
ZERO_DECIMAL_CURRENCIES = frozenset("BIF CLP DJF GNF JPY KMF KRW MGA PYG RWF VND VUV XAF XOF XPF".split())
# NetSuite's "Currency Decimal Precision": "The only values supported are 0 and 2".
NETSUITE_PRECISIONS = (0, 2)
# Three-decimal currencies; Stripe requires their last digit to be 0, but the unit is still 1/1000.
THREE_DECIMAL_CURRENCIES = frozenset("BHD JOD KWD OMR TND".split())

_CURRENCY_CODE = re.compile(r"[A-Za-z]{3}")


class MoneyError(ValueError):
    """An amount or currency that cannot be converted exactly. `str()` says what to do instead."""


def normalize_currency(code: str) -> str:
    """`"usd"` -> `"USD"`; raises MoneyError for anything that is not three letters."""
    if not isinstance(code, str) or not _CURRENCY_CODE.fullmatch(code):
        raise MoneyError(f"currency {code!r} is not a three-letter ISO 4217 code such as 'usd' or 'EUR'")
    return code.upper()


def currency_exponent(code: str) -> int:
    """Number of decimals of the currency's minor unit: JPY 0, KWD 3, USD 2."""
    upper = normalize_currency(code)
    if upper in ZERO_DECIMAL_CURRENCIES:
        return 0
    if upper in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def _quantum(exponent: int) -> Decimal:
    return Decimal(1).scaleb(-exponent)


def _refuse_inexact_types(value: object, what: str) -> None:
    # bool is an int subclass: True would silently become one cent.
    if isinstance(value, bool):
        raise TypeError(f"{what} must be an integer or Decimal, not bool ({value!r})")
    if isinstance(value, float):
        raise TypeError(
            f"{what} must not be a float ({value!r}): floats cannot hold money exactly; "
            f"pass Decimal('{value!r}') or the string '{value!r}', or integer minor units"
        )


def to_decimal(amount_minor: int, currency: str) -> Decimal:
    """Integer minor units -> Decimal with exactly the currency's decimals (1234 USD -> Decimal('12.34'))."""
    _refuse_inexact_types(amount_minor, "amount_minor")
    if not isinstance(amount_minor, int):
        raise TypeError(f"amount_minor must be an int of minor units, got {type(amount_minor).__name__}")
    exponent = currency_exponent(currency)
    return Decimal(amount_minor).scaleb(-exponent).quantize(_quantum(exponent))


def to_minor(amount: Decimal | str | int, currency: str) -> int:
    """An amount in major units -> integer minor units, exactly (Decimal('12.34') USD -> 1234).

    Ints and strings are read as major units (`to_minor(12, "usd") == 1200`). Raises MoneyError
    when the amount has more decimals than the currency (12.345 USD) or is not a finite number.
    """
    _refuse_inexact_types(amount, "amount")
    if isinstance(amount, (int, str)):
        try:
            number = Decimal(amount)
        except InvalidOperation:
            raise MoneyError(f"amount {amount!r} is not a number") from None
    elif isinstance(amount, Decimal):
        number = amount
    else:
        raise TypeError(f"amount must be Decimal, str or int, got {type(amount).__name__}")
    if not number.is_finite():
        raise MoneyError(f"amount {amount!r} is not a finite number")
    exponent = currency_exponent(currency)
    minor = number.scaleb(exponent)
    if minor != minor.to_integral_value():
        raise MoneyError(
            f"amount {amount!r} has more decimals than {normalize_currency(currency)} allows ({exponent}); "
            "round it explicitly before converting"
        )
    return int(minor)


def format_amount(amount_minor: int, currency: str) -> str:
    """Human text for messages: `'12.34 USD'`, `'1500 JPY'`."""
    return f"{to_decimal(amount_minor, currency)} {normalize_currency(currency)}"


def default_netsuite_precision(currency: str) -> int:
    """NetSuite's precision for a currency unless field_mapping.yaml says otherwise: Stripe's, capped at 2."""
    return min(currency_exponent(currency), 2)


def to_precision(amount_minor: int, currency: str, places: int) -> Decimal:
    """Stripe minor units -> Decimal at `places` decimals (NetSuite's precision), rounded half-even.

    Exact when `places` is the currency's own exponent; for a three-decimal currency sent at NetSuite's
    two, the sub-unit part is rounded (banker's rounding, so repeated roundings do not drift one way).
    """
    return to_decimal(amount_minor, currency).quantize(_quantum(places), rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True)
class RoundedDocument:
    """A document's lines at NetSuite's precision, plus what keeps their sum equal to the rounded total."""

    lines: tuple[Decimal, ...]
    rounding: Decimal  # the extra line making the lines sum to `total` (0 when none is needed)
    total: Decimal  # Stripe's total rounded half-even at NetSuite's precision
    residue: Decimal  # Stripe's exact total - `total`: below one unit of the precision, reported, never booked


def round_document(lines_minor: Sequence[int], currency: str, places: int) -> RoundedDocument:
    """Round each line half-even; the document's total is Stripe's total rounded half-even, and any gap
    between the rounded lines and that total is carried by one rounding line."""
    total_minor = sum(lines_minor)
    lines = tuple(to_precision(amount, currency, places) for amount in lines_minor)
    total = to_precision(total_minor, currency, places)
    return RoundedDocument(
        lines=lines,
        rounding=total - sum(lines, Decimal(0)),
        total=total,
        residue=to_decimal(total_minor, currency) - total,
    )


def allocate(amount: int, weights: Sequence[int]) -> list[int]:
    """Split `amount` (minor units) over `weights` in proportion, to the unit, by largest remainder.

    Each share is the floor of its exact proportion; the units left over go one each to the shares with
    the largest remainders (earlier lines first on a tie). The shares always sum to `amount`. Weights may be
    negative (discount lines) as long as they do not sum to zero.
    """
    whole = sum(weights)
    if whole == 0:
        raise ValueError("cannot allocate over weights that sum to zero")
    exact = [Decimal(amount) * w / whole for w in weights]
    shares = [int(e.to_integral_value(rounding=ROUND_FLOOR)) for e in exact]
    left = amount - sum(shares)
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[:left]:
        shares[i] += 1
    return shares
