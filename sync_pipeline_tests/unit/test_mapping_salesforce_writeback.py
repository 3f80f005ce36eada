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


def test_every_status_written_is_documented_and_in_the_org_picklist():
    from sync_pipeline.sandbox.salesforce.schema import BILLING_STATUSES

    written = {
        writeback.billing_status({"status": s, "due_date": 0, "amount_paid": 1}, r, 1)
        for s in ("draft", "open", "paid", "void", "uncollectible")
        for r in (0, 1)
    }
    assert written | {writeback.HELD_BACK, writeback.NEEDS_REVIEW} <= set(writeback.STATUS_MEANINGS)
    assert set(writeback.STATUS_MEANINGS) <= set(BILLING_STATUSES)


def test_the_reason_names_the_first_problem_with_its_fix_and_fits_the_field():
    rows = [{"message": "product X has no Stripe price", "fix": "map it " * 80}, {"message": "m", "fix": "f"}]

    reason = writeback.status_reason(rows)

    assert reason.startswith("2 problems; first: product X has no Stripe price. Fix: map it")
    assert len(reason) == writeback.REASON_LENGTH and reason.endswith("…")
    assert writeback.status_reason([]) == ""
    assert writeback.unbilled_writeback("006A", "") == {
        "Id": "006A",
        "Billing_Status__c": None,
        "Billing_Status_Reason__c": None,
    }
