"""NetSuite's error bodies and codes (wire spec A, "Errors"), raised as one exception type."""

from __future__ import annotations

from typing import Any

# Error codes the stand-in sends. Where the spec marks a code unconfirmed, the choice is made here once.
INVALID_LOGIN = "INVALID_LOGIN"
USER_ERROR = "USER_ERROR"
INVALID_KEY_OR_REF = "INVALID_KEY_OR_REF"
INVALID_PARAMETER = "INVALID_PARAMETER"
NONEXISTENT_ID = "NONEXISTENT_ID"
INSUFFICIENT_PERMISSION = "INSUFFICIENT_PERMISSION"
CONCURRENCY_LIMIT_EXCEEDED = "CONCURRENCY_LIMIT_EXCEEDED"
UNEXPECTED_ERROR = "UNEXPECTED_ERROR"
INVALID_CONTENT = "INVALID_CONTENT"
# Unconfirmed between DUP_RCRD and USER_ERROR; DUP_RCRD is what SOAP sends for the same condition.
DUPLICATE_RECORD = "DUP_RCRD"

INVALID_LOGIN_DETAIL = (
    "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
    "Setup > Users/Roles > User Management > View Login Audit Trail."
)
DUPLICATE_RECORD_DETAIL = "This record already exists"
CONCURRENCY_DETAIL = "Concurrent request limit exceeded. Request blocked."
NONEXISTENT_ID_DETAIL = "The record instance does not exist. Provide a valid record instance ID."
LINE_ITEM_REQUIRED_DETAIL = "You must enter at least one line item for this transaction."
OUT_OF_BALANCE_DETAIL = (
    "You have entered an Out of Balance Journal Entry. Please change the total debits and credits so they are equal."
)
SUITEQL_ERROR_PREFIX = "Invalid search query. Detailed unprocessed description follows. Search error occurred: "

_STATUS_TITLES: dict[int, tuple[str, str]] = {
    400: ("Bad Request", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.1"),
    401: ("Unauthorized", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2"),
    403: ("Forbidden", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.4"),
    404: ("Not Found", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.5"),
    405: ("Method Not Allowed", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.6"),
    429: ("Too Many Requests", "https://www.rfc-editor.org/rfc/rfc6585.html#section-4"),
    500: ("Internal Server Error", "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.6.1"),
}


def error_body(status: int, code: str, detail: str, path: str | None = None) -> dict[str, Any]:
    title, type_url = _STATUS_TITLES.get(status, ("Error", "https://www.rfc-editor.org/rfc/rfc9110.html"))
    item: dict[str, Any] = {"detail": detail, "o:errorCode": code}
    if path:
        item["o:errorPath"] = path
    return {"type": type_url, "title": title, "status": status, "o:errorDetails": [item]}


class NetSuiteError(Exception):
    """A request NetSuite refuses; rendered as its error body with `status`."""

    def __init__(self, status: int, code: str, detail: str, path: str | None = None) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail
        self.path = path

    def body(self) -> dict[str, Any]:
        return error_body(self.status, self.code, self.detail, self.path)


def bad_request(detail: str, code: str = USER_ERROR, path: str | None = None) -> NetSuiteError:
    return NetSuiteError(400, code, detail, path)


def invalid_reference(field: str, value: object) -> NetSuiteError:
    return NetSuiteError(400, INVALID_KEY_OR_REF, f"Invalid Field Value {value} for the following field: {field}")


def missing_values(labels: list[str]) -> NetSuiteError:
    return bad_request(f"Error while accessing a resource. Please enter value(s) for: {', '.join(labels)}.")


def not_found() -> NetSuiteError:
    return NetSuiteError(404, NONEXISTENT_ID, NONEXISTENT_ID_DETAIL)


def invalid_login() -> NetSuiteError:
    return NetSuiteError(401, INVALID_LOGIN, INVALID_LOGIN_DETAIL)
