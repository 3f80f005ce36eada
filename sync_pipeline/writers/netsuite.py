"""Writing validated NetSuite records: ledger check, reference resolution, upsert, outcome per record.

The I/O half of the Stripe → NetSuite sync (the pure half is `mapping/` and `schemas/`). It takes its
client and ledger as arguments, so it runs the same under Dagster, in a benchmark or in a test.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

from sync_pipeline.errors import SyncIssue, classify_netsuite_error, make_issue
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.netsuite import NetSuiteRecord
from sync_pipeline.resources.access import AccessDenied
from sync_pipeline.resources.ledger import ExceptionRow, Ledger, LedgerEntry
from sync_pipeline.resources.netsuite import NetSuiteClient, NetSuiteError
from sync_pipeline.writers.report import Action, Outcome, Report, exception_row

TARGET = "netsuite"
# Ledger rows are written in small batches as upserts complete, so a run killed midway loses at
# most one batch of bookkeeping (the next run repeats those upserts harmlessly).
LEDGER_BATCH = 50


class _Unresolved(Exception):
    def __init__(self, record_type: str, external_id: str):
        self.record_type, self.external_id = record_type, external_id


def resolve_references(body: Any, internal_ids: Mapping[str, str], owner: NetSuiteRecord) -> Any:
    """Replace `{"externalId": X}` references to records we synced by `{"id": <internal id>}`; a line keyed by the
    transaction itself (a deposit's payment line, `{"id": {"externalId": X}}`) gets the bare internal id."""
    if isinstance(body, dict):
        if set(body) == {"externalId"} and isinstance(body["externalId"], str):
            target = body["externalId"]
            if target not in internal_ids:
                dependency = next((d for d in owner.depends_on if d[1] == target), ("record", target))
                raise _Unresolved(*dependency)
            return {"id": internal_ids[target]}
        resolved = {k: resolve_references(v, internal_ids, owner) for k, v in body.items()}
        if isinstance(body.get("id"), dict):
            resolved["id"] = resolved["id"]["id"]
        return resolved
    if isinstance(body, list):
        return [resolve_references(v, internal_ids, owner) for v in body]
    return body


def body_to_send(record: NetSuiteRecord, internal_ids: Mapping[str, str]) -> dict | SyncIssue:
    """The body a write sends, its references resolved; or the DEPENDENCY_NOT_SYNCED issue holding it back.

    Every dependency, referenced in the body or not (a deposit's cash-back line for a refund names no record, yet
    clears what that refund booked), must be in NetSuite before the record is written.
    """
    try:
        unsynced = next((d for d in record.depends_on if d[1] not in internal_ids), None)
        if unsynced is not None:
            raise _Unresolved(*unsynced)
        return resolve_references(record.body, internal_ids, record)
    except _Unresolved as missing:
        return make_issue(
            "DEPENDENCY_NOT_SYNCED",
            record_type=record.record_type,
            external_id=record.external_id,
            source_id=record.source_id,
            field=f"{missing.record_type} reference",
            value=missing.external_id,
        )


def dependency_internal_ids(records: Sequence[NetSuiteRecord], ledger: Ledger) -> dict[str, str]:
    wanted: dict[str, set[str]] = defaultdict(set)
    for record in records:
        for dep_type, dep_id in record.depends_on:
            wanted[dep_type].add(dep_id)
    resolved: dict[str, str] = {}
    for dep_type, ids in wanted.items():
        resolved.update({ext: e.internal_id for ext, e in ledger.lookup(TARGET, dep_type, ids).items()})
    return resolved


def upsert_records(
    records: Sequence[NetSuiteRecord],
    *,
    client: NetSuiteClient,
    ledger: Ledger,
    partition_key: str | None,
    run_id: str | None,
    record_type: str,
    log: Callable[[str], None] = lambda _msg: None,
) -> Report:
    """Upsert every record whose content changed since the ledger last saw it.

    Never raises for a record: its problem is an exception row and an outcome. Raises `AccessDenied`
    (after booking what NetSuite already answered) when NetSuite refuses the credentials or a permission.
    """
    report = Report(record_type)
    started = time.perf_counter()
    existing = ledger.lookup(TARGET, record_type, [r.external_id for r in records])
    internal_ids = dependency_internal_ids(records, ledger)
    exceptions: list[ExceptionRow] = []
    pending_ledger: list[LedgerEntry] = []
    denied: AccessDenied | None = None

    def book(
        record: NetSuiteRecord, action: Action, *, internal_id: str | None = None, issue: SyncIssue | None = None
    ) -> None:
        if issue is not None:
            # Stripe's amount (minor units) and currency of the record held back: a customer has none.
            known = bool(record.currency) and record.record_type != "customer"
            exceptions.append(
                exception_row(
                    issue,
                    TARGET,
                    record.currency.upper() if known else None,
                    record.amount_minor if known else None,
                )
            )
        report.add(
            Outcome(
                record.record_type,
                record.external_id,
                action,
                source_id=record.source_id,
                internal_id=internal_id,
                currency=record.currency,
                amount_minor=record.amount_minor,
                issue=issue,
            )
        )

    def flush() -> None:
        ledger.record_synced(pending_ledger)
        pending_ledger.clear()

    def settle(future: Future, record: NetSuiteRecord, body: dict, digest: str) -> None:
        """Book one finished upsert: the ledger when NetSuite answered with an id, else an exception."""
        nonlocal denied
        try:
            internal_id = future.result()
        except AccessDenied as error:
            denied = denied or error  # systemic: no record is blamed for it
        except NetSuiteError as error:
            answered = error.status is not None
            issue = classify_netsuite_error(
                error.status,
                error.body if answered else error.detail,
                record.record_type,
                record.external_id,
                body if answered else None,
                source_id=record.source_id,
                attempts=error.attempts,
                value_sources=dict(record.value_sources),
            )
            book(record, Action.FAILED if issue.retryable else Action.QUARANTINED, issue=issue)
        except Exception as error:  # unexpected: kept as a failure the next run retries, never lost
            book(
                record,
                Action.FAILED,
                issue=make_issue(
                    "NETSUITE_NO_ANSWER",
                    record_type=record.record_type,
                    external_id=record.external_id,
                    source_id=record.source_id,
                    attempts="?",
                    detail=type(error).__name__,
                ),
            )
        else:
            report.writes += 1
            book(record, Action.UPDATED if record.external_id in existing else Action.CREATED, internal_id=internal_id)
            pending_ledger.append(
                LedgerEntry(
                    TARGET,
                    record.record_type,
                    record.external_id,
                    internal_id,
                    digest,
                    source_id=record.source_id,
                    partition_key=partition_key,
                    run_id=run_id,
                )
            )
            if len(pending_ledger) >= LEDGER_BATCH:
                flush()

    def changed() -> Iterator[tuple[NetSuiteRecord, dict, str]]:
        """The records to send, prepared one by one as slots free up: the first write leaves at once instead of
        after every body of the partition is resolved and hashed (seconds at tens of thousands of records)."""
        for record in records:
            body = body_to_send(record, internal_ids)
            if isinstance(body, SyncIssue):
                book(record, Action.QUARANTINED, issue=body)
                continue
            digest = content_hash(body)
            known = existing.get(record.external_id)
            if known is not None and known.content_hash == digest:
                book(record, Action.UNCHANGED, internal_id=known.internal_id)
                continue
            yield record, body, digest

    try:
        # Threads only wait on HTTP; the client's limiter caps requests in flight at NETSUITE_CONCURRENCY.
        # Twice as many threads as slots: the next request is signed and waiting when a slot frees up.
        with ThreadPoolExecutor(max_workers=2 * max(1, client.concurrency), thread_name_prefix="netsuite") as pool:
            futures: dict[Future, tuple[NetSuiteRecord, dict, str]] = {}
            queue = changed()
            # Bounded submission keeps memory flat for partitions of tens of thousands of records.
            window = client.concurrency * 4

            def submit_next() -> bool:
                item = None if denied else next(queue, None)
                if item is None:
                    return False
                futures[pool.submit(client.upsert, item[0].record_type, item[0].external_id, item[1])] = item
                return True

            def drop_queued() -> None:
                # Writes not started are dropped; those in flight finish and are booked as they answer.
                for future in [f for f in futures if f.cancel()]:
                    del futures[future]

            try:
                while len(futures) < window and submit_next():
                    pass
                while futures:
                    done, _ = wait(futures, return_when=FIRST_COMPLETED)
                    for future in done:
                        settle(future, *futures.pop(future))
                        submit_next()
                    if denied:
                        drop_queued()
            except BaseException:
                # The run was terminated (Dagster interrupts this thread): send nothing more, book what was sent.
                drop_queued()
                for future in list(futures):
                    settle(future, *futures.pop(future))
                raise
    finally:
        # Whatever stopped the loop, what NetSuite answered is in the ledger and every problem is on record.
        flush()
        ledger.record_exceptions(exceptions, partition_key=partition_key, run_id=run_id)
    report.elapsed_seconds = time.perf_counter() - started
    if denied is not None:
        raise denied
    log(f"{record_type}: {report.counts()} in {report.elapsed_seconds:.1f}s ({report.write_rate()} writes/s)")
    return report


def quarantine(issues: Iterable[SyncIssue], ledger: Ledger, partition_key: str | None, run_id: str | None) -> int:
    rows = [exception_row(i, TARGET) for i in issues]
    ledger.record_exceptions(rows, partition_key=partition_key, run_id=run_id)
    return len(rows)
