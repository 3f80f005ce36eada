"""Several Stripe accounts: the settings, the external-id rule per account, the per-account field mapping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sync_pipeline import settings
from sync_pipeline.cli import main
from sync_pipeline.mapping.external_ids import (
    account_of_external_id,
    for_account,
    netsuite_external_id,
    refund_credit_memo_external_id,
    reversal_external_id,
    void_credit_memo_external_id,
)
from sync_pipeline.mapping.field_mapping import FieldMapping, parse_field_mapping
from sync_pipeline.stripe_accounts import StripeAccount, configured_accounts, mapping_problems, selected_account

ROOT = Path(__file__).resolve().parents[2]
ACCOUNTS = {"SYNC_STRIPE_ACCOUNTS": "us,eu", "STRIPE_API_KEY_US": "sk_test_us", "STRIPE_API_KEY_EU": "sk_test_eu"}


# -- configuration ---------------------------------------------------------------------------------


def test_without_the_setting_there_is_one_default_account_on_the_plain_variables():
    (account,) = configured_accounts({})
    assert account.default and account.prefix is None
    assert account.env_var("STRIPE_API_KEY") == "STRIPE_API_KEY"
    assert account.qualified("stripe_to_netsuite_on_events") == "stripe_to_netsuite_on_events"
    assert account.group("netsuite") == "netsuite"


def test_listed_accounts_each_have_their_variables_and_names_the_first_is_the_default():
    us, eu = configured_accounts(ACCOUNTS)
    assert (us.name, us.default, us.prefix) == ("us", True, None)
    assert (eu.name, eu.default, eu.prefix) == ("eu", False, "eu")
    assert eu.env_var("STRIPE_WEBHOOK_SECRET") == "STRIPE_WEBHOOK_SECRET_EU"
    assert us.qualified("stripe_to_netsuite_daily") == "stripe_to_netsuite_daily"
    assert eu.qualified("stripe_to_netsuite_daily") == "stripe_eu_to_netsuite_daily"
    assert eu.group("quality") == "quality_eu"


@pytest.mark.parametrize("value", ["US,eu", "us,us", "us,,eu", "e_u", "1us", "a" * 17])
def test_a_malformed_account_list_names_the_setting_and_the_form(value):
    (problem,) = settings.check_environment({"SYNC_STRIPE_ACCOUNTS": value})
    assert problem.startswith("SYNC_STRIPE_ACCOUNTS: expected ")
    assert "us,eu" in problem


def test_each_account_needs_its_own_key_and_the_plain_one_is_refused():
    problems = settings.check_environment(
        {"SYNC_STRIPE_ACCOUNTS": "us,eu", "STRIPE_API_KEY": "sk_test_x", "STRIPE_API_KEY_US": "sk_test_us"},
        require=("stripe",),
    )
    assert any(p.startswith("STRIPE_API_KEY: not used when SYNC_STRIPE_ACCOUNTS is set") for p in problems)
    assert any(p.startswith("STRIPE_API_KEY_EU: expected a value for Stripe account eu") for p in problems)
    assert not any(p.startswith("STRIPE_API_KEY_US") for p in problems)


def test_a_malformed_account_key_is_named():
    problems = settings.check_environment({**ACCOUNTS, "STRIPE_API_KEY_EU": "pk_test_eu"})
    assert problems == ["STRIPE_API_KEY_EU: expected a Stripe key like sk_live_... or rk_live_..."]


def test_well_configured_accounts_have_no_problem():
    assert settings.check_environment(ACCOUNTS, require=("stripe",)) == []


def test_webhooks_with_several_accounts_need_each_accounts_own_signing_secret():
    webhooks = {**ACCOUNTS, "SYNC_EVENT_SOURCE": "webhooks", "STRIPE_WEBHOOK_SECRET_US": "whsec_us"}
    (problem,) = settings.check_environment(webhooks, require=("webhooks",))
    assert problem.startswith("STRIPE_WEBHOOK_SECRET_EU: expected a value for Stripe account eu")
    assert settings.check_environment({**webhooks, "STRIPE_WEBHOOK_SECRET_EU": "whsec_eu"}, require=("webhooks",)) == []


def _mapping(extra: str = "") -> FieldMapping:
    text = (ROOT / "field_mapping.yaml").read_text() + extra
    mapping, problems = parse_field_mapping(text.encode(), "field_mapping.yaml")
    assert mapping is not None, problems
    return mapping


def test_every_other_account_needs_its_subsidiary_in_the_field_mapping():
    (problem,) = mapping_problems(_mapping(), ACCOUNTS)
    assert "stripe_accounts: no entry for Stripe account eu" in problem
    assert 'add `eu: {subsidiary: "<NetSuite subsidiary id>"}`' in problem
    assert mapping_problems(_mapping('\nstripe_accounts:\n  eu: {subsidiary: "2"}\n'), ACCOUNTS) == []


def test_the_default_account_books_to_the_top_level_subsidiary():
    (problem,) = mapping_problems(
        _mapping('\nstripe_accounts:\n  us: {subsidiary: "1"}\n  eu: {subsidiary: "2"}\n'), ACCOUNTS
    )
    assert "stripe_accounts.us: the first account" in problem


def test_an_unknown_subsidiary_for_an_account_is_refused_with_the_fix():
    text = (ROOT / "field_mapping.yaml").read_text() + '\nstripe_accounts:\n  eu: {subsidiary: "99"}\n'
    mapping, problems = parse_field_mapping(text.encode(), "field_mapping.yaml")
    assert mapping is None
    assert any("stripe_accounts.eu.subsidiary: subsidiary 99 is not listed" in p for p in problems)


def test_an_account_books_its_currencies_to_its_subsidiary_and_drops_those_it_does_not_allow():
    base = _mapping('\nstripe_accounts:\n  eu: {subsidiary: "2"}\n')
    eu = base.for_account("eu")
    assert {c.code: c.subsidiary for c in eu.currencies.values()} == {"USD": "2", "EUR": "2"}
    assert base.currency("USD").subsidiary == "1"  # the default account's is unchanged
    assert eu.currency("JPY") is None  # Europe GmbH does not allow JPY: held back as unmapped for eu


# -- the external-id rule ----------------------------------------------------------------------------


def test_the_default_account_keeps_todays_external_ids():
    assert netsuite_external_id("in_123") == "stripe-in_123"
    assert void_credit_memo_external_id("in_123") == "stripe-in_123-void"
    with for_account(None):
        assert netsuite_external_id("prod_pro") == "stripe-prod_pro"


def test_another_account_gets_its_segment_given_or_from_the_scope():
    assert netsuite_external_id("in_123", account="eu") == "stripe-eu-in_123"
    with for_account("eu"):
        assert refund_credit_memo_external_id("re_1") == "stripe-eu-re_1-cm"
        assert reversal_external_id(void_credit_memo_external_id("in_1")) == "stripe-eu-in_1-void-reversal"
    assert netsuite_external_id("in_123") == "stripe-in_123"  # the scope ends with the block


def test_the_account_of_an_external_id_is_read_back():
    assert account_of_external_id("stripe-eu-in_1-void") == "eu"
    assert account_of_external_id("stripe-in_1-void") is None
    assert account_of_external_id("stripe-po_1-2") is None
    assert account_of_external_id("0061x000001") is None


stripe_ids = st.from_regex(r"[a-z]{2,4}_[A-Za-z0-9]{1,12}", fullmatch=True)
suffixes = st.none() | st.sampled_from(["void", "cm", "oob", "sale", "reinstated", "returned", "2"])
accounts = st.none() | st.from_regex(r"[a-z][a-z0-9]{0,15}", fullmatch=True)


@given(
    st.tuples(stripe_ids, suffixes, accounts),
    st.tuples(stripe_ids, suffixes, accounts),
)
def test_ids_of_two_accounts_never_collide_and_name_their_account(a, b):
    id_a, id_b = (netsuite_external_id(s, x, account=acc) for s, x, acc in (a, b))
    if id_a == id_b:
        assert (a[0], a[1], a[2] or None) == (b[0], b[1], b[2] or None)
    assert account_of_external_id(id_a) == (a[2] or None)


def test_an_account_name_that_could_pass_for_a_stripe_id_is_refused():
    with pytest.raises(ValueError, match="lower-case letters and digits"), for_account("e_u"):
        pass


def test_stripe_account_is_hashable_and_plain():
    assert StripeAccount("eu", False) == StripeAccount("eu", default=False)


# -- the command line's --account ----------------------------------------------------------------------------


def test_account_selects_a_configured_account_the_default_without_it():
    assert selected_account(None, ACCOUNTS).name == "us"
    assert selected_account("eu", ACCOUNTS) == StripeAccount("eu", default=False)
    assert selected_account(None, {}) == StripeAccount("", default=True)


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (ACCOUNTS, "--account fr: no Stripe account of that name; SYNC_STRIPE_ACCOUNTS lists us, eu"),
        ({}, "--account fr: this deployment has one Stripe account (SYNC_STRIPE_ACCOUNTS is not set)"),
        ({"SYNC_STRIPE_ACCOUNTS": "us,EU"}, "SYNC_STRIPE_ACCOUNTS: expected account names of lower-case letters"),
    ],
)
def test_an_account_that_is_not_configured_is_a_clear_error(environ, expected):
    with pytest.raises(settings.ConfigError, match=re.escape(expected)):
        selected_account("fr", environ)


def test_plan_takes_account_only_with_a_partition(capsys):
    assert main(["plan", "--account", "eu"]) == 2
    assert "--account: with --partition only" in capsys.readouterr().err
