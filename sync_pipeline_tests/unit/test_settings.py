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


def _check_config(env: dict[str, str], *arguments: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "sync_pipeline.cli", "check-config", *arguments],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        cwd=cwd,
    )


def test_cli_check_config_fails_with_one_line_and_exit_code_2():
    result = _check_config({"NETSUITE_CONCURRENCY": "zero"})
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


# ---- NetSuite authentication: TBA or OAuth 2.0 M2M ------------------------------------------------------------
TBA = {k: v for k, v in GOOD.items() if k.startswith("NETSUITE_")}


@pytest.fixture(scope="module")
def private_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def m2m(tmp_path, private_pem) -> dict[str, str]:
    key_file = tmp_path / "netsuite.pem"
    key_file.write_text(private_pem)
    return {
        "NETSUITE_ACCOUNT_ID": "123456_SB1",
        "NETSUITE_CLIENT_ID": "client-id",
        "NETSUITE_CERTIFICATE_ID": "cert-abc",
        "NETSUITE_PRIVATE_KEY_FILE": str(key_file),
    }


def test_m2m_alone_is_a_complete_netsuite_configuration(m2m, private_pem):
    assert settings.check_environment(m2m, require=("netsuite",)) == []
    as_text = {
        **{k: v for k, v in m2m.items() if k != "NETSUITE_PRIVATE_KEY_FILE"},
        "NETSUITE_PRIVATE_KEY": private_pem,
    }
    assert settings.check_environment(as_text, require=("netsuite",)) == []
    assert settings.netsuite_auth_method(m2m) == "m2m"
    assert settings.netsuite_auth_description(m2m) == "NetSuite auth: OAuth 2.0 M2M (certificate cert-abc)"


def test_m2m_wins_over_tba_and_says_the_tba_variables_are_ignored(m2m):
    both = {**TBA, **m2m}
    assert settings.check_environment(both, require=("netsuite",)) == []
    assert settings.netsuite_auth_description(both) == (
        "NetSuite auth: OAuth 2.0 M2M (certificate cert-abc) (the TBA variables set are ignored)"
    )
    assert settings.netsuite_auth_description(TBA) == "NetSuite auth: token-based authentication (TBA)"


@pytest.mark.parametrize(
    ("missing", "line"),
    [
        ("NETSUITE_CLIENT_ID", "NETSUITE_CLIENT_ID: expected a value (integration record's client id"),
        ("NETSUITE_CERTIFICATE_ID", "NETSUITE_CERTIFICATE_ID: expected a value (certificate id of the M2M mapping"),
        ("NETSUITE_PRIVATE_KEY_FILE", "NETSUITE_PRIVATE_KEY_FILE: expected the path of the private key of certificate"),
    ],
)
def test_a_half_configured_m2m_names_what_is_missing_even_when_netsuite_is_not_required(m2m, missing, line):
    env = {**TBA, **{k: v for k, v in m2m.items() if k != missing}}  # complete TBA does not hide the mistake
    problems = settings.check_environment(env)
    assert len(problems) == 1 and problems[0].startswith(line)
    assert problems[0].endswith("OAuth 2.0 M2M is half configured")


def test_a_key_as_text_and_as_file_is_refused_rather_than_ranked(m2m, private_pem):
    problems = settings.check_environment({**m2m, "NETSUITE_PRIVATE_KEY": private_pem})
    assert problems == [
        "NETSUITE_PRIVATE_KEY: expected either NETSUITE_PRIVATE_KEY or NETSUITE_PRIVATE_KEY_FILE, not both; unset one"
    ]


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        (
            "NETSUITE_PRIVATE_KEY",
            "MIIEvQIBADANBgkqhkiG9w0BAQEFAASC-secret",
            "NETSUITE_PRIVATE_KEY: expected an unencrypted PEM",
        ),
        ("NETSUITE_PRIVATE_KEY_FILE", "/nowhere/key.pem", "NETSUITE_PRIVATE_KEY_FILE: expected the path of a readable"),
    ],
)
def test_a_key_that_cannot_be_read_is_named_without_showing_it(m2m, name, value, line):
    env = {**{k: v for k, v in m2m.items() if k != "NETSUITE_PRIVATE_KEY_FILE"}, name: value}
    problems = settings.check_environment(env)
    assert len(problems) == 1 and problems[0].startswith(line)
    assert "secret" not in problems[0]


def test_an_encrypted_key_file_is_refused(m2m, tmp_path, private_pem):
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    encrypted = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    (tmp_path / "encrypted.pem").write_bytes(encrypted)
    problems = settings.check_environment({**m2m, "NETSUITE_PRIVATE_KEY_FILE": str(tmp_path / "encrypted.pem")})
    assert problems == [
        "NETSUITE_PRIVATE_KEY_FILE: expected a file holding an unencrypted PEM private key (RSA or EC), "
        "-----BEGIN PRIVATE KEY----- and its lines"
    ]


def test_without_any_netsuite_credentials_the_tba_variables_are_asked_for():
    problems = settings.check_environment({"NETSUITE_ACCOUNT_ID": "1"}, require=("netsuite",))
    assert [p.split(":")[0] for p in problems] == list(settings.NETSUITE_TBA_VARIABLES)


def _check_netsuite(env: dict[str, str], tmp_path: Path) -> subprocess.CompletedProcess:
    return _check_config({"DAGSTER_HOME": str(tmp_path), **env}, "--require", "netsuite", cwd=tmp_path)


def test_check_config_says_m2m_is_active(m2m, tmp_path, private_pem):
    result = _check_netsuite({**TBA, **m2m}, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "NetSuite auth: OAuth 2.0 M2M (certificate cert-abc) (the TBA variables set are ignored)"
    assert "2027.1" not in result.stdout
    assert lines[-1].startswith("configuration OK for netsuite")
    assert private_pem.splitlines()[1] not in result.stdout + result.stderr


def test_check_config_says_tba_is_active_and_warns_of_2027_1(tmp_path):
    result = _check_netsuite(TBA, tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "NetSuite auth: token-based authentication (TBA)"
    assert lines[1].startswith("warning: NetSuite accepts no new token-based (TBA) integrations from release 2027.1")
    assert "ts-secret-value" not in result.stdout


def test_check_config_fails_on_a_half_configured_m2m(m2m, tmp_path):
    result = _check_netsuite({k: v for k, v in m2m.items() if k != "NETSUITE_CERTIFICATE_ID"}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "NETSUITE_CERTIFICATE_ID: expected a value (certificate id of the M2M mapping (OAuth 2.0 Client Credentials"
        " (M2M) Setup)): OAuth 2.0 M2M is half configured"
    ]
    assert result.stdout.splitlines()[0] == "NetSuite auth: OAuth 2.0 M2M (certificate not set)"
