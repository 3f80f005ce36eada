"""`sync-pipeline`: the command line of the project (check-config, plan, dev, demo, sandbox, webhooks)."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sync_pipeline import settings
from sync_pipeline.backfill_cli import add_backfill_parser
from sync_pipeline.exceptions_cli import add_exceptions_parser
from sync_pipeline.plan_cli import add_partition_plan_arguments, run_partition_plan
from sync_pipeline.reconcile_cli import add_reconcile_parser
from sync_pipeline.sandbox.cli import add_sandbox_commands
from sync_pipeline.webhooks import add_webhook_commands


def _fail(message: str, code: int = 2) -> int:
    print(f"sync-pipeline: {message}", file=sys.stderr)
    return code


def cmd_check_config(args: argparse.Namespace) -> int:
    require = tuple(p for p in (args.require or "").split(",") if p)
    unknown = [p for p in require if p not in settings.REQUIRED_FOR]
    if unknown:
        return _fail(f"--require takes {', '.join(settings.REQUIRED_FOR)}; got {', '.join(unknown)}")
    problems = settings.check_configuration(require=require)
    url = os.environ.get("SYNC_DATABASE_URL")
    if url and settings.BY_NAME["SYNC_DATABASE_URL"].check(url) is None:
        from sync_pipeline.resources.ledger import check_database

        problems += check_database(url)
    for problem in problems:
        print(problem, file=sys.stderr)
    # Which NetSuite authentication runs will use, on stdout: information, not a problem.
    method = settings.netsuite_auth_method()
    if method is not None or "netsuite" in require:
        print(settings.netsuite_auth_description())
    if method == "tba":
        print(settings.TBA_END_WARNING)
    if not problems:
        print(
            "configuration OK"
            + (f" for {', '.join(require)}" if require else "")
            + f" (field mapping {settings.field_mapping_path()})"
        )
    return 2 if problems else 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Salesforce → Stripe dry run: the deals the next billing run would bill, with amounts; nothing is written.
    With `--partition D`: the Stripe → NetSuite dry run of day D, per record."""
    if getattr(args, "partition", None):
        return run_partition_plan(args)
    if getattr(args, "account", None):
        return _fail("--account: with --partition only; the Salesforce → Stripe plan bills in the default account")
    import dataclasses
    import datetime as dt

    from sync_pipeline.mapping.field_mapping import billing_start_problem, read_field_mapping
    from sync_pipeline.mapping.money import to_decimal
    from sync_pipeline.resources.ledger import Ledger
    from sync_pipeline.resources.salesforce import SalesforceResource
    from sync_pipeline.resources.stripe import StripeResource
    from sync_pipeline.writers.stripe_billing import dry_run, read_opportunities

    settings.require_environment(("stripe", "salesforce"))
    mapping, problems = read_field_mapping(settings.field_mapping_path())
    if mapping is None:
        return _fail(settings.first_problem(problems))
    config = mapping.salesforce
    if args.start:
        try:
            config = dataclasses.replace(config, bill_closed_won_from=dt.date.fromisoformat(args.start))
        except ValueError:
            return _fail(f"--from: {args.start!r} is not a date; write it as YYYY-MM-DD")
    elif billing_start_problem(mapping):
        return _fail(f"{billing_start_problem(mapping)}; or preview a date with `sync-pipeline plan --from YYYY-MM-DD`")
    env = os.environ
    salesforce = SalesforceResource(
        instance_url=env["SALESFORCE_INSTANCE_URL"],
        session_id=env.get("SALESFORCE_SESSION_ID"),
        username=env.get("SALESFORCE_USERNAME"),
        password=env.get("SALESFORCE_PASSWORD"),
        security_token=env.get("SALESFORCE_SECURITY_TOKEN"),
        ca_bundle=env.get("SALESFORCE_CA_BUNDLE"),
    )
    stripe = StripeResource(api_key=env["STRIPE_API_KEY"], api_base=settings.get("STRIPE_API_BASE"))
    opportunities = read_opportunities(salesforce, " WHERE IsWon = true")
    result = dry_run(opportunities, stripe=stripe, ledger=Ledger(settings.database_url()), config=config)
    start = config.bill_closed_won_from
    print(f"Salesforce → Stripe billing from CloseDate {start}: nothing is created by this command.")
    print(f"Would bill {len(result.to_bill)} deal(s):")
    for plan in result.to_bill:
        products = ", ".join(f"{line.quantity} × {line.product_name or line.product_id}" for line in plan.lines)
        print(
            f"  {plan.opportunity_id}  {plan.account_name}  {plan.opportunity_name}: {plan.currency} "
            f"{plan.amount_text} as {'a subscription' if plan.mode == 'subscription' else 'a one-off invoice'} "
            f"({products})"
        )
    totals = ", ".join(f"{code} {to_decimal(minor, code)}" for code, minor in result.totals().items())
    print(f"Total per currency: {totals or 'none'}")
    held = sorted({issue.external_id for issue in result.held_back})
    print(f"Held back {len(held)} deal(s) (salesforce_sync_exceptions once a run has seen them):")
    for issue in result.held_back:
        print(f"  {issue.message}. Fix: {issue.fix}")
    print(f"Not billed: {len(result.before_start)} closed before {start}, {len(result.billed_already)} billed already.")
    return 0


def run_in_own_process_group(command: Sequence[str], env: dict[str, str] | None = None) -> int:
    """Run a long-lived command (dagster dev) and end its whole process group on Ctrl-C or SIGTERM.

    `dagster dev` started as a shell background job ignores SIGINT/SIGTERM and leaves its webserver,
    daemon and code server running; owning the group is the only reliable way to stop all of them.
    """
    proc = subprocess.Popen(list(command), env=env, start_new_session=True)

    def _forward(_signum, _frame):
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            try:
                return proc.wait()
            except KeyboardInterrupt:
                _forward(signal.SIGINT, None)
    finally:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _dagster_executable() -> str:
    candidate = Path(sys.executable).with_name("dagster")
    return str(candidate) if candidate.exists() else (shutil.which("dagster") or "dagster")


def dev_uses_sandbox(args: argparse.Namespace) -> bool:
    """The stand-ins only when asked (--sandbox) or when no Stripe key is set (and --no-sandbox is not given)."""
    return args.sandbox or (not args.no_sandbox and not settings.is_set("STRIPE_API_KEY"))


def real_systems() -> str:
    """Where runs go, from the environment: addresses and account ids, never a secret."""
    key = settings.get("STRIPE_API_KEY")
    if key:
        mode = "live" if "_live_" in key else "test"
        stripe = f"Stripe {settings.get('STRIPE_API_BASE') or 'https://api.stripe.com'} ({mode} key)"
    else:
        stripe = "Stripe not configured (STRIPE_API_KEY is not set)"
    account = settings.get("NETSUITE_ACCOUNT_ID")
    netsuite_base = settings.get("NETSUITE_BASE_URL")
    netsuite = (
        f"NetSuite account {account}" + (f" at {netsuite_base}" if netsuite_base else "")
        if account
        else "NetSuite not configured"
    )
    instance = settings.get("SALESFORCE_INSTANCE_URL")
    salesforce = f"Salesforce {instance}" if instance else "Salesforce not configured"
    return f"{stripe}, {netsuite}, {salesforce}"


def cmd_dev(args: argparse.Namespace) -> int:
    problems = settings.check_configuration()
    if problems:
        return _fail(problems[0])
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home().resolve()))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    command = [
        _dagster_executable(),
        "dev",
        "-w",
        str(settings.PROJECT_ROOT / "workspace.yaml"),
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    ui = f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={os.environ['DAGSTER_HOME']})"
    if not dev_uses_sandbox(args):
        print(f"Against REAL systems, as the environment configures them: {real_systems()}.")
        print(f"{ui}; Ctrl-C stops it.")
        return run_in_own_process_group(command, dict(os.environ))
    from sync_pipeline.demo import sandbox_environment, sandbox_state_dir

    why = "--sandbox" if args.sandbox else "STRIPE_API_KEY is not set"
    print(
        f"Against the SANDBOX ({why}): local stand-ins of Stripe, NetSuite and Salesforce, state in "
        f"{sandbox_state_dir()}; no real system is called."
    )
    with sandbox_environment(args.days, args.invoices, args.seed):
        print(f"{ui}; Ctrl-C stops it and saves the sandbox.")
        return run_in_own_process_group(command, dict(os.environ))


def cmd_demo(args: argparse.Namespace) -> int:
    problems = settings.check_configuration()
    if problems:
        return _fail(problems[0])
    os.environ.setdefault("DAGSTER_HOME", str(settings.dagster_home().resolve()))
    Path(os.environ["DAGSTER_HOME"]).mkdir(parents=True, exist_ok=True)
    from sync_pipeline.demo import run_demo

    return run_demo(args.days, args.invoices, args.seed)


def _add_scenario_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--days", type=int, default=30, help="days of sandbox activity to seed (first run only)")
    parser.add_argument("--invoices", type=int, default=300, help="approximate invoices to seed (first run only)")
    parser.add_argument("--seed", type=int, default=42, help="scenario seed (first run only)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sync-pipeline", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser(
        "check-config", help="check the environment variables, the field mapping and the database; one line per problem"
    )
    check.add_argument(
        "--require", help="comma-separated parts that must be fully configured: " + ",".join(settings.REQUIRED_FOR)
    )
    check.set_defaults(func=cmd_check_config)

    plan = sub.add_parser(
        "plan",
        help="Salesforce → Stripe dry run: list the Closed-Won deals the next billing run would bill, with "
        "amounts per currency, and those held back; creates nothing",
    )
    plan.add_argument(
        "--from",
        dest="start",
        metavar="YYYY-MM-DD",
        help="preview this start date instead of salesforce.bill_closed_won_from",
    )
    add_partition_plan_arguments(plan)
    plan.set_defaults(func=cmd_plan)

    dev = sub.add_parser(
        "dev",
        help="the Dagster UI and daemon on a persistent DAGSTER_HOME, against the real "
        "systems configured, or the sandbox when asked or when STRIPE_API_KEY is not set",
    )
    dev.add_argument("--host", default="127.0.0.1")
    dev.add_argument("--port", type=int, default=3000)
    target = dev.add_mutually_exclusive_group()
    target.add_argument(
        "--sandbox", action="store_true", help="run against the sandbox stand-ins even when STRIPE_API_KEY is set"
    )
    target.add_argument(
        "--no-sandbox",
        action="store_true",
        help="run against the systems the environment configures even when STRIPE_API_KEY is not set",
    )
    _add_scenario_arguments(dev)
    dev.set_defaults(func=cmd_dev)

    demo = sub.add_parser("demo", help="seed the sandbox once, sync every day into NetSuite, print what happened")
    _add_scenario_arguments(demo)
    demo.set_defaults(func=cmd_demo)

    add_sandbox_commands(sub)
    add_webhook_commands(sub)
    add_exceptions_parser(sub)
    add_backfill_parser(sub)
    add_reconcile_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except settings.ConfigError as exc:
        return _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
