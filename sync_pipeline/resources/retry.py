"""The one retry policy every client uses: bounded, jittered, and polite to `Retry-After`.

Each client says *what* is retryable (a predicate over the exception it raised) and, when the
server named a delay, *how long* to wait; this module says *how* to retry. Retries are only
safe because every write we send is idempotent (NetSuite `eid:` upserts, Stripe
`Idempotency-Key`s, Salesforce external-id upserts); a client must not mark a non-idempotent
request retryable.
"""

from __future__ import annotations

import email.utils
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try before giving up. Defaults suit a batch sync, not an interactive call."""

    max_attempts: int = 8
    # Total time budget across attempts and waits; no new wait starts that would overrun it.
    max_seconds: float = 180.0
    # Full jitter: the n-th wait is uniform in [0, min(max_wait, initial_wait * 2**n)], so many
    # threads that hit the same limit at once do not come back in lock-step.
    initial_wait: float = 0.5
    max_wait: float = 30.0
    # A server asking for longer than this is treated as asking for this (bounded by max_seconds).
    max_retry_after: float = 60.0


DEFAULT_RETRY_POLICY = RetryPolicy()


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _no_retry_after(_: BaseException) -> float | None:
    return None


class _RetryAfterOrJitter(tenacity.wait.wait_base):
    """Wait what the server asked for when it asked, else exponential backoff with full jitter."""

    def __init__(self, policy: RetryPolicy, retry_after: Callable[[BaseException], float | None]) -> None:
        self._retry_after = retry_after
        self._max_retry_after = policy.max_retry_after
        self._jitter = tenacity.wait_random_exponential(multiplier=policy.initial_wait, max=policy.max_wait)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        asked = self._retry_after(error) if error is not None else None
        if asked is not None:
            return min(asked, self._max_retry_after)
        return self._jitter(retry_state)


def call_with_retry(
    call: Callable[[], T],
    is_retryable: Callable[[BaseException], bool],
    *,
    retry_after: Callable[[BaseException], float | None] = _no_retry_after,
    policy: RetryPolicy = DEFAULT_RETRY_POLICY,
    on_retry: Callable[[BaseException, float], None] | None = None,
    description: str = "request",
) -> T:
    """Run `call`, retrying per `policy` while `is_retryable(error)`; the last error is re-raised.

    `on_retry(error, seconds)` runs before each wait (clients count retries there).
    `description` names the call in log lines; it must not contain secrets.
    """

    def before_sleep(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        seconds = state.next_action.sleep if state.next_action is not None else 0.0
        logger.warning(
            "retrying %s in %.2fs after attempt %d: %s", description, seconds, state.attempt_number, _describe(error)
        )
        if on_retry is not None and error is not None:
            on_retry(error, seconds)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_retryable),
        wait=_RetryAfterOrJitter(policy, retry_after),
        stop=tenacity.stop_after_attempt(policy.max_attempts) | tenacity.stop_before_delay(policy.max_seconds),
        before_sleep=before_sleep,
        reraise=True,
    )
    return retrying(call)


def _describe(error: BaseException | None) -> str:
    if error is None:
        return "no error"
    text = str(error)
    return f"{type(error).__name__}: {text[:300]}" if text else type(error).__name__
