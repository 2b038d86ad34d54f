"""The FX rates source (contract §9 "FX rates API"): the HTTP client, the check of each answer, and the
day-by-day rows with carried days, as pure functions over the pages the client returns.

The ingest stage drives it (ingest/fx.py); reconcile uses the same client and the same rows to
compare the warehouse with what the API serves. Nothing here touches S3 or PostgreSQL.
"""
