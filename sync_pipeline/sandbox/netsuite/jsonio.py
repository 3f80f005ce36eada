"""JSON in and out with money as Decimal: floats never touch an amount."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from starlette.responses import Response

_encode_string = json.encoder.encode_basestring  # type: ignore[attr-defined]


def loads(raw: bytes | str) -> Any:
    """Parse JSON with every non-integer number as Decimal; NaN and Infinity are refused."""
    return json.loads(raw, parse_float=Decimal, parse_constant=_refuse_constant)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def dumps(value: Any) -> str:
    """Serialise JSON, writing Decimal as a JSON number with exactly its digits (100.50 stays 100.50)."""
    parts: list[str] = []
    _write(value, parts)
    return "".join(parts)


def _write(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        out.append(_encode_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, Decimal):
        out.append(_decimal_literal(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, dict):
        _write_object(value, out)
    elif isinstance(value, (list, tuple)):
        _write_array(value, out)
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _write_object(value: dict, out: list[str]) -> None:
    out.append("{")
    for index, (key, item) in enumerate(value.items()):
        if index:
            out.append(",")
        out.append(_encode_string(str(key)))
        out.append(":")
        _write(item, out)
    out.append("}")


def _write_array(value: list | tuple, out: list[str]) -> None:
    out.append("[")
    for index, item in enumerate(value):
        if index:
            out.append(",")
        _write(item, out)
    out.append("]")


def _decimal_literal(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"{value} is not a JSON number")
    # 'f' format never uses an exponent, so "1E+2" becomes "100"; a negative zero loses its sign.
    return format(abs(value) if value.is_zero() else value, "f")


class DecimalJSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return dumps(content).encode("utf-8")


def to_plain(value: Any) -> Any:
    """Decimals as strings (the state file format), everything else unchanged."""
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, dict):
        return {key: to_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    return value


def from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$decimal"}:
            return Decimal(value["$decimal"])
        return {key: from_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [from_plain(item) for item in value]
    return value
