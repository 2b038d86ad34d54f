"""The ingest stage: changed rows of the eleven totesys tables -> CSV in the ingested bucket.

`handler.lambda_handler` is the Lambda entry point; `run.ingest` does the work; `extract` holds
the SQL that finds what changed since the previous run; `watermark` reads and describes the
previous run's state, which lives only in the lake.
"""
