"""Sensor runs sync only the documents their events name: the run's scope.

An event names a root document (an invoice, an invoice-less charge, a payout) or leads to one; a customer event
names the customer, whose documents of that day are then synced. The sensor gives a run the ids of its partition's
documents (`only_ids`, run config of the three extract assets). Each extract asset takes the ids it handles and
fetches just those documents, by id, with the same expansions as its list call and through the resource's retry
policy, and builds the same trees; mapping, plan, writers, ledger and checks then work on that subset unchanged.
So a sensor run costs what its events name, not what its day holds.

A run is a whole day when:
- no id is given (`only_ids` absent: the schedule, a backfill, the UI's launchpad, a catch-up after the sensor was
  off), or
- an event names no document the extract can fetch by id (a refund naming only a PaymentIntent Stripe has not
  tied to a charge yet), or
- the partition's events name more than `max_documents()` documents (SYNC_EVENT_RUN_MAX_DOCUMENTS, 500 by
  default): one list call per hundred documents is then cheaper than one retrieve per document.

A partial run's outputs are that run's own files (`io_managers.py`): the day's Parquet files stay the last whole
day's, so a later reader of the day (a re-run of one asset, `plan`, `reconcile`) never takes a subset for the day.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
from pydantic import Field

from sync_pipeline import settings

# The extract assets that take a scope.
SCOPED_ASSETS = ("stripe_invoices", "stripe_charges", "stripe_payouts")
SCOPE_TAG = "sync_pipeline/scope"
WHOLE_DAY = "day"
MAX_DOCUMENTS_SETTING = "SYNC_EVENT_RUN_MAX_DOCUMENTS"

INVOICE_PREFIXES = ("in_",)
CHARGE_PREFIXES = ("ch_", "py_")
CUSTOMER_PREFIXES = ("cus_",)
PAYOUT_PREFIXES = ("po_",)


class EventScope(dg.Config):
    """Run config of an extract asset: which of the day's documents this run syncs."""

    only_ids: list[str] | None = Field(
        default=None,
        description="Stripe ids of the day's documents to sync: invoices (in_), charges (ch_), customers (cus_: "
        "their documents of the day) and payouts (po_). Absent: the whole day.",
    )

    def ids(self, prefixes: Sequence[str]) -> list[str] | None:
        """The ids of one kind, in order and each once; None for a whole-day run."""
        if self.only_ids is None:
            return None
        return list(dict.fromkeys(i for i in self.only_ids if i.startswith(tuple(prefixes))))

    @property
    def partial(self) -> bool:
        return self.only_ids is not None


def max_documents(environ: Mapping[str, str] | None = None) -> int:
    """Above this many documents in one partition a sensor run syncs the whole day (0: always whole days)."""
    return int(settings.get(MAX_DOCUMENTS_SETTING, environ) or 0)


def bounded(documents: Iterable[str] | None, limit: int) -> list[str] | None:
    """The scope of one partition's run: its documents in a stable order, or None (the whole day) when some event
    named none (`documents` None) or when there are more than `limit`."""
    if documents is None:
        return None
    ids = sorted(set(documents))
    if not ids or len(ids) > limit:
        return None
    return ids


def scoped_run_config(base: Mapping[str, Any], ids: Sequence[str] | None) -> dict:
    """`base` (the sensor's executor config) with the scope of each extract asset; unchanged for a whole day. Op
    names are the assets' own names for every Stripe account (a key prefix leaves them as they are, and each
    account's job holds only its own assets)."""
    if ids is None:
        return dict(base)
    return {**base, "ops": {asset: {"config": {"only_ids": list(ids)}} for asset in SCOPED_ASSETS}}


def scope_tag(ids: Sequence[str] | None) -> str:
    """The run's scope in words, for the runs list: `day`, or how many documents and the first few ids."""
    if ids is None:
        return WHOLE_DAY
    shown = ", ".join(ids[:5]) + (f", +{len(ids) - 5} more" if len(ids) > 5 else "")
    return f"{len(ids)} document(s): {shown}"


def is_partial_run(run_config: Mapping[str, Any] | None) -> bool:
    """Whether a run's config gives any extract asset a scope (its outputs are then that run's own)."""
    ops = (run_config or {}).get("ops") or {}
    return any(isinstance(op, Mapping) and (op.get("config") or {}).get("only_ids") is not None for op in ops.values())


def scope_metadata(scope: EventScope, documents: int, day: str) -> dict[str, Any]:
    """What an extract asset of a partial run adds to its materialization."""
    if not scope.partial:
        return {"scope": WHOLE_DAY}
    return {
        "scope": "partial",
        "ids_named": len(scope.only_ids or ()),
        "scope_description": f"partial run: {documents} document(s) of {day} named by Stripe events; the day's "
        "other documents were not read and stay as the last run left them",
    }
