"""Validation before anything is written: pandera models per record type, and the field-mapping file itself."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

import dagster as dg
import pytest
import yaml

from sync_pipeline.assets.netsuite import plan_frame, required_fields_check
from sync_pipeline.mapping.field_mapping import FieldMapping, FieldMappingError
from sync_pipeline.mapping.netsuite import map_customer, map_invoice, map_invoice_tree
from sync_pipeline.schemas.netsuite import records_frame, schema_for, validate_records
from sync_pipeline_tests.unit.test_mapping_netsuite import (
    EXAMPLE_MAPPING,
    charge,
    customer,
    example_mapping_data,
    invoice,
    invoice_payment,
    line,
    mapping_with,
)


@pytest.fixture(scope="module")
def fm() -> FieldMapping:
    return FieldMapping.load(EXAMPLE_MAPPING)


def without_department_for_subsidiary_2() -> FieldMapping:
    """The example config with EUR booked to its own subsidiary 2, and only subsidiary 1 gets a department on
    invoices."""
    data = example_mapping_data()
    data["currencies"]["EUR"]["subsidiary"] = "2"
    del data["defaults"]["invoice"]["department"]
    data["subsidiaries"]["1"]["defaults"]["invoice"] = {"department": "3"}
    return FieldMapping.from_dict(data)


def paid_invoice_tree(fm: FieldMapping, invoice_id: str, currency: str, charge_id: str):
    inv = invoice([line(5000)], invoice_id=invoice_id, currency=currency)
    return map_invoice_tree(
        inv,
        fm,
        invoice_payments=[invoice_payment(inv, charge=charge_id)],
        charges=[charge(charge_id=charge_id, amount=5000, currency=currency)],
    )


# -- records ----------------------------------------------------------------------------------------


def test_missing_required_department_goes_to_issues_with_the_fix_and_the_rest_passes():
    fm = without_department_for_subsidiary_2()
    usd = paid_invoice_tree(fm, "in_usd", "usd", "ch_usd")
    eur = paid_invoice_tree(fm, "in_eur", "eur", "ch_eur")
    outcome = validate_records(usd.records + eur.records, fm)

    assert {(r.record_type, r.external_id) for r in outcome.valid} == {
        ("invoice", "stripe-in_usd"),
        ("customerPayment", "stripe-ch_usd"),
    }
    by_record = {(i.record_type, i.external_id): i for i in outcome.issues}
    missing = by_record[("invoice", "stripe-in_eur")]
    assert (missing.error_code, missing.field, missing.value) == ("MISSING_REQUIRED_FIELD", "department", None)
    assert missing.source_id == "in_eur"
    assert "add a default `department` for invoices of subsidiary 2 in field_mapping.yaml" in missing.fix
    # Its payment would fail in NetSuite: it is held back and says why.
    held = by_record[("customerPayment", "stripe-ch_eur")]
    assert held.error_code == "DEPENDENCY_NOT_SYNCED"
    assert (held.field, held.value) == ("apply", "stripe-in_eur")


def test_the_example_config_makes_every_mapped_record_valid(fm):
    trees = [paid_invoice_tree(fm, f"in_{c}", c, f"ch_{c}") for c in ("usd", "eur", "jpy", "kwd")]
    records = [r for tree in trees for r in tree.records]
    records += map_customer(customer(currency="kwd"), fm).records
    outcome = validate_records(records, fm)
    assert outcome.issues == []
    assert len(outcome.valid) == len(records)


def test_account_specific_required_field_from_the_config():
    fm = mapping_with(required_fields={"invoice": ["department", "custbody_region"]})
    records = map_invoice(invoice([line(5000)]), fm).records
    outcome = validate_records(records, fm)
    assert [(i.error_code, i.field) for i in outcome.issues] == [("MISSING_REQUIRED_FIELD", "custbody_region")]
    assert not outcome.valid
    with_default = mapping_with(
        required_fields={"invoice": ["custbody_region"]}, defaults={"invoice": {"custbody_region": {"id": "7"}}}
    )
    assert validate_records(map_invoice(invoice([line(5000)]), with_default).records, with_default).issues == []


def test_customer_without_subsidiary_is_reported_with_the_currency_fix(fm):
    record = map_customer(customer(currency=None), fm).records[0]
    outcome = validate_records([record], fm)
    assert [(i.error_code, i.field) for i in outcome.issues] == [("MISSING_REQUIRED_FIELD", "subsidiary")]
    assert "`currencies:`" in outcome.issues[0].fix


def _invoice_record(fm: FieldMapping, **body_changes):
    record = map_invoice(invoice([line(5000)]), fm).records[0]
    return replace(record, body={**record.body, **body_changes})


def test_amount_precision_beyond_the_currency_is_refused(fm):
    record = _invoice_record(fm)
    items = [{**record.body["item"]["items"][0], "amount": Decimal("50.005")}]
    bad = replace(record, body={**record.body, "item": {"items": items}})
    codes = {i.error_code for i in validate_records([bad], fm).issues}
    assert "INVALID_AMOUNT" in codes


def test_lines_must_equal_the_header_total(fm):
    record = _invoice_record(fm)
    bad = replace(record, amount_minor=6000)
    issues = validate_records([bad], fm).issues
    assert [i.error_code for i in issues] == ["LINES_DO_NOT_SUM"]
    assert "50.00" in issues[0].message and "60.00" in issues[0].message


def test_negative_invoice_becomes_a_valid_credit_memo(fm):
    # NetSuite refuses a negative invoice; Stripe credits it to the customer balance, so it is a credit memo.
    record = map_invoice(invoice([line(-500, proration=True)]), fm).records[0]
    assert (record.record_type, record.external_id, record.amount_minor) == ("creditMemo", "stripe-in_1", 500)
    assert [i["amount"] for i in record.body["item"]["items"]] == [Decimal("5.00")]
    assert "apply" not in record.body  # unapplied: the customer's credit, as in Stripe
    assert validate_records([record], fm).issues == []


def test_external_id_currency_and_date_patterns(fm):
    record = _invoice_record(fm, tranDate="02/11/2026")
    bad = replace(record, external_id="stripe:in_1", currency="usd")
    codes = sorted(i.error_code for i in validate_records([bad], fm).issues)
    assert codes == ["INVALID_CURRENCY", "INVALID_DATE", "INVALID_EXTERNAL_ID"]


def test_identical_duplicates_pass_once_and_conflicting_ones_are_held(fm):
    first = map_customer(customer(), fm).records[0]
    assert len(validate_records([first, first], fm).valid) == 1
    conflicting = replace(first, body={**first.body, "companyName": "Other"}, source_id="cus_other")
    outcome = validate_records([first, conflicting], fm)
    assert not outcome.valid
    assert [i.error_code for i in outcome.issues] == ["DUPLICATE_EXTERNAL_ID"]


def test_frame_flattens_references_and_keeps_money_exact(fm):
    record = map_invoice(invoice([line(12345)], currency="kwd"), fm).records[0]
    row = records_frame([record], fm=fm).iloc[0]
    assert (row["entity"], row["subsidiary"], row["currency"], row["currency_id"]) == ("stripe-cus_1", "1", "KWD", "4")
    # What NetSuite holds at its 2 decimals: 12.345 KWD rounded half-even (the 0.005 residue is reported apart).
    assert row["total"] == Decimal("12.34") and isinstance(row["total"], Decimal)
    assert (row["precision"], row["max_decimals"]) == (2, 2)
    assert row["class"] == "5"
    assert validate_records([record], fm).issues == []


def test_schema_requires_the_configured_fields(fm):
    schema = schema_for("invoice", fm)
    assert not schema.columns["department"].nullable
    assert not schema.columns["location"].nullable
    assert schema_for("customerPayment", fm).columns["department"].nullable


def test_required_fields_check_warns_for_held_back_records_and_errors_for_an_invalid_one_in_the_write_set():
    fm = without_department_for_subsidiary_2()
    records = [
        *paid_invoice_tree(fm, "in_usd", "usd", "ch_usd").records,
        *paid_invoice_tree(fm, "in_eur", "eur", "ch_eur").records,
    ]
    outcome = validate_records(records, fm)

    clean = required_fields_check(plan_frame(outcome.valid, [], []), fm)
    held_back = required_fields_check(plan_frame(outcome.valid, outcome.issues, []), fm)
    # What a plan that failed to validate would hand the writers: every record, the EUR invoice included.
    slipped = required_fields_check(plan_frame(records, [], []), fm)

    assert clean.passed
    assert (held_back.passed, held_back.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert (slipped.passed, slipped.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert slipped.metadata["invalid_in_write_set"].value == 1
    assert "stripe-in_eur" in slipped.description and "department" in slipped.description


# -- the field-mapping file -------------------------------------------------------------------------


def test_example_config_loads_with_the_sandbox_ids(fm):
    # One Stripe account, one subsidiary: every currency books to `subsidiary: "1"`; KWD at NetSuite's 2 decimals.
    assert {c: (m.netsuite_id, m.subsidiary, m.precision) for c, m in fm.currencies.items()} == {
        "USD": ("1", "1", 2),
        "EUR": ("2", "1", 2),
        "JPY": ("3", "1", 0),
        "KWD": ("4", "1", 2),
    }
    assert (fm.items.default, fm.items.discount, fm.items.tax, fm.items.proration) == ("100", "110", "120", "130")
    assert (fm.accounts.payments, fm.accounts.refunds, fm.accounts.stripe_fees, fm.accounts.bank) == (
        "1",
        "70",
        "60",
        "10",
    )
    assert fm.customers.mode == "per_customer" and fm.void_invoices == "credit_memo"


def test_config_errors_name_the_key_and_the_fix(tmp_path):
    data = example_mapping_data()
    data["customers"]["mode"] = "globl"
    data["currencies"]["JPY"]["subsidiary"] = "2"
    data["defaults"]["invoce"] = {"department": "3"}
    data["defaults"]["invoice"]["class"] = 5.5
    data["items"]["by_price"] = {"pro_monthly": "101"}
    path = tmp_path / "field_mapping.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(FieldMappingError) as raised:
        FieldMapping.load(path)
    text = str(raised.value)
    assert str(path) in text
    assert "customers.mode: 'globl' is not a valid choice. Fix: use one of: per_customer, global" in text
    assert "currencies.JPY.subsidiary: subsidiary 2 does not allow JPY" in text
    assert "defaults.invoce:" in text and "invoice" in text
    assert "defaults.invoice.class: expected a NetSuite internal id, got 5.5" in text
    assert "items.by_price.pro_monthly: 'pro_monthly' is not a Stripe id starting with price_" in text
    assert len(raised.value.problems) == 5


def test_required_fields_without_a_default_are_listed_per_subsidiary(fm):
    assert fm.missing_required_defaults() == []
    assert without_department_for_subsidiary_2().missing_required_defaults() == [
        "invoice of subsidiary 2: no default `department`",
        "invoice of subsidiary 3: no default `department`",
        "invoice of subsidiary 4: no default `department`",
    ]


def test_global_mode_needs_the_customer_id():
    with pytest.raises(FieldMappingError, match="customers.global_customer_id: missing"):
        mapping_with(customers__mode="global")


def test_yaml_syntax_errors_say_where(tmp_path):
    path = tmp_path / "field_mapping.yaml"
    path.write_text("currencies:\n  USD: {netsuite_id: 1\n")
    with pytest.raises(FieldMappingError, match="not valid YAML at line"):
        FieldMapping.load(path)


def test_missing_file_says_which_setting_points_at_it(tmp_path):
    with pytest.raises(FieldMappingError, match="SYNC_FIELD_MAPPING"):
        FieldMapping.load(tmp_path / "absent.yaml")
