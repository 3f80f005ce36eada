"""The one money conversion: exact in both directions, for 0-, 2- and 3-decimal currencies."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_pipeline.mapping.money import (
    MoneyError,
    currency_exponent,
    format_amount,
    to_decimal,
    to_minor,
)

CURRENCIES = ["usd", "EUR", "jpy", "KRW", "kwd", "BHD", "gbp", "xof", "tnd"]
minor_amounts = st.integers(min_value=-(10**15), max_value=10**15)
currencies = st.sampled_from(CURRENCIES)


@pytest.mark.parametrize(
    ("code", "exponent"),
    [
        ("usd", 2),
        ("EUR", 2),
        ("jpy", 0),
        ("KRW", 0),
        ("vnd", 0),
        ("XPF", 0),
        ("kwd", 3),
        ("BHD", 3),
        ("jod", 3),
        ("OMR", 3),
        ("tnd", 3),
        ("gbp", 2),
        ("chf", 2),
    ],
)
def test_currency_exponent_follows_stripe_lists(code, exponent):
    assert currency_exponent(code) == exponent


@pytest.mark.parametrize(
    ("minor", "code", "text"),
    [
        (1234, "usd", "12.34"),
        (5, "usd", "0.05"),
        (0, "usd", "0.00"),
        (-199, "eur", "-1.99"),
        (1500, "jpy", "1500"),
        (12340, "kwd", "12.340"),
        (1, "kwd", "0.001"),
    ],
)
def test_to_decimal_has_exactly_the_currency_decimals(minor, code, text):
    value = to_decimal(minor, code)
    assert str(value) == text
    assert value.as_tuple().exponent == -currency_exponent(code)


@given(minor_amounts, currencies)
def test_round_trip_is_exact(minor, code):
    assert to_minor(to_decimal(minor, code), code) == minor
    assert to_minor(str(to_decimal(minor, code)), code) == minor


@given(st.lists(minor_amounts, max_size=30), currencies)
def test_sum_of_decimals_equals_decimal_of_sum(amounts, code):
    total = sum((to_decimal(a, code) for a in amounts), Decimal(0))
    assert total == to_decimal(sum(amounts), code)
    assert to_minor(total, code) == sum(amounts)


@given(st.integers(min_value=-(10**9), max_value=10**9), currencies)
def test_integers_are_major_units(major, code):
    assert to_minor(major, code) == major * 10 ** currency_exponent(code)


@pytest.mark.parametrize(("amount", "code"), [("12.345", "usd"), (Decimal("1.5"), "jpy"), ("0.0001", "kwd")])
def test_sub_minor_precision_is_refused(amount, code):
    with pytest.raises(MoneyError, match="more decimals than"):
        to_minor(amount, code)


@pytest.mark.parametrize("bad", [12.34, 0.1])
def test_floats_are_refused_with_the_fix(bad):
    with pytest.raises(TypeError, match=r"Decimal\('"):
        to_minor(bad, "usd")


def test_bools_are_refused():
    with pytest.raises(TypeError, match="bool"):
        to_decimal(True, "usd")
    with pytest.raises(TypeError, match="bool"):
        to_minor(False, "usd")


@pytest.mark.parametrize("bad", ["NaN", "Infinity", "twelve"])
def test_non_numbers_are_refused(bad):
    with pytest.raises(MoneyError):
        to_minor(bad, "usd")


@pytest.mark.parametrize("code", ["us", "dollars", "", "12a"])
def test_malformed_currency_codes_are_refused(code):
    with pytest.raises(MoneyError, match="three-letter"):
        currency_exponent(code)


def test_format_amount_for_messages():
    assert format_amount(150000, "jpy") == "150000 JPY"
    assert format_amount(12340, "kwd") == "12.340 KWD"
