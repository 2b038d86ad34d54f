"""The processor: an ingested run's CSVs become typed Parquet for the loader (contract §3, §4).

`handler.lambda_handler` adapts Lambda events; `run.process_run` and `run.sweep` do the work;
`read` checks what the ingestor wrote, `transform` derives lake rows from the declarations,
`rows` holds back the rows that do not fit (the rest of their file goes on).
"""
