"""A SOQL subset: parse, check against the schema, run over the state's records.

Supported: ``SELECT f, Parent.f, (SELECT f FROM ChildRelationship [WHERE] [ORDER BY] [LIMIT]) | COUNT()
FROM Obj [WHERE ...] [ORDER BY f [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]``.
Conditions: ``= != <> < <= > >= LIKE IN NOT IN``, ``AND``/``OR``/``NOT`` with
parentheses (mixing AND and OR without parentheses is an error, as in Salesforce); literals: 'strings',
numbers, true/false, null, dates (2026-11-01) and datetimes (2026-11-01T00:00:00Z), unquoted.
Field and object names are case-insensitive; text comparisons too (except case-sensitive external ids).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .schema import (
    NUMBER_TYPES,
    STRING_TYPES,
    FieldSpec,
    ObjectSpec,
    SalesforceApiError,
    bad_request,
    child_relationships,
    find_object,
    normalize_id,
    parse_date,
    parse_datetime,
    to_json_value,
)

if TYPE_CHECKING:
    from .state import SalesforceState

Record = dict[str, Any]
Resolver = Callable[[str | None], Record | None]

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^'\\]|\\.)*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
    | (?P<date>\d{4}-\d{2}-\d{2})
    | (?P<number>-?\d+(?:\.\d+)?)
    | (?P<op><=|>=|!=|<>|=|<|>)
    | (?P<punct>[(),])
    | (?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
_KEYWORDS = frozenset(
    {
        "select",
        "from",
        "where",
        "and",
        "or",
        "not",
        "in",
        "like",
        "order",
        "by",
        "asc",
        "desc",
        "nulls",
        "first",
        "last",
        "limit",
        "offset",
        "null",
        "true",
        "false",
    }
)


def malformed(message: str) -> SalesforceApiError:
    return bad_request("MALFORMED_QUERY", message)


@dataclass(frozen=True)
class Token:
    kind: str  # string, datetime, date, number, op, punct, ident, end
    text: str
    position: int

    def is_keyword(self, *words: str) -> bool:
        return self.kind == "ident" and self.text.lower() in words


def tokenize(soql: str) -> list[Token]:
    tokens: list[Token] = []
    position = 0
    while position < len(soql):
        if soql[position:].strip() == "":
            break
        match = _TOKEN.match(soql, position)
        if match is None or match.end() == position:
            raise malformed(f"unexpected token: {soql[position:].strip()[:20]}")
        kind = match.lastgroup or ""
        tokens.append(Token(kind, match.group(kind), match.start(kind)))
        position = match.end()
    tokens.append(Token("end", "", len(soql)))
    return tokens


@dataclass(frozen=True)
class FieldPath:
    """`Account.Name` on Opportunity: the relationships to follow, then the field."""

    text: str
    relationships: tuple[FieldSpec, ...]
    field: FieldSpec

    def value(self, record: Record, resolve: Resolver) -> Any:
        current: Record | None = record
        for relationship in self.relationships:
            current = resolve(current[relationship.name]) if current else None
        return current.get(self.field.name) if current else None


@dataclass(frozen=True)
class Comparison:
    path: FieldPath
    operator: str  # = != < <= > >= like in notin
    operand: Any  # a literal, or a tuple for IN

    def matches(self, record: Record, resolve: Resolver) -> bool:
        value = self.path.value(record, resolve)
        return _compare(self.path.field, value, self.operator, self.operand)


@dataclass(frozen=True)
class Junction:
    operator: str  # and, or, not
    parts: tuple[Any, ...]

    def matches(self, record: Record, resolve: Resolver) -> bool:
        if self.operator == "and":
            return all(part.matches(record, resolve) for part in self.parts)
        if self.operator == "or":
            return any(part.matches(record, resolve) for part in self.parts)
        return not self.parts[0].matches(record, resolve)


@dataclass(frozen=True)
class Ordering:
    path: FieldPath
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class SubQuery:
    """`(SELECT ... FROM OpportunityLineItems)`: a parent's children through a child relationship."""

    relationship: str
    reference_field: str
    query: Query


@dataclass(frozen=True)
class Query:
    sobject: ObjectSpec
    fields: tuple[FieldPath | SubQuery, ...]
    count_only: bool
    where: Comparison | Junction | None
    order_by: tuple[Ordering, ...]
    limit: int | None
    offset: int


class _Parser:
    def __init__(self, soql: str) -> None:
        self.tokens = tokenize(soql)
        self.index = 0
        self.sobject: ObjectSpec | None = None

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def expect_keyword(self, *words: str) -> Token:
        if not self.current.is_keyword(*words):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, text: str) -> None:
        if self.current.kind != "punct" or self.current.text != text:
            raise self.unexpected()
        self.advance()

    def unexpected(self) -> SalesforceApiError:
        token = self.current
        shown = token.text or "<EOF>"
        return malformed(f"unexpected token: '{shown}' at column {token.position + 1}")

    def parse(self) -> Query:
        self.expect_keyword("select")
        select_start = self.index
        # Skip to FROM first: field paths are checked against the object named after it.
        depth = 0
        while not (depth == 0 and self.current.is_keyword("from")):
            if self.current.kind == "end":
                raise malformed("unexpected token: <EOF>, expecting FROM")
            depth += {"(": 1, ")": -1}.get(self.current.text, 0) if self.current.kind == "punct" else 0
            self.advance()
        self.advance()
        name = self.advance()
        sobject = find_object(name.text) if name.kind == "ident" else None
        if sobject is None:
            raise bad_request(
                "INVALID_TYPE",
                f"sObject type '{name.text}' is not supported. If you are attempting to use a custom object, be sure "
                "to append the '__c' after the entity name. Please reference your WSDL or the describe call for the "
                "appropriate names.",
            )
        fields, count_only, where, order_by, limit = self.clauses(sobject, select_start, self.index)
        offset = self.integer_clause("offset") or 0
        if self.current.kind != "end":
            raise self.unexpected()
        return Query(sobject, fields, count_only, where, order_by, limit, offset)

    def clauses(self, sobject: ObjectSpec, select_start: int, after_from: int) -> tuple[Any, ...]:
        """The select list (checked against `sobject`), then WHERE, ORDER BY and LIMIT after FROM."""
        self.sobject, self.index = sobject, select_start
        fields, count_only = self.select_list()
        self.index = after_from
        where = None
        if self.current.is_keyword("where"):
            self.advance()
            where = self.condition()
        order_by = self.order_by() if self.current.is_keyword("order") else ()
        return fields, count_only, where, order_by, self.integer_clause("limit")

    def select_list(self) -> tuple[tuple[FieldPath | SubQuery, ...], bool]:
        if self.current.is_keyword("count"):
            self.advance()
            self.expect_punct("(")
            self.expect_punct(")")
            self.expect_keyword("from")
            return (), True
        fields: list[FieldPath | SubQuery] = []
        while True:
            if self.current.kind == "punct" and self.current.text == "(":
                fields.append(self.subquery())
            else:
                fields.append(self.field_path(self.advance()))
            if self.current.kind == "punct" and self.current.text == ",":
                self.advance()
                continue
            self.expect_keyword("from")
            return tuple(fields), False

    def subquery(self) -> SubQuery:
        self.expect_punct("(")
        self.expect_keyword("select")
        select_start = self.index
        while not self.current.is_keyword("from"):
            if self.current.kind == "end" or (self.current.kind == "punct" and self.current.text == "("):
                raise self.unexpected()
            self.advance()
        self.advance()
        name = self.advance()
        parent = self.sobject
        assert parent is not None
        found = [
            (child, spec)
            for child, spec, relationship in child_relationships(parent.name)
            if relationship.lower() == name.text.lower()
        ]
        if not found:
            raise bad_request(
                "INVALID_TYPE",
                f"Didn't understand relationship '{name.text}' in FROM part of query call. If you are attempting to "
                "use a custom relationship, be sure to append the '__r' after the custom relationship name. Please "
                "reference your WSDL or the describe call for the appropriate names.",
            )
        child, reference = found[0]
        fields, count_only, where, order_by, limit = self.clauses(child, select_start, self.index)
        if count_only:
            raise malformed("COUNT() is not allowed in a relationship query")
        self.expect_punct(")")
        self.sobject = parent
        relationship = next(
            rel for kid, spec, rel in child_relationships(parent.name) if kid is child and spec is reference
        )
        return SubQuery(relationship, reference.name, Query(child, fields, False, where, order_by, limit, 0))

    def field_path(self, token: Token) -> FieldPath:
        if token.kind != "ident" or token.text.lower() in _KEYWORDS:
            self.index -= 1
            raise self.unexpected()
        assert self.sobject is not None
        parts = token.text.split(".")
        spec = self.sobject
        relationships: list[FieldSpec] = []
        for part in parts[:-1]:
            relationship = spec.relationship(part)
            if relationship is None:
                raise _no_such_column(part, spec)
            relationships.append(relationship)
            spec = find_object(relationship.reference_to or "")  # type: ignore[assignment]
        field = spec.field(parts[-1])
        if field is None:
            raise _no_such_column(parts[-1], spec)
        return FieldPath(token.text, tuple(relationships), field)

    def condition(self) -> Comparison | Junction:
        first = self.simple_condition()
        joiner = None
        parts = [first]
        while self.current.is_keyword("and", "or"):
            word = self.advance().text.lower()
            # SOQL has no precedence between AND and OR: mixing them without parentheses is MALFORMED_QUERY.
            if joiner is not None and word != joiner:
                raise malformed(f"unexpected token: '{word.upper()}' (use parentheses to mix AND and OR)")
            joiner = word
            parts.append(self.simple_condition())
        return Junction(joiner, tuple(parts)) if joiner else first

    def simple_condition(self) -> Comparison | Junction:
        if self.current.is_keyword("not"):
            self.advance()
            return Junction("not", (self.simple_condition(),))
        if self.current.kind == "punct" and self.current.text == "(":
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        path = self.field_path(self.advance())
        if self.current.is_keyword("in", "not"):
            negated = self.advance().text.lower() == "not"
            if negated:
                self.expect_keyword("in")
            return Comparison(path, "notin" if negated else "in", self.literal_list(path))
        if self.current.is_keyword("like"):
            self.advance()
            pattern = self.literal(path)
            if not isinstance(pattern, str):
                raise malformed("LIKE needs a string literal")
            return Comparison(path, "like", _like_pattern(pattern))
        if self.current.kind != "op":
            raise self.unexpected()
        operator = {"<>": "!="}.get(self.current.text, self.current.text)
        self.advance()
        return Comparison(path, operator, self.literal(path))

    def literal_list(self, path: FieldPath) -> tuple[Any, ...]:
        self.expect_punct("(")
        values = [self.literal(path)]
        while self.current.kind == "punct" and self.current.text == ",":
            self.advance()
            values.append(self.literal(path))
        self.expect_punct(")")
        return tuple(values)

    def literal(self, path: FieldPath) -> Any:
        token = self.advance()
        field = path.field
        if token.is_keyword("null"):
            return None
        value, kind = _literal_value(token)
        if kind is None:
            self.index -= 1
            raise self.unexpected()
        expected = _expected_literal_kind(field)
        if kind != expected:
            quoted = (
                "and should be enclosed in quotes" if expected == "string" else "and should not be enclosed in quotes"
            )
            type_name = {"datetime": "dateTime"}.get(expected, expected)
            raise bad_request(
                "INVALID_FIELD",
                f"value of filter criterion for field '{field.name}' must be of type {type_name} {quoted}",
            )
        if field.type in ("id", "reference"):
            normalized = normalize_id(value)
            if normalized is None:
                raise bad_request("INVALID_QUERY_FILTER_OPERATOR", f"invalid ID field: {value}")
            return normalized
        return value

    def order_by(self) -> tuple[Ordering, ...]:
        self.expect_keyword("order")
        self.expect_keyword("by")
        orderings: list[Ordering] = []
        while True:
            path = self.field_path(self.advance())
            descending = False
            if self.current.is_keyword("asc", "desc"):
                descending = self.advance().text.lower() == "desc"
            # SOQL's default: nulls first when ascending, last when descending.
            # (SOQL and SOSL Reference: ORDER BY.)
            nulls_first = not descending
            if self.current.is_keyword("nulls"):
                self.advance()
                nulls_first = self.expect_keyword("first", "last").text.lower() == "first"
            orderings.append(Ordering(path, descending, nulls_first))
            if not (self.current.kind == "punct" and self.current.text == ","):
                return tuple(orderings)
            self.advance()

    def integer_clause(self, keyword: str) -> int | None:
        if not self.current.is_keyword(keyword):
            return None
        self.advance()
        token = self.advance()
        if token.kind != "number" or not token.text.isdigit():
            self.index -= 1
            raise self.unexpected()
        return int(token.text)


def _no_such_column(name: str, spec: ObjectSpec) -> SalesforceApiError:
    return bad_request(
        "INVALID_FIELD",
        f"No such column '{name}' on entity '{spec.name}'. If you are attempting to use a custom field, be sure to "
        "append the '__c' after the custom field name. Please reference your WSDL or the describe call for the "
        "appropriate names.",
    )


def _literal_value(token: Token) -> tuple[Any, str | None]:
    if token.kind == "string":
        body = token.text[1:-1]
        return re.sub(r"\\(.)", lambda match: _ESCAPES.get(match.group(1), match.group(1)), body), "string"
    if token.kind == "number":
        return Decimal(token.text), "number"
    if token.kind == "datetime":
        return parse_datetime(token.text), "datetime"
    if token.kind == "date":
        return parse_date(token.text), "date"
    if token.is_keyword("true", "false"):
        return token.text.lower() == "true", "boolean"
    return None, None


def _expected_literal_kind(field: FieldSpec) -> str:
    if field.type in STRING_TYPES:
        return "string"
    if field.type in NUMBER_TYPES:
        return "number"
    return field.type  # boolean, date, datetime


def _like_pattern(pattern: str) -> re.Pattern[str]:
    # LIKE: % is any run of characters, _ exactly one; matching ignores case, as in SOQL.
    regex = "".join(".*" if char == "%" else "." if char == "_" else re.escape(char) for char in pattern)
    return re.compile(f"^{regex}$", re.IGNORECASE | re.DOTALL)


def _comparable(field: FieldSpec, value: Any) -> Any:
    if isinstance(value, str) and field.case_insensitive_text:
        return value.casefold()
    return value


def _compare(field: FieldSpec, value: Any, operator: str, operand: Any) -> bool:
    if operator == "in":
        return any(_compare(field, value, "=", item) for item in operand)
    if operator == "notin":
        return not any(_compare(field, value, "=", item) for item in operand)
    if operator == "like":
        return isinstance(value, str) and operand.match(value) is not None
    # SOQL nulls: `= null` and `!= null` test for null; any other comparison with null is false.
    if operand is None or value is None:
        if operator == "=":
            return value is None and operand is None
        if operator == "!=":
            return (value is None) != (operand is None)
        return False
    left, right = _comparable(field, value), _comparable(field, operand)
    if operator == "=":
        return left == right
    if operator == "!=":
        return left != right
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right


def parse(soql: str) -> Query:
    if not isinstance(soql, str) or not soql.strip():
        raise malformed("A SOQL query is required (parameter q)")
    return _Parser(soql).parse()


# ------------------------------------------------------------------------------------ running


def candidate_ids(query: Query, lookup: Callable[[FieldSpec, Any], list[str]]) -> set[str] | None:
    """Ids from an index when the filter pins Id, an external id or a lookup (field = x / IN), else None (scan)."""
    where = query.where
    conjuncts = where.parts if isinstance(where, Junction) and where.operator == "and" else (where,)
    for part in conjuncts:
        if not isinstance(part, Comparison) or part.path.relationships:
            continue
        field = part.path.field
        if part.operator not in ("=", "in") or not (field.name == "Id" or field.indexed or field.type == "reference"):
            continue
        values = part.operand if part.operator == "in" else (part.operand,)
        if any(value is None for value in values):
            continue
        found: set[str] = set()
        for value in values:
            found.update(lookup(field, value))
        return found
    return None


def run(
    query: Query,
    rows: Iterable[Record],
    resolve: Resolver,
) -> list[Record]:
    """The matching records, ordered, limited (not yet projected)."""
    matched = [row for row in rows if query.where is None or query.where.matches(row, resolve)]
    if not query.order_by:
        # Salesforce promises no order without ORDER BY; Id order keeps the sandbox's answers repeatable.
        matched.sort(key=lambda row: row["Id"])
    # Stable sorts from the last key to the first give a multi-key ORDER BY.
    for ordering in reversed(query.order_by):
        matched.sort(key=lambda row: _sort_key(ordering, row, resolve), reverse=ordering.descending)
    end = None if query.limit is None else query.offset + query.limit
    return matched[query.offset : end]


def _sort_key(ordering: Ordering, row: Record, resolve: Resolver) -> tuple[int, Any]:
    value = ordering.path.value(row, resolve)
    if value is None:
        # Nulls sort first or last whatever the direction (reverse=True flips this flag back).
        return (0 if ordering.nulls_first != ordering.descending else 2, 0)
    return (1, _comparable(ordering.path.field, value))


def project(query: Query, row: Record, state: SalesforceState, version: str) -> Record:
    """One result row as the REST API sends it: attributes, then the selected fields in order."""
    output: Record = {"attributes": {"type": query.sobject.name, "url": query.sobject.url(version, row["Id"])}}
    for item in query.fields:
        if isinstance(item, SubQuery):
            output[item.relationship] = _children(item, row, state, version)
        else:
            _project_path(output, item, row, state.resolve, version)
    return output


def _project_path(output: Record, path: FieldPath, row: Record, resolve: Resolver, version: str) -> None:
    target = output
    current: Record | None = row
    for relationship in path.relationships:
        parent_spec = find_object(relationship.reference_to or "")
        assert parent_spec is not None
        parent = resolve(current[relationship.name]) if current else None
        name = relationship.relationship_name or ""
        if parent is None:
            target[name] = None
            return
        nested = target.get(name)
        if nested is None:
            nested = {"attributes": {"type": parent_spec.name, "url": parent_spec.url(version, parent["Id"])}}
            target[name] = nested
        target, current = nested, parent
    target[path.field.name] = to_json_value(current.get(path.field.name) if current else None)


def _children(item: SubQuery, row: Record, state: SalesforceState, version: str) -> Record | None:
    """A child relationship's records, as a nested query result; null when there are none."""
    table = state.live_table(item.query.sobject.name)
    rows = [table[child_id] for child_id in state.children(item.query.sobject.name, item.reference_field, row["Id"])]
    matched = run(item.query, rows, state.resolve)
    if not matched:
        return None
    records = [project(item.query, child, state, version) for child in matched]
    return {"totalSize": len(records), "done": True, "records": records}


def execute(state: SalesforceState, query: Query, include_deleted: bool, version: str) -> list[Record]:
    """The query's result rows as the REST API sends them (all batches); COUNT() gives unprojected rows."""
    spec = query.sobject
    with state.lock:
        live = state.live_table(spec.name)
        candidates = None
        # The recycle bin is not indexed: queryAll scans.
        if not include_deleted:
            candidates = candidate_ids(query, lambda field, value: state.lookup(spec, field, value))
        if candidates is not None:
            rows: list[Record] = [live[rid] for rid in candidates if rid in live]
        else:
            rows = list(live.values())
            if include_deleted:
                rows += list(state.recycled_table(spec.name).values())
        matched = run(query, rows, state.resolve)
        if query.count_only:
            return matched
        return [project(query, row, state, version) for row in matched]
