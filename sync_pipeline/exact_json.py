"""JSON with exact decimal numbers: API request and response bodies, and the JSON kept in asset data.

Money leaves the pipeline as `Decimal` and must reach the API as the same digits: the standard
`json` module can only write a Decimal by going through float (`0.1 + 0.2` trouble, and 17
significant digits at most), so request bodies, and the documents and records the assets store,
are written here; they are read with `parse_float=Decimal` so amounts come back exact too.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson


def dumps(value: Any) -> str:
    """Compact JSON text of `value`; `Decimal`s are written as plain JSON numbers, digit for digit.

    Dates and datetimes are written as ISO 8601 strings. orjson does the encoding (a partition's
    Stripe documents run to hundreds of megabytes); each Decimal goes in as a pre-written fragment.
    """
    return orjson.dumps(value, default=_exact_decimal).decode()


def _exact_decimal(value: Any) -> orjson.Fragment:
    if isinstance(value, Decimal):
        return orjson.Fragment(decimal_text(value))
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def loads(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a `Decimal`."""
    return json.loads(text, parse_float=Decimal)


def decimal_text(number: Decimal) -> str:
    """A Decimal as a JSON number: plain notation (no exponent), trailing zeros kept."""
    if not number.is_finite():
        raise ValueError(f"{number} cannot be sent as a JSON number")
    return format(number, "f")
