"""`expand[]`: replace ids by objects along dot paths, on a copy of the response.

Lists expand element-wise (`data.payments` on a list response, `discounts` on an invoice), and a
few fields exist only when expanded (`invoice.payments`, `charge.refunds`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sync_pipeline.sandbox.stripe.errors import invalid_param
from sync_pipeline.sandbox.stripe.listing import list_object
from sync_pipeline.sandbox.stripe.state import StripeState

MAX_EXPAND_DEPTH = 4


def _invoice_payments(state: StripeState, invoice: dict[str, Any]) -> dict[str, Any]:
    coll = state.collections["invoice_payment"]
    payments = list(coll.newest_first(coll.index_for("invoice", invoice["id"])))
    return list_object(payments, f"/v1/invoice_payments?invoice={invoice['id']}")


def _charge_refunds(state: StripeState, charge: dict[str, Any]) -> dict[str, Any]:
    coll = state.collections["refund"]
    refunds = list(coll.newest_first(coll.index_for("charge", charge["id"])))
    return list_object(refunds, f"/v1/charges/{charge['id']}/refunds")


# object type -> field present only when expanded -> how to build it
INCLUDABLE: dict[str, dict[str, Callable[[StripeState, dict[str, Any]], Any]]] = {
    "invoice": {"payments": _invoice_payments},
    "charge": {"refunds": _charge_refunds},
}


def parse_expand(raw: Any) -> list[list[str]]:
    if raw is None or raw == "":
        return []
    items = raw if isinstance(raw, list) else list(raw.values()) if isinstance(raw, dict) else [raw]
    paths = []
    for item in items:
        if not isinstance(item, str) or not item:
            raise invalid_param("Invalid expand path", "expand")
        path = item.split(".")
        if len([segment for segment in path if segment != "data"]) > MAX_EXPAND_DEPTH:
            raise invalid_param(
                f"You cannot expand more than {MAX_EXPAND_DEPTH} levels of a property. Property: {item}", "expand"
            )
        paths.append(path)
    return paths


def expand(state: StripeState, value: Any, paths: list[list[str]]) -> Any:
    if not paths:
        return value
    if isinstance(value, list):
        return [expand(state, item, paths) for item in value]
    if not isinstance(value, dict):
        return value
    groups: dict[str, list[list[str]]] = {}
    for path in paths:
        groups.setdefault(path[0], []).append(path[1:])
    out = dict(value)
    for name, rests in groups.items():
        out[name] = expand(state, _resolve(state, value, name), [rest for rest in rests if rest])
    return out


def _resolve(state: StripeState, parent: dict[str, Any], name: str) -> Any:
    builder = INCLUDABLE.get(parent.get("object", ""), {}).get(name)
    if builder is not None:
        return builder(state, parent)
    if name not in parent:
        raise invalid_param(f"This property cannot be expanded ({name}).", "expand")
    child = parent[name]
    if isinstance(child, list):
        return [_lookup(state, item, name) if isinstance(item, str) else item for item in child]
    if isinstance(child, str):
        if parent.get("object") == "balance_transaction" and name == "source" and state.find(child) is None:
            # A source the stand-in has no object for (a balance adjustment's `adj_` id) stays an id, so expanding
            # every source of a payout's transactions never fails on one.
            return child
        return _lookup(state, child, name)
    return child


def _lookup(state: StripeState, object_id: str, name: str) -> dict[str, Any]:
    found = state.find(object_id) or state.deleted.get(object_id)
    if found is None:
        raise invalid_param(f"This property cannot be expanded ({name}).", "expand")
    return found
