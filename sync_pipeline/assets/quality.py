"""The exceptions report: every record that could not be synced, why, and how to fix it."""


import dagster as dg
import pandas as pd

from sync_pipeline.partitions import DECLARED_DAILY_PARTITIONS
from sync_pipeline.resources.ledger import LedgerResource

EXCEPTION_COLUMNS = ["target", "record_type", "external_id", "source_id", "partition_key", "field", "value",
                     "error_code", "message", "fix", "first_seen_at", "last_seen_at", "occurrences", "run_id"]


@dg.asset(
    group_name="quality",
    partitions_def=DECLARED_DAILY_PARTITIONS,
    deps=["netsuite_customers", "netsuite_invoices", "netsuite_customer_payments", "netsuite_credit_memos",
          "netsuite_customer_refunds"],
    description="The partition's open sync exceptions (from the ledger's exceptions table): record, field, value, "
                "error and the fix in words. `sync-pipeline exceptions` lists all partitions.",
)
def sync_exceptions(context: dg.AssetExecutionContext, ledger: LedgerResource) -> pd.DataFrame:
    rows = ledger.get_ledger().open_exceptions(partition_key=context.partition_key)
    frame = pd.DataFrame(rows, columns=["id", *EXCEPTION_COLUMNS, "resolved_at"]).drop(columns=["id", "resolved_at"])
    by_code = frame.groupby("error_code").size().to_dict() if len(frame) else {}
    context.add_output_metadata(
        {
            "open_exceptions": len(frame),
            "by_error_code": dg.MetadataValue.json({k: int(v) for k, v in by_code.items()}),
            "first_exceptions": dg.MetadataValue.md(
                frame.head(20)[["record_type", "external_id", "field", "error_code", "fix"]].to_markdown(index=False)
                if len(frame) else "No open exceptions."
            ),
        }
    )
    return frame
