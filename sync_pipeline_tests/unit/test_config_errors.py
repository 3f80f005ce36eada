"""Configuration errors are one line, never a traceback: the real CLI and Dagster's loader, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from sync_pipeline import settings
from sync_pipeline.resources.field_mapping import FieldMappingResource
from sync_pipeline.resources.ledger import LedgerResource

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Nothing listens on port 1; the password must show up nowhere, neither as written nor percent-decoded.
UNREACHABLE_POSTGRES = "postgresql+psycopg2://sync:hunter2%21x@127.0.0.1:1/ledger"
PASSWORD_SPELLINGS = ("hunter2%21x", "hunter2!x")


@pytest.fixture
def run(tmp_path):
    """Run a command of the venv (sync-pipeline, dagster) in a clean environment plus `env`."""

    def _run(*command: str, cwd: Path | str | None = None, **env: str) -> subprocess.CompletedProcess:
        base = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
        return subprocess.run(
            [str(BIN / command[0]), *command[1:]],
            env={**base, **env},
            cwd=cwd or tmp_path,
            capture_output=True,
            text=True,
            timeout=300,
        )

    return _run


def assert_one_line(result: subprocess.CompletedProcess, line: str, code: int = 2) -> None:
    assert "Traceback" not in result.stderr
    assert result.stderr.splitlines() == [line]
    assert result.returncode == code


# -- environment variables ---------------------------------------------------------------------


def test_help_works_whatever_the_environment_holds(run):
    result = run(
        "sync-pipeline",
        "--help",
        SYNC_START_DATE="2026-13-01",
        NETSUITE_CONCURRENCY="²",
        SYNC_FIELD_MAPPING="/nowhere.yaml",
        SYNC_DATABASE_URL="mysql://x",
    )
    assert result.returncode == 0
    assert "check-config" in result.stdout
    assert result.stderr == ""


@pytest.mark.parametrize(
    ("name", "value", "line"),
    [
        ("SYNC_START_DATE", "2026-13-01", "SYNC_START_DATE: expected a date as YYYY-MM-DD"),
        ("NETSUITE_CONCURRENCY", "²", "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000"),
        ("NETSUITE_CONCURRENCY", "٣", "NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000"),
        ("STRIPE_API_BASE", "http://[::1", "STRIPE_API_BASE: expected a URL starting with http:// or https://"),
        ("SYNC_EVENT_SOURCE", "kafka", "SYNC_EVENT_SOURCE: expected events_api or webhooks"),
    ],
)
def test_check_config_names_a_bad_value_in_one_line(run, name, value, line):
    assert_one_line(run("sync-pipeline", "check-config", **{name: value}), line)


@pytest.mark.parametrize("command", [("dev", "--no-sandbox"), ("demo",), ("webhooks", "serve")])
def test_every_command_stops_on_a_bad_value_with_one_line(run, command):
    result = run("sync-pipeline", *command, NETSUITE_CONCURRENCY="²", STRIPE_WEBHOOK_SECRET="whsec_abc")
    assert_one_line(result, "sync-pipeline: NETSUITE_CONCURRENCY: expected a whole number from 1 to 1000")


# Every setting malformed ("²" fails each check); importing must neither read nor trip over any of them.
POISONED = {setting.name: "²" for setting in settings.SETTINGS}
# Imports every module of the package and prints the environment variables that code of the package read
# (through os.environ[...], .get, `in` or os.getenv); libraries copying the whole environment do not count.
IMPORT_EVERY_MODULE = """
import _collections_abc, importlib, json, os, pkgutil, sys
import sync_pipeline

package = os.path.dirname(sync_pipeline.__file__) + os.sep
# Frozen modules name their code "<frozen os>" rather than their file.
plumbing = {os.getenv.__code__.co_filename, _collections_abc.Mapping.get.__code__.co_filename}
read, failed, getitem = set(), {}, os._Environ.__getitem__

def watched(environ, key):
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename in plumbing:
        frame = frame.f_back
    if frame is not None and frame.f_code.co_filename.startswith(package):
        read.add(key)
    return getitem(environ, key)

os._Environ.__getitem__ = watched
modules = [m.name for m in pkgutil.walk_packages(sync_pipeline.__path__, "sync_pipeline.",
                                                  onerror=lambda name: failed.setdefault(name, "not walkable"))]
for name in modules:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = repr(exc)
print(json.dumps({"modules": modules, "read": sorted(read), "failed": failed}))
"""


def test_the_poison_is_refused_by_every_setting_that_can_be_malformed():
    checked = [s.name for s in settings.SETTINGS if s.check] + ["SYNC_FIELD_MAPPING"]  # the last: no such file
    assert [problem.split(":")[0] for problem in settings.check_configuration(POISONED)] == checked


def test_importing_any_module_reads_no_setting_and_raises_nothing(run):
    result = run("python", "-c", IMPORT_EVERY_MODULE, **POISONED)
    assert (result.returncode, result.stderr) == (0, "")
    imported = json.loads(result.stdout)
    assert {"sync_pipeline.definitions", "sync_pipeline.assets.stripe", "sync_pipeline.sandbox.runner"} <= set(
        imported["modules"]
    )
    assert (imported["read"], imported["failed"]) == ([], {})


# -- field_mapping.yaml --------------------------------------------------------------------------

CURRENCIES = b'currencies:\n  USD: {netsuite_id: "1", subsidiary: "1"}\nsubsidiaries:\n  "1": {name: HQ}\n'


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        pytest.param(
            b'currencies:\n  USD: {netsuite_id: "1"\nitems: {}\n',
            "not valid YAML at line 3, column 1 (expected ',' or '}', but got '<scalar>', while parsing a "
            "flow mapping that starts at line 2, column 8). Fix: check indentation and quoting there",
            id="bad-yaml",
        ),
        pytest.param(
            b"", "the file is empty. Fix: start from the example field_mapping.yaml at the repository root", id="empty"
        ),
        pytest.param(
            b'version: 1\nitems:\n  default: "100"\n',
            "currencies: missing: no currency is mapped. Fix: list each currency you sell in, e.g. "
            '`USD: {netsuite_id: "1", subsidiary: "1"}`',
            id="no-currencies",
        ),
        pytest.param(
            CURRENCIES + b'defaults:\n  invoices: {department: "3"}\n',
            "defaults.invoices: 'invoices' is not a NetSuite record type this pipeline writes. Fix: use one "
            "of: customer, invoice, creditMemo, customerPayment, customerRefund, deposit, journalEntry (names are "
            "case-sensitive)",
            id="unknown-record-type",
        ),
        pytest.param(
            b'currencies:\n  EUO: {netsuite_id: "2"}\n',
            "currencies.EUO: 'EUO' is not a three-letter ISO 4217 currency code. Fix: write codes like USD, EUR, JPY",
            id="bad-currency-code",
        ),
        pytest.param(
            b'currencies:\n  USD: {netsuite_id: "1", subsidiary: "9"}\n',
            "currencies.USD.subsidiary: subsidiary 9 is not listed under `subsidiaries:`. Fix: add "
            'subsidiary "9" under `subsidiaries:` or correct the id',
            id="undefined-subsidiary",
        ),
        pytest.param(
            CURRENCIES + b'items:\n  default: "Caf\xe9"\n',
            "not UTF-8 text (byte 0xe9 on line 6). Fix: save the file as UTF-8 in your editor",
            id="not-utf-8",
        ),
        pytest.param(
            CURRENCIES + b"accounts:\n  payments: Undeposited Funds\n",
            "accounts.payments: expected a NetSuite internal id, got 'Undeposited Funds'. Fix: write the "
            'internal id (the number after id= in the record\'s URL), e.g. "3"',
            id="account-not-an-id",
        ),
        pytest.param(
            CURRENCIES + b'items:\n  by_product:\n    pro: "101"\n',
            "items.by_product.pro: 'pro' is not a Stripe id starting with prod_. Fix: copy the id (prod_...) "
            "from the Stripe dashboard",
            id="item-not-a-stripe-id",
        ),
        pytest.param(
            b'currencies:\n  USD: {netsuite_id: "1"}\n  USD: {netsuite_id: "2"}\n',
            "not valid YAML at line 3, column 3 (USD is written twice in this section). Fix: check "
            "indentation and quoting there",
            id="key-twice",
        ),
    ],
)
def test_check_config_gives_each_field_mapping_problem_its_line(run, tmp_path, content, problem):
    path = tmp_path / "field_mapping.yaml"
    path.write_bytes(content)
    assert_one_line(run("sync-pipeline", "check-config", SYNC_FIELD_MAPPING=str(path)), f"{path}: {problem}")


def test_every_problem_of_the_file_is_its_own_line(run, tmp_path):
    path = tmp_path / "field_mapping.yaml"
    path.write_text('currencies:\n  EUO: {netsuite_id: "2", subsidiary: "9"}\naccounts:\n  bank: ten\ncolour: red\n')
    result = run("sync-pipeline", "check-config", SYNC_FIELD_MAPPING=str(path))
    assert result.returncode == 2
    assert [line.split(": ")[1] for line in result.stderr.splitlines()] == [
        "colour",
        "currencies.EUO",
        "currencies.EUO.subsidiary",
        "accounts.bank",
    ]
    assert all(line.startswith(f"{path}: ") for line in result.stderr.splitlines())


def test_the_shipped_field_mapping_is_clean_and_found_from_any_directory(run):
    result = run("sync-pipeline", "check-config", cwd="/")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.strip() == f"configuration OK (field mapping {ROOT / 'field_mapping.yaml'})"


def test_a_missing_field_mapping_says_where_it_looked_and_what_to_set(run, tmp_path):
    result = run("sync-pipeline", "check-config", SYNC_FIELD_MAPPING="mapping.yaml", cwd=tmp_path)
    assert_one_line(
        result,
        "SYNC_FIELD_MAPPING: expected the path of your field_mapping.yaml; cannot read "
        f"{tmp_path / 'mapping.yaml'} (No such file or directory)",
    )


def test_a_run_reading_a_broken_field_mapping_fails_with_the_same_lines(tmp_path):
    path = tmp_path / "field_mapping.yaml"
    path.write_text('currencies:\n  EUO: {netsuite_id: "2"}\n')
    with pytest.raises(dg.Failure) as failure:
        FieldMappingResource(path=str(path)).load()
    assert failure.value.description.splitlines()[1:] == [
        f"  - {path}: currencies.EUO: 'EUO' is not a three-letter ISO 4217 currency code. Fix: write codes like "
        "USD, EUR, JPY"
    ]


# -- the code location, loaded by Dagster ---------------------------------------------------------


def test_the_code_location_loads_from_the_root_directory(run):
    result = run("dagster", "definitions", "validate", "-m", "sync_pipeline.definitions", cwd="/")
    assert result.returncode == 0, result.stdout
    assert "Validation successful for code location sync_pipeline.definitions" in result.stdout


def test_the_code_location_refuses_to_load_with_the_field_mappings_line(run, tmp_path):
    path = tmp_path / "field_mapping.yaml"
    path.write_text("version: 1\n")
    result = run("dagster", "definitions", "validate", "-w", str(ROOT / "workspace.yaml"), SYNC_FIELD_MAPPING=str(path))
    assert result.returncode == 1
    # Dagster logs our error's message on a line of its own, before its own short stack trace.
    assert (
        f"sync_pipeline.settings.ConfigError: {path}: currencies: missing: no currency is mapped. Fix: list each "
        'currency you sell in, e.g. `USD: {netsuite_id: "1", subsidiary: "1"}`'
    ) in result.stdout.splitlines()


# -- the ledger database -------------------------------------------------------------------------


def test_check_config_connects_and_never_shows_the_password(run):
    result = run("sync-pipeline", "check-config", SYNC_DATABASE_URL=UNREACHABLE_POSTGRES)
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "SYNC_DATABASE_URL: cannot open postgresql+psycopg2://sync:***@127.0.0.1:1/ledger "
        '(connection to server at "127.0.0.1", port 1 failed: Connection refused'
    )
    assert result.returncode == 2
    assert not any(p in result.stdout + result.stderr for p in PASSWORD_SPELLINGS)


def test_a_sqlite_file_under_a_file_is_one_line(run, tmp_path):
    (tmp_path / "a_file").write_text("")
    url = f"sqlite:///{tmp_path / 'a_file' / 'ledger.sqlite'}"
    line = f"SYNC_DATABASE_URL: cannot open {url} ({tmp_path / 'a_file'} is not a directory)"
    assert_one_line(run("sync-pipeline", "check-config", SYNC_DATABASE_URL=url), line)
    assert_one_line(run("sync-pipeline", "webhooks", "status", SYNC_DATABASE_URL=url), f"sync-pipeline: {line}")


@pytest.mark.parametrize("url", [UNREACHABLE_POSTGRES, "sqlite:////dev/null/ledger.sqlite"])
def test_a_run_opening_the_ledger_fails_with_one_line_without_the_password(url):
    with pytest.raises(settings.ConfigError) as raised:
        LedgerResource(database_url=url).get_ledger()
    message = str(raised.value)
    assert message.startswith(f"SYNC_DATABASE_URL: cannot open {url.replace('hunter2%21x', '***')} (")
    assert "\n" not in message
    assert not any(p in message for p in PASSWORD_SPELLINGS)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
