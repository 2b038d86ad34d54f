"""A create-only write that meets S3's 409 ConditionalRequestConflict (issue 27), answered by botocore's Stubber.

In real S3 a 409 on a conditional write means another write of the same key is still in flight,
and that write may fail: the key may never exist. moto never answers 409, so S3's answers are
scripted. The write is retried with backoff; when the conflict outlasts the retries, HEAD decides:
the key is there ("already exists", False) or it is not (the 409 is raised, so no manifest names
a file that is missing). A 412 still means "already exists" at once.
"""
from __future__ import annotations

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from totesys_etl.adapters import s3

BUCKET, KEY, SOURCE = "processed-bucket", "_runs/20250101T000000000000Z.json", "quarantine/original.csv"
DELAYS = (0.25, 0.5, 1.0)


@pytest.fixture
def stubber(monkeypatch):
    """A stubbed client behind `s3.client()`, three backoff delays, and the sleeps they cause."""
    client = boto3.client("s3", region_name="eu-west-2", endpoint_url="http://127.0.0.1:9")
    monkeypatch.setattr(s3, "client", lambda: client)
    monkeypatch.setattr(s3, "CONFLICT_DELAYS", DELAYS)
    slept = []
    monkeypatch.setattr(s3.time, "sleep", slept.append)
    with Stubber(client) as stub:
        stub.slept = slept
        yield stub
        stub.assert_no_pending_responses()


def _put(stub, outcome: tuple[str, int] | None = None) -> None:
    params = {"Bucket": BUCKET, "Key": KEY, "Body": ANY, "ContentType": "application/json", "IfNoneMatch": "*"}
    if outcome is None:
        stub.add_response("put_object", {"ETag": '"e"'}, params)
    else:
        stub.add_client_error("put_object", service_error_code=outcome[0], http_status_code=outcome[1],
                              expected_params=params)


def _head(stub, present: bool) -> None:
    if present:
        stub.add_response("head_object", {"ContentLength": 2}, {"Bucket": BUCKET, "Key": KEY})
    else:
        stub.add_client_error("head_object", service_error_code="404", http_status_code=404,
                              expected_params={"Bucket": BUCKET, "Key": KEY})


CONFLICT = ("ConditionalRequestConflict", 409)


def test_a_conflict_that_clears_is_retried_with_backoff_and_written(stubber):
    _put(stubber, CONFLICT)
    _put(stubber, CONFLICT)
    _put(stubber)
    assert s3.put_json_create_only(BUCKET, KEY, {"run_id": "x"}) is True
    assert stubber.slept == [0.25, 0.5]


def test_a_conflict_then_412_means_the_other_write_finished(stubber):
    _put(stubber, CONFLICT)
    _put(stubber, ("PreconditionFailed", 412))
    assert s3.put_json_create_only(BUCKET, KEY, {}) is False
    assert stubber.slept == [0.25]


def test_a_lasting_conflict_with_the_key_present_is_already_exists(stubber):
    for _ in range(len(DELAYS) + 1):
        _put(stubber, CONFLICT)
    _head(stubber, present=True)
    assert s3.put_json_create_only(BUCKET, KEY, {}) is False
    assert stubber.slept == list(DELAYS)


def test_a_lasting_conflict_with_the_key_absent_raises(stubber):
    """The other write never completed: "already exists" would be a lie, so the write fails."""
    for _ in range(len(DELAYS) + 1):
        _put(stubber, CONFLICT)
    _head(stubber, present=False)
    with pytest.raises(ClientError) as raised:
        s3.put_json_create_only(BUCKET, KEY, {})
    assert raised.value.response["Error"]["Code"] == "ConditionalRequestConflict"


def test_412_is_already_exists_at_once(stubber):
    _put(stubber, ("PreconditionFailed", 412))
    assert s3.put_json_create_only(BUCKET, KEY, {}) is False
    assert stubber.slept == []


def test_another_error_is_raised_without_retrying(stubber):
    _put(stubber, ("AccessDenied", 403))
    with pytest.raises(ClientError):
        s3.put_json_create_only(BUCKET, KEY, {})
    assert stubber.slept == []


def test_a_copy_meeting_a_conflict_is_retried(stubber):
    _head(stubber, present=False)  # copy_create_only looks first (moto ignores IfNoneMatch on copies)
    stubber.add_response("head_object", {"ContentLength": 2, "ETag": '"s"'}, {"Bucket": BUCKET, "Key": SOURCE})
    params = {"Bucket": BUCKET, "Key": KEY, "CopySource": {"Bucket": BUCKET, "Key": SOURCE}, "IfNoneMatch": "*"}
    stubber.add_client_error("copy_object", service_error_code=CONFLICT[0], http_status_code=CONFLICT[1],
                             expected_params=params)
    stubber.add_response("copy_object", {"CopyObjectResult": {"ETag": '"e"'}}, params)
    assert s3.copy_create_only(BUCKET, SOURCE, BUCKET, KEY) is True
    assert stubber.slept == [0.25]


def test_a_multipart_upload_meeting_a_conflict_starts_again_and_completes(stubber, monkeypatch, tmp_path):
    """After a 409 on complete, S3 wants a new upload: the old one is aborted, every part sent again."""
    monkeypatch.setattr(s3, "MULTIPART_THRESHOLD", 10)
    monkeypatch.setattr(s3, "PART_SIZE", 8)
    path = tmp_path / "big"
    path.write_bytes(b"0123456789abcdef")  # 2 parts
    for attempt, upload in enumerate(("upload-1", "upload-2")):
        stubber.add_response("create_multipart_upload", {"UploadId": upload, "Bucket": BUCKET, "Key": KEY},
                             {"Bucket": BUCKET, "Key": KEY})
        for number in (1, 2):
            stubber.add_response("upload_part", {"ETag": f'"{upload}-{number}"'},
                                 {"Bucket": BUCKET, "Key": KEY, "UploadId": upload, "PartNumber": number,
                                  "Body": ANY})
        complete = {"Bucket": BUCKET, "Key": KEY, "UploadId": upload, "IfNoneMatch": "*",
                    "MultipartUpload": {"Parts": [{"ETag": f'"{upload}-{n}"', "PartNumber": n} for n in (1, 2)]}}
        if attempt == 0:
            stubber.add_client_error("complete_multipart_upload", service_error_code=CONFLICT[0],
                                     http_status_code=CONFLICT[1], expected_params=complete)
            stubber.add_response("abort_multipart_upload", {},
                                 {"Bucket": BUCKET, "Key": KEY, "UploadId": upload})
        else:
            stubber.add_response("complete_multipart_upload", {"ETag": '"whole"'}, complete)
    assert s3.upload_file_create_only(BUCKET, KEY, str(path)) is True
    assert stubber.slept == [0.25]
