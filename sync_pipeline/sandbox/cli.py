"""`sync-pipeline sandbox up | down | status | seed | serve`: the local stand-ins from a shell.

    eval "$(sync-pipeline sandbox up)"     # start (and seed) in the background, export the variables
    sync-pipeline sandbox status
    sync-pipeline sandbox down

Messages for people go to stderr; stdout carries only the `export` lines, so `eval` works.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import requests

from sync_pipeline.sandbox.runner import (
    ENV_FILE,
    LOG_FILE,
    PID_FILE,
    SYSTEMS,
    Sandbox,
    add_seed_arguments,
    add_server_arguments,
    export_lines,
    holds_data,
    log,
    parse_export_lines,
    record_count,
    seed_options_from,
    serve_forever,
    state_dir_from,
)
from sync_pipeline.sandbox.scenario import ScenarioSummary, seed_scenario

RUNNER_MODULE = "sync_pipeline.sandbox.runner"
# What `status` counts in each stand-in (its `/_sandbox/records/<type>` names).
STATUS_RECORD_TYPES = {
    "stripe": ("customer", "subscription", "invoice", "charge", "refund", "dispute", "payout", "event"),
    "netsuite": ("customer",),
    "salesforce": ("Account", "Contact", "Opportunity", "OpportunityLineItem"),
}


# ---------------------------------------------------------------------------------------------
# The process in the background
# ---------------------------------------------------------------------------------------------


def runner_pid(state_dir: Path) -> int | None:
    """The pid of the sandbox process serving `state_dir`, if one is alive."""
    try:
        pid = int((state_dir / PID_FILE).read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _alive(pid) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path(f"/proc/{pid}")
    if proc.exists():
        # A zombie has exited already; a reused pid belongs to some other program.
        stat = (proc / "stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return False
        return b"sandbox" in (proc / "cmdline").read_bytes()
    return True


def read_env(state_dir: Path) -> dict[str, str]:
    return parse_export_lines((state_dir / ENV_FILE).read_text())


def answering(env: Mapping[str, str]) -> bool:
    """Whether all three stand-ins answer their control endpoint."""
    urls = {
        "stripe": env.get("STRIPE_API_BASE"),
        "netsuite": env.get("NETSUITE_BASE_URL"),
        "salesforce": env.get("SALESFORCE_INSTANCE_URL"),
    }
    for system, url in urls.items():
        if not url:
            return False
        verify: Any = env.get("SALESFORCE_CA_BUNDLE", True) if system == "salesforce" else True
        try:
            requests.get(f"{url.rstrip('/')}/_sandbox/stats", timeout=5, verify=verify).raise_for_status()
        except requests.RequestException:
            return False
    return True


def spawn_runner(args: argparse.Namespace, state_dir: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", RUNNER_MODULE, "--state-dir", str(state_dir)]
    for system in SYSTEMS:
        command += [
            f"--{system}-port",
            str(getattr(args, f"{system}_port")),
            f"--{system}-latency-ms",
            str(getattr(args, f"{system}_latency_ms")),
        ]
    command += ["--netsuite-auth", args.netsuite_auth]
    with open(state_dir / LOG_FILE, "ab") as log_file:
        # Its own session: the sandbox outlives this command and `down` can end its whole group.
        return subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, start_new_session=True, close_fds=True
        )


def wait_until_ready(process: subprocess.Popen, state_dir: Path, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the sandbox process exited with status {process.returncode}:\n" + _log_tail(state_dir))
        if runner_pid(state_dir) == process.pid and (state_dir / ENV_FILE).exists():
            env = read_env(state_dir)
            if answering(env):
                return env
        time.sleep(0.1)
    stop_process_group(process.pid, timeout=5)
    raise RuntimeError(f"the sandbox did not answer within {timeout:.0f} s:\n" + _log_tail(state_dir))


def _log_tail(state_dir: Path, lines: int = 20) -> str:
    with contextlib.suppress(FileNotFoundError):
        return "\n".join((state_dir / LOG_FILE).read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


def stop_process_group(pid: int, timeout: float) -> bool:
    """SIGTERM the process group, then SIGKILL what is left after `timeout`; True if it ended gracefully."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return False


def _with_seeder_credentials(env: Mapping[str, str]) -> dict[str, str]:
    """The seeder signs its NetSuite requests with TBA, which the stand-in takes even when it hands the pipeline
    OAuth 2.0 M2M (`--netsuite-auth m2m`, whose env file has no TBA variable): ask the stand-in for them."""
    if env.get("NETSUITE_CONSUMER_KEY") or not env.get("NETSUITE_BASE_URL"):
        return dict(env)
    config = requests.get(f"{env['NETSUITE_BASE_URL'].rstrip('/')}/_sandbox/config", timeout=10).json()
    names = ("consumer_key", "consumer_secret", "token_id", "token_secret")
    return {**env, **{f"NETSUITE_{name.upper()}": str(config[name]) for name in names}}


def _seed_running(env: Mapping[str, str], args: argparse.Namespace, pid: int | None) -> ScenarioSummary:
    options = seed_options_from(args)
    log(f"seeding: {options.invoices} invoices over {options.days} days, seed {options.seed} ...")
    started = time.monotonic()
    summary = seed_scenario(_with_seeder_credentials(env), options)
    log(summary.to_text())
    log(f"seeded in {time.monotonic() - started:.1f} s")
    if pid is not None:
        os.kill(pid, signal.SIGUSR1)  # persist now rather than only at shutdown
    return summary


# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    state_dir = state_dir_from(args)
    state_dir.mkdir(parents=True, exist_ok=True)
    pid = runner_pid(state_dir)
    if pid is not None:
        env = read_env(state_dir)
        log(f"sandbox already running (pid {pid}, state in {state_dir})")
    else:
        for stale in (PID_FILE, ENV_FILE):
            (state_dir / stale).unlink(missing_ok=True)
        process = spawn_runner(args, state_dir)
        try:
            env = wait_until_ready(process, state_dir, args.timeout)
        except RuntimeError as exc:
            log(f"sandbox did not start: {exc}")
            return 1
        pid = process.pid
        log(f"sandbox started (pid {pid}, state in {state_dir}, log {state_dir / LOG_FILE})")
    if args.no_seed:
        pass
    elif holds_data(env):
        log("sandbox already holds data; not seeding (`sync-pipeline sandbox seed` adds more)")
    else:
        try:
            _seed_running(env, args, pid)
        except Exception as exc:
            log(f"seeding failed: {exc}\nthe sandbox is still running; `sync-pipeline sandbox down` stops it")
            return 1
    sys.stdout.write(export_lines(env))
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = state_dir_from(args)
    pid = runner_pid(state_dir)
    if pid is None:
        (state_dir / PID_FILE).unlink(missing_ok=True)
        log("sandbox not running")
        return 0
    graceful = stop_process_group(pid, args.timeout)
    (state_dir / PID_FILE).unlink(missing_ok=True)
    log(f"sandbox stopped (pid {pid})" + ("" if graceful else f": killed after {args.timeout:.0f} s, state not saved"))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = state_dir_from(args)
    pid = runner_pid(state_dir)
    if pid is None:
        print(f"sandbox: not running (state dir {state_dir})")
        return 3
    env = read_env(state_dir)
    print(f"sandbox: running, pid {pid}, state dir {state_dir}")
    for system, url, counts in record_counts(env):
        shown = ", ".join(f"{name} {n}" for name, n in counts.items())
        print(f"  {system:<10} {url}  {shown}")
    return 0


def record_counts(env: Mapping[str, str]) -> list[tuple[str, str, dict[str, int | str]]]:
    urls = {
        "stripe": env["STRIPE_API_BASE"],
        "netsuite": env["NETSUITE_BASE_URL"],
        "salesforce": env["SALESFORCE_INSTANCE_URL"],
    }
    rows = []
    for system, url in urls.items():
        verify: Any = env.get("SALESFORCE_CA_BUNDLE", True) if system == "salesforce" else True
        counts: dict[str, int | str] = {}
        for record_type in STATUS_RECORD_TYPES[system]:
            try:
                response = requests.get(f"{url.rstrip('/')}/_sandbox/records/{record_type}", timeout=30, verify=verify)
                response.raise_for_status()
                counts[record_type] = record_count(response.json())
            except requests.RequestException as exc:
                counts[record_type] = f"? ({type(exc).__name__})"
        rows.append((system, url, counts))
    return rows


def cmd_seed(args: argparse.Namespace) -> int:
    state_dir = state_dir_from(args)
    pid = runner_pid(state_dir)
    if pid is None:
        log(f"sandbox not running (state dir {state_dir}); start it with `sync-pipeline sandbox up`")
        return 2
    _seed_running(read_env(state_dir), args, pid)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    def seed_when_empty(sandbox: Sandbox) -> None:
        env = sandbox.env()
        log(export_lines(env).rstrip())
        if not args.no_seed and not holds_data(env):
            _seed_running(env, args, None)
            sandbox.save()

    return serve_forever(args, on_ready=seed_when_empty)


def add_sandbox_commands(subparsers: Any) -> None:
    """Register `sandbox ...` on the top-level `sync-pipeline` parser's subparsers."""
    sandbox = subparsers.add_parser(
        "sandbox",
        help="local stand-ins of Stripe, NetSuite and Salesforce",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = sandbox.add_subparsers(dest="sandbox_command", required=True)

    up = commands.add_parser("up", help="start all three in the background (seeded), print `export` lines")
    add_server_arguments(up)
    add_seed_arguments(up)
    up.add_argument("--no-seed", action="store_true", help="start empty (or with the saved state)")
    up.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the servers")
    up.set_defaults(func=cmd_up)

    down = commands.add_parser("down", help="stop the background sandbox (its state is saved)")
    down.add_argument("--state-dir", type=Path, default=None)
    # Saving a large Stripe state (10,000+ invoices with their events) takes tens of seconds.
    down.add_argument("--timeout", type=float, default=120.0, help="seconds before SIGTERM becomes SIGKILL")
    down.set_defaults(func=cmd_down)

    status = commands.add_parser("status", help="whether it runs, its URLs and record counts")
    status.add_argument("--state-dir", type=Path, default=None)
    status.set_defaults(func=cmd_status)

    seed = commands.add_parser("seed", help="add a generated scenario to the running sandbox")
    seed.add_argument("--state-dir", type=Path, default=None)
    add_seed_arguments(seed)
    seed.set_defaults(func=cmd_seed)

    serve = commands.add_parser("serve", help="run all three in the foreground until Ctrl-C")
    add_server_arguments(serve)
    add_seed_arguments(serve)
    serve.add_argument("--no-seed", action="store_true")
    serve.set_defaults(func=cmd_serve)


def main(argv: list[str] | None = None) -> int:
    """`python -m sync_pipeline.sandbox.cli ...` works like `sync-pipeline sandbox ...`."""
    parser = argparse.ArgumentParser(prog="sync-pipeline")
    add_sandbox_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["sandbox", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
