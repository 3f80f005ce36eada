"""The sandbox org's data model: objects, fields, ids, value formats and errors.

Everything here is what the Salesforce REST API exposes about an org's schema
(describe), in the formats it sends: 18-character ids with key prefixes,
datetimes like ``2026-11-01T12:00:00.000+0000``, errors as a JSON list.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

ORG_ID = "00D5g000004SbxAEAS"
API_VERSIONS = ("57.0", "58.0", "59.0", "60.0", "61.0", "62.0")
DEFAULT_API_VERSION = "59.0"
# Upserts answer 200 + body for an update only from this API version on; older versions answer 204.
UPSERT_BODY_SINCE_VERSION = 46.0
COLLECTION_LIMIT = 200  # records per sObject Collections request (create, update, upsert)

# Currencies the sandbox org has enabled (a multi-currency org). Zero-decimal JPY and the three-decimal ones
# (KWD, BHD, JOD, OMR, TND) are there so the flow meets currencies whose minor unit is not a cent.
CURRENCY_CODES = ("USD", "EUR", "GBP", "JPY", "KWD", "BHD", "JOD", "OMR", "TND", "CAD", "AUD", "CHF")
CORPORATE_CURRENCY = "USD"


class SalesforceApiError(Exception):
    """An error the API answers with: an HTTP status and Salesforce's error list entry."""

    def __init__(self, status: int, error_code: str, message: str, fields: list[str] | None = None) -> None:
        super().__init__(f"{error_code}: {message}")
        self.status = status
        self.error_code = error_code
        self.message = message
        self.fields = fields

    def rest_body(self) -> list[dict[str, Any]]:
        entry: dict[str, Any] = {"message": self.message, "errorCode": self.error_code}
        if self.fields is not None:
            entry["fields"] = self.fields
        return [entry]

    def save_error(self) -> dict[str, Any]:
        """The error as it appears inside a collection SaveResult (statusCode, not errorCode)."""
        return {"statusCode": self.error_code, "message": self.message, "fields": self.fields or []}


def not_found(message: str = "The requested resource does not exist") -> SalesforceApiError:
    return SalesforceApiError(404, "NOT_FOUND", message)


def bad_request(error_code: str, message: str, fields: list[str] | None = None) -> SalesforceApiError:
    return SalesforceApiError(400, error_code, message, fields)


# ---------------------------------------------------------------------------------------------- ids

_CHECKSUM_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_ID_SHAPE = re.compile(r"^[a-zA-Z0-9]{15}(?:[A-Z0-5]{3})?$")
_POD = "5g00000"  # instance and reserved characters, as in ids of a real org


def id_checksum(id15: str) -> str:
    """The three characters that make a 15-character id case-insensitively unique."""
    # Salesforce's 15-character id is case-sensitive; the suffix encodes, per 5-character chunk, which
    # characters are upper case (first character = lowest bit), so tools that ignore case still keep ids
    # apart.
    suffix = ""
    for chunk_start in (0, 5, 10):
        chunk = id15[chunk_start : chunk_start + 5]
        flags = sum(1 << bit for bit, char in enumerate(chunk) if "A" <= char <= "Z")
        suffix += _CHECKSUM_ALPHABET[flags]
    return suffix


def make_id(key_prefix: str, number: int) -> str:
    digits = ""
    for _ in range(5):
        number, remainder = divmod(number, 62)
        digits = _BASE62[remainder] + digits
    id15 = key_prefix + _POD + digits
    return id15 + id_checksum(id15)


def normalize_id(value: str) -> str | None:
    """The 18-character form of a 15- or 18-character id; None when it is not shaped like an id."""
    if not isinstance(value, str) or not _ID_SHAPE.match(value):
        return None
    # The API accepts either form and always answers with 18 characters; the suffix is recomputed, so ids
    # given in either form are stored and compared in one form.
    id15 = value[:15]
    return id15 + id_checksum(id15)


# ----------------------------------------------------------------------------------- value formats


def now_utc() -> datetime:
    # Salesforce keeps milliseconds only. Truncating here keeps a stored SystemModstamp equal to the text a
    # client reads back, so a `SystemModstamp >= <cursor>` query finds the record the cursor came from.
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_datetime(moment: datetime) -> str:
    # The REST API's own format: always UTC with milliseconds and `+0000` (not `Z`, not `+00:00`).
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}+0000"


_DATETIME = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_datetime(text: str) -> datetime | None:
    # Lenient on input: `Z`, `+hh:mm`, `+hhmm` or no zone (taken as UTC), any fraction length.
    match = _DATETIME.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0").ljust(6, "0"))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute), int(second), micros, UTC)
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        offset_minutes = sign * (int(digits[:2]) * 60 + int(digits[2:]))
        moment -= timedelta(minutes=offset_minutes)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def parse_date(text: str) -> date | None:
    if not _DATE.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------- the schema

STRING_TYPES = frozenset({"string", "textarea", "url", "email", "phone", "picklist", "id", "reference"})
NUMBER_TYPES = frozenset({"currency", "double", "percent", "int"})
_SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "boolean": "xsd:boolean",
    "currency": "xsd:double",
    "double": "xsd:double",
    "percent": "xsd:double",
    "int": "xsd:int",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    label: str = ""
    length: int = 0
    required: bool = False
    createable: bool = True
    updateable: bool = True
    external_id: bool = False
    unique: bool = False
    case_sensitive: bool = False
    reference_to: str | None = None
    relationship_name: str | None = None
    picklist: tuple[str, ...] = ()
    restricted_picklist: bool = False
    default: Any = None
    precision: int = 0
    scale: int = 0

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def nillable(self) -> bool:
        # Salesforce booleans are never null (unset means false), and Id is always set.
        return not self.required and self.type != "boolean" and self.name != "Id"

    @property
    def indexed(self) -> bool:
        return self.external_id or self.unique

    @property
    def case_insensitive_text(self) -> bool:
        # Salesforce text compares case-insensitively (SOQL `=`, unique and external-id matching) unless the
        # field is marked case-sensitive; ids have their own case rule (`normalize_id`).
        return not self.case_sensitive and self.type in STRING_TYPES and self.type not in ("id", "reference")

    def index_key(self, value: Any) -> Any:
        if isinstance(value, str) and self.case_insensitive_text:
            return value.casefold()
        return value

    def coerce(self, value: Any, sobject: str) -> Any:
        """A JSON value written to this field, as stored; raises the API's error for a bad one."""
        if value is None:
            return None
        kind = self.type
        if kind in STRING_TYPES:
            return self._coerce_text(value, sobject)
        if kind == "boolean":
            if isinstance(value, bool):
                return value
            raise self._cannot_deserialize("boolean", value)
        if kind in NUMBER_TYPES:
            return self._coerce_number(value)
        if kind == "date":
            if isinstance(value, date) and not isinstance(value, datetime):
                return value  # Python callers (seeding) may pass dates and datetimes directly
            parsed = parse_date(value) if isinstance(value, str) else None
            if parsed is None:
                raise self._cannot_deserialize("date", value)
            return parsed
        if kind == "datetime":
            if isinstance(value, datetime) and value.tzinfo is not None:
                return value.astimezone(UTC).replace(microsecond=value.microsecond // 1000 * 1000)
            parsed = parse_datetime(value) if isinstance(value, str) else None
            if parsed is None:
                raise self._cannot_deserialize("datetime", value)
            return parsed
        raise AssertionError(f"unhandled field type {kind}")

    def _coerce_text(self, value: Any, sobject: str) -> str:
        # A JSON number sent to a text field is stored as its text; a JSON boolean is refused like any
        # other value that does not deserialize into a string.
        if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
            raise self._cannot_deserialize("string", value)
        text = str(value)
        if self.length and len(text) > self.length:
            raise bad_request(
                "STRING_TOO_LONG",
                f"{self.label}: data value too large: {text[:40]} (max length={self.length})",
                [self.name],
            )
        if self.type == "email" and text and not _EMAIL.match(text):
            raise bad_request("INVALID_EMAIL_ADDRESS", f"{self.label}: invalid email address: {text}", [self.name])
        if self.restricted_picklist and text not in self.picklist:
            raise bad_request(
                "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                f"{self.label}: bad value for restricted picklist field: {text}",
                [self.name],
            )
        return text

    def _coerce_number(self, value: Any) -> Decimal | int:
        if isinstance(value, bool):
            raise self._cannot_deserialize("double", value)
        if isinstance(value, float):
            value = repr(value)  # Python callers' floats: their shortest decimal form, not the binary value
        try:
            number = Decimal(value) if isinstance(value, (str, int, Decimal)) else None
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            raise self._cannot_deserialize("double", value)
        if self.type == "int":
            if number != number.to_integral_value():
                raise self._cannot_deserialize("int", value)
            return int(number)
        # Extra decimals are rounded to the field's scale on save, not refused (half-up is the assumed rule,
        # unconfirmed); only too many digits before the point fail. The Stripe billing side therefore checks
        # decimals itself instead of relying on Salesforce to reject them.
        rounded = number.quantize(Decimal(1).scaleb(-self.scale), rounding=ROUND_HALF_UP)
        if len(rounded.as_tuple().digits) - self.scale > self.precision - self.scale and rounded != 0:
            raise bad_request(
                "NUMBER_OUTSIDE_VALID_RANGE",
                f"{self.label}: value outside of valid range on numeric field: {value}",
                [self.name],
            )
        return rounded

    def _cannot_deserialize(self, type_name: str, value: Any) -> SalesforceApiError:
        # A wrongly typed JSON value fails in Salesforce's JSON parser, before any field validation: hence
        # JSON_PARSER_ERROR without `fields`, in the parser's wording.
        token = (
            "VALUE_STRING"
            if isinstance(value, str)
            else "VALUE_NUMBER"
            if isinstance(value, (int, Decimal))
            else "VALUE"
        )
        return bad_request(
            "JSON_PARSER_ERROR",
            f"Cannot deserialize instance of {type_name} from {token} value {value} "
            "or request may be missing a required field",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "label": self.label,
            "type": self.type,
            "soapType": _SOAP_TYPES.get(self.type, "xsd:string"),
            "length": self.length,
            "precision": self.precision,
            "scale": self.scale,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "defaultedOnCreate": self.default is not None or self.name in SYSTEM_FIELD_NAMES,
            "calculated": not self.createable and self.name not in SYSTEM_FIELD_NAMES,
            "custom": self.custom,
            "externalId": self.external_id,
            "unique": self.unique,
            "caseSensitive": self.case_sensitive,
            "idLookup": self.name == "Id" or self.external_id,
            "referenceTo": [self.reference_to] if self.reference_to else [],
            "relationshipName": self.relationship_name,
            "restrictedPicklist": self.restricted_picklist,
            "picklistValues": [
                {
                    "active": True,
                    "defaultValue": value == self.default,
                    "label": value,
                    "validFor": None,
                    "value": value,
                }
                for value in self.picklist
            ],
        }


def to_json_value(value: Any) -> Any:
    """A stored value in the form the REST API sends it."""
    if isinstance(value, Decimal):
        # Salesforce sends numbers as JSON numbers (1500.0); up to 15 significant digits survive a float.
        return float(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    return value


@dataclass
class ObjectSpec:
    name: str
    label: str
    key_prefix: str
    fields: dict[str, FieldSpec]
    _by_lower: dict[str, FieldSpec] = field(init=False, repr=False)
    _relationships: dict[str, FieldSpec] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_lower = {name.lower(): spec for name, spec in self.fields.items()}
        self._relationships = {
            spec.relationship_name.lower(): spec for spec in self.fields.values() if spec.relationship_name
        }

    def field(self, name: str) -> FieldSpec | None:
        return self._by_lower.get(name.lower())

    def relationship(self, name: str) -> FieldSpec | None:
        return self._relationships.get(name.lower())

    @property
    def indexed_fields(self) -> list[FieldSpec]:
        return [spec for spec in self.fields.values() if spec.indexed]

    @property
    def required_fields(self) -> list[FieldSpec]:
        return [spec for spec in self.fields.values() if spec.required]

    def url(self, version: str, record_id: str) -> str:
        return f"/services/data/v{version}/sobjects/{self.name}/{record_id}"

    def describe(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            **self.summary(version),
            "fields": [spec.describe() for spec in self.fields.values()],
            "childRelationships": [
                {
                    "childSObject": child.name,
                    "field": spec.name,
                    "relationshipName": relationship,
                    "cascadeDelete": (child.name, spec.name) in CASCADE_DELETES,
                }
                for child, spec, relationship in child_relationships(self.name)
            ],
            "urls": {**self.summary(version)["urls"], "describe": f"{base}/describe"},
        }

    def summary(self, version: str) -> dict[str, Any]:
        base = f"/services/data/v{version}/sobjects/{self.name}"
        return {
            "name": self.name,
            "label": self.label,
            "labelPlural": self.label + "s",
            "keyPrefix": self.key_prefix,
            "custom": False,
            "createable": True,
            "updateable": True,
            "deletable": True,
            "queryable": True,
            "searchable": True,
            "urls": {"sobject": base, "rowTemplate": f"{base}/{{ID}}", "describe": f"{base}/describe"},
        }


SYSTEM_FIELD_NAMES = ("Id", "IsDeleted", "CreatedDate", "LastModifiedDate", "SystemModstamp")


def _system_fields(label: str) -> list[FieldSpec]:
    read_only = {"createable": False, "updateable": False}
    return [
        FieldSpec("Id", "id", f"{label} ID", length=18, **read_only),
        FieldSpec("IsDeleted", "boolean", "Deleted", **read_only),
        FieldSpec("CreatedDate", "datetime", "Created Date", **read_only),
        FieldSpec("LastModifiedDate", "datetime", "Last Modified Date", **read_only),
        FieldSpec("SystemModstamp", "datetime", "System Modstamp", **read_only),
    ]


def _text(name: str, label: str, length: int = 255, **options: Any) -> FieldSpec:
    return FieldSpec(name, options.pop("type", "string"), label, length=length, **options)


def _money(name: str, label: str, **options: Any) -> FieldSpec:
    return FieldSpec(name, "currency", label, precision=18, scale=2, **options)


def _external_id(name: str, label: str, unique: bool = True) -> FieldSpec:
    # Stripe ids differ only by case now and then, so these are case-sensitive external ids.
    return FieldSpec(name, "string", label, length=255, external_id=True, unique=unique, case_sensitive=True)


def _reference(name: str, label: str, target: str, relationship: str, **options: Any) -> FieldSpec:
    return FieldSpec(
        name, "reference", label, length=18, reference_to=target, relationship_name=relationship, **options
    )


def _currency_code() -> FieldSpec:
    # In a multi-currency org only the org's active currencies are accepted, and a record created without
    # one gets a default (here the corporate currency).
    return FieldSpec(
        "CurrencyIsoCode",
        "picklist",
        "Currency ISO Code",
        length=3,
        picklist=CURRENCY_CODES,
        restricted_picklist=True,
        default=CORPORATE_CURRENCY,
    )


def _address(prefix: str, label: str) -> list[FieldSpec]:
    return [
        _text(f"{prefix}Street", f"{label} Street", type="textarea"),
        _text(f"{prefix}City", f"{label} City", 40),
        _text(f"{prefix}State", f"{label} State/Province", 80),
        _text(f"{prefix}PostalCode", f"{label} Zip/Postal Code", 20),
        _text(f"{prefix}Country", f"{label} Country", 80),
    ]


# StageName -> (probability, forecast category, IsClosed, IsWon): the standard sales process.
OPPORTUNITY_STAGES: dict[str, tuple[int, str, bool, bool]] = {
    "Prospecting": (10, "Pipeline", False, False),
    "Qualification": (10, "Pipeline", False, False),
    "Needs Analysis": (20, "Pipeline", False, False),
    "Value Proposition": (50, "Pipeline", False, False),
    "Id. Decision Makers": (60, "Pipeline", False, False),
    "Perception Analysis": (70, "Pipeline", False, False),
    "Proposal/Price Quote": (75, "Pipeline", False, False),
    "Negotiation/Review": (90, "Commit", False, False),
    "Closed Won": (100, "Closed", True, True),
    "Closed Lost": (0, "Omitted", True, False),
}
BILLING_STATUSES = (
    "Not Billed",
    "Invoiced",
    "Paid",
    "Past Due",
    "Payment Failed",
    "Partially Refunded",
    "Refunded",
    "Disputed",
    "Void",
    "Held back",
    "Needs review",
)
_DERIVED = {"createable": False, "updateable": False}


def _object(name: str, label: str, key_prefix: str, fields: list[FieldSpec]) -> ObjectSpec:
    all_fields = _system_fields(label) + fields
    return ObjectSpec(name, label, key_prefix, {spec.name: spec for spec in all_fields})


OBJECTS: dict[str, ObjectSpec] = {
    spec.name: spec
    for spec in (
        _object(
            "Account",
            "Account",
            "001",
            [
                _text("Name", "Account Name", required=True),
                _text("AccountNumber", "Account Number", 40),
                _text(
                    "Type",
                    "Account Type",
                    255,
                    type="picklist",
                    picklist=("Prospect", "Customer - Direct", "Customer - Channel", "Partner", "Other"),
                ),
                _text("Industry", "Industry", type="picklist"),
                *_address("Billing", "Billing"),
                *_address("Shipping", "Shipping"),
                _text("Phone", "Account Phone", 40, type="phone"),
                _text("Website", "Website", type="url"),
                _text("Description", "Account Description", 32000, type="textarea"),
                _money("AnnualRevenue", "Annual Revenue"),
                FieldSpec("NumberOfEmployees", "int", "Employees", precision=8),
                _currency_code(),
                _external_id("Stripe_Customer_Id__c", "Stripe Customer Id"),
                _external_id("NetSuite_Customer_Id__c", "NetSuite Customer Id"),
            ],
        ),
        _object(
            "Contact",
            "Contact",
            "003",
            [
                _reference("AccountId", "Account ID", "Account", "Account"),
                _text("FirstName", "First Name", 40),
                _text("LastName", "Last Name", 80, required=True),
                _text("Name", "Full Name", 121, **_DERIVED),
                _text("Email", "Email", 80, type="email"),
                _text("Phone", "Business Phone", 40, type="phone"),
                _text("Title", "Title", 128),
                *_address("Mailing", "Mailing"),
                _currency_code(),
            ],
        ),
        _object(
            "Opportunity",
            "Opportunity",
            "006",
            [
                _text("Name", "Name", 120, required=True),
                _reference("AccountId", "Account ID", "Account", "Account"),
                _text(
                    "StageName",
                    "Stage",
                    255,
                    type="picklist",
                    required=True,
                    picklist=tuple(OPPORTUNITY_STAGES),
                    restricted_picklist=True,
                ),
                FieldSpec("CloseDate", "date", "Close Date", required=True),
                _money("Amount", "Amount"),
                _currency_code(),
                FieldSpec("Probability", "percent", "Probability (%)", precision=3, scale=0),
                _text("ForecastCategoryName", "Forecast Category", 40, type="picklist", **_DERIVED),
                _text(
                    "Type",
                    "Opportunity Type",
                    type="picklist",
                    picklist=("New Business", "Existing Business", "Renewal"),
                ),
                _text("LeadSource", "Lead Source", type="picklist"),
                _text("NextStep", "Next Step"),
                _text("Description", "Description", 32000, type="textarea"),
                FieldSpec("IsClosed", "boolean", "Closed", **_DERIVED),
                FieldSpec("IsWon", "boolean", "Won", **_DERIVED),
                FieldSpec("HasOpportunityLineItem", "boolean", "Has Line Item", **_DERIVED),
                _external_id("Stripe_Subscription_Id__c", "Stripe Subscription Id"),
                _external_id("Stripe_Invoice_Id__c", "Stripe Invoice Id"),
                # An external id an admin did not make unique: an upsert on it can match several records.
                _external_id("NetSuite_Invoice_Id__c", "NetSuite Invoice Id", unique=False),
                _text("Billing_Status__c", "Billing Status", type="picklist", picklist=BILLING_STATUSES),
                # Why the status is Held back or Needs review: a custom Text(255) field, as an org would add it.
                _text("Billing_Status_Reason__c", "Billing Status Reason", 255),
            ],
        ),
        _object(
            "OpportunityLineItem",
            "Opportunity Product",
            "00k",
            [
                # A line item cannot be moved to another opportunity or product once created.
                _reference(
                    "OpportunityId", "Opportunity ID", "Opportunity", "Opportunity", required=True, updateable=False
                ),
                _reference("Product2Id", "Product ID", "Product2", "Product2", updateable=False),
                _text("Name", "Opportunity Product Name", 376, **_DERIVED),
                _text("ProductCode", "Product Code", 255, **_DERIVED),
                FieldSpec("Quantity", "double", "Quantity", required=True, precision=12, scale=2),
                _money("UnitPrice", "Sales Price"),
                _money("TotalPrice", "Total Price"),
                FieldSpec("ServiceDate", "date", "Date"),
                _text("Description", "Line Description"),
                # A line item always has its opportunity's currency; it cannot be set on the line.
                _text("CurrencyIsoCode", "Currency ISO Code", 3, type="picklist", **_DERIVED),
            ],
        ),
        _object(
            "Product2",
            "Product",
            "01t",
            [
                _text("Name", "Product Name", required=True),
                _text("ProductCode", "Product Code"),
                _text("Description", "Product Description", 4000, type="textarea"),
                FieldSpec("IsActive", "boolean", "Active", default=False),
                _text("Family", "Product Family", type="picklist", picklist=("None", "Subscription", "Services")),
                _currency_code(),
            ],
        ),
    )
}
OBJECTS_BY_PREFIX = {spec.key_prefix: spec for spec in OBJECTS.values()}
_OBJECTS_BY_LOWER = {name.lower(): spec for name, spec in OBJECTS.items()}


def find_object(name: str) -> ObjectSpec | None:
    return _OBJECTS_BY_LOWER.get(name.lower())


# Deleting a parent deletes these children (master-detail-like, as Salesforce does for these lookups).
CASCADE_DELETES = frozenset(
    {("Contact", "AccountId"), ("Opportunity", "AccountId"), ("OpportunityLineItem", "OpportunityId")}
)


def child_relationships(parent: str) -> list[tuple[ObjectSpec, FieldSpec, str]]:
    """(child object, its lookup field, the relationship name) for every child of `parent`."""
    # The standard child relationship names, as a SOQL subquery must spell them (`SELECT ... FROM
    # OpportunityLineItems`); they are irregular plurals, so they are listed, not derived.
    plural = {"Contact": "Contacts", "Opportunity": "Opportunities", "OpportunityLineItem": "OpportunityLineItems"}
    return [
        (child, spec, plural.get(child.name, child.name + "s"))
        for child in OBJECTS.values()
        for spec in child.fields.values()
        if spec.reference_to == parent
    ]
