"""Helpers shared by the resource modules: updates that emit `*.updated`, and small sub-shapes."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import Any

from sync_pipeline.sandbox.stripe.errors import invalid_param
from sync_pipeline.sandbox.stripe.params import get_dict, get_str, merge_metadata
from sync_pipeline.sandbox.stripe.routing import route
from sync_pipeline.sandbox.stripe.state import Ctx

DAY = 86400
ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def apply_update(
    ctx: Ctx, obj: dict[str, Any], changes: dict[str, Any], event_type: str | None = None
) -> dict[str, Any]:
    """Set fields; when any value changed, emit `event_type` with `previous_attributes`.

    Nested values are always replaced, never mutated in place, so the previous ones stay intact.
    """
    previous = {key: obj.get(key) for key, value in changes.items() if obj.get(key) != value}
    obj.update(changes)
    if previous and event_type:
        ctx.state.emit(ctx, event_type, obj, previous)
    return obj


def create_and_announce(ctx: Ctx, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
    """Store a new object and emit `<kind>.created`."""
    ctx.state.insert(kind, obj)
    ctx.state.emit(ctx, f"{kind}.created", obj)
    return obj


def metadata_change(obj: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    if "metadata" not in params:
        return {}
    return {"metadata": merge_metadata(obj.get("metadata") or {}, params)}


def string_changes(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """Optional strings: a given empty string clears the field (Stripe's way to unset)."""
    changes: dict[str, Any] = {}
    for name in names:
        if name in params:
            changes[name] = get_str(params, name) or None
    return changes


def address(params: dict[str, Any], name: str = "address") -> dict[str, Any] | None:
    raw = get_dict(params, name)
    if not raw:
        return None
    unknown = set(raw) - set(ADDRESS_FIELDS)
    if unknown:
        raise invalid_param(f"Received unknown parameter: {name}[{sorted(unknown)[0]}]", name)
    return {field: raw.get(field) or None for field in ADDRESS_FIELDS}


def number(value: Any, param: str) -> int | float:
    """Percentages are JSON numbers (never money): an int when whole, else a float."""
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise invalid_param(f"Invalid decimal: {value}", param) from None
    return int(parsed) if parsed.is_integer() else parsed


def retrieve_route(kind: str, pattern: str, show_deleted: bool = False) -> None:
    """`GET /v1/<things>/{id}`: the stored object (or its deleted stub), else 404."""

    def retrieve(ctx: Ctx, params: dict, object_id: str) -> dict:
        if show_deleted and object_id in ctx.state.deleted:
            return ctx.state.deleted[object_id]
        return ctx.state.get(kind, object_id)

    route("GET", pattern)(retrieve)


def update_route(kind: str, pattern: str, strings: tuple[str, ...] = (), event: str | None = None) -> None:
    """`POST /v1/<things>/{id}` for objects where only metadata and a few strings change."""

    def update(ctx: Ctx, params: dict, object_id: str) -> dict:
        obj = ctx.state.get(kind, object_id)
        return apply_update(ctx, obj, {**metadata_change(obj, params), **string_changes(params, strings)}, event)

    route("POST", pattern)(update)


def add_interval(timestamp: int, interval: str, count: int, anchor_day: int) -> int:
    """The next period boundary; months keep the anchor's day, clamped to the month's last day."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if interval == "day":
        return timestamp + count * DAY
    if interval == "week":
        return timestamp + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    month_index = moment.month - 1 + months
    year, month = moment.year + month_index // 12, month_index % 12 + 1
    day = min(anchor_day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())
