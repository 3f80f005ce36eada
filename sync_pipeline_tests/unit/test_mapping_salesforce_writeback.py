"""Billing status and the Salesforce write-back records of billed opportunities (pure)."""

from __future__ import annotations

import pytest

from sync_pipeline.mapping import salesforce_writeback as writeback


@pytest.mark.parametrize(
    ("invoice", "refunded", "status"),
    [
        ({"status": "open", "due_date": 2_000}, 0, "Invoiced"),
        ({"status": "open", "due_date": 500}, 0, "Past Due"),
        ({"status": "paid", "amount_paid": 120000}, 0, "Paid"),
        ({"status": "paid", "amount_paid": 120000}, 20000, "Partially Refunded"),
        ({"status": "paid", "amount_paid": 120000}, 120000, "Refunded"),
        ({"status": "void"}, 0, "Void"),
    ],
)
def test_billing_status_follows_the_invoice(invoice, refunded, status):
    assert writeback.billing_status(invoice, refunded, now=1_000) == status


def test_duplicate_ids_are_read_from_the_collection_error():
    errors = [
        {
            "statusCode": "DUPLICATE_EXTERNAL_ID",
            "message": "more than one record found for external id field: [0065g0000000001AAA, 0065g0000000002AAA]",
        }
    ]
    assert writeback.duplicate_ids(errors) == ["0065g0000000001AAA", "0065g0000000002AAA"]
