"""Reading a Stripe reference that arrives either as an id or as the expanded object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def id_of(value: Any) -> str | None:
    """`"cus_1"` and `{"id": "cus_1", ...}` -> `"cus_1"`; anything else (None, "", no id) -> None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) and inner else None
    return None
