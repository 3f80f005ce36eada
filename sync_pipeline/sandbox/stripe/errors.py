"""Stripe's error envelope: `{"error": {"type", "code", "message", "param", ...}}` with its status codes."""

from __future__ import annotations

from typing import Any

DOC_URL = "https://stripe.com/docs/error-codes/"


class StripeApiError(Exception):
    """Raised anywhere in a request; the app renders it as Stripe's error JSON."""

    def __init__(
        self,
        status: int,
        error_type: str,
        message: str,
        code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.code = code
        self.param = param
        self.extra = extra

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = DOC_URL + self.code.replace("_", "-")
        if self.param:
            error["param"] = self.param
        if request_id:
            error["request_log_url"] = f"https://dashboard.stripe.com/test/logs/{request_id}"
        error.update(self.extra)
        return {"error": error}


def invalid_param(message: str, param: str | None = None, code: str | None = "parameter_invalid") -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, code=code, param=param)


def missing_param(param: str) -> StripeApiError:
    return StripeApiError(
        400, "invalid_request_error", f"Missing required param: {param}.", code="parameter_missing", param=param
    )


def resource_missing(kind: str, object_id: str, param: str = "id") -> StripeApiError:
    return StripeApiError(
        404, "invalid_request_error", f"No such {kind}: '{object_id}'", code="resource_missing", param=param
    )


def invalid_state(message: str, code: str | None = None, param: str | None = None) -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, code=code, param=param)


def card_error(message: str, code: str, decline_code: str | None, **extra: Any) -> StripeApiError:
    if decline_code:
        extra["decline_code"] = decline_code
    return StripeApiError(402, "card_error", message, code=code, **extra)
