"""When a system does not answer or refuses us: the step fails cleanly, its bookkeeping survives, and the
re-run converges. Real Dagster materializations against the Stripe and NetSuite stand-ins over HTTP.
"""

from __future__ import annotations

import os

import pytest
import requests

from sync_pipeline.resources.ledger import Ledger
from sync_pipeline_tests.e2e.harness import DAY, amount, at, checks, running_sandbox, step_failures

pytestmark = pytest.mark.e2e


def _paid_invoices(sandbox, count: int, hour: int = 9) -> dict[str, str]:
    """`count` paid USD invoices, each for its own customer: customer id -> invoice id."""
    sandbox.clock(at(DAY, hour))
    invoices = {}
    for i in range(count):
        customer = sandbox.customer(f"Customer {hour}-{i}", "usd")
        invoices[customer] = sandbox.invoice(customer, "usd", [10000 + i]).id
    sandbox.clock(None)
    return invoices


def _raw_records(sandbox, record_type: str) -> list[dict]:
    """Every record the NetSuite stand-in holds, duplicates included (the harness' view keys by external id)."""
    return requests.get(f"{sandbox.netsuite_url}/_sandbox/records/{record_type}", timeout=10).json()["records"]


def _ledger_state(ledger: Ledger) -> tuple[set, set]:
    entries = {(e.record_type, e.external_id, e.internal_id, e.content_hash) for e in ledger.entries("netsuite")}
    exceptions = {(r["external_id"], r["error_code"], r["occurrences"]) for r in ledger.open_exceptions()}
    return entries, exceptions


def test_netsuite_not_answering_fails_the_step_at_its_end_and_the_clean_rerun_converges(tmp_path, monkeypatch, capsys):
    # 80 % of NetSuite's answers are lost on the wire (after the write was applied); 3 attempts each.
    with running_sandbox(tmp_path, monkeypatch, lost_response_rate=0.8, seed=11) as sandbox:
        invoices = _paid_invoices(sandbox, 12)
        customers = {f"stripe-{c}" for c in invoices}

        result = sandbox.materialize(netsuite_retries=3)

        assert not result.success
        failures = step_failures(result)
        assert set(failures) == {"netsuite_customers"}, "the step fails at its end, the writers after it wait"
        line = failures["netsuite_customers"]
        assert "\n" not in line and "NETSUITE_NO_ANSWER" in line and "the next run retries" in line
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        booked = {
            e.external_id: e.internal_id
            for e in ledger.entries("netsuite", DAY.isoformat())
            if e.record_type == "customer"
        }
        in_netsuite = sandbox.netsuite("customer")
        # Every write NetSuite answered is in the ledger, with the internal id NetSuite gave it.
        assert booked and all(str(in_netsuite[eid]["id"]) == internal for eid, internal in booked.items())
        no_answer = {
            r["external_id"]: r
            for r in ledger.open_exceptions(DAY.isoformat())
            if r["error_code"] == "NETSUITE_NO_ANSWER"
        }
        # ...and every one it did not answer is an exception saying the next run retries it.
        assert set(no_answer) == customers - set(booked) and no_answer
        assert all("NetSuite did not answer; the next run retries it" in r["fix"] for r in no_answer.values())
        lost = sandbox.netsuite_stats()["faults"]["lost_response"]
        writes_before_rerun = sandbox.netsuite_writes()

        sandbox.configure_netsuite(lost_response_rate=0.0)
        rerun = sandbox.materialize()

        assert rerun.success
        assert sorted(r["externalId"] for r in _raw_records(sandbox, "customer")) == sorted(customers)
        assert len(_raw_records(sandbox, "invoice")) == 12 and len(_raw_records(sandbox, "customerPayment")) == 12
        assert all(amount(p, "payment") > 0 for p in sandbox.netsuite("customerPayment").values())
        assert checks(rerun)[("netsuite_customers", "no_duplicate_external_ids")].passed
        assert checks(rerun)[("netsuite_invoices", "totals_match_stripe")].passed
        assert [r for r in ledger.open_exceptions(DAY.isoformat()) if r["error_code"] == "NETSUITE_NO_ANSWER"] == []
        with capsys.disabled():
            print(
                f"\n[fault test] customers answered {len(booked)}, unanswered {len(no_answer)}, lost responses "
                f"{lost}, exceptions {len(no_answer)}; re-run writes {sandbox.netsuite_writes() - writes_before_rerun}"
                f" (the {len(no_answer)} unanswered customers, 12 invoices, 12 payments), duplicates 0"
            )


def test_a_wrong_netsuite_secret_stops_the_step_at_once_and_blames_no_record(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as sandbox:
        _paid_invoices(sandbox, 2, hour=8)
        assert sandbox.materialize().success
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        before = _ledger_state(ledger)
        _paid_invoices(sandbox, 30, hour=10)
        failures_before = sandbox.netsuite_stats()["auth_failures"]
        monkeypatch.setenv("NETSUITE_TOKEN_SECRET", "not-the-secret")

        result = sandbox.materialize()

        assert not result.success
        failures = step_failures(result)
        assert set(failures) == {"netsuite_customers"}
        line = failures["netsuite_customers"]
        assert "\n" not in line and "NetSuite refused the credentials" in line
        assert "NETSUITE_TOKEN_SECRET" in line and "INVALID_LOGIN" in line and "not-the-secret" not in line
        assert _ledger_state(ledger) == before, "no record quarantined for it, nothing in the ledger changed"
        refused = sandbox.netsuite_stats()["auth_failures"] - failures_before
        # Stopped at once: only the requests already in flight (at most NETSUITE_CONCURRENCY = 5), not all 30.
        assert 1 <= refused <= 5


def test_a_wrong_stripe_key_stops_the_extract_naming_the_variable(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as sandbox:
        _paid_invoices(sandbox, 2)
        sandbox.configure_stripe(api_key_prefix="sk_test_rolled_")  # STRIPE_API_KEY was rolled in the Dashboard

        result = sandbox.materialize()

        assert not result.success
        line = step_failures(result)["stripe_invoices"]
        assert "\n" not in line and "Stripe refused the API key" in line and "STRIPE_API_KEY" in line
        assert os.environ["STRIPE_API_KEY"] not in line, "the key is never shown whole"
        assert sandbox.netsuite_writes() == 0
        assert Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}").open_exceptions() == []


def test_a_restricted_stripe_key_without_the_permission_stops_the_extract(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as sandbox:
        _paid_invoices(sandbox, 1)
        sandbox.configure_stripe(restricted_keys={"rk_test_customers_only": ["/v1/customers"]})
        monkeypatch.setenv("STRIPE_API_KEY", "rk_test_customers_only")

        result = sandbox.materialize()

        assert not result.success
        line = step_failures(result)["stripe_invoices"]
        assert "Stripe denied the API key GET /v1/invoices" in line and "HTTP 403" in line
        assert "STRIPE_API_KEY" in line and "permission" in line
        assert sandbox.netsuite_writes() == 0


def test_a_bad_customer_id_in_stripe_metadata_is_fixed_in_stripe_not_in_field_mapping(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch) as sandbox:
        sandbox.clock(at(DAY, 9))
        linked = sandbox.customer("Linked Co", "usd", metadata={"netsuite_customer_id": "987654"})
        bad = sandbox.invoice(linked, "usd", [5000])
        good = sandbox.invoice(sandbox.customer("Plain Co", "usd"), "usd", [7000])
        sandbox.clock(None)

        result = sandbox.materialize()

        assert result.success, "one record NetSuite rejects does not stop the day"
        assert f"stripe-{good.id}" in sandbox.netsuite("invoice")
        assert f"stripe-{bad.id}" not in sandbox.netsuite("invoice")
        rows = {r["external_id"]: r for r in Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}").open_exceptions()}
        row = rows[f"stripe-{bad.id}"]
        assert (row["error_code"], row["field"], row["value"]) == ("INVALID_REFERENCE", "entity", "987654")
        assert (row["currency"], row["amount_minor"]) == ("USD", 5000)  # what is at stake, in Stripe's minor units
        assert f"`metadata.netsuite_customer_id` on Stripe customer {linked}" in row["fix"]
        assert "field_mapping.yaml" not in row["fix"]


def test_one_record_netsuite_rejects_is_held_with_its_dependents_while_the_day_lands(tmp_path, monkeypatch):
    # The account's customer form makes email mandatory: NetSuite refuses a customer without one at write time.
    with running_sandbox(tmp_path, monkeypatch, mandatory_fields={"customer": ["email"]}) as sandbox:
        sandbox.clock(at(DAY, 9))
        good = sandbox.invoice(sandbox.customer("Has Email Co", "usd"), "usd", [4000])
        no_email = sandbox.client.v1.customers.create({"name": "No Email Co"}).id
        held = sandbox.invoice(no_email, "usd", [6000])
        sandbox.clock(None)

        result = sandbox.materialize()

        assert result.success, "a record NetSuite rejects is data, not an outage"
        assert set(sandbox.netsuite("invoice")) == {f"stripe-{good.id}"}
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        rows = {(r["external_id"], r["error_code"]): r for r in ledger.open_exceptions(DAY.isoformat())}
        rejected = rows[(f"stripe-{no_email}", "MISSING_REQUIRED_FIELD")]
        assert rejected["field"] == "email"
        assert rejected["fix"].startswith(f"set `email` on Stripe customer {no_email}")
        waiting = rows[(f"stripe-{held.id}", "DEPENDENCY_NOT_SYNCED")]
        assert f"stripe-{no_email}" in waiting["message"] and "the next run does it in order" in waiting["fix"]
        assert {e.external_id for e in ledger.entries("netsuite")} >= {f"stripe-{good.id}"}
        assert not {f"stripe-{no_email}", f"stripe-{held.id}"} & {e.external_id for e in ledger.entries("netsuite")}

        sandbox.configure_netsuite(mandatory_fields={"customer": []})  # the administrator relaxes the form
        fixed = sandbox.materialize()

        assert fixed.success
        assert amount(sandbox.netsuite("invoice")[f"stripe-{held.id}"]) == 60
        assert len(sandbox.netsuite("customerPayment")) == 2
        assert ledger.open_exceptions(DAY.isoformat()) == []


def test_netsuite_down_fails_the_run_and_the_ledger_holds_nothing_netsuite_does_not(tmp_path, monkeypatch):
    with running_sandbox(tmp_path, monkeypatch, error_rate=1.0) as sandbox:
        _paid_invoices(sandbox, 3)

        result = sandbox.materialize(netsuite_retries=2)

        assert not result.success
        line = step_failures(result)["netsuite_customers"]
        assert "\n" not in line and line.startswith("3 customers not written") and "3 NETSUITE_UNAVAILABLE" in line
        ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        assert ledger.entries("netsuite") == [] and sandbox.netsuite("customer") == {}
        codes = {r["error_code"] for r in ledger.open_exceptions(DAY.isoformat())}
        assert codes == {"NETSUITE_UNAVAILABLE"}
