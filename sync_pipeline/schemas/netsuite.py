"""Validation of NetSuite records before anything is written: one pandera model per record type.

Each record becomes one row of header fields (references flattened to their id or external id,
`currency` as the ISO code, `currency_id` as NetSuite's id, `total` and `line_total` as Decimals).
A model says what NetSuite always requires; `field_mapping.yaml`'s `required_fields` add the
account's own mandatory fields at validation time. Every failure becomes a `SyncIssue` for its
record with the fix, and only the records without failures are returned as valid: one bad
invoice never holds up the others, and nothing is dropped silently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from sync_pipeline.errors import SyncIssue, make_issue, missing_field_fix
from sync_pipeline.mapping.external_ids import EXTERNAL_ID_PATTERN
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import MoneyError, currency_exponent, to_decimal
from sync_pipeline.mapping.netsuite import NetSuiteRecord

_ISO_CURRENCY = re.compile(r"[A-Z]{3}")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _is_iso_date(value: Any) -> bool:
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        return False
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _within_precision(decimals: Any, precision: Any) -> bool:
    try:
        return int(decimals) <= int(precision)
    except (TypeError, ValueError):
        return False  # an unknown currency is reported by its own check; do not pass it here either


class RecordModel(pa.DataFrameModel):
    """Columns every NetSuite record this pipeline writes has."""

    external_id: Series[object] = pa.Field(unique=True)
    source_id: Series[object] = pa.Field(nullable=True)
    subsidiary: Series[object]

    @pa.check("external_id", name="external_id_pattern", element_wise=True)
    def _external_id_pattern(cls, value: Any) -> bool:
        return isinstance(value, str) and bool(EXTERNAL_ID_PATTERN.fullmatch(value))

    class Config:
        strict = False  # other header fields (custom defaults) pass through
        coerce = False


class CustomerModel(RecordModel):
    companyName: Series[object]
    currency: Series[object] = pa.Field(nullable=True)

    @pa.check("currency", name="iso_currency", element_wise=True)
    def _iso_currency(cls, value: Any) -> bool:
        return isinstance(value, str) and bool(_ISO_CURRENCY.fullmatch(value))


class TransactionModel(RecordModel):
    """Header fields of every transaction: NetSuite always requires currency and date."""

    currency: Series[object]
    currency_id: Series[object]
    tranDate: Series[object]
    department: Series[object] = pa.Field(nullable=True)
    class_: Series[object] = pa.Field(alias="class", nullable=True)
    location: Series[object] = pa.Field(nullable=True)
    total: Series[object]
    line_total: Series[object] = pa.Field(nullable=True)
    max_decimals: Series[object]
    precision: Series[object]  # decimals the NetSuite currency holds (0 or 2), from field_mapping.yaml

    @pa.check("currency", name="iso_currency", element_wise=True)
    def _iso_currency(cls, value: Any) -> bool:
        return isinstance(value, str) and bool(_ISO_CURRENCY.fullmatch(value))

    @pa.check("tranDate", name="iso_date", element_wise=True)
    def _iso_date(cls, value: Any) -> bool:
        return _is_iso_date(value)

    @pa.check("total", name="amount_not_negative", element_wise=True)
    def _amount_not_negative(cls, value: Any) -> bool:
        return isinstance(value, Decimal) and value >= 0

    @pa.dataframe_check(name="amount_precision")
    def _amount_precision(cls, frame: pd.DataFrame) -> pd.Series:
        return pd.Series(
            [_within_precision(d, p) for d, p in zip(frame["max_decimals"], frame["precision"], strict=True)],
            index=frame.index,
        )

    @pa.dataframe_check(name="lines_sum_to_total")
    def _lines_sum_to_total(cls, frame: pd.DataFrame) -> pd.Series:
        return pd.Series(
            [
                line is None or pd.isna(line) or line == total
                for line, total in zip(frame["line_total"], frame["total"], strict=True)
            ],
            index=frame.index,
        )


class InvoiceModel(TransactionModel):
    entity: Series[object]


class CreditMemoModel(TransactionModel):
    entity: Series[object]
    createdFrom: Series[object] = pa.Field(nullable=True)


class CustomerPaymentModel(TransactionModel):
    customer: Series[object]
    account: Series[object] = pa.Field(nullable=True)


class CustomerRefundModel(TransactionModel):
    customer: Series[object]
    account: Series[object] = pa.Field(nullable=True)


class DepositModel(TransactionModel):
    account: Series[object]  # the bank account the payout arrived in


class JournalEntryModel(TransactionModel):
    pass


MODELS: dict[str, type[RecordModel]] = {
    "customer": CustomerModel,
    "invoice": InvoiceModel,
    "creditMemo": CreditMemoModel,
    "customerPayment": CustomerPaymentModel,
    "customerRefund": CustomerRefundModel,
    "deposit": DepositModel,
    "journalEntry": JournalEntryModel,
}

# Frame columns that are not body fields under the same name, for messages.
_FIELD_OF_COLUMN = {
    "currency_id": "currency",
    "currency": "currency",
    "total": "amount",
    "line_total": "item",
    "max_decimals": "amount",
    "precision": "amount",
}


def schema_for(record_type: str, fm: FieldMapping) -> pa.DataFrameSchema:
    """The record type's model with the account's mandatory fields from field_mapping.yaml made required."""
    schema = MODELS[record_type].to_schema()
    required = fm.required_fields_for(record_type)
    known = {name: {"nullable": False} for name in required if name in schema.columns}
    if known:
        schema = schema.update_columns(known)
    extra = {name: pa.Column(object, nullable=False, required=True) for name in required if name not in schema.columns}
    if extra:
        schema = schema.add_columns(extra)
    return schema


# -- records -> frame ---------------------------------------------------------------------------------


def _flat(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value.get("id") or value.get("externalId") or None
    if value == "":
        return None
    return value


def _sublist_total(body: Mapping, name: str) -> Decimal | None:
    items = body.get(name, {}).get("items") if isinstance(body.get(name), Mapping) else None
    if not items:
        return None
    # A whole amount (JPY, or a body read back from JSON) arrives as int: count it, exactly.
    amounts = (item.get("amount") for item in items)
    return sum((Decimal(a) for a in amounts if isinstance(a, (Decimal, int)) and not isinstance(a, bool)), Decimal(0))


def _max_decimals(value: Any) -> int:
    """Most decimal places of any Decimal in the body (sublists included); a float counts as unbounded."""
    # Iterative and type-dispatched: it walks every value of every record of a partition.
    most, stack = 0, [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict or isinstance(item, Mapping):
            stack.extend(item.values())
        elif kind is list or kind is tuple:
            stack.extend(item)
        elif kind is float:
            return 99
        elif kind is Decimal and item and item.is_finite():
            most = max(most, -item.normalize().as_tuple().exponent)
    return most


def record_row(record: NetSuiteRecord, fm: FieldMapping | None = None) -> dict[str, Any]:
    """The flat header row of one record (what the models validate)."""
    body = record.body
    row: dict[str, Any] = {
        name: _flat(value)
        for name, value in body.items()
        if name not in ("externalId", "item", "apply", "credit", "currency")
    }
    total = precision = None
    if record.currency:
        try:
            # What NetSuite will hold: Stripe's total less the sub-unit residue rounding to its precision left out.
            total = to_decimal(record.amount_minor - record.residue_minor, record.currency)
            precision = fm.netsuite_precision(record.currency) if fm else currency_exponent(record.currency)
        except MoneyError:
            total = None
    line_total = _sublist_total(body, "item")
    if line_total is None:
        line_total = _sublist_total(body, "apply")
        # A payment may apply less than it is (the rest stays the customer's credit), never more than it is
        # plus the credits it uses (a payment of 0 applying credit memos to an invoice).
        if record.record_type == "customerPayment" and line_total is not None and total is not None:
            limit = total + (_sublist_total(body, "credit") or 0)
            line_total = total if line_total <= limit else line_total
    row.update(
        external_id=record.external_id,
        source_id=record.source_id,
        currency=record.currency or None,
        currency_id=_flat(body.get("currency")),
        total=total,
        line_total=line_total,
        # An exchange rate is not an amount: it keeps Stripe's decimals.
        max_decimals=_max_decimals({k: v for k, v in body.items() if k != "exchangeRate"}),
        precision=precision,
    )
    return row


def records_frame(
    records: Sequence[NetSuiteRecord], columns: Iterable[str] = (), fm: FieldMapping | None = None
) -> pd.DataFrame:
    """One row per record, with every named column present (missing values as None)."""
    rows = [record_row(r, fm) for r in records]
    frame = pd.DataFrame(rows, dtype=object)
    for column in columns:
        if column not in frame.columns:
            frame[column] = pd.Series([None] * len(frame), dtype=object)
    return frame.astype(object).where(frame.notna(), None)


# -- validation -------------------------------------------------------------------------------------


@dataclass
class ValidationOutcome:
    valid: list[NetSuiteRecord]
    issues: list[SyncIssue]


def validate_records(
    records: Iterable[NetSuiteRecord], fm: FieldMapping, *, hold_dependents: bool = True
) -> ValidationOutcome:
    """Split records into those safe to send and issues for the rest (with field, value and fix).

    Identical duplicates (the same customer mapped from two invoices) are sent once; different
    records under one external id are all held back. With `hold_dependents`, a record depending on
    one that failed here (a payment of an invalid invoice) is held back too, as DEPENDENCY_NOT_SYNCED.
    """
    unique, issues = _dedupe(list(records))
    failed: set[tuple[str, str]] = {(i.record_type, i.external_id) for i in issues}
    by_type: dict[str, list[NetSuiteRecord]] = {}
    for record in unique:
        by_type.setdefault(record.record_type, []).append(record)
    for record_type, group in by_type.items():
        if record_type not in MODELS:
            continue  # no model (yet) for this type: nothing to check beyond the mapping
        for issue in _validate_group(record_type, group, fm):
            issues.append(issue)
            failed.add((record_type, issue.external_id))
    valid = [r for r in unique if (r.record_type, r.external_id) not in failed]
    if hold_dependents:
        valid, held = _hold_dependents(valid, failed)
        issues.extend(held)
    return ValidationOutcome(valid=valid, issues=issues)


def _dedupe(records: list[NetSuiteRecord]) -> tuple[list[NetSuiteRecord], list[SyncIssue]]:
    first: dict[tuple[str, str], NetSuiteRecord] = {}
    conflicting: dict[tuple[str, str], list[NetSuiteRecord]] = {}
    for record in records:
        key = (record.record_type, record.external_id)
        if key not in first:
            first[key] = record
        elif first[key].body != record.body:
            conflicting.setdefault(key, [first[key]]).append(record)
    issues = [
        make_issue(
            "DUPLICATE_EXTERNAL_ID",
            record_type=r.record_type,
            external_id=r.external_id,
            source_id=r.source_id,
            field="externalId",
            value=r.external_id,
            detail=f" (from {', '.join(sorted({x.source_id for x in group}))})",
        )
        for key, group in conflicting.items()
        for r in group[:1]
    ]
    return [r for k, r in first.items() if k not in conflicting], issues


def _validate_group(record_type: str, group: list[NetSuiteRecord], fm: FieldMapping) -> list[SyncIssue]:
    schema = schema_for(record_type, fm)
    frame = records_frame(group, columns=[c for c in schema.columns], fm=fm)
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        return _issues_from_failures(errors.failure_cases, group, frame)
    return []


def _issues_from_failures(failures: pd.DataFrame, group: list[NetSuiteRecord], frame: pd.DataFrame) -> list[SyncIssue]:
    issues: list[SyncIssue] = []
    seen: set[tuple[int, str, str]] = set()
    for failure in failures.to_dict("records"):
        check = str(failure.get("check"))
        column = str(failure.get("column"))
        index = failure.get("index")
        rows = range(len(group)) if index is None or pd.isna(index) else [int(index)]
        if check == "column_in_dataframe":
            column = str(failure.get("failure_case"))
        for position in rows:
            # A dataframe-wide check reports each row once per column; one issue per row and check is enough.
            key = (position, check, column if failure.get("schema_context") == "Column" else "")
            if key in seen:
                continue
            seen.add(key)
            issues.append(_issue_for(check, column, group[position], frame.iloc[position]))
    return issues


def _issue_for(check: str, column: str, record: NetSuiteRecord, row: pd.Series) -> SyncIssue:
    common = dict(record_type=record.record_type, external_id=record.external_id, source_id=record.source_id)
    subsidiary = row.get("subsidiary")
    value = row.get(column) if column in row.index else None
    field = _FIELD_OF_COLUMN.get(column, column)
    if check in ("not_nullable", "column_in_dataframe"):
        return make_issue(
            "MISSING_REQUIRED_FIELD",
            **common,
            field=field,
            how=missing_field_fix(record.record_type, field, subsidiary, record.currency or None, record.source_id),
        )
    # Pandera names a custom check by its `name`, but has been seen to report it by the method name in
    # some import orders: decide by the column for the pattern checks.
    if check == "external_id_pattern" or (column == "external_id" and check != "field_uniqueness"):
        return make_issue("INVALID_EXTERNAL_ID", **common, field="externalId", value=record.external_id)
    if check == "iso_currency":
        return make_issue("INVALID_CURRENCY", **common, field="currency", value=value)
    if check == "iso_date":
        return make_issue("INVALID_DATE", **common, field=field, value=value)
    if check == "amount_not_negative":
        return make_issue(
            "INVALID_AMOUNT",
            **common,
            field="amount",
            value=row.get("total"),
            problem="is negative",
            how=(
                "NetSuite transactions cannot be negative; a Stripe document with a negative total "
                "is a credit to the customer: book it as a credit memo by hand"
            ),
        )
    if check == "amount_precision":
        return make_issue(
            "INVALID_AMOUNT",
            **common,
            field="amount",
            value=row.get("total"),
            problem=f"has more decimals than the NetSuite currency {record.currency} holds ({row.get('precision')})",
            how="amounts must come from integer minor units via sync_pipeline.mapping.money, at the precision set "
            "under `currencies:` in field_mapping.yaml",
        )
    if check == "lines_sum_to_total":
        return make_issue(
            "LINES_DO_NOT_SUM",
            **common,
            field="item",
            value=row.get("line_total"),
            line_total=row.get("line_total"),
            total=row.get("total"),
            how="the lines of this record do not add up to its total; report it as a mapping bug",
        )
    if check == "field_uniqueness":
        return make_issue("DUPLICATE_EXTERNAL_ID", **common, field="externalId", value=record.external_id, detail="")
    return make_issue("VALIDATION_FAILED", **common, field=field, value=value, check=check)


def _hold_dependents(
    valid: list[NetSuiteRecord], failed: set[tuple[str, str]]
) -> tuple[list[NetSuiteRecord], list[SyncIssue]]:
    held: list[SyncIssue] = []
    blocked = set(failed)
    changed = True
    remaining = valid
    while changed:  # a refund depends on a credit memo that depends on an invalid invoice: follow the chain
        changed = False
        keep: list[NetSuiteRecord] = []
        for record in remaining:
            missing = next((dep for dep in record.depends_on if dep in blocked), None)
            if missing is None:
                keep.append(record)
                continue
            blocked.add((record.record_type, record.external_id))
            held.append(
                make_issue(
                    "DEPENDENCY_NOT_SYNCED",
                    record_type=record.record_type,
                    external_id=record.external_id,
                    source_id=record.source_id,
                    field=_dependency_field(record, missing),
                    value=missing[1],
                    because=" (it was held back in this run: see its own exception)",
                )
            )
            changed = True
        remaining = keep
    return remaining, held


def _dependency_field(record: NetSuiteRecord, dependency: tuple[str, str]) -> str:
    for name, value in record.body.items():
        if isinstance(value, Mapping) and value.get("externalId") == dependency[1]:
            return name
    return "apply"
