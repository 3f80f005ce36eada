"""Two Stripe accounts (a US and an EU entity) synced side by side into one NetSuite account.

Both accounts live behind one Stripe stand-in address (the API key says whose data it is) and are seeded alike,
so they hold objects with the same ids: the product `prod_pro`, and, made in the same order, the same customer,
invoice and charge ids. Each account's job runs through the real Dagster instance, with its own Stripe key and
subsidiary, into the one NetSuite stand-in.

Then the near-real-time loop per account: each stand-in account delivers signed webhooks to its own endpoint of
`sync-pipeline webhooks serve`, and a `dagster-daemon` runs each account's sensor on its own inbox events. And the
one `netsuite_api` pool on the production instance file: both accounts' runs at once, their NetSuite steps in turn.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import dagster as dg
import pytest
import requests
import sqlalchemy as sa
import stripe

from sync_pipeline.assets.netsuite import NETSUITE_POOL
from sync_pipeline.cli import main
from sync_pipeline.jobs import EVENTS_TAG
from sync_pipeline.resources.ledger import Ledger, webhook_inbox
from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.stripe.accounts import start_stripe_accounts
from sync_pipeline.sandbox.stripe.events import sign
from sync_pipeline_tests.e2e.harness import DAY, Sandbox, amount, at
from sync_pipeline_tests.e2e.test_near_real_time import FINISHED, Loop
from sync_pipeline_tests.integration.webhook_server import running_receiver

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
# The US entity books to subsidiary 1 (the top-level `subsidiary:`), the EU entity to Europe GmbH.
SUBSIDIARY = {"us": "1", "eu": "2"}
NETSUITE_CURRENCY = {"usd": "1", "eur": "2"}
# Per account: currency, and the unit price of prod_pro and the quantities of the day's paid invoices.
ACTIVITY = {"us": ("usd", 12_345, [1, 3]), "eu": ("eur", 9_910, [2, 1])}


@pytest.fixture
def two_accounts(tmp_path, monkeypatch):
    with start_stripe_accounts(["us", "eu"]) as stripe_accounts, start_netsuite() as netsuite:
        home = tmp_path / "dagster_home"
        home.mkdir()
        mapping = _two_entity_mapping(tmp_path)
        for name in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET", "SYNC_EVENT_SOURCE"):
            monkeypatch.delenv(name, raising=False)
        env = {
            **netsuite.env(),
            "SYNC_STRIPE_ACCOUNTS": "us,eu",
            "STRIPE_API_BASE": stripe_accounts.url,
            "STRIPE_API_KEY_US": stripe_accounts["us"].api_key,
            "STRIPE_API_KEY_EU": stripe_accounts["eu"].api_key,
            "DAGSTER_HOME": str(home),
            "SYNC_DATABASE_URL": f"sqlite:///{tmp_path / 'ledger.sqlite'}",
            "SYNC_FIELD_MAPPING": str(mapping),
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        boxes = {
            name: Sandbox(
                account.url,
                netsuite.url,
                stripe.StripeClient(account.api_key, base_addresses={"api": stripe_accounts.url}),
                home,
            )
            for name, account in stripe_accounts.accounts.items()
        }
        yield boxes


def _two_entity_mapping(folder: Path) -> Path:
    mapping = folder / "field_mapping.yaml"
    mapping.write_text((ROOT / "field_mapping.yaml").read_text() + '\nstripe_accounts:\n  eu: {subsidiary: "2"}\n')
    return mapping


def _seed_day(box: Sandbox, currency: str, unit_amount: int, quantities: list[int]) -> list[str]:
    """prod_pro (the same custom id in every account), one customer, and a paid invoice per quantity."""
    box.clock(at(DAY, 10))
    product = box.client.v1.products.create(
        {"id": "prod_pro", "name": "Pro plan", "default_price_data": {"currency": currency, "unit_amount": unit_amount}}
    )
    customer = box.customer("Entity customer", currency)
    invoices = []
    for quantity in quantities:
        box.client.v1.invoice_items.create({"customer": customer, "price": product.default_price, "quantity": quantity})
        invoice = box.client.v1.invoices.create(
            {"customer": customer, "currency": currency, "pending_invoice_items_behavior": "include"}
        )
        box.client.v1.invoices.finalize_invoice(invoice.id)
        invoices.append(box.client.v1.invoices.pay(invoice.id, {"payment_method": "pm_card_visa"}).id)
    box.clock(None)
    return invoices


def _run(job_name: str, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    from sync_pipeline.definitions import defs

    return defs().resolve_job_def(job_name).execute_in_process(partition_key=DAY.isoformat(), instance=instance)


def test_two_accounts_sync_side_by_side_without_colliding(two_accounts, capsys):
    invoices = {name: _seed_day(box, *ACTIVITY[name]) for name, box in two_accounts.items()}
    # Seeded alike, the two accounts hold the very same ids: only the external-id rule keeps them apart.
    assert invoices["us"] == invoices["eu"]
    box = two_accounts["us"]
    instance = dg.DagsterInstance.get()

    results = {
        name: _run(job, instance) for name, job in (("us", "stripe_to_netsuite"), ("eu", "stripe_eu_to_netsuite"))
    }

    assert all(r.success for r in results.values())
    prefix = {"us": "stripe-", "eu": "stripe-eu-"}
    ns_invoices, ns_payments, ns_customers = (box.netsuite(t) for t in ("invoice", "customerPayment", "customer"))
    # Exactly once each: two invoices and two payments per account, one customer per account.
    assert len(ns_invoices) == 4 and len(ns_payments) == 4 and len(ns_customers) == 2
    for name, (currency, unit, quantities) in ACTIVITY.items():
        customer = ns_customers[f"{prefix[name]}{_customer_of(two_accounts[name], invoices[name][0])}"]
        assert customer["subsidiary"]["id"] == SUBSIDIARY[name]
        for invoice_id, quantity in zip(invoices[name], quantities, strict=True):
            invoice = ns_invoices[f"{prefix[name]}{invoice_id}"]
            expected = Decimal(unit * quantity) / 100
            assert amount(invoice) == expected, (name, invoice_id)
            assert amount(invoice, "amountRemaining") == 0
            assert invoice["subsidiary"]["id"] == SUBSIDIARY[name]
            assert invoice["entity"]["id"] == customer["id"]
            assert invoice["currency"]["id"] == NETSUITE_CURRENCY[currency]
            payments = [p for eid, p in ns_payments.items() if eid.startswith(prefix[name]) and _applies(p, invoice)]
            assert [amount(p, "payment") for p in payments] == [expected]
        # The account's own checks pass for its own day: totals, duplicates, required fields, reconciliations.
        evaluations = results[name].get_asset_check_evaluations()
        assert evaluations and all(e.passed for e in evaluations), [
            (e.asset_key.to_user_string(), e.check_name, e.metadata) for e in evaluations if not e.passed
        ]
        assert {e.asset_key.path[0] == "eu" for e in evaluations} == {name == "eu"}
    # Every external id is one account's: the EU records all carry the account's segment, the US ones none.
    for record_type in ("invoice", "customerPayment", "customer"):
        for external_id in box.netsuite(record_type):
            assert external_id.startswith(("stripe-eu-", "stripe-")), external_id
    ledger = Ledger(os.environ["SYNC_DATABASE_URL"])
    assert {e.external_id for e in ledger.for_account("eu").entries()} == {
        e for t in ("invoice", "customerPayment", "customer") for e in box.netsuite(t) if e.startswith("stripe-eu-")
    }
    assert not ledger.exceptions(open_only=True)

    # One pool for the one NetSuite account: every NetSuite-writing step of both accounts claims it.
    from sync_pipeline.definitions import defs

    pools = {
        (job, node.name): node.definition.pool
        for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite")
        for node in defs().resolve_job_def(job).graph.nodes
        if node.definition.pool
    }
    for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite"):
        assert {(job, "netsuite_invoices"), (job, "netsuite_deposits"), (job, "netsuite_customers")} <= set(pools)
    assert set(pools.values()) == {NETSUITE_POOL}

    # A re-run of both accounts writes nothing.
    writes = box.netsuite_writes()
    assert all(_run(job, instance).success for job in ("stripe_to_netsuite", "stripe_eu_to_netsuite"))
    assert box.netsuite_writes() == writes

    # From a shell, each account's own day (`--account`): planned, nothing left to write, as that account's data
    # is what was synced (the other account's amounts would be updates); reconciled, the books agree.
    for name in ("us", "eu"):
        capsys.readouterr()
        assert main(["plan", "--partition", DAY.isoformat(), "--account", name, "--format", "json"]) == 0
        plan = json.loads(capsys.readouterr().out)
        assert plan["account"] == name
        assert {r["external_id"] for r in plan["records"] if r["record_type"] == "invoice"} == {
            f"{prefix[name]}{i}" for i in invoices[name]
        }
        assert plan["counts"]["unchanged"] == len(plan["records"]) > 0, plan["counts"]
        assert main(["reconcile", "--from", DAY.isoformat(), "--account", name, "--format", "json"]) == 0
        reconciled = json.loads(capsys.readouterr().out)
        assert reconciled["account"] == name and reconciled["documents_differing"] == 0
        invoiced = {r["currency"] for r in reconciled["days"][0]["totals"]}
        assert invoiced == {ACTIVITY[name][0].upper()}
    assert main(["plan", "--partition", DAY.isoformat(), "--account", "fr"]) == 2
    assert "SYNC_STRIPE_ACCOUNTS lists us, eu" in capsys.readouterr().err


def _customer_of(box: Sandbox, invoice_id: str) -> str:
    return box.client.v1.invoices.retrieve(invoice_id).customer


def _applies(payment: dict, invoice: dict) -> bool:
    return any(line["doc"]["id"] == invoice["id"] for line in payment["apply"]["items"])


# -- webhooks per account -------------------------------------------------------------------------------------------

_INBOX_QUERY = sa.select(webhook_inbox.c.event_id, webhook_inbox.c.account)
SENSORS = {"us": "stripe_to_netsuite_on_events", "eu": "stripe_eu_to_netsuite_on_events"}
WEBHOOK_SECRETS = {"us": "whsec_entity_us", "eu": "whsec_entity_eu"}


def _runs_of(loop: Loop, account: str) -> list[dg.DagsterRun]:
    return list(loop.instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": SENSORS[account]})))


def _inbox_events(ledger: Ledger) -> dict[str, str | None]:
    """Every inbox event id and the account whose endpoint received it (None: the default account)."""
    with ledger.engine.connect() as conn:
        return {row["event_id"]: row["account"] for row in conn.execute(_INBOX_QUERY).mappings()}


def _synced(box: Sandbox, external_id: str) -> bool:
    invoice = box.netsuite("invoice").get(external_id)
    return bool(invoice) and any(
        line["doc"]["id"] == invoice["id"]
        for p in box.netsuite("customerPayment").values()
        for line in p["apply"]["items"]
    )


def test_each_accounts_webhooks_reach_only_its_own_sensor_and_another_accounts_signature_is_refused(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text())
    database_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    secrets = {f"STRIPE_WEBHOOK_SECRET_{name.upper()}": secret for name, secret in WEBHOOK_SECRETS.items()}
    with ExitStack() as stack:
        # Seeded apart, as two real accounts are: their event ids differ (Stripe's are unique across accounts).
        per_account = {name: {"seed": n, "webhook_secret": WEBHOOK_SECRETS[name]} for n, name in enumerate(SENSORS)}
        stripe_accounts = stack.enter_context(start_stripe_accounts(list(SENSORS), per_account=per_account))
        netsuite = stack.enter_context(start_netsuite())
        receiver = stack.enter_context(
            running_receiver(tmp_path, database_url, secrets={"SYNC_STRIPE_ACCOUNTS": "us,eu", **secrets})
        )
        env = {
            **{k: v for k, v in os.environ.items() if k not in ("STRIPE_API_KEY", "STRIPE_WEBHOOK_SECRET")},
            **netsuite.env(),
            **secrets,
            "SYNC_STRIPE_ACCOUNTS": "us,eu",
            "SYNC_EVENT_SOURCE": "webhooks",
            "STRIPE_API_BASE": stripe_accounts.url,
            "STRIPE_API_KEY_US": stripe_accounts["us"].api_key,
            "STRIPE_API_KEY_EU": stripe_accounts["eu"].api_key,
            "DAGSTER_HOME": str(home),
            "SYNC_DATABASE_URL": database_url,
            "SYNC_FIELD_MAPPING": str(_two_entity_mapping(tmp_path)),
        }
        boxes = {}
        for name, account in stripe_accounts.accounts.items():
            client = stripe.StripeClient(account.api_key, base_addresses={"api": stripe_accounts.url})
            # Each account's endpoint is its own path: /webhooks/stripe for the default, /webhooks/stripe/eu.
            url = receiver.endpoint + ("" if name == "us" else f"/{name}")
            client.v1.webhook_endpoints.create({"url": url, "enabled_events": ["*"]})
            boxes[name] = Sandbox(account.url, netsuite.url, client, home)
        ledger = Ledger(database_url)
        loop = Loop(boxes["us"], receiver.endpoint, ledger, env, tmp_path / "daemon.log")
        stack.callback(loop.stop_daemon)
        loop.instance.get_runs(limit=1)  # Dagster's storage created before the daemon starts
        loop.start_daemon()

        invoices = {
            "us": boxes["us"].invoice(boxes["us"].customer("US Payer", "usd"), "usd", [24900]),
            "eu": boxes["eu"].invoice(boxes["eu"].customer("EU Payer", "eur"), "eur", [9900]),
        }
        external_ids = {"us": f"stripe-{invoices['us'].id}", "eu": f"stripe-eu-{invoices['eu'].id}"}
        for name, box in boxes.items():
            loop.wait_for(f"{name}'s paid invoice in NetSuite", lambda b=box, e=external_ids[name]: _synced(b, e))
        loop.wait_for(
            "both accounts' inboxes drained and their runs finished",
            lambda: (
                ledger.inbox_status().depth == 0
                and all(r.status in FINISHED for name in SENSORS for r in _runs_of(loop, name))
            ),
        )

        received = _inbox_events(ledger)
        for name, box in boxes.items():
            assert amount(box.netsuite("invoice")[external_ids[name]]) == Decimal(invoices[name].total) / 100
            runs = _runs_of(loop, name)
            assert runs and all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
            job = "stripe_to_netsuite" if name == "us" else "stripe_eu_to_netsuite"
            assert {r.job_name for r in runs} == {job}
            # Every event a run of this account's sensor was made for came through this account's endpoint.
            tagged = {e for r in runs for e in r.tags[EVENTS_TAG].split(",") if e}
            own = {e for e, account in received.items() if account == (None if name == "us" else name)}
            assert tagged and tagged <= own, (name, tagged - own)
        assert set(received.values()) == {None, "eu"}

        # An event signed with the wrong account's secret is refused at either endpoint, and stores nothing.
        event = {"id": "evt_forged", "object": "event", "type": "invoice.paid", "created": int(time.time())}
        body = json.dumps({**event, "data": {"object": {"id": invoices["eu"].id}}}).encode()
        forged = {
            "eu's event at us's endpoint": (receiver.endpoint, WEBHOOK_SECRETS["eu"]),
            "us's secret at eu's endpoint": (receiver.endpoint + "/eu", WEBHOOK_SECRETS["us"]),
        }
        for what, (url, secret) in forged.items():
            answer = requests.post(
                url, data=body, timeout=10, headers={"Stripe-Signature": sign(body, secret, int(time.time()))}
            )
            assert answer.status_code == 400, what
            assert "No signatures found matching" in answer.json()["error"], what
        assert "evt_forged" not in _inbox_events(ledger)


# -- one NetSuite pool for every account ----------------------------------------------------------------------------

NETSUITE_CONCURRENCY = 2
BLOCKED = f"Step blocked by limit for pool {NETSUITE_POOL}"


def _step_windows(instance: dg.DagsterInstance, run: dg.DagsterRun, steps: set[str]) -> dict[str, tuple[float, float]]:
    """When each of `steps` ran in `run`: its STEP_START to its STEP_SUCCESS (or failure)."""
    events = instance.all_logs(
        run.run_id,
        of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_FAILURE},
    )
    started = {e.step_key: e.timestamp for e in events if e.dagster_event_type == dg.DagsterEventType.STEP_START}
    ended = {e.step_key: e.timestamp for e in events if e.dagster_event_type != dg.DagsterEventType.STEP_START}
    return {s: (started[s], ended[s]) for s in steps if s in started}


def _finished(loop: Loop, jobs: tuple[str, ...]) -> list[dg.DagsterRun] | None:
    runs = [r for r in loop.instance.get_runs() if r.job_name in jobs]
    return runs if len(runs) == len(jobs) and all(r.status in FINISHED for r in runs) else None


def test_both_accounts_runs_at_once_take_turns_in_the_one_netsuite_pool(
    two_accounts, postgres_database_url, monkeypatch, tmp_path
):
    from sqlalchemy.engine import make_url

    from sync_pipeline.definitions import defs

    for name, box in two_accounts.items():
        _seed_day(box, *ACTIVITY[name])
    box = two_accounts["us"]
    # The production instance file: PostgreSQL storage, the queued run coordinator, pool netsuite_api limit 1.
    url = make_url(postgres_database_url)
    pg = {"HOST": url.host, "PORT": str(url.port), "USER": url.username, "PASSWORD": "", "DB": url.database}
    for name, value in {**{f"DAGSTER_PG_{k}": v for k, v in pg.items()}, "NETSUITE_CONCURRENCY": "2"}.items():
        monkeypatch.setenv(name, value)
    shutil.copy(ROOT / "deploy" / "dagster-postgres.yaml", box.home / "dagster.yaml")
    # Slow enough that a step's requests overlap, and two steps' would if the pool let them run together.
    box.configure_netsuite(latency_ms=40)
    requests.post(f"{box.netsuite_url}/_sandbox/stats/reset", timeout=10).raise_for_status()
    loop = Loop(box, "", Ledger(os.environ["SYNC_DATABASE_URL"]), dict(os.environ), tmp_path / "daemon.log")
    jobs = ("stripe_to_netsuite", "stripe_eu_to_netsuite")
    try:
        # Both runs queued before the daemon starts, so its run coordinator launches them together, each in its own
        # process with the default multiprocess executor.
        for job in jobs:
            subprocess.run(
                [str(Path(sys.executable).with_name("dagster")), "job", "launch", "-w", str(ROOT / "workspace.yaml")]
                + ["-j", job, "--tags", json.dumps({"dagster/partition": DAY.isoformat()})],
                env=loop.env,
                cwd=ROOT,
                check=True,
                capture_output=True,
            )
        loop.start_daemon()
        runs = loop.wait_for("both accounts' runs to finish", lambda: _finished(loop, jobs), timeout=600)
        stats = box.netsuite_stats()

        assert {r.job_name: r.status for r in runs} == dict.fromkeys(jobs, dg.DagsterRunStatus.SUCCESS)
        assert len(box.netsuite("invoice")) == 4, "each account's two invoices, exactly once"
        records = {r.run_id: loop.instance.get_run_record_by_id(r.run_id) for r in runs}
        first_end = min(rec.end_time for rec in records.values())
        assert max(rec.start_time for rec in records.values()) < first_end, "the two runs did not run at once"
        pooled = {
            job: {n.name for n in defs().resolve_job_def(job).graph.nodes if n.definition.pool == NETSUITE_POOL}
            for job in jobs
        }
        windows = {r.job_name: _step_windows(loop.instance, r, pooled[r.job_name]) for r in runs}
        assert all(len(w) >= 5 for w in windows.values()), windows
        # One NetSuite step at a time across both accounts: no two pool steps' windows overlap.
        ordered = sorted(w for ws in windows.values() for w in ws.values())
        overlaps = [(a, b) for a, b in zip(ordered, ordered[1:], strict=False) if b[0] < a[1]]
        assert not overlaps, overlaps
        # And the accounts competed for it: a step of one account, blocked by the pool, started only after a step of
        # the other account had run in the meantime.
        waited = [
            (r.job_name, windows[r.job_name][e.step_key][0], e.timestamp)
            for r in runs
            for e in loop.instance.all_logs(r.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
            if e.message == BLOCKED and e.step_key in windows[r.job_name]
        ]
        assert any(
            blocked_at < end and begin < started
            for job, started, blocked_at in waited
            for other, ws in windows.items()
            if other != job
            for begin, end in ws.values()
        ), (waited, windows)
        # The NetSuite stand-in never saw more requests at once than the client's limit allows one step.
        assert 1 <= stats["peak_concurrency"] <= NETSUITE_CONCURRENCY, stats["peak_concurrency"]
    finally:
        loop.stop_daemon()
        loop.instance.dispose()
