"""A container reads each secret once per CACHE_SECONDS (warm invocations pay no Secrets Manager call)."""
import json
import uuid

import boto3

from totesys_etl.adapters import secrets


def _count_calls(endpoint: str) -> list[str]:
    calls: list[str] = []
    client = secrets._client(endpoint)
    client.meta.events.register("before-call.secrets-manager.GetSecretValue",
                                lambda **kwargs: calls.append("GetSecretValue"))
    return calls


def test_a_secret_is_read_once_per_cache_period_and_again_after_it(aws, monkeypatch):
    name = f"db-{uuid.uuid4().hex[:8]}"
    value = {"host": "h", "port": 5432, "username": "u", "password": "first", "dbname": "d"}
    sm = boto3.client("secretsmanager")
    sm.create_secret(Name=name, SecretString=json.dumps(value))
    calls = _count_calls(aws.endpoint)
    now = [1000.0]
    monkeypatch.setattr(secrets.time, "monotonic", lambda: now[0])
    assert secrets.read_database_secret(name)["password"] == "first"
    sm.put_secret_value(SecretId=name, SecretString=json.dumps({**value, "password": "rotated"}))
    now[0] += secrets.CACHE_SECONDS - 1
    assert secrets.read_database_secret(name)["password"] == "first"  # warm: from memory
    assert calls == ["GetSecretValue"]
    now[0] += 2
    assert secrets.read_database_secret(name)["password"] == "rotated"  # expired: read again
    assert calls == ["GetSecretValue", "GetSecretValue"]


def test_a_caller_cannot_change_the_cached_secret(aws):
    name = f"db-{uuid.uuid4().hex[:8]}"
    boto3.client("secretsmanager").create_secret(Name=name, SecretString=json.dumps(
        {"host": "h", "port": 1, "username": "u", "password": "p", "dbname": "d"}))
    secrets.read_database_secret(name)["password"] = "changed"
    assert secrets.read_database_secret(name)["password"] == "p"
