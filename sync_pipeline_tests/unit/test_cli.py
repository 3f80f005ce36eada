"""The command line: every `sync-pipeline <command>` the docs name exists, and `dev` says where it runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from sync_pipeline import cli, settings

ROOT = Path(__file__).resolve().parents[2]
# `sync-pipeline demo`, `sync-pipeline sandbox up`: a command and, for command groups, its subcommand.
NAMED_COMMAND = re.compile(r"sync-pipeline[ \t]+([a-z][a-z-]*)(?:[ \t]+([a-z][a-z-]*))?")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next((action.choices for action in parser._actions if isinstance(action, argparse._SubParsersAction)), {})


def _texts_naming_commands() -> dict[str, str]:
    """README.md, every module of the package (docstrings, comments, messages), and the description of every
    definition of the code location (built from pieces of text the sources alone do not show whole)."""
    from sync_pipeline.definitions import defs

    texts = {"README.md": (ROOT / "README.md").read_text()}
    texts.update({str(path.relative_to(ROOT)): path.read_text() for path in (ROOT / "sync_pipeline").rglob("*.py")})
    definitions = defs()
    specs = [*definitions.resolve_all_asset_specs(), *(c for a in definitions.assets for c in a.check_specs)]
    texts.update({f"description of {spec.key.to_user_string()}": spec.description or "" for spec in specs})
    named = [*definitions.resolve_all_job_defs(), *definitions.sensors, *definitions.schedules]
    texts.update({f"description of {d.name}": d.description or "" for d in named})
    return texts


def test_every_command_the_docs_name_exists():
    commands = _subcommands(cli.build_parser())
    named, missing = set(), []
    for where, text in _texts_naming_commands().items():
        for command, word in NAMED_COMMAND.findall(text):
            subcommands = _subcommands(commands[command]) if command in commands else {}
            named.add(command)
            if command not in commands or (subcommands and word and word not in subcommands):
                missing.append(f"{where}: sync-pipeline {command} {word}".strip())
    assert missing == []
    assert {"check-config", "dev", "demo", "sandbox", "webhooks"} <= named  # the scan does find the real ones


@pytest.fixture
def dev(monkeypatch, tmp_path, capsys):
    """Run `sync-pipeline dev ARGS` with only `env` set; returns (what it printed, the environment of `dagster dev`)."""

    def _dev(*args: str, **env: str) -> tuple[list[str], dict[str, str]]:
        for setting in settings.SETTINGS:
            monkeypatch.delenv(setting.name, raising=False)
        monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        launched = []
        monkeypatch.setattr(cli, "run_in_own_process_group", lambda command, env: launched.append(env) or 0)
        assert cli.main(["dev", "--port", "3999", *args]) == 0
        (dagster_env,) = launched
        return capsys.readouterr().out.splitlines(), dagster_env

    return _dev


REAL = {
    "STRIPE_API_KEY": "sk_test_51secretvalue",
    "NETSUITE_ACCOUNT_ID": "123456",
    "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com",
}


def test_with_a_stripe_key_dev_runs_against_the_real_systems_and_names_them(dev, tmp_path):
    printed, env = dev(**REAL)
    assert printed == [
        "Against REAL systems, as the environment configures them: Stripe https://api.stripe.com (test key), "
        "NetSuite account 123456, Salesforce https://acme.my.salesforce.com.",
        f"Dagster UI on http://127.0.0.1:3999 (DAGSTER_HOME={tmp_path}); Ctrl-C stops it.",
    ]
    assert env["STRIPE_API_KEY"] == REAL["STRIPE_API_KEY"]
    assert "secretvalue" not in "\n".join(printed)


def test_no_sandbox_without_a_stripe_key_says_what_is_missing(dev):
    printed, env = dev("--no-sandbox", NETSUITE_ACCOUNT_ID="123456_SB1", NETSUITE_BASE_URL="https://proxy.example")
    assert printed[0] == (
        "Against REAL systems, as the environment configures them: Stripe not configured "
        "(STRIPE_API_KEY is not set), NetSuite account 123456_SB1 at https://proxy.example, "
        "Salesforce not configured."
    )
    assert "STRIPE_API_KEY" not in env


@pytest.mark.parametrize(
    ("args", "env", "why"),
    [
        pytest.param((), {}, "STRIPE_API_KEY is not set", id="no-stripe-key"),
        pytest.param(("--sandbox",), REAL, "--sandbox", id="asked-for"),
    ],
)
def test_the_sandbox_when_keyless_or_asked_for_and_it_says_so(dev, tmp_path, args, env, why):
    printed, dagster_env = dev(*args, "--days", "1", "--invoices", "2", **env)
    assert printed[0] == (
        f"Against the SANDBOX ({why}): local stand-ins of Stripe, NetSuite and Salesforce, state in "
        f"{tmp_path / 'sandbox'}; no real system is called."
    )
    assert (
        printed[-1] == f"Dagster UI on http://127.0.0.1:3999 (DAGSTER_HOME={tmp_path}); Ctrl-C stops it and saves "
        "the sandbox."
    )
    assert dagster_env["STRIPE_API_BASE"].startswith("http://127.0.0.1:")
    assert dagster_env["STRIPE_API_KEY"] != REAL["STRIPE_API_KEY"]
    assert dagster_env["SALESFORCE_INSTANCE_URL"] != REAL["SALESFORCE_INSTANCE_URL"]


def test_sandbox_and_no_sandbox_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["dev", "--sandbox", "--no-sandbox"])
    assert "not allowed with argument" in capsys.readouterr().err
