"""The standard-library TBA signer sends exactly the header requests_oauthlib would, for the same nonce and time.

NetSuite verifies the signature byte for byte; oauthlib is the reference implementation the signer replaced.
"""

from __future__ import annotations

import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from requests_oauthlib import OAuth1

from sync_pipeline.resources.oauth1 import OAuth1HmacSha256, base_string_uri

NONCE, TIMESTAMP = "4f1c0a9e2b7d4e1f9a3c5b6d7e8f9012", "1764547200"
SECRETS = ("consumer-key", "consumer s3cr&t/+", "token-id", "token=secret~%")


def _reference(method: str, url: str, body: bytes | None, realm: str) -> str:
    auth = OAuth1(*SECRETS, realm=realm, signature_method="HMAC-SHA256", nonce=NONCE, timestamp=TIMESTAMP)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    prepared = requests.Request(method, url, data=body, headers=headers, auth=auth).prepare()
    return prepared.headers["Authorization"].decode()


def _fields(header: str) -> dict[str, str]:
    assert header.startswith("OAuth ")
    return dict(part.split("=", 1) for part in header[len("OAuth ") :].split(", "))


def _ours(method: str, url: str, body: bytes | None, realm: str) -> str:
    auth = OAuth1HmacSha256(*SECRETS, realm=realm)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    prepared = requests.Request(method, url, data=body, headers=headers).prepare()
    return auth.authorization(prepared.method, prepared.url, nonce=NONCE, timestamp=TIMESTAMP)


def test_a_record_upsert_is_signed_as_oauthlib_signs_it():
    url = "https://123456-sb1.suitetalk.api.netsuite.com/services/rest/record/v1/invoice/eid:stripe-in_1MtHbE"
    ours, reference = (f("PUT", url, b'{"entity": {"id": "7"}}', "123456_SB1") for f in (_ours, _reference))
    assert _fields(ours) == _fields(reference)
    assert _fields(ours)["oauth_signature_method"] == '"HMAC-SHA256"' and _fields(ours)["realm"] == '"123456_SB1"'


def test_a_suiteql_page_with_its_query_string_is_signed_as_oauthlib_signs_it():
    url = "https://123456.suitetalk.api.netsuite.com:443/services/rest/query/v1/suiteql?limit=1000&offset=2000"
    assert _fields(_ours("POST", url, b"{}", "123456")) == _fields(_reference("POST", url, b"{}", "123456"))


_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    method=st.sampled_from(["GET", "PUT", "POST", "PATCH", "DELETE"]),
    host=st.sampled_from(["127.0.0.1:8443", "localhost", "ACCT.SuiteTalk.api.netsuite.com", "example.com:80"]),
    path=st.lists(st.from_regex(r"[A-Za-z0-9_.:~-]{1,10}", fullmatch=True), min_size=1, max_size=4),
    query=st.lists(st.tuples(_text.filter(bool), _text), max_size=4),
    scheme=st.sampled_from(["http", "https"]),
)
def test_any_request_is_signed_as_oauthlib_signs_it(method, host, path, query, scheme):
    prepared = requests.Request(method, f"{scheme}://{host}/{'/'.join(path)}", params=query).prepare()
    assert _fields(_ours(method, prepared.url, None, "1_SB2")) == _fields(
        _reference(method, prepared.url, None, "1_SB2")
    )


def test_the_base_string_uri_drops_default_ports_and_the_query():
    assert base_string_uri("HTTPS://Acct.Example.com:443/a/b?x=1#f") == "https://acct.example.com/a/b"
    assert base_string_uri("http://127.0.0.1:8080/q") == "http://127.0.0.1:8080/q"


def test_the_signer_never_shows_its_secrets():
    assert all(secret not in repr(OAuth1HmacSha256(*SECRETS, realm="1")) for secret in SECRETS[1::2])
