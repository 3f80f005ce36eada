"""`sync-pipeline sandbox up | status | down` through the installed command, in subprocesses."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import stripe
from requests_oauthlib import OAuth1
from simple_salesforce import Salesforce

from sync_pipeline.sandbox.runner import PID_FILE, parse_export_lines
from sync_pipeline.sandbox.scenario import STRIPE_API_VERSION

CLI = [str(Path(sys.executable).with_name("sync-pipeline"))]
if not Path(CLI[0]).exists():
    CLI = [sys.executable, "-m", "sync_pipeline.cli"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sandbox(*args: str, state_dir: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "sandbox", *args, "--state-dir", str(state_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def evaluated(exports: str) -> dict[str, str]:
    """What a shell sees after `eval "$(sync-pipeline sandbox up)"`."""
    shell = subprocess.run(["bash", "-c", 'eval "$1" && env -0', "bash", exports], capture_output=True, check=True)
    pairs = (entry.split("=", 1) for entry in shell.stdout.decode().split("\0") if "=" in entry)
    return {k: v for k, v in pairs if k.startswith(("STRIPE_", "NETSUITE_", "SALESFORCE_"))}


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] == "Z")


@pytest.fixture
def state_dir(tmp_path):
    directory = tmp_path / "sandbox"
    yield directory
    # Whatever a failing test left running is stopped here.
    pid_file = directory / PID_FILE
    if pid_file.exists():
        sandbox("down", "--timeout", "5", state_dir=directory)


def test_up_prints_evaluable_exports_pointing_at_answering_seeded_servers(state_dir):
    ports = [free_port() for _ in range(3)]
    up = sandbox(
        "up",
        "--stripe-port",
        str(ports[0]),
        "--netsuite-port",
        str(ports[1]),
        "--salesforce-port",
        str(ports[2]),
        "--invoices",
        "12",
        "--days",
        "10",
        "--seed",
        "3",
        state_dir=state_dir,
    )
    assert up.returncode == 0, up.stderr
    env = evaluated(up.stdout)
    assert env["STRIPE_API_BASE"] == f"http://127.0.0.1:{ports[0]}"
    assert env["NETSUITE_BASE_URL"] == f"http://127.0.0.1:{ports[1]}"
    assert env["SALESFORCE_INSTANCE_URL"] == f"https://127.0.0.1:{ports[2]}"
    assert {
        "STRIPE_API_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "NETSUITE_ACCOUNT_ID",
        "NETSUITE_CONSUMER_KEY",
        "NETSUITE_CONSUMER_SECRET",
        "NETSUITE_TOKEN_ID",
        "NETSUITE_TOKEN_SECRET",
        "SALESFORCE_CA_BUNDLE",
    } <= set(env)
    assert env["STRIPE_WEBHOOK_SECRET"].startswith("whsec_")
    assert "invoices" in up.stderr  # the seeding summary went to stderr, not into the exports

    client = stripe.StripeClient(
        env["STRIPE_API_KEY"], base_addresses={"api": env["STRIPE_API_BASE"]}, stripe_version=STRIPE_API_VERSION
    )
    customers = client.v1.customers.list({"limit": 100}).data
    assert len(customers) >= 4
    auth = OAuth1(
        env["NETSUITE_CONSUMER_KEY"],
        env["NETSUITE_CONSUMER_SECRET"],
        env["NETSUITE_TOKEN_ID"],
        env["NETSUITE_TOKEN_SECRET"],
        realm=env["NETSUITE_ACCOUNT_ID"],
        signature_method="HMAC-SHA256",
    )
    linked = next(c for c in customers if "netsuite_customer_id" in (c.metadata or {}))
    netsuite = requests.get(
        f"{env['NETSUITE_BASE_URL']}/services/rest/record/v1/customer/{linked.metadata['netsuite_customer_id']}",
        auth=auth,
        timeout=10,
    )
    assert netsuite.status_code == 200
    session = requests.Session()
    session.verify = env["SALESFORCE_CA_BUNDLE"]
    session.trust_env = False  # else REQUESTS_CA_BUNDLE, when set, replaces `verify`
    salesforce = Salesforce(
        instance_url=env["SALESFORCE_INSTANCE_URL"], session_id=env["SALESFORCE_SESSION_ID"], session=session
    )
    assert salesforce.query("SELECT COUNT() FROM Account")["totalSize"] >= 3

    # The exports and the TLS key hold secrets: only their owner may read them.
    secret_files = [state_dir / "sandbox.env", *state_dir.rglob("server-key.pem")]
    assert len(secret_files) >= 2
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in secret_files} == {
        path.name: 0o600 for path in secret_files
    }

    status = sandbox("status", state_dir=state_dir)
    assert status.returncode == 0 and "running" in status.stdout and env["STRIPE_API_BASE"] in status.stdout

    pid = int((state_dir / PID_FILE).read_text())
    down = sandbox("down", state_dir=state_dir)
    assert down.returncode == 0, down.stderr
    assert not pid_alive(pid)
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{env['STRIPE_API_BASE']}/_sandbox/stats", timeout=2)
    again = sandbox("down", state_dir=state_dir)
    assert again.returncode == 0 and "not running" in again.stderr
    assert sandbox("status", state_dir=state_dir).returncode == 3

    # The state was saved: the next `up` serves the same data and does not seed again.
    restarted = sandbox(
        "up",
        "--stripe-port",
        str(ports[0]),
        "--netsuite-port",
        str(ports[1]),
        "--salesforce-port",
        str(ports[2]),
        state_dir=state_dir,
    )
    assert restarted.returncode == 0, restarted.stderr
    assert "not seeding" in restarted.stderr
    assert [c.id for c in client.v1.customers.list({"limit": 100}).data] == [c.id for c in customers]
    accounts = salesforce.query("SELECT COUNT() FROM Account")["totalSize"]

    # `seed` adds another scenario to the running sandbox.
    seeded = sandbox("seed", "--invoices", "8", "--days", "5", "--seed", "4", state_dir=state_dir)
    assert seeded.returncode == 0, seeded.stderr
    assert len(client.v1.customers.list({"limit": 100}).data) > len(customers)
    assert salesforce.query("SELECT COUNT() FROM Account")["totalSize"] > accounts

    pid = int((state_dir / PID_FILE).read_text())
    assert sandbox("down", state_dir=state_dir).returncode == 0
    assert not pid_alive(pid)


def test_down_kills_a_process_group_that_ignores_sigterm(state_dir):
    state_dir.mkdir(parents=True)
    stubborn = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)  # sandbox",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert stubborn.stdout.readline() == b"ready\n"
        (state_dir / PID_FILE).write_text(f"{stubborn.pid}\n")
        started = time.monotonic()
        down = sandbox("down", "--timeout", "1", state_dir=state_dir)
        assert down.returncode == 0 and "killed" in down.stderr
        assert stubborn.wait(timeout=10) == -9
        assert time.monotonic() - started < 30
        assert not (state_dir / PID_FILE).exists()
    finally:
        if stubborn.poll() is None:
            stubborn.kill()


def test_export_lines_survive_quotes_in_values():
    from sync_pipeline.sandbox.runner import export_lines

    env = {"SALESFORCE_PASSWORD": 'it\'s $secret "x"', "STRIPE_API_KEY": "sk_test_1"}
    assert evaluated(export_lines(env)) == env
    assert parse_export_lines(export_lines(env)) == env


def test_up_with_netsuite_m2m_seeds_and_exports_m2m_credentials_that_survive_a_restart(state_dir):
    from sync_pipeline.resources.netsuite import NetSuiteResource
    from sync_pipeline.sandbox.runner import NETSUITE_M2M_KEY_FILE

    ports = ["--stripe-port", "0", "--netsuite-port", str(free_port()), "--salesforce-port", "0"]
    seeding = ["--invoices", "6", "--days", "3", "--no-receivables-cases"]
    for attempt in range(2):  # the restart keeps the key: the exported NETSUITE_PRIVATE_KEY_FILE stays valid
        up = sandbox("up", "--netsuite-auth", "m2m", *ports, *seeding, state_dir=state_dir)
        assert up.returncode == 0, up.stderr
        env = evaluated(up.stdout)
        assert env["NETSUITE_PRIVATE_KEY_FILE"] == str(state_dir.resolve() / NETSUITE_M2M_KEY_FILE)
        assert not {"NETSUITE_CONSUMER_KEY", "NETSUITE_TOKEN_ID", "NETSUITE_TOKEN_SECRET"} & set(env)
        resource = NetSuiteResource(
            account_id=env["NETSUITE_ACCOUNT_ID"],
            oauth2_client_id=env["NETSUITE_CLIENT_ID"],
            oauth2_certificate_id=env["NETSUITE_CERTIFICATE_ID"],
            oauth2_private_key_file=env["NETSUITE_PRIVATE_KEY_FILE"],
            base_url=env["NETSUITE_BASE_URL"],
        )
        assert resource.get_client().get("currency", "1")["id"] == "1", attempt
        assert sandbox("down", state_dir=state_dir).returncode == 0
    assert stat.S_IMODE((state_dir / NETSUITE_M2M_KEY_FILE).stat().st_mode) == 0o600
