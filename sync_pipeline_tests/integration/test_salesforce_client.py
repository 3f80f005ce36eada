"""The Salesforce resource over real HTTPS (simple-salesforce + our SOAP login) against the Salesforce stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from decimal import Decimal
from typing import Any

import pytest
import requests

from sync_pipeline.resources.retry import RetryPolicy
from sync_pipeline.resources.salesforce import (
    SESSION_ID_EXPIRED_MESSAGE,
    SalesforceDuplicateMatch,
    SalesforceLoginFailed,
    SalesforceRequestLimitExceeded,
    SalesforceResource,
    SalesforceSessionExpired,
)
from sync_pipeline.sandbox.salesforce import SalesforceSandbox, start_salesforce

FAST_RETRIES = RetryPolicy(initial_wait=0.02, max_wait=0.5, max_attempts=12, max_seconds=60)


@pytest.fixture
def start_sandbox() -> Iterator[Callable[..., SalesforceSandbox]]:
    """Starts stand-ins with config knobs; each is stopped when the test ends."""
    with ExitStack() as running:
        yield lambda **config: running.enter_context(start_salesforce(**config))


@pytest.fixture
def salesforce(start_sandbox) -> SalesforceSandbox:
    return start_sandbox()


def resource_for(sandbox: SalesforceSandbox, *, login: bool = True, session: bool = True, **overrides: Any):
    env = sandbox.env()
    fields: dict[str, Any] = {"instance_url": env["SALESFORCE_INSTANCE_URL"], "ca_bundle": env["SALESFORCE_CA_BUNDLE"]}
    if session:
        fields["session_id"] = env["SALESFORCE_SESSION_ID"]
    if login:
        fields.update(
            username=env["SALESFORCE_USERNAME"],
            password=env["SALESFORCE_PASSWORD"],
            security_token=env["SALESFORCE_SECURITY_TOKEN"],
        )
    resource = SalesforceResource(**{**fields, **overrides})
    resource._retry_policy = FAST_RETRIES  # quick waits; the policy itself is the shared one
    return resource


def sandbox_stats(sandbox: SalesforceSandbox) -> dict[str, Any]:
    return requests.get(f"{sandbox.url}/_sandbox/stats", verify=sandbox.ca_bundle, timeout=10).json()


def expire_sessions(sandbox: SalesforceSandbox) -> None:
    requests.post(f"{sandbox.url}/_sandbox/expire-sessions", verify=sandbox.ca_bundle, timeout=10).raise_for_status()


def accounts(count: int) -> list[dict[str, Any]]:
    return [{"Stripe_Customer_Id__c": f"cus_{n:04d}", "Name": f"Account {n}"} for n in range(count)]


def opportunity(name: str, **fields: Any) -> dict[str, Any]:
    return {"Name": name, "StageName": "Closed Won", "CloseDate": "2026-11-02", **fields}


def test_upsert_many_sends_450_records_in_3_collection_calls(salesforce):
    resource = resource_for(salesforce)

    first = resource.upsert_many("Account", "Stripe_Customer_Id__c", accounts(450))

    assert len(first) == 450 and all(result.success and result.created for result in first)
    assert [result.external_id for result in first] == [f"cus_{n:04d}" for n in range(450)]
    assert sandbox_stats(salesforce)["by_operation"]["collection_upsert"] == 3
    stored = salesforce.state.records("Account")
    assert len(stored) == 450
    assert {row["Id"] for row in stored} == {result.id for result in first}

    again = resource.upsert_many("Account", "Stripe_Customer_Id__c", accounts(450))
    assert all(result.success and result.created is False for result in again)
    assert [r.id for r in again] == [r.id for r in first]
    assert len(salesforce.state.records("Account")) == 450


def test_upsert_many_reports_invalid_records_and_keeps_the_rest(salesforce):
    resource = resource_for(salesforce)
    records = [{"Stripe_Customer_Id__c": "cus_ok", "Name": "Fine"}, {"Stripe_Customer_Id__c": "cus_bad"}]

    good, bad = resource.upsert_many("Account", "Stripe_Customer_Id__c", records)

    assert good.success and good.id
    assert not bad.success and bad.external_id == "cus_bad"
    assert bad.errors and bad.errors[0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert [row["Stripe_Customer_Id__c"] for row in salesforce.state.records("Account")] == ["cus_ok"]


def test_upsert_creates_then_updates(salesforce):
    resource = resource_for(salesforce)

    assert resource.upsert("Account", "Stripe_Customer_Id__c", "cus_U1", {"Name": "Acme"}) == 201
    assert resource.upsert("Account", "Stripe_Customer_Id__c", "cus_U1", {"Name": "Acme Ltd"}) == 200
    [row] = salesforce.state.records("Account")
    # 17 significant digits: through a float this would arrive as ...012345.6.
    resource.update("Account", row["Id"], {"AnnualRevenue": Decimal("987654321012345.67")})

    [row] = salesforce.state.records("Account")
    assert row["Name"] == "Acme Ltd"
    assert row["AnnualRevenue"] == Decimal("987654321012345.67")


def test_upsert_matching_several_records_raises_duplicate_match_with_their_ids(salesforce):
    resource = resource_for(salesforce)
    ids = [resource.create("Opportunity", opportunity(f"Deal {n}", NetSuite_Invoice_Id__c="ns-in-7")) for n in (1, 2)]

    with pytest.raises(SalesforceDuplicateMatch) as raised:
        resource.upsert("Opportunity", "NetSuite_Invoice_Id__c", "ns-in-7", {"Billing_Status__c": "Paid"})

    assert sorted(raised.value.record_ids) == sorted(ids)
    assert "matches 2 records" in str(raised.value) and ids[0] in str(raised.value)


def test_query_all_follows_next_records_url_and_keeps_amounts_exact(start_sandbox):
    salesforce = start_sandbox(query_batch_size=5)
    resource = resource_for(salesforce)
    resource.upsert_many(
        "Opportunity",
        "Stripe_Invoice_Id__c",
        [
            opportunity(f"Deal {n}", Stripe_Invoice_Id__c=f"in_{n:02d}", Amount=Decimal("1234567.89") + n)
            for n in range(12)
        ],
    )

    rows = list(resource.query_all("SELECT Id, Stripe_Invoice_Id__c, Amount FROM Opportunity"))

    assert len(rows) == 12
    assert sandbox_stats(salesforce)["by_operation"]["query_more"] == 2
    amounts = {row["Stripe_Invoice_Id__c"]: row["Amount"] for row in rows}
    assert amounts["in_11"] == Decimal("1234578.89")
    assert all(isinstance(amount, Decimal) for amount in amounts.values())


def test_expired_session_is_renewed_by_logging_in_again(salesforce):
    resource = resource_for(salesforce)
    resource.upsert("Account", "Stripe_Customer_Id__c", "cus_R1", {"Name": "Before"})
    assert resource.logins == 0  # the configured session id was used first

    expire_sessions(salesforce)
    status = resource.upsert("Account", "Stripe_Customer_Id__c", "cus_R1", {"Name": "After"})

    assert status == 200
    assert resource.logins == 1
    assert sandbox_stats(salesforce)["logins"] == 1
    assert salesforce.state.records("Account")[0]["Name"] == "After"


def test_login_without_a_session_id(salesforce):
    resource = resource_for(salesforce, session=False)
    assert resource.upsert("Account", "Stripe_Customer_Id__c", "cus_L1", {"Name": "Logged in"}) == 201
    assert resource.logins == 1


def test_expired_session_id_without_login_fails_with_a_clear_message(salesforce):
    resource = resource_for(salesforce, login=False)
    resource.upsert("Account", "Stripe_Customer_Id__c", "cus_X1", {"Name": "First"})

    expire_sessions(salesforce)
    with pytest.raises(SalesforceSessionExpired) as raised:
        resource.upsert("Account", "Stripe_Customer_Id__c", "cus_X1", {"Name": "Second"})

    assert str(raised.value) == SESSION_ID_EXPIRED_MESSAGE
    assert "SALESFORCE_SESSION_ID has expired" in str(raised.value)


def test_wrong_password_is_a_login_error_that_does_not_show_the_password(salesforce):
    resource = resource_for(salesforce, session=False, password="wrong-password-123")
    with pytest.raises(SalesforceLoginFailed) as raised:
        resource.upsert("Account", "Stripe_Customer_Id__c", "cus_P1", {"Name": "Nope"})
    assert "wrong-password-123" not in str(raised.value)
    assert salesforce.config.security_token not in str(raised.value)
    assert salesforce.config.username in str(raised.value)


def test_server_errors_and_lost_responses_are_retried_without_duplicates(start_sandbox):
    salesforce = start_sandbox(server_error_rate=0.2, lost_response_rate=0.2, seed=5)
    resource = resource_for(salesforce)

    statuses = [resource.upsert("Account", "Stripe_Customer_Id__c", f"cus_F{n}", {"Name": f"F{n}"}) for n in range(20)]
    results = resource.upsert_many("Account", "Stripe_Customer_Id__c", accounts(300))

    stats = sandbox_stats(salesforce)
    assert stats["injected_errors"] > 0 and stats["lost_responses"] > 0
    assert set(statuses) <= {200, 201}
    assert all(result.success for result in results)
    assert len(salesforce.state.records("Account")) == 320


def test_daily_request_limit_fails_clearly_without_retrying(start_sandbox):
    salesforce = start_sandbox(daily_request_limit=2)
    resource = resource_for(salesforce)
    resource.upsert("Account", "Stripe_Customer_Id__c", "cus_D1", {"Name": "One"})
    resource.upsert("Account", "Stripe_Customer_Id__c", "cus_D2", {"Name": "Two"})

    with pytest.raises(SalesforceRequestLimitExceeded, match="24-hour API request limit"):
        resource.upsert("Account", "Stripe_Customer_Id__c", "cus_D3", {"Name": "Three"})
    assert sandbox_stats(salesforce)["requests"] == 3


def test_secrets_stay_out_of_the_resource_repr(salesforce):
    env = salesforce.env()
    resource = resource_for(salesforce)
    shown = repr(resource) + str(resource)
    assert env["SALESFORCE_INSTANCE_URL"] in shown
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_PASSWORD", "SALESFORCE_SECURITY_TOKEN"):
        assert env[name] not in shown
