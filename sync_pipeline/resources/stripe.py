"""Stripe: the official SDK with one pinned API version, the shared retry policy, plain-dict results.

The SDK's own retries are off (`max_network_retries=0`) so that one policy, ours, decides; every
write carries an explicit `Idempotency-Key`, which makes retrying a POST safe. Stripe objects
from SDK 16 are not dicts, so every method returns `.to_dict()` copies.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import dagster as dg
import stripe
from pydantic import Field, PrivateAttr

from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.retry import DEFAULT_RETRY_POLICY, RetryPolicy, call_with_retry, parse_retry_after

# The one place the project pins Stripe's API version (what stripe-python 16.1 sends by default).
STRIPE_API_VERSION = "2026-10-28.endive"
STRIPE_PAGE_SIZE = 100
MAX_IDEMPOTENCY_KEY_LENGTH = 255

T = TypeVar("T")
Timestamp = int | dt.datetime


def is_retryable(error: BaseException) -> bool:
    """429s, broken connections, 5xx and 409 lock conflicts; Stripe's own `Stripe-Should-Retry` wins.

    A replayed answer (`Idempotent-Replayed: true`) is final: Stripe stores the first result of a
    key, even a 500, so asking again with the same key cannot change it. The caller's look-up
    before the next write finds out whether that first attempt created anything.
    """
    if isinstance(error, stripe.IdempotencyError) or not isinstance(error, stripe.StripeError):
        return False
    should_retry = _header(error, "Stripe-Should-Retry")
    if should_retry in ("true", "false"):
        return should_retry == "true"
    if _header(error, "Idempotent-Replayed") == "true":
        return False
    if isinstance(error, (stripe.RateLimitError, stripe.APIConnectionError)):
        return True
    status = error.http_status or 0
    return status >= 500 or status == 409


def _retry_after(error: BaseException) -> float | None:
    return parse_retry_after(_header(error, "Retry-After")) if isinstance(error, stripe.StripeError) else None


def access_denied(error: stripe.StripeError, description: str) -> AccessDenied | None:
    """The step-stopping failure for a refused or under-privileged API key, else None (a record's problem)."""
    # Stripe's own message shows only the key's first and last characters.
    said = f"HTTP {error.http_status}: {error.user_message or error}"
    if isinstance(error, stripe.AuthenticationError):
        return AccessDenied(
            "stripe",
            (
                f"Stripe refused the API key ({said}): set STRIPE_API_KEY to a secret key (sk_live_...) or restricted "
                "key (rk_live_...) of this Stripe account that is not rolled or expired (Dashboard > Developers > API "
                "keys)"
            ),
        )
    if isinstance(error, stripe.PermissionError):
        return AccessDenied(
            "stripe",
            (
                f"Stripe denied the API key {description} ({said}): give the restricted key in STRIPE_API_KEY the "
                "permission this request needs (Dashboard > Developers > API keys > Edit key), or use a secret key"
            ),
        )
    return None


def _header(error: stripe.StripeError, name: str) -> str | None:
    headers = error.headers or {}
    value = headers.get(name) or headers.get(name.lower())
    return str(value) if value is not None else None


def unix_seconds(value: Timestamp) -> int:
    """Stripe's `created` filters take Unix seconds; naive datetimes are taken as UTC."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return int(value.timestamp())
    return int(value)


def _created_filter(gte: Timestamp | None, lt: Timestamp | None, name: str = "created") -> dict[str, Any]:
    window: dict[str, int] = {}
    if gte is not None:
        window["gte"] = unix_seconds(gte)
    if lt is not None:
        window["lt"] = unix_seconds(lt)
    return {name: window} if window else {}


def _without_none(params: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in params.items() if value is not None and value != []}


def _check_idempotency_key(key: str) -> str:
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        raise ValueError(f"an Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}")
    return key


class StripeResource(dg.ConfigurableResource):
    """Stripe's API at the pinned version. Wire with `dg.EnvVar("STRIPE_API_KEY")` etc."""

    api_key: str = Field(repr=False, description="secret or restricted key (sk_... / rk_...)")
    api_base: str | None = Field(default=None, description="override of https://api.stripe.com (sandbox or proxy)")
    timeout_seconds: float = Field(default=80.0, description="per-request timeout")
    # Several Stripe accounts (SYNC_STRIPE_ACCOUNTS): the other accounts' keys by account name; `api_key` is the
    # default account's. An account's assets get `for_account(name)`.
    other_accounts: dict[str, str] = Field(default_factory=dict, repr=False, description="account name -> key")

    _client: stripe.StripeClient | None = PrivateAttr(default=None)
    _client_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _retry_policy: RetryPolicy = PrivateAttr(default=DEFAULT_RETRY_POLICY)

    def for_account(self, account: str) -> StripeResource:
        """The client of another Stripe account of the deployment (same API address, timeout and retries)."""
        if account not in self.other_accounts:
            raise dg.Failure(
                description=f"Stripe account {account}: STRIPE_API_KEY_{account.upper()} is not set "
                "(SYNC_STRIPE_ACCOUNTS lists it; `sync-pipeline check-config --require stripe`)"
            )
        return StripeResource(
            api_key=self.other_accounts[account], api_base=self.api_base, timeout_seconds=self.timeout_seconds
        )

    def get_client(self) -> stripe.StripeClient:
        """The underlying SDK client (pinned version, no SDK retries) for anything not wrapped here."""
        with self._client_lock:
            if self._client is None:
                self._client = stripe.StripeClient(
                    self.api_key,
                    stripe_version=STRIPE_API_VERSION,
                    base_addresses={"api": self.api_base.rstrip("/")} if self.api_base else None,
                    max_network_retries=0,
                    http_client=stripe.RequestsClient(timeout=self.timeout_seconds),
                )
            return self._client

    # -- reads -----------------------------------------------------------------------------

    def list_invoices(
        self,
        created_gte: Timestamp | None = None,
        created_lt: Timestamp | None = None,
        expand: Sequence[str] = (),
        customer: str | None = None,
        status: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Invoices created in [created_gte, created_lt), newest first, across all pages."""
        params = {
            **_created_filter(created_gte, created_lt),
            "expand": list(expand),
            "customer": customer,
            "status": status,
        }
        return self._paginate("/v1/invoices", params)

    def list_charges(
        self,
        created_gte: Timestamp | None = None,
        created_lt: Timestamp | None = None,
        expand: Sequence[str] = ("data.refunds",),
        customer: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Charges created in [created_gte, created_lt); refunds are expanded because Stripe omits them."""
        params = {**_created_filter(created_gte, created_lt), "expand": list(expand), "customer": customer}
        return self._paginate("/v1/charges", params)

    def list_refunds(
        self,
        charge: str | None = None,
        created_gte: Timestamp | None = None,
        created_lt: Timestamp | None = None,
    ) -> Iterator[dict[str, Any]]:
        return self._list_for_charge("/v1/refunds", charge, created_gte, created_lt)

    def list_invoice_payments(
        self, invoice: str | None = None, payment_intent: str | None = None, expand: Sequence[str] = ()
    ) -> Iterator[dict[str, Any]]:
        """An invoice's payments, or the invoice payments of a PaymentIntent.

        Since 2025-03-31.basil payments are InvoicePayment objects (not `invoice.charge`), and a
        Charge no longer names its invoice: asking by `payment_intent` is how to find it.
        """
        if (invoice is None) == (payment_intent is None):
            raise ValueError("list_invoice_payments needs exactly one of invoice or payment_intent")
        payment = {"type": "payment_intent", "payment_intent": payment_intent} if payment_intent else None
        params = {"invoice": invoice, "payment": payment, "expand": list(expand)}
        return self._paginate("/v1/invoice_payments", params)

    def list_disputes(
        self,
        charge: str | None = None,
        created_gte: Timestamp | None = None,
        created_lt: Timestamp | None = None,
    ) -> Iterator[dict[str, Any]]:
        return self._list_for_charge("/v1/disputes", charge, created_gte, created_lt)

    def list_credit_notes(self, invoice: str | None = None, customer: str | None = None) -> Iterator[dict[str, Any]]:
        params = {"invoice": invoice, "customer": customer}
        return self._paginate("/v1/credit_notes", params)

    def list_customer_balance_transactions(self, customer: str) -> Iterator[dict[str, Any]]:
        return self._paginate(f"/v1/customers/{customer}/balance_transactions", {})

    def list_credit_note_lines(self, credit_note: str) -> Iterator[dict[str, Any]]:
        return self._paginate(f"/v1/credit_notes/{credit_note}/lines", {})

    def list_invoice_lines(self, invoice: str) -> Iterator[dict[str, Any]]:
        return self._paginate(f"/v1/invoices/{invoice}/lines", {})

    def list_payouts(
        self,
        arrival_date_gte: Timestamp | None = None,
        arrival_date_lt: Timestamp | None = None,
        expand: Sequence[str] = (),
    ) -> Iterator[dict[str, Any]]:
        """Payouts arriving in [arrival_date_gte, arrival_date_lt) (payouts are partitioned by arrival)."""
        params = {**_created_filter(arrival_date_gte, arrival_date_lt, name="arrival_date"), "expand": list(expand)}
        return self._paginate("/v1/payouts", params)

    def list_balance_transactions(
        self, payout: str | None = None, expand: Sequence[str] = ()
    ) -> Iterator[dict[str, Any]]:
        """A payout's balance transactions: the payments, refunds and fees it settles."""
        params = {"payout": payout, "expand": list(expand)}
        return self._paginate("/v1/balance_transactions", params)

    def list_events(
        self,
        created_gte: Timestamp | None = None,
        starting_after: str | None = None,
        types: Sequence[str] | None = None,
        ending_before: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Events (kept 30 days by Stripe), `types` up to 20 with wildcards.

        Newest first, and `starting_after` walks towards older events. With `ending_before` (a
        sensor's cursor: the newest event already handled) the events *newer* than it are returned,
        oldest first.
        """
        if types is not None and len(types) > 20:
            raise ValueError(f"Stripe accepts at most 20 event types, got {len(types)}")
        params = {
            **_created_filter(created_gte, None),
            "starting_after": starting_after,
            "ending_before": ending_before,
            "types": list(types or []),
        }
        return self._paginate("/v1/events", params)

    def list_prices(self) -> Iterator[dict[str, Any]]:
        """Every price, active or archived (billing says when a mapped price is archived)."""
        return self._paginate("/v1/prices", {})

    def list_subscriptions(self, customer: str, status: str = "all") -> Iterator[dict[str, Any]]:
        """A customer's subscriptions; `all` includes canceled ones, which Stripe's default leaves out."""
        params = {"customer": customer, "status": status}
        return self._paginate("/v1/subscriptions", params)

    def list_invoice_items(self, invoice: str) -> Iterator[dict[str, Any]]:
        """The invoice items attached to an invoice."""
        return self._paginate("/v1/invoiceitems", {"invoice": invoice})

    def search_customers(self, query: str) -> Iterator[dict[str, Any]]:
        """Customers matching a search query, e.g. `metadata['salesforce_account_id']:'001...'`."""
        search = self.get_client().v1.customers.search
        params: dict[str, Any] = {"query": query, "limit": STRIPE_PAGE_SIZE}
        while True:
            page = self._call(lambda: search(dict(params)), "GET /v1/customers/search")
            yield from (item.to_dict() for item in page.data)
            if not page.has_more or not page.next_page:
                return
            params["page"] = page.next_page

    def retrieve_as_listed(self, collection: str, object_id: str, expand: Sequence[str] = ()) -> dict[str, Any] | None:
        """One object by id in the shape its list call gives (plain JSON, `expand` as the list's, its `data.`
        prefixes dropped), under the retry policy; None when Stripe has no such object (a deleted draft)."""
        path = f"/v1/{collection}/{object_id}"
        params = {"expand": [e.removeprefix("data.") for e in expand]} if expand else {}
        client = self.get_client()
        try:
            response = self._call(lambda: client.raw_request("get", path, **params), f"GET {path}")
        except stripe.InvalidRequestError as error:
            if error.code == "resource_missing":
                return None
            raise
        return json.loads(response.body)

    def retrieve_customer(self, customer_id: str, expand: Sequence[str] = ()) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.customers.retrieve, customer_id, expand, "customers")

    def retrieve_charge(self, charge_id: str, expand: Sequence[str] = ()) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.charges.retrieve, charge_id, expand, "charges")

    def retrieve_invoice(self, invoice_id: str, expand: Sequence[str] = ()) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.invoices.retrieve, invoice_id, expand, "invoices")

    def retrieve_balance_transaction(self, txn_id: str) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.balance_transactions.retrieve, txn_id, (), "balance_transactions")

    def retrieve_refund(self, refund_id: str) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.refunds.retrieve, refund_id, (), "refunds")

    def retrieve_credit_note(self, credit_note_id: str) -> dict[str, Any]:
        return self._retrieve(self.get_client().v1.credit_notes.retrieve, credit_note_id, (), "credit_notes")

    def retrieve_subscription(self, subscription_id: str, expand: Sequence[str] = ()) -> dict[str, Any]:
        subscriptions = self.get_client().v1.subscriptions
        return self._retrieve(subscriptions.retrieve, subscription_id, expand, "subscriptions")

    # -- writes (each with an explicit Idempotency-Key) -------------------------------------

    def create_customer(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        return self._write(self.get_client().v1.customers.create, params, idempotency_key, "POST /v1/customers")

    def create_subscription(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        subscriptions = self.get_client().v1.subscriptions
        return self._write(subscriptions.create, params, idempotency_key, "POST /v1/subscriptions")

    def create_invoice(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        return self._write(self.get_client().v1.invoices.create, params, idempotency_key, "POST /v1/invoices")

    def create_invoice_item(self, params: Mapping[str, Any], *, idempotency_key: str) -> dict[str, Any]:
        invoice_items = self.get_client().v1.invoice_items
        return self._write(invoice_items.create, params, idempotency_key, "POST /v1/invoiceitems")

    def finalize_invoice(
        self, invoice_id: str, *, idempotency_key: str, params: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        finalize = self.get_client().v1.invoices.finalize_invoice
        options = {"idempotency_key": _check_idempotency_key(idempotency_key)}
        invoice = self._call(
            lambda: finalize(invoice_id, dict(params or {}), options),  # type: ignore[arg-type]
            f"POST /v1/invoices/{invoice_id}/finalize",
        )
        return invoice.to_dict()

    # -- plumbing ----------------------------------------------------------------------------

    def _call(self, call: Callable[[], T], description: str) -> T:
        try:
            return call_with_retry(
                call, is_retryable, retry_after=_retry_after, policy=self._retry_policy, description=description
            )
        except stripe.StripeError as error:
            denied = access_denied(error, description)
            if denied is not None:
                raise denied from error
            raise

    def _retrieve(
        self, retrieve: Callable[..., Any], object_id: str, expand: Sequence[str], collection: str
    ) -> dict[str, Any]:
        params = {"expand": list(expand)} if expand else {}
        found = self._call(lambda: retrieve(object_id, params), f"GET /v1/{collection}/{object_id}")
        return found.to_dict()

    def _write(
        self, create: Callable[..., Any], params: Mapping[str, Any], idempotency_key: str, description: str
    ) -> dict[str, Any]:
        options = {"idempotency_key": _check_idempotency_key(idempotency_key)}
        # The same key on every attempt: a retried POST returns the first result, not a second object.
        created = self._call(lambda: create(dict(params), options), description)
        return created.to_dict()

    def _list_for_charge(
        self,
        path: str,
        charge: str | None,
        created_gte: Timestamp | None,
        created_lt: Timestamp | None,
    ) -> Iterator[dict[str, Any]]:
        params = {**_created_filter(created_gte, created_lt), "charge": charge}
        return self._paginate(path, params)

    def _paginate(self, path: str, params: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
        """Every object of a list endpoint, each page fetched under the retry policy.

        Cursors follow the direction asked for: `starting_after` (the default) pages towards older
        objects; `ending_before` pages towards newer ones and yields them oldest first.
        """
        query = {**_without_none(params), "limit": STRIPE_PAGE_SIZE}
        backwards = "ending_before" in query
        client = self.get_client()
        while True:
            # The SDK's raw request (same auth, pinned version, errors and base URL) parsed as plain JSON:
            # building StripeObjects for every nested, expanded object costs ~10x the request itself.
            response = self._call(lambda: client.raw_request("get", path, **dict(query)), f"GET {path}")
            page = json.loads(response.body)
            data = page.get("data") or []
            yield from (reversed(data) if backwards else data)
            if not page.get("has_more") or not data:
                return
            if backwards:
                query["ending_before"] = data[0]["id"]
            else:
                query["starting_after"] = data[-1]["id"]
