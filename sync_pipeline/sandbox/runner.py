"""Running the three stand-ins together: in this process (tests, demo) or as one background process.

- `running_sandbox(...)`: a context manager that starts Stripe, NetSuite and Salesforce on free ports in
  threads of this process, optionally seeds them, and stops them on exit.
- `python -m sync_pipeline.sandbox.runner --state-dir DIR ...` (what `sync-pipeline sandbox serve` and
  `sandbox up` run): serves all three in one process until SIGTERM/SIGINT, loading the state saved in
  DIR on start and saving it there on shutdown (and on SIGUSR1), with a pid file and an env file of
  `export NAME='value'` lines that point the pipeline at it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import os
import shlex
import signal
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from sync_pipeline.sandbox.scenario import ScenarioOptions, ScenarioSummary, seed_scenario
from sync_pipeline.sandbox.server import write_private

SYSTEMS = ("stripe", "netsuite", "salesforce")
DEFAULT_PORTS = {"stripe": 12111, "netsuite": 12112, "salesforce": 12113}
PID_FILE = "sandbox.pid"
ENV_FILE = "sandbox.env"
LOG_FILE = "sandbox.log"
# With --netsuite-auth m2m: the private key the pipeline signs its NetSuite assertions with (owner-only), kept
# across restarts so that NETSUITE_PRIVATE_KEY_FILE stays valid.
NETSUITE_M2M_KEY_FILE = "netsuite_m2m_private_key.pem"


@dataclass(frozen=True)
class StandIn:
    """How to build and persist one stand-in (each module follows the shared SANDBOX conventions)."""

    system: str
    module: str
    config_class: str
    state_class: str

    def load_module(self) -> Any:
        return importlib.import_module(self.module)

    def start(self, config: Any, state: Any, port: int, state_dir: Path | None) -> Any:
        module = self.load_module()
        extra: dict[str, Any] = {}
        if self.system == "salesforce" and state_dir is not None:
            # A persistent sandbox keeps its CA so SALESFORCE_CA_BUNDLE stays valid across restarts.
            extra["tls_dir"] = state_dir / "tls"
        return getattr(module, f"start_{self.system}")(config=config, state=state, port=port, **extra)

    def state_path(self, state_dir: Path) -> Path:
        return state_dir / f"{self.system}.json"

    def load_state(self, state_dir: Path | None) -> Any:
        if state_dir is None or not self.state_path(state_dir).exists():
            return None
        return getattr(self.load_module(), self.state_class).load(self.state_path(state_dir))

    def make_config(self, knobs: Mapping[str, Any]) -> Any:
        module = self.load_module()
        config_class = getattr(module, self.config_class)
        known = {f.name for f in dataclasses.fields(config_class)}
        knobs = {k: v for k, v in knobs.items() if k in known}
        if self.system == "stripe":
            # One fixed signing secret, so STRIPE_WEBHOOK_SECRET is known before any endpoint exists.
            knobs.setdefault("webhook_secret", module.config.DEFAULT_WEBHOOK_SECRET)
        return config_class(**knobs)


STAND_INS = {
    "stripe": StandIn("stripe", "sync_pipeline.sandbox.stripe", "StripeConfig", "StripeState"),
    "netsuite": StandIn("netsuite", "sync_pipeline.sandbox.netsuite", "NetSuiteConfig", "NetSuiteState"),
    "salesforce": StandIn("salesforce", "sync_pipeline.sandbox.salesforce", "SalesforceConfig", "SalesforceState"),
}


def default_state_dir() -> Path:
    home = os.environ.get("DAGSTER_HOME") or str(Path.cwd() / ".dagster_home")
    return Path(home) / "sandbox"


def export_lines(env: Mapping[str, str]) -> str:
    """`export NAME='value'` lines a POSIX shell can `eval`."""
    return "".join(f"export {name}={shlex.quote(value)}\n" for name, value in sorted(env.items()))


def parse_export_lines(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for line in text.splitlines():
        words = shlex.split(line)
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, value = words[1].split("=", 1)
            env[name] = value
    return env


@dataclass
class Sandbox:
    """The three running stand-ins, each a handle with `.url`, `.state`, `.config`, `.stop()`, `.env()`."""

    stripe: Any
    netsuite: Any
    salesforce: Any
    state_dir: Path | None = None
    summary: ScenarioSummary | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def handles(self) -> dict[str, Any]:
        return {"stripe": self.stripe, "netsuite": self.netsuite, "salesforce": self.salesforce}

    def env(self) -> dict[str, str]:
        """Every pipeline variable (STRIPE_*, NETSUITE_*, SALESFORCE_*) that points at these stand-ins."""
        env: dict[str, str] = {}
        for handle in self.handles().values():
            env.update(handle.env())
        return env

    def urls(self) -> dict[str, str]:
        return {system: handle.url for system, handle in self.handles().items()}

    def seed(self, options: ScenarioOptions | None = None) -> ScenarioSummary:
        # The seeder signs its NetSuite requests with TBA, which the stand-in takes even when the pipeline gets M2M.
        self.summary = seed_scenario({**self.env(), **self.netsuite.tba_env()}, options)
        return self.summary

    def save(self) -> None:
        """Write each stand-in's state to the state dir (atomically: a crash never leaves half a file)."""
        if self.state_dir is None:
            return
        with self._lock:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            for system, handle in self.handles().items():
                target = STAND_INS[system].state_path(self.state_dir)
                scratch = target.with_suffix(".json.tmp")
                handle.state.save(scratch)
                scratch.replace(target)

    def stop(self, save: bool = True) -> None:
        for handle in self.handles().values():
            handle.stop()
        if save:
            self.save()


def start_sandbox(
    state_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
) -> Sandbox:
    """Start all three stand-ins in threads of this process (ports 0 = free ports).

    With a `state_dir`, each stand-in starts from the state saved there (if any).
    """
    ports = ports or {}
    configs = configs or {}
    started: dict[str, Any] = {}
    try:
        for system, stand_in in STAND_INS.items():
            config = stand_in.make_config(configs.get(system, {}))
            state = stand_in.load_state(state_dir)
            started[system] = stand_in.start(config, state, ports.get(system, 0), state_dir)
    except BaseException:
        for handle in started.values():
            handle.stop()
        raise
    return Sandbox(state_dir=state_dir, **started)


@contextlib.contextmanager
def running_sandbox(
    seed_options: ScenarioOptions | None = None,
    state_dir: Path | None = None,
    ports: Mapping[str, int] | None = None,
    **configs: Mapping[str, Any],
) -> Iterator[Sandbox]:
    """Stand-ins on free ports for the length of a `with` block; seeded first when `seed_options` is given.

    `configs` are knobs per system, e.g. `running_sandbox(netsuite={"latency_ms": 20})`.
    """
    sandbox = start_sandbox(state_dir, ports, configs)
    try:
        if seed_options is not None:
            sandbox.seed(seed_options)
        yield sandbox
    finally:
        sandbox.stop(save=state_dir is not None)


def holds_data(env: Mapping[str, str]) -> bool:
    """Whether the Stripe stand-in already has customers (a persisted, seeded sandbox)."""
    response = requests.get(f"{env['STRIPE_API_BASE'].rstrip('/')}/_sandbox/records/customer", timeout=30)
    response.raise_for_status()
    return record_count(response.json()) > 0


def record_count(body: Any) -> int:
    """How many records a `/_sandbox/records/<type>` answer holds (a list, or NetSuite's `{"records": [...]}`)."""
    if isinstance(body, dict):
        return len(body.get("records", []))
    return len(body)


# ---------------------------------------------------------------------------------------------
# The background process
# ---------------------------------------------------------------------------------------------


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `serve`, `up` and `python -m sync_pipeline.sandbox.runner`."""
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        help="where state, pid and env files live (default $DAGSTER_HOME/sandbox)",
    )
    for system in SYSTEMS:
        parser.add_argument(
            f"--{system}-port",
            type=int,
            default=DEFAULT_PORTS[system],
            help=f"port of the {system} stand-in (default {DEFAULT_PORTS[system]}; 0 = any free)",
        )
        parser.add_argument(
            f"--{system}-latency-ms", type=float, default=0.0, help=f"added latency of every {system} request"
        )
    parser.add_argument(
        "--netsuite-auth",
        choices=("tba", "m2m"),
        default="tba",
        help="the NetSuite credentials handed to the pipeline: token-based (tba, default) or OAuth 2.0 client "
        "credentials (m2m: a key pair whose certificate the stand-in maps; the private key in "
        f"STATE_DIR/{NETSUITE_M2M_KEY_FILE})",
    )


def add_seed_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = ScenarioOptions()
    parser.add_argument("--days", type=int, default=defaults.days, help="days of activity (default 30)")
    parser.add_argument("--end-date", type=_date, default=None, help="last day, YYYY-MM-DD (default yesterday UTC)")
    parser.add_argument("--invoices", type=int, default=defaults.invoices, help="approximate number of invoices")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="random seed: same seed, same scenario")
    parser.add_argument(
        "--receivables-cases",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also seed every receivables case: credit notes, customer balances, out-of-band and partial payments, "
        "uncollectible then paid, backdated, KWD with coupon and tax (default on)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="client threads; more is ~15%% faster at 10,000 invoices, but ids then vary run to run",
    )


def _date(text: str) -> Any:
    import datetime as dt

    return dt.date.fromisoformat(text)


def seed_options_from(args: argparse.Namespace) -> ScenarioOptions:
    return ScenarioOptions(
        days=args.days,
        invoices=args.invoices,
        seed=args.seed,
        end_date=args.end_date,
        threads=max(1, args.threads),
        receivables_cases=args.receivables_cases,
    )


def state_dir_from(args: argparse.Namespace) -> Path:
    return (args.state_dir or default_state_dir()).resolve()


def _configs_from(args: argparse.Namespace, state_dir: Path) -> dict[str, dict[str, Any]]:
    configs: dict[str, dict[str, Any]] = {
        system: {"latency_ms": getattr(args, f"{system}_latency_ms")} for system in SYSTEMS
    }
    if args.netsuite_auth == "m2m":
        configs["netsuite"].update(pipeline_auth="m2m", m2m_key_file=str(state_dir / NETSUITE_M2M_KEY_FILE))
    return configs


def _ports_from(args: argparse.Namespace) -> dict[str, int]:
    return {system: getattr(args, f"{system}_port") for system in SYSTEMS}


def serve_forever(args: argparse.Namespace, on_ready: Any = None) -> int:
    """Serve until SIGTERM/SIGINT; state is loaded from and saved to the state dir."""
    state_dir = state_dir_from(args)
    state_dir.mkdir(parents=True, exist_ok=True)
    sandbox = start_sandbox(state_dir, _ports_from(args), _configs_from(args, state_dir))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    # SIGUSR1: save now (sent by `sandbox up`/`seed` after seeding, so a crash later loses nothing).
    signal.signal(signal.SIGUSR1, lambda *_: threading.Thread(target=sandbox.save, daemon=True).start())
    try:
        # The variables hold the stand-ins' credentials: readable by their owner only.
        write_private(state_dir / ENV_FILE, export_lines(sandbox.env()).encode())
        (state_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        log(f"sandbox serving {json.dumps(sandbox.urls())} (state in {state_dir})")
        if on_ready is not None:
            on_ready(sandbox)
        while not stop.wait(0.5):
            pass
    finally:
        log("sandbox stopping; saving state")
        sandbox.stop(save=True)
        with contextlib.suppress(FileNotFoundError):
            if (state_dir / PID_FILE).read_text().strip() == str(os.getpid()):
                (state_dir / PID_FILE).unlink()
    return 0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sync_pipeline.sandbox.runner", description="Serve the three sandbox stand-ins until SIGTERM."
    )
    add_server_arguments(parser)
    return serve_forever(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
