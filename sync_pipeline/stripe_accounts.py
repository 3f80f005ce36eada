"""Several Stripe accounts (one per legal entity) synced into the one NetSuite account.

`SYNC_STRIPE_ACCOUNTS=us,eu` names the accounts; each has its own `STRIPE_API_KEY_<NAME>` and
`STRIPE_WEBHOOK_SECRET_<NAME>`, and its NetSuite subsidiary under `stripe_accounts:` in field_mapping.yaml.
Unset, the deployment has one account, the default, configured by `STRIPE_API_KEY` as before.

Why one asset set per account, not a multi-partitions definition (account x day): each account gets the same
asset definitions under its own key prefix (`eu/stripe_invoices`, `eu/netsuite_invoices`, ...), its own groups
(`stripe_eu`, `netsuite_eu`, `quality_eu`), job, schedule and sensor. The daily partitions stay one time
window, so the daily checks (`partitions.daily_check`) stay partitioned by day, a single-run backfill over a
range of days keeps working on a contiguous time window, a controller sees each entity's lineage and checks
on its own in the UI, and each account's sensor reads its own events with its own key. The code is the same
definitions, loaded once per account. The default account (the only one, or the first listed) keeps today's
asset keys, external ids, job, schedule and sensor names, so a deployment that adds a second account keeps
its history, ledger and NetSuite records as they are.

Each asset body runs for the account its key names (`scoped`): its Stripe client uses that account's key, its
field mapping that account's subsidiary, its ledger view that account's records, and every external id it
makes carries that account's prefix (`mapping/external_ids.py`). One `netsuite_api` pool still caps the
NetSuite steps of every account, as the one NetSuite account's governance limit is shared.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import dagster as dg

from sync_pipeline.mapping.external_ids import ACCOUNT_NAME_PATTERN, for_account

ACCOUNTS_SETTING = "SYNC_STRIPE_ACCOUNTS"
API_KEY = "STRIPE_API_KEY"
WEBHOOK_SECRET = "STRIPE_WEBHOOK_SECRET"
# Groups of the Stripe → NetSuite assets; another account's are `<group>_<account>`.
DAILY_GROUPS = ("stripe", "netsuite", "quality")


@dataclass(frozen=True)
class StripeAccount:
    """One Stripe account. `name` is "" for the single account of a deployment without SYNC_STRIPE_ACCOUNTS."""

    name: str
    default: bool

    @property
    def prefix(self) -> str | None:
        """Its asset key prefix and external-id segment: None for the default account."""
        return None if self.default else self.name

    def env_var(self, base: str) -> str:
        """`STRIPE_API_KEY` -> `STRIPE_API_KEY_EU` (the plain name when no accounts are listed)."""
        return f"{base}_{self.name.upper()}" if self.name else base

    def qualified(self, name: str, system: str = "stripe") -> str:
        """`stripe_to_netsuite_daily` -> `stripe_eu_to_netsuite_daily` (unchanged for the default account)."""
        return name if self.default else name.replace(system, f"{system}_{self.name}", 1)

    def group(self, group: str) -> str:
        return group if self.default else f"{group}_{self.name}"


DEFAULT_ACCOUNT = StripeAccount("", default=True)


def account_names_problem(value: str) -> str | None:
    """What is wrong with a SYNC_STRIPE_ACCOUNTS value, or None."""
    names = [n.strip() for n in value.split(",")]
    bad = [n for n in names if not ACCOUNT_NAME_PATTERN.fullmatch(n)]
    if bad:
        return (
            f"account names of lower-case letters and digits, starting with a letter, at most 16, comma-separated "
            f"(e.g. us,eu); not {', '.join(repr(n) for n in bad)}"
        )
    if len(set(names)) != len(names):
        return "each account name once (e.g. us,eu)"
    return None


def configured_accounts(environ: Mapping[str, str] | None = None) -> list[StripeAccount]:
    """The Stripe accounts of the deployment, default first. Assumes a value `account_names_problem` accepts."""
    env = os.environ if environ is None else environ
    value = env.get(ACCOUNTS_SETTING) or ""
    if not value.strip():
        return [DEFAULT_ACCOUNT]
    names = [n.strip() for n in value.split(",")]
    return [StripeAccount(name, default=i == 0) for i, name in enumerate(names)]


def environment_problems(environ: Mapping[str, str], require: tuple[str, ...], check_key, check_secret) -> list[str]:
    """Problems with the per-account variables, one line each: malformed always, missing when `require` asks."""
    value = environ.get(ACCOUNTS_SETTING) or ""
    if not value.strip() or account_names_problem(value):
        return []
    problems = []
    for plain in (API_KEY, WEBHOOK_SECRET):
        if environ.get(plain):
            problems.append(
                f"{plain}: not used when {ACCOUNTS_SETTING} is set: give each account its own "
                f"({plain}_<ACCOUNT>, e.g. {plain}_{value.split(',')[0].strip().upper()}) and unset {plain}"
            )
    for account in configured_accounts(environ):
        for base, check, part in ((API_KEY, check_key, "stripe"), (WEBHOOK_SECRET, check_secret, "webhooks")):
            name = account.env_var(base)
            if environ.get(name):
                expected = check(environ[name])
                if expected:
                    problems.append(f"{name}: expected {expected}")
            elif part in require:
                problems.append(
                    f"{name}: expected a value for Stripe account {account.name} ({ACCOUNTS_SETTING} lists it); "
                    "it is not set"
                )
    return problems


def mapping_problems(mapping, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every account SYNC_STRIPE_ACCOUNTS lists after the first needs its subsidiary under `stripe_accounts:` in the
    field mapping; the first, the default account, books to the top-level `subsidiary:` as a single account does."""
    env = os.environ if environ is None else environ
    if account_names_problem(env.get(ACCOUNTS_SETTING) or "x"):
        return []
    problems = []
    for account in configured_accounts(env):
        if account.default and account.name in mapping.stripe_accounts:
            problems.append(
                f"{mapping.source}: stripe_accounts.{account.name}: the first account of {ACCOUNTS_SETTING}, the "
                "default one, books to the top-level `subsidiary:`. Fix: remove this entry and set `subsidiary:`"
            )
        elif not account.default and account.name not in mapping.stripe_accounts:
            problems.append(
                f"{mapping.source}: stripe_accounts: no entry for Stripe account {account.name} ({ACCOUNTS_SETTING} "
                f'lists it). Fix: add `{account.name}: {{subsidiary: "<NetSuite subsidiary id>"}}` under '
                "stripe_accounts"
            )
    return problems


def account_of(context: dg.AssetExecutionContext) -> str | None:
    """The non-default account an asset belongs to, from its key prefix (None: the default account)."""
    path = context.assets_def.key.path
    return path[0] if len(path) > 1 else None


def scoped(fn: Callable) -> Callable:
    """Run an asset body for the account its key names: the `stripe`, `field_mapping` and `ledger` resources it
    receives are that account's, and every external id it makes carries the account's prefix."""

    def for_the_account(context: dg.AssetExecutionContext, kwargs: dict) -> str | None:
        account = account_of(context)
        # The default account's assets see the ledger without the other accounts' rows too.
        if "ledger" in kwargs:
            kwargs["ledger"] = kwargs["ledger"].for_account(account)
        if account:
            for name in ("stripe", "field_mapping"):
                if name in kwargs:
                    kwargs[name] = kwargs[name].for_account(account)
        return account

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def run_yielding(context: dg.AssetExecutionContext, *args, **kwargs):
            with for_account(for_the_account(context, kwargs)):
                yield from fn(context, *args, **kwargs)

        return run_yielding

    @functools.wraps(fn)
    def run(context: dg.AssetExecutionContext, *args, **kwargs):
        with for_account(for_the_account(context, kwargs)):
            return fn(context, *args, **kwargs)

    return run


# -- the command line's `--account` ---------------------------------------------------------------------------------


def add_account_argument(parser, what: str, default: str = "the default one, listed first") -> None:
    """`--account NAME` on a command working on one Stripe account's data (`what`, e.g. "the day")."""
    parser.add_argument(
        "--account", metavar="NAME", help=f"{what} of this Stripe account of {ACCOUNTS_SETTING} (default: {default})"
    )


def selected_account(name: str | None, environ: Mapping[str, str] | None = None) -> StripeAccount:
    """The account `--account NAME` selects (None: the default one); a ConfigError naming the configured ones for a
    name that is not one of them."""
    from sync_pipeline import settings  # here: settings imports this module

    env = os.environ if environ is None else environ
    problem = account_names_problem((env.get(ACCOUNTS_SETTING) or "").strip() or "x")
    if problem:
        raise settings.ConfigError(f"{ACCOUNTS_SETTING}: expected {problem}")
    accounts = configured_accounts(env)
    found = next((a for a in accounts if name is None or a.name == name), None)
    if found:
        return found
    if accounts == [DEFAULT_ACCOUNT]:
        raise settings.ConfigError(
            f"--account {name}: this deployment has one Stripe account ({ACCOUNTS_SETTING} is not set): leave "
            f"--account out, or list the accounts in {ACCOUNTS_SETTING} (e.g. us,eu)"
        )
    raise settings.ConfigError(
        f"--account {name}: no Stripe account of that name; {ACCOUNTS_SETTING} lists "
        + ", ".join(a.name for a in accounts)
    )


def account_mapping(mapping, account: StripeAccount):
    """The field mapping as `account` books (its subsidiary); the default account's is the mapping itself."""
    from sync_pipeline import settings
    from sync_pipeline.mapping.field_mapping import FieldMappingError

    if account.default:
        return mapping
    try:
        return mapping.for_account(account.name)
    except FieldMappingError as exc:
        raise settings.ConfigError(exc.problems[0]) from None
