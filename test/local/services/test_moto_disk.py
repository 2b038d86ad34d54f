"""moto's server with S3 on disk (`moto_disk.py`): what a `kill -9` must not lose, and what must come
back exactly as it was (ETags above all: courier markers are keyed by them)."""
from __future__ import annotations

import os
import signal
import time

import boto3
import pytest

from totesys_etl.local.services.moto_disk import s3_write
from totesys_etl.local.services.servers import MotoServer, free_port

REGION = "eu-west-2"


def client(server: MotoServer, service: str = "s3"):
    return boto3.client(service, endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id="x",
                        aws_secret_access_key="x")


def listing(s3) -> dict:
    return {o["Key"]: (o["ETag"], o["LastModified"], o["Size"]) for o in s3.list_objects_v2(Bucket="lake")["Contents"]}


def kill_and_restart(server: MotoServer, data) -> MotoServer:
    os.kill(server.pid, signal.SIGKILL)
    for _ in range(100):
        if not server.is_running():
            break
        time.sleep(0.05)
    return MotoServer.start(port=free_port(server.port), data_dir=data)


@pytest.fixture
def data(tmp_path):
    return tmp_path / "s3"


def test_a_killed_server_comes_back_with_every_acknowledged_object_exactly(data):
    server = MotoServer.start(data_dir=data)
    try:
        s3 = client(server)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_object(Bucket="lake", Key="a/é x+y.csv", Body=b"hello", Metadata={"run": "1"}, ContentType="text/csv")
        upload = s3.create_multipart_upload(Bucket="lake", Key="big")["UploadId"]
        parts = [s3.upload_part(Bucket="lake", Key="big", UploadId=upload, PartNumber=n, Body=body)["ETag"]
                 for n, body in ((1, b"x" * 5 * 1024 * 1024), (2, b"y"))]
        s3.complete_multipart_upload(Bucket="lake", Key="big", UploadId=upload, MultipartUpload={
            "Parts": [{"PartNumber": n, "ETag": etag} for n, etag in enumerate(parts, 1)]})
        unfinished = s3.create_multipart_upload(Bucket="lake", Key="half")["UploadId"]
        s3.upload_part(Bucket="lake", Key="half", UploadId=unfinished, PartNumber=1, Body=b"z")
        for key in ("gone", "gone-too", "kept"):
            s3.put_object(Bucket="lake", Key=key, Body=key.encode())
        s3.put_object(Bucket="lake", Key="kept", Body=b"second version")
        s3.delete_object(Bucket="lake", Key="gone")
        s3.delete_objects(Bucket="lake", Delete={"Objects": [{"Key": "gone-too"}]})
        before = listing(s3)
        assert set(before) == {"a/é x+y.csv", "big", "kept"} and before["big"][0].endswith('-2"')

        server = kill_and_restart(server, data)
        s3 = client(server)
        assert listing(s3) == before
        head = s3.head_object(Bucket="lake", Key="a/é x+y.csv")
        assert (head["Metadata"], head["ContentType"]) == ({"run": "1"}, "text/csv")
        assert s3.get_object(Bucket="lake", Key="kept")["Body"].read() == b"second version"
        assert s3.get_object(Bucket="lake", Key="big")["Body"].read() == b"x" * 5 * 1024 * 1024 + b"y"
        with pytest.raises(s3.exceptions.ClientError) as exists:  # create-only writes still refuse
            s3.put_object(Bucket="lake", Key="big", Body=b"other", IfNoneMatch="*")
        assert exists.value.response["Error"]["Code"] == "PreconditionFailed"
    finally:
        server.stop()


def test_notifications_are_configured_again_and_reach_a_queue_made_after_the_restart(data):
    server = MotoServer.start(data_dir=data)
    try:
        s3, sqs = client(server), client(server, "sqs")
        s3.create_bucket(Bucket="runs", CreateBucketConfiguration={"LocationConstraint": REGION})
        url = sqs.create_queue(QueueName="runs-manifests")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(Bucket="runs", NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})

        server = kill_and_restart(server, data)
        s3, sqs = client(server), client(server, "sqs")
        assert [c["QueueArn"] for c in s3.get_bucket_notification_configuration(Bucket="runs")["QueueConfigurations"]
                ] == [arn]
        url = sqs.create_queue(QueueName="runs-manifests")["QueueUrl"]  # queues are not kept: tick makes them
        s3.put_object(Bucket="runs", Key="_runs/r.json", Body=b"{}")
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
        assert len(messages) == 1 and '"key": "_runs%2Fr.json"' in messages[0]["Body"]  # URL-encoded, as S3 sends
    finally:
        server.stop()


@pytest.mark.parametrize("environ, expected", [
    ({"REQUEST_METHOD": "GET", "RAW_URI": "/b/k"}, None),
    ({"REQUEST_METHOD": "PUT", "RAW_URI": "/b/a%2Fb%20c?partNumber=1"}, ("b", "a/b c")),
    ({"REQUEST_METHOD": "POST", "RAW_URI": "/b?delete"}, ("b", None)),
    ({"REQUEST_METHOD": "POST", "RAW_URI": "/",
      "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=x/20260101/eu-west-2/sqs/aws4_request, ..."}, None),
    ({"REQUEST_METHOD": "PUT", "RAW_URI": "/b/k",
      "HTTP_AUTHORIZATION": "AWS4-HMAC-SHA256 Credential=x/20260101/eu-west-2/s3/aws4_request, ..."}, ("b", "k")),
    ({"REQUEST_METHOD": "POST", "RAW_URI": "/moto-api/reset"}, None),
])
def test_only_writes_to_s3_are_mirrored(environ, expected):
    found = s3_write(environ)
    assert (found.bucket, found.key) == expected if expected else found is None


def _server_cpu_s(server: MotoServer) -> float:
    """CPU seconds the server process has used (user + system), from /proc."""
    fields = open(f"/proc/{server.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


_SAME_HEADERS = ("ETag", "Content-Length", "Content-Range", "Content-Type", "Last-Modified", "x-amz-meta-run",
                 "Accept-Ranges")


def _answer(s3, **request) -> tuple:
    """What a GET answers: status, the headers a reader uses, and the body (or the error code)."""
    try:
        response = s3.get_object(Bucket="lake", Key="k", **request)
    except s3.exceptions.ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    return (response["ResponseMetadata"]["HTTPStatusCode"], response["Body"].read(),
            {h: headers.get(h.lower()) for h in _SAME_HEADERS if h != "Last-Modified"})


def test_a_ranged_get_answers_as_moto_itself_does(data):
    """moto_disk serves a plain byte range itself (see below); every GET still answers exactly as moto's
    own server does, ranges it leaves to moto (suffix, open, past the end) and failed conditions included."""
    body = os.urandom(3 * 1024 * 1024 + 7)
    answers = []
    for server in (MotoServer.start(data_dir=data), MotoServer.start()):
        try:
            s3 = client(server)
            s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
            s3.put_object(Bucket="lake", Key="k", Body=body, Metadata={"run": "1"}, ContentType="text/csv")
            etag = s3.head_object(Bucket="lake", Key="k")["ETag"]
            answers.append([_answer(s3, **request) for request in (
                {"Range": "bytes=0-9"}, {"Range": "bytes=1048576-3145727"}, {"Range": f"bytes=5-{len(body) + 99}"},
                {"Range": "bytes=-5"}, {"Range": "bytes=7-"}, {"Range": f"bytes={len(body)}-{len(body) + 5}"},
                {"Range": "bytes=0-9", "IfMatch": '"0"'}, {"Range": "bytes=0-9", "IfMatch": etag},
                {"Range": "bytes=0-9", "IfNoneMatch": etag}, {"Range": "bytes=0-9", "VersionId": "null"}, {})])
            assert answers[-1][1][1] == body[1048576:3145728]
        finally:
            server.stop()
    assert answers[0] == answers[1]


@pytest.mark.slow
def test_a_ranged_get_reads_its_range_not_the_whole_object(data):
    """moto answers a ranged GET by reading the whole object and slicing it, so s3transfer's ranged
    download of an object cost the server its size times the number of ranges: quadratic (a 512 MB
    object took 26 s of the server's CPU, a 128 MB one 2.7 s). Its ranges now cost what they hold."""
    server = MotoServer.start(data_dir=data)
    try:
        s3 = client(server)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        size, part = 64 * 1024 * 1024, 4 * 1024 * 1024
        s3.put_object(Bucket="lake", Key="k", Body=os.urandom(size))
        before = _server_cpu_s(server)
        s3.get_object(Bucket="lake", Key="k")["Body"].read()
        whole = _server_cpu_s(server) - before
        before = _server_cpu_s(server)
        for start in range(0, size, part):
            s3.get_object(Bucket="lake", Key="k", Range=f"bytes={start}-{start + part - 1}")["Body"].read()
        ranged = _server_cpu_s(server) - before
        assert ranged < 4 * max(whole, 0.05), (ranged, whole)  # moto alone: about 16 times `whole`
    finally:
        server.stop()
