"""Sync assets: map a day of Stripe documents to NetSuite records, validate them, upsert them in order.

`netsuite_sync_plan` maps and validates (nothing is written there; invalid records go to
`sync_exceptions`), its blocking `required_fields` check guards every write, and one asset per record
type writes in NetSuite's dependency order: customer → invoice → credit memo → payment → refund (a payment may
apply credit memos, a refund pays out both).
"""

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal

import dagster as dg
import pandas as pd

from sync_pipeline import exact_json
from sync_pipeline.assets.stripe import in_parallel, read_trees
from sync_pipeline.daily_ranges import BACKFILL_POLICY, each_day
from sync_pipeline.errors import RECORD_PLURALS, SyncIssue
from sync_pipeline.mapping import netsuite as ns
from sync_pipeline.mapping.external_ids import netsuite_external_id
from sync_pipeline.mapping.field_mapping import FieldMapping
from sync_pipeline.mapping.money import to_decimal
from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS, daily_check
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteResource
from sync_pipeline.schemas.netsuite import validate_records
from sync_pipeline.stripe_accounts import scoped
from sync_pipeline.writers.netsuite import quarantine, upsert_records
from sync_pipeline.writers.plan_preview import compare_with_ledger, preview_metadata, preview_records, read_ledger
from sync_pipeline.writers.report import (
    IN_TARGET,
    Action,
    Outcome,
    Report,
    amounts_markdown,
    exceptions_markdown,
    plot_metadata,
)

NETSUITE_POOL = "netsuite_api"
REQUIRED_FIELDS_CHECK = "required_fields"
NO_DUPLICATES_CHECK = "no_duplicate_external_ids"
TOTALS_CHECK = "totals_match_stripe"

# A plan row's status: valid (to write), or held back as the writers would book it.
VALID = "valid"
PLAN_COLUMNS = [
    "record_type",
    "external_id",
    "source_id",
    "status",
    "depends_on",
    "currency",
    "amount_minor",
    "body",
    "value_sources",
    "residue_minor",
    "error_code",
    "field",
    "value",
    "message",
    "fix",
]

# NetSuite's SuiteQL `transaction.type` per record type we write.
TRANSACTION_TYPES = {
    ns.INVOICE: "CustInvc",
    ns.CUSTOMER_PAYMENT: "CustPymt",
    ns.CREDIT_MEMO: "CustCred",
    ns.CUSTOMER_REFUND: "CustRfnd",
    "deposit": "Deposit",
    "journalEntry": "Journal",
}
# NetSuite refuses a reference to a record that does not exist yet (INVALID_KEY_OR_REF): customers
# before their invoices, invoices before the payments and credit memos applied to them, and refunds
# after the memos and payments they pay out.
SYNC_ORDER = (ns.CUSTOMER, ns.INVOICE, ns.CREDIT_MEMO, ns.CUSTOMER_PAYMENT, ns.CUSTOMER_REFUND)
# External ids per `IN (...)`: keeps each SuiteQL statement short.
SUITEQL_IN_CHUNK = 500


# -- the plan: pure mapping + validation over the partition's documents ------------------------------


def map_partition(invoice_trees: Iterable[dict], charge_trees: Iterable[dict], fm: FieldMapping) -> ns.MappingResult:
    result = ns.MappingResult()
    # Each customer is mapped once, with every currency its documents of the day use (first seen is the
    # primary when Stripe gives none): two records for one customer would collide on its external id.
    customers: dict[str, tuple[dict, list[str]]] = {}

    def saw(customer: object, currency: object) -> None:
        if isinstance(customer, dict) and customer.get("id"):
            _, currencies = customers.setdefault(customer["id"], (customer, []))
            if isinstance(currency, str) and currency.upper() not in currencies:
                currencies.append(currency.upper())

    documents = ns.MappingResult()
    for tree in invoice_trees:
        invoice = tree["invoice"]
        if invoice.get("status") != "draft":
            saw(tree.get("customer"), invoice.get("currency"))
        documents.extend(
            ns.map_invoice_tree(
                invoice,
                fm,
                customer=tree.get("customer"),
                invoice_payments=tree.get("invoice_payments") or (),
                charges=tree.get("charges") or (),
                refunds=tree.get("refunds") or (),
                credit_notes=tree.get("credit_notes") or (),
                balance_transactions=tree.get("customer_balance_transactions") or (),
                disputes=tree.get("disputes") or (),
                with_customer=False,
            )
        )
    for tree in charge_trees:
        charge, customer = tree["charge"], tree.get("customer")
        saw(customer, charge.get("currency"))
        documents.extend(ns.map_charge_payment(charge, fm, customer=customer))
        for refund in tree.get("refunds") or ():
            documents.extend(ns.map_refund(refund, charge, None, fm, customer=customer))
        for dispute in tree.get("disputes") or ():
            documents.extend(ns.map_dispute(dispute, charge, fm, customer=customer))
    for customer, currencies in customers.values():
        primary = customer.get("currency") or (currencies[0] if currencies else None)
        others = [c for c in currencies if c != str(primary).upper()]
        result.extend(ns.map_customer(customer, fm, currency=primary, other_currencies=others))
    return result.extend(documents)


def plan_frame(valid: Sequence[ns.NetSuiteRecord], issues: Sequence, skips: Sequence[ns.Skip]) -> pd.DataFrame:
    rows = [
        {
            "record_type": r.record_type,
            "external_id": r.external_id,
            "source_id": r.source_id,
            "status": VALID,
            "depends_on": json.dumps(r.depends_on),
            "currency": r.currency,
            "amount_minor": r.amount_minor,
            "body": exact_json.dumps(r.body),
            "value_sources": json.dumps(r.value_sources),
            "residue_minor": r.residue_minor,
        }
        for r in valid
    ]
    rows += [
        {
            "record_type": i.record_type,
            "external_id": i.external_id,
            "source_id": i.source_id,
            "status": Action.QUARANTINED.value,
            "error_code": i.error_code,
            "field": i.field,
            "value": i.value,
            "message": i.message,
            "fix": i.fix,
        }
        for i in issues
    ]
    rows += [
        {
            "record_type": s.record_type,
            "external_id": s.external_id,
            "source_id": s.source_id,
            "status": Action.SKIPPED.value,
            "message": s.reason,
        }
        for s in skips
    ]
    frame = pd.DataFrame(rows, columns=PLAN_COLUMNS)
    for column in ("amount_minor", "residue_minor"):
        frame[column] = frame[column].fillna(0).astype("int64")
    return frame


def rounding_residue_metadata(plan: pd.DataFrame) -> dict:
    """What rounding to NetSuite's precision left out, per currency (Stripe's exact totals less NetSuite's):
    below one unit of the precision per document, reported so it is never silently lost."""
    rounded = plan[(plan["status"] == VALID) & (plan["residue_minor"] != 0)]
    residue: dict[str, Decimal] = defaultdict(Decimal)
    for row in rounded.itertuples(index=False):
        residue[row.currency] += to_decimal(int(row.residue_minor), row.currency)
    return {
        "rounded_documents": len(rounded),
        # Decimal text: a person reads the exact amount, never a float.
        "rounding_residue_by_currency": dg.MetadataValue.json({c: str(v) for c, v in sorted(residue.items())}),
    }


def records_from_plan(plan: pd.DataFrame, record_type: str) -> list[ns.NetSuiteRecord]:
    rows = plan[(plan["record_type"] == record_type) & (plan["status"] == VALID)]
    return [
        ns.NetSuiteRecord(
            record_type=row.record_type,
            external_id=row.external_id,
            body=exact_json.loads(row.body),
            source_id=row.source_id,
            depends_on=tuple(tuple(d) for d in json.loads(row.depends_on)),
            amount_minor=int(row.amount_minor),
            currency=row.currency,
            value_sources=tuple(tuple(v) for v in json.loads(row.value_sources)),
            residue_minor=int(row.residue_minor),
        )
        for row in rows.itertuples(index=False)
    ]


def validated_plan(
    context: dg.AssetExecutionContext, mapped: ns.MappingResult, fm: FieldMapping, ledger: LedgerResource
) -> tuple[pd.DataFrame, list[ns.NetSuiteRecord], list[SyncIssue]]:
    """The plan of a partition's mapped records: validated, every problem booked in sync_exceptions with its fix,
    as (plan frame, the records to write, the issues)."""
    outcome = validate_records(mapped.records, fm)
    issues = [*mapped.issues, *outcome.issues]
    quarantine(issues, ledger.get_ledger(), context.partition_key, context.run.run_id)
    return plan_frame(outcome.valid, issues, mapped.skips), outcome.valid, issues


def plan_counts(plan: pd.DataFrame, order: Sequence[str], issues: Sequence, skips: Sequence) -> dict:
    """A plan's materialization counts: records to write per type (in write order), held back, skipped."""
    counts = plan.groupby(["record_type", "status"]).size()
    return {
        "to_write": dg.MetadataValue.json({t: int(counts.get((t, VALID), 0)) for t in order}),
        "quarantined": len(issues),
        "skipped": len(skips),
    }


def required_fields_check(
    plan: pd.DataFrame, fm: FieldMapping, order: Sequence[str] = SYNC_ORDER
) -> dg.AssetCheckResult:
    """Blocking: every record about to be written has what NetSuite requires.

    Records quarantined by validation are reported as a WARN (the rest still syncs); a record in the
    write set that fails validation would be an ERROR and stops every write of the partition.
    """
    write_set = [r for t in order for r in records_from_plan(plan, t)]
    slipped = validate_records(write_set, fm, hold_dependents=False).issues
    quarantined = plan[plan["status"] == Action.QUARANTINED]
    by_code = {k: int(v) for k, v in quarantined.groupby("error_code").size().items()} if len(quarantined) else {}
    metadata = {
        "records_to_write": len(write_set),
        "quarantined": len(quarantined),
        "quarantined_by_error": dg.MetadataValue.json(by_code),
        "first_quarantined": dg.MetadataValue.md(exceptions_markdown(quarantined)),
    }
    if slipped:
        return dg.AssetCheckResult(
            check_name=REQUIRED_FIELDS_CHECK,
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={**metadata, "invalid_in_write_set": len(slipped)},
            description=slipped[0].message,
        )
    return dg.AssetCheckResult(
        check_name=REQUIRED_FIELDS_CHECK,
        passed=quarantined.empty,
        severity=dg.AssetCheckSeverity.WARN,
        metadata=metadata,
        description=None
        if quarantined.empty
        else f"{len(quarantined)} record(s) held back; see sync_exceptions for the fixes",
    )


@dg.asset(
    group_name="netsuite",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    backfill_policy=BACKFILL_POLICY,
    check_specs=[
        daily_check(
            REQUIRED_FIELDS_CHECK,
            asset="netsuite_sync_plan",
            blocking=True,
            description="Every record to write has NetSuite's required fields; held-back records warn.",
        )
    ],
    description="The partition's Stripe documents mapped to NetSuite records and validated; nothing is written here.",
)
@each_day
@scoped
def netsuite_sync_plan(
    context: dg.AssetExecutionContext,
    stripe_invoices: pd.DataFrame,
    stripe_charges: pd.DataFrame,
    field_mapping: FieldMappingResource,
    ledger: LedgerResource,
):
    fm = field_mapping.load()
    mapped = map_partition(read_trees(stripe_invoices), read_trees(stripe_charges), fm)
    plan, valid, issues = validated_plan(context, mapped, fm, ledger)
    metadata = {
        **plan_counts(plan, SYNC_ORDER, issues, mapped.skips),
        "skipped_reasons": dg.MetadataValue.json(
            {k: int(v) for k, v in pd.Series([s.reason.split(":")[0] for s in mapped.skips]).value_counts().items()}
        ),
    }
    metadata.update(rounding_residue_metadata(plan))
    # What the writers would do with each record, from the ledger alone (no NetSuite read): the field differences
    # of each update are `sync-pipeline plan --partition D`'s.
    known, internal_ids = read_ledger(ledger.get_ledger(), valid)
    preview = preview_records(compare_with_ledger(valid, known, internal_ids), issues)
    metadata.update(preview_metadata(preview, context.partition_key))
    del mapped, valid, issues, preview  # the check below re-reads the write set from the plan: hold one copy, not two
    yield dg.Output(plan, metadata=metadata)
    yield required_fields_check(plan, fm)


# -- the writers ---------------------------------------------------------------------------------------


def suiteql_in(client: NetSuiteClient, query: str, values: Sequence[str], quote: bool = True) -> list[dict]:
    """`query` (with `{values}` where the IN list goes) run over `values` a chunk at a time, rows concatenated.

    Values are external ids ([A-Za-z0-9_-], quoted) or internal ids (digits, `quote=False`): nothing to escape.
    """
    chunks = [values[start : start + SUITEQL_IN_CHUNK] for start in range(0, len(values), SUITEQL_IN_CHUNK)]

    def run(chunk: Sequence[str]) -> list[dict]:
        listed = ", ".join(f"'{v}'" for v in chunk) if quote else ", ".join(chunk)
        return list(client.suiteql(query.format(values=listed)))

    # Chunks run side by side (the client's limiter keeps NetSuite's concurrency): 10,000 ids are 20 queries.
    return [row for rows in in_parallel(run, chunks, threads=max(1, client.concurrency)) for row in rows]


def records_by_external_id(
    client: NetSuiteClient, record_type: str, external_ids: Sequence[str], columns: str = "id, externalid"
) -> list[dict]:
    """SuiteQL rows (`columns`) of the records of `record_type` with these external ids, read back from NetSuite."""
    if record_type == ns.CUSTOMER:
        query = f"SELECT {columns} FROM customer WHERE externalid IN ({{values}})"
    else:
        query = (
            f"SELECT {columns} FROM transaction WHERE type = '{TRANSACTION_TYPES[record_type]}' "
            "AND externalid IN ({values})"
        )
    return suiteql_in(client, query, list(external_ids))


def duplicates_check(client: NetSuiteClient, record_type: str, outcomes: pd.DataFrame) -> dg.AssetCheckResult:
    """Each external id the partition wrote is in NetSuite exactly once (SuiteQL)."""
    in_netsuite = outcomes[outcomes["action"].isin(IN_TARGET)]
    expected = list(in_netsuite["external_id"])
    rows = records_by_external_id(client, record_type, expected)
    seen: dict[str, int] = defaultdict(int)
    for row in rows:
        seen[str(row.get("externalid"))] += 1
    duplicates = sorted(e for e, n in seen.items() if n > 1)
    missing = sorted(set(expected) - set(seen))
    return dg.AssetCheckResult(
        check_name=NO_DUPLICATES_CHECK,
        passed=not duplicates and not missing,
        metadata={
            "checked": len(expected),
            "duplicates": dg.MetadataValue.json(duplicates[:50]),
            "missing_in_netsuite": dg.MetadataValue.json(missing[:50]),
        },
        description=(f"{len(duplicates)} external id(s) twice in NetSuite, {len(missing)} missing (deleted by hand?)")
        if duplicates or missing
        else None,
    )


def _currency_codes(fm: FieldMapping) -> dict[str, str]:
    return {c.netsuite_id: code for code, c in fm.currencies.items()}


# What a writer's totals are called in the Plots tab (`stripe_invoiced_usd`, `netsuite_collected_eur`, ...).
PLOTTED = {ns.INVOICE: "invoiced", ns.CUSTOMER_PAYMENT: "collected"}


def compare_by_currency(
    stripe: Mapping[str, Decimal], netsuite: Mapping[str, Decimal], labels: tuple[str, str] = ("stripe", "netsuite")
) -> tuple[list[dict], list[dict]]:
    """Rows per currency (amounts as exact text) and the rows that differ."""
    table = []
    for currency in sorted(set(stripe) | set(netsuite)):
        s, n = stripe.get(currency, Decimal(0)), netsuite.get(currency, Decimal(0))
        table.append({"currency": currency, labels[0]: str(s), labels[1]: str(n), "difference": str(s - n)})
    return table, [t for t in table if Decimal(t["difference"]) != 0]


def totals_check(
    client: NetSuiteClient, fm: FieldMapping, record_type: str, stripe_amounts: dict[str, tuple[str, int]]
) -> dg.AssetCheckResult:
    """Stripe's amounts per currency equal NetSuite's, to the cent (exact Decimals)."""
    stripe_totals: dict[str, Decimal] = defaultdict(Decimal)
    for currency, amount_minor in stripe_amounts.values():
        stripe_totals[currency] += to_decimal(amount_minor, currency)
    rows = records_by_external_id(client, record_type, list(stripe_amounts), "id, externalid, currency, foreigntotal")
    codes = _currency_codes(fm)
    netsuite_totals: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        code = codes.get(str(row.get("currency")), f"currency {row.get('currency')}")
        # abs(): the comparison holds whichever sign NetSuite gives a payment's or credit's total (the
        # stand-in sends it positive).
        netsuite_totals[code] += abs(Decimal(str(row.get("foreigntotal") or "0")))
    table, mismatched = compare_by_currency(stripe_totals, netsuite_totals)
    return dg.AssetCheckResult(
        check_name=TOTALS_CHECK,
        passed=not mismatched,
        metadata={
            "by_currency": dg.MetadataValue.md(
                amounts_markdown(table, ["currency", "stripe", "netsuite", "difference"], "Nothing to reconcile.")
            ),
            "documents_in_stripe": len(stripe_amounts),
            "documents_in_netsuite": len(rows),
            **plot_metadata(table, PLOTTED.get(record_type, record_type)),
        },
        description=", ".join(f"{t['currency']} off by {t['difference']}" for t in mismatched) or None,
    )


def stripe_invoice_amounts(stripe_invoices: pd.DataFrame) -> dict[str, tuple[str, int]]:
    """external id -> (currency, total) of every finalized invoice of the partition: what NetSuite must hold."""
    # Drafts are not accounting documents yet: only finalized invoices must be in NetSuite. A negative invoice is
    # a credit memo there (receivables_match_stripe compares it).
    finalized = stripe_invoices[
        stripe_invoices["status"].isin(ns.FINALIZED_INVOICE_STATUSES) & (stripe_invoices["amount_minor"] >= 0)
    ]
    return {
        netsuite_external_id(row.id): (row.currency, int(row.amount_minor)) for row in finalized.itertuples(index=False)
    }


def stripe_payment_amounts(
    stripe_invoices: pd.DataFrame, stripe_charges: pd.DataFrame, fm: FieldMapping
) -> dict[str, tuple[str, int]]:
    """external id -> (currency, captured amount) of every succeeded Stripe charge of the partition (paying an
    invoice or not): Stripe's own figures, never the plan's, so a wrong mapping cannot agree with itself. Charges
    in a currency field_mapping.yaml does not map are held back as UNMAPPED_CURRENCY and reported there."""
    charges = [c for tree in read_trees(stripe_invoices) for c in tree.get("charges") or ()]
    charges += [tree["charge"] for tree in read_trees(stripe_charges)]
    amounts = {}
    for charge in charges:
        code = str(charge.get("currency") or "").upper()
        if charge.get("status") != "succeeded" or charge.get("captured") is False or fm.currency(code) is None:
            continue
        amount = int(charge.get("amount_captured") or charge.get("amount") or 0)
        amounts[netsuite_external_id(charge["id"])] = (code, amount)
    return amounts


def _sync_metadata(report: Report, client: NetSuiteClient, outcomes: pd.DataFrame) -> dict:
    counters = client.counters
    counts = report.counts()
    return {
        **counts,
        # The day's state whatever this run did: a no-op re-run still says how many of the day's records NetSuite
        # holds (and `amounts_by_currency` their amounts), not only "created 0".
        "in_netsuite": sum(counts[action.value] for action in IN_TARGET),
        "amounts_by_currency": dg.MetadataValue.json(report.amounts_by_currency()),
        "writes": report.writes,
        "writes_per_second": report.write_rate(),
        "seconds": round(report.elapsed_seconds, 2),
        "netsuite_requests": counters.requests,
        "netsuite_retries": counters.retries,
        "netsuite_peak_in_flight": counters.peak_in_flight,
        "first_exceptions": dg.MetadataValue.md(exceptions_markdown(outcomes)),
    }


def run_sync_step(
    context: dg.AssetExecutionContext,
    record_type: str,
    plan: pd.DataFrame,
    netsuite: NetSuiteResource,
    ledger: LedgerResource,
) -> tuple[Report, pd.DataFrame, NetSuiteClient]:
    client = netsuite.get_client()
    report = upsert_records(
        records_from_plan(plan, record_type),
        client=client,
        ledger=ledger.get_ledger(),
        partition_key=context.partition_key,
        run_id=context.run.run_id,
        record_type=record_type,
        log=context.log.info,
    )
    # Records held back by the plan count as quarantined here, so each asset's figures are complete.
    held = plan[(plan["record_type"] == record_type) & (plan["status"] == Action.QUARANTINED)]
    for row in held.itertuples(index=False):
        issue = SyncIssue(
            record_type=record_type,
            external_id=row.external_id,
            source_id=row.source_id,
            field=row.field,
            value=row.value,
            error_code=row.error_code,
            message=row.message,
            fix=row.fix,
        )
        report.add(
            Outcome(
                record_type,
                row.external_id,
                Action.QUARANTINED,
                source_id=row.source_id,
                currency=row.currency,
                issue=issue,
            )
        )
    return report, report.frame(), client


def _fail_if_transient_failures(report: Report) -> None:
    """Data problems never fail a run; NetSuite not answering does, so the run shows red and the next schedule or
    sensor tick retries. By now the ledger holds every write NetSuite answered and sync_exceptions the rest."""
    counts = report.counts()
    if not counts[Action.FAILED]:
        return
    failed = report.frame()
    failed = failed[failed["action"] == Action.FAILED]
    by_code = ", ".join(f"{n} {code}" for code, n in failed["error_code"].value_counts().sort_index().items())
    plural = RECORD_PLURALS.get(report.subject, report.subject)
    raise dg.Failure(
        description=(
            f"{counts[Action.FAILED]} {plural} not written: NetSuite did not answer or failed after retries "
            f"({by_code}); "
            f"{report.writes} written and in the ledger; the next run retries the rest (see sync_exceptions)"
        )
    )


def build_sync_asset(record_type: str, name: str, upstream: str | None, extra_checks: Sequence[str] = ()):
    check_specs = [
        daily_check(
            NO_DUPLICATES_CHECK,
            asset=name,
            description="Every synced external id is in NetSuite exactly once (SuiteQL).",
        )
    ]
    check_specs += [
        daily_check(c, asset=name, description="Stripe and NetSuite totals per currency are equal to the cent.")
        for c in extra_checks
    ]

    def _body(
        context: dg.AssetExecutionContext,
        plan: pd.DataFrame,
        stripe_invoices: pd.DataFrame | None,
        netsuite: NetSuiteResource,
        ledger: LedgerResource,
        field_mapping: FieldMappingResource,
        stripe_charges: pd.DataFrame | None = None,
    ):
        report, outcomes, client = run_sync_step(context, record_type, plan, netsuite, ledger)
        # Before the output: a run with NetSuite errors shows red, and its checks would only repeat them.
        _fail_if_transient_failures(report)
        yield dg.Output(outcomes, metadata=_sync_metadata(report, client, outcomes))
        yield duplicates_check(client, record_type, outcomes)
        if TOTALS_CHECK in extra_checks:
            fm = field_mapping.load()
            amounts = (
                stripe_payment_amounts(stripe_invoices, stripe_charges, fm)
                if stripe_charges is not None
                else stripe_invoice_amounts(stripe_invoices)
            )
            yield totals_check(client, fm, record_type, amounts)

    # Dagster reads inputs from the signature: the invoice and payment writers compare with Stripe's own figures.
    if record_type == ns.CUSTOMER_PAYMENT:

        def _sync_asset(
            context: dg.AssetExecutionContext,
            netsuite_sync_plan: pd.DataFrame,
            stripe_invoices: pd.DataFrame,
            stripe_charges: pd.DataFrame,
            netsuite: NetSuiteResource,
            ledger: LedgerResource,
            field_mapping: FieldMappingResource,
        ):
            yield from _body(
                context, netsuite_sync_plan, stripe_invoices, netsuite, ledger, field_mapping, stripe_charges
            )
    elif record_type == ns.INVOICE:

        def _sync_asset(
            context: dg.AssetExecutionContext,
            netsuite_sync_plan: pd.DataFrame,
            stripe_invoices: pd.DataFrame,
            netsuite: NetSuiteResource,
            ledger: LedgerResource,
            field_mapping: FieldMappingResource,
        ):
            yield from _body(context, netsuite_sync_plan, stripe_invoices, netsuite, ledger, field_mapping)
    else:

        def _sync_asset(
            context: dg.AssetExecutionContext,
            netsuite_sync_plan: pd.DataFrame,
            netsuite: NetSuiteResource,
            ledger: LedgerResource,
            field_mapping: FieldMappingResource,
        ):
            yield from _body(context, netsuite_sync_plan, None, netsuite, ledger, field_mapping)

    return dg.asset(
        name=name,
        group_name="netsuite",
        partitions_def=DECLARED_DAILY_PARTITIONS,
        backfill_policy=BACKFILL_POLICY,
        pool=NETSUITE_POOL,
        deps=[upstream] if upstream else [],
        check_specs=check_specs,
        description=f"NetSuite {record_type} records upserted by external id for the partition; outcome per record.",
    )(each_day(scoped(_sync_asset), in_order=record_type == ns.CUSTOMER))


netsuite_customers = build_sync_asset(ns.CUSTOMER, "netsuite_customers", None)
netsuite_invoices = build_sync_asset(ns.INVOICE, "netsuite_invoices", "netsuite_customers", [TOTALS_CHECK])
netsuite_credit_memos = build_sync_asset(ns.CREDIT_MEMO, "netsuite_credit_memos", "netsuite_invoices")
netsuite_customer_payments = build_sync_asset(
    ns.CUSTOMER_PAYMENT, "netsuite_customer_payments", "netsuite_credit_memos", [TOTALS_CHECK]
)
netsuite_customer_refunds = build_sync_asset(
    ns.CUSTOMER_REFUND, "netsuite_customer_refunds", "netsuite_customer_payments"
)
