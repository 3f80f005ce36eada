"""Failures of the whole connection, not of one record: credentials refused, permission denied.

A record-level problem goes to `sync_exceptions` and the batch goes on. An authentication or
permission failure is different: every further request would fail the same way, and quarantining
each record for it would bury the one thing to fix under thousands of rows. So the first one stops
the step at once, with one line naming the variables to check, and nothing is recorded against
the records. It is a `dg.Failure`, so Dagster shows that line as the step's error; outside Dagster
(benchmarks, tests) it is an ordinary exception with the same text.
"""

from __future__ import annotations

import dagster as dg


class AccessDenied(dg.Failure):
    """A system refused our credentials or a permission; nothing can sync until the configuration changes."""

    def __init__(self, system: str, line: str) -> None:
        # Retrying the step with the same credentials cannot help.
        super().__init__(description=line, allow_retries=False)
        self.system = system
        self.line = line

    def __str__(self) -> str:
        return self.line
