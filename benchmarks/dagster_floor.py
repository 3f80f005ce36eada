"""Dagster's floor for a sensor-launched run, as a code location of its own (`benchmarks/event_latency.py` loads it
beside `sync_pipeline`): a sensor ticking as often as `stripe_to_netsuite_on_events` turns each trigger file into a
run of one trivial op, executed in process as the pipeline's sensor runs are; the op writes when it ran. Nothing in
it reads Stripe or NetSuite, so its latency is what the daemon, the run queue and a run's start cost alone."""

import os
import time
from pathlib import Path

import dagster as dg

from sync_pipeline.stripe_to_netsuite_sensor import DEFAULT_INTERVAL_SECONDS, SENSOR_RUN_CONFIG, TICK_SLACK_SECONDS

TRIGGER_DIR = "FLOOR_TRIGGER_DIR"


def _folder() -> Path:
    return Path(os.environ[TRIGGER_DIR])


@dg.op
def note_when_run(context: dg.OpExecutionContext) -> None:
    name = context.run.tags["floor/trigger"]
    (_folder() / f"{name}.done").write_text(repr(time.time()))


@dg.job
def floor_job() -> None:
    note_when_run()


@dg.sensor(
    job=floor_job,
    minimum_interval_seconds=max(1, DEFAULT_INTERVAL_SECONDS - TICK_SLACK_SECONDS),
    default_status=dg.DefaultSensorStatus.RUNNING,
)
def floor_on_trigger(context: dg.SensorEvaluationContext) -> dg.SensorResult:
    seen = set((context.cursor or "").split(",")) - {""}
    new = sorted(p.stem for p in _folder().glob("*.trigger") if p.stem not in seen)
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(run_key=name, run_config=SENSOR_RUN_CONFIG, tags={"floor/trigger": name}) for name in new
        ],
        cursor=",".join(sorted(seen | set(new))),
    )


defs = dg.Definitions(jobs=[floor_job], sensors=[floor_on_trigger])
