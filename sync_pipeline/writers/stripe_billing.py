"""Billing Closed-Won Salesforce opportunities in Stripe, once each (Salesforce → Stripe).

An opportunity is billed once, ever. Four things make that hold through repeated runs, a sensor run
racing a scheduled one, and a crash between a Stripe call and the ledger write:
- the ledger (`stripe`/`opportunity`/<opportunity id>) is checked first, and the Stripe ids written
  back onto the opportunity count as billed even when the ledger is gone;
- every Stripe write is preceded by a look-up by metadata (`salesforce_opportunity_id`,
  `salesforce_account_id`), because Idempotency-Keys expire after 24 hours;
- every Stripe write carries an Idempotency-Key made of the Salesforce id and the action, so two
  runs racing each other get the same object back;
- the opportunity cursor moves only after billing finished, so a crashed run is re-read (the
  `stripe_billing_from_opportunities` asset moves it).

Every Stripe call goes through `StripeResource` (one retry policy; a refused key stops the step).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import stripe as stripe_sdk

from sync_pipeline.errors import SyncIssue, make_issue
from sync_pipeline.mapping import salesforce_writeback as writeback
from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.field_mapping import SalesforceConfig
from sync_pipeline.resources.ledger import ExceptionRow, Ledger, LedgerEntry
from sync_pipeline.resources.salesforce import SalesforceResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.schemas.stripe_billing import validate_plans
from sync_pipeline.writers.report import Action, Outcome, Report, exception_row

# The billing report's own columns, beside the outcome's.
DETAIL_COLUMNS = ("stripe_customer_id", "mode")


def read_opportunities(salesforce: SalesforceResource, where: str = "") -> list[dict[str, Any]]:
    """Opportunities (with line items and their Account) as `flatten_opportunity` makes them."""
    return [billing.flatten_opportunity(r) for r in salesforce.select("Opportunity", billing.OPPORTUNITY_FIELDS, where)]


def read_opportunities_by_id(salesforce: SalesforceResource, ids: Sequence[str]) -> list[dict[str, Any]]:
    return [
        billing.flatten_opportunity(r) for r in salesforce.select_by_ids("Opportunity", billing.OPPORTUNITY_FIELDS, ids)
    ]


class StripeBilling:
    """The Stripe side of billing one plan: look up by metadata, else create with an Idempotency-Key."""

    def __init__(self, stripe: StripeResource, ledger: Ledger):
        self.stripe = stripe
        self.ledger = ledger
        self.writes = 0

    def _writing(self) -> None:
        self.writes += 1

    def prices(self, price_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """The Stripe prices the mapping names (archived ones too, so validation can say so)."""
        wanted = set(price_ids)
        if not wanted:
            return {}
        return {p["id"]: p for p in self.stripe.list_prices() if p["id"] in wanted}

    def customer_for(self, plan: billing.BillingPlan, known: str | None) -> str:
        entry = self.ledger.lookup(billing.STRIPE_TARGET, billing.STRIPE_CUSTOMER, [plan.account_id]).get(
            plan.account_id
        )
        if entry is not None:
            return entry.internal_id
        if known:
            return known
        # Search can lag up to a minute behind a create, so two racing runs may both miss the customer; the
        # Idempotency-Key below then makes their creates one. https://docs.stripe.com/search#data-freshness
        query = f"metadata['salesforce_account_id']:'{plan.account_id}'"
        found = next(iter(self.stripe.search_customers(query)), None)
        if found is not None:
            return str(found["id"])
        self._writing()
        created = self.stripe.create_customer(
            billing.customer_params(plan), idempotency_key=billing.idempotency_key(plan.account_id, "customer")
        )
        return str(created["id"])

    def subscription(self, plan: billing.BillingPlan, customer_id: str) -> str:
        existing = billing.find_by_metadata(
            self.stripe.list_subscriptions(customer_id), "salesforce_opportunity_id", plan.opportunity_id
        )
        if existing is not None:
            return str(existing["id"])
        self._writing()
        created = self.stripe.create_subscription(
            billing.subscription_params(plan, customer_id),
            idempotency_key=billing.idempotency_key(plan.opportunity_id, billing.SUBSCRIPTION),
        )
        return str(created["id"])

    def invoice(self, plan: billing.BillingPlan, customer_id: str) -> str:
        invoice = billing.find_by_metadata(
            self.stripe.list_invoices(customer=customer_id), "salesforce_opportunity_id", plan.opportunity_id
        )
        if invoice is None:
            self._writing()
            invoice = self.stripe.create_invoice(
                billing.invoice_params(plan, customer_id),
                idempotency_key=billing.idempotency_key(plan.opportunity_id, "invoice"),
            )
        # Finalized already: nothing more to add. A draft is a run that stopped half-way: its missing items
        # are added (each looked up by line id first) and it is finalized.
        if invoice.get("status") != "draft":
            return str(invoice["id"])
        items = list(self.stripe.list_invoice_items(invoice["id"]))
        for line in plan.one_time_lines:
            if billing.find_by_metadata(items, "salesforce_line_id", line.line_id) is None:
                self._writing()
                self.stripe.create_invoice_item(
                    billing.invoice_item_params(plan, line, customer_id, invoice["id"]),
                    idempotency_key=billing.idempotency_key(plan.opportunity_id, f"item-{line.line_id}"),
                )
        self._writing()
        finalized = self.stripe.finalize_invoice(
            invoice["id"], idempotency_key=billing.idempotency_key(plan.opportunity_id, "finalize")
        )
        return str(finalized["id"])

    def billed_object(self, stripe_id: str) -> dict[str, Any]:
        """The subscription or one-off invoice that bills an opportunity, as Stripe has it now."""
        if stripe_id.startswith("sub_"):
            return dict(self.stripe.retrieve_subscription(stripe_id))
        return dict(self.stripe.retrieve_invoice(stripe_id))

    def billed_metadata(self, stripe_id: str) -> dict[str, str]:
        return dict(self.billed_object(stripe_id).get("metadata") or {})


def count_billings(stripe: StripeResource, opportunity_id: str, customer_id: str) -> int:
    """The opportunity's subscriptions and one-off invoices in Stripe (listed, so never stale as search can be)."""
    subscriptions = list(stripe.list_subscriptions(customer_id))
    one_off = [
        i for i in stripe.list_invoices(customer=customer_id) if not (i.get("parent") or {}).get("subscription_details")
    ]
    return sum(
        1
        for o in (*subscriptions, *one_off)
        if (o.get("metadata") or {}).get("salesforce_opportunity_id") == opportunity_id
    )


def _outcome(
    opportunity_id: str,
    action: Action,
    plan: billing.BillingPlan | None = None,
    *,
    customer: str | None = None,
    stripe_id: str | None = None,
    issue: SyncIssue | None = None,
) -> Outcome:
    return Outcome(
        billing.BILLED_OPPORTUNITY,
        opportunity_id,
        action,
        source_id=plan.account_id if plan else None,
        internal_id=stripe_id,
        currency=plan.currency if plan else "",
        amount_minor=(plan.amount_minor or 0) if plan else 0,
        issue=issue,
        detail={"stripe_customer_id": customer, "mode": plan.mode if plan else None},
    )


def _stripe_failure(plan: billing.BillingPlan, error: Exception) -> SyncIssue:
    detail = getattr(error, "user_message", None) or str(error) or type(error).__name__
    return make_issue(
        "STRIPE_BILLING_FAILED",
        record_type=billing.BILLED_OPPORTUNITY,
        external_id=plan.opportunity_id,
        source_id=plan.account_id or None,
        action=f"the {plan.mode} of the opportunity",
        detail=detail[:500],
    )


def _changed_issue(plan: billing.BillingPlan, stripe_billing: StripeBilling, stripe_id: str) -> SyncIssue:
    try:
        changes = billing.changes_since_billing(stripe_billing.billed_metadata(stripe_id), plan)
    except stripe_sdk.StripeError:
        changes = "products, quantities or amount changed"
    return make_issue(
        "OPPORTUNITY_CHANGED_AFTER_BILLING",
        record_type=billing.BILLED_OPPORTUNITY,
        external_id=plan.opportunity_id,
        source_id=plan.account_id or None,
        field="Amount",
        value=plan.amount,
        changes=changes,
        billed_as=stripe_id,
    )


def _closed_before_start(opportunity: Mapping[str, Any], config: SalesforceConfig) -> bool:
    start, closed = config.bill_closed_won_from, opportunity.get("CloseDate")
    return start is not None and bool(closed) and dt.date.fromisoformat(str(closed)[:10]) < start


def _won_to_plan(
    won: Mapping[str, Mapping[str, Any]],
    billed: Mapping[str, LedgerEntry],
    config: SalesforceConfig,
    report: Report,
    ledger: Ledger,
    run_id: str | None,
) -> tuple[list[Mapping[str, Any]], list[str]]:
    """The won opportunities to plan, and the ids of those closed before the billing start date.

    One billed before this ledger existed (or with the ledger lost) is adopted from the Stripe id written
    back onto it, and never billed again.
    """
    adopted: list[LedgerEntry] = []
    to_plan, before_start = [], []
    for opportunity_id, opportunity in won.items():
        in_salesforce = billing.is_billed_in_salesforce(opportunity)
        # Billed is checked before the start date: a deal billed before it (by hand, or before a ledger loss)
        # is still billed, and its status follows Stripe whatever its close date.
        if opportunity_id not in billed and in_salesforce:
            adopted.append(_adopted(opportunity, in_salesforce, run_id))
            report.add(_outcome(opportunity_id, Action.UNCHANGED, stripe_id=in_salesforce))
            continue
        if opportunity_id not in billed and _closed_before_start(opportunity, config):
            before_start.append(opportunity_id)
            report.add(_outcome(opportunity_id, Action.SKIPPED))
            continue
        to_plan.append(opportunity)
    ledger.record_synced(adopted)
    return to_plan, before_start


def _adopted(opportunity: Mapping[str, Any], stripe_id: str, run_id: str | None) -> LedgerEntry:
    return LedgerEntry(
        billing.STRIPE_TARGET,
        billing.BILLED_OPPORTUNITY,
        str(opportunity["Id"]),
        stripe_id,
        billing.fingerprint(opportunity),
        run_id=run_id,
    )


# A billing that no longer bills: the subscription cancelled or the invoice voided in Stripe.
ENDED_IN_STRIPE = frozenset({"canceled", "incomplete_expired", "void"})


def _reopened(
    lost: Sequence[Mapping[str, Any]],
    stripe_billing: StripeBilling,
    report: Report,
    exceptions: list[ExceptionRow],
    run_id: str | None,
) -> None:
    """Billed deals no longer Closed Won: an exception each while their billing still runs in Stripe (one never
    billed, or whose billing was cancelled or voided in Stripe, is settled)."""
    billed = stripe_billing.ledger.lookup(billing.STRIPE_TARGET, billing.BILLED_OPPORTUNITY, [o["Id"] for o in lost])
    adopted = []
    for opportunity in lost:
        opportunity_id = opportunity["Id"]
        entry = billed.get(opportunity_id)
        stripe_id = entry.internal_id if entry else billing.is_billed_in_salesforce(opportunity)
        if not stripe_id:
            continue
        if entry is None:
            adopted.append(_adopted(opportunity, stripe_id, run_id))  # so the write-back shows Needs review
        try:
            found = stripe_billing.billed_object(stripe_id)
        except stripe_sdk.StripeError:
            found = {}  # unknown: flagged, and looked at again on the next run (the retry queue re-reads it)
        if found.get("status") in ENDED_IN_STRIPE:
            continue
        issue = make_issue(
            "OPPORTUNITY_REOPENED_AFTER_BILLING",
            record_type=billing.BILLED_OPPORTUNITY,
            external_id=opportunity_id,
            source_id=_text(opportunity.get("AccountId")) or None,
            field="StageName",
            value=opportunity.get("StageName"),
            stage=f"{opportunity.get('StageName') or '(no stage)'}",
            billed_as=stripe_id,
        )
        exceptions.append(exception_row(issue, billing.STRIPE_TARGET))
        report.add(_outcome(opportunity_id, Action.QUARANTINED, stripe_id=stripe_id, issue=issue))
    stripe_billing.ledger.record_synced(adopted)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def bill_opportunities(
    opportunities: Sequence[Mapping[str, Any]],
    *,
    stripe: StripeResource,
    ledger: Ledger,
    config: SalesforceConfig,
    run_id: str | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> Report:
    """Bill every Closed-Won opportunity not billed yet; report the rest. Never raises per opportunity.

    Billed is `created`, billed before and unchanged is `unchanged`, changed after billing or invalid is
    `quarantined` (with its exception), a Stripe error is `failed`, closed before `bill_closed_won_from` is
    `skipped`. Raises `AccessDenied` when Stripe refuses the key, after recording the exceptions found before it.
    """
    if config.bill_closed_won_from is None:
        # The asset, sensor and schedule refuse first with the fix; this guards any other caller.
        raise ValueError("salesforce.bill_closed_won_from is not set: nothing is billed until it is")
    report = Report(billing.BILLED_OPPORTUNITY, detail_columns=DETAIL_COLUMNS)
    stripe_billing = StripeBilling(stripe, ledger)
    # IsWon arrives as a JSON boolean from the REST API, as text from a CSV or a hand-made fixture.
    won = {o["Id"]: o for o in opportunities if o.get("IsWon") in (True, "True", "true")}
    billed = ledger.lookup(billing.STRIPE_TARGET, billing.BILLED_OPPORTUNITY, list(won))
    to_plan, before_start = _won_to_plan(won, billed, config, report, ledger, run_id)
    exceptions: list[ExceptionRow] = []
    lost = [o for o in opportunities if o["Id"] not in won]
    _reopened(lost, stripe_billing, report, exceptions, run_id)

    prices = stripe_billing.prices(config.price_ids())
    unbilled: list[billing.BillingPlan] = []
    unchanged: list[str] = []
    for plan in (billing.plan_billing(o, config, prices) for o in to_plan):
        entry = billed.get(plan.opportunity_id)
        if entry is None:
            unbilled.append(plan)
        # Billed before: the same content is nothing to do; changed content is never re-billed
        # automatically (money already taken), it waits for a person as an exception.
        elif entry.content_hash == plan.fingerprint:
            unchanged.append(plan.opportunity_id)
            report.add(_outcome(plan.opportunity_id, Action.UNCHANGED, plan, stripe_id=entry.internal_id))
        else:
            issue = _changed_issue(plan, stripe_billing, entry.internal_id)
            exceptions.append(exception_row(issue, billing.STRIPE_TARGET))
            report.add(
                _outcome(plan.opportunity_id, Action.QUARANTINED, plan, stripe_id=entry.internal_id, issue=issue)
            )

    # Exceptions are re-found below (and above, for reopened deals) when they still hold; a restored edit, a
    # fixed problem, a deal no longer to be billed or a cancelled billing is closed here.
    ledger.resolve_exceptions(
        billing.STRIPE_TARGET,
        billing.BILLED_OPPORTUNITY,
        [*(o["Id"] for o in lost), *before_start, *unchanged, *(p.opportunity_id for p in unbilled)],
    )
    validation = validate_plans(unbilled)
    exceptions.extend(exception_row(issue, billing.STRIPE_TARGET) for issue in validation.issues)
    for issue in validation.issues:
        plan = next(p for p in unbilled if p.opportunity_id == issue.external_id)
        report.add(_outcome(plan.opportunity_id, Action.QUARANTINED, plan, issue=issue))

    known_customers = {o["Id"]: o.get("AccountStripeCustomerId") for o in to_plan}
    try:
        for plan in validation.valid:
            _bill(plan, stripe_billing, known_customers.get(plan.opportunity_id), report, exceptions, run_id, log)
    finally:
        # A refused Stripe key (AccessDenied) stops the loop; what was found before it stays on record.
        report.writes = stripe_billing.writes
        ledger.record_exceptions(exceptions, run_id=run_id)
    return report


def _bill(
    plan: billing.BillingPlan,
    stripe_billing: StripeBilling,
    known_customer: str | None,
    report: Report,
    exceptions: list[ExceptionRow],
    run_id: str | None,
    log: Callable[[str], None],
) -> None:
    try:
        customer_id = stripe_billing.customer_for(plan, known_customer)
        stripe_id = (
            stripe_billing.subscription(plan, customer_id)
            if plan.mode == billing.SUBSCRIPTION
            else stripe_billing.invoice(plan, customer_id)
        )
    except stripe_sdk.StripeError as error:
        issue = _stripe_failure(plan, error)
        exceptions.append(exception_row(issue, billing.STRIPE_TARGET))
        report.add(_outcome(plan.opportunity_id, Action.FAILED, plan, issue=issue))
        return
    # Written right after Stripe answered: a crash before this line is healed by the look-ups above.
    stripe_billing.ledger.record_synced(
        [
            LedgerEntry(
                billing.STRIPE_TARGET,
                billing.STRIPE_CUSTOMER,
                plan.account_id,
                customer_id,
                content_hash({"customer": customer_id}),
                run_id=run_id,
            )
        ]
    )
    billed = LedgerEntry(
        billing.STRIPE_TARGET,
        billing.BILLED_OPPORTUNITY,
        plan.opportunity_id,
        stripe_id,
        plan.fingerprint,
        source_id=customer_id,
        run_id=run_id,
    )
    # A run racing this one got the same Stripe object back (Idempotency-Key, metadata look-up): the one that
    # records it first reports it as billed, the other as unchanged, so two runs never both say "billed".
    if not stripe_billing.ledger.claim(billed):
        report.add(_outcome(plan.opportunity_id, Action.UNCHANGED, plan, customer=customer_id, stripe_id=stripe_id))
        log(f"opportunity {plan.opportunity_id} was billed as {stripe_id} by another run")
        return
    report.add(_outcome(plan.opportunity_id, Action.CREATED, plan, customer=customer_id, stripe_id=stripe_id))
    log(f"opportunity {plan.opportunity_id} billed as {stripe_id} (customer {customer_id})")


@dataclass
class DryRun:
    """What billing would do now, with nothing written anywhere (`sync-pipeline plan`)."""

    to_bill: list[billing.BillingPlan]
    held_back: list[SyncIssue]
    before_start: list[str]  # Closed-Won before bill_closed_won_from: never billed
    billed_already: list[str]  # in the ledger or with a Stripe id on the opportunity

    def totals(self) -> dict[str, int]:
        """Minor units per currency of the deals to bill."""
        out: dict[str, int] = {}
        for plan in self.to_bill:
            out[plan.currency] = out.get(plan.currency, 0) + (plan.amount_minor or 0)
        return dict(sorted(out.items()))


def dry_run(
    opportunities: Sequence[Mapping[str, Any]], *, stripe: StripeResource, ledger: Ledger, config: SalesforceConfig
) -> DryRun:
    """`bill_opportunities`' decisions without its writes: Stripe and the ledger are only read."""
    won = {o["Id"]: o for o in opportunities if o.get("IsWon") in (True, "True", "true")}
    billed = ledger.lookup(billing.STRIPE_TARGET, billing.BILLED_OPPORTUNITY, list(won))
    to_plan, before_start, billed_already = [], [], []
    for opportunity_id, opportunity in won.items():
        if opportunity_id in billed or billing.is_billed_in_salesforce(opportunity):
            billed_already.append(opportunity_id)
        elif _closed_before_start(opportunity, config):
            before_start.append(opportunity_id)
        else:
            to_plan.append(opportunity)
    prices = StripeBilling(stripe, ledger).prices(config.price_ids())
    validation = validate_plans([billing.plan_billing(o, config, prices) for o in to_plan])
    return DryRun(validation.valid, validation.issues, before_start, billed_already)


def retry_queue(ledger: Ledger) -> list[str]:
    """Opportunities whose billing is held back by an open exception: re-read them until they bill."""
    return sorted(
        {
            row["external_id"]
            for row in ledger.open_exceptions(target=billing.STRIPE_TARGET)
            if row["record_type"] == billing.BILLED_OPPORTUNITY
            and row["error_code"] != "OPPORTUNITY_CHANGED_AFTER_BILLING"
        }
    )


def deal_counts(report: Report) -> dict[str, int]:
    """Deals per outcome ("6 deals held back"): a deal with three problems has three exceptions but is one deal."""
    first: dict[str, Action] = {}
    for outcome in report.outcomes:
        first.setdefault(outcome.external_id, outcome.action)
    counted = Counter(first.values())
    review = {
        o.external_id for o in report.outcomes if o.issue is not None and o.issue.error_code in writeback.REVIEW_CODES
    }
    held = {o.external_id for o in report.outcomes if o.action == Action.QUARANTINED} - review
    return {
        **{action.value: counted.get(action, 0) for action in Action},
        "deals_billed": counted.get(Action.CREATED, 0),
        "deals_held_back": len(held),
        "deals_needing_review": len(review),
    }


def deals_to_run(opportunities: Sequence[Mapping[str, Any]], ledger: Ledger, config: SalesforceConfig) -> list[str]:
    """The changed Closed-Won deals a billing run would act on (what the sensor asks a run for).

    Every write-back bumps the opportunity's SystemModstamp, so "changed" alone would follow each billing with
    an empty run. Salesforce records who changed a record last (LastModifiedById), not what: skipping the
    integration user's changes would also skip a rep's edit that a write-back followed before the next tick.
    What billing depends on is known exactly (the fingerprint the ledger keeps of what was billed), so a
    billed deal whose fingerprint is unchanged is skipped: our own fields (Stripe ids, status, reason) are not
    in it, and every edit that matters is. A deal closed before the start date and never billed is skipped
    too. (A held-back deal is always asked for: its fix may be the change; the hourly schedule refreshes
    statuses of billed deals.)
    """
    billed = ledger.lookup(billing.STRIPE_TARGET, billing.BILLED_OPPORTUNITY, [o["Id"] for o in opportunities])
    wanted = []
    for opportunity in opportunities:
        entry = billed.get(opportunity["Id"])
        if entry is not None:
            if entry.content_hash != billing.fingerprint(opportunity):
                wanted.append(opportunity["Id"])
        elif billing.is_billed_in_salesforce(opportunity) or not _closed_before_start(opportunity, config):
            wanted.append(opportunity["Id"])
    return wanted
