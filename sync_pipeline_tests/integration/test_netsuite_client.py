"""The NetSuite client over real HTTP (requests + OAuth1 / OAuth 2.0 M2M) against the NetSuite stand-in."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteError, NetSuiteResource, OAuth1Credentials
from sync_pipeline.resources.retry import RetryPolicy
from sync_pipeline.sandbox.netsuite import NetSuiteConfig, NetSuiteSandbox, generate_m2m_key_pair, start_netsuite
from sync_pipeline.sandbox.server import serve_in_thread

# Short waits keep fault tests quick; the attempt budget is what the defaults allow.
FAST_RETRIES = RetryPolicy(initial_wait=0.02, max_wait=0.5, max_attempts=12, max_seconds=60)
SUBSIDIARY_FOR_CURRENCY = {"1": "1", "3": "3", "4": "4"}  # USD -> parent, JPY -> Japan KK, KWD -> Kuwait WLL


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., NetSuiteSandbox]]:
    """Starts stand-ins with config knobs; each is stopped when the test ends."""
    with ExitStack() as running:
        yield lambda **config: running.enter_context(start_netsuite(NetSuiteConfig(**config)))


@pytest.fixture
def netsuite(start_sandbox) -> NetSuiteSandbox:
    return start_sandbox()


def resource_for(sandbox: NetSuiteSandbox, **overrides: Any) -> NetSuiteResource:
    env = sandbox.env()
    fields: dict[str, Any] = {
        "account_id": env["NETSUITE_ACCOUNT_ID"],
        "consumer_key": env["NETSUITE_CONSUMER_KEY"],
        "consumer_secret": env["NETSUITE_CONSUMER_SECRET"],
        "token_id": env["NETSUITE_TOKEN_ID"],
        "token_secret": env["NETSUITE_TOKEN_SECRET"],
        "base_url": env["NETSUITE_BASE_URL"],
        "concurrency": int(env["NETSUITE_CONCURRENCY"]),
    }
    return NetSuiteResource(**{**fields, **overrides})


def client_for(sandbox: NetSuiteSandbox, concurrency: int = 5, timeout_seconds: float = 30.0) -> NetSuiteClient:
    env = sandbox.env()
    credentials = OAuth1Credentials(
        *(env[f"NETSUITE_{name}"] for name in ("CONSUMER_KEY", "CONSUMER_SECRET", "TOKEN_ID", "TOKEN_SECRET"))
    )
    return NetSuiteClient(
        env["NETSUITE_ACCOUNT_ID"],
        oauth1=credentials,
        base_url=env["NETSUITE_BASE_URL"],
        concurrency=concurrency,
        timeout_seconds=timeout_seconds,
        retry_policy=FAST_RETRIES,
    )


def customer_body(name: str, currency: str = "1") -> dict[str, Any]:
    return {
        "companyName": name,
        "isPerson": False,
        "subsidiary": {"id": SUBSIDIARY_FOR_CURRENCY[currency]},
        "currency": {"id": currency},
    }


def upsert_customers(client: NetSuiteClient, count: int, threads: int) -> dict[str, str]:
    """Upsert `count` customers from `threads` threads; external id -> internal id the client returned."""
    external_ids = [f"stripe-cus_{n:04d}" for n in range(count)]
    with ThreadPoolExecutor(threads) as pool:
        ids = list(pool.map(lambda x: client.upsert("customer", x, customer_body(f"Customer {x}")), external_ids))
    return dict(zip(external_ids, ids, strict=True))


def assert_each_landed_once(sandbox: NetSuiteSandbox, returned: dict[str, str]) -> None:
    assert sandbox.state.count("customer") == len(returned)
    for external_id, internal_id in returned.items():
        assert sandbox.state.id_for_external_id("customer", external_id) == internal_id
    assert len(set(returned.values())) == len(returned)


def test_upsert_twice_makes_one_record_with_the_same_internal_id(netsuite):
    client = resource_for(netsuite).get_client()
    first = client.upsert("customer", "stripe-cus_A1", customer_body("Acme"))
    second = client.upsert("customer", "stripe-cus_A1", customer_body("Acme Renamed"))

    assert first == second
    assert netsuite.state.count("customer") == 1
    record = client.get("customer", "eid:stripe-cus_A1")
    assert record["id"] == first
    assert record["companyName"] == "Acme Renamed"
    assert record["externalId"] == "stripe-cus_A1"


def test_resource_gives_one_client_per_instance_so_threads_share_its_limit(netsuite):
    resource = resource_for(netsuite, concurrency=3)
    assert resource.get_client() is resource.get_client()
    assert resource.get_client().concurrency == 3


@pytest.mark.parametrize(
    ("currency", "rate", "quantity", "amount"),
    [
        # 17 significant digits: a float would send 12345678901234568.
        ("3", Decimal("12345678901234567"), Decimal("1"), Decimal("12345678901234567")),
        # KWD has 3 decimals; through a float this would arrive as ...409.94 or with noise digits.
        ("4", Decimal("30023997515803.310"), Decimal("3"), Decimal("90071992547409.930")),
        ("1", Decimal("0.10"), Decimal("3"), Decimal("0.30")),
    ],
    ids=["JPY", "KWD", "USD"],
)
def test_decimal_amounts_arrive_exact(netsuite, currency, rate, quantity, amount):
    client = client_for(netsuite)
    customer = client.upsert("customer", f"stripe-cus_{currency}", customer_body("Money Co", currency))
    invoice_body = {
        "entity": {"id": customer},
        "subsidiary": {"id": SUBSIDIARY_FOR_CURRENCY[currency]},
        "currency": {"id": currency},
        "tranDate": "2026-11-02",
        "item": {"items": [{"item": {"id": "101"}, "quantity": quantity, "rate": rate, "amount": amount}]},
    }
    invoice_id = client.upsert("invoice", f"stripe-in_{currency}", invoice_body)

    line = client.get("invoice", invoice_id, expand_sub_resources=True)["item"]["items"][0]
    assert Decimal(line["amount"]) == amount
    assert str(Decimal(line["amount"]).normalize()) == str(amount.normalize())
    stored_line = netsuite.state.get("invoice", invoice_id)["item"][0]
    assert stored_line["amount"] == amount
    assert stored_line["rate"] == rate


def test_lost_responses_still_land_every_upsert_exactly_once(start_sandbox):
    netsuite = start_sandbox(lost_response_rate=0.3, seed=7)
    client = client_for(netsuite)

    returned = upsert_customers(client, count=40, threads=5)

    assert_each_landed_once(netsuite, returned)
    assert netsuite.stats.faults["lost_response"] > 0
    assert client.counters.retries >= netsuite.stats.faults["lost_response"]


def test_server_errors_and_timeouts_are_retried(start_sandbox):
    netsuite = start_sandbox(error_rate=0.2, timeout_rate=0.1, timeout_seconds=2.0, seed=3)
    client = client_for(netsuite, timeout_seconds=0.5)

    returned = upsert_customers(client, count=30, threads=5)

    assert_each_landed_once(netsuite, returned)
    assert netsuite.stats.faults["error"] > 0 and netsuite.stats.faults["timeout"] > 0


@pytest.mark.parametrize("status", [429, 400])
def test_concurrency_limit_storm_still_lands_everything(start_sandbox, status):
    # The server allows 2 in flight, the client is configured for 5, and 10 threads push.
    netsuite = start_sandbox(concurrency_limit=2, concurrency_status=status, latency_ms=10)
    client = client_for(netsuite, concurrency=5)

    returned = upsert_customers(client, count=60, threads=10)

    assert_each_landed_once(netsuite, returned)
    assert netsuite.stats.concurrency_rejections > 0
    assert client.counters.retries >= netsuite.stats.concurrency_rejections


def test_client_limit_keeps_server_observed_concurrency_within_it(start_sandbox):
    netsuite = start_sandbox(concurrency_limit=50, latency_ms=20)
    client = client_for(netsuite, concurrency=3)

    returned = upsert_customers(client, count=30, threads=12)

    assert_each_landed_once(netsuite, returned)
    assert 2 <= netsuite.stats.peak_concurrency <= 3
    assert netsuite.stats.concurrency_rejections == 0
    counters = client.counters
    assert counters.peak_in_flight <= 3
    assert counters.requests == counters.writes == 30
    assert counters.retries == 0


def test_suiteql_follows_pages(netsuite):
    client = client_for(netsuite)
    returned = upsert_customers(client, count=25, threads=4)

    rows = list(client.suiteql("SELECT id, externalid FROM customer ORDER BY id", page_size=10))

    assert {row["externalid"] for row in rows} == set(returned)
    assert {str(row["id"]) for row in rows} == set(returned.values())
    assert netsuite.stats.suiteql_queries == 3
    assert all("links" not in row for row in rows)


def test_error_body_becomes_netsuite_error_with_code_detail_and_request(netsuite):
    client = client_for(netsuite)
    customer = client.upsert("customer", "stripe-cus_E1", customer_body("Errors Inc"))
    invoice_with_unknown_class = {
        "entity": {"id": customer},
        "subsidiary": {"id": "1"},
        "currency": {"id": "1"},
        "tranDate": "2026-11-02",
        "class": {"id": "99"},
        "item": {"items": [{"item": {"id": "101"}, "quantity": 1, "rate": Decimal("5.00")}]},
    }

    with pytest.raises(NetSuiteError) as raised:
        client.upsert("invoice", "stripe-in_E1", invoice_with_unknown_class)

    error = raised.value
    assert error.status == 400
    assert error.code == "INVALID_KEY_OR_REF"
    assert "class" in error.detail
    assert error.request == "PUT /services/rest/record/v1/invoice/eid:stripe-in_E1"
    assert error.path == (error.details[0].get("o:errorPath") if error.details else None)
    assert "INVALID_KEY_OR_REF" in str(error) and "eid:stripe-in_E1" in str(error)
    assert client.counters.retries == 0  # a validation error is not retried


def test_missing_record_is_a_404_netsuite_error(netsuite):
    client = client_for(netsuite)
    with pytest.raises(NetSuiteError) as raised:
        client.get("customer", "eid:stripe-cus_nobody")
    assert raised.value.status == 404
    client.delete("customer", "eid:stripe-cus_nobody", missing_ok=True)


def test_wrong_secret_is_access_denied_naming_the_variables_and_never_retried_or_repeated(netsuite):
    client = resource_for(netsuite, token_secret="not-the-secret").get_client()
    with pytest.raises(AccessDenied) as raised:
        client.upsert("customer", "stripe-cus_L1", customer_body("Login Ltd"))
    assert isinstance(raised.value.__cause__, NetSuiteError)
    assert (raised.value.__cause__.status, raised.value.__cause__.code) == (401, "INVALID_LOGIN")
    assert "NETSUITE_TOKEN_SECRET" in raised.value.line and "not-the-secret" not in raised.value.line
    assert client.counters.requests == 1
    # Refused once, refused always: the next request is not sent with the same credentials.
    with pytest.raises(AccessDenied):
        client.get("customer", "eid:stripe-cus_L1")
    assert client.counters.requests == 1


def test_secrets_stay_out_of_reprs_errors_and_logs(netsuite, caplog):
    env = netsuite.env()
    secrets = [
        env[name]
        for name in ("NETSUITE_CONSUMER_KEY", "NETSUITE_CONSUMER_SECRET", "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET")
    ]
    resource = resource_for(netsuite)
    client = resource.get_client()
    caplog.set_level(logging.DEBUG)

    client.upsert("customer", "stripe-cus_S1", customer_body("Secretive"))
    with pytest.raises(NetSuiteError) as raised:
        client.upsert("invoice", "stripe-in_S1", {"entity": {"id": "424242"}})

    shown = " ".join(
        [repr(resource), str(resource), repr(client), str(client), str(raised.value), repr(raised.value), caplog.text]
    )
    assert "NetSuiteClient(" in shown and env["NETSUITE_ACCOUNT_ID"] in shown
    for secret in secrets:
        assert secret not in shown
    assert "oauth_signature" not in caplog.text


def start_with_m2m(start_sandbox, algorithm: str, **config: Any) -> tuple[NetSuiteSandbox, NetSuiteResource, str]:
    """A stand-in that knows one M2M certificate, and a resource configured for OAuth 2.0 with its key."""
    private_pem, public_pem = generate_m2m_key_pair(algorithm)
    netsuite = start_sandbox(m2m_certificates={"cert-1": public_pem}, **config)
    resource = NetSuiteResource(
        account_id=netsuite.config.account_id,
        oauth2_client_id=netsuite.config.m2m_client_id,
        oauth2_certificate_id="cert-1",
        oauth2_private_key=private_pem,
        base_url=netsuite.url,
    )
    return netsuite, resource, private_pem


@pytest.mark.parametrize("algorithm", ["PS256", "ES256"])
def test_oauth2_machine_to_machine_token_is_fetched_once_and_reused(start_sandbox, algorithm):
    netsuite, resource, private_pem = start_with_m2m(start_sandbox, algorithm)
    client = resource.get_client()

    returned = upsert_customers(client, count=6, threads=3)

    assert client.auth_method == "oauth2-m2m"
    assert_each_landed_once(netsuite, returned)
    assert netsuite.stats.tokens_issued == 1
    assert private_pem not in repr(resource)


def test_oauth2_token_is_renewed_before_it_expires(start_sandbox):
    netsuite, resource, _ = start_with_m2m(start_sandbox, "PS256", access_token_seconds=2)
    client = resource.get_client()

    client.upsert("customer", "stripe-cus_T1", customer_body("Before"))
    time.sleep(1.2)  # past half of the token's 2 s life: renewed before use, never sent stale
    client.upsert("customer", "stripe-cus_T1", customer_body("After"))

    assert netsuite.stats.tokens_issued == 2
    assert netsuite.stats.auth_failures == 0
    assert client.get("customer", "eid:stripe-cus_T1")["companyName"] == "After"


def test_a_token_netsuite_ends_early_is_fetched_again_once_and_the_request_goes_through(start_sandbox):
    netsuite, resource, _ = start_with_m2m(start_sandbox, "PS256")
    client = resource.get_client()
    client.upsert("customer", "stripe-cus_R1", customer_body("Before"))

    netsuite.app.tokens.expire_all()  # revoked well before its announced hour is up
    client.upsert("customer", "stripe-cus_R1", customer_body("After"))

    assert netsuite.stats.tokens_issued == 2 and netsuite.stats.auth_failures == 1
    assert client.counters.retries == 1
    assert client.get("customer", "eid:stripe-cus_R1")["companyName"] == "After"


def test_a_second_401_after_a_new_token_stops_with_the_credentials_to_check(start_sandbox):
    netsuite, resource, _ = start_with_m2m(start_sandbox, "ES256", access_token_seconds=0)  # every token born dead

    with pytest.raises(AccessDenied) as denied:
        resource.get_client().upsert("customer", "stripe-cus_R2", customer_body("Never"))

    assert netsuite.stats.tokens_issued == 2, "one re-fetch, not a loop"
    assert "NETSUITE_CLIENT_ID" in str(denied.value) and "OAuth 2.0 Client Credentials (M2M) Setup" in str(denied.value)


def test_a_key_that_does_not_match_the_certificate_is_refused_at_the_token_endpoint(start_sandbox):
    netsuite, _, _ = start_with_m2m(start_sandbox, "PS256")
    wrong = NetSuiteResource(
        account_id=netsuite.config.account_id,
        oauth2_client_id=netsuite.config.m2m_client_id,
        oauth2_certificate_id="cert-1",
        oauth2_private_key=generate_m2m_key_pair("PS256")[0],
        base_url=netsuite.url,
    )

    with pytest.raises(AccessDenied) as denied:
        wrong.get_client().get("currency", "1")

    message = str(denied.value)
    assert "HTTP 401 invalid_client: client_assertion refused" in message
    assert "NETSUITE_PRIVATE_KEY" in message and "NETSUITE_CERTIFICATE_ID" in message
    assert netsuite.stats.tokens_issued == 0


def test_an_ec_key_on_p384_signs_es384(start_sandbox):
    netsuite, resource, _ = start_with_m2m(start_sandbox, "ES384")
    assert resource.get_client().get("currency", "1")["id"] == "1"
    assert netsuite.stats.tokens_issued == 1


def test_retry_after_is_honoured_when_a_server_sends_it():
    # NetSuite is not known to send Retry-After (the stand-in does not); a proxy in front of it may.
    answers = iter([429, 204])

    async def put(request: Request) -> Response:
        status = next(answers)
        if status == 429:
            return JSONResponse(
                {"status": 429, "o:errorDetails": [{"detail": "Slow down", "o:errorCode": "X"}]},
                status_code=429,
                headers={"Retry-After": "0.6"},
            )
        return Response(status_code=204, headers={"Location": f"{request.base_url}services/rest/record/v1/customer/7"})

    app = Starlette(routes=[Route("/services/rest/record/v1/customer/{key}", put, methods=["PUT"])])
    with serve_in_thread(app) as server:
        client = NetSuiteClient(
            "123456_SB1",
            oauth1=OAuth1Credentials("ck", "cs", "tk", "ts"),
            base_url=server.url,
            retry_policy=FAST_RETRIES,
        )
        started = time.monotonic()
        internal_id = client.upsert("customer", "stripe-cus_RA", customer_body("Patient"))
        waited = time.monotonic() - started

    assert internal_id == "7"
    assert client.counters.retries == 1
    assert waited >= 0.6  # FAST_RETRIES alone would have waited at most 0.02 s
