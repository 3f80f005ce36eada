"""The plan preview's pure half: the ledger's verdict per record and the fields that change, old → new."""

from __future__ import annotations

from decimal import Decimal

from sync_pipeline.errors import make_issue
from sync_pipeline.mapping.content_hash import content_hash
from sync_pipeline.mapping.netsuite import NetSuiteRecord
from sync_pipeline.resources.ledger import LedgerEntry
from sync_pipeline.writers.plan_preview import (
    PlanAction,
    compare_with_ledger,
    counts,
    field_changes,
    preview_metadata,
    preview_records,
    to_read,
)

CUSTOMER = NetSuiteRecord("customer", "stripe-cus_1", {"companyName": "Acme", "isPerson": False}, "cus_1")


def _invoice(department: str = "3", amount: str = "10.00", external_id: str = "stripe-in_1") -> NetSuiteRecord:
    body = {
        "entity": {"externalId": "stripe-cus_1"},
        "department": {"id": department},
        "memo": "Stripe invoice 1",
        "item": {"items": [{"item": {"id": "100"}, "quantity": 1, "amount": Decimal(amount)}]},
    }
    return NetSuiteRecord(
        "invoice", external_id, body, external_id.removeprefix("stripe-"), (("customer", CUSTOMER.external_id),)
    )


def _entry(record: NetSuiteRecord, internal_id: str, body: dict) -> LedgerEntry:
    return LedgerEntry("netsuite", record.record_type, record.external_id, internal_id, content_hash(body))


def _netsuite(body: dict) -> dict:
    """What a NetSuite GET gives back for a body: references with names and links, sublists with line numbers."""

    def ref(value):
        return {**value, "refName": f"name of {value['id']}", "links": []}

    held = {k: ref(v) if isinstance(v, dict) and "id" in v else v for k, v in body.items()}
    if "item" in body:
        held["item"] = {
            "items": [
                {**line, "item": ref(line["item"]), "line": n + 1} for n, line in enumerate(body["item"]["items"])
            ],
            "totalResults": len(body["item"]["items"]),
        }
    return {**held, "id": "200", "total": Decimal("10.00"), "status": {"id": "A", "refName": "Open"}}


# -- field_changes ---------------------------------------------------------------------------------------


def test_a_reference_that_changes_reads_old_id_to_new_id():
    sent = {"department": {"id": "4"}, "class": {"id": "5"}}
    held = {"department": {"id": "3", "refName": "Subscriptions"}, "class": {"id": "5", "refName": "SaaS"}}

    assert field_changes(sent, held) == ["department: 3 → 4"]


def test_amounts_compare_as_exact_decimals_and_show_as_decimal_text():
    sent = {"payment": Decimal("17410.50"), "exchangeRate": Decimal("1.5")}
    held = {"payment": Decimal("17410.5"), "exchangeRate": Decimal("1.25")}

    assert field_changes(sent, held) == ["exchangeRate: 1.25 → 1.5"]
    assert field_changes({"amount": Decimal("2255110")}, {"amount": Decimal("2255100")}) == [
        "amount: 2255100 → 2255110"
    ]


def test_only_fields_we_send_count_and_text_with_spaces_is_quoted():
    sent = {"companyName": "Acme Holdings", "email": "a@example.test", "phone": None}
    held = {"companyName": "Acme", "email": "a@example.test", "balance": Decimal("99.00"), "status": "active"}

    assert field_changes(sent, held) == ['companyName: Acme → "Acme Holdings"']
    assert field_changes({"memo": "new"}, {}) == ["memo: (empty) → new"]


def test_sublists_compare_line_by_line_with_added_and_removed_lines_described():
    sent = {
        "item": {
            "items": [
                {"item": {"id": "100"}, "amount": Decimal("12.50")},
                {"item": {"id": "110"}, "amount": Decimal("-2.50")},
            ]
        }
    }
    held = {
        "item": {
            "items": [
                {"line": 1, "item": {"id": "100", "refName": "Subscription"}, "amount": Decimal("10.00")},
                {"line": 2, "item": {"id": "110", "refName": "Discount"}, "amount": Decimal("-2.50")},
                {"line": 3, "item": {"id": "120", "refName": "Tax"}, "amount": Decimal("1.00")},
            ]
        }
    }

    assert field_changes(sent, held) == [
        "item line 1 amount: 10.00 → 12.50",
        "item line 3: removed (item 120, amount 1.00)",
    ]
    assert field_changes(held, sent)[-1] == "item line 3: added (line 3, item 120, amount 1.00)"


def test_applications_are_matched_by_their_document_not_their_position():
    sent = {"apply": {"items": [{"doc": {"id": "7"}, "apply": True, "amount": Decimal("5.00")}]}}
    held = {
        "apply": {
            "items": [
                {"doc": {"id": "6"}, "apply": False, "amount": Decimal("0")},  # another open invoice, not applied
                {"doc": {"id": "7"}, "apply": True, "amount": Decimal("4.00")},
                {"doc": {"id": "8"}, "apply": True, "amount": Decimal("1.00")},
            ]
        }
    }

    assert field_changes(sent, held) == [
        "apply doc 7 amount: 4.00 → 5.00",
        "apply doc 8: removed (doc 8, apply true, amount 1.00)",
    ]


def test_nested_objects_name_the_path_of_the_field():
    sent = {"billingAddress": {"addr1": "1 Main St", "city": "Berlin"}}
    held = {"billingAddress": {"addr1": "1 Main St", "city": "Bonn", "country": "DE"}}

    assert field_changes(sent, held) == ["billingAddress.city: Bonn → Berlin"]


# -- the ledger's verdict and the rows ---------------------------------------------------------------


def test_create_update_unchanged_follow_the_ledger_after_references_are_resolved():
    synced, changed, new = _invoice(), _invoice("4", external_id="stripe-in_2"), _invoice(external_id="stripe-in_3")
    resolved = {**synced.body, "entity": {"id": "101"}}
    known = {
        ("customer", CUSTOMER.external_id): _entry(CUSTOMER, "101", CUSTOMER.body),
        ("invoice", synced.external_id): _entry(synced, "201", resolved),
        ("invoice", changed.external_id): _entry(changed, "202", resolved),  # synced with department 3
    }

    pending = compare_with_ledger([CUSTOMER, synced, changed, new], known, {"stripe-cus_1": "101"})

    assert [p.action for p in pending] == [
        PlanAction.UNCHANGED,
        PlanAction.UNCHANGED,
        PlanAction.UPDATE,
        PlanAction.CREATE,
    ]
    assert pending[2].body["entity"] == {"id": "101"}
    assert to_read(pending) == [("invoice", "stripe-in_2")]


def test_a_reference_to_a_record_the_run_creates_first_shows_as_new():
    customer = NetSuiteRecord("customer", "stripe-cus_1", {"companyName": "Acme"}, "cus_1")
    invoice = _invoice()
    known = {("invoice", invoice.external_id): _entry(invoice, "201", {**invoice.body, "entity": {"id": "101"}})}

    pending = compare_with_ledger([customer, invoice], known, {})
    rows = preview_records(
        pending, current={("invoice", invoice.external_id): _netsuite({**invoice.body, "entity": {"id": "101"}})}
    )

    assert [(r.record_type, r.action) for r in rows] == [
        ("customer", PlanAction.CREATE),
        ("invoice", PlanAction.UPDATE),
    ]
    assert rows[1].changes == ("entity: 101 → new stripe-cus_1",)


def test_a_record_whose_dependency_nobody_writes_is_held_back_with_the_fix():
    pending = compare_with_ledger([_invoice()], {}, {})

    rows = preview_records(pending)

    assert rows[0].action == PlanAction.HELD_BACK
    assert rows[0].fix.startswith("sync stripe-cus_1 first")
    assert "stripe-cus_1" in rows[0].note and "not in NetSuite yet" in rows[0].note


def test_rows_say_what_changes_from_netsuite_and_what_is_held_back_sorted_for_review():
    synced = _invoice()
    known = {
        ("customer", CUSTOMER.external_id): _entry(CUSTOMER, "101", CUSTOMER.body),
        ("invoice", synced.external_id): _entry(synced, "201", {"stale": True}),
        ("invoice", "stripe-in_9"): _entry(_invoice(external_id="stripe-in_9"), "209", {"stale": True}),
    }
    records = [CUSTOMER, _invoice("4", "12.50"), _invoice(external_id="stripe-in_9")]
    held = make_issue(
        "UNMAPPED_CURRENCY",
        record_type="invoice",
        external_id="stripe-in_5",
        source_id="in_5",
        field="currency",
        value="CHF",
        currency="CHF",
    )
    pending = compare_with_ledger(records, known, {"stripe-cus_1": "101"})
    netsuite_now = _netsuite({**synced.body, "entity": {"id": "101"}})

    rows = preview_records(
        pending, [held], {("invoice", "stripe-in_1"): netsuite_now, ("invoice", "stripe-in_9"): None}
    )

    assert [(r.action, r.external_id) for r in rows] == [
        (PlanAction.CREATE, "stripe-in_9"),
        (PlanAction.UPDATE, "stripe-in_1"),
        (PlanAction.HELD_BACK, "stripe-in_5"),
        (PlanAction.UNCHANGED, "stripe-cus_1"),
    ]
    assert "not in NetSuite" in rows[0].note
    assert rows[1].changes == ("department: 3 → 4", "item line 1 amount: 10.00 → 12.50")
    assert rows[1].as_dict()["changes"] == "department: 3 → 4; item line 1 amount: 10.00 → 12.50"
    assert rows[2].fix == held.fix and "CHF" in rows[2].fix
    assert counts(rows) == {"create": 1, "update": 1, "held back": 1, "unchanged": 1}


def test_an_update_netsuite_already_matches_says_so_and_without_reads_names_no_fields():
    invoice = _invoice()
    known = {("invoice", invoice.external_id): _entry(invoice, "201", {"stale": True})}
    pending = compare_with_ledger([invoice], known, {"stripe-cus_1": "101"})

    same = preview_records(
        pending, current={("invoice", "stripe-in_1"): _netsuite({**invoice.body, "entity": {"id": "101"}})}
    )
    ledger_only = preview_records(pending)

    assert same[0].action == PlanAction.UPDATE and same[0].changes == ()
    assert "already holds" in same[0].note
    assert ledger_only[0].changes == () and ledger_only[0].note == "content changed since the last sync"


def test_the_plan_asset_metadata_counts_each_action_and_tables_the_first_rows_with_where_the_fields_are():
    rows = preview_records(compare_with_ledger([_invoice(external_id=f"stripe-in_{n:03}") for n in range(60)], {}, {}))

    metadata = preview_metadata(rows, "2026-11-03")

    assert {k: v for k, v in metadata.items() if k.startswith("would_")} == {
        "would_create": 0,
        "would_update": 0,
        "would_held_back": 60,
        "would_unchanged": 0,
    }
    table = metadata["preview"].value
    assert "| held back | invoice       | stripe-in_000 |" in table and "stripe-in_050" not in table
    assert "…and 10 more." in table
    assert "`sync-pipeline plan --partition 2026-11-03`" in table
