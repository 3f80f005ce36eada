"""The error catalogue: NetSuite's error bodies (wire spec A, "Errors") classified into SyncIssues."""

from __future__ import annotations

import re

import pytest

from sync_pipeline.errors import CATALOGUE, SyncIssue, classify_netsuite_error, make_issue
from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.ledger import ExceptionRow
from sync_pipeline.resources.netsuite import NetSuiteError, access_denied

RFC = "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"
INVOICE_SENT = {
    "externalId": "stripe-in_1",
    "entity": {"externalId": "stripe-cus_1"},
    "subsidiary": {"id": "2"},
    "currency": {"id": "2"},
    "tranDate": "2026-11-02",
    "class": {"id": "99"},
}


def netsuite_error(status: int, title: str, *details: dict) -> dict:
    return {"type": RFC, "title": title, "status": status, "o:errorDetails": list(details)}


def classify(status: int, body: object, record_type: str = "invoice", sent: dict | None = None) -> SyncIssue:
    return classify_netsuite_error(
        status, body, record_type, "stripe-in_1", sent if sent is not None else INVOICE_SENT, source_id="in_1"
    )


def rejected(detail: str, code: str = "USER_ERROR", path: str | None = None, **kwargs: object) -> SyncIssue:
    """Classify a 400 Bad Request carrying one error detail."""
    item = {"detail": detail, "o:errorCode": code, **({"o:errorPath": path} if path else {})}
    return classify(400, netsuite_error(400, "Bad Request", item), **kwargs)


def test_missing_department_names_the_field_and_the_config_line():
    issue = rejected("Error while accessing a resource. Please enter value(s) for: Department.")
    assert issue.error_code == "MISSING_REQUIRED_FIELD"
    assert issue.field == "department"
    assert "field_mapping.yaml" in issue.fix
    assert "default `department` for invoices of subsidiary 2" in issue.fix
    assert issue.retryable is False
    assert (issue.external_id, issue.source_id) == ("stripe-in_1", "in_1")


def test_several_missing_fields_are_all_named():
    issue = rejected("Please enter value(s) for: Department, Class, Location.")
    assert issue.field == "department, class, location"
    assert all(f"default `{name}`" in issue.fix for name in ("department", "class", "location"))


def test_field_param_required_uses_the_error_path():
    issue = rejected("Please enter a value for [entity]", code="FIELD_PARAM_REQD", path="entity")
    assert (issue.error_code, issue.field) == ("MISSING_REQUIRED_FIELD", "entity")
    assert "customer" in issue.fix


def test_invalid_field_value_of_a_config_id_points_at_field_mapping():
    issue = rejected("Invalid Field Value 99 for the following field: class", code="INVALID_KEY_OR_REF")
    assert issue.error_code == "INVALID_REFERENCE"
    assert (issue.field, issue.value) == ("class", "99")
    assert "field_mapping.yaml" in issue.fix and "99" in issue.fix


def test_invalid_reference_to_a_record_we_sync_is_a_missing_dependency():
    issue = rejected("Invalid Field Value stripe-cus_1 for the following field: entity", code="INVALID_KEY_OR_REF")
    assert issue.error_code == "DEPENDENCY_NOT_SYNCED"
    assert (issue.field, issue.value) == ("entity", "stripe-cus_1")


def test_currency_not_allowed_for_subsidiary():
    issue = rejected(
        "Invalid Field Value 3 for the following field: currency. Currency JPY is not allowed for "
        "subsidiary 2 (Europe GmbH); allowed: EUR, USD.",
        code="INVALID_KEY_OR_REF",
        sent={**INVOICE_SENT, "currency": {"id": "3"}},
    )
    assert issue.error_code == "CURRENCY_NOT_ALLOWED"
    assert (issue.field, issue.value) == ("currency", "3")
    assert "subsidiary 2" in issue.message


def test_over_applied_payment():
    issue = rejected(
        "You cannot apply 200.00 to Invoice #INV1001: its amount remaining is 100.00.", record_type="customerPayment"
    )
    assert issue.error_code == "OVER_APPLIED"
    assert issue.value == "200.00"
    assert "100.00" in issue.message and "Invoice #INV1001" in issue.message


@pytest.mark.parametrize("code", ["DUP_RCRD", "USER_ERROR"])
def test_duplicate_record(code):
    assert rejected("This record already exists", code=code).error_code == "DUPLICATE_EXTERNAL_ID"


@pytest.mark.parametrize("status", [429, 400])
def test_concurrency_limit_is_retryable_whatever_the_status(status):
    body = netsuite_error(
        status,
        "Too Many Requests",
        {"detail": "Concurrent request limit exceeded. Request blocked.", "o:errorCode": "CONCURRENCY_LIMIT_EXCEEDED"},
    )
    issue = classify(status, body)
    assert issue.error_code == "NETSUITE_RATE_LIMITED"
    assert issue.retryable is True


@pytest.mark.parametrize("body", [netsuite_error(503, "Service Unavailable"), "<html>Bad gateway</html>", None])
def test_server_errors_are_retryable_even_without_a_json_body(body):
    issue = classify(503, body)
    assert (issue.error_code, issue.retryable) == ("NETSUITE_UNAVAILABLE", True)
    assert "503" in issue.message


def _netsuite_error(status: int, code: str, detail: str, request: str = "PUT /services/rest/record/v1/invoice/eid:x"):
    return NetSuiteError(
        status,
        code,
        detail,
        body=netsuite_error(status, detail, {"detail": detail, "o:errorCode": code}),
        request=request,
    )


def test_invalid_login_stops_the_step_naming_the_variables_of_the_auth_method_in_use():
    error = _netsuite_error(401, "INVALID_LOGIN", "Invalid login attempt.")
    tba = access_denied(error, "oauth1-tba")
    assert isinstance(tba, AccessDenied) and tba.allow_retries is False
    assert "NETSUITE_TOKEN_SECRET" in tba.line and "NETSUITE_CONSUMER_KEY" in tba.line and "\n" not in tba.line
    assert "Invalid login attempt." in tba.line
    m2m = access_denied(error, "oauth2-m2m")
    assert "NETSUITE_CERTIFICATE_ID" in m2m.line and "NETSUITE_TOKEN_SECRET" not in m2m.line


def test_insufficient_permission_stops_the_step_naming_the_role_and_the_request():
    denied = access_denied(
        _netsuite_error(
            403,
            "INSUFFICIENT_PERMISSION",
            "Permission Violation",
            "PUT /services/rest/record/v1/customerRefund/eid:stripe-re_1",
        ),
        "oauth1-tba",
    )
    assert "customerRefund" in denied.line and "NETSUITE_TOKEN_ID" in denied.line


def test_a_refused_oauth2_token_request_is_an_authentication_failure():
    error = _netsuite_error(400, "invalid_client", "invalid_client", "POST /services/rest/auth/oauth2/v1/token")
    assert "NETSUITE_CLIENT_ID" in access_denied(error, "oauth2-m2m").line


@pytest.mark.parametrize(
    "status, code",
    [(400, "USER_ERROR"), (404, "NONEXISTENT_ID"), (429, "CONCURRENCY_LIMIT_EXCEEDED"), (503, "HTTP_503")],
)
def test_record_and_transient_errors_are_not_access_failures(status, code):
    assert access_denied(_netsuite_error(status, code, "x"), "oauth1-tba") is None


def test_a_write_without_an_answer_is_its_own_retryable_exception():
    issue = classify_netsuite_error(
        None, "ConnectionError", "invoice", "stripe-in_1", None, source_id="in_1", attempts=8
    )
    assert (issue.error_code, issue.retryable) == ("NETSUITE_NO_ANSWER", True)
    assert "after 8 attempt(s)" in issue.message and "ConnectionError" in issue.message
    assert "NetSuite did not answer; the next run retries it" in issue.fix


def test_a_customer_id_from_stripe_metadata_is_fixed_in_stripe_not_in_field_mapping():
    sent = {**INVOICE_SENT, "entity": {"id": "9999"}}
    body = netsuite_error(
        400,
        "Bad Request",
        {
            "detail": "Invalid Field Value 9999 for the following field: entity",
            "o:errorCode": "INVALID_KEY_OR_REF",
            "o:errorPath": "entity",
        },
    )
    issue = classify_netsuite_error(
        400,
        body,
        "invoice",
        "stripe-in_1",
        sent,
        source_id="in_1",
        value_sources={"entity": "`metadata.netsuite_customer_id` on Stripe customer cus_9"},
    )
    assert (issue.error_code, issue.field, issue.value) == ("INVALID_REFERENCE", "entity", "9999")
    assert "`metadata.netsuite_customer_id` on Stripe customer cus_9" in issue.fix
    assert "field_mapping.yaml" not in issue.fix
    without_source = classify(400, body, sent=sent)
    assert "field_mapping.yaml" in without_source.fix


def test_nonexistent_field_points_at_the_defaults():
    issue = rejected("Invalid field custbody_x", code="NONEXISTENT_FIELD", path="custbody_x")
    assert (issue.error_code, issue.field) == ("NONEXISTENT_FIELD", "custbody_x")
    assert "field_mapping.yaml" in issue.fix


def test_unknown_rejection_keeps_netsuite_text():
    issue = rejected("Something new went wrong.", code="WEIRD")
    assert issue.error_code == "NETSUITE_REJECTED"
    assert "Something new went wrong." in issue.message and "WEIRD" in issue.message


@pytest.mark.parametrize("code", sorted(CATALOGUE))
def test_every_catalogue_entry_renders_without_template_leftovers(code):
    issue = make_issue(
        code, record_type="invoice", external_id="stripe-in_1", source_id="in_1", field="department", value="3"
    )
    assert issue.error_code == code
    for text in (issue.message, issue.fix):
        # An unfilled placeholder reads `{name}`; a fix may quote a YAML flow mapping (`{USD: price_...}`).
        assert text and not re.search(r"\{\w*\}", text) and "{{" not in text and "}}" not in text


def test_issue_becomes_a_ledger_exception_row():
    issue = make_issue(
        "UNMAPPED_CURRENCY",
        record_type="invoice",
        external_id="stripe-in_1",
        source_id="in_1",
        field="currency",
        value="CHF",
        currency="CHF",
    )
    row = ExceptionRow(target="netsuite", **issue.exception_fields())
    assert (row.error_code, row.field, row.value) == ("UNMAPPED_CURRENCY", "currency", "CHF")
    assert "add CHF under `currencies:`" in row.fix


def test_subsidiary_refused_for_the_customer_explains_both_causes():
    issue = rejected(
        "Invalid Field Value 2 for the following field: subsidiary. The customer Acme belongs to "
        "subsidiary 1 (Parent Company (US)).",
        code="INVALID_KEY_OR_REF",
    )
    assert (issue.error_code, issue.field, issue.value) == ("INVALID_REFERENCE", "subsidiary", "2")
    assert "`currencies:`" in issue.fix and "metadata.netsuite_customer_id" in issue.fix


def test_labels_of_the_record_api_become_field_ids():
    issue = rejected("Please enter value(s) for: Payment Amount, Items.", record_type="customerPayment")
    assert issue.field == "payment, item"


def test_a_field_netsuite_requires_that_the_stripe_object_lacks_is_fixed_on_that_object_first():
    body = netsuite_error(
        400, "Bad Request", {"detail": "Please enter value(s) for: Email.", "o:errorCode": "USER_ERROR"}
    )
    issue = classify_netsuite_error(400, body, "customer", "stripe-cus_9", {"companyName": "X"}, source_id="cus_9")
    assert (issue.error_code, issue.field) == ("MISSING_REQUIRED_FIELD", "email")
    assert issue.fix.startswith("set `email` on Stripe customer cus_9")
    assert "field_mapping.yaml" in issue.fix  # the default remains the other way
    department = classify_netsuite_error(
        400,
        netsuite_error(
            400, "Bad Request", {"detail": "Please enter value(s) for: Department.", "o:errorCode": "USER_ERROR"}
        ),
        "customer",
        "stripe-cus_9",
        {"companyName": "X"},
        source_id="cus_9",
    )
    assert "Stripe customer" not in department.fix, "a NetSuite-only field is fixed in field_mapping.yaml"
