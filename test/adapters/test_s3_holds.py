"""`s3.holds`: does a taken key hold exactly these bytes? (a create-only write's own earlier attempt)."""
import os

import pytest

from totesys_etl.adapters import s3


@pytest.mark.parametrize("size", [0, 10, 5 * 1024 * 1024 + 3])
def test_a_key_holds_the_bytes_written_and_not_others(buckets, tmp_path, monkeypatch, size):
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 5 * 1024 * 1024)  # the largest size goes up in parts
    monkeypatch.setattr(s3, "PART_SIZE", 5 * 1024 * 1024)
    path, other = tmp_path / "a.csv", tmp_path / "b.csv"
    data = os.urandom(size)
    path.write_bytes(data)
    other.write_bytes(data[:-1] + bytes([data[-1] ^ 1]) if size else b"x")
    assert s3.upload_file_create_only(buckets[0], "k", str(path))
    assert s3.holds(buckets[0], "k", path=str(path))
    assert not s3.holds(buckets[0], "k", path=str(other))
    assert s3.holds(buckets[0], "k", body=data) == (size <= s3.MULTIPART_THRESHOLD)


def test_a_json_document_is_held_only_byte_for_byte(buckets):
    assert s3.put_json_create_only(buckets[0], "m.json", {"b": 1, "a": [1, 2]})
    assert s3.holds(buckets[0], "m.json", body=s3.json_body({"a": [1, 2], "b": 1}))
    assert not s3.holds(buckets[0], "m.json", body=s3.json_body({"a": [1, 2], "b": 2}))
