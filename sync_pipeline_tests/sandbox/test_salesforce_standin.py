"""The Salesforce stand-in, driven by the real simple-salesforce over HTTPS (verification on, sandbox CA)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from simple_salesforce import Salesforce, SalesforceLogin
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceMoreThanOneRecord,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sync_pipeline.sandbox.salesforce import SalesforceConfig, SalesforceState, start_salesforce
from sync_pipeline.sandbox.salesforce.schema import make_id, normalize_id

SF_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}\+0000$")
WINDOW_START = datetime(2026, 11, 1, tzinfo=UTC)


def https_session(ca_bundle: str) -> requests.Session:
    session = requests.Session()
    session.verify = ca_bundle
    # REQUESTS_CA_BUNDLE in the environment would otherwise replace `verify` (requests merges it first).
    session.trust_env = False
    return session


def connect(sandbox, session_id: str | None = None, **options) -> Salesforce:
    return Salesforce(
        instance_url=sandbox.url,
        session_id=session_id or sandbox.session_id,
        session=https_session(sandbox.ca_bundle),
        **options,
    )


def control(sandbox, path: str, body: dict | None = None) -> dict:
    response = https_session(sandbox.ca_bundle).post(f"{sandbox.url}/_sandbox/{path}", json=body or {}, timeout=10)
    response.raise_for_status()
    return response.json()


def error_code(error: Exception) -> str:
    return error.content[0]["errorCode"]  # type: ignore[attr-defined]


@pytest.fixture
def sandbox():
    with start_salesforce(query_batch_size=5) as running:
        yield running


@pytest.fixture
def sf(sandbox) -> Salesforce:
    return connect(sandbox, parse_float=Decimal, object_pairs_hook=dict)


def test_env_points_at_the_https_instance_and_its_ca(sandbox):
    env = sandbox.env()
    assert env["SALESFORCE_INSTANCE_URL"] == f"https://127.0.0.1:{sandbox.port}"
    assert open(env["SALESFORCE_CA_BUNDLE"]).read().startswith("-----BEGIN CERTIFICATE-----")
    assert env["SALESFORCE_PASSWORD"] and env["SALESFORCE_SECURITY_TOKEN"] and env["SALESFORCE_USERNAME"]
    versions = https_session(env["SALESFORCE_CA_BUNDLE"]).get(f"{env['SALESFORCE_INSTANCE_URL']}/services/data/")
    assert {"version": "59.0", "url": "/services/data/v59.0"}.items() <= versions.json()[2].items()


def test_tls_is_real_a_client_without_the_sandbox_ca_is_refused(sandbox):
    plain = requests.Session()
    plain.trust_env = False
    with pytest.raises(requests.exceptions.SSLError):
        plain.get(f"{sandbox.url}/services/data/", timeout=10)


def test_create_get_update_delete(sf, sandbox):
    created = sf.Account.create({"Name": "Acme GmbH", "BillingCity": "Berlin", "Website": "https://acme.example"})
    account_id = created["id"]
    assert created == {"id": account_id, "errors": [], "success": True}
    assert account_id.startswith("001") and len(account_id) == 18

    record = sf.Account.get(account_id)
    assert record["attributes"] == {"type": "Account", "url": f"/services/data/v59.0/sobjects/Account/{account_id}"}
    assert (record["Name"], record["BillingCity"], record["CurrencyIsoCode"]) == ("Acme GmbH", "Berlin", "USD")
    assert all(SF_DATETIME.match(record[name]) for name in ("CreatedDate", "LastModifiedDate", "SystemModstamp"))

    assert sf.Account.update(account_id, {"BillingCity": "Hamburg"}) == 204
    assert sf.Account.get(account_id, params={"fields": "Id,BillingCity"}) == {
        "attributes": record["attributes"],
        "Id": account_id,
        "BillingCity": "Hamburg",
    }

    assert sf.Account.delete(account_id) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Account.get(account_id)
    assert sandbox.state.get("Account", account_id, include_deleted=True)["IsDeleted"] is True


def test_each_object_gets_18_character_ids_with_its_key_prefix(sf):
    account = sf.Account.create({"Name": "Prefix Co"})["id"]
    contact = sf.Contact.create({"LastName": "Lovelace", "AccountId": account})["id"]
    product = sf.Product2.create({"Name": "Pro plan", "ProductCode": "PRO", "IsActive": True})["id"]
    opportunity = sf.Opportunity.create(
        {"Name": "Pro x3", "AccountId": account, "StageName": "Prospecting", "CloseDate": "2026-11-20"}
    )["id"]
    line = sf.OpportunityLineItem.create(
        {"OpportunityId": opportunity, "Product2Id": product, "Quantity": 3, "UnitPrice": 19.99}
    )["id"]
    for record_id, prefix in (
        (account, "001"),
        (contact, "003"),
        (opportunity, "006"),
        (line, "00k"),
        (product, "01t"),
    ):
        assert record_id[:3] == prefix
        # The last three characters are Salesforce's case checksum of the first fifteen.
        assert normalize_id(record_id[:15]) == record_id


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0, max_value=62**5 - 1))
def test_id_checksum_restores_the_18_character_form(number):
    full = make_id("006", number)
    assert len(full) == 18 and normalize_id(full[:15]) == full and normalize_id(full) == full


def test_line_items_derive_total_price_and_roll_up_into_the_opportunity_amount(sf):
    account = sf.Account.create({"Name": "Rollup Ltd"})["id"]
    opportunity = sf.Opportunity.create(
        {
            "Name": "Deal",
            "AccountId": account,
            "StageName": "Closed Won",
            "CloseDate": "2026-11-20",
            "CurrencyIsoCode": "EUR",
            "Amount": 1,
        }
    )["id"]
    product = sf.Product2.create({"Name": "Seat", "ProductCode": "SEAT"})["id"]
    sf.OpportunityLineItem.create(
        {"OpportunityId": opportunity, "Product2Id": product, "Quantity": 3, "UnitPrice": 19.99}
    )
    sf.OpportunityLineItem.create({"OpportunityId": opportunity, "Quantity": 1, "TotalPrice": 0.05})

    lines = sf.query(
        f"SELECT UnitPrice, TotalPrice, CurrencyIsoCode FROM OpportunityLineItem "
        f"WHERE OpportunityId = '{opportunity}' ORDER BY TotalPrice DESC"
    )["records"]
    assert [(line["UnitPrice"], line["TotalPrice"], line["CurrencyIsoCode"]) for line in lines] == [
        (Decimal("19.99"), Decimal("59.97"), "EUR"),
        (Decimal("0.05"), Decimal("0.05"), "EUR"),
    ]
    # (SFType.get does not pass parse_float on; a query does.)
    [deal] = sf.query(
        f"SELECT Amount, IsWon, IsClosed, HasOpportunityLineItem FROM Opportunity WHERE Id = '{opportunity}'"
    )["records"]
    assert (deal["Amount"], deal["IsWon"], deal["IsClosed"], deal["HasOpportunityLineItem"]) == (
        Decimal("60.02"),
        True,
        True,
        True,
    )
    with pytest.raises(SalesforceMalformedRequest) as currency_change:
        sf.Opportunity.update(opportunity, {"CurrencyIsoCode": "USD"})
    assert error_code(currency_change.value) == "FIELD_INTEGRITY_EXCEPTION"
    assert sf.Opportunity.update(opportunity, {"StageName": "Closed Lost"}) == 204
    lost = sf.Opportunity.get(opportunity)
    assert (lost["IsWon"], lost["IsClosed"], lost["Probability"]) == (False, True, 0)


def test_upsert_by_stripe_customer_id_creates_then_updates(sf, sandbox):
    first = sf.Account.upsert("Stripe_Customer_Id__c/cus_Q1", {"Name": "Initech"}, raw_response=True)
    assert first.status_code == 201
    assert first.json() == {"id": first.json()["id"], "errors": [], "success": True, "created": True}

    second = sf.Account.upsert("Stripe_Customer_Id__c/cus_Q1", {"Name": "Initech Inc."}, raw_response=True)
    assert second.status_code == 200
    assert second.json() == {"id": first.json()["id"], "errors": [], "success": True, "created": False}

    [account] = sandbox.state.find("Account", Stripe_Customer_Id__c="cus_Q1")
    assert account["Name"] == "Initech Inc."
    assert sf.Account.get_by_custom_id("Stripe_Customer_Id__c", "cus_Q1")["Id"] == account["Id"]


def test_upsert_before_api_46_answers_204_for_an_update(sandbox):
    old_client = connect(sandbox, version="45.0")
    assert old_client.Account.upsert("Stripe_Customer_Id__c/cus_OLD", {"Name": "Old"}) == 201
    assert old_client.Account.upsert("Stripe_Customer_Id__c/cus_OLD", {"Name": "Older"}) == 204


def test_upsert_matching_two_records_is_300_with_their_urls(sf, sandbox):
    # Legacy data loaded before the field was made unique: two accounts share the Stripe id.
    ids = [
        sandbox.state.insert("Account", {"Name": name, "Stripe_Customer_Id__c": "cus_DUP"}, enforce_unique=False)
        for name in ("Twin A", "Twin B")
    ]
    with pytest.raises(SalesforceMoreThanOneRecord) as raised:
        sf.Account.upsert("Stripe_Customer_Id__c/cus_DUP", {"Name": "Which one?"})
    assert raised.value.status == 300
    assert raised.value.content == [f"/services/data/v59.0/sobjects/Account/{record_id}" for record_id in ids]
    assert {row["Name"] for row in sandbox.state.find("Account", Stripe_Customer_Id__c="cus_DUP")} == {
        "Twin A",
        "Twin B",
    }


def test_upsert_update_only_refuses_to_create(sf, sandbox):
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful(
            "sobjects/Account/Stripe_Customer_Id__c/cus_NEW",
            params={"updateOnly": "true"},
            method="PATCH",
            json={"Name": "Should not exist"},
        )
    assert sandbox.state.find("Account", Stripe_Customer_Id__c="cus_NEW") == []


def test_required_fields_missing_is_a_400_in_salesforce_error_format(sf):
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Opportunity.create({"Name": "No stage, no close date"})
    assert raised.value.content == [
        {
            "message": "Required fields are missing: [StageName, CloseDate]",
            "errorCode": "REQUIRED_FIELD_MISSING",
            "fields": ["StageName", "CloseDate"],
        }
    ]


def test_duplicate_unique_external_id_is_duplicate_value(sf):
    first = sf.Account.create({"Name": "One", "Stripe_Customer_Id__c": "cus_SAME"})["id"]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Account.create({"Name": "Two", "Stripe_Customer_Id__c": "cus_SAME"})
    assert error_code(raised.value) == "DUPLICATE_VALUE"
    assert raised.value.content[0]["message"] == (
        f"duplicate value found: Stripe_Customer_Id__c duplicates value on record with id: {first}"
    )


def test_unknown_field_read_only_field_and_unknown_object(sf):
    with pytest.raises(SalesforceMalformedRequest) as unknown_field:
        sf.Account.create({"Name": "X", "Colour__c": "red"})
    assert unknown_field.value.content == [
        {"message": "No such column 'Colour__c' on sobject of type Account", "errorCode": "INVALID_FIELD"}
    ]
    with pytest.raises(SalesforceMalformedRequest) as read_only:
        sf.Opportunity.create({"Name": "X", "StageName": "Closed Won", "CloseDate": "2026-11-01", "IsWon": True})
    assert error_code(read_only.value) == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceResourceNotFound) as unknown_object:
        sf.Invoice__c.create({"Name": "X"})
    assert error_code(unknown_object.value) == "NOT_FOUND"
    with pytest.raises(SalesforceResourceNotFound):
        sf.restful("no-such-resource")
    with pytest.raises(SalesforceGeneralError) as wrong_method:
        sf.restful(f"sobjects/Account/{sf.Account.create({'Name': 'Y'})['id']}", method="PUT", json={})
    assert (wrong_method.value.status, error_code(wrong_method.value)) == (405, "METHOD_NOT_ALLOWED")


def test_bad_values_are_refused_with_salesforce_codes(sf):
    base = {"Name": "X", "CloseDate": "2026-11-01"}
    cases = [
        ({**base, "StageName": "Closed-Won"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
        ({**base, "StageName": "Closed Won", "CloseDate": "01/11/2026"}, "JSON_PARSER_ERROR"),
        ({**base, "StageName": "Closed Won", "AccountId": "0035g0000000001AAA"}, "FIELD_INTEGRITY_EXCEPTION"),
        ({**base, "StageName": "Closed Won", "AccountId": "0015g00000zzzzzAAA"}, "INVALID_CROSS_REFERENCE_KEY"),
        ({**base, "StageName": "Closed Won", "CurrencyIsoCode": "XYZ"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ]
    for body, expected in cases:
        with pytest.raises(SalesforceMalformedRequest) as raised:
            sf.Opportunity.create(body)
        assert error_code(raised.value) == expected, body


def test_a_parent_can_be_named_by_its_external_id(sf):
    account = sf.Account.create({"Name": "Parent", "Stripe_Customer_Id__c": "cus_PARENT"})["id"]
    opportunity = sf.Opportunity.create(
        {
            "Name": "Child",
            "StageName": "Closed Won",
            "CloseDate": "2026-11-02",
            "Account": {"Stripe_Customer_Id__c": "cus_PARENT"},
        }
    )["id"]
    assert sf.Opportunity.get(opportunity)["AccountId"] == account
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Opportunity.create(
            {
                "Name": "Orphan",
                "StageName": "Closed Won",
                "CloseDate": "2026-11-02",
                "Account": {"Stripe_Customer_Id__c": "cus_NOBODY"},
            }
        )
    assert "Foreign key external ID: cus_NOBODY not found" in raised.value.content[0]["message"]


def test_expired_session_raises_and_a_soap_login_gives_a_working_one(sandbox):
    sf = connect(sandbox)
    sf.query("SELECT Id FROM Account")
    assert control(sandbox, "expire-sessions")["expired"] >= 1
    with pytest.raises(SalesforceExpiredSession) as raised:
        sf.query("SELECT Id FROM Account")
    assert raised.value.content == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]

    # simple-salesforce's own SOAP login (the partner envelope with password + token), sent to the instance.
    session_id, instance = SalesforceLogin(
        username=sandbox.config.username,
        password=sandbox.config.password,
        security_token=sandbox.config.security_token,
        session=https_session(sandbox.ca_bundle),
        scratch_url=sandbox.url,
    )
    assert instance == f"127.0.0.1:{sandbox.port}"
    renewed = Salesforce(instance=instance, session_id=session_id, session=https_session(sandbox.ca_bundle))
    assert renewed.query("SELECT COUNT() FROM Account")["totalSize"] == 0


def test_soap_login_with_a_wrong_password_is_invalid_login(sandbox):
    with pytest.raises(SalesforceAuthenticationFailed) as raised:
        SalesforceLogin(
            username=sandbox.config.username,
            password="not-the-password",
            security_token=sandbox.config.security_token,
            session=https_session(sandbox.ca_bundle),
            scratch_url=sandbox.url,
        )
    assert raised.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in raised.value.auth_message


def test_session_lapses_after_the_configured_inactivity(sandbox):
    sf = connect(sandbox)
    sf.query("SELECT Id FROM Account")
    control(sandbox, "config", {"session_timeout_seconds": 0})
    with pytest.raises(SalesforceExpiredSession):
        sf.query("SELECT Id FROM Account")


def _seed_opportunities(state: SalesforceState) -> list[tuple[str, datetime]]:
    """48 opportunities, one an hour from 2026-10-31 12:00, every other one Closed Won."""
    account = state.insert("Account", {"Name": "Pipeline Corp"})
    won = []
    for hour in range(48):
        stamp = WINDOW_START - timedelta(hours=12) + timedelta(hours=hour)
        stage = "Closed Won" if hour % 2 == 0 else "Negotiation/Review"
        record_id = state.insert(
            "Opportunity",
            {
                "Name": f"Deal {hour:02d}",
                "AccountId": account,
                "StageName": stage,
                "CloseDate": "2026-11-05",
                "Amount": "100.00",
            },
            at=stamp,
        )
        if stage == "Closed Won" and stamp > WINDOW_START:
            won.append((record_id, stamp))
    return won


def test_incremental_soql_pages_through_query_all(sf, sandbox):
    expected = _seed_opportunities(sandbox.state)
    # Insert order differs from the requested order, so ORDER BY must do the work.
    soql = (
        "SELECT Id, Name, SystemModstamp, Account.Name FROM Opportunity "
        "WHERE SystemModstamp > 2026-11-01T00:00:00Z AND StageName = 'Closed Won' ORDER BY SystemModstamp DESC"
    )
    first_page = sf.query(soql)
    assert first_page["totalSize"] == len(expected) and len(expected) > 5
    assert first_page["done"] is False and len(first_page["records"]) == 5
    assert re.fullmatch(r"/services/data/v59\.0/query/01g\w{15}-5", first_page["nextRecordsUrl"])

    control(sandbox, "stats/reset")
    result = sf.query_all(soql)
    expected_newest_first = sorted(expected, key=lambda pair: pair[1], reverse=True)
    assert [row["Id"] for row in result["records"]] == [record_id for record_id, _ in expected_newest_first]
    assert {row["Account"]["Name"] for row in result["records"]} == {"Pipeline Corp"}
    stats = https_session(sandbox.ca_bundle).get(f"{sandbox.url}/_sandbox/stats").json()
    assert len(expected) == 17 and stats["by_operation"] == {"query": 1, "query_more": 3}  # batches of 5


def test_soql_filters_in_null_numbers_booleans_and_or(sf, sandbox):
    state = sandbox.state
    acme = state.insert("Account", {"Name": "Acme", "Stripe_Customer_Id__c": "cus_A"})
    other = state.insert("Account", {"Name": "Other"})
    for name, account, stage, amount in (
        ("Small", acme, "Closed Won", "50"),
        ("Big", acme, "Closed Won", "5000"),
        ("Lost", other, "Closed Lost", "700"),
        ("Open", other, "Prospecting", None),
    ):
        state.insert(
            "Opportunity",
            {"Name": name, "AccountId": account, "StageName": stage, "CloseDate": "2026-11-03", "Amount": amount},
        )

    def names(where: str) -> list[str]:
        rows = sf.query_all(f"SELECT Name FROM Opportunity WHERE {where} ORDER BY Name")["records"]
        return [row["Name"] for row in rows]

    assert names("IsWon = true AND Amount > 100") == ["Big"]
    assert names("StageName IN ('Closed Lost', 'Prospecting')") == ["Lost", "Open"]
    assert names("Amount = null") == ["Open"]
    assert names("Account.Stripe_Customer_Id__c = 'cus_A' AND Amount <= 50") == ["Small"]
    assert names("(Amount >= 5000 OR StageName = 'Prospecting') AND IsClosed != true") == ["Open"]
    assert names("name like 's%'") == ["Small"]
    assert names("CloseDate = 2026-11-03 AND StageName NOT IN ('Closed Won')") == ["Lost", "Open"]
    assert sf.query("SELECT COUNT() FROM Opportunity WHERE AccountId = '" + acme[:15] + "'")["totalSize"] == 2


def test_soql_child_relationship_subquery_returns_line_items(sf, sandbox):
    state = sandbox.state
    account = state.insert("Account", {"Name": "Parent Co"})
    product = state.insert("Product2", {"Name": "Pro plan", "ProductCode": "PRO"})
    with_lines = state.insert(
        "Opportunity",
        {"Name": "With lines", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-11-04"},
    )
    state.insert(
        "Opportunity", {"Name": "Without", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-11-04"}
    )
    for quantity, price in ((2, "50.00"), (1, "7.50")):
        state.insert(
            "OpportunityLineItem",
            {"OpportunityId": with_lines, "Product2Id": product, "Quantity": quantity, "UnitPrice": price},
        )
    rows = sf.query_all(
        "SELECT Name, (SELECT Quantity, TotalPrice, Product2.ProductCode FROM OpportunityLineItems "
        "ORDER BY TotalPrice DESC) FROM Opportunity ORDER BY Name"
    )["records"]
    assert [row["Name"] for row in rows] == ["With lines", "Without"]
    lines = rows[0]["OpportunityLineItems"]
    assert (lines["totalSize"], lines["done"]) == (2, True)
    assert [(line["Quantity"], line["TotalPrice"], line["Product2"]["ProductCode"]) for line in lines["records"]] == [
        (Decimal("2"), Decimal("100"), "PRO"),
        (Decimal("1"), Decimal("7.5"), "PRO"),
    ]
    assert rows[1]["OpportunityLineItems"] is None


def test_an_org_without_unique_external_ids_accepts_duplicates_then_upsert_is_300(sandbox):
    control(sandbox, "config", {"unique_external_ids": False})
    sf = connect(sandbox)
    for name in ("First", "Second"):
        sf.Account.create({"Name": name, "NetSuite_Customer_Id__c": "ns-7"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.upsert("NetSuite_Customer_Id__c/ns-7", {"Name": "Ambiguous"})
    with pytest.raises(SalesforceMoreThanOneRecord):
        sf.Account.get_by_custom_id("NetSuite_Customer_Id__c", "ns-7")


STAGES = ("Prospecting", "Negotiation/Review", "Closed Won", "Closed Lost")
opportunity_rows = st.lists(
    st.tuples(
        st.one_of(st.none(), st.decimals(min_value=0, max_value=10**6, places=2)),
        st.sampled_from(STAGES),
        st.dates(min_value=datetime(2026, 10, 1).date(), max_value=datetime(2026, 12, 31).date()),
    ),
    max_size=25,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=opportunity_rows,
    threshold=st.decimals(min_value=0, max_value=10**6, places=2),
    stages=st.sets(st.sampled_from(STAGES), min_size=1),
    close_after=st.dates(min_value=datetime(2026, 10, 1).date(), max_value=datetime(2026, 12, 31).date()),
)
def test_soql_filters_and_ordering_match_a_plain_python_reading(sf, sandbox, rows, threshold, stages, close_after):
    state = sandbox.state
    state.reset()
    account = state.insert("Account", {"Name": "Property"})
    expected = []
    for n, (amount, stage, close_date) in enumerate(rows):
        name = f"Deal {n:02d}"
        state.insert(
            "Opportunity",
            {
                "Name": name,
                "AccountId": account,
                "StageName": stage,
                "CloseDate": close_date.isoformat(),
                "Amount": amount,
            },
        )
        if amount is not None and amount >= threshold and stage in stages and close_date > close_after:
            expected.append((-amount, name))
    stage_list = ", ".join(f"'{stage}'" for stage in sorted(stages))
    soql = (
        f"SELECT Name, Amount FROM Opportunity WHERE Amount >= {threshold} AND StageName IN ({stage_list}) "
        f"AND CloseDate > {close_after.isoformat()} ORDER BY Amount DESC NULLS LAST, Name"
    )
    result = sf.query_all(soql)["records"]
    assert [row["Name"] for row in result] == [name for _, name in sorted(expected)]


@pytest.mark.parametrize(
    ("soql", "code"),
    [
        ("SELECT Id FROM Opportunity WHERE SystemModstamp > '2026-11-01T00:00:00Z'", "INVALID_FIELD"),
        ("SELECT Id FROM Opportunity WHERE Name = 'a' AND Name = 'b' OR Name = 'c'", "MALFORMED_QUERY"),
        ("SELECT Id FROM Opportunity WHERE", "MALFORMED_QUERY"),
        ("SELECT Id, FROM Opportunity", "MALFORMED_QUERY"),
        ("SELECT Nonsense__c FROM Opportunity", "INVALID_FIELD"),
        ("SELECT Id FROM Invoice__c", "INVALID_TYPE"),
        ("SELECT Id, (SELECT Id FROM Invoices__r) FROM Account", "INVALID_TYPE"),
    ],
)
def test_bad_soql_is_refused(sf, soql, code):
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query(soql)
    assert error_code(raised.value) == code


def test_query_all_endpoint_includes_deleted_records(sf, sandbox):
    kept = sandbox.state.insert("Account", {"Name": "Kept"})
    gone = sandbox.state.insert("Account", {"Name": "Gone"})
    sf.Account.delete(gone)
    assert [row["Id"] for row in sf.query_all("SELECT Id FROM Account")["records"]] == [kept]
    everything = sf.query_all("SELECT Id, IsDeleted FROM Account", include_deleted=True)["records"]
    assert [(row["Id"], row["IsDeleted"]) for row in everything] == [(kept, False), (gone, True)]


def _account_records(count: int, prefix: str = "cus_BULK") -> list[dict]:
    return [
        {"attributes": {"type": "Account"}, "Stripe_Customer_Id__c": f"{prefix}{n:03d}", "Name": f"Bulk {n}"}
        for n in range(count)
    ]


def test_collection_upsert_of_200_records_in_one_call_and_201_refused(sf, sandbox):
    results = sf.restful(
        "composite/sobjects/Account/Stripe_Customer_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": _account_records(200)},
    )
    assert len(results) == 200 and all(result["success"] and result["created"] for result in results)
    again = sf.restful(
        "composite/sobjects/Account/Stripe_Customer_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": _account_records(200)},
    )
    assert [result["id"] for result in again] == [result["id"] for result in results]
    assert not any(result["created"] for result in again)
    assert len(sandbox.state.records("Account")) == 200

    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful(
            "composite/sobjects/Account/Stripe_Customer_Id__c",
            method="PATCH",
            json={"allOrNone": False, "records": _account_records(201, "cus_MORE")},
        )
    assert error_code(raised.value) == "EXCEEDED_ID_LIMIT"
    assert sandbox.state.find("Account", Stripe_Customer_Id__c="cus_MORE000") == []


def test_collection_upsert_reports_each_bad_record(sf, sandbox):
    records = _account_records(3)
    records[1]["Stripe_Customer_Id__c"] = records[0]["Stripe_Customer_Id__c"]  # the same id twice in one call
    records[2].pop("Name")
    results = sf.restful(
        "composite/sobjects/Account/Stripe_Customer_Id__c",
        method="PATCH",
        json={"allOrNone": False, "records": records},
    )
    assert [result["errors"][0]["statusCode"] for result in results] == [
        "DUPLICATE_EXTERNAL_ID",
        "DUPLICATE_EXTERNAL_ID",
        "REQUIRED_FIELD_MISSING",
    ]
    assert sandbox.state.records("Account") == []


def test_collection_create_all_or_none_rolls_everything_back(sf, sandbox):
    records = [
        {"attributes": {"type": "Account"}, "Name": "Fine"},
        {"attributes": {"type": "Contact"}, "FirstName": "No last name"},
    ]
    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": True, "records": records})
    assert [result["errors"][0]["statusCode"] for result in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "REQUIRED_FIELD_MISSING",
    ]
    assert sandbox.state.records("Account") == []

    results = sf.restful("composite/sobjects", method="POST", json={"allOrNone": False, "records": records})
    assert [result["success"] for result in results] == [True, False]
    assert [row["Name"] for row in sandbox.state.records("Account")] == ["Fine"]


def test_collection_update_retrieve_and_delete(sf, sandbox):
    ids = [sandbox.state.insert("Account", {"Name": f"A{n}"}) for n in range(3)]
    updates = [
        {"attributes": {"type": "Account"}, "id": record_id, "NetSuite_Customer_Id__c": f"ns-{n}"}
        for n, record_id in enumerate(ids)
    ]
    results = sf.restful("composite/sobjects", method="PATCH", json={"records": updates})
    assert [result["id"] for result in results] == ids and all(result["success"] for result in results)

    fetched = sf.restful(
        "composite/sobjects/Account",
        params={"ids": ",".join(ids + ["0015g00000zzzzzAAA"]), "fields": "Id,NetSuite_Customer_Id__c"},
    )
    assert [row and row["NetSuite_Customer_Id__c"] for row in fetched] == ["ns-0", "ns-1", "ns-2", None]

    deleted = sf.restful("composite/sobjects", method="DELETE", params={"ids": ",".join(ids[:2])})
    assert [result["success"] for result in deleted] == [True, True]
    assert [row["Id"] for row in sandbox.state.records("Account")] == [ids[2]]


def test_deleting_an_opportunity_takes_its_line_items(sf, sandbox):
    account = sandbox.state.insert("Account", {"Name": "Cascade"})
    opportunity = sandbox.state.insert(
        "Opportunity", {"Name": "D", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-11-01"}
    )
    sandbox.state.insert("OpportunityLineItem", {"OpportunityId": opportunity, "Quantity": 1, "UnitPrice": 10})
    sf.Account.delete(account)
    assert sandbox.state.records("Opportunity") == [] and sandbox.state.records("OpportunityLineItem") == []


def test_limit_info_header_is_read_by_simple_salesforce_and_the_daily_limit_refuses(sandbox):
    sf = connect(sandbox)
    sf.query("SELECT Id FROM Account")
    sf.query("SELECT Id FROM Account")
    usage = sf.api_usage["api-usage"]
    assert (usage.used, usage.total) == (2, 15000)

    control(sandbox, "config", {"daily_request_limit": 3})
    sf.query("SELECT Id FROM Account")
    with pytest.raises(SalesforceRefusedRequest) as raised:
        sf.query("SELECT Id FROM Account")
    assert raised.value.content == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]


def test_describe_lists_fields_with_external_id_and_uniqueness(sf):
    fields = {field["name"]: field for field in sf.Account.describe()["fields"]}
    stripe_id = fields["Stripe_Customer_Id__c"]
    assert (stripe_id["externalId"], stripe_id["unique"], stripe_id["nillable"], stripe_id["type"]) == (
        True,
        True,
        True,
        "string",
    )
    assert (fields["Name"]["nillable"], fields["Id"]["type"]) == (False, "id")
    opportunity = {field["name"]: field for field in sf.Opportunity.describe()["fields"]}
    assert opportunity["IsWon"]["createable"] is False
    assert "Closed Won" in [value["value"] for value in opportunity["StageName"]["picklistValues"]]
    assert {item["name"] for item in sf.describe()["sobjects"]} == {
        "Account",
        "Contact",
        "Opportunity",
        "OpportunityLineItem",
        "Product2",
    }


def test_sandbox_control_endpoints(sf, sandbox):
    http = https_session(sandbox.ca_bundle)
    seeded = http.post(f"{sandbox.url}/_sandbox/records/Account", json=[{"Name": "Seeded"}]).json()["ids"]
    sf.Account.get(seeded[0])
    stats = http.get(f"{sandbox.url}/_sandbox/stats").json()
    assert stats["by_method"]["GET"] == 1 and stats["by_status"]["200"] == 1 and stats["records"]["Account"] == 1
    listed = http.get(f"{sandbox.url}/_sandbox/records/Account").json()
    assert [(row["Id"], row["Name"]) for row in listed] == [(seeded[0], "Seeded")]

    changed = control(sandbox, "config", {"query_batch_size": 7, "latency_ms": 1})
    assert (changed["query_batch_size"], sandbox.config.query_batch_size) == (7, 7)
    refused = http.post(f"{sandbox.url}/_sandbox/config", json={"no_such_knob": 1})
    assert refused.status_code == 400

    control(sandbox, "reset")
    assert sandbox.state.records("Account") == []
    assert control(sandbox, "stats/reset") == {"reset": True}


def test_state_survives_save_and_load(tmp_path):
    state = SalesforceState()
    account = state.insert("Account", {"Name": "Persisted", "Stripe_Customer_Id__c": "cus_KEEP"})
    opportunity = state.insert(
        "Opportunity",
        {"Name": "Kept", "AccountId": account, "StageName": "Closed Won", "CloseDate": "2026-11-09", "Amount": "12.34"},
    )
    state.save(tmp_path / "salesforce.json")
    with start_salesforce(state=SalesforceState.load(tmp_path / "salesforce.json"), tls_dir=str(tmp_path)) as sandbox:
        sf = connect(sandbox, parse_float=Decimal)
        [kept] = sf.query(f"SELECT Amount FROM Opportunity WHERE Id = '{opportunity}'")["records"]
        assert kept["Amount"] == Decimal("12.34")
        with pytest.raises(SalesforceMalformedRequest):
            sf.Account.create({"Name": "Clash", "Stripe_Customer_Id__c": "cus_KEEP"})
        new_id = sf.Account.create({"Name": "Next"})["id"]
        assert new_id not in (account, opportunity) and new_id.startswith("001")


def test_faults_server_errors_and_lost_responses(sandbox):
    sf = connect(sandbox)
    control(sandbox, "config", {"server_error_rate": 1.0})
    with pytest.raises(SalesforceGeneralError) as server_error:
        sf.query("SELECT Id FROM Account")
    assert server_error.value.status == 500 and error_code(server_error.value) == "UNKNOWN_EXCEPTION"

    control(sandbox, "config", {"server_error_rate": 0, "lost_response_rate": 1.0})
    with pytest.raises(requests.exceptions.RequestException):
        sf.Account.upsert("Stripe_Customer_Id__c/cus_LOST", {"Name": "Committed anyway"})
    # The write was applied even though the answer never arrived.
    assert [row["Name"] for row in sandbox.state.find("Account", Stripe_Customer_Id__c="cus_LOST")] == [
        "Committed anyway"
    ]


def test_config_defaults_are_realistic():
    config = SalesforceConfig()
    assert (config.query_batch_size, config.daily_request_limit, config.latency_ms) == (2000, 15000, 0)
    assert (config.server_error_rate, config.lost_response_rate, config.unique_external_ids) == (0, 0, True)
