"""moto's server with S3 on disk (`moto_disk.py`): what a `kill -9` must not lose, and what must come
back exactly as it was (ETags above all: courier markers are keyed by them)."""
from __future__ import annotations

import os
import signal
import time

import boto3
import pytest

from totesys_etl.errors import LocalServicesError
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


def _server_io(server: MotoServer) -> dict[str, int]:
    """The server process's bytes read and written through system calls (`rchar`, `wchar`) and its
    peak resident memory in bytes (`hwm`), from /proc: counts that the machine's load does not move."""
    counted = dict(line.split(": ") for line in open(f"/proc/{server.pid}/io").read().splitlines())
    peak = next(line for line in open(f"/proc/{server.pid}/status") if line.startswith("VmHWM:"))
    return {"rchar": int(counted["rchar"]), "wchar": int(counted["wchar"]), "hwm": int(peak.split()[1]) * 1024}


def _upload(s3, key: str, parts: list[bytes], **create) -> tuple[str, list[dict]]:
    """A multipart upload of `parts`, not completed: its id and the parts a complete names."""
    upload = s3.create_multipart_upload(Bucket="lake", Key=key, **create)["UploadId"]
    return upload, [{"PartNumber": n, "ETag": s3.upload_part(Bucket="lake", Key=key, UploadId=upload, PartNumber=n,
                                                             Body=body)["ETag"]} for n, body in enumerate(parts, 1)]


def _stored(s3) -> dict:
    """Every object of the lake as a reader sees it: listing, headers, metadata and the bytes' digest."""
    import hashlib

    found = {}
    for key, (etag, modified, size) in listing(s3).items():
        head = s3.head_object(Bucket="lake", Key=key)
        body = s3.get_object(Bucket="lake", Key=key)["Body"].read()
        found[key] = (etag, modified, size, head["ContentType"], head["Metadata"], head.get("VersionId"),
                      len(body), hashlib.sha256(body).hexdigest())
    return found


@pytest.mark.slow
def test_start_up_reads_no_objects_bytes_and_every_object_comes_back_identical(data):
    """moto_disk's start used to read every stored object back into moto whole: 4.8 GB took 43 s, longer
    than `up` waits for the port. The bytes now stay in their files until a request reads them."""
    size = 24 * 1024 * 1024
    server = MotoServer.start(data_dir=data)
    try:
        s3 = client(server)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        for n in range(2):  # two large multipart objects, their ETags `<md5>-3`
            upload, parts = _upload(s3, f"big/{n}.csv", [os.urandom(size // 3) for _ in range(3)],
                                    Metadata={"run": str(n)}, ContentType="text/csv")
            s3.complete_multipart_upload(Bucket="lake", Key=f"big/{n}.csv", UploadId=upload,
                                         MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        wide = {name: name * 30_000 for name in "abc"}  # a header over the 64 kB slot: written the general way
        upload, parts = _upload(s3, "wide", [os.urandom(1024)], Metadata=wide)
        s3.complete_multipart_upload(Bucket="lake", Key="wide", UploadId=upload, MultipartUpload={"Parts": parts})
        s3.put_object(Bucket="lake", Key="small", Body=b"small", Metadata={"a": "b"})
        s3.put_object(Bucket="lake", Key="empty", Body=b"")
        before = _stored(s3)
        assert before["big/1.csv"][0].endswith('-3"') and before["big/1.csv"][4] == {"run": "1"}
        assert before["wide"][4] == wide and not list(data.glob("objects/*/*.tmp"))
        server.stop()
        empty = MotoServer.start(data_dir=data.parent / "empty")
        started_empty = _server_io(empty)
        empty.stop()
        server = MotoServer.start(port=free_port(server.port), data_dir=data)
        started = _server_io(server)
        # The whole lake (48 MB) went through the old start's reads and writes; now only the headers.
        assert started["rchar"] - started_empty["rchar"] < 4 * 1024 * 1024, (started, started_empty)
        assert started["wchar"] - started_empty["wchar"] < 4 * 1024 * 1024, (started, started_empty)
        s3 = client(server)
        assert _stored(s3) == before
        middle = s3.get_object(Bucket="lake", Key="big/0.csv", Range="bytes=1000-2000999")["Body"].read()
        assert len(middle) == 2_000_000
        s3.copy_object(Bucket="lake", Key="copy", CopySource={"Bucket": "lake", "Key": "small"})
        s3.put_object(Bucket="lake", Key="big/1.csv", Body=b"replaced")  # over a key read from its file
        s3.delete_object(Bucket="lake", Key="big/0.csv")
        after = _stored(s3)
        server = kill_and_restart(server, data)
        assert _stored(client(server)) == after
        assert after["big/1.csv"][6] == len(b"replaced") and "big/0.csv" not in after
    finally:
        server.stop()


def test_a_second_server_on_the_same_folder_stops_at_once_and_says_why(data):
    import subprocess
    import sys

    server = MotoServer.start(data_dir=data)
    try:
        second = subprocess.run([sys.executable, "-m", "totesys_etl.local.services.moto_disk", "--data", str(data),
                                 "-p", str(free_port())], capture_output=True, text=True, timeout=60)
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"moto_disk: {data} is in use by another moto_disk server (pid {server.pid}); "
            f"stop it first (totesys-etl down)"]
        started = time.monotonic()  # `up` says the same at once, rather than after waiting 30 s for a port
        with pytest.raises(LocalServicesError, match=f"^moto_disk: {data} is in use by another moto_disk server"):
            MotoServer.start(data_dir=data, log_path=data.parent / "second.log")
        assert time.monotonic() - started < 20
        s3 = client(server)  # the first one still serves
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        server = kill_and_restart(server, data)  # a killed server's lock goes with it
        assert [b["Name"] for b in client(server).list_buckets()["Buckets"]] == ["lake"]
    finally:
        server.stop()


def _complete_answers(server: MotoServer, big: bytes) -> list:
    """What a server answers to CompleteMultipartUpload, its errors included, and what it then holds and
    announced: the same script against moto_disk (which completes on disk) and plain moto."""
    import hashlib
    import json

    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=server.endpoint, region_name=REGION, aws_access_key_id="x",
                      aws_secret_access_key="x", config=Config(retries={"total_max_attempts": 1}))
    sqs = client(server, "sqs")
    s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
    queue = sqs.create_queue(QueueName="created")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket="lake", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})

    def complete(key, upload, parts, **request):
        try:
            done = s3.complete_multipart_upload(Bucket="lake", Key=key, UploadId=upload,
                                                MultipartUpload={"Parts": parts}, **request)
            return done["ResponseMetadata"]["HTTPStatusCode"], done["ETag"], done["Key"], done.get("VersionId")
        except s3.exceptions.ClientError as e:
            return e.response["ResponseMetadata"]["HTTPStatusCode"], e.response["Error"]["Code"]

    def describe():
        head = s3.head_object(Bucket="lake", Key="k")["ResponseMetadata"]["HTTPHeaders"]
        attributes = s3.get_object_attributes(Bucket="lake", Key="k",
                                              ObjectAttributes=["ETag", "ObjectSize", "Checksum"])
        return ({h: head.get(h) for h in ("etag", "content-length", "content-type", "x-amz-meta-run",
                                          "x-amz-version-id", "x-amz-tagging-count")},
                {k: v for k, v in attributes.items() if k not in ("ResponseMetadata", "LastModified")},
                s3.get_object_tagging(Bucket="lake", Key="k")["TagSet"],
                hashlib.sha256(s3.get_object(Bucket="lake", Key="k")["Body"].read()).hexdigest())

    small = b"b" * 100
    upload, parts = _upload(s3, "k", [big, small], Metadata={"run": "1"}, ContentType="text/csv", Tagging="t=1")
    answers = [complete("k", upload, [{**parts[0], "ETag": '"00"'}, parts[1]]),  # a part's ETag wrong
               complete("k", upload, parts + [{"PartNumber": 3, "ETag": parts[1]["ETag"]}]),  # no part 3
               complete("k", upload, parts[::-1]),  # out of order
               complete("k", upload, []),
               complete("k", "no-such-upload", parts)]
    too_small, small_parts = _upload(s3, "t", [small, big])
    answers += [complete("t", too_small, small_parts),
                complete("k", upload, parts, IfNoneMatch="*"),  # after every error above: still whole
                describe(),
                complete("k", upload, parts, IfNoneMatch="*")]  # the same again: moto answers as before
    second, second_parts = _upload(s3, "k", [small])
    answers += [complete("k", second, second_parts, IfNoneMatch="*"), complete("k", second, second_parts),
                describe()]
    for key, checksum in (("c", {"ChecksumAlgorithm": "CRC32"}),  # as s3transfer asks: one of the parts' CRC32s
                          ("f", {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}),
                          ("s", {"ChecksumAlgorithm": "SHA256"})):
        summed, summed_parts = _upload(s3, key, [big, small], **checksum)
        answers.append(complete(key, summed, summed_parts))
        for read in (s3.head_object, s3.get_object):  # a GET's full-object checksum is checked by botocore
            answers.append({k: v for k, v in read(Bucket="lake", Key=key, ChecksumMode="ENABLED").items()
                            if k.startswith("Checksum") or k == "ETag"})
    aborted, aborted_parts = _upload(s3, "a", [big])
    s3.abort_multipart_upload(Bucket="lake", Key="a", UploadId=aborted)
    answers += [complete("a", aborted, aborted_parts),
                sorted(u["Key"] for u in s3.list_multipart_uploads(Bucket="lake").get("Uploads", [])),
                sorted((r["eventName"], r["s3"]["object"]["key"], r["s3"]["object"].get("size"),
                        r["s3"]["object"].get("eTag"))
                       for m in _messages(sqs, queue) for r in json.loads(m["Body"]).get("Records", []))]
    return answers


def _messages(sqs, queue: str) -> list[dict]:
    """Every message in the queue (moto hands out at most 10 a call)."""
    found = []
    while batch := sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", []):
        found += batch
    return found


def test_a_multipart_upload_completes_on_disk_with_moto_s_own_answers(data):
    """moto_disk completes an upload by copying its parts into the key's file (next test), but every
    answer, error and notification is the one plain moto gives."""
    answers, big = [], os.urandom(5 * 1024 * 1024)  # S3's smallest part but the last
    for server in (MotoServer.start(data_dir=data), MotoServer.start()):
        try:
            answers.append(_complete_answers(server, big))
        finally:
            server.stop()
    assert answers[0] == answers[1]
    assert [a[:2] for a in answers[0][:6]] == [(400, "InvalidPart"), (400, "InvalidPart"), (400, "EntityTooSmall"),
                                               (400, "MalformedXML"), (500, "500"), (400, "EntityTooSmall")]
    assert answers[0][6][1].endswith('-2"') and answers[0][7][0]["x-amz-meta-run"] == "1"
    assert answers[0][12][0] == 200 and answers[0][14]["ChecksumCRC32"].endswith("-2")
    assert answers[0][17]["ChecksumType"] == "FULL_OBJECT" and answers[0][20]["ChecksumSHA256"].endswith("-2")
    assert not list(data.glob("objects/*/*.tmp")) and len(list(data.glob("objects/*/*"))) == 4  # k, c, f, s


def test_completing_an_upload_copies_its_bytes_once_and_holds_none_of_them_in_memory(data):
    """moto's CompleteMultipartUpload read every part back twice, joined them in memory, and wrote the
    result to a new buffer that moto_disk copied once more to its file: at 1 GB, minutes of a busy
    machine's CPU and gigabytes of memory. moto_disk now copies the parts once into the key's file."""
    size = 48 * 1024 * 1024
    server = MotoServer.start(data_dir=data)
    try:
        s3 = client(server)
        s3.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": REGION})
        block = os.urandom(8 * 1024 * 1024)
        upload, parts = _upload(s3, "big", [n.to_bytes(8, "big") + block[8:] for n in range(size // len(block))])
        before = _server_io(server)
        s3.complete_multipart_upload(Bucket="lake", Key="big", UploadId=upload, MultipartUpload={"Parts": parts},
                                     IfNoneMatch="*")
        after = _server_io(server)
        assert after["rchar"] - before["rchar"] < 1.1 * size  # moto's own: 3 times the size
        assert after["wchar"] - before["wchar"] < 1.1 * size  # moto's own: 2 times
        assert after["hwm"] - before["hwm"] < size / 4  # moto's own: about 3 times the size more
        assert s3.head_object(Bucket="lake", Key="big")["ContentLength"] == size
    finally:
        server.stop()
