"""`s3.GrowingUpload`: a big file goes up in parts while it is still being written (issue 23).

Against moto's server, whose smallest part is 5 MB as in S3: parts are uploaded before the
writer has finished, the object is byte for byte the file with the ETag `upload_file_create_only`
would give it (so `holds` recognises it), a taken key is left alone, and an abandoned upload
leaves nothing open. S3's 409 on completion, which moto never answers, is scripted with Stubber.
"""
from __future__ import annotations

import os
import time

import boto3
import pytest
from botocore.stub import ANY, Stubber

from totesys_etl.adapters import s3

MB = 1024 * 1024


@pytest.fixture
def small_parts(monkeypatch):
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 6 * MB)
    monkeypatch.setattr(s3, "PART_SIZE", 5 * MB)


def _write(path, data: bytes, upload: s3.GrowingUpload, step: int = MB) -> None:
    """Write `data` as COPY would, reporting the flushed size after each `step`."""
    with open(path, "wb") as f:
        for start in range(0, len(data), step):
            f.write(data[start:start + step])
            f.flush()
            upload.grown(start + len(data[start:start + step]))


def _open_uploads(bucket: str) -> list:
    return boto3.client("s3").list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _parts_uploaded(bucket: str, key: str) -> int:
    uploads = [u for u in _open_uploads(bucket) if u["Key"] == key]
    if not uploads:
        return 0
    return len(boto3.client("s3").list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", []))


def test_parts_go_up_while_the_file_grows_and_the_object_is_the_file(buckets, tmp_path, small_parts):
    path, data = tmp_path / "t.csv", os.urandom(17 * MB + 123)
    upload = s3.GrowingUpload(buckets[0], "t/t.csv", str(path))
    _write(path, data[:16 * MB], upload)            # the writer has not finished
    deadline = time.monotonic() + 30
    while _parts_uploaded(buckets[0], "t/t.csv") < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _parts_uploaded(buckets[0], "t/t.csv") == 3   # 15 MB sent before the end of the file
    with open(path, "ab") as f:
        f.write(data[16 * MB:])
    assert upload.finish() is True
    assert boto3.client("s3").get_object(Bucket=buckets[0], Key="t/t.csv")["Body"].read() == data
    assert s3.holds(buckets[0], "t/t.csv", path=str(path))      # the ETag upload_file_create_only gives
    assert s3.head(buckets[0], "t/t.csv")["etag"].endswith("-4")
    assert _open_uploads(buckets[0]) == []


def test_a_file_that_stays_small_is_one_put(buckets, tmp_path, small_parts):
    path, data = tmp_path / "s.csv", os.urandom(2 * MB)
    upload = s3.GrowingUpload(buckets[0], "s.csv", str(path))
    _write(path, data, upload)
    assert upload.finish() is True
    assert "-" not in s3.head(buckets[0], "s.csv")["etag"] and s3.holds(buckets[0], "s.csv", body=data)


def test_a_key_already_taken_is_left_as_it_is_and_no_upload_stays_open(buckets, tmp_path, small_parts):
    s3.put_create_only(buckets[0], "k.csv", b"someone else's")
    path = tmp_path / "k.csv"
    upload = s3.GrowingUpload(buckets[0], "k.csv", str(path))
    _write(path, os.urandom(12 * MB), upload)
    assert upload.finish() is False
    assert s3.get_bytes(buckets[0], "k.csv") == b"someone else's"
    assert _open_uploads(buckets[0]) == []


def test_an_abandoned_upload_leaves_no_object_and_no_open_upload(buckets, tmp_path, small_parts):
    path = tmp_path / "a.csv"
    upload = s3.GrowingUpload(buckets[0], "a.csv", str(path))
    _write(path, os.urandom(12 * MB), upload)
    upload.abandon()
    assert not s3.exists(buckets[0], "a.csv")
    assert _open_uploads(buckets[0]) == []


def test_a_conflict_on_completion_aborts_then_uploads_the_whole_file_again(monkeypatch, tmp_path):
    """S3's 409 (another write of the key in flight): as for any create-only write, back off, then again."""
    client = boto3.client("s3", region_name="eu-west-2", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setattr(s3, "client", lambda: client)
    monkeypatch.setattr(s3, "CONFLICT_DELAYS", (0.25,))
    slept: list[float] = []
    monkeypatch.setattr(s3.time, "sleep", slept.append)
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 10)
    monkeypatch.setattr(s3, "PART_SIZE", 8)
    bucket, key, path = "b", "k.csv", tmp_path / "k.csv"
    with Stubber(client) as stub:
        for attempt, upload_id in enumerate(("growing", "whole")):
            stub.add_response("create_multipart_upload", {"UploadId": upload_id}, {"Bucket": bucket, "Key": key})
            for number in (1, 2):
                stub.add_response("upload_part", {"ETag": f'"{upload_id}-{number}"'},
                                  {"Bucket": bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                                   "Body": ANY})
            complete = {"Bucket": bucket, "Key": key, "UploadId": upload_id, "IfNoneMatch": "*",
                        "MultipartUpload": {"Parts": [{"ETag": f'"{upload_id}-{n}"', "PartNumber": n}
                                                      for n in (1, 2)]}}
            if attempt == 0:
                stub.add_client_error("complete_multipart_upload", service_error_code="ConditionalRequestConflict",
                                      http_status_code=409, expected_params=complete)
                stub.add_response("abort_multipart_upload", {}, {"Bucket": bucket, "Key": key, "UploadId": upload_id})
            else:
                stub.add_response("complete_multipart_upload", {"ETag": '"whole"'}, complete)
        upload = s3.GrowingUpload(bucket, key, str(path))
        _write(path, b"0123456789abcdef", upload, step=16)
        assert upload.finish() is True
        stub.assert_no_pending_responses()
    assert slept == [0.25]
