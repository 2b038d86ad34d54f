"""Database credentials from Secrets Manager, in the RDS/awswrangler JSON shape (contract §5).

A Lambda container serves many invocations: the client is built once per endpoint, and a secret
is kept for CACHE_SECONDS, so a warm invocation pays no Secrets Manager call while a rotated
secret still reaches every container within minutes.
"""
from __future__ import annotations

import os
import time
from functools import lru_cache

import botocore.session
from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl.errors import SecretError, parse_json

_FIELDS = ("host", "port", "username", "password", "dbname")
#: How long a container keeps a secret it read (AWS's own caching clients default to an hour).
CACHE_SECONDS = 300.0
_cache: dict[tuple[str | None, str], tuple[float, dict]] = {}


@lru_cache(maxsize=4)
def _client(endpoint: str | None):
    return botocore.session.get_session().create_client("secretsmanager")  # botocore's: see s3._client


def read_database_secret(secret_id: str) -> dict:
    """The secret's JSON as a dict with every field contract §5 names; SecretError otherwise.

    The error names the secret id and what is wrong with it, never its value. A secret read less
    than CACHE_SECONDS ago by this process is served from memory.
    """
    endpoint = os.environ.get("AWS_ENDPOINT_URL")
    cached = _cache.get((endpoint, secret_id))
    if cached and time.monotonic() < cached[0]:
        return dict(cached[1])
    secret = _fetch(endpoint, secret_id)
    _cache[(endpoint, secret_id)] = (time.monotonic() + CACHE_SECONDS, secret)
    return dict(secret)


def clear_cache() -> None:
    """Forget every secret read so far and the client, as a new container starts (tests use it)."""
    _cache.clear()
    _client.cache_clear()


def _fetch(endpoint: str | None, secret_id: str) -> dict:
    try:
        value = _client(endpoint).get_secret_value(SecretId=secret_id)["SecretString"]
    except ClientError as e:
        raise SecretError(f"secret {secret_id!r}: {e.response['Error'].get('Code', 'error')}") from None
    except BotoCoreError as e:
        raise SecretError(f"secret {secret_id!r}: {type(e).__name__}") from None
    if not isinstance(value, str):  # no SecretString: a binary secret
        raise SecretError(f"secret {secret_id!r} is not JSON")
    # JSON's errors name a position, never the text: the reason holds nothing of the value
    secret = parse_json(value, f"secret {secret_id!r}", SecretError)
    missing = [f for f in _FIELDS if not isinstance(secret, dict) or f not in secret]
    if missing:
        raise SecretError(f"secret {secret_id!r} lacks {', '.join(missing)}")
    return secret
