"""Configuration comes from environment variables; problems are one line naming the variable."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sync_pipeline import settings

GOOD = {
    "STRIPE_API_KEY": "sk_test_abc123",
    "NETSUITE_ACCOUNT_ID": "123456_SB1",
    "NETSUITE_CONSUMER_KEY": "ck",
    "NETSUITE_CONSUMER_SECRET": "cs-secret-value",
    "NETSUITE_TOKEN_ID": "tk",
    "NETSUITE_TOKEN_SECRET": "ts-secret-value",
}


def test_a_complete_environment_has_no_problems():
    assert settings.check_environment(GOOD, require=("stripe", "netsuite")) == []


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("NETSUITE_CONCURRENCY", "abc", "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000"),
        # ASCII digits only (Unicode ones such as ² are in test_config_errors.py, through the CLI).
        ("NETSUITE_CONCURRENCY", "1_0", "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000"),
        ("SYNC_START_DATE", "01/11/2026", "SYNC_START_DATE: expected a date as YYYY-MM-DD"),
        ("SYNC_START_DATE", "２０２６-01-01", "SYNC_START_DATE: expected a date as YYYY-MM-DD"),
        ("SYNC_DATABASE_URL", "postgresql://u@h/db", "SYNC_DATABASE_URL: expected the scheme postgresql+psycopg2://"),
        ("SYNC_DATABASE_URL", "postgresql+psycopg2://u:pw@h:port/db", "SYNC_DATABASE_URL: expected a URL whose port"),
        ("STRIPE_API_BASE", "localhost:12111", "STRIPE_API_BASE: expected a URL starting with http:// or https://"),
        ("SALESFORCE_INSTANCE_URL", "http://x.my.salesforce.com", "SALESFORCE_INSTANCE_URL: expected a URL starting"),
    ],
)
def test_malformed_values_are_named_with_what_is_expected(name, value, expected):
    problems = settings.check_environment({**GOOD, name: value})
    assert len(problems) == 1
    assert problems[0].startswith(expected)
    assert "\n" not in problems[0]


def test_missing_values_are_reported_only_for_required_parts():
    env = {k: v for k, v in GOOD.items() if k != "NETSUITE_TOKEN_SECRET"}
    assert settings.check_environment(env) == []
    problems = settings.check_environment(env, require=("netsuite",))
    assert problems == ["NETSUITE_TOKEN_SECRET: expected a value (access token secret (TBA)); it is not set"]


def test_salesforce_needs_a_session_or_a_login():
    env = {**GOOD, "SALESFORCE_INSTANCE_URL": "https://acme.my.salesforce.com"}
    assert any(p.startswith("SALESFORCE_SESSION_ID") for p in settings.check_environment(env, require=("salesforce",)))
    env.update(SALESFORCE_USERNAME="u", SALESFORCE_PASSWORD="p", SALESFORCE_SECURITY_TOKEN="t")
    assert settings.check_environment(env, require=("salesforce",)) == []


def test_secret_values_never_appear_in_problems():
    env = {**GOOD, "STRIPE_API_KEY": "not-a-key-but-secret"}
    problems = settings.check_environment(env)
    assert problems and all("not-a-key-but-secret" not in p for p in problems)


def test_cli_check_config_fails_with_one_line_and_exit_code_2():
    env = {"PATH": "/usr/bin:/bin", "NETSUITE_CONCURRENCY": "zero"}
    result = subprocess.run(
        [sys.executable, "-m", "sync_pipeline.cli", "check-config"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000"


@pytest.mark.parametrize(
    ("url", "written", "shown"),
    [
        (
            "postgresql+psycopg2://sync:p%40ss:w/rd@db:5432/sync",
            "p%40ss:w/rd",
            "postgresql+psycopg2://sync:***@db:5432/sync",
        ),
        ("postgresql+psycopg2://sync:p@ss:w/rd@db/sync", "p@ss:w/rd", "postgresql+psycopg2://sync:***@db/sync"),
        (
            "postgresql+psycopg2://sync@db/sync?password=p%40ss:w/rd",
            "p%40ss:w/rd",
            "postgresql+psycopg2://sync@db/sync?password=***",
        ),
    ],
)
def test_a_database_that_cannot_be_opened_is_one_line_without_its_password(url, written, shown):
    # The driver may quote the password decoded or as written in the URL, over several lines.
    reason = f"FATAL: password p@ss:w/rd rejected\n\tcheck {written}"
    assert settings.database_open_problem(url, reason) == (
        f"SYNC_DATABASE_URL: cannot open {shown} (FATAL: password *** rejected; check ***)"
    )


def test_the_default_field_mapping_does_not_depend_on_the_working_directory(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert settings.field_mapping_path({}) == Path(__file__).resolve().parents[2] / "field_mapping.yaml"
    assert settings.field_mapping_path({"SYNC_FIELD_MAPPING": "mine.yaml"}) == tmp_path / "mine.yaml"


def test_ledger_defaults_to_a_sqlite_file_in_dagster_home(monkeypatch, tmp_path):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    monkeypatch.delenv("SYNC_DATABASE_URL", raising=False)
    assert settings.database_url() == f"sqlite:///{tmp_path.resolve()}/sync_ledger.sqlite"
