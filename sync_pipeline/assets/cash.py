"""Cash: a day's Stripe payouts (by arrival day, UTC) and their balance transactions, as NetSuite bank deposits.

`stripe_payouts` and `stripe_balance_transactions` extract; `netsuite_deposit_plan` maps each payout to its
deposit(s) (`mapping/cash.py`) and validates them; `netsuite_deposits` writes them after the day's documents, and
its checks read NetSuite back and compare with Stripe's own figures:

- `deposit_matches_payout`: each payout's deposit(s) in NetSuite total the payout, to the cent (and a payout that
  failed after it was deposited has its returning journal entry);
- `fees_match_stripe`: per currency, what the deposits booked on fee accounts equals Stripe's fees;
- `undeposited_funds_cleared`: every customer payment of money a payout carried is a payment line of its
  deposit, so nothing Stripe paid out is left in Undeposited Funds.
"""

import datetime as dt
from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline import exact_json, settings
from sync_pipeline.assets.netsuite import (
    NETSUITE_POOL,
    NO_DUPLICATES_CHECK,
    REQUIRED_FIELDS_CHECK,
    _currency_codes,
    _fail_if_transient_failures,
    _sync_metadata,
    compare_by_currency,
    duplicates_check,
    plan_counts,
    records_by_external_id,
    required_fields_check,
    run_sync_step,
    validated_plan,
)
from sync_pipeline.assets.stripe import by_id, in_parallel, pack_tree, unpack_tree
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.event_scope import PAYOUT_PREFIXES, EventScope, scope_metadata
from sync_pipeline.mapping import cash
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.external_ids import netsuite_external_id, returned_payout_external_id
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import to_decimal, to_precision
from sync_pipeline.mapping.stripe_refs import id_of
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS, daily_check, partition_window
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteResource
from sync_pipeline.resources.stripe import StripeResource
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.report import IN_TARGET, Action, amounts_markdown, plot_metadata

DEPOSIT_CHECK = "deposit_matches_payout"
FEES_CHECK = "fees_match_stripe"
UNDEPOSITED_CHECK = "undeposited_funds_cleared"
# A failed payout's failure balance transaction says when the money came back.
PAYOUT_EXPAND = ("data.failure_balance_transaction",)
TOTAL_COLUMNS = "id, externalid, currency, foreigntotal"
# The order deposits are written in: a payout's returning journal entry names the bank its deposit filled.
CASH_ORDER = (cash.DEPOSIT, cash.JOURNAL_ENTRY)

PAYOUT_COLUMNS = ["id", "currency", "amount_minor", "status", "arrival_date", "automatic", "failure_code", "tree"]
TRANSACTION_COLUMNS = [
    "id",
    "payout_id",
    "type",
    "reporting_category",
    "currency",
    "amount_minor",
    "fee_minor",
    "net_minor",
    "source_id",
    "created",
    "exchange_rate",
    "presented_amount_minor",
    "presented_currency",
    "fee_details",
]


# -- extract ---------------------------------------------------------------------------------------------


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="Stripe payouts arriving on the partition's UTC day (any status), with their failure transaction.",
)
@each_day
@scoped
def stripe_payouts(context: dg.AssetExecutionContext, config: EventScope, stripe: StripeResource) -> pd.DataFrame:
    start, end = partition_window(context.partition_key)
    payouts = (
        # A sensor run: the payouts its events name (arriving this day), none when they name none.
        [
            p
            for p in by_id(stripe, "payouts", config.ids(PAYOUT_PREFIXES) or [], PAYOUT_EXPAND)
            if start <= int(p.get("arrival_date") or 0) < end
        ]
        if config.partial
        else stripe.list_payouts(arrival_date_gte=start, arrival_date_lt=end, expand=PAYOUT_EXPAND)
    )
    rows = [
        {
            "id": payout["id"],
            "currency": str(payout.get("currency") or "").upper(),
            "amount_minor": int(payout.get("amount") or 0),
            "status": payout.get("status"),
            "arrival_date": int(payout.get("arrival_date") or 0),
            "automatic": bool(payout.get("automatic")),
            "failure_code": payout.get("failure_code"),
            "tree": pack_tree(payout),
        }
        for payout in payouts
    ]
    frame = pd.DataFrame(rows, columns=PAYOUT_COLUMNS)
    by_status = frame.groupby("status").size().to_dict() if len(frame) else {}
    context.add_output_metadata(
        {
            "payouts": len(frame),
            "by_status": dg.MetadataValue.json({k: int(v) for k, v in by_status.items()}),
            "amounts_by_currency": dg.MetadataValue.json(_amounts_by_currency(frame)),
            **scope_metadata(config, len(frame), context.partition_key),
        }
    )
    return frame


def _amounts_by_currency(frame: pd.DataFrame) -> dict[str, str]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in frame.itertuples(index=False):
        totals[row.currency] += to_decimal(int(row.amount_minor), row.currency)
    return {code: str(amount) for code, amount in sorted(totals.items())}  # Decimal text, never a float


def _presented(stripe: StripeResource, txn: dict) -> tuple[int | None, str | None]:
    """What a converted charge or refund was in the customer's currency (its own object says)."""
    source = id_of(txn.get("source")) or ""
    if txn.get("exchange_rate") is None or not source.startswith(("ch_", "py_", "re_", "pyr_")):
        return None, None
    obj = stripe.retrieve_refund(source) if source.startswith(("re_", "pyr_")) else stripe.retrieve_charge(source)
    return int(obj.get("amount") or 0), str(obj.get("currency") or "").upper()


def _transaction_row(stripe: StripeResource, payout_id: str, txn: dict) -> dict:
    rate = txn.get("exchange_rate")
    presented_amount, presented_currency = _presented(stripe, txn)
    return {
        "id": txn["id"],
        "payout_id": payout_id,
        "type": txn.get("type"),
        "reporting_category": txn.get("reporting_category"),
        "currency": str(txn.get("currency") or "").upper(),
        "amount_minor": int(txn.get("amount") or 0),
        "fee_minor": int(txn.get("fee") or 0),
        "net_minor": int(txn.get("net") or 0),
        "source_id": id_of(txn.get("source")),
        "created": int(txn.get("created") or 0),
        # Stripe sends the rate as a JSON number; kept as its text so it is never re-read as a float.
        "exchange_rate": None if rate is None else str(rate),
        "presented_amount_minor": presented_amount,
        "presented_currency": presented_currency,
        "fee_details": exact_json.dumps(txn.get("fee_details") or []),
    }


@dg.asset(
    group_name="stripe",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    description="Every balance transaction of the day's payouts (GET /v1/balance_transactions?payout=), one row "
    "each: charges, refunds, disputes, fees, adjustments and the payout's own.",
)
@each_day
@scoped
def stripe_balance_transactions(
    context: dg.AssetExecutionContext, stripe: StripeResource, stripe_payouts: pd.DataFrame
) -> pd.DataFrame:
    payout_ids = list(stripe_payouts["id"])
    listed = in_parallel(
        lambda p: [_transaction_row(stripe, p, t) for t in stripe.list_balance_transactions(payout=p)], payout_ids
    )
    frame = pd.DataFrame([row for rows in listed for row in rows], columns=TRANSACTION_COLUMNS)
    by_type = frame.groupby("type").size().to_dict() if len(frame) else {}
    context.add_output_metadata(
        {"balance_transactions": len(frame), "by_type": dg.MetadataValue.json({k: int(v) for k, v in by_type.items()})}
    )
    return frame


def payout_trees(payouts: pd.DataFrame, transactions: pd.DataFrame) -> Iterable[tuple[dict, list[dict]]]:
    """Each payout with its balance transactions as Stripe objects (the shape the mapping reads)."""
    by_payout: dict[str, list[dict]] = defaultdict(list)
    # A stored frame gives missing values back as NaN: each becomes None again before the mapping reads it.
    transactions = transactions.astype(object).where(transactions.notna(), None)
    for row in transactions.itertuples(index=False):
        by_payout[row.payout_id].append(
            {
                "id": row.id,
                "type": row.type,
                "reporting_category": row.reporting_category,
                "currency": row.currency.lower(),
                "amount": int(row.amount_minor),
                "fee": int(row.fee_minor),
                "net": int(row.net_minor),
                "source": row.source_id,
                "created": int(row.created),
                "exchange_rate": row.exchange_rate,
                "presented": None
                if row.presented_amount_minor is None
                else {"amount": int(row.presented_amount_minor), "currency": row.presented_currency},
                "fee_details": exact_json.loads(row.fee_details),
            }
        )
    for cell, payout_id in zip(payouts["tree"], payouts["id"], strict=True):
        yield unpack_tree(cell), by_payout.get(payout_id, [])


# -- plan --------------------------------------------------------------------------------------------------


def map_payouts(payouts: pd.DataFrame, transactions: pd.DataFrame, fm: FieldMapping) -> ns.MappingResult:
    start = dt.date.fromisoformat(settings.start_date())
    result = ns.MappingResult()
    for payout, txns in payout_trees(payouts, transactions):
        result.extend(cash.map_payout(payout, txns, fm, sync_start=start))
    return result


@dg.asset(
    group_name="netsuite",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    check_specs=[
        daily_check(
            REQUIRED_FIELDS_CHECK,
            asset="netsuite_deposit_plan",
            blocking=True,
            description="Every deposit to write has NetSuite's required fields; held-back payouts warn.",
        )
    ],
    description="The day's payouts mapped to NetSuite deposits (and returning journal entries) and validated; "
    "nothing is written here.",
)
@each_day
@scoped
def netsuite_deposit_plan(
    context: dg.AssetExecutionContext,
    stripe_payouts: pd.DataFrame,
    stripe_balance_transactions: pd.DataFrame,
    field_mapping: FieldMappingResource,
    ledger: LedgerResource,
):
    fm = field_mapping.load()
    mapped = map_payouts(stripe_payouts, stripe_balance_transactions, fm)
    plan, _, issues = validated_plan(context, mapped, fm, ledger)
    yield dg.Output(plan, metadata=plan_counts(plan, CASH_ORDER, issues, mapped.skips))
    yield required_fields_check(plan, fm, CASH_ORDER)


# -- write and check ---------------------------------------------------------------------------------------


def planned_deposits(plan: pd.DataFrame) -> dict[str, list[str]]:
    """payout id -> the external ids of its deposits (held-back ones included: they are missing in NetSuite)."""
    deposits = plan[plan["record_type"] == cash.DEPOSIT]
    out: dict[str, list[str]] = defaultdict(list)
    for row in deposits.itertuples(index=False):
        if row.status != Action.SKIPPED:
            out[row.source_id].append(row.external_id)
    return out


def deposit_check(
    client: NetSuiteClient, fm: FieldMapping, plan: pd.DataFrame, payouts: pd.DataFrame
) -> dg.AssetCheckResult:
    """Per payout: NetSuite's deposit total (all parts) equals the payout, read back by SuiteQL."""
    planned = planned_deposits(plan)
    rows = records_by_external_id(client, cash.DEPOSIT, [e for eids in planned.values() for e in eids], TOTAL_COLUMNS)
    total_by_eid = {str(r["externalid"]): Decimal(str(r.get("foreigntotal") or "0")) for r in rows}
    returned_payouts = [
        row.id for row in payouts.itertuples(index=False) if row.status in cash.RETURNED_STATUSES and row.id in planned
    ]
    journals = {
        str(r["externalid"]): Decimal(str(r.get("foreigntotal") or "0"))
        for r in records_by_external_id(
            client, cash.JOURNAL_ENTRY, [returned_payout_external_id(p) for p in returned_payouts], TOTAL_COLUMNS
        )
    }
    table, off = [], []
    for row in payouts.itertuples(index=False):
        if row.id not in planned:
            continue  # pending or in transit: deposited when it arrives
        precision = fm.netsuite_precision(row.currency)
        stripe_amount = to_precision(int(row.amount_minor), row.currency, precision)
        netsuite_amount = sum((total_by_eid.get(e, Decimal(0)) for e in planned[row.id]), Decimal(0))
        missing = [e for e in planned[row.id] if e not in total_by_eid]
        entry = {
            "payout": row.id,
            "status": row.status,
            "currency": row.currency,
            "stripe_payout": str(stripe_amount),
            "netsuite_deposits": str(netsuite_amount),
            "difference": str(stripe_amount - netsuite_amount),
            "missing": ", ".join(missing),
        }
        if row.id in returned_payouts:
            journal_amount = journals.get(returned_payout_external_id(row.id))
            entry["returned_journal"] = "missing" if journal_amount is None else str(journal_amount)
            if journal_amount != stripe_amount:
                off.append(entry)
        table.append(entry)
        if stripe_amount != netsuite_amount or missing:
            off.append(entry)
    columns = ["payout", "status", "currency", "stripe_payout", "netsuite_deposits", "difference", "missing"]
    if returned_payouts:
        columns.append("returned_journal")
    return dg.AssetCheckResult(
        check_name=DEPOSIT_CHECK,
        passed=not off,
        metadata={
            "payouts_compared": len(table),
            "by_payout": dg.MetadataValue.md(amounts_markdown(table, columns, "No payout arrived this day.")),
            "payouts_off": len({e["payout"] for e in off}),
        },
        description=None
        if not off
        else "; ".join(
            f"{e['payout']}: Stripe {e['stripe_payout']} vs NetSuite {e['netsuite_deposits']}" for e in off[:5]
        ),
    )


def _deposit_records(client: NetSuiteClient, eids: Iterable[str]) -> dict[str, dict]:
    """The deposits with their sublists (record reads: SuiteQL does not say which payments a deposit holds)."""
    eids = list(eids)
    found = {str(r["externalid"]) for r in records_by_external_id(client, cash.DEPOSIT, eids)}
    return dict(
        zip(
            sorted(found),
            in_parallel(lambda e: client.get(cash.DEPOSIT, f"eid:{e}", expand_sub_resources=True), sorted(found)),
            strict=True,
        )
    )


def _sublist(record: dict, name: str) -> list[dict]:
    value = record.get(name)
    return list(value.get("items") or []) if isinstance(value, dict) else []


def fee_accounts(fm: FieldMapping) -> set[str]:
    accounts = {fm.accounts.stripe_fees, fm.accounts.dispute_fees, *fm.payouts.fee_accounts.values()}
    accounts |= {fm.payouts.balance_transactions.get(t) for t in cash.FEE_TRANSACTION_TYPES}
    return {a for a in accounts if a}


def _stripe_fees(transactions: pd.DataFrame, payout_ids: set[str]) -> dict[str, int]:
    """Per currency, Stripe's fees in the payouts: fees on transactions plus Stripe's own fee transactions."""
    fees: dict[str, int] = defaultdict(int)
    for row in transactions.itertuples(index=False):
        if row.payout_id in payout_ids:
            fees[row.currency] += cash.stripe_fees_minor(row.type, int(row.fee_minor), int(row.amount_minor))
    return fees


def fees_check(
    fm: FieldMapping, transactions: pd.DataFrame, deposits: dict[str, dict], payout_ids: set[str]
) -> dg.AssetCheckResult:
    """Per currency: the net of the deposits' lines on fee accounts (cash back less other) equals Stripe's fees."""
    accounts = fee_accounts(fm)
    codes = _currency_codes(fm)
    booked: dict[str, Decimal] = defaultdict(Decimal)
    for record in deposits.values():
        code = codes.get(str((record.get("currency") or {}).get("id")), "?")
        for line in _sublist(record, "cashback"):
            if str((line.get("account") or {}).get("id")) in accounts:
                booked[code] += Decimal(str(line.get("amount")))
        for line in _sublist(record, "other"):
            if str((line.get("account") or {}).get("id")) in accounts:
                booked[code] -= Decimal(str(line.get("amount")))
    stripe = {
        code: to_precision(minor, code, fm.netsuite_precision(code))
        for code, minor in _stripe_fees(transactions, payout_ids).items()
    }
    table, off = compare_by_currency(stripe, booked, ("stripe_fees", "netsuite_fee_lines"))
    return dg.AssetCheckResult(
        check_name=FEES_CHECK,
        passed=not off,
        metadata={
            "by_currency": dg.MetadataValue.md(
                amounts_markdown(table, ["currency", "stripe_fees", "netsuite_fee_lines", "difference"], "No fees.")
            ),
            **plot_metadata(table, "fees", ("stripe_fees", "netsuite_fee_lines")),
        },
        description=", ".join(f"{t['currency']} fees off by {t['difference']}" for t in off) or None,
    )


def undeposited_check(
    client: NetSuiteClient, transactions: pd.DataFrame, deposits: dict[str, dict], plan: pd.DataFrame
) -> dg.AssetCheckResult:
    """Every customer payment of money a deposited payout carried is a payment line of that payout's deposit."""
    planned = planned_deposits(plan)
    expected: dict[str, str] = {}  # payment external id -> payout
    for row in transactions.itertuples(index=False):
        payment = cash.undeposited_payment(row.type, row.reporting_category, row.source_id)
        if row.payout_id in planned and payment:
            expected[payment] = row.payout_id
    payments = records_by_external_id(client, ns.CUSTOMER_PAYMENT, sorted(expected))
    payment_ids = {str(r["externalid"]): str(r["id"]) for r in payments}
    deposited: dict[str, str] = {}  # payment internal id -> deposit external id
    for eid, record in deposits.items():
        for line in _sublist(record, "payment"):
            if line.get("deposit", True) is not False:
                deposited[str(line.get("id") if not isinstance(line.get("id"), dict) else line["id"].get("id"))] = eid
    left = []
    for eid, payout_id in sorted(expected.items()):
        internal = payment_ids.get(eid)
        holder = deposited.get(internal or "")
        if internal is None or holder is None or not holder.startswith(netsuite_external_id(payout_id)):
            left.append(
                {
                    "payment": eid,
                    "payout": payout_id,
                    "in_netsuite": "yes" if internal else "no",
                    "deposited_in": holder or "",
                }
            )
    return dg.AssetCheckResult(
        check_name=UNDEPOSITED_CHECK,
        passed=not left,
        metadata={
            "payments_expected_in_deposits": len(expected),
            "not_deposited": len(left),
            "first_not_deposited": dg.MetadataValue.md(
                amounts_markdown(left[:50], ["payment", "payout", "in_netsuite", "deposited_in"], "None.")
            ),
        },
        description=None if not left else f"{len(left)} payment(s) of paid-out money not in their payout's deposit",
    )


@dg.asset(
    group_name="netsuite",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    pool=NETSUITE_POOL,
    deps=["netsuite_customer_refunds"],
    check_specs=[
        daily_check(NO_DUPLICATES_CHECK, asset="netsuite_deposits", description="Each deposit is in NetSuite once."),
        daily_check(
            DEPOSIT_CHECK,
            asset="netsuite_deposits",
            description="Read back from NetSuite: each payout's deposit(s) total the payout to the cent.",
        ),
        daily_check(
            FEES_CHECK,
            asset="netsuite_deposits",
            description="Per currency, the deposits' lines on fee accounts equal Stripe's fees in the day's payouts.",
        ),
        daily_check(
            UNDEPOSITED_CHECK,
            asset="netsuite_deposits",
            description="Every customer payment of paid-out money is in its payout's deposit (Undeposited Funds "
            "holds only money Stripe has not paid out).",
        ),
    ],
    description="NetSuite bank deposits upserted by external id (one per payout, stripe-po_…), and the journal "
    "entries of payouts that came back; outcome per record.",
)
@each_day
@scoped
def netsuite_deposits(
    context: dg.AssetExecutionContext,
    netsuite_deposit_plan: pd.DataFrame,
    stripe_payouts: pd.DataFrame,
    stripe_balance_transactions: pd.DataFrame,
    netsuite: NetSuiteResource,
    ledger: LedgerResource,
    field_mapping: FieldMappingResource,
):
    report, outcomes, client = run_sync_step(context, cash.DEPOSIT, netsuite_deposit_plan, netsuite, ledger)
    _fail_if_transient_failures(report)
    # A returning journal entry names the bank account its payout's deposit filled: written after the deposits.
    journal_report, journals, _ = run_sync_step(context, cash.JOURNAL_ENTRY, netsuite_deposit_plan, netsuite, ledger)
    _fail_if_transient_failures(journal_report)
    metadata = _sync_metadata(report, client, outcomes)
    # The counts cover both record types (deposits and journal entries), so a day's totals add up to its writes.
    for action, count in journal_report.counts().items():
        metadata[action] += count
        metadata["in_netsuite"] += count if action in IN_TARGET else 0
    metadata["writes"] += journal_report.writes
    metadata["journal_entries"] = dg.MetadataValue.json(journal_report.counts())
    outcomes = pd.concat([outcomes, journals], ignore_index=True)
    yield dg.Output(outcomes, metadata=metadata)
    yield duplicates_check(client, cash.DEPOSIT, outcomes[outcomes["record_type"] == cash.DEPOSIT])
    fm = field_mapping.load()
    yield deposit_check(client, fm, netsuite_deposit_plan, stripe_payouts)
    planned = planned_deposits(netsuite_deposit_plan)
    deposits = _deposit_records(client, [e for eids in planned.values() for e in eids])
    yield fees_check(fm, stripe_balance_transactions, deposits, set(planned))
    yield undeposited_check(client, stripe_balance_transactions, deposits, netsuite_deposit_plan)
