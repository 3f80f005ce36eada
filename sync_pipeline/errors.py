"""The error catalogue: every way a record can fail to sync, in one place, as code -> message -> fix.

Problems found by the mapping, by validation, and by NetSuite itself all become a `SyncIssue` with
a code from `CATALOGUE`, so the exceptions report speaks one language: which record, which field,
which value, what went wrong, and what a finance user changes to fix it (usually a line of
`field_mapping.yaml`). Pure module: no HTTP, no Dagster.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

FIELD_MAPPING_FILE = "field_mapping.yaml"


@dataclass(frozen=True)
class SyncIssue:
    """One record that is not synced (or not yet), and why."""

    record_type: str
    external_id: str
    source_id: str | None
    field: str
    value: str | None
    error_code: str
    message: str
    fix: str
    # True when repeating the same request later can succeed unchanged (rate limit, outage).
    retryable: bool = False

    def exception_fields(self) -> dict[str, Any]:
        """Keyword arguments for the ledger's `ExceptionRow` (add `target=`)."""
        fields = asdict(self)
        fields.pop("retryable")
        return fields


@dataclass(frozen=True)
class ErrorKind:
    code: str
    message: str  # template; placeholders are SyncIssue fields plus the params passed to `make_issue`
    fix: str  # template, same placeholders
    retryable: bool = False


def _kinds(*kinds: ErrorKind) -> dict[str, ErrorKind]:
    return {kind.code: kind for kind in kinds}


CATALOGUE: dict[str, ErrorKind] = _kinds(
    # -- found before anything is sent (mapping and validation) --------------------------------
    ErrorKind(
        "MISSING_REQUIRED_FIELD", "{record_label} {external_id} has no `{field}`, which NetSuite requires", "{how}"
    ),
    ErrorKind(
        "UNMAPPED_CURRENCY",
        "{record_label} {external_id} is in {currency}, which field_mapping.yaml does not map",
        "add {currency} under `currencies:` in field_mapping.yaml with its NetSuite currency id "
        "(`netsuite_id`) and the subsidiary that books it (`subsidiary`)",
    ),
    ErrorKind("UNMAPPED_ITEM", "{record_label} {external_id}: no NetSuite item for {what}", "{how}"),
    ErrorKind("UNMAPPED_ACCOUNT", "{record_label} {external_id}: no NetSuite account for {what}", "{how}"),
    ErrorKind(
        "UNBOOKED_BALANCE",
        "{record_label} {external_id}: {amount} of the invoice's settlement went through the customer's Stripe "
        "balance, from {origin}, which the pipeline does not book",
        "book {origin} in NetSuite by hand and apply {amount} between it and the invoice, then re-run the day",
    ),
    ErrorKind(
        "UNMAPPED_BALANCE_TRANSACTION",
        "deposit {external_id}: Stripe balance transaction {txn} of type `{txn_type}` ({amount}, {description}) has "
        "no NetSuite account, so the payout's deposit would not equal the payout",
        "add `{txn_type}: <account id>` under `payouts.balance_transactions` in field_mapping.yaml (the account "
        "this kind of money moves to or from), then re-run the payout's day",
    ),
    ErrorKind(
        "PAYOUT_BEFORE_SYNC_START",
        "deposit {external_id}: the payout holds {value} of {day}, before SYNC_START_DATE {start}, whose payment "
        "or refund was never synced to NetSuite",
        "set SYNC_START_DATE to {day} or earlier and sync those days first, or book an opening balance for "
        "Stripe's funds in NetSuite and deposit this payout by hand",
    ),
    ErrorKind(
        "CROSS_CURRENCY_NOT_CONFIGURED",
        "deposit {external_id}: Stripe charged {value} in {presented} and settled it in {settled} at {rate}, but "
        "field_mapping.yaml does not say {presented} settles in {settled}, so its NetSuite payment has no exchange "
        "rate and cannot be deposited into the {settled} bank account",
        "add `{presented}: {settled}` under `payouts.settles_in` in field_mapping.yaml (the subsidiary's base currency "
        "must be {settled}), re-sync the day of {value} so its payment carries Stripe's rate, then this payout's day",
    ),
    ErrorKind(
        "DEPOSIT_CANNOT_BE_SPLIT",
        "deposit {external_id}: the payout's {value} lines exceed NetSuite's {limit} lines per deposit, and no "
        "split into {parts} deposits leaves each with a positive total (its money out outweighs its money in)",
        "raise `payouts.max_lines_per_deposit` in field_mapping.yaml if your NetSuite account takes more lines, "
        "or deposit this payout by hand",
    ),
    ErrorKind(
        "PAYOUT_NOT_ITEMIZED",
        "deposit {external_id}: the payout of {amount} lists no balance transactions (a manual payout, or one "
        "Stripe has not reconciled yet), so its deposit cannot be built from what it contains",
        "wait for the payout's reconciliation (event payout.reconciliation_completed) and re-run its day; a "
        "manual payout is deposited by hand in NetSuite (Stripe itemizes automatic payouts only)",
    ),
    ErrorKind(
        "DEPOSIT_NOT_EQUAL_PAYOUT",
        "deposit {external_id}: the payout is {value} but its {transactions} balance transactions add up to "
        "{lines} (difference {difference}); the deposit is held back rather than booked wrong",
        "compare the payout with GET /v1/balance_transactions?payout=<id> in Stripe; re-run the day once Stripe "
        "lists all of it, or deposit it by hand and record why",
    ),
    ErrorKind(
        "MISSING_CUSTOMER",
        "{record_label} {external_id} has no Stripe customer, so there is no NetSuite customer to book it to",
        "set `customers.guest_customer_id` (a NetSuite customer for payments without a Stripe customer) "
        "or `customers.mode: global` in field_mapping.yaml",
    ),
    ErrorKind(
        "INVALID_EXTERNAL_ID",
        "{record_label} {external_id}: {value!s} cannot be a NetSuite external id",
        "external ids allow only letters, digits, '_' and '-'; check that the Stripe data holds object ids",
    ),
    ErrorKind(
        "INVALID_CURRENCY",
        "{record_label} {external_id}: currency {value!s} is not a three-letter ISO code",
        "check the Stripe object's `currency`",
    ),
    ErrorKind("INVALID_AMOUNT", "{record_label} {external_id}: `{field}` = {value!s} {problem}", "{how}"),
    ErrorKind(
        "INVALID_DATE",
        "{record_label} {external_id}: `{field}` = {value!s} is not a date (YYYY-MM-DD)",
        "check the Stripe object's timestamps",
    ),
    ErrorKind(
        "LINES_DO_NOT_SUM",
        "{record_label} {external_id}: lines add up to {line_total} but the total is {total}",
        "{how}",
    ),
    ErrorKind(
        "OVER_APPLIED",
        "{record_label} {external_id} applies {applied} to {doc}, which is only {available}",
        "check the Stripe payments of {doc}: NetSuite cannot apply more than a document's remaining amount",
    ),
    ErrorKind(
        "DUPLICATE_EXTERNAL_ID",
        "{record_label} {external_id} was produced twice with different content{detail}",
        "two Stripe objects map to the same NetSuite external id; report this as a mapping bug",
    ),
    ErrorKind(
        "INVALID_STRIPE_DATA",
        "{record_label} {external_id}: Stripe field `{field}` is {value!s}, expected {expected}",
        "check the Stripe object {source_id} (API version 2026-10-28.endive shapes expected)",
    ),
    ErrorKind(
        "CURRENCY_NOT_ALLOWED",
        "{record_label} {external_id}: {currency} is not allowed for subsidiary {subsidiary}",
        "map {currency} to a subsidiary that allows it under `currencies:` in field_mapping.yaml, "
        "or enable the currency for subsidiary {subsidiary} in NetSuite",
    ),
    ErrorKind(
        "VALIDATION_FAILED",
        "{record_label} {external_id}: `{field}` = {value!s} fails the check {check}",
        "correct `{field}` (from the Stripe data or the defaults in field_mapping.yaml)",
    ),
    # -- Salesforce -> Stripe billing and the write-back to Salesforce -------------------------
    ErrorKind(
        "UNMAPPED_SALESFORCE_PRODUCT",
        "{record_label} {external_id}: product {value!s} ({product_name}) has no Stripe price",
        "add `{value!s}: {{{currency}: price_...}}` under `salesforce: product_prices:` in field_mapping.yaml "
        "(the Stripe price billed for this product in {currency}); the opportunity is billed on the next run",
    ),
    ErrorKind("INVALID_OPPORTUNITY", "{record_label} {external_id}: `{field}` = {value!s} {problem}", "{how}"),
    ErrorKind(
        "OPPORTUNITY_CHANGED_AFTER_BILLING",
        "opportunity changed after billing: {changes}",
        "it was billed once, as {billed_as}, and is never billed again: amend or cancel {billed_as} in Stripe "
        "(or bill the difference on a new opportunity), then restore the opportunity's amount and products "
        "in Salesforce to what was billed; the exception closes on the next run that finds them equal",
    ),
    ErrorKind(
        "OPPORTUNITY_REOPENED_AFTER_BILLING",
        "opportunity moved to {stage} after it was billed as {billed_as}",
        "if the deal is off, cancel {billed_as} in Stripe (void it, for an invoice): this closes on the next "
        "run; if the stage was changed by mistake, set it back to Closed Won",
    ),
    ErrorKind(
        "STRIPE_BILLING_FAILED",
        "{record_label} {external_id}: Stripe refused {action} ({detail})",
        "read Stripe's message: usually the price in `salesforce: product_prices:` of field_mapping.yaml is "
        "inactive or of another currency; retried automatically on the next run",
        retryable=True,
    ),
    ErrorKind(
        "SALESFORCE_DUPLICATE_MATCH",
        "{record_label} {external_id}: {field} = {value!s} matches several Salesforce records ({record_ids})",
        "keep {value!s} on one record only (merge the duplicates or clear the field on the others) and make "
        "{field} unique in Salesforce; nothing was written to any of them",
    ),
    ErrorKind(
        "SALESFORCE_WRITE_REJECTED",
        "Salesforce rejected the write-back to {record_label} {external_id}: {detail}",
        "read Salesforce's message: usually a validation rule or a field the integration user cannot edit",
    ),
    # -- returned by NetSuite ------------------------------------------------------------------
    ErrorKind(
        "INVALID_REFERENCE",
        "NetSuite rejected {record_label} {external_id}: `{field}` = {value!s} is not a valid reference ({detail})",
        "{how}",
    ),
    ErrorKind(
        "DEPENDENCY_NOT_SYNCED",
        "{record_label} {external_id} refers to {value!s}, which is not in NetSuite yet{because}",
        "sync {value!s} first (the next run does it in order); if it is in sync_exceptions, fix that first",
    ),
    ErrorKind(
        "NONEXISTENT_FIELD",
        "NetSuite rejected {record_label} {external_id}: there is no field `{field}` on this record ({detail})",
        "remove or rename `{field}` in the defaults of field_mapping.yaml",
    ),
    ErrorKind(
        "NETSUITE_RATE_LIMITED",
        "NetSuite's concurrency limit was exceeded while writing {record_label} {external_id}",
        "none needed: retried automatically; if it persists lower NETSUITE_CONCURRENCY to the account's limit",
        retryable=True,
    ),
    ErrorKind(
        "NETSUITE_NO_ANSWER",
        "NetSuite did not answer the write of {record_label} {external_id} after {attempts} attempt(s) "
        "({detail}); NetSuite may or may not have saved it",
        "none needed: NetSuite did not answer; the next run retries it (an upsert by external id cannot "
        "create a duplicate); if it persists check the network to NetSuite and NetSuite's status page",
        retryable=True,
    ),
    ErrorKind(
        "NETSUITE_UNAVAILABLE",
        "NetSuite failed with HTTP {status} while writing {record_label} {external_id} ({detail})",
        "none needed: retried automatically; if it persists check NetSuite's status page",
        retryable=True,
    ),
    ErrorKind(
        "RECORD_NOT_FOUND",
        "NetSuite has no {record_label} {external_id} ({detail})",
        "re-run the sync of this partition; if the record was deleted in NetSuite by hand, recreate it by "
        "syncing again",
    ),
    ErrorKind(
        "NETSUITE_REJECTED",
        "NetSuite rejected {record_label} {external_id} (HTTP {status} {netsuite_code}): {detail}",
        "read NetSuite's message; usually a default or mandatory field in field_mapping.yaml is missing or wrong",
    ),
)

RECORD_LABELS = {
    "customer": "customer",
    "invoice": "invoice",
    "creditMemo": "credit memo",
    "customerPayment": "customer payment",
    "customerRefund": "customer refund",
    "deposit": "deposit",
    "journalEntry": "journal entry",
    "opportunity": "opportunity",
    "account": "account",
}
RECORD_PLURALS = {
    "customer": "customers",
    "invoice": "invoices",
    "creditMemo": "credit memos",
    "customerPayment": "customer payments",
    "customerRefund": "customer refunds",
    "deposit": "deposits",
    "journalEntry": "journal entries",
}
# Which body field names the customer on each record type.
PARTY_FIELDS = {
    "invoice": "entity",
    "creditMemo": "entity",
    "customerPayment": "customer",
    "customerRefund": "customer",
}


class _Params(dict):
    # A template placeholder the caller did not fill must not crash the error path itself.
    def __missing__(self, key: str) -> str:
        return "?"


def make_issue(
    code: str,
    *,
    record_type: str,
    external_id: str,
    source_id: str | None = None,
    field: str = "",
    value: object = None,
    **params: Any,
) -> SyncIssue:
    """A SyncIssue of catalogue entry `code`, its message and fix filled from the arguments."""
    kind = CATALOGUE[code]
    text_value = None if value is None else str(value)
    values = _Params(
        record_type=record_type,
        record_label=RECORD_LABELS.get(record_type, record_type),
        external_id=external_id or "(no external id)",
        source_id=source_id or "?",
        field=field,
        value=text_value if text_value is not None else "(empty)",
    )
    values.setdefault("because", "")
    values.update({k: v for k, v in params.items() if v is not None})
    return SyncIssue(
        record_type=record_type,
        external_id=external_id,
        source_id=source_id,
        field=field,
        value=text_value,
        error_code=code,
        message=kind.message.format_map(values),
        fix=kind.fix.format_map(values),
        retryable=kind.retryable,
    )


# -- fix texts that depend on where in field_mapping.yaml the value belongs ----------------------


# Fields the mapping copies from the Stripe object when it has them: when NetSuite requires one the Stripe
# object lacks, the first fix is on that object in Stripe, not a default in field_mapping.yaml.
FIELDS_FROM_STRIPE = {("customer", "email"): "email", ("customer", "phone"): "phone"}


def missing_field_fix(
    record_type: str,
    field: str,
    subsidiary: str | None,
    currency: str | None = None,
    source_id: str | None = None,
) -> str:
    """Where a missing header field gets its value: the Stripe object it is copied from, or field_mapping.yaml."""
    in_stripe = FIELDS_FROM_STRIPE.get((record_type, field))
    if in_stripe and source_id:
        return (
            f"set `{in_stripe}` on Stripe {record_type} {source_id} (NetSuite requires it on {record_type} records), "
            f"or add a default `{field}` under `defaults: {record_type}:` in {FIELD_MAPPING_FILE}"
        )
    plural = RECORD_PLURALS.get(record_type, record_type)
    if field == "subsidiary":
        return (
            f"map the currency{f' {currency}' if currency else ''} to a subsidiary under `currencies:` in "
            f"{FIELD_MAPPING_FILE}, or add `subsidiary` under `defaults: {record_type}:`"
        )
    if field in ("currency",):
        return f"add the currency under `currencies:` in {FIELD_MAPPING_FILE} with its `netsuite_id`"
    if field in ("entity", "customer"):
        return (
            f"the Stripe object has no customer: set `customers.mode: global` or `customers.guest_customer_id` "
            f"in {FIELD_MAPPING_FILE}"
        )
    if subsidiary:
        return (
            f"add a default `{field}` for {plural} of subsidiary {subsidiary} in {FIELD_MAPPING_FILE} "
            f'(subsidiaries: "{subsidiary}": defaults: {record_type}: {field}: <internal id>), '
            f"or for every subsidiary under `defaults: {record_type}: {field}:`"
        )
    return (
        f"add a default `{field}` for {plural} in {FIELD_MAPPING_FILE} "
        f"(defaults: {record_type}: {field}: <internal id>)"
    )


# -- NetSuite's error bodies ------------------------------------------------------------------------

RATE_LIMIT_CODES = frozenset({"CONCURRENCY_LIMIT_EXCEEDED", "REQUEST_LIMIT_EXCEEDED"})
DUPLICATE_CODES = frozenset({"DUP_RCRD", "DUP_ENTITY", "DUPLICATE_EXTERNAL_ID"})
REFERENCE_CODES = frozenset({"INVALID_KEY_OR_REF", "INVALID_REF_KEY", "INVALID_FLD_VALUE"})

_PLEASE_ENTER = re.compile(r"Please enter value\(s\) for:\s*(?P<labels>.+?)\.?\s*$", re.IGNORECASE)
_PLEASE_ENTER_ONE = re.compile(r"Please enter a value for \[(?P<field>[^\]]+)\]", re.IGNORECASE)
_INVALID_VALUE = re.compile(
    r"Invalid Field Value (?P<value>.*?) for the following field:\s*(?P<field>[\w.\[\]]+)", re.IGNORECASE
)
_ALREADY_EXISTS = re.compile(r"already exists", re.IGNORECASE)
_CURRENCY_SUBSIDIARY = re.compile(r"currency\b.*\bnot allowed for (the )?subsidiary", re.IGNORECASE)
_OVER_APPLIED = re.compile(
    r"cannot apply|appl\w*.*(exceed|more than|greater than)|(exceed|more than).*(due|remaining)", re.IGNORECASE
)
_APPLY_DETAIL = re.compile(
    r"apply (?P<applied>-?\d[\d,]*(?:\.\d+)?) to (?P<doc>.+?): its amount remaining is "
    r"(?P<available>-?\d[\d,]*(?:\.\d+)?)",
    re.IGNORECASE,
)
_NONEXISTENT_FIELD = re.compile(r"field[^\w]+(?P<field>\w+)[^\w]*(does not exist|is not valid|unknown)", re.IGNORECASE)

# NetSuite's UI labels in "Please enter value(s) for: ..." -> the REST field ids we send.
_LABEL_TO_FIELD = {
    "department": "department",
    "class": "class",
    "location": "location",
    "subsidiary": "subsidiary",
    "currency": "currency",
    "date": "tranDate",
    "due date": "dueDate",
    "account": "account",
    "item": "item",
    "terms": "terms",
    "company name": "companyName",
    "email": "email",
    "a/r account": "arAcct",
    "payment": "payment",
    "payment amount": "payment",
    "memo": "memo",
    "payment method": "paymentMethod",
    "items": "item",
    "lines": "line",
    "applied to": "apply",
    "external id": "externalId",
}


def _field_for_label(label: str, record_type: str) -> str:
    key = label.strip().strip("[]").lower()
    if key in ("customer", "name", "entity"):
        return PARTY_FIELDS.get(record_type, "entity")
    if key in _LABEL_TO_FIELD:
        return _LABEL_TO_FIELD[key]
    words = re.findall(r"[A-Za-z0-9]+", label)
    return (words[0].lower() + "".join(w.capitalize() for w in words[1:])) if words else label


def _error_details(body: object) -> list[dict]:
    if isinstance(body, Mapping):
        details = body.get("o:errorDetails")
        if isinstance(details, list):
            return [d for d in details if isinstance(d, Mapping)]
    return []


def _ref_in(body_sent: Mapping | None, field: str) -> Mapping | None:
    value = (body_sent or {}).get(field.split(".")[0])
    return value if isinstance(value, Mapping) else None


def _subsidiary_of(body_sent: Mapping | None) -> str | None:
    ref = _ref_in(body_sent, "subsidiary")
    return None if ref is None else (None if ref.get("id") is None else str(ref.get("id")))


def classify_netsuite_error(
    status: int | None,
    body: object,
    record_type: str,
    external_id: str,
    body_sent: Mapping | None = None,
    source_id: str | None = None,
    attempts: int = 1,
    value_sources: Mapping[str, str] | None = None,
) -> SyncIssue:
    """Turn NetSuite's error response into a catalogue SyncIssue (field, value, fix, retryable).

    `status` None means no HTTP answer came after `attempts` tries (`body` then says what broke);
    `body` is the parsed JSON error body (anything else, e.g. an HTML error page, is tolerated);
    `body_sent` is the record body that was sent, used to tell a config value from a dependency;
    `value_sources` says where a body field's value came from when not from field_mapping.yaml's defaults.
    Authentication and permission failures never get here: they stop the step (`AccessDenied`).
    """
    common = dict(record_type=record_type, external_id=external_id, source_id=source_id)
    if status is None:
        return make_issue("NETSUITE_NO_ANSWER", **common, attempts=attempts, detail=str(body or "no response"))
    details = _error_details(body)
    first = details[0] if details else {}
    netsuite_code = str(first.get("o:errorCode") or "")
    detail_texts = [str(d.get("detail") or "").strip() for d in details]
    detail = " | ".join(t for t in detail_texts if t) or (
        str(body.get("title")) if isinstance(body, Mapping) and body.get("title") else str(body or "")[:300]
    )
    codes = {str(d.get("o:errorCode") or "") for d in details}

    if status == 429 or codes & RATE_LIMIT_CODES:
        return make_issue("NETSUITE_RATE_LIMITED", **common, detail=detail)
    if status >= 500:
        return make_issue("NETSUITE_UNAVAILABLE", **common, status=status, detail=detail)

    for item in details:
        issue = _classify_detail(item, body_sent, common, value_sources or {})
        if issue is not None:
            return issue
    if status == 404:
        return make_issue("RECORD_NOT_FOUND", **common, detail=detail)
    return make_issue(
        "NETSUITE_REJECTED",
        **common,
        status=status,
        netsuite_code=netsuite_code or "no code",
        detail=detail or "(no detail)",
    )


def _classify_detail(
    item: Mapping, body_sent: Mapping | None, common: dict, value_sources: Mapping[str, str]
) -> SyncIssue | None:
    record_type = common["record_type"]
    text = str(item.get("detail") or "")
    code = str(item.get("o:errorCode") or "")
    path = str(item.get("o:errorPath") or "")
    subsidiary = _subsidiary_of(body_sent)

    if match := _PLEASE_ENTER.search(text):
        fields = [_field_for_label(label, record_type) for label in re.split(r",\s*", match["labels"]) if label]
        how = "; ".join(missing_field_fix(record_type, f, subsidiary, source_id=common["source_id"]) for f in fields)
        return make_issue("MISSING_REQUIRED_FIELD", **common, field=", ".join(fields), how=how)
    if code == "FIELD_PARAM_REQD" or (match := _PLEASE_ENTER_ONE.search(text)):
        field = path or (match["field"] if match else "")
        field = _field_for_label(field, record_type) if field and not path else field
        return make_issue(
            "MISSING_REQUIRED_FIELD",
            **common,
            field=field,
            how=missing_field_fix(record_type, field, subsidiary, source_id=common["source_id"]),
        )
    if _CURRENCY_SUBSIDIARY.search(text):
        ref = _ref_in(body_sent, "currency") or {}
        return make_issue(
            "CURRENCY_NOT_ALLOWED",
            **common,
            field="currency",
            value=ref.get("id"),
            currency=f"currency id {ref.get('id', '?')}",
            subsidiary=subsidiary or "?",
        )
    if match := _INVALID_VALUE.search(text):
        return _reference_issue(
            path or match["field"].rstrip("."), match["value"].strip(), text, body_sent, common, value_sources
        )
    if code in REFERENCE_CODES:
        field = path or "?"
        ref = _ref_in(body_sent, field) or {}
        return _reference_issue(
            field, str(ref.get("id") or ref.get("externalId") or "?"), text, body_sent, common, value_sources
        )
    if code in DUPLICATE_CODES or _ALREADY_EXISTS.search(text):
        return make_issue(
            "DUPLICATE_EXTERNAL_ID",
            **common,
            field="externalId",
            value=common["external_id"],
            detail=f" (NetSuite: {text})",
        )
    if code == "NONEXISTENT_FIELD" or (match := _NONEXISTENT_FIELD.search(text)):
        field = path or (match["field"] if match else "?")
        return make_issue("NONEXISTENT_FIELD", **common, field=field, detail=text)
    if _OVER_APPLIED.search(text):
        parts = _APPLY_DETAIL.search(text)
        if parts:
            return make_issue(
                "OVER_APPLIED",
                **common,
                field="apply",
                value=parts["applied"],
                applied=parts["applied"],
                doc=parts["doc"],
                available=parts["available"],
            )
        return make_issue(
            "OVER_APPLIED",
            **common,
            field="apply",
            applied="more",
            doc="a document",
            available=f"what remains open (NetSuite: {text})",
        )
    return None


def _reference_issue(
    field: str, value: str, detail: str, body_sent: Mapping | None, common: dict, value_sources: Mapping[str, str]
) -> SyncIssue:
    ref = _ref_in(body_sent, field)
    if ref is not None and ref.get("externalId"):
        # A reference by external id to a record we sync: it is missing because it did not sync yet.
        return make_issue("DEPENDENCY_NOT_SYNCED", **common, field=field, value=ref["externalId"])
    source = value_sources.get(field.split(".")[0])
    if source and "metadata." in source:
        how = (
            f"the NetSuite id {value} for `{field}` comes from {source}: set it to the internal id of an active "
            "NetSuite record, or remove that metadata key in Stripe so the customer syncs as its own NetSuite "
            "customer"
        )
    elif source:
        how = f"the NetSuite id {value} for `{field}` comes from {source}: replace it with an active internal id"
    elif field == "subsidiary":
        # The subsidiary comes from the currency; NetSuite also refuses it when the customer belongs elsewhere.
        how = (
            f"subsidiary {value} comes from `currencies:` in {FIELD_MAPPING_FILE}: check that it exists and is "
            "active, and that the customer belongs to it (a NetSuite customer has one subsidiary: map the "
            "customer's currencies to that subsidiary, or link the Stripe customer to another NetSuite customer "
            "through metadata.netsuite_customer_id)"
        )
    else:
        how = (
            f"the NetSuite id {value} for `{field}` does not exist or is inactive: replace it in "
            f"{FIELD_MAPPING_FILE} (search for `{field}` with value {value}) with an active internal id"
        )
    return make_issue("INVALID_REFERENCE", **common, field=field, value=value, detail=detail, how=how)
