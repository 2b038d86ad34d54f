"""`s3.download`: a small object in one GET, a large one by s3transfer's ranged GETs; either way the
file is the object, byte for byte, and a missing key is S3's own "no such key"."""
from __future__ import annotations

import os

import pytest
from botocore.exceptions import ClientError

from totesys_etl.adapters import s3
from totesys_etl.errors import is_missing


def _recording(client, operation: str, seen: list):
    def record(request, **_):
        seen.append(request)
    client.meta.events.register(f"before-send.s3.{operation}", record)
    return lambda: client.meta.events.unregister(f"before-send.s3.{operation}", record)


@pytest.mark.parametrize("size, gets_first_then_ranges", [(0, False), (5000, False), (300_000, True)])
def test_a_download_is_the_object_whichever_way_it_is_read(buckets, tmp_path, monkeypatch, size,
                                                           gets_first_then_ranges):
    monkeypatch.setattr(s3, "SINGLE_GET_BYTES", 100_000)
    data = os.urandom(size)
    s3.put_create_only(buckets[0], f"d/{size}", data)
    client, heads, gets = s3.client(), [], []
    stops = [_recording(client, "HeadObject", heads), _recording(client, "GetObject", gets)]
    try:
        s3.download(buckets[0], f"d/{size}", str(tmp_path / "f"))
    finally:
        for stop in stops:
            stop()
    assert (tmp_path / "f").read_bytes() == data
    # The first GET asks for no more than one GET may read: a server never reads a big object whole
    # for a body that is left unread (moto did, at every large download).
    assert gets[0].headers["Range"] == b"bytes=0-99999"
    if gets_first_then_ranges:     # the first GET's range is not the whole object; s3transfer takes over
        assert len(heads) == 1 and len(gets) >= 2
    elif size:                     # one request in all
        assert heads == [] and len(gets) == 1
    else:                          # S3 has no byte 0 of an empty object to give (416): one plain GET more
        assert heads == [] and len(gets) == 2 and "Range" not in gets[1].headers


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
    """s3transfer queues the ranges it has read for one writer thread, up to 1,000 chunks of 256 KB by
    default: when S3 answers faster than the file is written, 250 MB per download, and the processor
    downloads four at once (its peak RSS went from 684 MB at 1M orders to 1,433 MB at 10M once the
    local S3 served ranges quickly). A download's memory must not grow with the object."""
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
