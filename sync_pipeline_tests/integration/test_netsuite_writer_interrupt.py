"""A run terminated mid-write (Dagster interrupts the step's thread) sends nothing more and books what was sent.

After `terminateRun`, the writer must not keep sending the writes it had queued behind the ones in flight
(the pool slot is about to be handed to the next run), and every write NetSuite applied must be in the ledger
so the next run does not send it again.
"""

from __future__ import annotations

import signal
import threading
import time

import pytest

from sync_pipeline.mapping.netsuite import NetSuiteRecord
from sync_pipeline.resources.ledger import Ledger
from sync_pipeline.writers.netsuite import TARGET, upsert_records
from sync_pipeline_tests.integration.test_netsuite_client import client_for, customer_body, start_sandbox  # noqa: F401

RECORDS = 40


def test_a_terminated_write_sends_nothing_more_and_books_every_write_netsuite_applied(start_sandbox, tmp_path):  # noqa: F811
    netsuite = start_sandbox(latency_ms=250)
    client = client_for(netsuite, concurrency=2)
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    records = [
        NetSuiteRecord("customer", f"stripe-cus_{n:04d}", customer_body(f"Customer {n}"), f"cus_{n:04d}")
        for n in range(RECORDS)
    ]
    # What Dagster does to a terminated step: an interrupt in the thread running it.
    interrupt = threading.Timer(1.0, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT))
    interrupt.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            upsert_records(
                records, client=client, ledger=ledger, partition_key=None, run_id=None, record_type="customer"
            )
    finally:
        interrupt.cancel()

    applied = netsuite.stats.writes_applied
    time.sleep(1.0)  # anything still queued would reach NetSuite by now (4 latencies)
    assert netsuite.stats.writes_applied == applied
    assert 0 < applied < RECORDS  # it was stopped mid-way: some sent, the rest never
    booked = ledger.lookup(TARGET, "customer", [r.external_id for r in records])
    assert len(booked) == applied  # every applied write is in the ledger: the next run sends only the rest
