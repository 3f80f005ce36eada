"""A full day synced to NetSuite over OAuth 2.0 client credentials (M2M), the way accounts must from 2027.1.

The pipeline gets NETSUITE_CLIENT_ID, NETSUITE_CERTIFICATE_ID and NETSUITE_PRIVATE_KEY_FILE only (no TBA
variable), signs its JWT assertion with that key, and the NetSuite stand-in verifies it with the public key
of the certificate mapped to the integration before it hands out a bearer token. Real HTTP, the real Dagster
instance of DAGSTER_HOME.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import requests

from sync_pipeline import settings
from sync_pipeline.sandbox.netsuite import generate_m2m_key_pair
from sync_pipeline_tests.e2e.harness import DAY, amount, at, checks, running_sandbox, step_failures

pytestmark = pytest.mark.e2e

INVOICES = [("usd", 12345, Decimal("123.45")), ("eur", 9900, Decimal("99.00")), ("jpy", 5000, Decimal("5000"))]


@pytest.fixture
def m2m(tmp_path, monkeypatch):
    for name in settings.NETSUITE_TBA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    key_file = tmp_path / "secrets" / "netsuite_m2m.pem"
    with running_sandbox(tmp_path, monkeypatch, pipeline_auth="m2m", m2m_key_file=str(key_file)) as box:
        yield box


def _day_of_activity(sandbox) -> dict[str, str]:
    """Paid invoices in three currencies and a partial refund: invoices, payments, a credit memo and a refund."""
    sandbox.clock(at(DAY, 9))
    invoices = {}
    for currency, minor, _ in INVOICES:
        invoices[currency] = sandbox.invoice(
            sandbox.customer(f"M2M {currency.upper()}", currency), currency, [minor]
        ).id
    refund = sandbox.client.v1.refunds.create({"charge": sandbox.charge_of(invoices["usd"]), "amount": 2345})
    sandbox.clock(None)
    return {**invoices, "refund": refund.id}


def _assert_day_landed_to_the_cent(sandbox, ids: dict[str, str], result: dg.ExecuteInProcessResult) -> None:
    ns_invoices = sandbox.netsuite("invoice")
    assert len(ns_invoices) == len(INVOICES)
    for currency, _, expected in INVOICES:
        assert amount(ns_invoices[f"stripe-{ids[currency]}"]) == expected, currency
    payments = sandbox.netsuite("customerPayment")
    assert sorted(amount(p, "payment") for p in payments.values()) == sorted(e for _, _, e in INVOICES)
    assert amount(sandbox.netsuite("creditMemo")[f"stripe-{ids['refund']}-cm"]) == Decimal("23.45")
    assert amount(sandbox.netsuite("customerRefund")[f"stripe-{ids['refund']}"]) == Decimal("23.45")
    evaluations = checks(result)
    assert evaluations[("netsuite_invoices", "totals_match_stripe")].passed
    assert evaluations[("netsuite_invoices", "no_duplicate_external_ids")].passed


def test_a_full_day_syncs_over_m2m_with_the_token_fetched_once_per_client(m2m):
    assert settings.netsuite_auth_method() == "m2m"
    assert not any(settings.is_set(name) for name in settings.NETSUITE_TBA_VARIABLES)
    ids = _day_of_activity(m2m)
    instance = dg.DagsterInstance.get()

    result = m2m.materialize(instance=instance)

    assert result.success, step_failures(result)
    _assert_day_landed_to_the_cent(m2m, ids, result)
    stats = m2m.netsuite_stats()
    assert stats["auth_failures"] == 0 and "401" not in stats["by_status"]
    # Cached: the in-process run shares one NetSuite resource, so one token serves every REST call of the day.
    assert stats["tokens_issued"] == 1
    assert stats["requests"] - stats["tokens_issued"] >= 10
    # The key is a secret: never in the run's events, logs or metadata.
    key_text = Path(settings.get("NETSUITE_PRIVATE_KEY_FILE")).read_text()
    key_body = key_text.splitlines()[1]
    logged = "\n".join(str(record.dagster_event or record.user_message) for record in instance.all_logs(result.run_id))
    assert key_body not in logged and "PRIVATE KEY" not in logged


def test_a_token_netsuite_ends_mid_run_is_fetched_again_once_and_the_run_succeeds(m2m):
    ids = _day_of_activity(m2m)
    # Hold the run after its third write, end every token then, and let it go on.
    m2m.configure_netsuite(hold_writes_after=3)
    expired: dict[str, int] = {}

    def expire_while_held() -> None:
        deadline = time.monotonic() + 120
        while not m2m.netsuite_stats()["writes_held"] and time.monotonic() < deadline:
            time.sleep(0.05)
        expired.update(requests.post(f"{m2m.netsuite_url}/_sandbox/oauth2/expire_tokens", timeout=10).json())
        expired["issued_before"] = m2m.netsuite_stats()["tokens_issued"]
        m2m.configure_netsuite(hold_writes_after=0)

    helper = threading.Thread(target=expire_while_held, daemon=True)
    helper.start()
    result = m2m.materialize(instance=dg.DagsterInstance.get())
    helper.join(timeout=130)

    assert result.success, step_failures(result)
    assert expired["expired"] == 1, "the held step's client had one live token"
    stats = m2m.netsuite_stats()
    # Every request already in flight with the dead token got one 401 and was sent again with the new one.
    assert 1 <= stats["auth_failures"] == stats["by_status"]["401"] <= int(settings.get("NETSUITE_CONCURRENCY"))
    # One new token, fetched by the first request refused; the others found it already cached.
    assert expired["issued_before"] == 1 and stats["tokens_issued"] == 2
    _assert_day_landed_to_the_cent(m2m, ids, result)


def test_a_wrong_key_stops_the_run_with_an_access_error_naming_the_fix(m2m):
    _day_of_activity(m2m)
    # Someone rotated the key file but uploaded no new certificate (or mapped another one).
    Path(settings.get("NETSUITE_PRIVATE_KEY_FILE")).write_text(generate_m2m_key_pair("PS256")[0])

    result = m2m.materialize(instance=dg.DagsterInstance.get())

    assert not result.success
    failures = step_failures(result)
    refused = [message for message in failures.values() if "NetSuite refused the credentials" in message]
    assert refused, failures
    message = refused[0]
    assert "HTTP 401 invalid_client" in message and "\n" not in message
    assert "NETSUITE_PRIVATE_KEY" in message and "NETSUITE_CERTIFICATE_ID" in message
    assert "OAuth 2.0 Client Credentials (M2M) Setup" in message
    stats = m2m.netsuite_stats()
    assert stats["tokens_issued"] == 0 and stats["writes_applied"] == 0
