"""The sandbox org's records and sessions, and the rules a write must pass.

Every write path (REST, collections, the Python seeding helpers) goes through
`SalesforceState.insert/update/upsert/delete`, so the API's validation
(required fields, unique external ids, references) holds for seeded data too.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from . import soql
from .schema import (
    CASCADE_DELETES,
    DEFAULT_API_VERSION,
    OBJECTS,
    OBJECTS_BY_PREFIX,
    OPPORTUNITY_STAGES,
    ORG_ID,
    FieldSpec,
    ObjectSpec,
    SalesforceApiError,
    bad_request,
    find_object,
    format_datetime,
    make_id,
    normalize_id,
    not_found,
    now_utc,
    parse_date,
    parse_datetime,
)

Record = dict[str, Any]
_CENT = Decimal("0.01")


class MultipleMatches(SalesforceApiError):
    """An external id that matches several records (the REST API answers 300 with their URLs)."""

    def __init__(self, sobject: str, field_name: str, record_ids: list[str]) -> None:
        super().__init__(
            300,
            "DUPLICATE_EXTERNAL_ID",
            f"more than one record found for external id field: [{', '.join(record_ids)}]",
            [field_name],
        )
        self.sobject = sobject
        self.record_ids = record_ids


def object_spec(sobject: str) -> ObjectSpec:
    spec = find_object(sobject)
    if spec is None:
        raise not_found()
    return spec


@dataclass
class _Savepoint:
    undo: list[Callable[[], None]] = field(default_factory=list)
    rolled_back: bool = False


class SalesforceState:
    """In-memory org: live records, the recycle bin, indexes, sessions. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._live: dict[str, dict[str, Record]] = {name: {} for name in OBJECTS}
        self._recycled: dict[str, dict[str, Record]] = {name: {} for name in OBJECTS}
        self._counters: dict[str, int] = {name: 0 for name in OBJECTS}
        # (object, field) -> index key -> ids of live records: external ids, unique fields and lookups.
        self._index: dict[tuple[str, str], dict[Any, set[str]]] = {}
        self._savepoint: _Savepoint | None = None
        self.sessions: dict[str, float] = {}
        self.primary_session_id: str = ""
        self.clock: Callable[[], datetime] = now_utc

    # ------------------------------------------------------------------------------ reading

    def get(self, sobject: str, record_id: str, include_deleted: bool = False) -> Record | None:
        """A copy of the record (Python values: Decimal, date, datetime), or None."""
        spec = object_spec(sobject)
        rid = normalize_id(record_id) or ""
        with self._lock:
            record = self._live[spec.name].get(rid)
            if record is None and include_deleted:
                record = self._recycled[spec.name].get(rid)
            return dict(record) if record is not None else None

    def records(self, sobject: str, include_deleted: bool = False) -> list[Record]:
        spec = object_spec(sobject)
        with self._lock:
            rows = list(self._live[spec.name].values())
            if include_deleted:
                rows += list(self._recycled[spec.name].values())
            # Id order is creation order (ids come from a counter), a stable answer for tests and seeding.
            return [dict(row) for row in sorted(rows, key=lambda row: row["Id"])]

    def find(self, sobject: str, **equals: Any) -> list[Record]:
        """Live records whose fields equal the given values, e.g. find("Account", Stripe_Customer_Id__c="cus_1")."""
        return [row for row in self.records(sobject) if all(row.get(name) == value for name, value in equals.items())]

    def query(self, soql_text: str, include_deleted: bool = False) -> list[Record]:
        """Rows of a SOQL query as the REST API sends them (JSON values, attributes), unpaged."""
        return soql.execute(self, soql.parse(soql_text), include_deleted, DEFAULT_API_VERSION)

    def live_table(self, sobject: str) -> dict[str, Record]:
        """The live records of one object, not copied (for the query engine, under `lock`)."""
        return self._live[sobject]

    def recycled_table(self, sobject: str) -> dict[str, Record]:
        return self._recycled[sobject]

    def resolve(self, record_id: str | None) -> Record | None:
        """Any record, live or deleted, by id alone (its prefix names the object)."""
        if not record_id:
            return None
        spec = OBJECTS_BY_PREFIX.get(record_id[:3])
        if spec is None:
            return None
        return self._live[spec.name].get(record_id) or self._recycled[spec.name].get(record_id)

    def lookup(self, spec: ObjectSpec, field_spec: FieldSpec, value: Any) -> list[str]:
        """Ids of live records whose `field_spec` equals `value` (Id or an indexed field)."""
        if field_spec.name == "Id":
            rid = normalize_id(value)
            return [rid] if rid and rid in self._live[spec.name] else []
        if field_spec.type == "reference":
            return self.children(spec.name, field_spec.name, normalize_id(value) or "")
        if not field_spec.indexed:
            raise AssertionError(f"{spec.name}.{field_spec.name} is not indexed")
        found = self._index.get((spec.name, field_spec.name), {}).get(field_spec.index_key(value), ())
        return sorted(found)

    def children(self, child: str, reference_field: str, parent_id: str) -> list[str]:
        return sorted(self._index.get((child, reference_field), {}).get(parent_id, ()))

    @property
    def lock(self) -> threading.RLock:
        return self._lock

    # ------------------------------------------------------------------------------ writing

    def insert(self, sobject: str, fields: Record, *, at: datetime | None = None, enforce_unique: bool = True) -> str:
        """Create a record from JSON-style field values (as a REST body); returns its 18-character id.

        `at` backdates CreatedDate/LastModifiedDate/SystemModstamp (for seeding history).
        `enforce_unique=False` lets seeded legacy data break uniqueness (to provoke 300s).
        """
        spec = object_spec(sobject)
        with self._lock:
            values = self._coerce_body(spec, fields, creating=True)
            record: Record = {name: spec_field.default for name, spec_field in spec.fields.items()}
            record.update(values)
            self._check_record(spec, record, values, enforce_unique, record_id=None)
            stamp = self._stamp(at)
            self._counters[spec.name] += 1
            record_id = make_id(spec.key_prefix, self._counters[spec.name])
            record.update(
                Id=record_id, IsDeleted=False, CreatedDate=stamp, LastModifiedDate=stamp, SystemModstamp=stamp
            )
            self._set_live(spec, record_id, record)
            self._after_write(spec, record, stamp)
            return record_id

    def update(
        self,
        sobject: str,
        record_id: str,
        fields: Record,
        *,
        at: datetime | None = None,
        enforce_unique: bool = True,
    ) -> None:
        spec = object_spec(sobject)
        with self._lock:
            rid = self._require_live(spec, record_id)
            values = self._coerce_body(spec, fields, creating=False, record_id=rid)
            record = dict(self._live[spec.name][rid])
            record.update(values)
            self._check_record(spec, record, values, enforce_unique, record_id=rid)
            stamp = self._stamp(at)
            record.update(LastModifiedDate=stamp, SystemModstamp=stamp)
            self._set_live(spec, rid, record)
            self._after_write(spec, record, stamp)

    def upsert(
        self,
        sobject: str,
        external_field: str,
        value: str,
        fields: Record,
        *,
        update_only: bool = False,
        at: datetime | None = None,
        enforce_unique: bool = True,
    ) -> tuple[str, bool]:
        """Update the one record whose `external_field` is `value`, or create it; returns (id, created)."""
        spec = object_spec(sobject)
        field_spec = spec.field(external_field)
        if field_spec is None or not (field_spec.external_id or field_spec.name == "Id"):
            raise not_found(f"Provided external ID field does not exist or is not accessible: {external_field}")
        # The external id comes from the URL; Salesforce refuses it again in the body, so it is dropped here
        # and set from the URL value on create.
        body = {key: raw for key, raw in fields.items() if key.lower() != field_spec.name.lower()}
        with self._lock:
            matches = self.lookup(spec, field_spec, value)
            if len(matches) > 1:
                raise MultipleMatches(spec.name, field_spec.name, matches)
            if matches:
                self.update(spec.name, matches[0], body, at=at, enforce_unique=enforce_unique)
                return matches[0], False
            # `updateOnly=true` forbids creating; upserting by Id can only update (an id cannot be chosen).
            if update_only or field_spec.name == "Id":
                raise not_found()
            created = self.insert(spec.name, {**body, field_spec.name: value}, at=at, enforce_unique=enforce_unique)
            return created, True

    def delete(self, sobject: str, record_id: str) -> None:
        """Move a record (and the children Salesforce deletes with it) to the recycle bin."""
        spec = object_spec(sobject)
        with self._lock:
            rid = self._require_live(spec, record_id)
            # Products in use on opportunities cannot be deleted (Salesforce's DELETE_FAILED); lines would lose
            # their product otherwise.
            if spec.name == "Product2" and self.children("OpportunityLineItem", "Product2Id", rid):
                raise bad_request(
                    "DELETE_FAILED",
                    "Your attempt to delete this product could not be completed because it is associated with "
                    "opportunity products.",
                )
            self._delete_tree(spec, rid, self._stamp(None))

    def reset(self) -> None:
        """Empty the org's data (sessions stay valid)."""
        with self._lock:
            for name in OBJECTS:
                self._live[name] = {}
                self._recycled[name] = {}
                self._counters[name] = 0
            self._index = {}

    @contextmanager
    def savepoint(self) -> Iterator[_Savepoint]:
        """Writes inside can be undone with `rollback(savepoint)` (for allOrNone collections)."""
        with self._lock:
            if self._savepoint is not None:
                raise RuntimeError("savepoints do not nest")
            self._savepoint = point = _Savepoint()
            try:
                yield point
            finally:
                self._savepoint = None

    def rollback(self, point: _Savepoint) -> None:
        with self._lock:
            active, self._savepoint = self._savepoint, None
            for undo in reversed(point.undo):
                undo()
            point.undo.clear()
            point.rolled_back = True
            self._savepoint = active

    # ------------------------------------------------------------------------------ sessions

    def new_session(self) -> str:
        # Real session ids start with the 15-character org id and `!`; some clients read the org from it.
        session_id = f"{ORG_ID[:15]}!AR" + secrets.token_urlsafe(72).replace("-", ".").replace("_", ".")
        with self._lock:
            self.sessions[session_id] = time.time()
        return session_id

    def ensure_primary_session(self, timeout_seconds: float) -> str:
        """The session handed out in `.env()`: kept while valid, replaced once expired."""
        with self._lock:
            if not self.session_valid(self.primary_session_id, timeout_seconds, touch=False):
                self.primary_session_id = self.new_session()
            return self.primary_session_id

    def session_valid(self, session_id: str, timeout_seconds: float, touch: bool = True) -> bool:
        last_used = self.sessions.get(session_id)
        now = time.time()
        if last_used is None or now - last_used > timeout_seconds:
            return False
        # Salesforce's timeout counts from the last request, not from login: every use extends it.
        if touch:
            self.sessions[session_id] = now
        return True

    def expire_sessions(self) -> int:
        with self._lock:
            count = len(self.sessions)
            self.sessions.clear()
            return count

    # ------------------------------------------------------------------------------ persistence

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            return {
                "format": 1,
                "counters": dict(self._counters),
                "records": {name: [_persisted(row) for row in rows.values()] for name, rows in self._live.items()},
                "recycled": {name: [_persisted(row) for row in rows.values()] for name, rows in self._recycled.items()},
                "sessions": dict(self.sessions),
                "primary_session_id": self.primary_session_id,
            }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SalesforceState:
        state = cls()
        state._counters.update(data.get("counters", {}))
        for name, rows in data.get("records", {}).items():
            spec = OBJECTS[name]
            for row in rows:
                record = _restored(spec, row)
                state._live[name][record["Id"]] = record
                state._index_record(spec, record, add=True)
        for name, rows in data.get("recycled", {}).items():
            spec = OBJECTS[name]
            state._recycled[name] = {row["Id"]: _restored(spec, row) for row in rows}
        state.sessions = {key: float(value) for key, value in data.get("sessions", {}).items()}
        state.primary_session_id = data.get("primary_session_id", "")
        return state

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json()))

    @classmethod
    def load(cls, path: str | Path) -> SalesforceState:
        return cls.from_json(json.loads(Path(path).read_text()))

    # ------------------------------------------------------------------------------ internals

    def _stamp(self, at: datetime | None) -> datetime:
        moment = at or self.clock()
        # Salesforce keeps datetimes to the millisecond (2026-11-24T08:00:00.000+0000).
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)

    def _require_live(self, spec: ObjectSpec, record_id: str) -> str:
        rid = normalize_id(record_id)
        if rid is None or rid[:3] != spec.key_prefix:
            raise not_found(f"Provided external ID field does not exist or is not accessible: {record_id}")
        if rid in self._live[spec.name]:
            return rid
        if rid in self._recycled[spec.name]:
            raise SalesforceApiError(404, "ENTITY_IS_DELETED", "entity is deleted", [])
        raise not_found()

    def _coerce_body(self, spec: ObjectSpec, body: Record, creating: bool, record_id: str | None = None) -> Record:
        if not isinstance(body, dict):
            raise bad_request("JSON_PARSER_ERROR", "The request body must be a JSON object")
        values: Record = {}
        read_only: list[str] = []
        for key, raw in body.items():
            if key == "attributes":
                continue
            field_spec = spec.field(key)
            if field_spec is None:
                relationship = spec.relationship(key)
                if relationship is not None and isinstance(raw, dict):
                    values[relationship.name] = self._resolve_foreign_key(relationship, raw)
                    continue
                raise bad_request("INVALID_FIELD", f"No such column '{key}' on sobject of type {spec.name}")
            # A body may repeat the record's own Id (collections put it there); only a different Id is an error.
            if field_spec.name == "Id" and record_id is not None and normalize_id(raw) == record_id:
                continue
            if not (field_spec.createable if creating else field_spec.updateable):
                read_only.append(field_spec.name)
                continue
            values[field_spec.name] = field_spec.coerce(raw, spec.name)
        if read_only:
            raise bad_request(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {', '.join(read_only)}. Please check the security settings of "
                "this field and verify that it is read/write for your profile or permission set.",
                read_only,
            )
        for name, value in values.items():
            field_spec = spec.fields[name]
            if field_spec.type == "reference" and value is not None:
                values[name] = self._check_reference(field_spec, value)
        return values

    def _check_reference(self, field_spec: FieldSpec, value: str) -> str:
        rid = normalize_id(value)
        if rid is None:
            raise bad_request(
                "MALFORMED_ID", f"{field_spec.label}: id value of incorrect type: {value}", [field_spec.name]
            )
        target = OBJECTS[field_spec.reference_to or ""]
        # The first three characters of an id name its object: an Account id in a Contact lookup is refused.
        if rid[:3] != target.key_prefix:
            raise bad_request(
                "FIELD_INTEGRITY_EXCEPTION",
                f"{field_spec.label}: id value of incorrect type: {value}",
                [field_spec.name],
            )
        if rid in self._recycled[target.name]:
            raise bad_request("ENTITY_IS_DELETED", "entity is deleted", [field_spec.name])
        if rid not in self._live[target.name]:
            raise bad_request("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id", [field_spec.name])
        return rid

    def _resolve_foreign_key(self, relationship: FieldSpec, raw: Record) -> str:
        """`{"Account": {"Stripe_Customer_Id__c": "cus_1"}}`: a lookup set through the parent's external id."""
        target = OBJECTS[relationship.reference_to or ""]
        keys = [key for key in raw if key != "attributes"]
        key_spec = target.field(keys[0]) if len(keys) == 1 else None
        if key_spec is None or not (key_spec.external_id or key_spec.name == "Id"):
            raise bad_request(
                "INVALID_FIELD",
                f"The {relationship.relationship_name} relationship must name exactly one external ID field of "
                f"{target.name}",
            )
        value = raw[keys[0]]
        matches = self.lookup(target, key_spec, value)
        if not matches:
            raise bad_request(
                "INVALID_FIELD",
                f"Foreign key external ID: {value} not found for field {key_spec.name} in entity {target.name}",
            )
        if len(matches) > 1:
            raise bad_request(
                "INVALID_FIELD",
                f"Foreign key external ID: {value} matched more than one record for field {key_spec.name} "
                f"in entity {target.name}",
            )
        return matches[0]

    def _check_record(
        self, spec: ObjectSpec, record: Record, values: Record, enforce_unique: bool, record_id: str | None
    ) -> None:
        missing = [item.name for item in spec.required_fields if record.get(item.name) in (None, "")]
        if missing:
            raise bad_request("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        # Derived fields before the unique check: derivations may refuse the write (FIELD_INTEGRITY_EXCEPTION).
        _DERIVATIONS.get(spec.name, _no_derivation)(self, record, values, record_id is None)
        if enforce_unique:
            self._check_unique(spec, record, record_id)

    def _check_unique(self, spec: ObjectSpec, record: Record, record_id: str | None) -> None:
        for field_spec in spec.indexed_fields:
            value = record.get(field_spec.name)
            if not field_spec.unique or value is None:
                continue
            owners = self._index.get((spec.name, field_spec.name), {}).get(field_spec.index_key(value), ())
            other = next((owner for owner in sorted(owners) if owner != record_id), None)
            if other is not None:
                raise bad_request(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {field_spec.name} duplicates value on record with id: {other}",
                    [],
                )

    def _after_write(self, spec: ObjectSpec, record: Record, stamp: datetime) -> None:
        if spec.name == "OpportunityLineItem":
            self._roll_up_opportunity(record["OpportunityId"], stamp)
        elif spec.name == "Opportunity":
            self._roll_up_opportunity(record["Id"], None)

    def _roll_up_opportunity(self, opportunity_id: str, stamp: datetime | None) -> None:
        """An opportunity with products has Amount = the sum of their TotalPrice, as in Salesforce."""
        opportunity = self._live["Opportunity"].get(opportunity_id)
        if opportunity is None:
            return
        lines = [
            self._live["OpportunityLineItem"][line]
            for line in self.children("OpportunityLineItem", "OpportunityId", opportunity_id)
        ]
        # While an opportunity has products, Salesforce computes its Amount as the sum of their TotalPrice
        # (Amount is then read-only); without products the Amount is left as it was.
        rolled = dict(opportunity, HasOpportunityLineItem=bool(lines))
        if lines:
            rolled["Amount"] = sum((line["TotalPrice"] or Decimal(0) for line in lines), Decimal("0.00"))
        if rolled != opportunity:
            if stamp is not None:
                rolled.update(LastModifiedDate=stamp, SystemModstamp=stamp)
            self._set_live(OBJECTS["Opportunity"], opportunity_id, rolled)

    def _delete_tree(self, spec: ObjectSpec, record_id: str, stamp: datetime) -> None:
        # Children first, as Salesforce cascades (an opportunity's line items go to the recycle bin with it).
        for child_name, reference_field in sorted(CASCADE_DELETES):
            if OBJECTS[child_name].fields[reference_field].reference_to == spec.name:
                for child_id in self.children(child_name, reference_field, record_id):
                    self._delete_tree(OBJECTS[child_name], child_id, stamp)
        record = self._live[spec.name][record_id]
        self._set_live(spec, record_id, None)
        self._set_recycled(spec, record_id, dict(record, IsDeleted=True, SystemModstamp=stamp))
        if spec.name == "OpportunityLineItem":
            self._roll_up_opportunity(record["OpportunityId"], stamp)

    def _set_live(self, spec: ObjectSpec, record_id: str, record: Record | None) -> None:
        table = self._live[spec.name]
        previous = table.get(record_id)
        if previous is not None:
            self._index_record(spec, previous, add=False)
            del table[record_id]
        if record is not None:
            table[record_id] = record
            self._index_record(spec, record, add=True)
        if self._savepoint is not None:
            self._savepoint.undo.append(lambda: self._set_live(spec, record_id, previous))

    def _set_recycled(self, spec: ObjectSpec, record_id: str, record: Record | None) -> None:
        table = self._recycled[spec.name]
        previous = table.pop(record_id, None)
        if record is not None:
            table[record_id] = record
        if self._savepoint is not None:
            self._savepoint.undo.append(lambda: self._set_recycled(spec, record_id, previous))

    def _index_record(self, spec: ObjectSpec, record: Record, add: bool) -> None:
        for field_spec in spec.fields.values():
            if not (field_spec.indexed or field_spec.type == "reference"):
                continue
            value = record.get(field_spec.name)
            if value is None:
                continue
            bucket = self._index.setdefault((spec.name, field_spec.name), {})
            key = field_spec.index_key(value)
            if add:
                bucket.setdefault(key, set()).add(record["Id"])
            else:
                owners = bucket.get(key)
                if owners is not None:
                    owners.discard(record["Id"])
                    if not owners:
                        del bucket[key]


# ---------------------------------------------------------------------- per-object derived fields


def _no_derivation(state: SalesforceState, record: Record, values: Record, creating: bool) -> None:
    return None


def _derive_opportunity(state: SalesforceState, record: Record, values: Record, creating: bool) -> None:
    if not creating and "CurrencyIsoCode" in values:
        before = state.live_table("Opportunity")[record["Id"]]["CurrencyIsoCode"]
        # Line items take the opportunity's currency, so it is fixed once products are added.
        if values["CurrencyIsoCode"] != before and state.children("OpportunityLineItem", "OpportunityId", record["Id"]):
            raise _field_integrity(
                "CurrencyIsoCode (cannot change the currency of an opportunity with products)", "CurrencyIsoCode"
            )
    probability, forecast, closed, won = OPPORTUNITY_STAGES[record["StageName"]]
    record.update(IsClosed=closed, IsWon=won, ForecastCategoryName=forecast)
    # A stage change resets Probability to the stage's default unless the request sets it too.
    if "StageName" in values and "Probability" not in values:
        record["Probability"] = Decimal(probability)
    if creating:
        record["HasOpportunityLineItem"] = False


def _derive_contact(state: SalesforceState, record: Record, values: Record, creating: bool) -> None:
    record["Name"] = " ".join(part for part in (record.get("FirstName"), record["LastName"]) if part)


def _field_integrity(detail: str, field_name: str) -> SalesforceApiError:
    return bad_request("FIELD_INTEGRITY_EXCEPTION", f"field integrity exception: {detail}", [field_name])


def _derive_line_item(state: SalesforceState, record: Record, values: Record, creating: bool) -> None:
    quantity: Decimal = record["Quantity"]
    if quantity == 0:
        raise _field_integrity("Quantity (quantity must be non-zero)", "Quantity")
    if "UnitPrice" in values and "TotalPrice" in values and values["TotalPrice"] is not None:
        raise _field_integrity("TotalPrice (cannot specify both UnitPrice and TotalPrice)", "TotalPrice")
    if values.get("TotalPrice") is not None:
        # Given TotalPrice, Salesforce derives UnitPrice = TotalPrice / Quantity (one of the two, never both).
        # (Salesforce Object Reference: OpportunityLineItem, UnitPrice and TotalPrice.)
        record["UnitPrice"] = (values["TotalPrice"] / quantity).quantize(_CENT, rounding=ROUND_HALF_UP)
    if record["UnitPrice"] is None:
        raise _field_integrity("unknown (must specify either UnitPrice or TotalPrice)", "UnitPrice")
    if values.get("TotalPrice") is None:
        record["TotalPrice"] = (record["UnitPrice"] * quantity).quantize(_CENT, rounding=ROUND_HALF_UP)
    opportunity = state.live_table("Opportunity")[record["OpportunityId"]]
    product = state.live_table("Product2").get(record.get("Product2Id") or "")
    record["CurrencyIsoCode"] = opportunity["CurrencyIsoCode"]
    record["ProductCode"] = product["ProductCode"] if product else None
    record["Name"] = f"{opportunity['Name']} {product['Name']}" if product else opportunity["Name"]


_DERIVATIONS: dict[str, Callable[[SalesforceState, Record, Record, bool], None]] = {
    "Opportunity": _derive_opportunity,
    "Contact": _derive_contact,
    "OpportunityLineItem": _derive_line_item,
}


# ---------------------------------------------------------------------- persistence formats


def _persisted(record: Record) -> Record:
    def plain(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, datetime):
            return format_datetime(value)
        if isinstance(value, date):
            return value.isoformat()
        return value

    return {name: plain(value) for name, value in record.items()}


def _restored(spec: ObjectSpec, row: Record) -> Record:
    record: Record = {}
    for name, field_spec in spec.fields.items():
        value = row.get(name)
        if value is not None and field_spec.type in ("currency", "double", "percent"):
            value = Decimal(value)
        elif value is not None and field_spec.type == "datetime":
            value = parse_datetime(value)
        elif value is not None and field_spec.type == "date":
            value = parse_date(value)
        record[name] = value
    return record
