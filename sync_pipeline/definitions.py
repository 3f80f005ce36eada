"""The code location `sync_pipeline`: assets, checks, jobs, schedules, sensors and resources.

`defs` is built when Dagster loads the location, not when this module is imported: it checks the
settings and the field mapping first, so a bad value stops the load with one line naming it, and only
then reads what the location depends on (SYNC_START_DATE, SYNC_EVENT_SOURCE, which systems are set).
"""

import dagster as dg

from sync_pipeline import account_sets, settings
from sync_pipeline.assets import cash as cash_assets
from sync_pipeline.assets import deal_reconciliation as deal_reconciliation_assets
from sync_pipeline.assets import netsuite as netsuite_assets
from sync_pipeline.assets import quality as quality_assets
from sync_pipeline.assets import receivables as receivables_assets
from sync_pipeline.assets import reconciliation as reconciliation_assets
from sync_pipeline.assets import salesforce as salesforce_assets
from sync_pipeline.assets import stripe as stripe_assets
from sync_pipeline.io_managers import ParquetIOManager
from sync_pipeline.jobs import salesforce_to_stripe
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource
from sync_pipeline.resources.netsuite import NetSuiteResource
from sync_pipeline.resources.salesforce import SalesforceResource
from sync_pipeline.salesforce_to_stripe_sensor import build_salesforce_to_stripe_sensor
from sync_pipeline.schedules import build_salesforce_to_stripe_schedule
from sync_pipeline.stripe_accounts import DEFAULT_ACCOUNT, StripeAccount, configured_accounts


def _from_env(name: str, default: object = None) -> object:
    # An EnvVar when the setting is set, so a value that may be a secret is resolved at run time and never shown
    # in the UI; Dagster refuses an EnvVar whose variable is unset, so an unset one is its default.
    return dg.EnvVar(name) if settings.is_set(name) else default


def _salesforce_not_configured(_context: dg.InitResourceContext) -> None:
    raise dg.Failure(
        description="Salesforce is not configured: set SALESFORCE_INSTANCE_URL and SALESFORCE_SESSION_ID"
        " or SALESFORCE_USERNAME + SALESFORCE_PASSWORD (`sync-pipeline check-config`)"
    )


def build_salesforce_resource() -> SalesforceResource | dg.ResourceDefinition:
    # Without an instance URL the code location still loads; only runs that need Salesforce fail, saying why.
    if not settings.is_set("SALESFORCE_INSTANCE_URL"):
        return dg.ResourceDefinition(resource_fn=_salesforce_not_configured)
    return SalesforceResource(
        instance_url=dg.EnvVar("SALESFORCE_INSTANCE_URL"),
        session_id=_from_env("SALESFORCE_SESSION_ID"),
        username=_from_env("SALESFORCE_USERNAME"),
        password=_from_env("SALESFORCE_PASSWORD"),
        security_token=_from_env("SALESFORCE_SECURITY_TOKEN"),
        ca_bundle=_from_env("SALESFORCE_CA_BUNDLE"),
    )


def build_resources() -> dict[str, object]:
    """The resources of the code location, wired to the environment variables that are set."""
    return {
        "stripe": account_sets.stripe_resource(_from_env("STRIPE_API_BASE")),
        "netsuite": NetSuiteResource(
            account_id=dg.EnvVar("NETSUITE_ACCOUNT_ID"),
            # TBA or OAuth 2.0 M2M, whichever is set (settings.netsuite_auth_method: M2M wins when both are).
            consumer_key=_from_env("NETSUITE_CONSUMER_KEY"),
            consumer_secret=_from_env("NETSUITE_CONSUMER_SECRET"),
            token_id=_from_env("NETSUITE_TOKEN_ID"),
            token_secret=_from_env("NETSUITE_TOKEN_SECRET"),
            oauth2_client_id=_from_env("NETSUITE_CLIENT_ID"),
            oauth2_certificate_id=_from_env("NETSUITE_CERTIFICATE_ID"),
            oauth2_private_key=_from_env("NETSUITE_PRIVATE_KEY"),
            oauth2_private_key_file=_from_env("NETSUITE_PRIVATE_KEY_FILE"),
            base_url=_from_env("NETSUITE_BASE_URL"),
            concurrency=(
                dg.EnvVar.int("NETSUITE_CONCURRENCY")
                if settings.is_set("NETSUITE_CONCURRENCY")
                else int(settings.BY_NAME["NETSUITE_CONCURRENCY"].default)
            ),
        ),
        "ledger": LedgerResource(database_url=_from_env("SYNC_DATABASE_URL", settings.default_database_url())),
        "field_mapping": FieldMappingResource(path=str(settings.field_mapping_path())),
        "salesforce": build_salesforce_resource(),
        "io_manager": ParquetIOManager(base_dir=str(settings.dagster_home().resolve() / "snapshots")),
    }


def daily_assets(start_date: str, account: StripeAccount = DEFAULT_ACCOUNT) -> list[dg.AssetsDefinition]:
    """An account's daily partitioned assets (a backfill's selection), partitioned from `start_date`."""
    # Declared with the default first day (see partitions.py); the configured one is applied here, at load time.
    modules = [stripe_assets, netsuite_assets, cash_assets, quality_assets, receivables_assets, reconciliation_assets]
    return account_sets.account_assets(account, modules, start_date)


def __getattr__(name: str) -> list[dg.AssetsDefinition]:
    # ALL_ASSETS, the daily partitioned selection materialized as one set (tests, benchmarks), is built on
    # first use, with the configured first day, so that importing this module reads no setting.
    if name != "ALL_ASSETS":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return daily_assets(settings.start_date())


# Unpartitioned, so kept out of ALL_ASSETS (the daily partitioned selection materialized as one set).
SALESFORCE_ASSETS = dg.load_assets_from_modules([salesforce_assets, deal_reconciliation_assets])


@dg.definitions
def defs() -> dg.Definitions:
    # Malformed settings or an unusable field mapping stop the load with one line naming what to fix.
    # Missing credentials are reported when a run needs them (`sync-pipeline check-config` lists all).
    problems = settings.check_configuration()
    if problems:
        raise settings.ConfigError(settings.first_problem(problems))
    start_date = settings.start_date()
    salesforce_configured = settings.is_set("SALESFORCE_INSTANCE_URL")
    # One asset set, job, schedule and sensor per Stripe account (one, the default, unless SYNC_STRIPE_ACCOUNTS).
    accounts = configured_accounts()
    jobs = [account_sets.account_job(account) for account in accounts]
    automation = [
        account_sets.account_automation(account, job, start_date, settings.event_source())
        for account, job in zip(accounts, jobs, strict=True)
    ]
    return dg.Definitions(
        assets=[*(a for account in accounts for a in daily_assets(start_date, account)), *SALESFORCE_ASSETS],
        jobs=[*jobs, salesforce_to_stripe],
        schedules=[*(s for s, _ in automation), build_salesforce_to_stripe_schedule(salesforce_configured)],
        sensors=[*(s for _, s in automation), build_salesforce_to_stripe_sensor(salesforce_configured)],
        resources=build_resources(),
    )
