"""The Salesforce set-up in README.md matches what the pipeline writes, so an admin who follows it gets an org
the write-back works with."""

from __future__ import annotations

import re
from pathlib import Path

from sync_pipeline.mapping.salesforce_writeback import REASON_FIELD, STATUS_MEANINGS

ROOT = Path(__file__).resolve().parents[2]


def _readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"### {title}")
    end = text.find("\n## ", start)
    return text[start:end]


def test_the_readme_lists_every_billing_status_with_the_meaning_the_pipeline_uses():
    section = _readme_section("Setting up Salesforce")
    rows = dict(re.findall(r"^\| ([A-Z][A-Za-z ]+) \| (.+) \|$", section, flags=re.MULTILINE))
    assert {k: rows.get(k) for k in STATUS_MEANINGS} == STATUS_MEANINGS


def test_the_readme_lists_every_field_the_write_back_sets():
    section = _readme_section("Setting up Salesforce")
    written = {
        "Stripe_Customer_Id__c",
        "Stripe_Subscription_Id__c",
        "Stripe_Invoice_Id__c",
        "Billing_Status__c",
        REASON_FIELD,
    }
    assert {f for f in written if f"`{f}`" not in section} == set()
