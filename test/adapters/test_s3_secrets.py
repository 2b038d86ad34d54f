import json
import uuid
import os

import boto3
import pytest

from totesys_etl.adapters import s3
from totesys_etl.adapters.secrets import read_database_secret
from totesys_etl.errors import SecretError


def test_large_files_go_up_in_parts_create_only(buckets, tmp_path, monkeypatch):
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(s3, "PART_SIZE", 5 * 1024 * 1024)
    path = tmp_path / "big"
    path.write_bytes(os.urandom(11 * 1024 * 1024))
    assert s3.upload_file_create_only(buckets[0], "k/big", str(path))
    assert not s3.upload_file_create_only(buckets[0], "k/big", str(path))
    assert s3.get_bytes(buckets[0], "k/big") == path.read_bytes()
    small = tmp_path / "small"
    small.write_bytes(b"x")
    assert s3.upload_file_create_only(buckets[0], "k/small", str(small))
    download = tmp_path / "back"
    s3.download(buckets[0], "k/small", str(download))
    assert download.read_bytes() == b"x"


def test_listing_copy_and_exists(buckets):
    for key in ("p/a", "p/b", "p/c", "q/a"):
        s3.put_create_only(buckets[0], key, key.encode())
    assert list(s3.list_keys(buckets[0], "p/", start_after="p/a")) == ["p/b", "p/c"]
    assert list(s3.list_keys(buckets[0], "p/", limit=1)) == ["p/a"]
    assert s3.copy_create_only(buckets[0], "p/a", buckets[1], "quarantine/p/a")
    assert not s3.copy_create_only(buckets[0], "p/b", buckets[1], "quarantine/p/a")
    assert s3.get_bytes(buckets[1], "quarantine/p/a") == b"p/a"
    assert s3.exists(buckets[0], "p/a") and not s3.exists(buckets[0], "p/zz")


def test_secrets_are_read_and_validated_without_showing_values(aws):
    sm = boto3.client("secretsmanager")
    tag = uuid.uuid4().hex[:8]  # the moto server is shared by the session: names of this test only
    good = {"host": "h", "port": 5432, "username": "u", "password": "Pa55word!", "dbname": "d"}
    sm.create_secret(Name=f"good-secret-{tag}", SecretString=json.dumps(good))
    sm.create_secret(Name=f"partial-secret-{tag}", SecretString=json.dumps({"host": "h", "password": "Pa55word!"}))
    sm.create_secret(Name=f"text-secret-{tag}", SecretString="Pa55word!")
    sm.create_secret(Name=f"nested-secret-{tag}", SecretString='{"password": "Pa55word!", "x": ' + "[" * 50_000)
    assert read_database_secret(f"good-secret-{tag}") == good
    for name, reason in ((f"partial-secret-{tag}", "lacks port, username, dbname"), (f"text-secret-{tag}", "not JSON"),
                         (f"nested-secret-{tag}", "nested too deep to decode"),
                         (f"missing-secret-{tag}", "ResourceNotFoundException")):
        with pytest.raises(SecretError, match=reason) as error:
            read_database_secret(name)
        assert "Pa55word!" not in str(error.value)
