"""The sandbox account's records in memory: writes, reads, the links between documents, persistence.

Money is Decimal throughout. Records are stored with references as internal-id strings and
sublists as lists of line dicts; `render` turns them into NetSuite's JSON. Internal ids come
from one counter for every writable type, so a transaction id is unique across types (as in
SuiteQL's `transaction` table).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import documents
from .config import ACCOUNT_FILE, AccountRules, load_account_file
from .errors import (
    DUPLICATE_RECORD,
    DUPLICATE_RECORD_DETAIL,
    INSUFFICIENT_PERMISSION,
    INVALID_CONTENT,
    INVALID_PARAMETER,
    LINE_ITEM_REQUIRED_DETAIL,
    NetSuiteError,
    bad_request,
    invalid_reference,
    missing_values,
    not_found,
)
from .jsonio import from_plain, to_plain
from .schema import (
    FIRST_INTERNAL_ID,
    FIRST_TRAN_NUMBER,
    NUMBER_FIELDS,
    READ_ONLY_FIELDS,
    SUBLIST_KEY_FIELDS,
    SUBLISTS,
    TRAN_ID_PREFIXES,
    TRANSACTION_LABELS,
    TRANSACTION_TYPES,
    WRITABLE_TYPES,
    check_external_id,
    reference_targets,
    to_number,
)

RECORD_PATH = "/services/rest/record/v1"
DEPENDENT_RECORDS_DETAIL = "This record cannot be deleted because it has dependent records."


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _blank(value: Any) -> bool:
    return value is None or value == "" or value == []


def _line_key(name: str, value: Any) -> str:
    """A keyed sublist's key (a deposit's payment `id`): an internal id as a string or an integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise bad_request(f"Invalid Field Value {value} for the following field: {name}", INVALID_PARAMETER)


def _copy_record(record: dict[str, Any]) -> dict[str, Any]:
    """A copy whose sublist lines can be changed (amounts are quantized in place) without touching the stored one."""
    return {
        key: [dict(item) if isinstance(item, dict) else item for item in value] if isinstance(value, list) else value
        for key, value in record.items()
    }


def _relink(
    forward: dict[str, dict[str, Decimal]], backward: dict[str, dict[str, Decimal]], source: str, targets: dict
) -> None:
    """Replace what `source` points at in a two-way index (forward[source][target] == backward[target][source])."""
    for target in forward.pop(source, {}):
        backward.get(target, {}).pop(source, None)
    if targets:
        forward[source] = dict(targets)
        for target, amount in targets.items():
            backward.setdefault(target, {})[source] = amount


class NetSuiteState:
    """Records by type and id, external-id indexes, and the applications between documents.

    `incoming[target][source]` / `outgoing[source][target]` hold amounts applied (payment or credit
    memo -> invoice, refund -> credit memo or payment); `credits_used[payment][credit]` /
    `credited[credit][payment]` the credits a payment uses up towards its applications;
    `deposited_in[payment] = deposit`.
    Thread-safe through `lock` (the server's event loop writes while a test thread reads).
    """

    def __init__(self, account_file: str | Path | None = None) -> None:
        self.lock = threading.RLock()
        self.account_file = str(account_file or ACCOUNT_FILE)
        self.reset()

    # ---- lifecycle ---------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty every writable record type; reload the reference lists from the account file."""
        with self.lock:
            account = load_account_file(self.account_file)
            self.reference: dict[str, dict[str, dict[str, Any]]] = {
                record_type: {rid: dict(row) for rid, row in rows.items()}
                for record_type, rows in account.reference.items()
            }
            self.records: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in WRITABLE_TYPES}
            self.external_ids: dict[str, dict[str, str]] = {t: {} for t in WRITABLE_TYPES}
            self.type_of: dict[str, str] = {}
            self.outgoing: dict[str, dict[str, Decimal]] = {}
            self.incoming: dict[str, dict[str, Decimal]] = {}
            self.credits_used: dict[str, dict[str, Decimal]] = {}
            self.credited: dict[str, dict[str, Decimal]] = {}
            self.deposited_in: dict[str, str] = {}
            self.next_id = FIRST_INTERNAL_ID
            self.tran_numbers: dict[str, int] = {}
            # Sandbox only: amounts sent with more decimals than their currency holds
            # (GET /_sandbox/precision_violations).
            self.precision_violations: list[dict[str, Any]] = []
            self.changed()

    def changed(self) -> None:
        """Count a change of any record or link: SuiteQL's table rows, derived from all of them, are rebuilt."""
        self.generation = getattr(self, "generation", 0) + 1
        self.row_cache: dict[str, tuple[int, list[dict[str, Any]]]] = {}

    def to_json(self) -> dict[str, Any]:
        with self.lock:
            return {
                "account_file": self.account_file,
                "records": to_plain(self.records),
                "outgoing": to_plain(self.outgoing),
                "credits_used": to_plain(self.credits_used),
                "deposited_in": dict(self.deposited_in),
                "next_id": self.next_id,
                "tran_numbers": dict(self.tran_numbers),
                "precision_violations": to_plain(self.precision_violations),
            }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NetSuiteState:
        state = cls(data.get("account_file"))
        with state.lock:
            state.records.update(from_plain(data["records"]))
            for record_type, rows in state.records.items():
                for rid, record in rows.items():
                    state.type_of[rid] = record_type
                    if record.get("externalId"):  # a duplicate (see `duplicate`) never takes the index
                        state.external_ids[record_type].setdefault(record["externalId"], rid)
            for source, targets in from_plain(data["outgoing"]).items():
                state._replace_outgoing(source, targets)
            for payment, credits in from_plain(data.get("credits_used", {})).items():
                state._replace_credits(payment, credits)
            state.deposited_in = dict(data["deposited_in"])
            state.next_id = int(data["next_id"])
            state.tran_numbers = {k: int(v) for k, v in data["tran_numbers"].items()}
            state.precision_violations = from_plain(data.get("precision_violations", []))
        return state

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> NetSuiteState:
        return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))

    # ---- lookups ---------------------------------------------------------------------------
    def get(self, record_type: str, rid: str) -> dict[str, Any] | None:
        """The stored record (references as internal ids), or None."""
        rows = self.records.get(record_type)
        if rows is None:
            rows = self.reference.get(record_type, {})
        return rows.get(rid)

    def id_for_external_id(self, record_type: str, external_id: str) -> str | None:
        return self.external_ids.get(record_type, {}).get(external_id)

    def count(self, record_type: str) -> int:
        return len(self.list_ids(record_type))

    def resolve_key(self, record_type: str, key: str) -> str:
        """An internal id or `eid:<externalId>` from a URL -> the internal id; 404 when absent."""
        with self.lock:
            rid = self.id_for_external_id(record_type, key[4:]) if key.startswith("eid:") else key
            if rid is None or self.get(record_type, rid) is None:
                raise not_found()
            return rid

    def list_ids(self, record_type: str) -> list[str]:
        with self.lock:
            rows = self.records.get(record_type)
            return list(rows if rows is not None else self.reference.get(record_type, {}))

    def precision(self, currency_id: str | None) -> int:
        currency = self.reference["currency"].get(currency_id or "", {})
        # NetSuite supports 0 or 2 decimal places only (help: "Currency Decimal Precision").
        return int(currency.get("currencyPrecision", 2))

    def ref_name(self, record_type: str, rid: str) -> str:
        record = self.get(record_type, rid) or {}
        if record_type in TRANSACTION_TYPES:
            return f"{TRANSACTION_LABELS[record_type]} #{record.get('tranId', rid)}"
        if record_type == "customer":
            person = " ".join(p for p in (record.get("firstName"), record.get("lastName")) if p)
            return str(record.get("companyName") or person or record.get("entityId") or rid)
        return str(record.get("name", rid))

    def applied_from(self, source: str) -> Decimal:
        return sum(self.outgoing.get(source, {}).values(), Decimal(0))

    def applied_to(self, target: str, excluding: str | None = None) -> Decimal:
        return sum((amount for src, amount in self.incoming.get(target, {}).items() if src != excluding), Decimal(0))

    def credits_given(self, payment: str) -> Decimal:
        """What a payment takes from credit memos and other payments towards its applications."""
        return sum(self.credits_used.get(payment, {}).values(), Decimal(0))

    def credit_taken(self, credit: str, excluding: str | None = None) -> Decimal:
        """What payments took from a credit memo's or payment's unapplied amount (their `credit` lines)."""
        return sum((amount for pay, amount in self.credited.get(credit, {}).items() if pay != excluding), Decimal(0))

    # ---- writes ----------------------------------------------------------------------------
    def create(self, record_type: str, body: Any, rules: AccountRules) -> str:
        with self.lock:
            fields = self._normalize(record_type, body)
            external_id = fields.get("externalId")
            # POST never upserts: an external id already in use is "This record already exists" (400).
            # Only PUT eid:X creates-or-updates.
            if external_id is not None and external_id in self.external_ids[record_type]:
                raise bad_request(DUPLICATE_RECORD_DETAIL, DUPLICATE_RECORD)
            return self._save(record_type, None, fields, rules)

    def update(self, record_type: str, key: str, body: Any, rules: AccountRules) -> str:
        with self.lock:
            rid = self.resolve_key(record_type, key)
            fields = self._normalize(record_type, body)
            holder = self.external_ids[record_type].get(fields.get("externalId") or "")
            if holder not in (None, rid):
                raise bad_request(DUPLICATE_RECORD_DETAIL, DUPLICATE_RECORD)
            return self._save(record_type, rid, fields, rules)

    def upsert(self, record_type: str, external_id: str, body: Any, rules: AccountRules) -> tuple[str, bool]:
        """PUT eid:<external_id>: create, or update the record holding that external id. -> (id, created)."""
        with self.lock:
            check_external_id(external_id)
            fields = self._normalize(record_type, body)
            fields["externalId"] = external_id
            rid = self.external_ids[record_type].get(external_id)
            return self._save(record_type, rid, fields, rules), rid is None

    def duplicate(self, record_type: str, key: str) -> str:
        """A second record under the same external id (new internal id and tranId, no applications).

        NetSuite's REST API refuses such a record, yet the pipeline checks for duplicates after every
        sync because nothing stops one arriving another way (a CSV import, a copy made by hand). The
        original keeps the external-id index, so an `eid:` upsert still finds it.
        """
        with self.lock:
            self._writable(record_type)
            rid = self.resolve_key(record_type, key)
            copy = {
                k: v
                for k, v in _copy_record(self.records[record_type][rid]).items()
                if k not in ("id", "tranId", "createdDate")
            }
            new_id = str(self.next_id)
            self.next_id += 1
            copy["createdDate"] = copy["lastModifiedDate"] = _now()
            if record_type in TRANSACTION_TYPES:
                copy["tranId"] = self._next_tran_id(record_type)
            self.records[record_type][new_id] = {"id": new_id, **copy}
            self.type_of[new_id] = record_type
            self.changed()
            return new_id

    def delete(self, record_type: str, key: str) -> None:
        with self.lock:
            self._writable(record_type)
            rid = self.resolve_key(record_type, key)
            # NetSuite refuses to delete a record others point at (applied payments, deposits, a credit memo's
            # createdFrom, a customer's transactions): unapply or delete those first.
            if (
                self.incoming.get(rid)
                or self.credited.get(rid)
                or rid in self.deposited_in
                or self._has_dependents(record_type, rid)
            ):
                raise bad_request(DEPENDENT_RECORDS_DETAIL)
            record = self.records[record_type].pop(rid)
            self.external_ids[record_type].pop(record.get("externalId") or "", None)
            self.type_of.pop(rid, None)
            # Deleting a payment or memo releases what it applied, so the invoices it paid reopen.
            self._replace_outgoing(rid, {})
            self._replace_credits(rid, {})
            self._replace_deposits(rid, frozenset())
            self.changed()

    def _save(self, record_type: str, rid: str | None, fields: dict[str, Any], rules: AccountRules) -> str:
        existing = self.records[record_type].get(rid) if rid else None
        # null clears; lines are copied so that rounding them leaves the request's own values in `fields`.
        merged = {**(existing or {}), **fields}
        record = _copy_record({name: value for name, value in merged.items() if value is not None})
        self._check_required(record_type, record, rules)
        documents.check_line_count(record_type, record, rules)
        derived = documents.derive(self, record_type, record, rid, rules)
        # Judged on the request's own fields (stored amounts are rounded already), once the save is certain.
        violations = documents.precision_violations(
            self, record_type, fields, derived.currency or record.get("currency")
        )
        rid = self._commit(record_type, rid, record, derived)
        for violation in violations:
            self.precision_violations.append(
                {**violation, "id": rid, "externalId": record.get("externalId"), "at": record["lastModifiedDate"]}
            )
        return rid

    def _commit(self, record_type: str, rid: str | None, record: dict[str, Any], derived: documents.Derived) -> str:
        now = _now()
        if rid is None:
            rid = str(self.next_id)
            self.next_id += 1
            record["createdDate"] = now
            if record_type in TRANSACTION_TYPES and not record.get("tranId"):
                record["tranId"] = self._next_tran_id(record_type)
        else:
            # An update may change the external id: the old one is released from the index.
            previous = self.records[record_type][rid].get("externalId")
            self.external_ids[record_type].pop(previous or "", None)
        if derived.total is not None:
            record["total"] = derived.total
        record["lastModifiedDate"] = now
        head = {"id": rid, "externalId": record.get("externalId")} if record.get("externalId") else {"id": rid}
        self.records[record_type][rid] = {**head, **{k: v for k, v in record.items() if k not in head}}
        self.type_of[rid] = record_type
        if record.get("externalId"):
            self.external_ids[record_type][record["externalId"]] = rid
        self._replace_outgoing(rid, derived.outgoing)
        self._replace_credits(rid, derived.credits)
        self._replace_deposits(rid, derived.deposits)
        self.changed()
        return rid

    def _next_tran_id(self, record_type: str) -> str:
        number = self.tran_numbers.get(record_type, FIRST_TRAN_NUMBER)
        self.tran_numbers[record_type] = number + 1
        return f"{TRAN_ID_PREFIXES[record_type]}{number}"

    def _replace_outgoing(self, source: str, targets: dict[str, Decimal]) -> None:
        _relink(self.outgoing, self.incoming, source, targets)

    def _replace_credits(self, payment: str, credits: dict[str, Decimal]) -> None:
        _relink(self.credits_used, self.credited, payment, credits)

    def _replace_deposits(self, deposit: str, payments: frozenset[str]) -> None:
        for payment in [p for p, d in self.deposited_in.items() if d == deposit]:
            del self.deposited_in[payment]
        for payment in payments:
            self.deposited_in[payment] = deposit

    def _has_dependents(self, record_type: str, rid: str) -> bool:
        if record_type == "customer":
            return any(
                rid in (rec.get("entity"), rec.get("customer"))
                for t in TRANSACTION_TYPES
                for rec in self.records[t].values()
            )
        if record_type == "invoice":
            return any(memo.get("createdFrom") == rid for memo in self.records["creditMemo"].values())
        return False

    def _writable(self, record_type: str) -> None:
        if record_type not in WRITABLE_TYPES:
            raise NetSuiteError(
                403,
                INSUFFICIENT_PERMISSION,
                f"The sandbox's {record_type} list is read-only; change it in the account file.",
            )

    # ---- validation ------------------------------------------------------------------------
    def _check_required(self, record_type: str, record: dict[str, Any], rules: AccountRules) -> None:
        sublists = SUBLISTS.get(record_type, ())
        required = rules.fields_required(record_type)
        missing = [name for name in required if name not in sublists and _blank(record.get(name))]
        if missing:
            raise missing_values([rules.label(name) for name in missing])
        if any(name in sublists and not record.get(name) for name in required):
            raise bad_request(LINE_ITEM_REQUIRED_DETAIL)

    def _normalize(self, record_type: str, body: Any) -> dict[str, Any]:
        """A request body -> stored form: references resolved to ids, numbers as Decimal."""
        self._writable(record_type)
        if not isinstance(body, dict):
            raise bad_request("The request body must be a JSON object.", INVALID_CONTENT)
        sublists = SUBLISTS.get(record_type, ())
        fields: dict[str, Any] = {}
        for name, value in body.items():
            if name in sublists:  # before the read-only check: journalEntry's sublist is called `line`
                fields[name] = self._normalize_sublist(record_type, name, value)
            elif name not in READ_ONLY_FIELDS:
                fields[name] = self._normalize_value(record_type, name, value)
        return fields

    def _normalize_sublist(self, record_type: str, name: str, value: Any) -> list[dict[str, Any]] | None:
        if value is None:
            return None
        items = value.get("items") if isinstance(value, dict) else None
        if not isinstance(items, list) or not all(isinstance(line, dict) for line in items):
            raise bad_request(
                f"The sublist {name} must be an object with an items array of objects.", INVALID_PARAMETER
            )
        key_field = SUBLIST_KEY_FIELDS.get((record_type, name))
        return [
            {
                key: _line_key(key, item) if key == key_field else self._normalize_value(record_type, key, item, name)
                for key, item in line.items()
                if key == key_field or key not in READ_ONLY_FIELDS
            }
            for line in items
        ]

    def _normalize_value(self, record_type: str, name: str, value: Any, sublist: str = "") -> Any:
        if value is None:
            return None
        if name == "externalId":
            return check_external_id(value)
        targets = reference_targets(record_type, name, sublist)
        if targets:
            return self._resolve_reference(name, value, targets)
        if name in NUMBER_FIELDS:
            return to_number(name, value)
        return value

    def _resolve_reference(self, field_name: str, value: Any, targets: tuple[str, ...]) -> str:
        """`{"id": "12"}` or `{"externalId": "X"}` -> the internal id of an active record of a target type."""
        if not isinstance(value, dict):
            raise invalid_reference(field_name, value)
        if value.get("id") not in (None, ""):
            key = str(value["id"])
            rid: str | None = key
        elif value.get("externalId"):
            key = str(value["externalId"])
            rid = next((r for t in targets if (r := self.id_for_external_id(t, key))), None)
        else:
            raise invalid_reference(field_name, value)
        record = next((rec for t in targets if rid and (rec := self.get(t, rid)) is not None), None)
        if record is None or record.get("isInactive") is True:
            raise invalid_reference(field_name, key)
        return rid  # type: ignore[return-value]

    # ---- reads -----------------------------------------------------------------------------
    def render(self, record_type: str, rid: str, base_url: str, expand: bool) -> dict[str, Any]:
        """The record as NetSuite's GET returns it (references as {id, refName, links})."""
        with self.lock:
            record = self.get(record_type, rid)
            if record is None:
                raise not_found()
            self_url = f"{base_url}{RECORD_PATH}/{record_type}/{rid}"
            out: dict[str, Any] = {"links": [{"rel": "self", "href": self_url}]}
            sublists = SUBLISTS.get(record_type, ())
            for name, value in record.items():
                if name in sublists:
                    out[name] = self._render_sublist(record_type, name, value, f"{self_url}/{name}", base_url, expand)
                else:
                    out[name] = self._render_value(record_type, name, value, base_url)
            out.update(documents.derived_fields(self, record_type, rid))
            return out

    def render_sublist(self, record_type: str, rid: str, name: str, base_url: str) -> dict[str, Any]:
        with self.lock:
            record = self.get(record_type, rid)
            if record is None or name not in SUBLISTS.get(record_type, ()):
                raise not_found()
            url = f"{base_url}{RECORD_PATH}/{record_type}/{rid}/{name}"
            return self._render_sublist(record_type, name, record.get(name, []), url, base_url, True)

    def _render_sublist(
        self, record_type: str, name: str, lines: list[dict[str, Any]], url: str, base_url: str, expand: bool
    ) -> dict:
        out: dict[str, Any] = {"links": [{"rel": "self", "href": url}]}
        if expand:
            out["items"] = [
                {
                    "links": [],
                    "line": index,
                    **{k: self._render_value(record_type, k, v, base_url, name) for k, v in line.items()},
                }
                for index, line in enumerate(lines, start=1)
            ]
            out["totalResults"] = len(lines)
        return out

    def _render_value(self, record_type: str, name: str, value: Any, base_url: str, sublist: str = "") -> Any:
        targets = reference_targets(record_type, name, sublist)
        if not targets or not isinstance(value, str):
            return value
        # A field that can point at several types (a refund's `doc`: credit memo or payment) links to the
        # record's actual type; internal ids are unique across types.
        target = self.type_of.get(value, targets[0]) if len(targets) > 1 else targets[0]
        return {
            "links": [{"rel": "self", "href": f"{base_url}{RECORD_PATH}/{target}/{value}"}],
            "id": value,
            "refName": self.ref_name(target, value),
        }

    def rendered(self, record_type: str, base_url: str = "") -> list[dict[str, Any]]:
        """Every record of a type, rendered with sublists expanded (the /_sandbox/records view)."""
        with self.lock:
            return [self.render(record_type, rid, base_url, True) for rid in self.list_ids(record_type)]

    def iter_records(self, record_type: str) -> Iterator[dict[str, Any]]:
        rows = self.records.get(record_type)
        return iter(list((rows if rows is not None else self.reference.get(record_type, {})).values()))
