"""A large file's create-only upload when S3 or IAM says no (issue 21), answered by botocore's Stubber.

moto's server does not enforce IAM, so the path where AWS refuses the abort of a multipart upload
can only be reproduced by scripting S3's answers: the complete is refused with 412 (the key exists,
a rerun of a finished run), then the abort with AccessDenied (a role without
s3:AbortMultipartUpload). The caller must still learn "already exists"; the parts left behind are
the buckets' lifecycle rule's to remove (tf/s3.tf).
"""
from __future__ import annotations

import logging

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from totesys_etl.adapters import s3

BUCKET, KEY, UPLOAD = "processed-bucket", "fact_sales_order/x.parquet", "upload-1"


@pytest.fixture
def stubbed(monkeypatch, tmp_path):
    """A stubbed client behind `s3.client()`, a threshold of 10 bytes and a 20-byte file (3 parts)."""
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 10)
    monkeypatch.setattr(s3, "PART_SIZE", 8)
    client = boto3.client("s3", region_name="eu-west-2", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setattr(s3, "client", lambda: client)
    path = tmp_path / "big"
    path.write_bytes(b"0123456789abcdefghij")
    with Stubber(client) as stubber:
        stubber.add_response("create_multipart_upload", {"UploadId": UPLOAD, "Bucket": BUCKET, "Key": KEY},
                             {"Bucket": BUCKET, "Key": KEY})
        for number in (1, 2, 3):
            stubber.add_response("upload_part", {"ETag": f'"etag{number}"'},
                                 {"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD, "PartNumber": number,
                                  "Body": ANY})
        yield stubber, str(path)
        stubber.assert_no_pending_responses()


@pytest.fixture
def s3_warnings(monkeypatch):
    """The WARNING records of `totesys_etl.s3`, caught on that logger itself.

    Not through caplog: caplog sees a record only if the package logger lets it through and passes
    it to the root, and that depends on what ran before (an in-process `totesys-etl` command or a
    module-scoped fixture leaves the package logger at CRITICAL, or not propagating).
    """
    logger = logging.getLogger("totesys_etl.s3")
    handler, level = _Records(logging.WARNING), logger.level
    logger.setLevel(logging.WARNING)  # its own level: whatever an ancestor's is does not count
    monkeypatch.setattr(logger, "disabled", False)
    logger.addHandler(handler)
    yield handler.records
    logger.removeHandler(handler)
    logger.setLevel(level)


class _Records(logging.Handler):
    def __init__(self, level: int):
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _complete_fails(stubber, code: str, status: int) -> None:
    parts = [{"ETag": f'"etag{n}"', "PartNumber": n} for n in (1, 2, 3)]
    stubber.add_client_error("complete_multipart_upload", service_error_code=code, http_status_code=status,
                             expected_params={"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD,
                                              "MultipartUpload": {"Parts": parts}, "IfNoneMatch": "*"})


def _abort_denied(stubber) -> None:
    stubber.add_client_error("abort_multipart_upload", service_error_code="AccessDenied", http_status_code=403,
                             expected_params={"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD})


def test_key_exists_and_abort_denied_is_still_already_exists(stubbed, s3_warnings):
    stubber, path = stubbed
    _complete_fails(stubber, "PreconditionFailed", 412)
    _abort_denied(stubber)
    assert s3.upload_file_create_only(BUCKET, KEY, path) is False
    assert any("AccessDenied" in r.getMessage() and r.levelname == "WARNING" for r in s3_warnings)


def test_key_exists_and_abort_allowed_is_already_exists(stubbed):
    stubber, path = stubbed
    _complete_fails(stubber, "PreconditionFailed", 412)
    stubber.add_response("abort_multipart_upload", {}, {"Bucket": BUCKET, "Key": KEY, "UploadId": UPLOAD})
    assert s3.upload_file_create_only(BUCKET, KEY, path) is False


def test_another_failure_raises_itself_whatever_the_abort_says(stubbed):
    stubber, path = stubbed
    _complete_fails(stubber, "InternalError", 500)
    _abort_denied(stubber)
    with pytest.raises(ClientError) as error:
        s3.upload_file_create_only(BUCKET, KEY, path)
    assert error.value.response["Error"]["Code"] == "InternalError"
