"""The NetSuite stand-in over real HTTP with the real client: requests + requests_oauthlib OAuth1 (HMAC-SHA256)."""

from __future__ import annotations

import dataclasses
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from requests_oauthlib import OAuth1

from sync_pipeline.sandbox.netsuite import (
    SANDBOX_M2M_CERTIFICATE_ID,
    NetSuiteConfig,
    NetSuiteSandbox,
    NetSuiteState,
    generate_m2m_certificate,
    generate_m2m_key_pair,
    start_netsuite,
)
from sync_pipeline.sandbox.netsuite.jsonio import dumps

RECORD = "/services/rest/record/v1"
SUITEQL = "/services/rest/query/v1/suiteql"
TOKEN = "/services/rest/auth/oauth2/v1/token"
CERTIFICATE_ID = "cert-ps256"
EC_CERTIFICATE_ID = "cert-es256"


# ---- fixtures and helpers -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def m2m_keys() -> dict[str, tuple[str, str]]:
    return {"PS256": generate_m2m_key_pair("PS256"), "ES256": generate_m2m_key_pair("ES256")}


@pytest.fixture(scope="module")
def m2m_config(m2m_keys) -> NetSuiteConfig:
    return NetSuiteConfig(
        m2m_certificates={CERTIFICATE_ID: m2m_keys["PS256"][1], EC_CERTIFICATE_ID: m2m_keys["ES256"][1]}
    )


@pytest.fixture(scope="module")
def server(m2m_config) -> Iterator[NetSuiteSandbox]:
    with start_netsuite(NetSuiteConfig(**dataclasses.asdict(m2m_config))) as sandbox:
        yield sandbox


@pytest.fixture
def netsuite(server, m2m_config) -> Iterator[NetSuiteSandbox]:
    """The module's server with empty state, zero counters and default knobs (through /_sandbox, over HTTP)."""
    requests.post(f"{server.url}/_sandbox/config", json=dataclasses.asdict(m2m_config), timeout=10).raise_for_status()
    requests.post(f"{server.url}/_sandbox/reset", timeout=10).raise_for_status()
    requests.post(f"{server.url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    yield server
    # A fault test may leave a request sleeping on the server; let it finish before the next test counts slots.
    deadline = time.monotonic() + 5
    while server.stats.in_flight and time.monotonic() < deadline:
        time.sleep(0.02)


def oauth1(env: dict[str, str], **changes: str) -> OAuth1:
    credentials = {
        "client_key": env["NETSUITE_CONSUMER_KEY"],
        "client_secret": env["NETSUITE_CONSUMER_SECRET"],
        "resource_owner_key": env["NETSUITE_TOKEN_ID"],
        "resource_owner_secret": env["NETSUITE_TOKEN_SECRET"],
        "realm": env["NETSUITE_ACCOUNT_ID"],
        **changes,
    }
    return OAuth1(signature_method="HMAC-SHA256", **credentials)


@pytest.fixture
def session(netsuite) -> Iterator[requests.Session]:
    with requests.Session() as http:
        http.auth = oauth1(netsuite.env())
        yield http


class Api:
    """Thin helpers over the signed session: URLs and the record bodies the tests use."""

    def __init__(self, http: requests.Session, url: str) -> None:
        self.http = http
        self.url = url

    def send(self, method: str, path: str, body: Any) -> requests.Response:
        """A JSON body with Decimal amounts written as exact JSON numbers (requests' json= cannot)."""
        return self.http.request(
            method,
            f"{self.url}{RECORD}/{path}",
            data=dumps(body),
            headers={"Content-Type": "application/json"},
            timeout=10,
        )

    def put(self, record_type: str, external_id: str, body: dict[str, Any]) -> requests.Response:
        return self.send("PUT", f"{record_type}/eid:{external_id}", body)

    def get(self, record_type: str, key: str, **params: str) -> requests.Response:
        return self.http.get(f"{self.url}{RECORD}/{record_type}/{key}", params=params, timeout=10)

    def upserted_id(self, record_type: str, external_id: str, body: dict[str, Any]) -> str:
        response = self.put(record_type, external_id, body)
        assert response.status_code == 204, response.text
        return response.headers["Location"].rsplit("/", 1)[1]

    def customer(self, external_id: str = "stripe-cus_1", subsidiary: str = "1", currency: str = "1") -> str:
        return self.upserted_id(
            "customer",
            external_id,
            {
                "companyName": f"Company {external_id}",
                "isPerson": False,
                "email": "ap@acme.test",
                "subsidiary": {"id": subsidiary},
                "currency": {"id": currency},
            },
        )

    def invoice_body(
        self, customer_id: str, lines: list[dict[str, Any]], currency: str = "1", subsidiary: str = "1", **extra: Any
    ) -> dict[str, Any]:
        return {
            "entity": {"id": customer_id},
            "subsidiary": {"id": subsidiary},
            "currency": {"id": currency},
            "tranDate": "2026-11-02",
            "item": {"items": lines},
            **extra,
        }

    def invoice(self, external_id: str, customer_id: str, amount: str = "100.00", **extra: Any) -> str:
        lines = [{"item": {"id": "101"}, "quantity": 1, "amount": Decimal(amount)}]
        return self.upserted_id("invoice", external_id, self.invoice_body(customer_id, lines, **extra))

    def payment_body(self, customer_id: str, amount: str, applications: list[tuple[str, str]]) -> dict[str, Any]:
        return {
            "customer": {"id": customer_id},
            "payment": Decimal(amount),
            "currency": {"id": "1"},
            "account": {"id": "1"},
            "tranDate": "2026-11-03",
            "apply": {
                "items": [
                    {"doc": {"id": doc}, "apply": True, "amount": Decimal(applied)} for doc, applied in applications
                ]
            },
        }

    def suiteql(self, query: str, limit: int = 1000, offset: int = 0) -> requests.Response:
        return self.http.post(
            f"{self.url}{SUITEQL}",
            params={"limit": limit, "offset": offset},
            json={"q": query},
            headers={"Prefer": "transient"},
            timeout=10,
        )

    def configure(self, **changes: Any) -> None:
        requests.post(f"{self.url}/_sandbox/config", json=changes, timeout=10).raise_for_status()


@pytest.fixture
def api(session, netsuite) -> Api:
    return Api(session, netsuite.url)


def decimal_json(response: requests.Response) -> Any:
    import json

    return json.loads(response.content, parse_float=Decimal)


def error_of(response: requests.Response) -> tuple[str, str]:
    detail = response.json()["o:errorDetails"][0]
    return detail["o:errorCode"], detail["detail"]


# ---- upserts, creates, external ids ------------------------------------------------------------
def test_upserting_one_external_id_twice_keeps_one_updated_record(api, netsuite):
    first = api.customer("stripe-cus_A")
    response = api.put("customer", "stripe-cus_A", {"companyName": "Acme Renamed", "subsidiary": {"id": "1"}})
    assert response.status_code == 204
    assert response.headers["Location"] == f"{netsuite.url}{RECORD}/customer/{first}"
    record = api.get("customer", "eid:stripe-cus_A").json()
    assert record["id"] == first and record["companyName"] == "Acme Renamed"
    assert record["email"] == "ap@acme.test"  # omitted on the second upsert, so unchanged
    assert netsuite.state.count("customer") == 1


def test_post_with_an_existing_external_id_is_refused(api):
    api.customer("stripe-cus_B")
    body = {"externalId": "stripe-cus_B", "companyName": "Again", "subsidiary": {"id": "1"}}
    response = api.send("POST", "customer", body)
    assert response.status_code == 400
    assert error_of(response)[1] == "This record already exists"


def test_post_creates_with_204_and_absolute_location(api, netsuite):
    response = api.http.post(
        f"{api.url}{RECORD}/customer", json={"companyName": "New", "subsidiary": {"id": "2"}}, timeout=10
    )
    assert response.status_code == 204 and response.content == b""
    assert response.headers["Location"].startswith(f"{netsuite.url}{RECORD}/customer/")
    assert api.get("customer", response.headers["Location"].rsplit("/", 1)[1]).json()["companyName"] == "New"


def test_external_id_with_a_colon_is_refused(api):
    response = api.put("customer", "stripe:cus_1", {"companyName": "X", "subsidiary": {"id": "1"}})
    assert response.status_code == 400
    assert "externalId" in error_of(response)[1]


def test_patch_keeps_omitted_fields_and_null_clears(api):
    customer_id = api.customer("stripe-cus_P")
    response = api.http.patch(
        f"{api.url}{RECORD}/customer/{customer_id}", json={"email": None, "phone": "+1 555"}, timeout=10
    )
    assert response.status_code == 204 and response.headers["Location"].endswith(f"/customer/{customer_id}")
    record = api.get("customer", customer_id).json()
    assert "email" not in record and record["phone"] == "+1 555" and record["companyName"] == "Company stripe-cus_P"


def test_delete_by_external_id_then_get_is_404(api):
    api.customer("stripe-cus_D")
    assert api.http.delete(f"{api.url}{RECORD}/customer/eid:stripe-cus_D", timeout=10).status_code == 204
    response = api.get("customer", "eid:stripe-cus_D")
    assert response.status_code == 404 and error_of(response)[0] == "NONEXISTENT_ID"


def test_get_renders_references_and_sublists(api, netsuite):
    customer_id = api.customer()
    invoice_id = api.invoice("stripe-in_R", customer_id, department={"id": "3"})
    plain = api.get("invoice", invoice_id).json()
    assert plain["department"] == {
        "links": [{"rel": "self", "href": f"{netsuite.url}{RECORD}/department/3"}],
        "id": "3",
        "refName": "Subscriptions",
    }
    assert plain["entity"]["refName"] == "Company stripe-cus_1"
    assert "items" not in plain["item"] and plain["item"]["links"][0]["href"].endswith(f"/invoice/{invoice_id}/item")
    expanded = api.get("invoice", invoice_id, expandSubResources="true").json()
    assert expanded["item"]["items"][0]["item"]["refName"] == "Pro plan"


def test_reference_lists_are_readable(api):
    subsidiary = api.get("subsidiary", "3").json()
    assert subsidiary["name"] == "Japan KK" and subsidiary["currency"]["refName"] == "JPY"
    assert api.get("classification", "9").json()["isInactive"] is True
    assert api.http.post(f"{api.url}{RECORD}/currency", json={"name": "CHF"}, timeout=10).status_code == 403


def test_references_by_external_id(api):
    api.customer("stripe-cus_E")
    invoice_id = api.upserted_id(
        "invoice",
        "stripe-in_E",
        api.invoice_body("0", [{"item": {"id": "100"}, "amount": 5}], entity={"externalId": "stripe-cus_E"}),
    )
    assert api.get("invoice", invoice_id).json()["entity"]["refName"] == "Company stripe-cus_E"


def test_transform_invoice_into_credit_memo_and_read_a_sublist(api):
    customer_id = api.customer()
    invoice_id = api.invoice("stripe-in_T", customer_id, "70.00")
    response = api.send("POST", f"invoice/{invoice_id}/!transform/creditMemo", {"externalId": "stripe-cn_T"})
    assert response.status_code == 204
    memo = decimal_json(api.get("creditMemo", response.headers["Location"].rsplit("/", 1)[1]))
    assert memo["externalId"] == "stripe-cn_T" and memo["createdFrom"]["id"] == invoice_id
    assert memo["total"] == Decimal("70.00") and memo["applied"] == Decimal("70.00")
    lines = api.get("creditMemo", "eid:stripe-cn_T/item").json()
    assert [line["item"]["id"] for line in lines["items"]] == ["101"]
    assert api.get("invoice", invoice_id).json()["status"]["refName"] == "Paid In Full"


def test_opaque_list_fields_survive_a_second_upsert(api):
    body = {"companyName": "Tags", "subsidiary": {"id": "1"}, "customTags": ["a", "b"]}
    api.upserted_id("customer", "stripe-cus_T", body)
    customer_id = api.upserted_id("customer", "stripe-cus_T", {"email": "t@tags.test"})
    assert api.get("customer", customer_id).json()["customTags"] == ["a", "b"]


# ---- authentication ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "change",
    [
        {"client_secret": "not-the-consumer-secret"},
        {"resource_owner_secret": "not-the-token-secret"},
        {"realm": "123456"},
        {"realm": "123456-sb1"},
        {"resource_owner_key": "unknown-token"},
        {"client_key": "unknown-consumer"},
    ],
)
def test_bad_credentials_get_invalid_login(netsuite, change):
    response = requests.get(f"{netsuite.url}{RECORD}/currency/1", auth=oauth1(netsuite.env(), **change), timeout=10)
    assert response.status_code == 401
    assert response.json() == {
        "type": "https://www.rfc-editor.org/rfc/rfc9110.html#section-15.5.2",
        "title": "Unauthorized",
        "status": 401,
        "o:errorDetails": [
            {
                "detail": "Invalid login attempt. For more details, see the Login Audit Trail in the NetSuite UI at "
                "Setup > Users/Roles > User Management > View Login Audit Trail.",
                "o:errorCode": "INVALID_LOGIN",
            }
        ],
    }


def test_unsigned_request_is_refused(netsuite):
    assert requests.get(f"{netsuite.url}{RECORD}/currency/1", timeout=10).status_code == 401


def test_signed_query_string_and_json_body_verify(api):
    # A query string and a JSON body (oauthlib adds oauth_body_hash) are both part of what is verified.
    customer_id = api.customer("stripe-cus_Q")
    assert api.get("customer", customer_id, expandSubResources="true", fields="a b:c").status_code == 200


def test_a_replayed_request_is_refused(netsuite):
    prepared = requests.Request("GET", f"{netsuite.url}{RECORD}/currency/1", auth=oauth1(netsuite.env())).prepare()
    with requests.Session() as http:
        assert http.send(prepared, timeout=10).status_code == 200
        assert http.send(prepared, timeout=10).status_code == 401


@pytest.mark.parametrize(
    "url, body",
    [
        ("http://127.0.0.1:8080/services/rest/record/v1/customer/eid:stripe-cus_1?expandSubResources=true", None),
        ("HTTP://LocalHost:80/a%20b/c?q=%C3%BC&q=a%2Bb&empty=&z=~x", None),
        ("https://123456-sb1.suitetalk.api.netsuite.com:443/services/rest/query/v1/suiteql?limit=2&offset=4", None),
        ("http://127.0.0.1:9/services/rest/auth/oauth2/v1/token", "grant_type=client_credentials&scope=a+b%21"),
    ],
)
def test_local_signature_base_string_equals_oauthlibs(url, body):
    from urllib.parse import urlsplit

    from oauthlib.oauth1 import Client
    from oauthlib.oauth1.rfc5849 import signature

    from sync_pipeline.sandbox.netsuite.auth import base_uri_prefix, parse_oauth_header, signature_base_string

    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    client = Client(
        "ck/+ü",
        client_secret="cs",
        resource_owner_key="tk=1",
        resource_owner_secret="ts",
        signature_method="HMAC-SHA256",
        realm="123456_SB1",
    )
    _, signed_headers, _ = client.sign(url, "POST", body=body, headers=headers)
    authorization = signed_headers["Authorization"]
    parts = urlsplit(url)
    expected_params = signature.collect_parameters(
        uri_query=parts.query, body=body or [], headers={"Authorization": authorization}
    )
    expected = signature.signature_base_string(
        "POST", signature.base_string_uri(url), signature.normalize_parameters(expected_params)
    )
    header = [(k, v) for k, v in parse_oauth_header(authorization) if k not in ("realm", "oauth_signature")]
    request_params = signature.collect_parameters(uri_query=parts.query, body=body or [])
    local = signature_base_string(
        "POST", base_uri_prefix(parts.scheme.lower(), parts.netloc) + parts.path, header + request_params
    )
    assert local == expected


def client_assertion(private_pem: str, algorithm: str, kid: str, token_url: str, **changes: Any) -> str:
    now = int(time.time())
    claims = {
        "iss": "sandbox-m2m-client-id",
        "scope": "rest_webservices",
        "aud": token_url,
        "iat": now,
        "exp": now + 3600,
        **changes,
    }
    return jwt.encode(claims, private_pem, algorithm=algorithm, headers={"kid": kid})


def request_token(netsuite: NetSuiteSandbox, assertion: str) -> requests.Response:
    return requests.post(
        f"{netsuite.url}{TOKEN}",
        timeout=10,
        data={
            "grant_type": "client_credentials",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion,
        },
    )


@pytest.mark.parametrize("algorithm, kid", [("PS256", CERTIFICATE_ID), ("ES256", EC_CERTIFICATE_ID)])
def test_oauth2_client_credentials_give_a_working_bearer_token(netsuite, m2m_keys, algorithm, kid):
    assertion = client_assertion(m2m_keys[algorithm][0], algorithm, kid, f"{netsuite.url}{TOKEN}")
    response = request_token(netsuite, assertion)
    assert response.status_code == 200, response.text
    token = response.json()
    # As NetSuite's sample answer: "Bearer", and expires_in as the string "3600".
    assert token["token_type"] == "Bearer" and token["expires_in"] == "3600"
    bearer = {"Authorization": f"Bearer {token['access_token']}"}
    put = requests.put(
        f"{netsuite.url}{RECORD}/customer/eid:m2m-1",
        headers=bearer,
        timeout=10,
        json={"companyName": "Via M2M", "subsidiary": {"id": "1"}},
    )
    assert put.status_code == 204
    query = requests.post(
        f"{netsuite.url}{SUITEQL}",
        headers={**bearer, "Prefer": "transient"},
        timeout=10,
        json={"q": "SELECT companyname FROM customer WHERE externalid = 'm2m-1'"},
    )
    assert query.json()["items"][0]["companyname"] == "Via M2M"


@pytest.mark.parametrize("problem", ["other key", "wrong aud", "no scope", "too long", "unknown kid", "RS256"])
def test_a_bad_client_assertion_gets_no_token(netsuite, m2m_keys, problem):
    token_url = f"{netsuite.url}{TOKEN}"
    key, algorithm, kid, changes = m2m_keys["PS256"][0], "PS256", CERTIFICATE_ID, {}
    if problem == "other key":
        key = generate_m2m_key_pair("PS256")[0]
    elif problem == "wrong aud":
        changes = {"aud": "https://123456-sb1.suitetalk.api.netsuite.com" + TOKEN}
    elif problem == "no scope":
        changes = {"scope": "restlets"}
    elif problem == "too long":
        changes = {"exp": int(time.time()) + 7200}
    elif problem == "unknown kid":
        kid = "cert-unknown"
    else:
        algorithm = "RS256"
    response = request_token(netsuite, client_assertion(key, algorithm, kid, token_url, **changes))
    assert response.status_code in (400, 401)
    assert "access_token" not in response.json()
    bogus = requests.get(f"{netsuite.url}{RECORD}/currency/1", headers={"Authorization": "Bearer made-up"}, timeout=10)
    assert bogus.status_code == 401 and error_of(bogus)[0] == "INVALID_LOGIN"


@pytest.mark.parametrize("algorithm", ["PS384", "PS512", "ES384", "ES512"])
def test_every_algorithm_netsuite_documents_is_verified_against_an_uploaded_certificate(netsuite, algorithm):
    private_pem, certificate_pem = generate_m2m_certificate(algorithm)
    netsuite.config.update({"m2m_certificates": {"cert-x509": certificate_pem}})
    token_url = f"{netsuite.url}{TOKEN}"

    good = request_token(netsuite, client_assertion(private_pem, algorithm, "cert-x509", token_url))
    forged = request_token(
        netsuite, client_assertion(generate_m2m_certificate(algorithm)[0], algorithm, "cert-x509", token_url)
    )

    assert good.status_code == 200, good.text
    assert forged.status_code == 401 and forged.json()["error"] == "invalid_client"


@pytest.mark.parametrize(
    "scope, accepted",
    [
        ("restlets,rest_webservices", True),
        (["restlets", "rest_webservices"], True),  # the JSON list of NetSuite's own sample
        ("rest_webservices suite_analytics", True),
        ("restlets", False),
        ("rest_webservices,admin", False),
    ],
)
def test_the_assertion_scope_must_name_rest_webservices(netsuite, m2m_keys, scope, accepted):
    token_url = f"{netsuite.url}{TOKEN}"
    response = request_token(
        netsuite, client_assertion(m2m_keys["PS256"][0], "PS256", CERTIFICATE_ID, token_url, scope=scope)
    )
    assert (response.status_code == 200) is accepted, response.text


@pytest.mark.parametrize("claim", ["exp", "iat", "iss"])
def test_an_assertion_expired_from_the_future_or_of_another_client_gets_no_token(netsuite, m2m_keys, claim):
    now = int(time.time())
    changes = {
        "exp": {"iat": now - 600, "exp": now - 300},
        "iat": {"iat": now + 600, "exp": now + 900},
        "iss": {"iss": "another-client-id"},
    }[claim]
    token_url = f"{netsuite.url}{TOKEN}"
    response = request_token(
        netsuite, client_assertion(m2m_keys["PS256"][0], "PS256", CERTIFICATE_ID, token_url, **changes)
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


def test_expired_bearer_tokens_get_netsuites_401_until_a_new_one_is_fetched(netsuite, m2m_keys):
    token_url = f"{netsuite.url}{TOKEN}"

    def fresh_token() -> dict[str, str]:
        answer = request_token(netsuite, client_assertion(m2m_keys["PS256"][0], "PS256", CERTIFICATE_ID, token_url))
        return {"Authorization": f"Bearer {answer.json()['access_token']}"}

    bearer = fresh_token()
    assert requests.get(f"{netsuite.url}{RECORD}/currency/1", headers=bearer, timeout=10).status_code == 200

    expired = requests.post(f"{netsuite.url}/_sandbox/oauth2/expire_tokens", timeout=10).json()
    refused = requests.get(f"{netsuite.url}{RECORD}/currency/1", headers=bearer, timeout=10)
    query = requests.post(
        f"{netsuite.url}{SUITEQL}",
        headers={**bearer, "Prefer": "transient"},
        json={"q": "SELECT id FROM currency"},
        timeout=10,
    )

    assert expired == {"expired": 1}
    assert refused.status_code == 401 and error_of(refused)[0] == "INVALID_LOGIN"
    assert refused.json()["title"] == "Unauthorized" and query.status_code == 401
    assert requests.get(f"{netsuite.url}{RECORD}/currency/1", headers=fresh_token(), timeout=10).status_code == 200


def test_an_m2m_stand_in_hands_the_pipeline_m2m_variables_and_maps_their_certificate(tmp_path):
    key_file = tmp_path / "keys" / "m2m.pem"
    with start_netsuite(pipeline_auth="m2m", m2m_key_file=str(key_file)) as netsuite:
        env = netsuite.env()
        first_certificate = netsuite.config.m2m_certificates[SANDBOX_M2M_CERTIFICATE_ID]
    assert not any(name in env for name in ("NETSUITE_CONSUMER_KEY", "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET"))
    assert env["NETSUITE_CERTIFICATE_ID"] == SANDBOX_M2M_CERTIFICATE_ID
    assert env["NETSUITE_PRIVATE_KEY_FILE"] == str(key_file) and key_file.stat().st_mode & 0o077 == 0
    assert first_certificate.startswith("-----BEGIN CERTIFICATE-----")
    # A persistent sandbox keeps its key: the pipeline's NETSUITE_PRIVATE_KEY_FILE stays valid after a restart.
    with start_netsuite(pipeline_auth="m2m", m2m_key_file=str(key_file)) as again:
        token_url = f"{again.url}{TOKEN}"
        assertion = client_assertion(key_file.read_text(), "PS256", SANDBOX_M2M_CERTIFICATE_ID, token_url)
        assert request_token(again, assertion).status_code == 200
    with start_netsuite(pipeline_auth="m2m") as scratch:
        scratch_key = Path(scratch.env()["NETSUITE_PRIVATE_KEY_FILE"])
        assert scratch_key.exists()
    assert not scratch_key.exists(), "a temporary key is removed with the stand-in"


# ---- the account's rules -------------------------------------------------------------------------
def test_an_account_mandatory_department_gives_netsuites_user_error(api):
    customer_id = api.customer()
    api.configure(mandatory_fields={"invoice": ["department"]})
    response = api.put("invoice", "stripe-in_M", api.invoice_body(customer_id, [{"item": {"id": "101"}, "amount": 5}]))
    assert response.status_code == 400
    assert error_of(response) == (
        "USER_ERROR",
        "Error while accessing a resource. Please enter value(s) for: Department.",
    )
    with_department = api.invoice_body(customer_id, [{"item": {"id": "101"}, "amount": 5}], department={"id": "3"})
    assert api.put("invoice", "stripe-in_M", with_department).status_code == 204


def test_missing_required_fields_are_all_named(api):
    response = api.put("customer", "stripe-cus_R", {"email": "x@y.test"})
    assert error_of(response) == (
        "USER_ERROR",
        "Error while accessing a resource. Please enter value(s) for: Company Name, Subsidiary.",
    )
    invoice = api.put("invoice", "stripe-in_noline", api.invoice_body(api.customer(), []))
    assert error_of(invoice)[1] == "You must enter at least one line item for this transaction."


@pytest.mark.parametrize("reference, value", [("class", "99"), ("class", "9"), ("department", "4"), ("location", "7")])
def test_missing_or_inactive_reference_is_invalid_key_or_ref(api, reference, value):
    body = api.invoice_body(api.customer(), [{"item": {"id": "101"}, "amount": 5}], **{reference: {"id": value}})
    response = api.put("invoice", "stripe-in_X", body)
    assert response.status_code == 400
    assert error_of(response) == (
        "INVALID_KEY_OR_REF",
        f"Invalid Field Value {value} for the following field: {reference}",
    )


def test_transaction_currency_must_be_allowed_for_the_customers_subsidiary(api):
    japan_customer = api.customer("stripe-cus_JP", subsidiary="3", currency="3")
    body = api.invoice_body(japan_customer, [{"item": {"id": "101"}, "amount": 5}], currency="2", subsidiary="3")
    response = api.put("invoice", "stripe-in_EUR", body)
    assert response.status_code == 400
    assert "Currency EUR is not allowed for subsidiary 3 (Japan KK)" in error_of(response)[1]


# ---- money ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "currency, subsidiary, lines, expected",
    [
        ("1", "1", [(3, "33.335"), (1, "-10.00"), (2, "0.125")], Decimal("90.26")),  # 100.01 - 10.00 + 0.25
        ("3", "3", [(3, "333.5"), (1, "1200")], Decimal("2201")),  # JPY: no minor unit, 1000.5 rounds half up
        # KWD: NetSuite holds two decimals only, so 3.7035 + 0.0005 -> 3.70 + 0.00
        ("4", "4", [(3, "1.2345"), (1, "0.0005")], Decimal("3.70")),
    ],
)
def test_invoice_total_is_computed_from_lines_to_the_minor_unit(api, currency, subsidiary, lines, expected):
    customer_id = api.customer(f"stripe-cus_{currency}", subsidiary=subsidiary, currency=currency)
    items = [{"item": {"id": "101"}, "quantity": quantity, "rate": Decimal(rate)} for quantity, rate in lines]
    invoice_id = api.upserted_id(
        "invoice",
        f"stripe-in_{currency}",
        api.invoice_body(customer_id, items, currency=currency, subsidiary=subsidiary),
    )
    record = decimal_json(api.get("invoice", invoice_id))
    assert record["total"] == expected and record["amountRemaining"] == expected
    assert str(record["total"]) == str(expected)  # rendered with the currency's precision, not as a float
    row = api.suiteql(f"SELECT foreigntotal FROM transaction WHERE id = {invoice_id}").json()["items"][0]
    assert Decimal(row["foreigntotal"]) == expected


def test_payment_cannot_over_apply_and_reupserting_does_not_double_apply(api):
    customer_id = api.customer()
    invoice_id = api.invoice("stripe-in_P", customer_id, "100.00")
    over = api.put(
        "customerPayment", "stripe-ch_over", api.payment_body(customer_id, "150.00", [(invoice_id, "150.00")])
    )
    assert over.status_code == 400 and "amount remaining is 100.00" in error_of(over)[1]
    for _ in range(2):
        api.upserted_id(
            "customerPayment", "stripe-ch_1", api.payment_body(customer_id, "60.00", [(invoice_id, "60.00")])
        )
    invoice = decimal_json(api.get("invoice", invoice_id))
    assert invoice["amountRemaining"] == Decimal("40.00") and invoice["status"]["refName"] == "Open"
    second = api.put("customerPayment", "stripe-ch_2", api.payment_body(customer_id, "50.00", [(invoice_id, "50.00")]))
    assert second.status_code == 400
    api.upserted_id("customerPayment", "stripe-ch_2", api.payment_body(customer_id, "40.00", [(invoice_id, "40.00")]))
    paid = api.get("invoice", invoice_id).json()
    assert paid["status"] == {"id": "B", "refName": "Paid In Full"} and Decimal(str(paid["amountRemaining"])) == 0


def test_suiteql_answers_from_the_records_as_they_are_after_every_write(api, netsuite):
    """SuiteQL's table rows are built once per change of the records: each write, update, duplicate or delete
    between two queries shows in the second (amount remaining included, derived from other records)."""
    customer_id = api.customer()
    invoice_id = api.invoice("stripe-in_Q", customer_id, "100.00")
    query = "SELECT externalid, foreignamountremaining FROM transaction WHERE type = 'CustInvc' ORDER BY externalid"

    def remaining() -> list[tuple[str, Decimal]]:
        rows = api.suiteql(query).json()["items"]
        return [(row["externalid"], Decimal(str(row["foreignamountremaining"]))) for row in rows]

    assert remaining() == [("stripe-in_Q", Decimal("100.00"))]
    assert remaining() == [("stripe-in_Q", Decimal("100.00"))]  # the same rows, answered again
    api.upserted_id("customerPayment", "stripe-ch_Q", api.payment_body(customer_id, "60.00", [(invoice_id, "60.00")]))
    assert remaining() == [("stripe-in_Q", Decimal("40.00"))]
    api.invoice("stripe-in_R", customer_id, "10.00")
    assert remaining() == [("stripe-in_Q", Decimal("40.00")), ("stripe-in_R", Decimal("10.00"))]
    netsuite.state.duplicate("invoice", "eid:stripe-in_R")
    assert [eid for eid, _ in remaining()] == ["stripe-in_Q", "stripe-in_R", "stripe-in_R"]
    assert api.http.delete(f"{api.url}{RECORD}/customerPayment/eid:stripe-ch_Q", timeout=10).status_code == 204
    assert remaining()[0] == ("stripe-in_Q", Decimal("100.00"))


def test_latency_is_the_response_time_with_the_work_inside_it(api):
    """`latency_ms` is how long NetSuite takes to answer, its own work included: never faster, and the stand-in's
    processing is not added on top of it (so `limit / latency` is the ceiling a client can reach)."""
    customer_id = api.customer()
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(lambda n: api.invoice(f"stripe-in_L{n}", customer_id, "1.00"), range(3000)))
    query = "SELECT id, foreignamountremaining, status FROM transaction WHERE type = 'CustInvc'"

    def timed_read_after_a_write(number: int) -> float:
        api.customer(f"stripe-cus_L{number}")  # a write: the read rebuilds its rows (the stand-in's work)
        started = time.perf_counter()
        assert api.suiteql(query, limit=5).status_code == 200
        return time.perf_counter() - started

    api.configure(latency_ms=0)
    work = statistics.median(timed_read_after_a_write(n) for n in range(5))
    assert work > 0.02, f"the read should take the stand-in some work: {work:.3f} s"
    api.configure(latency_ms=60)
    timings = [timed_read_after_a_write(n) for n in range(5, 10)]
    assert min(timings) >= 0.060, timings
    # Added on top, the median would be about 60 ms + the work.
    assert statistics.median(timings) < 0.060 + work / 2 + 0.010, (work, timings)


def test_credit_memo_applies_to_an_open_invoice_and_stays_credit_on_a_paid_one(api):
    customer_id = api.customer()
    open_invoice = api.invoice("stripe-in_open", customer_id, "100.00")
    paid_invoice = api.invoice("stripe-in_paid", customer_id, "80.00")
    api.upserted_id("customerPayment", "stripe-ch_P", api.payment_body(customer_id, "80.00", [(paid_invoice, "80.00")]))

    def credit_memo(external_id: str, invoice_id: str, amount: str) -> dict[str, Any]:
        api.upserted_id(
            "creditMemo",
            external_id,
            {
                "entity": {"id": customer_id},
                "currency": {"id": "1"},
                "tranDate": "2026-11-05",
                "createdFrom": {"id": invoice_id},
                "item": {"items": [{"item": {"id": "101"}, "amount": Decimal(amount)}]},
            },
        )
        return decimal_json(api.get("creditMemo", f"eid:{external_id}"))

    applied = credit_memo("stripe-cn_1", open_invoice, "30.00")
    assert applied["applied"] == Decimal("30.00") and applied["unapplied"] == Decimal("0.00")
    assert decimal_json(api.get("invoice", open_invoice))["amountRemaining"] == Decimal("70.00")
    credit = credit_memo("stripe-cn_2", paid_invoice, "25.00")
    assert credit["applied"] == Decimal("0") and credit["unapplied"] == Decimal("25.00")

    def refund(amount: str) -> requests.Response:
        return api.put(
            "customerRefund",
            "stripe-re_1",
            {
                "customer": {"id": customer_id},
                "currency": {"id": "1"},
                "tranDate": "2026-11-06",
                "apply": {"items": [{"doc": {"externalId": "stripe-cn_2"}, "apply": True, "amount": Decimal(amount)}]},
            },
        )

    assert refund("25.01").status_code == 400
    assert refund("25.00").status_code == 204
    assert decimal_json(api.get("creditMemo", "eid:stripe-cn_2"))["unapplied"] == Decimal("0.00")


def test_deposit_gathers_payments_with_fee_lines_once(api):
    customer_id = api.customer()
    invoice_id = api.invoice("stripe-in_D", customer_id, "100.00")
    payment_id = api.upserted_id(
        "customerPayment", "stripe-ch_D", api.payment_body(customer_id, "100.00", [(invoice_id, "100.00")])
    )
    body = {
        "account": {"id": "10"},
        "currency": {"id": "1"},
        "tranDate": "2026-11-07",
        "payment": {"items": [{"id": payment_id, "deposit": True}]},
        "cashback": {"items": [{"account": {"id": "60"}, "amount": Decimal("3.20"), "memo": "Stripe fees"}]},
    }
    deposit_id = api.upserted_id("deposit", "stripe-po_1", body)
    assert decimal_json(api.get("deposit", deposit_id))["total"] == Decimal("96.80")
    assert api.get("customerPayment", payment_id).json()["status"]["refName"] == "Deposited"
    again = api.put("deposit", "stripe-po_2", body)  # the payment is already deposited
    assert error_of(again)[0] == "INVALID_KEY_OR_REF" and "has already been deposited" in error_of(again)[1]
    not_a_bank = api.put("deposit", "stripe-po_3", {**body, "account": {"id": "60"}})
    assert error_of(not_a_bank) == ("INVALID_KEY_OR_REF", "Invalid Field Value 60 for the following field: account")


def test_journal_entry_must_balance(api):
    def journal(credit: str) -> requests.Response:
        return api.put(
            "journalEntry",
            "stripe-je_1",
            {
                "subsidiary": {"id": "1"},
                "line": {
                    "items": [
                        {"account": {"id": "60"}, "debit": Decimal("1.87")},
                        {"account": {"id": "10"}, "credit": Decimal(credit)},
                    ]
                },
            },
        )

    assert "Out of Balance" in error_of(journal("1.86"))[1]
    assert journal("1.87").status_code == 204


# ---- governance and faults ----------------------------------------------------------------------
def test_concurrency_limit_refuses_the_excess_at_once(api, netsuite):
    api.configure(concurrency_limit=5, latency_ms=100)
    env = netsuite.env()

    def one_get(_: int) -> requests.Response:
        with requests.Session() as http:
            return http.get(f"{netsuite.url}{RECORD}/currency/1", auth=oauth1(env), timeout=10)

    with ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(one_get, range(20)))
    statuses = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert statuses.count(200) >= 5 and refused, statuses
    assert error_of(refused[0]) == ("CONCURRENCY_LIMIT_EXCEEDED", "Concurrent request limit exceeded. Request blocked.")
    stats = requests.get(f"{netsuite.url}/_sandbox/stats", timeout=10).json()
    assert 1 <= stats["peak_concurrency"] <= 5
    assert stats["concurrency_rejections"] == len(refused)
    assert stats["by_method"]["GET"]["429"] == len(refused)


def test_hold_writes_after_lets_exactly_that_many_writes_through_until_it_is_cleared(api, netsuite):
    customer_id = api.customer("stripe-cus_H")
    api.configure(hold_writes_after=2)
    env = netsuite.env()

    def one_invoice(number: int) -> int:
        with requests.Session() as http:
            http.auth = oauth1(env)
            body = api.invoice_body(customer_id, [{"item": {"id": "101"}, "quantity": 1, "amount": Decimal("5.00")}])
            return Api(http, netsuite.url).put("invoice", f"stripe-in_H{number}", body).status_code

    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = [pool.submit(one_invoice, n) for n in range(3)]
        deadline = time.monotonic() + 10
        while netsuite.stats.writes_held < 2:  # the customer and one invoice got through; two invoices wait
            assert time.monotonic() < deadline, "two writes should be held"
            time.sleep(0.01)
        assert (netsuite.stats.writes_applied, netsuite.state.count("invoice")) == (2, 1)
        api.configure(hold_writes_after=0)
        statuses = [answer.result(timeout=10) for answer in answers]

    assert statuses == [204, 204, 204] and netsuite.state.count("invoice") == 3
    assert netsuite.stats.writes_held == 0


def test_a_lost_response_write_is_visible_on_the_next_get(api):
    customer_id = api.customer()
    api.configure(lost_response_rate=1.0)
    with pytest.raises((requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError)):
        api.invoice("stripe-in_lost", customer_id, "12.34")
    api.configure(lost_response_rate=0.0)
    record = decimal_json(api.get("invoice", "eid:stripe-in_lost"))
    assert record["total"] == Decimal("12.34")


def test_error_faults_hit_rest_paths_only(api, netsuite):
    api.configure(error_rate=1.0)
    response = api.get("currency", "1")
    assert response.status_code == 500 and error_of(response)[0] == "UNEXPECTED_ERROR"
    stats = requests.get(f"{netsuite.url}/_sandbox/stats", timeout=10)
    assert stats.status_code == 200 and stats.json()["faults"]["error"] == 1


def test_timeout_fault_holds_the_answer(api):
    api.configure(timeout_rate=1.0, timeout_seconds=0.5)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.http.get(f"{api.url}{RECORD}/currency/1", timeout=0.1)


# ---- SuiteQL --------------------------------------------------------------------------------------
def test_suiteql_external_id_in_pages_through_results(api):
    customer_id = api.customer()
    external_ids = [f"stripe-in_{n}" for n in range(5)]
    ids = [api.invoice(external_id, customer_id, f"{n + 1}.50") for n, external_id in enumerate(external_ids)]
    api.invoice("stripe-in_other", customer_id)
    quoted = ", ".join(f"'{e}'" for e in external_ids)
    query = (
        "SELECT id, externalid, foreigntotal FROM transaction "
        f"WHERE type = 'CustInvc' AND externalid IN ({quoted}) ORDER BY id"
    )
    pages, offset = [], 0
    while True:
        page = api.suiteql(query, limit=2, offset=offset).json()
        pages.append(page)
        if not page["hasMore"]:
            break
        offset += page["count"]
    assert [p["offset"] for p in pages] == [0, 2, 4]
    assert [p["count"] for p in pages] == [2, 2, 1] and {p["totalResults"] for p in pages} == {5}
    assert [p["hasMore"] for p in pages] == [True, True, False]
    rows = [item for p in pages for item in p["items"]]
    assert [r["id"] for r in rows] == ids and [r["externalid"] for r in rows] == external_ids
    assert rows[0]["foreigntotal"] == "1.5"
    assert any(link["rel"] == "next" for link in pages[0]["links"])
    count = api.suiteql("SELECT COUNT(*) AS n FROM transaction WHERE externalid LIKE 'stripe-in_%'").json()
    assert count["items"][0]["n"] == "6"


def test_suiteql_filters_and_orders(api):
    customer_id = api.customer()
    for n, amount in enumerate(["5.00", "50.00", "500.00"]):
        api.invoice(f"stripe-in_F{n}", customer_id, amount)
    rows = api.suiteql(
        "SELECT t.externalid FROM transaction t WHERE t.foreigntotal >= 50 AND trandate <= TO_DATE('2026-11-02', "
        "'YYYY-MM-DD') AND status = 'A' ORDER BY foreigntotal DESC"
    ).json()["items"]
    assert [r["externalid"] for r in rows] == ["stripe-in_F2", "stripe-in_F1"]


@pytest.mark.parametrize(
    "query",
    [
        "SELECT id FROM transaction GROUP BY currency",
        "SELECT currency, SUM(foreigntotal) FROM transaction GROUP BY currency HAVING SUM(foreigntotal) > 0",
        "SELECT t.id FROM transaction t LEFT JOIN transactionline tl ON tl.transaction = t.id",
        "SELECT nonsense FROM transaction",
        "SELECT id FROM salesorder",
        "DELETE FROM transaction",
    ],
)
def test_unsupported_suiteql_gets_netsuites_400(api, query):
    response = api.suiteql(query)
    assert response.status_code == 400
    code, detail = error_of(response)
    assert code == "INVALID_PARAMETER" and detail.startswith("Invalid search query.")


def test_suiteql_limit_above_1000_is_refused(api):
    assert api.suiteql("SELECT id FROM customer", limit=1001).status_code == 400


# ---- inspection and persistence -------------------------------------------------------------------
def test_sandbox_records_and_stats(api, netsuite):
    api.customer("stripe-cus_S")
    records = requests.get(f"{netsuite.url}/_sandbox/records/customer", timeout=10).json()
    assert records["count"] == 1 and records["records"][0]["externalId"] == "stripe-cus_S"
    stats = requests.get(f"{netsuite.url}/_sandbox/stats", timeout=10).json()
    assert stats["by_record_type"]["customer"]["PUT"]["204"] == 1 and stats["writes_applied"] == 1
    assert requests.post(f"{netsuite.url}/_sandbox/config", json={"no_such_knob": 1}, timeout=10).status_code == 400
    requests.post(f"{netsuite.url}/_sandbox/reset", timeout=10).raise_for_status()
    assert netsuite.state.count("customer") == 0


def test_an_invoice_edited_behind_the_apis_back_gets_its_new_total_and_costs_no_write(api, netsuite):
    invoice_id = api.invoice("stripe-in_E", api.customer(), "100.00")
    lines = [{"item": {"id": "101"}, "quantity": 1, "amount": Decimal("130.00")}]

    edited = requests.patch(
        f"{netsuite.url}/_sandbox/records/invoice/eid:stripe-in_E", data=dumps({"item": {"items": lines}}), timeout=10
    )

    assert edited.status_code == 200 and decimal_json(edited)["total"] == Decimal("130.00")
    rows = decimal_json(api.suiteql("SELECT externalid, foreigntotal FROM transaction WHERE type = 'CustInvc'"))
    assert Decimal(rows["items"][0]["foreigntotal"]) == Decimal("130.00")  # SuiteQL answers text
    assert requests.get(f"{netsuite.url}/_sandbox/stats", timeout=10).json()["writes_applied"] == 2  # the API's two
    refused = requests.patch(
        f"{netsuite.url}/_sandbox/records/invoice/{invoice_id}", json={"tranDate": None}, timeout=10
    )
    assert refused.status_code == 400  # the account's rules hold for these edits too


def test_a_duplicated_external_id_shows_twice_in_suiteql_and_upserts_still_reach_the_original(api, netsuite):
    original = api.customer("stripe-cus_D")

    copy = requests.post(f"{netsuite.url}/_sandbox/records/customer/eid:stripe-cus_D/duplicate", timeout=10)

    assert copy.status_code == 201 and copy.json()["id"] != original
    assert copy.json()["externalId"] == "stripe-cus_D"
    rows = api.suiteql("SELECT id, externalid FROM customer WHERE externalid = 'stripe-cus_D'").json()["items"]
    assert sorted(str(r["id"]) for r in rows) == sorted([original, copy.json()["id"]])
    assert api.customer("stripe-cus_D") == original
    missing = requests.post(f"{netsuite.url}/_sandbox/records/customer/eid:nobody/duplicate", timeout=10)
    assert missing.status_code == 404


def test_state_round_trips_through_a_file(api, netsuite, tmp_path):
    customer_id = api.customer()
    api.invoice("stripe-in_S", customer_id, "10.10")
    netsuite.state.save(tmp_path / "netsuite.json")
    loaded = NetSuiteState.load(tmp_path / "netsuite.json")
    invoice_id = loaded.id_for_external_id("invoice", "stripe-in_S")
    assert loaded.get("invoice", invoice_id)["total"] == Decimal("10.10")
    assert loaded.render("invoice", invoice_id, "", expand=False)["amountRemaining"] == Decimal("10.10")
