"""End-to-end harness: the Stripe and NetSuite stand-ins over HTTP, real Dagster materializations."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import dagster as dg
import requests
import stripe

from sync_pipeline.sandbox.netsuite import start_netsuite
from sync_pipeline.sandbox.netsuite.jsonio import dumps as netsuite_json
from sync_pipeline.sandbox.stripe import start_stripe

# Two days before the session started (UTC): a complete past day inside the partition range. Read from the
# clock once, so a session that runs past midnight keeps one day; relative rather than fixed, because the
# stand-ins and the pipeline compare some dates with the real clock (Stripe's 30-day Events API, invoices
# due 30 days after DAY that must still read "Invoiced" in Salesforce).
DAY = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=2)


def at(day: dt.date, hour: int, minute: int = 0) -> int:
    return int(dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC).timestamp())


@dataclass
class Sandbox:
    stripe_url: str
    netsuite_url: str
    client: stripe.StripeClient
    home: Path

    # -- Stripe activity, driven through the real SDK with the stand-in's clock -----------------
    def clock(self, when: int | None) -> None:
        body = {"now": when} if when is not None else {"real": True}
        requests.post(f"{self.stripe_url}/_sandbox/clock", json=body, timeout=10).raise_for_status()

    def customer(self, name: str, currency: str, **extra) -> str:
        return self.client.v1.customers.create(
            {"name": name, "email": f"{name.lower().replace(' ', '.')}@example.test", **extra}
        ).id

    def invoice(
        self,
        customer: str,
        currency: str,
        amounts: list[int],
        *,
        pay: str | None = "pm_card_visa",
        description: str = "Pro plan",
    ) -> stripe.Invoice:
        for amount in amounts:
            self.client.v1.invoice_items.create(
                {"customer": customer, "amount": amount, "currency": currency, "description": description}
            )
        invoice = self.client.v1.invoices.create(
            {"customer": customer, "currency": currency, "pending_invoice_items_behavior": "include"}
        )
        invoice = self.client.v1.invoices.finalize_invoice(invoice.id)
        if pay:
            try:
                invoice = self.client.v1.invoices.pay(invoice.id, {"payment_method": pay})
            except stripe.CardError:
                invoice = self.client.v1.invoices.retrieve(invoice.id)
        return invoice

    def charge_of(self, invoice_id: str) -> str:
        payments = self.client.v1.invoice_payments.list(
            {"invoice": invoice_id, "expand": ["data.payment.payment_intent"]}
        )
        return payments.data[0].payment.payment_intent.latest_charge

    # -- NetSuite, as the stand-in's inspection API shows it ---------------------------------------
    def netsuite(self, record_type: str) -> dict[str, dict]:
        body = requests.get(f"{self.netsuite_url}/_sandbox/records/{record_type}", timeout=10).json()
        return {r["externalId"]: r for r in body["records"] if r.get("externalId")}

    def netsuite_stats(self) -> dict:
        return requests.get(f"{self.netsuite_url}/_sandbox/stats", timeout=10).json()

    def netsuite_writes(self) -> int:
        return int(self.netsuite_stats()["writes_applied"])

    def configure_netsuite(self, **knobs) -> None:
        requests.post(f"{self.netsuite_url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()

    def configure_stripe(self, **knobs) -> None:
        requests.post(f"{self.stripe_url}/_sandbox/config", json=knobs, timeout=10).raise_for_status()

    # -- NetSuite changed behind the pipeline's back (someone editing records, an import) ---------------
    def edit_in_netsuite(self, record_type: str, external_id: str, fields: dict) -> dict:
        response = requests.patch(
            f"{self.netsuite_url}/_sandbox/records/{record_type}/eid:{external_id}",
            data=netsuite_json(fields),
            timeout=10,
        )
        response.raise_for_status()
        return response.json()

    def duplicate_in_netsuite(self, record_type: str, external_id: str) -> dict:
        response = requests.post(
            f"{self.netsuite_url}/_sandbox/records/{record_type}/eid:{external_id}/duplicate", timeout=10
        )
        response.raise_for_status()
        return response.json()

    # -- the pipeline ------------------------------------------------------------------------------
    def materialize(
        self,
        partition: dt.date = DAY,
        instance: dg.DagsterInstance | None = None,
        raise_on_error: bool = False,
        netsuite_retries: int | None = None,
    ) -> dg.ExecuteInProcessResult:
        """The day's Stripe → NetSuite assets; `netsuite_retries` caps NetSuite attempts (quick give-up tests)."""
        from sync_pipeline.definitions import ALL_ASSETS, build_resources

        resources = build_resources()
        if netsuite_retries is not None:
            # Built anew: Dagster configures a resource from its constructor arguments, not from a model_copy.
            netsuite = resources["netsuite"]
            fields = {name: getattr(netsuite, name) for name in type(netsuite).model_fields}
            resources["netsuite"] = type(netsuite)(**{**fields, "retry_max_attempts": netsuite_retries})
        return dg.materialize(
            ALL_ASSETS,
            partition_key=partition.isoformat(),
            resources=resources,
            instance=instance,
            raise_on_error=raise_on_error,
        )


def stop_process_group(process: subprocess.Popen) -> None:
    """A process started with `start_new_session=True` and everything it started (a webserver's code server, a code
    server's run workers, Chromium's helpers): TERM, then KILL."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def amount(record: dict, field: str = "total") -> Decimal:
    return Decimal(str(record[field]))


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return {k: v.value for k, v in result.asset_materializations_for_node(asset)[0].metadata.items()}


def step_failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    """Step key -> what the user reads as its error (a `dg.Failure`'s description, else the error message)."""
    failures = {}
    for event in result.all_events:
        if event.is_step_failure:
            data = event.step_failure_data
            user = data.user_failure_data
            failures[event.step_key] = user.description if user is not None and user.description else data.error.message
    return failures


def checks(result: dg.ExecuteInProcessResult) -> dict[tuple[str, str], dg.AssetCheckEvaluation]:
    return {(e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()}


@contextmanager
def running_sandbox(
    tmp_path: Path, monkeypatch, database_url: str | None = None, field_mapping: Path | None = None, **netsuite_config
) -> Iterator[Sandbox]:
    stripe_sandbox = start_stripe()
    netsuite_sandbox = start_netsuite(**netsuite_config)
    try:
        home = tmp_path / "dagster_home"
        home.mkdir()
        for name, value in {**stripe_sandbox.env(), **netsuite_sandbox.env()}.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        monkeypatch.setenv("SYNC_DATABASE_URL", database_url or f"sqlite:///{tmp_path / 'ledger.sqlite'}")
        if field_mapping is not None:
            monkeypatch.setenv("SYNC_FIELD_MAPPING", str(field_mapping))
        client = stripe.StripeClient(os.environ["STRIPE_API_KEY"], base_addresses={"api": stripe_sandbox.url})
        yield Sandbox(stripe_sandbox.url, netsuite_sandbox.url, client, home)
    finally:
        stripe_sandbox.stop()
        netsuite_sandbox.stop()
