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
