"""Opportunity -> Stripe billing plan, its validation, Stripe parameters and idempotency keys (pure)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from sync_pipeline.mapping import stripe_billing as billing
from sync_pipeline.mapping.field_mapping import FieldMapping, FieldMappingError, SalesforceConfig
from sync_pipeline.mapping.netsuite import map_customer
from sync_pipeline.schemas.stripe_billing import validate_plans

ROOT = Path(__file__).resolve().parents[2]
PRO, SETUP, UNMAPPED = "01t5g0000000001AAA", "01t5g0000000002AAA", "01t5g0000000003AAA"
# The least a field-mapping file must hold besides the Salesforce section.
USD = {"currencies": {"USD": {"netsuite_id": "1"}}}
CONFIG = SalesforceConfig(product_prices={PRO[:15]: "price_pro", SETUP[:15]: "price_setup"})
PRICES = {
    "price_pro": {
        "id": "price_pro",
        "currency": "usd",
        "unit_amount": 60000,
        "active": True,
        "recurring": {"interval": "month", "interval_count": 1},
    },
    "price_setup": {"id": "price_setup", "currency": "usd", "unit_amount": 120000, "active": True, "recurring": None},
}


def opportunity(lines, amount="1200.0", currency="USD", account_name="Acme Corp", **extra) -> dict:
    return {
        "Id": "0065g0000000001AAA",
        "Name": "Acme deal",
        "AccountId": "0015g0000000001AAA",
        "AccountName": account_name,
        "Amount": Decimal(amount),
        "CurrencyIsoCode": currency,
        "IsWon": True,
        "BillingCity": "Springfield",
        "lines": [
            {
                "Id": f"00k5g000000000{i}AAA",
                "Product2Id": product,
                "ProductName": "P",
                "Quantity": Decimal(qty),
                "TotalPrice": Decimal(total),
            }
            for i, (product, qty, total) in enumerate(lines)
        ],
        **extra,
    }


def test_recurring_products_make_a_subscription_with_whole_quantities():
    plan = billing.plan_billing(opportunity([(PRO, "2.0", "1200.0")]), CONFIG, PRICES)

    assert plan.mode == billing.SUBSCRIPTION
    assert plan.amount_minor == 120000 and plan.amount_text == "1200.00"
    params = billing.subscription_params(plan, "cus_1")
    assert params["items"] == [{"price": "price_pro", "quantity": 2}]
    assert params["metadata"]["salesforce_opportunity_id"] == "0065g0000000001AAA"
    assert params["metadata"]["salesforce_amount"] == "1200.00"
    assert validate_plans([plan]).issues == []


def test_one_time_products_make_an_invoice_item_per_line_on_the_invoice():
    plan = billing.plan_billing(opportunity([(SETUP, "1", "1200")]), CONFIG, PRICES)

    assert plan.mode == billing.INVOICE
    item = billing.invoice_item_params(plan, plan.lines[0], "cus_1", "in_1")
    assert item == {
        "customer": "cus_1",
        "invoice": "in_1",
        "pricing": {"price": "price_setup"},
        "quantity": 1,
        "metadata": {"salesforce_opportunity_id": "0065g0000000001AAA", "salesforce_line_id": "00k5g0000000000AAA"},
    }
    assert billing.invoice_params(plan, "cus_1")["currency"] == "usd"


def test_a_plan_with_a_setup_fee_is_one_subscription_whose_first_invoice_carries_the_fee():
    plan = billing.plan_billing(opportunity([(PRO, "1", "600"), (SETUP, "1", "1200")], amount="1800"), CONFIG, PRICES)

    assert plan.mode == billing.SUBSCRIPTION
    assert validate_plans([plan]).issues == []
    params = billing.subscription_params(plan, "cus_1")
    assert params["items"] == [{"price": "price_pro", "quantity": 1}]
    assert params["add_invoice_items"] == [
        {
            "price": "price_setup",
            "quantity": 1,
            "metadata": {"salesforce_opportunity_id": "0065g0000000001AAA", "salesforce_line_id": "00k5g0000000001AAA"},
        }
    ]
    assert "add_invoice_items" not in billing.subscription_params(
        billing.plan_billing(opportunity([(PRO, "2", "1200")]), CONFIG, PRICES), "cus_1"
    )


def test_idempotency_keys_name_the_record_and_the_action():
    assert billing.idempotency_key("0065g0000000001AAA", "invoice") == "sf-0065g0000000001AAA-invoice"
    assert billing.idempotency_key("0065g0000000001AAA", "invoice") != billing.idempotency_key(
        "0065g0000000001AAA", "finalize"
    )


def test_each_problem_is_an_issue_with_its_fix_and_the_good_opportunity_still_bills():
    good = billing.plan_billing(opportunity([(PRO, "2", "1200")]), CONFIG, PRICES)
    unmapped = billing.plan_billing(opportunity([(UNMAPPED, "1", "500")], amount="500", Id="006B"), CONFIG, PRICES)
    nameless = billing.plan_billing(opportunity([(SETUP, "1", "1200")], account_name=" ", Id="006C"), CONFIG, PRICES)
    wrong_price = billing.plan_billing(opportunity([(SETUP, "1", "1100")], amount="1100", Id="006D"), CONFIG, PRICES)
    euro = billing.plan_billing(opportunity([(SETUP, "1", "1200")], currency="EUR", Id="006E"), CONFIG, PRICES)

    result = validate_plans([good, unmapped, nameless, wrong_price, euro])

    assert [p.opportunity_id for p in result.valid] == [good.opportunity_id]
    by_id = {i.external_id: i for i in result.issues}
    assert by_id["006B"].error_code == "UNMAPPED_SALESFORCE_PRODUCT"
    assert by_id["006B"].fix.startswith(f"add `{UNMAPPED}: {{USD: price_...}}` under `salesforce: product_prices:`")
    assert by_id["006B"].field == f"Product2Id {UNMAPPED}"
    assert by_id["006C"].field == "Account.Name"
    assert "bills 1200.00 for 1, the line is 1100.00" in by_id["006D"].message
    assert "is in USD, the opportunity in EUR" in by_id["006E"].message


EUR_PRICES = {
    **PRICES,
    "price_pro_eur": {**PRICES["price_pro"], "id": "price_pro_eur", "currency": "eur", "unit_amount": 55000},
}
PER_CURRENCY = SalesforceConfig(
    product_prices={PRO[:15]: {"USD": "price_pro", "EUR": "price_pro_eur"}, SETUP[:15]: {"USD": "price_setup"}}
)


def test_a_deal_is_billed_with_its_currency_s_price_and_a_missing_one_names_the_line_to_add():
    usd = billing.plan_billing(opportunity([(PRO, "1", "600")], amount="600"), PER_CURRENCY, EUR_PRICES)
    eur = billing.plan_billing(
        opportunity([(PRO, "1", "550")], amount="550", currency="EUR", Id="006E"), PER_CURRENCY, EUR_PRICES
    )
    eur_fee = billing.plan_billing(
        opportunity([(PRO, "1", "550"), (SETUP, "1", "1200")], amount="1750", currency="EUR", Id="006F"),
        PER_CURRENCY,
        EUR_PRICES,
    )

    result = validate_plans([usd, eur, eur_fee])

    assert [p.opportunity_id for p in result.valid] == [usd.opportunity_id, "006E"]
    assert billing.subscription_params(eur, "cus_1")["items"] == [{"price": "price_pro_eur", "quantity": 1}]
    [issue] = result.issues
    assert issue.external_id == "006F" and issue.value == SETUP
    assert issue.message.endswith(f"`Product2Id` = {SETUP} (P) cannot be billed in EUR: has no Stripe price in EUR")
    assert issue.fix.startswith(
        f"write `{SETUP[:15]}: {{USD: price_setup, EUR: price_...}}` under `salesforce: product_prices:`"
    )


def test_a_single_price_still_bills_its_currency_and_another_currency_is_told_to_map_per_currency():
    euro = billing.plan_billing(opportunity([(SETUP, "1", "1200")], currency="EUR"), CONFIG, PRICES)

    [issue] = validate_plans([euro]).issues

    assert "Stripe price price_setup is in USD, the opportunity in EUR" in issue.message
    assert f"write `{SETUP[:15]}: {{USD: price_setup, EUR: price_...}}`" in issue.fix


def test_field_mapping_reads_prices_per_currency_and_names_bad_entries():
    mapping = FieldMapping.from_dict(
        {**USD, "salesforce": {"product_prices": {PRO: {"usd": "price_pro", "EUR": "price_pro_eur"}, SETUP: "price_s"}}}
    )
    assert mapping.salesforce.price_for_product(PRO, "EUR") == "price_pro_eur"
    assert mapping.salesforce.price_for_product(PRO, "GBP") is None
    assert mapping.salesforce.price_for_product(SETUP, "GBP") == "price_s"  # the single form: checked against Stripe
    assert mapping.salesforce.price_ids() == {"price_pro", "price_pro_eur", "price_s"}
    with pytest.raises(FieldMappingError) as raised:
        FieldMapping.from_dict({**USD, "salesforce": {"product_prices": {PRO: {"EUO": "price_x", "GBP": "prod_x"}}}})
    assert f"salesforce.product_prices.{PRO}.EUO: 'EUO' is not a three-letter ISO 4217" in str(raised.value)
    assert f"salesforce.product_prices.{PRO}.GBP: 'prod_x' is not a Stripe price id" in str(raised.value)


def test_amount_must_match_the_line_items():
    plan = billing.plan_billing(opportunity([(SETUP, "1", "1200")], amount="1300"), CONFIG, PRICES)

    [issue] = validate_plans([plan]).issues

    assert issue.field == "Amount" and "differs from the total of its line items" in issue.message


def test_a_change_after_billing_is_described_from_what_was_billed():
    billed = billing.billing_metadata(billing.plan_billing(opportunity([(SETUP, "1", "1200")]), CONFIG, PRICES))
    changed = billing.plan_billing(opportunity([(SETUP, "1", "1500")], amount="1500"), CONFIG, PRICES)

    assert billing.changes_since_billing(billed, changed) == "amount 1200.00 → 1500.00"
    assert billing.fingerprint(opportunity([(SETUP, "1", "1200")])) != billing.fingerprint(
        opportunity([(SETUP, "1", "1500")], amount="1500")
    )
    # Numbers as Salesforce spells them (1200.0 vs 1200.00) are the same fingerprint.
    assert billing.fingerprint(opportunity([(SETUP, "1", "1200.0")])) == billing.fingerprint(
        opportunity([(SETUP, "1.0", "1200.00")], amount="1200.00")
    )


def test_field_mapping_reads_product_prices_and_names_bad_lines():
    mapping = FieldMapping.from_dict({**USD, "salesforce": {"product_prices": {PRO: "price_pro"}}})
    assert mapping.salesforce.price_for_product(PRO, "USD") == "price_pro"
    assert mapping.salesforce.price_for_product(PRO[:15], "USD") == "price_pro"

    with pytest.raises(FieldMappingError) as raised:
        FieldMapping.from_dict({**USD, "salesforce": {"product_prices": {"Pro plan": "price_pro", SETUP: "prod_x"}}})
    assert "salesforce.product_prices.Pro plan: 'Pro plan' is not a Salesforce Product2 id" in str(raised.value)
    assert f"salesforce.product_prices.{SETUP}: 'prod_x' is not a Stripe price id" in str(raised.value)


def test_billing_start_date_is_read_and_checked():
    mapping = FieldMapping.from_dict({**USD, "salesforce": {"bill_closed_won_from": "2026-12-01"}})
    assert str(mapping.salesforce.bill_closed_won_from) == "2026-12-01"
    with pytest.raises(FieldMappingError, match="salesforce.bill_closed_won_from: 'Dec 1' is not a date"):
        FieldMapping.from_dict({**USD, "salesforce": {"bill_closed_won_from": "Dec 1"}})


def test_netsuite_customer_of_a_salesforce_account_carries_its_id_and_billing_address():
    mapping = FieldMapping.load(ROOT / "field_mapping.yaml")
    customer = {
        "id": "cus_1",
        "name": "Acme Corp",
        "currency": "usd",
        "metadata": {"salesforce_account_id": "0015g0000000001AAA"},
        "address": {
            "line1": "1 Main St",
            "city": "Springfield",
            "postal_code": "12345",
            "country": "US",
            "line2": None,
            "state": None,
        },
    }

    [record] = map_customer(customer, mapping).records
    plain = map_customer({**customer, "metadata": {}}, mapping).records[0]

    assert record.body["companyName"] == "Acme Corp"
    assert record.body["custentity_sf_account_id"] == "0015g0000000001AAA"
    assert record.body["addressBook"]["items"][0]["addressBookAddress"] == {
        "addr1": "1 Main St",
        "city": "Springfield",
        "zip": "12345",
        "country": "US",
    }
    assert "custentity_sf_account_id" not in plain.body and "addressBook" not in plain.body


def test_a_fractional_quantity_cannot_be_billed():
    plan = billing.plan_billing(opportunity([(PRO, "1.5", "900")], amount="900"), CONFIG, PRICES)

    [issue] = validate_plans([plan]).issues

    assert "the quantity is not a whole number" in issue.message


def test_every_unmapped_product_of_a_deal_stays_an_open_exception(tmp_path):
    from sync_pipeline.resources.ledger import Ledger
    from sync_pipeline.writers.report import exception_row

    other = "01t5g0000000004AAA"
    deal = billing.plan_billing(
        opportunity([(UNMAPPED, "1", "500"), (other, "1", "700")], amount="1200", Id="006F"), CONFIG, PRICES
    )
    issues = validate_plans([deal]).issues
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    ledger.record_exceptions([exception_row(i, "stripe") for i in issues])
    open_rows = ledger.open_exceptions(without_partition=True)
    assert sorted(r["value"] for r in open_rows if r["error_code"] == "UNMAPPED_SALESFORCE_PRODUCT") == [
        UNMAPPED,
        other,
    ]


def test_what_a_subscription_billed_is_kept_so_a_change_in_stripe_can_be_flagged():
    plan = billing.plan_billing(opportunity([(PRO, "1", "600"), (SETUP, "1", "1200")], amount="1800"), CONFIG, PRICES)
    subscription = {
        "currency": "usd",
        "metadata": billing.subscription_params(plan, "cus_1")["metadata"],
        "items": {"data": [{"price": {"unit_amount": 60000}, "quantity": 1}]},
    }

    assert subscription["metadata"]["salesforce_recurring_amount"] == "600.00"
    assert subscription["metadata"]["salesforce_amount"] == "1800.00"
    assert billing.changed_in_stripe(subscription) == ""
    subscription["items"]["data"][0]["quantity"] = 3  # upgraded in Stripe
    assert billing.changed_in_stripe(subscription) == "recurring 600.00 → 1800.00 USD"
    assert billing.changed_in_stripe({**subscription, "metadata": {}}) == ""  # billed before it was kept
