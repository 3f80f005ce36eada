"""The content hash of a record: what the ledger compares to tell a changed record from an unchanged one.

Pure: key order and the spelling of a Decimal (`1.50`, `1.5`) do not change the hash, and a float,
which could not be sent exactly, is refused.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from typing import Any


def _canonical(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, Decimal):
        # Exact text, so 1.50 and 1.5 hash alike and no float rounding ever enters.
        return {"$decimal": format(value.normalize(), "f")}
    if isinstance(value, float):
        raise TypeError("floats are not allowed in synced records; use Decimal or integer minor units")
    if value is None or isinstance(value, (str, int, bool)):
        return value
    raise TypeError(f"cannot hash {type(value).__name__}")


def content_hash(body: Any) -> str:
    """A stable hash of what would be sent: key order and Decimal spelling do not matter."""
    text = json.dumps(_canonical(body), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()
