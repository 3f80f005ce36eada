"""JSON request and response bodies with exact decimal numbers.

Money leaves the pipeline as `Decimal` and must reach the API as the same digits: the standard
`json` module can only write a Decimal by going through float (`0.1 + 0.2` trouble, and 17
significant digits at most), so request bodies are written here; responses are read with
`parse_float=Decimal` so amounts come back exact too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any


def dumps(value: Any) -> str:
    """Compact JSON text of `value`; `Decimal`s are written as plain JSON numbers, digit for digit.

    Dates and datetimes are written as ISO 8601 strings. NaN and infinities are refused.
    """
    parts: list[str] = []
    _encode(value, parts.append)
    return "".join(parts)


def loads(text: str | bytes) -> Any:
    """Parse JSON with every non-integer number as a `Decimal`."""
    return json.loads(text, parse_float=Decimal)


def decimal_text(number: Decimal) -> str:
    """A Decimal as a JSON number: plain notation (no exponent), trailing zeros kept."""
    if not number.is_finite():
        raise ValueError(f"{number} cannot be sent as a JSON number")
    return format(number, "f")


def _encode(value: Any, out: Callable[[str], None]) -> None:
    if isinstance(value, Decimal):
        out(decimal_text(value))
    elif isinstance(value, Mapping):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be strings, got {type(key).__name__}")
            out("," if index else "")
            out(json.dumps(key))
            out(":")
            _encode(item, out)
        out("}")
    elif isinstance(value, (list, tuple)):
        out("[")
        for index, item in enumerate(value):
            out("," if index else "")
            _encode(item, out)
        out("]")
    elif isinstance(value, (dt.date, dt.datetime)):
        out(json.dumps(value.isoformat()))
    else:
        # str, int, bool, None (and float, which money never is) — json's own rules apply.
        out(json.dumps(value, allow_nan=False))
