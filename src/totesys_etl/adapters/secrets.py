"""Database credentials from Secrets Manager, in the RDS/awswrangler JSON shape (SPEC §5)."""
from __future__ import annotations

import json

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl.errors import SecretError

_FIELDS = ("host", "port", "username", "password", "dbname")


def read_database_secret(secret_id: str) -> dict:
    """The secret's JSON as a dict with every field SPEC §5 names; SecretError otherwise.

    The error names the secret id and what is wrong with it, never its value.
    """
    try:
        value = boto3.client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as e:
        raise SecretError(f"secret {secret_id!r}: {e.response['Error'].get('Code', 'error')}") from None
    except BotoCoreError as e:
        raise SecretError(f"secret {secret_id!r}: {type(e).__name__}") from None
    try:
        secret = json.loads(value)
    except (TypeError, ValueError):
        raise SecretError(f"secret {secret_id!r} is not JSON") from None
    missing = [f for f in _FIELDS if not isinstance(secret, dict) or f not in secret]
    if missing:
        raise SecretError(f"secret {secret_id!r} lacks {', '.join(missing)}")
    return secret
