"""A server-side copy larger than CopyObject takes (S3 refuses a source over 5 GiB): copied in parts.

Against moto's server with the threshold lowered: the copy is the original byte for byte, made of
parts, and create-only like every write (a key that exists stays as it is, and the upload that met
it is aborted). S3's answer to an original replaced mid-copy (412 on a part, which moto never gives)
is scripted with botocore's Stubber: it must never read as "the key already exists".
"""
from __future__ import annotations

import os

import boto3
import pytest
from botocore.stub import Stubber

from totesys_etl.adapters import s3
from totesys_etl.errors import LakeUnavailable

MiB = 1024 * 1024


@pytest.fixture
def small_parts(monkeypatch):
    """Objects over 1 MiB copied in 5 MiB parts (S3's smallest part but the last, which moto enforces)."""
    monkeypatch.setattr(s3, "COPY_THRESHOLD", MiB)
    monkeypatch.setattr(s3, "COPY_PART_SIZE", 5 * MiB)


def test_an_object_over_the_threshold_is_copied_in_parts_byte_for_byte(buckets, small_parts):
    source, target = buckets
    body = os.urandom(11 * MiB)
    raw = boto3.client("s3")
    raw.put_object(Bucket=source, Key="big.json", Body=body)
    assert s3.copy_create_only(source, "big.json", target, "quarantine/big.json") is True
    copied = raw.get_object(Bucket=target, Key="quarantine/big.json")
    assert copied["Body"].read() == body
    assert copied["ETag"].strip('"').endswith("-3")  # three parts: 5, 5 and 1 MiB
    assert raw.get_object(Bucket=source, Key="big.json")["Body"].read() == body  # the original stays


def test_the_copy_in_parts_is_create_only(buckets, small_parts):
    """The key checked first (`exists`), and again by the complete's IfNoneMatch: a copy racing
    another that finished first leaves that one as it is, and aborts its own upload."""
    source, target = buckets
    raw = boto3.client("s3")
    raw.put_object(Bucket=source, Key="big.json", Body=os.urandom(6 * MiB))
    raw.put_object(Bucket=target, Key="quarantine/big.json", Body=b"there first")
    assert s3.copy_create_only(source, "big.json", target, "quarantine/big.json") is False
    head = raw.head_object(Bucket=source, Key="big.json")
    assert s3._create_only(target, "quarantine/big.json", lambda: s3._multipart_copy(
        source, "big.json", head["ETag"], head["ContentLength"], target, "quarantine/big.json")) is False
    assert raw.get_object(Bucket=target, Key="quarantine/big.json")["Body"].read() == b"there first"
    assert raw.list_multipart_uploads(Bucket=target).get("Uploads", []) == []


def test_an_original_replaced_mid_copy_fails_the_copy_and_is_never_taken_for_an_existing_key(monkeypatch):
    monkeypatch.setattr(s3, "COPY_THRESHOLD", 4)  # an 8-byte original, one part: S3's answers in a fixed order
    client = boto3.client("s3", region_name="eu-west-2", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setattr(s3, "client", lambda: client)
    with Stubber(client) as stub:
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404,
                              expected_params={"Bucket": "p", "Key": "quarantine/x"})
        stub.add_response("head_object", {"ContentLength": 8, "ETag": '"v1"'}, {"Bucket": "l", "Key": "x"})
        stub.add_response("create_multipart_upload", {"UploadId": "u"}, {"Bucket": "p", "Key": "quarantine/x"})
        stub.add_client_error("upload_part_copy", service_error_code="PreconditionFailed", http_status_code=412,
                              expected_params={"Bucket": "p", "Key": "quarantine/x", "UploadId": "u", "PartNumber": 1,
                                               "CopySource": {"Bucket": "l", "Key": "x"}, "CopySourceIfMatch": '"v1"',
                                               "CopySourceRange": "bytes=0-7"})
        stub.add_response("abort_multipart_upload", {}, {"Bucket": "p", "Key": "quarantine/x", "UploadId": "u"})
        with pytest.raises(LakeUnavailable, match="changed while it was copied"):
            s3.copy_create_only("l", "x", "p", "quarantine/x")
        stub.assert_no_pending_responses()
