"""The loader: processed runs into the star schema, one transaction per run, under one lock.

`handler.lambda_handler` is the Lambda face; `run.load` is what it calls (and what tests and the
local runtime call too); `migrations` keeps the warehouse schema; `ledger` is the record of
loaded runs and the sweep's low-water mark; `merge` is the SQL that folds a run into the star;
`files` streams a run's Parquet into PostgreSQL and quarantines what cannot be read.
"""
