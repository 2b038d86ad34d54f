"""The only modules that talk to S3, Secrets Manager and PostgreSQL. They know no stage."""
