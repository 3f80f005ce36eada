"""Validation of Closed-Won billing plans before anything is written to Stripe (pandera).

One row per opportunity: account name, currency, amount, the products' Stripe prices. Every
failed check becomes a `SyncIssue` with the fix; only opportunities without failures are billed,
so one opportunity with an unmapped product never holds up the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from sync_pipeline.errors import FIELD_MAPPING_FILE, SyncIssue, make_issue
from sync_pipeline.mapping.money import MoneyError, normalize_currency
from sync_pipeline.mapping.stripe_billing import BILLED_OPPORTUNITY, BillingPlan


def _known_currency(code: object) -> bool:
    # Salesforce's CurrencyIsoCode is an upper-case ISO 4217 code; requiring the normalized form unchanged
    # also rejects codes the money table does not know, whose minor-unit exponent would be a guess.
    try:
        return isinstance(code, str) and len(code) == 3 and normalize_currency(code) == code
    except MoneyError:
        return False


LINES_ADD_UP = "lines_add_up_to_amount"
# https://docs.stripe.com/api/subscriptions/create#create_subscription-add_invoice_items ("up to 20 items")
MAX_ONE_TIME_WITH_PLAN = 20


class BillingPlanModel(pa.DataFrameModel):
    opportunity_id: Series[str] = pa.Field(unique=True)
    account_name: Series[str] = pa.Field(str_length={"min_value": 1})
    currency: Series[str]
    # Nullable Int64 so a plan whose Amount could not be converted (None) fails on its own row; with
    # plain int64 one None would turn the whole column to float and every amount would be suspect.
    amount_minor: Series[pd.Int64Dtype] = pa.Field(nullable=False, gt=0)
    lines: Series[int] = pa.Field(gt=0)
    unmapped_products: Series[int] = pa.Field(eq=0)
    price_problems: Series[int] = pa.Field(eq=0)
    # Stripe takes at most 20 `add_invoice_items` on a subscription create; a deal with more one-time
    # products beside a plan cannot be billed by one request.
    one_time_with_plan: Series[int] = pa.Field(le=MAX_ONE_TIME_WITH_PLAN)

    @pa.check("currency", name="iso_currency", element_wise=True)
    def _iso_currency(cls, value: object) -> bool:
        return _known_currency(value)

    @pa.dataframe_check(name=LINES_ADD_UP)
    def _lines_add_up(cls, frame: pd.DataFrame) -> pd.Series:
        # No line total (NA) means some line's TotalPrice is missing or has more decimals than the currency;
        # a sum over the other lines would report a mismatch that is not there.
        return frame["lines_total_minor"].isna() | (frame["lines_total_minor"] == frame["amount_minor"])

    class Config:
        strict = False  # `lines_total_minor` is an input of a check, not a validated column
        coerce = False  # dtypes are set by `plans_frame`; coercing here would hide a value of the wrong type


def plans_frame(plans: Sequence[BillingPlan]) -> pd.DataFrame:
    """One row per plan, in the plans' order: the frame's position is the index back into `plans`."""
    rows = [
        {
            "opportunity_id": p.opportunity_id,
            "account_name": p.account_name,
            "currency": p.currency,
            "amount_minor": p.amount_minor,
            "lines": len(p.lines),
            "unmapped_products": len(p.unmapped_products),
            "price_problems": sum(1 for line in p.lines if line.problem),
            "one_time_with_plan": len(p.one_time_lines) if p.recurring_lines else 0,
            "lines_total_minor": p.lines_total_minor,
        }
        for p in plans
    ]
    frame = pd.DataFrame(
        rows,
        columns=[
            "opportunity_id",
            "account_name",
            "currency",
            "amount_minor",
            "lines",
            "unmapped_products",
            "price_problems",
            "one_time_with_plan",
            "lines_total_minor",
        ],
    )
    # Explicit columns and dtypes: a frame built from rows infers `object` for a column that is all None,
    # which would fail the schema's dtype check for every plan instead of the value check for one.
    for column in ("amount_minor", "lines_total_minor"):
        frame[column] = frame[column].astype("Int64")
    for column in ("lines", "unmapped_products", "price_problems", "one_time_with_plan"):
        frame[column] = frame[column].astype("int64")
    return frame.astype({"opportunity_id": str, "account_name": str, "currency": str})


@dataclass
class BillingValidation:
    valid: list[BillingPlan]
    issues: list[SyncIssue]


def _issue(plan: BillingPlan, field: str, value: object, problem: str, how: str) -> SyncIssue:
    return make_issue(
        "INVALID_OPPORTUNITY",
        record_type=BILLED_OPPORTUNITY,
        external_id=plan.opportunity_id,
        source_id=plan.account_id or None,
        field=field,
        value=value,
        problem=problem,
        how=how,
    )


def _issues_for(plan: BillingPlan, column: str, check: str) -> list[SyncIssue]:
    """The SyncIssues (with their fixes) of one failed check on one opportunity."""
    if column == "unmapped_products":
        return [
            make_issue(
                "UNMAPPED_SALESFORCE_PRODUCT",
                record_type=BILLED_OPPORTUNITY,
                external_id=plan.opportunity_id,
                source_id=plan.account_id or None,
                # One exception per product: the exceptions table keeps one open row per (record, code, field).
                field=f"Product2Id {line.product_id}",
                value=line.product_id,
                product_name=line.product_name or "no name",
                currency=plan.currency or "USD",
            )
            for line in plan.unmapped_products
        ]
    if column == "price_problems":
        return [
            _issue(
                plan,
                "Product2Id",
                line.product_id,
                f"({line.product_name or 'no name'}) cannot be billed in {plan.currency}: {line.problem}",
                line.fix
                or f"map product {line.product_id} to a Stripe price in {plan.currency} whose amount matches the "
                f"line (`salesforce: product_prices:` in {FIELD_MAPPING_FILE}), or correct the line item",
            )
            for line in plan.lines
            if line.problem
        ]
    if column == "account_name":
        return [
            _issue(
                plan,
                "Account.Name",
                plan.account_name or None,
                "is empty: a Stripe customer needs a name",
                "link the opportunity to an Account with a name in Salesforce",
            )
        ]
    if column == "currency":
        return [
            _issue(
                plan,
                "CurrencyIsoCode",
                plan.currency or None,
                "is not a currency Stripe bills in",
                "set the opportunity's currency to a three-letter ISO code",
            )
        ]
    if column == "amount_minor":
        return [
            _issue(
                plan,
                "Amount",
                plan.amount,
                f"is not a positive amount with at most the decimals of {plan.currency or 'its currency'}",
                "set the opportunity's amount (its products' total)",
            )
        ]
    if column == "lines":
        return [
            _issue(
                plan,
                "OpportunityLineItems",
                0,
                "has no products, so there is nothing to bill",
                "add the products sold to the opportunity",
            )
        ]
    if column == "one_time_with_plan":
        return [
            _issue(
                plan,
                "OpportunityLineItems",
                len(plan.one_time_lines),
                f"has more than {MAX_ONE_TIME_WITH_PLAN} one-time products beside a plan (Stripe bills at most "
                f"{MAX_ONE_TIME_WITH_PLAN} on a subscription's first invoice)",
                "combine one-time products into fewer line items",
            )
        ]
    if check == LINES_ADD_UP:
        return [
            _issue(
                plan,
                "Amount",
                plan.amount,
                f"differs from the total of its line items ({plan.lines_total_minor} in minor units)",
                "correct the opportunity's amount or its line items so they agree",
            )
        ]
    if column == "opportunity_id":
        return [_issue(plan, "Id", plan.opportunity_id, "appears twice in one run", "report this as a bug")]
    return [_issue(plan, column, None, f"fails the check {check}", "correct the opportunity in Salesforce")]


def validate_plans(plans: Sequence[BillingPlan]) -> BillingValidation:
    """Split plans into billable ones and SyncIssues (one per problem, each with its fix)."""
    frame = plans_frame(plans)
    if frame.empty:
        return BillingValidation([], [])
    try:
        # lazy=True collects every failure, so a user fixes an opportunity in one pass, not one error per run.
        BillingPlanModel.validate(frame, lazy=True)
        return BillingValidation(list(plans), [])
    except pa.errors.SchemaErrors as errors:
        failures = errors.failure_cases
    issues: list[SyncIssue] = []
    bad: set[int] = set()
    seen: set[tuple[int, str, str]] = set()
    for case in failures.itertuples(index=False):
        # A failure without a row index is about the schema itself (a column or dtype), which `plans_frame`
        # guarantees; there is no opportunity to blame for it.
        if case.index is None or pd.isna(case.index):
            continue
        position = int(case.index)
        check = str(case.check)
        # A failed dataframe-wide check lists every column of the row: it is one problem, not nine.
        column = case.column if isinstance(case.column, str) and check != LINES_ADD_UP else ""
        # pandera may list the same row and check more than once; one issue per problem is what a user reads.
        key = (position, column, check)
        if key in seen:
            continue
        seen.add(key)
        bad.add(position)
        issues.extend(_issues_for(plans[position], column, check))
    return BillingValidation([p for i, p in enumerate(plans) if i not in bad], issues)
