"""The writers: the I/O half of each sync, one module per system written to.

- `netsuite`: validated NetSuite records upserted by external id (Stripe → NetSuite);
- `stripe_billing`: Closed-Won Salesforce opportunities billed once in Stripe (Salesforce → Stripe);
- `salesforce_writeback`: Stripe and NetSuite ids and the billing status written back onto Salesforce.

Each takes its clients and the ledger as arguments (so it runs the same under Dagster, in a benchmark
or in a test) and books what it did with every record in one `report.Report`. The pure half is
`mapping/` and `schemas/`; the Dagster assets in `assets/` only wire these together.
"""
