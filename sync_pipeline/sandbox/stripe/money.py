"""Currencies, rounding and Stripe's fees, all in integer minor units."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal, InvalidOperation

from sync_pipeline.sandbox.stripe.errors import invalid_param

# Stripe's zero-decimal and three-decimal currency lists (docs.stripe.com/currencies).
ZERO_DECIMAL = frozenset("bif clp djf gnf jpy kmf krw mga pyg rwf ugx vnd vuv xaf xof xpf".split())
THREE_DECIMAL = frozenset("bhd jod kwd omr tnd".split())

# Processing fee: percentage in basis points plus a fixed part in minor units.
FEE_BASIS_POINTS = {"jpy": 360}
DEFAULT_FEE_BASIS_POINTS = 290
FIXED_FEE = {"usd": 30, "eur": 25, "gbp": 20, "jpy": 0, "kwd": 100, "bhd": 100, "jod": 100, "omr": 100, "tnd": 300}
# Charged when a dispute opens; returned when it is won.
DISPUTE_FEE = {"usd": 1500, "eur": 2000, "gbp": 2000, "jpy": 2000, "kwd": 5000}
# Rough units of a currency per US dollar: the conversion rate between two of these when the config's
# `exchange_rates` names none for the pair (a stand-in's rate, not a market one).
UNITS_PER_USD = {
    "usd": Decimal(1),
    "eur": Decimal("0.92"),
    "gbp": Decimal("0.79"),
    "jpy": Decimal(150),
    "kwd": Decimal("0.307"),
    "cad": Decimal("1.36"),
    "aud": Decimal("1.52"),
    "chf": Decimal("0.88"),
}


def exponent(currency: str) -> int:
    if currency in ZERO_DECIMAL:
        return 0
    if currency in THREE_DECIMAL:
        return 3
    return 2


def to_decimal(amount: int, currency: str) -> Decimal:
    return Decimal(amount).scaleb(-exponent(currency))


def round_half_up(value: Decimal) -> int:
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def round_minor(value: Decimal, currency: str) -> int:
    """A computed amount (a percentage share, a tax, a prorated or fractional price) in whole minor units,
    half up; three-decimal currencies round to a multiple of 10, as Stripe requires their last digit to be 0."""
    if exponent(currency) == 3:
        return round_half_up(value / 10) * 10
    return round_half_up(value)


def amount_grid(currency: str) -> int:
    """The smallest step an amount in `currency` may take, in minor units (10 for KWD, BHD, ...)."""
    return 10 if exponent(currency) == 3 else 1


def decimal_text(value: Decimal) -> str:
    """A `*_decimal` field as Stripe writes it: plain digits, no exponent, no trailing zeros after the point."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def round_for_currency(amount: int, currency: str) -> int:
    # Stripe requires three-decimal amounts to end in 0.
    if exponent(currency) == 3:
        return (amount + 5) // 10 * 10
    return amount


def processing_fee(amount: int, currency: str) -> int:
    basis_points = FEE_BASIS_POINTS.get(currency, DEFAULT_FEE_BASIS_POINTS)
    variable = (amount * basis_points + 5000) // 10000
    fixed = FIXED_FEE.get(currency, 30 * 10 ** max(exponent(currency) - 2, 0) if exponent(currency) else 0)
    return round_for_currency(variable + fixed, currency)


def exchange_rate(rates: dict[str, str], currency: str, settlement: str) -> Decimal:
    """Units of `settlement` one unit of `currency` buys: `rates["eur:usd"]` when given, else the rough table."""
    raw = rates.get(f"{currency}:{settlement}")
    if raw is not None:
        try:
            rate = Decimal(str(raw))
        except InvalidOperation:
            rate = Decimal(0)
        if not rate.is_finite() or rate <= 0:
            raise invalid_param(f"Invalid exchange rate for {currency}:{settlement}: {raw}", "exchange_rates")
        return rate
    if currency in UNITS_PER_USD and settlement in UNITS_PER_USD:
        return (UNITS_PER_USD[settlement] / UNITS_PER_USD[currency]).quantize(Decimal("0.000001"))
    raise invalid_param(
        f"No exchange rate from {currency} to {settlement}: set exchange_rates['{currency}:{settlement}'].",
        "exchange_rates",
    )


def convert(amount: int, currency: str, settlement: str, rate: Decimal) -> int:
    """Minor units of `currency` in minor units of `settlement` at `rate`, each currency with its own exponent,
    rounded half even (three-decimal results to a multiple of 10)."""
    minor = (to_decimal(amount, currency) * rate).scaleb(exponent(settlement))
    if exponent(settlement) == 3:
        return int((minor / 10).quantize(Decimal(1), rounding=ROUND_HALF_EVEN)) * 10
    return int(minor.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def dispute_fee(currency: str) -> int:
    return DISPUTE_FEE.get(currency, 15 * 10 ** exponent(currency))


def check_currency(currency: object, param: str = "currency") -> str:
    if not isinstance(currency, str) or len(currency) != 3 or not currency.isalpha():
        raise invalid_param(f"Invalid currency: {currency}.", param)
    return currency.lower()


def check_amount(amount: int, currency: str, param: str = "amount", allow_negative: bool = False) -> int:
    if amount < 0 and not allow_negative:
        raise invalid_param("This value must be greater than or equal to 0.", param)
    if exponent(currency) == 3 and amount % 10:
        raise invalid_param(
            f"Amounts in {currency.upper()} must be a multiple of 10 (the last digit must be 0).",
            param,
            code="invalid_amount",
        )
    return amount
