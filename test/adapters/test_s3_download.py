"""`s3.download`: a small object in one GET, a large one in ranges read in parallel after the first; either
way the file is the object, byte for byte, each byte read once, and a missing key is S3's own "no such key"."""
from __future__ import annotations

import os

import boto3
import pytest
from botocore.exceptions import ClientError, ResponseStreamingError

from totesys_etl.adapters import s3
from totesys_etl.errors import is_missing


def _recording(client, operation: str, seen: list):
    def record(request, **_):
        seen.append(request)
    client.meta.events.register(f"before-send.s3.{operation}", record)
    return lambda: client.meta.events.unregister(f"before-send.s3.{operation}", record)


@pytest.mark.parametrize("size, ranges", [(0, 0), (5000, 0), (100_000, 0), (300_000, 2), (250_001, 2)])
def test_a_download_is_the_object_and_reads_each_byte_once(buckets, tmp_path, monkeypatch, size, ranges):
    monkeypatch.setattr(s3, "RANGE_BYTES", 100_000)
    data = os.urandom(size)
    s3.put_create_only(buckets[0], f"d/{size}", data)
    etag = s3.head(buckets[0], f"d/{size}")["etag"]
    client, heads, gets = s3.client(), [], []
    stops = [_recording(client, "HeadObject", heads), _recording(client, "GetObject", gets)]
    try:
        s3.download(buckets[0], f"d/{size}", str(tmp_path / "f"))
    finally:
        for stop in stops:
            stop()
    assert (tmp_path / "f").read_bytes() == data
    assert heads == []
    # The first GET asks for no more than one range: a server never reads a big object whole for it.
    assert gets[0].headers["Range"] == b"bytes=0-99999"
    if not size:   # S3 has no byte 0 of an empty object to give (416): one plain GET more
        assert len(gets) == 2 and "Range" not in gets[1].headers
        return
    # The rest in ranges that follow the first (nothing read twice), each of the first one's version.
    rest = sorted(gets[1:], key=lambda g: int(g.headers["Range"].split(b"=")[1].split(b"-")[0]))
    expected = [f"bytes={start}-{min(start + 100_000, size) - 1}".encode() for start in range(100_000, size, 100_000)]
    assert [g.headers["Range"] for g in rest] == expected and len(rest) == ranges
    assert all(g.headers["If-Match"].decode().strip('"') == etag for g in rest)


def test_a_range_whose_body_breaks_off_is_read_again(buckets, tmp_path, monkeypatch):
    """botocore retries a request, never a body cut off mid-stream: the download asks for that range again."""
    monkeypatch.setattr(s3, "RANGE_BYTES", 100_000)
    data = os.urandom(350_000)
    s3.put_create_only(buckets[0], "d/broken", data)
    broken = []

    class BreaksOff:
        """The real body, which stops with the error a dropped connection gives after 1,000 bytes."""

        def __init__(self, body):
            self.body = body

        def iter_chunks(self, size):
            yield self.body.read(1000)
            raise ResponseStreamingError(error="connection dropped")

        def close(self):
            self.body.close()

    def break_once(http_response, parsed, model, **_):
        if model.name == "GetObject" and parsed.get("ContentRange", "").startswith("bytes 200000-") and not broken:
            broken.append(parsed["ContentRange"])
            parsed["Body"] = BreaksOff(parsed["Body"])
    client = s3.client()
    client.meta.events.register("after-call.s3.GetObject", break_once)
    try:
        s3.download(buckets[0], "d/broken", str(tmp_path / "f"))
    finally:
        client.meta.events.unregister("after-call.s3.GetObject", break_once)
    assert broken and (tmp_path / "f").read_bytes() == data


def test_an_object_replaced_during_its_download_fails_it_and_leaves_no_file(buckets, tmp_path, monkeypatch):
    """Two versions never mix in one file: the later ranges ask for the first one's ETag."""
    monkeypatch.setattr(s3, "RANGE_BYTES", 100_000)
    s3.put_create_only(buckets[0], "d/replaced", os.urandom(250_000))
    other = boto3.client("s3")

    def replace(request, **_):
        if "If-Match" in request.headers:
            other.put_object(Bucket=buckets[0], Key="d/replaced", Body=os.urandom(250_000))
    client = s3.client()
    client.meta.events.register("before-send.s3.GetObject", replace)
    try:
        with pytest.raises(ClientError) as failed:
            s3.download(buckets[0], "d/replaced", str(tmp_path / "f"))
    finally:
        client.meta.events.unregister("before-send.s3.GetObject", replace)
    assert failed.value.response["Error"]["Code"] in ("PreconditionFailed", "412")
    assert not (tmp_path / "f").exists()


def test_a_missing_object_is_s3_s_no_such_key(buckets, tmp_path):
    with pytest.raises(ClientError) as missing:
        s3.download(buckets[0], "d/none", str(tmp_path / "f"))
    assert is_missing(missing.value) and not (tmp_path / "f").exists()


_DOWNLOAD_RSS = """
import os, resource, sys
from totesys_etl.adapters import s3
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
s3.download(sys.argv[1], sys.argv[2], sys.argv[3])
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""


@pytest.mark.slow
def test_a_large_download_holds_a_bounded_part_of_the_object_in_memory(tmp_path):
    """s3transfer, which read large objects before, queued the ranges it had read for one writer thread,
    up to 1,000 chunks of 256 KB by default: when S3 answers faster than the file is written, 250 MB per
    download, and the processor downloads four at once (its peak RSS went from 684 MB at 1M orders to
    1,433 MB at 10M once the local S3 served ranges quickly). A download's memory must not grow with
    the object: each range now writes its chunks itself."""
    import subprocess
    import sys

    from totesys_etl.local.services.servers import MotoServer

    server = MotoServer.start(data_dir=tmp_path / "s3")
    try:
        env = dict(os.environ, AWS_ENDPOINT_URL=server.endpoint, AWS_ACCESS_KEY_ID="x", AWS_SECRET_ACCESS_KEY="x",
                   AWS_DEFAULT_REGION="eu-west-2")
        client = __import__("boto3").client("s3", endpoint_url=server.endpoint, region_name="eu-west-2",
                                            aws_access_key_id="x", aws_secret_access_key="x")
        client.create_bucket(Bucket="lake", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        size = 384 * 1024 * 1024
        with open(tmp_path / "big", "wb") as f:
            block = os.urandom(1024 * 1024)
            for _ in range(size // len(block)):
                f.write(block)
        client.upload_file(str(tmp_path / "big"), "lake", "big")
        os.remove(tmp_path / "big")
        grown_mb = int(subprocess.run([sys.executable, "-c", _DOWNLOAD_RSS, "lake", "big", str(tmp_path / "out")],
                                      env=env, check=True, capture_output=True, text=True).stdout)
        assert os.path.getsize(tmp_path / "out") == size
        assert grown_mb < 100, grown_mb  # s3transfer's defaults: about 250
    finally:
        server.stop()
