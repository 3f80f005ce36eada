"""Salesforce: accounts and opportunities, Closed-Won billing in Stripe, write-back of ids and status.

An opportunity is billed once, ever. Four things make that hold through repeated runs, a sensor run
racing a scheduled one, and a crash between a Stripe call and the ledger write:
- the ledger (`stripe`/`opportunity`/<opportunity id>) is checked first, and the Stripe ids written
  back onto the opportunity count as billed even when the ledger is gone;
- every Stripe write is preceded by a look-up by metadata (`salesforce_opportunity_id`,
  `salesforce_account_id`), because Idempotency-Keys expire after 24 hours;
- every Stripe write carries an Idempotency-Key made of the Salesforce id and the action, so two
  runs racing each other get the same object back;
- the opportunity cursor moves only after billing finished, so a crashed run is re-read.
"""

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import pandas as pd
import stripe as stripe_sdk

from sync_pipeline.errors import SyncIssue, make_issue
from sync_pipeline.mapping import salesforce as sfm
from sync_pipeline.mapping.external_ids import netsuite_external_id
from sync_pipeline.mapping.field_mapping import SalesforceConfig
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import ExceptionRow, Ledger, LedgerEntry, LedgerResource, content_hash
from sync_pipeline.resources.salesforce import SalesforceResource, SaveResult
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.schemas.salesforce import validate_plans

GROUP = "salesforce"
ACCOUNT_CURSOR = "salesforce_accounts"
OPPORTUNITY_CURSOR = "salesforce_opportunities"
# Records committed in the same second as the last run, or by a long transaction, can carry a
# SystemModstamp a little older than the high-water mark: re-read a short window every time.
LOOK_BACK = dt.timedelta(minutes=5)
BILLED, ALREADY_BILLED, CHANGED, QUARANTINED, FAILED = "billed", "already_billed", "changed_after_billing", \
    "quarantined", "failed"
BEFORE_START = "closed_before_billing_start"
WRITTEN, UNCHANGED = "written", "unchanged"
BILLED_ONCE_CHECK = "billed_once"
OUTCOME_COLUMNS = ["opportunity_id", "account_id", "action", "stripe_customer_id", "stripe_id", "mode", "currency",
                   "amount", "error_code", "field", "message", "fix"]
WRITEBACK_COLUMNS = ["sobject", "record_id", "action", "stripe_id", "billing_status", "netsuite_id", "error_code",
                     "message", "fix"]

ADDRESS = ", ".join(f"Account.{name}" for name in sfm.ADDRESS_FIELDS)
OPPORTUNITY_FIELDS = (
    "Id, Name, AccountId, Account.Name, Account.Stripe_Customer_Id__c, " + ADDRESS + ", StageName, IsWon, Amount, "
    "CurrencyIsoCode, CloseDate, SystemModstamp, Stripe_Subscription_Id__c, Stripe_Invoice_Id__c, "
    "NetSuite_Invoice_Id__c, Billing_Status__c, (SELECT Id, Product2Id, Product2.Name, Quantity, UnitPrice, "
    "TotalPrice FROM OpportunityLineItems ORDER BY Id)"
)
ACCOUNT_FIELDS = ("Id, Name, " + ", ".join(sfm.ADDRESS_FIELDS) +
                  ", Stripe_Customer_Id__c, NetSuite_Customer_Id__c, SystemModstamp")
OPPORTUNITY_SNAPSHOT_COLUMNS = ["Id", "Name", "AccountId", "AccountName", "AccountStripeCustomerId", "StageName",
                                "IsWon", "Amount", "CurrencyIsoCode", "SystemModstamp", "Stripe_Subscription_Id__c",
                                "Stripe_Invoice_Id__c", "opportunity_json"]


# -- reading Salesforce ----------------------------------------------------------------------------------

def parse_modstamp(value: str) -> dt.datetime:
    """Salesforce's `2026-11-24T08:00:00.000+0000` as an aware datetime."""
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z")


def soql_datetime(moment: dt.datetime) -> str:
    return moment.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def modified_since(cursor: str | None, look_back: dt.timedelta = LOOK_BACK) -> str:
    """The WHERE clause of an incremental read: everything changed since the high-water mark minus a look-back."""
    if not cursor:
        return ""
    return f" WHERE SystemModstamp >= {soql_datetime(parse_modstamp(cursor) - look_back)}"


def newest_modstamp(records: Iterable[Mapping[str, Any]], current: str | None) -> str | None:
    stamps = [r["SystemModstamp"] for r in records if r.get("SystemModstamp")]
    if current:
        stamps.append(current)
    return max(stamps, key=parse_modstamp) if stamps else None


def read_opportunities(salesforce: SalesforceResource, where: str) -> list[dict[str, Any]]:
    soql = f"SELECT {OPPORTUNITY_FIELDS} FROM Opportunity{where} ORDER BY SystemModstamp, Id"
    opportunities = []
    for record in salesforce.query_all(soql):
        flat = sfm.flatten_opportunity(record)
        flat["AccountStripeCustomerId"] = (record.get("Account") or {}).get("Stripe_Customer_Id__c")
        opportunities.append(flat)
    return opportunities


def read_opportunities_by_id(salesforce: SalesforceResource, ids: Sequence[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for start in range(0, len(ids), 200):  # keeps the SOQL well under its 100,000-character limit
        quoted = ", ".join(f"'{i}'" for i in ids[start:start + 200] if i.isalnum())
        if quoted:
            found.extend(read_opportunities(salesforce, f" WHERE Id IN ({quoted})"))
    return found


def opportunity_frame(opportunities: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    rows = [{**{c: (str(o.get(c)) if o.get(c) is not None else None) for c in OPPORTUNITY_SNAPSHOT_COLUMNS[:-1]},
             "IsWon": bool(o.get("IsWon")), "opportunity_json": json.dumps(o, default=str, sort_keys=True)}
            for o in opportunities]
    return pd.DataFrame(rows, columns=OPPORTUNITY_SNAPSHOT_COLUMNS)


def opportunities_from_frame(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [json.loads(text) for text in frame["opportunity_json"]] if len(frame) else []


# -- billing ---------------------------------------------------------------------------------------------

@dataclass
class BillingReport:
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    stripe_writes: int = 0

    def add(self, plan: sfm.BillingPlan | None, opportunity_id: str, action: str, *, customer: str | None = None,
            stripe_id: str | None = None, issue: SyncIssue | None = None) -> None:
        self.outcomes.append({
            "opportunity_id": opportunity_id, "account_id": plan.account_id if plan else None, "action": action,
            "stripe_customer_id": customer, "stripe_id": stripe_id, "mode": plan.mode if plan else None,
            "currency": plan.currency if plan else None,
            "amount": plan.amount_text if plan else None,
            "error_code": issue.error_code if issue else None, "field": issue.field if issue else None,
            "message": issue.message if issue else None, "fix": issue.fix if issue else None,
        })

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.outcomes, columns=OUTCOME_COLUMNS)

    def counts(self) -> dict[str, int]:
        actions = [o["action"] for o in self.outcomes]
        return {a: actions.count(a) for a in (BILLED, ALREADY_BILLED, CHANGED, QUARANTINED, FAILED, BEFORE_START)}


class StripeBilling:
    """The Stripe side of billing one plan: look up by metadata, else create with an Idempotency-Key."""

    def __init__(self, stripe: StripeResource, ledger: Ledger, on_write: Callable[[], None] = lambda: None):
        self.stripe = stripe
        self.ledger = ledger
        self.on_write = on_write

    def _read(self, call: Callable[[], Any], description: str) -> Any:
        # The resource's call path: one retry policy (Retry-After honoured), a refused key stops the step.
        return self.stripe._call(call, description)

    def _list(self, collection: Any, params: dict[str, Any], description: str) -> list[dict[str, Any]]:
        page_params = {**params, "limit": 100}
        return self._read(lambda: [o.to_dict() for o in collection.list(page_params).auto_paging_iter()],
                          description)

    def prices(self, price_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The Stripe prices the mapping names (archived ones too, so validation can say so)."""
        wanted = set(price_ids)
        if not wanted:
            return {}
        prices = self.stripe.get_client().v1.prices
        return {p["id"]: p for p in self._list(prices, {}, "GET /v1/prices") if p["id"] in wanted}

    def customer_for(self, plan: sfm.BillingPlan, known: str | None) -> str:
        entry = self.ledger.lookup(sfm.STRIPE_TARGET, sfm.STRIPE_CUSTOMER, [plan.account_id]).get(plan.account_id)
        if entry is not None:
            return entry.internal_id
        if known:
            return known
        query = f"metadata['salesforce_account_id']:'{plan.account_id}'"
        found = next(iter(self.stripe.search_customers(query)), None)
        if found is not None:
            return str(found["id"])
        self.on_write()
        created = self.stripe.create_customer(sfm.customer_params(plan),
                                              idempotency_key=sfm.idempotency_key(plan.account_id, "customer"))
        return str(created["id"])

    def subscriptions_of(self, customer_id: str) -> list[dict[str, Any]]:
        subscriptions = self.stripe.get_client().v1.subscriptions
        return self._list(subscriptions, {"customer": customer_id, "status": "all"}, "GET /v1/subscriptions")

    def subscription(self, plan: sfm.BillingPlan, customer_id: str) -> str:
        existing = sfm.find_by_metadata(self.subscriptions_of(customer_id), "salesforce_opportunity_id",
                                        plan.opportunity_id)
        if existing is not None:
            return str(existing["id"])
        self.on_write()
        created = self.stripe.create_subscription(
            sfm.subscription_params(plan, customer_id),
            idempotency_key=sfm.idempotency_key(plan.opportunity_id, sfm.SUBSCRIPTION))
        return str(created["id"])

    def invoice(self, plan: sfm.BillingPlan, customer_id: str) -> str:
        invoice = sfm.find_by_metadata(self.stripe.list_invoices(customer=customer_id), "salesforce_opportunity_id",
                                       plan.opportunity_id)
        if invoice is None:
            self.on_write()
            invoice = self.stripe.create_invoice(sfm.invoice_params(plan, customer_id),
                                                 idempotency_key=sfm.idempotency_key(plan.opportunity_id, "invoice"))
        if invoice.get("status") != "draft":
            return str(invoice["id"])
        items = self._list(self.stripe.get_client().v1.invoice_items, {"invoice": invoice["id"]},
                           "GET /v1/invoiceitems")
        for line in plan.one_time_lines:
            if sfm.find_by_metadata(items, "salesforce_line_id", line.line_id) is None:
                self.on_write()
                self.stripe.create_invoice_item(
                    sfm.invoice_item_params(plan, line, customer_id, invoice["id"]),
                    idempotency_key=sfm.idempotency_key(plan.opportunity_id, f"item-{line.line_id}"))
        self.on_write()
        finalized = self.stripe.finalize_invoice(invoice["id"],
                                                 idempotency_key=sfm.idempotency_key(plan.opportunity_id, "finalize"))
        return str(finalized["id"])

    def count_billings(self, opportunity_id: str, customer_id: str) -> int:
        """The opportunity's subscriptions and one-off invoices in Stripe (listed, so never stale as search can be)."""
        subscriptions = self.subscriptions_of(customer_id)
        one_off = [i for i in self.stripe.list_invoices(customer=customer_id)
                   if not (i.get("parent") or {}).get("subscription_details")]
        return sum(1 for o in (*subscriptions, *one_off)
                   if (o.get("metadata") or {}).get("salesforce_opportunity_id") == opportunity_id)

    def retrieve_subscription(self, subscription_id: str) -> dict[str, Any]:
        client = self.stripe.get_client()
        return self._read(lambda: client.v1.subscriptions.retrieve(subscription_id).to_dict(),
                          f"GET /v1/subscriptions/{subscription_id}")

    def billed_metadata(self, stripe_id: str) -> dict[str, str]:
        found = (self.retrieve_subscription(stripe_id) if stripe_id.startswith("sub_")
                 else self.stripe.retrieve_invoice(stripe_id))
        return dict(found.get("metadata") or {})


def _exception(issue: SyncIssue, target: str = sfm.STRIPE_TARGET) -> ExceptionRow:
    return ExceptionRow(target=target, **issue.exception_fields())


def _stripe_failure(plan: sfm.BillingPlan, error: Exception) -> SyncIssue:
    detail = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return make_issue("STRIPE_BILLING_FAILED", record_type=sfm.BILLED_OPPORTUNITY, external_id=plan.opportunity_id,
                      source_id=plan.account_id or None, action=f"the {plan.mode} of the opportunity",
                      detail=detail[:500])


def _changed_issue(plan: sfm.BillingPlan, billing: StripeBilling, stripe_id: str) -> SyncIssue:
    try:
        changes = sfm.changes_since_billing(billing.billed_metadata(stripe_id), plan)
    except stripe_sdk.StripeError:
        changes = "products, quantities or amount changed"
    return make_issue("OPPORTUNITY_CHANGED_AFTER_BILLING", record_type=sfm.BILLED_OPPORTUNITY,
                      external_id=plan.opportunity_id, source_id=plan.account_id or None, field="Amount",
                      value=plan.amount, changes=changes, billed_as=stripe_id)


def bill_opportunities(opportunities: Sequence[Mapping[str, Any]], *, stripe: StripeResource, ledger: Ledger,
                       config: SalesforceConfig, run_id: str | None = None,
                       log: Callable[[str], None] = lambda _m: None) -> BillingReport:
    """Bill every Closed-Won opportunity not billed yet; report the rest. Never raises per opportunity."""
    report = BillingReport()
    billing = StripeBilling(stripe, ledger, on_write=lambda: setattr(report, "stripe_writes", report.stripe_writes + 1))
    won = {o["Id"]: o for o in opportunities if o.get("IsWon") in (True, "True", "true")}
    billed = ledger.lookup(sfm.STRIPE_TARGET, sfm.BILLED_OPPORTUNITY, list(won))
    exceptions: list[ExceptionRow] = []
    adopted: list[LedgerEntry] = []
    to_plan = []
    # Not to be billed (any more): an earlier exception about billing them no longer applies.
    settled = [o["Id"] for o in opportunities if o["Id"] not in won]
    for opportunity_id, opportunity in won.items():
        if _closed_before_start(opportunity, config):
            settled.append(opportunity_id)
            report.add(None, opportunity_id, BEFORE_START)
            continue
        entry = billed.get(opportunity_id)
        in_salesforce = sfm.is_billed_in_salesforce(opportunity)
        if entry is None and in_salesforce:
            # Billed before this ledger existed (or the ledger was lost): never bill it again.
            adopted.append(LedgerEntry(sfm.STRIPE_TARGET, sfm.BILLED_OPPORTUNITY, opportunity_id, in_salesforce,
                                       sfm.fingerprint(opportunity), run_id=run_id))
            report.add(None, opportunity_id, ALREADY_BILLED, stripe_id=in_salesforce)
            continue
        to_plan.append(opportunity)
    ledger.record_synced(adopted)

    prices = billing.prices(config.product_prices.values())
    plans = [sfm.plan_billing(o, config, prices) for o in to_plan]
    unbilled: list[sfm.BillingPlan] = []
    unchanged: list[str] = []
    for plan in plans:
        entry = billed.get(plan.opportunity_id)
        if entry is None:
            unbilled.append(plan)
        elif entry.content_hash == plan.fingerprint:
            unchanged.append(plan.opportunity_id)
            report.add(plan, plan.opportunity_id, ALREADY_BILLED, stripe_id=entry.internal_id)
        else:
            issue = _changed_issue(plan, billing, entry.internal_id)
            exceptions.append(_exception(issue))
            report.add(plan, plan.opportunity_id, CHANGED, stripe_id=entry.internal_id, issue=issue)

    # Exceptions are re-found below when they still hold; a restored edit or a fixed problem is closed here.
    ledger.resolve_exceptions(sfm.STRIPE_TARGET, sfm.BILLED_OPPORTUNITY,
                              [*settled, *unchanged, *(p.opportunity_id for p in unbilled)])
    validation = validate_plans(unbilled)
    exceptions.extend(_exception(issue) for issue in validation.issues)
    for issue in validation.issues:
        plan = next(p for p in unbilled if p.opportunity_id == issue.external_id)
        report.add(plan, plan.opportunity_id, QUARANTINED, issue=issue)

    known_customers = {o["Id"]: o.get("AccountStripeCustomerId") for o in to_plan}
    try:
        for plan in validation.valid:
            try:
                customer_id = billing.customer_for(plan, known_customers.get(plan.opportunity_id))
                stripe_id = (billing.subscription(plan, customer_id) if plan.mode == sfm.SUBSCRIPTION
                             else billing.invoice(plan, customer_id))
            except stripe_sdk.StripeError as error:
                issue = _stripe_failure(plan, error)
                exceptions.append(_exception(issue))
                report.add(plan, plan.opportunity_id, FAILED, issue=issue)
                continue
            # Written right after Stripe answered: a crash before this line is healed by the look-ups above.
            ledger.record_synced([
                LedgerEntry(sfm.STRIPE_TARGET, sfm.STRIPE_CUSTOMER, plan.account_id, customer_id,
                            content_hash({"customer": customer_id}), run_id=run_id),
                LedgerEntry(sfm.STRIPE_TARGET, sfm.BILLED_OPPORTUNITY, plan.opportunity_id, stripe_id,
                            plan.fingerprint, source_id=customer_id, run_id=run_id),
            ])
            report.add(plan, plan.opportunity_id, BILLED, customer=customer_id, stripe_id=stripe_id)
            log(f"opportunity {plan.opportunity_id} billed as {stripe_id} (customer {customer_id})")
    finally:
        # A refused Stripe key (AccessDenied) stops the loop; what was found before it stays on record.
        ledger.record_exceptions(exceptions, run_id=run_id)
    return report


def _closed_before_start(opportunity: Mapping[str, Any], config: SalesforceConfig) -> bool:
    start, closed = config.bill_closed_won_from, opportunity.get("CloseDate")
    return start is not None and bool(closed) and dt.date.fromisoformat(str(closed)[:10]) < start


def retry_queue(ledger: Ledger) -> list[str]:
    """Opportunities whose billing is held back by an open exception: re-read them until they bill."""
    return sorted({row["external_id"] for row in ledger.open_exceptions(target=sfm.STRIPE_TARGET)
                   if row["record_type"] == sfm.BILLED_OPPORTUNITY
                   and row["error_code"] != "OPPORTUNITY_CHANGED_AFTER_BILLING"})


# -- write-back ------------------------------------------------------------------------------------------

@dataclass
class WritebackReport:
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    salesforce_records_written: int = 0

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.outcomes, columns=WRITEBACK_COLUMNS)

    def counts(self) -> dict[str, int]:
        actions = [o["action"] for o in self.outcomes]
        return {a: actions.count(a) for a in (WRITTEN, UNCHANGED, QUARANTINED, FAILED)}


@dataclass(frozen=True)
class _Writeback:
    sobject: str
    record_id: str
    by_field: str  # the external-id field the upsert matches on
    record: dict[str, Any]
    stripe_id: str
    status: str | None = None
    netsuite_id: str | None = None


def _refunded_minor(invoice: Mapping[str, Any]) -> int:
    refunded = 0
    for payment in (invoice.get("payments") or {}).get("data") or []:
        intent = (payment.get("payment") or {}).get("payment_intent")
        charge = intent.get("latest_charge") if isinstance(intent, dict) else None
        if isinstance(charge, dict):
            refunded += int(charge.get("amount_refunded") or 0)
    return max(refunded, int(invoice.get("post_payment_credit_notes_amount") or 0))


def current_invoice(billing: StripeBilling, stripe_id: str) -> dict[str, Any] | None:
    """The invoice whose state the opportunity shows: its own, or its subscription's latest."""
    invoice_id = stripe_id
    if stripe_id.startswith("sub_"):
        subscription = billing.retrieve_subscription(stripe_id)
        latest = subscription.get("latest_invoice")
        invoice_id = latest.get("id") if isinstance(latest, dict) else latest
        if not invoice_id:
            return None
    return billing.stripe.retrieve_invoice(invoice_id, expand=["payments.data.payment.payment_intent.latest_charge"])


def _netsuite_ids(ledger: Ledger, record_type: str, stripe_ids: Iterable[str]) -> dict[str, str]:
    external = {netsuite_external_id(s): s for s in stripe_ids if s}
    found = ledger.lookup("netsuite", record_type, list(external))
    return {external[e]: entry.internal_id for e, entry in found.items()}


def writeback_hash(record: Mapping[str, Any], record_id: str) -> str:
    """The ledger hash of a write-back, the same whichever field the upsert matched on."""
    return content_hash({**record, "Id": record_id})


def _settled(entry: LedgerEntry, written: Mapping[str, LedgerEntry], netsuite_invoices: Mapping[str, str]) -> bool:
    """A one-off invoice Salesforce already shows as refunded or void cannot change again: Stripe need not be asked."""
    known = written.get(entry.external_id)
    if known is None or not entry.internal_id.startswith("in_"):
        return False
    netsuite_id = netsuite_invoices.get(entry.internal_id)
    return any(writeback_hash(sfm.opportunity_writeback(entry.external_id, entry.internal_id, status, netsuite_id),
                              entry.external_id) == known.content_hash for status in sfm.FINAL_STATUSES)


def plan_writebacks(ledger: Ledger, billing: StripeBilling, now: int) -> list[_Writeback]:
    """What Salesforce should show for every billed opportunity and its account, from Stripe's current state."""
    stripe_entries = ledger.entries(target=sfm.STRIPE_TARGET)
    billed = [e for e in stripe_entries if e.record_type == sfm.BILLED_OPPORTUNITY]
    customers = [e for e in stripe_entries if e.record_type == sfm.STRIPE_CUSTOMER]
    written = {e.external_id: e for e in ledger.entries(target=sfm.SALESFORCE_TARGET) if e.record_type == "Opportunity"}
    one_off = [e.internal_id for e in billed if e.internal_id.startswith("in_")]
    netsuite_invoices = _netsuite_ids(ledger, "invoice", one_off)
    active = [e for e in billed if not _settled(e, written, netsuite_invoices)]
    invoices = {e.external_id: current_invoice(billing, e.internal_id) for e in active}
    netsuite_invoices.update(_netsuite_ids(ledger, "invoice", [i["id"] for i in invoices.values()
                                                               if i and i["id"] not in netsuite_invoices]))
    netsuite_customers = _netsuite_ids(ledger, "customer", [e.internal_id for e in customers])
    plans = []
    for entry in active:
        invoice = invoices[entry.external_id]
        status = sfm.billing_status(invoice, _refunded_minor(invoice), now) if invoice else sfm.NOT_BILLED
        netsuite_id = netsuite_invoices.get(invoice["id"]) if invoice else None
        record = sfm.opportunity_writeback(entry.external_id, entry.internal_id, status, netsuite_id)
        by_field = "Id"
        if entry.external_id in written:
            # The opportunity holds its Stripe id already: match on it, as an external id.
            by_field = next(k for k in record if k.startswith("Stripe_"))
            record.pop("Id")
        plans.append(_Writeback("Opportunity", entry.external_id, by_field, record, entry.internal_id, status,
                                netsuite_id))
    for entry in customers:
        netsuite_id = netsuite_customers.get(entry.internal_id)
        plans.append(_Writeback("Account", entry.external_id, "Id",
                                sfm.account_writeback(entry.external_id, entry.internal_id, netsuite_id),
                                entry.internal_id, None, netsuite_id))
    return plans


def _writeback_issue(item: _Writeback, result: SaveResult) -> SyncIssue:
    record_type = item.sobject.lower()
    codes = {str(e.get("statusCode") or e.get("errorCode")) for e in result.errors}
    if "DUPLICATE_EXTERNAL_ID" in codes and item.by_field != "Id":
        ids = sfm.duplicate_ids(result.errors)
        return make_issue("SALESFORCE_DUPLICATE_MATCH", record_type=record_type, external_id=item.record_id,
                          source_id=item.stripe_id, field=f"{item.sobject}.{item.by_field}", value=item.stripe_id,
                          record_ids=", ".join(ids) or "ids not given")
    detail = "; ".join(f"{e.get('statusCode') or e.get('errorCode')}: {e.get('message')}" for e in result.errors)
    return make_issue("SALESFORCE_WRITE_REJECTED", record_type=record_type, external_id=item.record_id,
                      source_id=item.stripe_id, detail=detail or "no detail")


def write_back(salesforce: SalesforceResource, ledger: Ledger, billing: StripeBilling, *,
               run_id: str | None = None, now: int | None = None) -> WritebackReport:
    """Upsert the Stripe ids, NetSuite ids and billing status onto Salesforce; unchanged records are skipped."""
    report = WritebackReport()
    plans = plan_writebacks(ledger, billing, int(now if now is not None else time.time()))
    done = {(e.record_type, e.external_id): e for e in ledger.entries(target=sfm.SALESFORCE_TARGET)}
    groups: dict[tuple[str, str], list[_Writeback]] = {}
    for item in plans:
        digest = writeback_hash(item.record, item.record_id)
        known = done.get((item.sobject, item.record_id))
        if known is not None and known.content_hash == digest:
            report.outcomes.append(_outcome(item, UNCHANGED))
            continue
        groups.setdefault((item.sobject, item.by_field), []).append(item)
    exceptions: list[ExceptionRow] = []
    synced: list[LedgerEntry] = []
    for (sobject, by_field), items in groups.items():
        # sObject collections: 200 records a request, one SaveResult per record.
        results = salesforce.upsert_many(sobject, by_field, [item.record for item in items])
        for item, result in zip(items, results, strict=True):
            if result.success:
                report.salesforce_records_written += 1
                synced.append(LedgerEntry(sfm.SALESFORCE_TARGET, sobject, item.record_id, result.id or item.record_id,
                                          writeback_hash(item.record, item.record_id),
                                          source_id=item.stripe_id, run_id=run_id))
                report.outcomes.append(_outcome(item, WRITTEN))
            else:
                issue = _writeback_issue(item, result)
                exceptions.append(_exception(issue, sfm.SALESFORCE_TARGET))
                report.outcomes.append(_outcome(item, QUARANTINED, issue))
    ledger.record_synced(synced)
    ledger.record_exceptions(exceptions, run_id=run_id)
    return report


def _outcome(item: _Writeback, action: str, issue: SyncIssue | None = None) -> dict[str, Any]:
    return {"sobject": item.sobject, "record_id": item.record_id, "action": action, "stripe_id": item.stripe_id,
            "billing_status": item.status, "netsuite_id": item.netsuite_id,
            "error_code": issue.error_code if issue else None, "message": issue.message if issue else None,
            "fix": issue.fix if issue else None}


# -- assets ----------------------------------------------------------------------------------------------

def _problems_markdown(outcomes: pd.DataFrame, id_column: str, limit: int = 10) -> str:
    problems = outcomes[outcomes["error_code"].notna()]
    if problems.empty:
        return "No exceptions."
    table = problems.head(limit)[[id_column, "error_code", "message", "fix"]].to_markdown(index=False)
    return table + (f"\n\n…and {len(problems) - limit} more in `sync_exceptions`." if len(problems) > limit else "")


@dg.asset(group_name=GROUP, description="Salesforce Accounts changed since the last run (SystemModstamp high-water "
                                        "mark with a look-back), as a snapshot.")
def salesforce_accounts(context: dg.AssetExecutionContext, salesforce: SalesforceResource,
                        ledger: LedgerResource) -> pd.DataFrame:
    store = ledger.get_ledger()
    cursor = store.get_cursor(ACCOUNT_CURSOR)
    records = list(salesforce.query_all(f"SELECT {ACCOUNT_FIELDS} FROM Account{modified_since(cursor)} "
                                        "ORDER BY SystemModstamp, Id"))
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "attributes"} for r in records],
                         columns=[c.strip() for c in ACCOUNT_FIELDS.split(",")]).astype(object)
    newest = newest_modstamp(records, cursor)
    if newest:
        store.set_cursor(ACCOUNT_CURSOR, newest)
    context.add_output_metadata({"accounts": len(frame), "high_water_mark": newest or "", "since": cursor or ""})
    return frame


@dg.asset(group_name=GROUP, description="Salesforce Opportunities (with line items and their Account) changed since "
                                        "the last billing run; the cursor moves when billing has finished.")
def salesforce_opportunities(context: dg.AssetExecutionContext, salesforce: SalesforceResource,
                             ledger: LedgerResource) -> pd.DataFrame:
    cursor = ledger.get_ledger().get_cursor(OPPORTUNITY_CURSOR)
    opportunities = read_opportunities(salesforce, modified_since(cursor))
    frame = opportunity_frame(opportunities)
    context.add_output_metadata({"opportunities": len(frame), "closed_won": int(frame["IsWon"].sum()),
                                 "since": cursor or ""})
    return frame


def billed_once_check(billing: StripeBilling, report: BillingReport) -> dg.AssetCheckResult:
    """Each opportunity billed by this run has exactly one subscription or one-off invoice in Stripe."""
    counts = {o["opportunity_id"]: billing.count_billings(o["opportunity_id"], o["stripe_customer_id"])
              for o in report.outcomes if o["action"] == BILLED}
    wrong = {opportunity: n for opportunity, n in counts.items() if n != 1}
    return dg.AssetCheckResult(
        check_name=BILLED_ONCE_CHECK, passed=not wrong,
        metadata={"checked": len(counts), "not_exactly_once": dg.MetadataValue.json(wrong)},
        description=", ".join(f"{o} is billed {n} times in Stripe" for o, n in wrong.items()) or None,
    )


@dg.asset(group_name=GROUP, description="Each Closed-Won opportunity billed once in Stripe: a customer for its "
                                        "Account, then a subscription (recurring prices) or a one-off invoice.",
          check_specs=[dg.AssetCheckSpec(BILLED_ONCE_CHECK, asset="stripe_billing_from_opportunities",
                                         description="Every opportunity billed by the run has exactly one Stripe "
                                                     "subscription or one-off invoice (listed by customer).")])
def stripe_billing_from_opportunities(context: dg.AssetExecutionContext, salesforce_opportunities: pd.DataFrame,
                                      salesforce: SalesforceResource, stripe: StripeResource, ledger: LedgerResource,
                                      field_mapping: FieldMappingResource):
    store = ledger.get_ledger()
    opportunities = opportunities_from_frame(salesforce_opportunities)
    seen = {o["Id"] for o in opportunities}
    retry = [i for i in retry_queue(store) if i not in seen]
    opportunities += read_opportunities_by_id(salesforce, retry)
    report = bill_opportunities(opportunities, stripe=stripe, ledger=store, config=field_mapping.load().salesforce,
                                run_id=context.run.run_id, log=context.log.info)
    # Only now: a run that died above re-reads the same window next time.
    newest = newest_modstamp(opportunities_from_frame(salesforce_opportunities), store.get_cursor(OPPORTUNITY_CURSOR))
    if newest:
        store.set_cursor(OPPORTUNITY_CURSOR, newest)
    frame = report.frame()
    failed = report.counts()[FAILED]
    if failed:
        raise dg.Failure(description=f"{failed} opportunity billing(s) failed in Stripe; see sync_exceptions "
                                     f"(retried on the next run): {report.counts()}")
    yield dg.Output(frame, metadata={**report.counts(), "stripe_writes": report.stripe_writes, "retried": len(retry),
                                     "high_water_mark": newest or "",
                                     "exceptions": dg.MetadataValue.md(_problems_markdown(frame, "opportunity_id"))})
    yield billed_once_check(StripeBilling(stripe, store), report)


@dg.asset(group_name=GROUP, deps=[stripe_billing_from_opportunities],
          description="Stripe and NetSuite ids and Billing_Status__c written back onto Salesforce Accounts and "
                      "Opportunities (external-id upserts in sObject collections), kept current with the invoice.")
def salesforce_billing_writeback(context: dg.AssetExecutionContext, salesforce: SalesforceResource,
                                 stripe: StripeResource, ledger: LedgerResource) -> pd.DataFrame:
    store = ledger.get_ledger()
    report = write_back(salesforce, store, StripeBilling(stripe, store), run_id=context.run.run_id)
    frame = report.frame()
    context.add_output_metadata({**report.counts(), "salesforce_records_written": report.salesforce_records_written,
                                 "exceptions": dg.MetadataValue.md(_problems_markdown(frame, "record_id"))})
    return frame
