"""List and search endpoints: `limit`, `created[...]`, cursors, `has_more`, and the search query language."""

from __future__ import annotations

import base64
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from typing import Any

from sync_pipeline.sandbox.stripe.errors import invalid_param, resource_missing
from sync_pipeline.sandbox.stripe.params import get_int
from sync_pipeline.sandbox.stripe.store import Collection, SortedIndex

MAX_LIMIT = 100
DEFAULT_LIMIT = 10

Predicate = Callable[[dict[str, Any]], bool]


def list_object(data: list[dict[str, Any]], url: str, has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def parse_limit(params: dict[str, Any]) -> int:
    limit = get_int(params, "limit", DEFAULT_LIMIT)
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        raise invalid_param(f"Invalid limit: must be between 1 and {MAX_LIMIT}", "limit")
    return limit


def parse_range(params: dict[str, Any], name: str) -> tuple[int | None, int | None]:
    """`created=123` or `created[gt|gte|lt|lte]=...` as an inclusive (gte, lte) pair."""
    value = params.get(name)
    if value is None or value == "":
        return None, None
    if isinstance(value, str):
        exact = get_int(params, name)
        return exact, exact
    if not isinstance(value, dict):
        raise invalid_param(f"Invalid {name}", name)
    gte = lte = None
    for op in value:
        bound = get_int(value, op, param=f"{name}[{op}]")
        if op == "gt":
            # Timestamps are whole seconds, so strict bounds become inclusive ones a second inside.
            gte = max(gte or bound + 1, bound + 1)
        elif op == "gte":
            gte = max(gte or bound, bound)
        elif op == "lt":
            lte = min(lte if lte is not None else bound - 1, bound - 1)
        elif op == "lte":
            lte = min(lte if lte is not None else bound, bound)
        else:
            raise invalid_param(f"Invalid {name}[{op}]", f"{name}[{op}]")
    return gte, lte


def in_range(value: int | None, bounds: tuple[int | None, int | None]) -> bool:
    gte, lte = bounds
    if gte is None and lte is None:
        return True
    if value is None:
        return False
    return (gte is None or value >= gte) and (lte is None or value <= lte)


def paginate(
    coll: Collection,
    params: dict[str, Any],
    url: str,
    index: SortedIndex | None = None,
    predicate: Predicate | None = None,
    min_created: int | None = None,
) -> dict[str, Any]:
    """Newest first, like Stripe; `index` narrows to one secondary index, `predicate` filters."""
    limit = parse_limit(params)
    index = index if index is not None else coll.index
    gte, lte = parse_range(params, "created")
    if min_created is not None:
        gte = max(gte, min_created) if gte is not None else min_created
    low, high = index.window(gte, lte)
    entries = index.entries
    starting_after = params.get("starting_after")
    ending_before = params.get("ending_before")
    if starting_after:
        high = min(high, _cursor_position(coll, entries, starting_after, "starting_after", right=False))
    if ending_before:
        low = max(low, _cursor_position(coll, entries, ending_before, "ending_before", right=True))
    found: list[dict[str, Any]] = []
    objects = coll.objects
    if ending_before and not starting_after:
        # The page just newer than the cursor, still returned newest first.
        position = low
        while position < high and len(found) <= limit:
            obj = objects[entries[position][2]]
            if predicate is None or predicate(obj):
                found.append(obj)
            position += 1
        has_more = len(found) > limit
        return list_object(list(reversed(found[:limit])), url, has_more)
    position = high - 1
    while position >= low and len(found) <= limit:
        obj = objects[entries[position][2]]
        if predicate is None or predicate(obj):
            found.append(obj)
        position -= 1
    return list_object(found[:limit], url, len(found) > limit)


def _cursor_position(coll: Collection, entries: list, object_id: Any, param: str, right: bool) -> int:
    """Where the cursor object sits: everything below is older, everything from `right` up newer.

    Bisecting by its (created, seq, id) works even in a secondary index that does not hold it.
    """
    entry = coll.entries.get(object_id) if isinstance(object_id, str) else None
    if entry is None:
        raise resource_missing(coll.kind.replace("_", " "), str(object_id), param)
    return bisect_right(entries, entry) if right else bisect_left(entries, entry)


# --- search: `metadata['k']:'v' AND email:'x'`, with `page` tokens --------------------------------

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?(?P<field>[a-z_]+(?:\[(?P<q>['"])(?P<key>.*?)(?P=q)\])?)\s*
        (?P<op>:|~|>=|<=|>|<|=)\s*
        (?:'(?P<sq>[^']*)'|"(?P<dq>[^"]*)"|(?P<num>-?\d+)|(?P<null>null))\s*""",
    re.VERBOSE,
)
_JOIN = re.compile(r"\s+(AND|OR)\s+", re.IGNORECASE)

Resolver = Callable[[dict[str, Any], str], Any]


def _plain_field(obj: dict[str, Any], name: str) -> Any:
    return obj.get(name)


def parse_search_query(query: str, resolver: Resolver = _plain_field) -> Predicate:
    if not query or not query.strip():
        raise invalid_param("Missing required param: query.", "query")
    parts = _JOIN.split(query.strip())
    clauses = parts[0::2]
    joins = {join.upper() for join in parts[1::2]}
    # Stripe's search language has no precedence or parentheses, so one query is all AND or all OR.
    # https://docs.stripe.com/search#search-query-language
    if len(joins) > 1:
        raise invalid_param("Search queries cannot mix AND and OR.", "query")
    tests = [_clause(text, resolver) for text in clauses]
    if joins == {"OR"}:
        return lambda obj: any(test(obj) for test in tests)
    return lambda obj: all(test(obj) for test in tests)


def _clause(text: str, resolver: Resolver) -> Predicate:
    match = _CLAUSE.fullmatch(text)
    if not match:
        raise invalid_param(f"Invalid search query clause: {text!r}", "query")
    field_name = match["field"].split("[", 1)[0]
    key = match["key"]
    op = match["op"]
    if match["num"] is not None:
        expected: Any = int(match["num"])
    elif match["null"] is not None:
        expected = None
    else:
        expected = match["sq"] if match["sq"] is not None else match["dq"]
    negate = bool(match["neg"])

    def value_of(obj: dict[str, Any]) -> Any:
        if key is not None:
            return (obj.get(field_name) or {}).get(key)
        return resolver(obj, field_name)

    def test(obj: dict[str, Any]) -> bool:
        actual = value_of(obj)
        if op in (":", "="):
            # `:` is an exact match, case-insensitive for strings; `~` below is a substring match.
            if isinstance(actual, str) and isinstance(expected, str):
                result = actual.lower() == expected.lower()
            else:
                result = actual == expected or (isinstance(expected, int) and str(actual) == str(expected))
        elif op == "~":
            result = isinstance(actual, str) and str(expected).lower() in actual.lower()
        else:
            if not isinstance(actual, int) or not isinstance(expected, int):
                return False
            result = {
                ">": actual > expected,
                "<": actual < expected,
                ">=": actual >= expected,
                "<=": actual <= expected,
            }[op]
        return result != negate

    return test


# Unlike Stripe's index, which can lag up to a minute behind writes, this one is always current: a test
# passing here can still miss a just-written object in real search. https://docs.stripe.com/search#data-freshness
def search(coll: Collection, params: dict[str, Any], url: str, resolver: Resolver = _plain_field) -> dict[str, Any]:
    predicate = parse_search_query(params.get("query") or "", resolver)
    limit = parse_limit(params)
    entries = coll.index.entries
    high = len(entries)
    token = params.get("page")
    if token:
        high = _decode_page(token, entries)
    found: list[dict[str, Any]] = []
    position = high - 1
    while position >= 0 and len(found) <= limit:
        obj = coll.objects[entries[position][2]]
        if predicate(obj):
            found.append(obj)
        position -= 1
    has_more = len(found) > limit
    data = found[:limit]
    next_page = _encode_page(coll, data[-1]["id"]) if has_more else None
    return {"object": "search_result", "data": data, "has_more": has_more, "next_page": next_page, "url": url}


def _encode_page(coll: Collection, last_id: str) -> str:
    created, seq, object_id = coll.entries[last_id]
    # The token names the last object returned, so a page stays stable while newer objects arrive.
    return base64.urlsafe_b64encode(f"{created}:{seq}:{object_id}".encode()).decode()


def _decode_page(token: str, entries: list) -> int:
    try:
        created, seq, object_id = base64.urlsafe_b64decode(token.encode()).decode().split(":", 2)
        return bisect_right(entries, (int(created), int(seq), object_id)) - 1
    except (ValueError, UnicodeDecodeError):
        raise invalid_param("Invalid page token.", "page") from None


def list_filtered(
    coll: Collection,
    params: dict[str, Any],
    url: str,
    filters: dict[str, Any] | None = None,
    predicate: Predicate | None = None,
    min_created: int | None = None,
) -> dict[str, Any]:
    """`field = value` filters: the first indexed one picks the index, the rest filter the walk."""
    index = None
    checks: list[tuple[Callable[[dict[str, Any]], Any], Any]] = []
    for name, value in (filters or {}).items():
        if value is None:
            continue
        extract = coll.extractors.get(name)
        # Walking one secondary index beats filtering the whole collection; one index is enough.
        if extract is not None and index is None:
            index = coll.index_for(name, value)
            continue
        checks.append((extract or (lambda obj, name=name: obj.get(name)), value))
    if checks:
        extra = predicate
        predicate = lambda obj: all(get(obj) == value for get, value in checks) and (extra is None or extra(obj))  # noqa: E731
    return paginate(coll, params, url, index=index, predicate=predicate, min_created=min_created)
