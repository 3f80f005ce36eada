"""The webhook receiver over real HTTP: signed deliveries from the Stripe stand-in land in the inbox once;
anything unsigned, tampered, stale or not a Stripe event is refused with 400 and stores nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import stripe

from sync_pipeline import cli
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline.sandbox.server import serve_in_thread
from sync_pipeline.sandbox.stripe import start_stripe
from sync_pipeline.sandbox.stripe.events import sign
from sync_pipeline.webhooks import WEBHOOK_PATH, ReceiverConfig, create_webhook_app
from sync_pipeline_tests.integration.webhook_server import SECRET, running_receiver

EVENT = {
    "id": "evt_test_1",
    "object": "event",
    "type": "invoice.paid",
    "created": 1_795_000_000,
    "data": {"object": {"id": "in_1", "object": "invoice", "created": 1_795_000_000}},
}


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")


@pytest.fixture
def receiver(ledger) -> Iterator[str]:
    handle = serve_in_thread(create_webhook_app(ReceiverConfig(secret=SECRET), ledger))
    try:
        yield handle.url + WEBHOOK_PATH
    finally:
        handle.stop()


def _inbox_size(ledger: Ledger) -> int:
    status = ledger.inbox_status()
    return status.depth + (1 if status.last_processed else 0)


def _post(url: str, body: bytes, header: str | None) -> requests.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return requests.post(url, data=body, headers=headers, timeout=10)


def test_every_delivery_from_stripe_is_stored_once_even_when_duplicated_and_shuffled(receiver, ledger):
    with start_stripe(webhook_secret=SECRET, webhook_duplicate_rate=1.0, webhook_shuffle=True) as sandbox:
        client = stripe.StripeClient(sandbox.api_key, base_addresses={"api": sandbox.url})
        client.v1.webhook_endpoints.create({"url": receiver, "enabled_events": ["*"]})
        customer = client.v1.customers.create({"name": "Webhook Payer"})
        client.v1.invoice_items.create({"customer": customer.id, "amount": 1500, "currency": "usd"})
        invoice = client.v1.invoices.create({"customer": customer.id, "pending_invoice_items_behavior": "include"})
        client.v1.invoices.finalize_invoice(invoice.id)
        client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"})
        deadline = time.monotonic() + 10
        while sandbox.stand_in.dispatcher.pending() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = requests.get(f"{sandbox.url}/_sandbox/webhooks", timeout=10).json()["deliveries"]
        sent = {e.id for e in client.v1.events.list({"limit": 100}).data}

    assert all(d["status"] == 200 for d in log), "every signed delivery is answered 2xx"
    assert len(log) >= 2 * len(sent), "each event was delivered at least twice"
    stored = {row["event_id"] for row in ledger.unprocessed_events()}
    assert stored == sent
    assert ledger.inbox_status().depth == len(sent)


def test_a_signed_event_is_stored_and_its_redelivery_is_answered_but_not_stored_again(receiver, ledger):
    body = json.dumps(EVENT).encode()

    first = _post(receiver, body, sign(body, SECRET, int(time.time())))
    again = _post(receiver, body, sign(body, SECRET, int(time.time())))

    assert first.status_code == 200 and first.json() == {"received": "evt_test_1", "duplicate": False}
    assert again.status_code == 200 and again.json()["duplicate"] is True
    (row,) = ledger.unprocessed_events()
    assert row["event_id"] == "evt_test_1" and row["event_type"] == "invoice.paid"
    assert json.loads(row["payload"]) == EVENT


def _tampered() -> tuple[bytes, str]:
    body = json.dumps(EVENT).encode()
    return body.replace(b"invoice.paid", b"invoice.void"), sign(body, SECRET, int(time.time()))


def _signed(body: bytes, secret: str = SECRET, age: int = 0) -> tuple[bytes, str]:
    return body, sign(body, secret, int(time.time()) - age)


BODY = json.dumps(EVENT).encode()


@pytest.mark.parametrize(
    ("delivery", "reason"),
    [
        pytest.param(_tampered, "No signatures found matching the expected signature", id="tampered-body"),
        pytest.param(
            lambda: _signed(BODY, secret="whsec_someone_else"), "No signatures found matching", id="wrong-secret"
        ),
        pytest.param(lambda: _signed(BODY, age=301), "Timestamp outside the tolerance zone", id="stale-timestamp"),
        pytest.param(lambda: (BODY, None), "missing Stripe-Signature header", id="missing-header"),
        pytest.param(lambda: (BODY, "v1=abc"), "Unable to extract timestamp and signatures", id="malformed-header"),
        pytest.param(lambda: _signed(b'{"object": "charge", "id": "ch_1"}'), "not a Stripe event", id="not-an-event"),
        pytest.param(lambda: _signed(b"hello"), "the body is not JSON", id="not-json"),
    ],
)
def test_refused_deliveries_get_400_with_a_reason_and_leave_the_inbox_unchanged(receiver, ledger, delivery, reason):
    body, header = delivery()

    response = _post(receiver, body, header)

    assert response.status_code == 400
    assert reason in response.json()["error"]
    assert _inbox_size(ledger) == 0


def test_webhooks_status_shows_depth_oldest_unprocessed_and_last_processed(ledger, monkeypatch, capsys):
    monkeypatch.setenv("SYNC_DATABASE_URL", ledger.url)
    older = {**EVENT, "id": "evt_old", "created": 1_795_000_000}
    newer = {**EVENT, "id": "evt_new", "created": 1_795_000_100}
    done = {**EVENT, "id": "evt_done", "created": 1_794_000_000}
    for event in (newer, older, done):
        ledger.add_event(event)
    ledger.mark_processed(["evt_done"], run_key="2026-11-20:evt_done")

    assert cli.main(["webhooks", "status"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "inbox depth: 2 unprocessed event(s)"
    assert lines[1].startswith("oldest unprocessed: evt_old invoice.paid")
    assert lines[2].startswith("last processed: evt_done invoice.paid")


def test_webhooks_serve_runs_the_receiver_on_uvicorn_at_the_given_port(tmp_path: Path):
    database_url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    with running_receiver(tmp_path, database_url, log_level="warning") as server:
        body, header = _signed(BODY)
        assert _post(server.endpoint, body, header).status_code == 200
        assert _post(server.endpoint, body, None).status_code == 400
    assert [r["event_id"] for r in Ledger(database_url).unprocessed_events()] == ["evt_test_1"]


def test_webhooks_serve_refuses_to_start_without_a_signing_secret(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("SYNC_DATABASE_URL", f"sqlite:///{tmp_path / 'l.sqlite'}")

    assert cli.main(["webhooks", "serve"]) == 2

    assert "STRIPE_WEBHOOK_SECRET" in capsys.readouterr().err


def test_each_stripe_account_has_its_own_endpoint_verified_with_its_own_secret(tmp_path, monkeypatch, capsys):
    database_url = f"sqlite:///{tmp_path / 'l.sqlite'}"
    secrets = {"us": "whsec_entity_us", "eu": "whsec_entity_eu"}
    accounts = {
        "SYNC_STRIPE_ACCOUNTS": "us,eu",
        **{f"STRIPE_WEBHOOK_SECRET_{name.upper()}": secret for name, secret in secrets.items()},
    }
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    for name, value in accounts.items():
        monkeypatch.setenv(name, value)
    eu_event = json.dumps({**EVENT, "id": "evt_eu"}).encode()
    us_event = json.dumps({**EVENT, "id": "evt_us"}).encode()

    with running_receiver(tmp_path, database_url, log_level="warning", secrets=accounts) as server:
        answers = {
            "eu on its own path": _post(f"{server.endpoint}/eu", *_signed(eu_event, secrets["eu"])),
            "eu on the default path": _post(server.endpoint, *_signed(eu_event, secrets["eu"])),
            "us on eu's path": _post(f"{server.endpoint}/eu", *_signed(us_event, secrets["us"])),
            "us on its own name": _post(f"{server.endpoint}/us", *_signed(us_event, secrets["us"])),
            "an unknown account": _post(f"{server.endpoint}/fr", *_signed(eu_event, secrets["eu"])),
        }
        log = server.log()

    assert {what: a.status_code for what, a in answers.items()} == {
        "eu on its own path": 200,
        "eu on the default path": 400,
        "us on eu's path": 400,
        "us on its own name": 200,
        "an unknown account": 404,
    }
    assert "No signatures found matching" in answers["eu on the default path"].json()["error"]
    ledger = Ledger(database_url)
    assert [(r["event_id"], r["account"]) for r in ledger.unprocessed_events()] == [("evt_eu", "eu"), ("evt_us", None)]
    assert not any(secret in log for secret in secrets.values())

    monkeypatch.setenv("SYNC_DATABASE_URL", database_url)
    capsys.readouterr()
    assert cli.main(["webhooks", "status"]) == 0
    out = capsys.readouterr().out
    assert "Stripe account us:\n  inbox depth: 1 unprocessed event(s)\n  oldest unprocessed: evt_us" in out
    assert "Stripe account eu:\n  inbox depth: 1 unprocessed event(s)\n  oldest unprocessed: evt_eu" in out
