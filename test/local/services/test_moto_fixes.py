"""`moto_fixes`: the local servers' moto with its ETag computed under the key's lock.

moto 5 computes a new key's MD5 by seeking its buffer and reading it without the key's lock, so
threads that ask at once hash each other's positions: with the switch interval shortened, 30 keys
read by 8 threads each gave 39 wrong ETags of 270 before the mend. A fresh-clone CI failed on it
(`test_s3_growing`: a ListParts beside an UploadPart left a part's ETag wrong, and `holds` then
refused the object that was byte for byte the file).
"""
from __future__ import annotations

import hashlib
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import boto3
import moto.backends
import pytest
from moto.s3.models import FakeKey

from totesys_etl.local.services import moto_fixes

MB = 1024 * 1024


@pytest.fixture
def mended(monkeypatch):
    """moto mended in this process for one test, then as it was."""
    monkeypatch.setattr(FakeKey, "etag", FakeKey.__dict__["etag"])
    monkeypatch.setattr(moto.backends, "list_of_moto_modules", moto.backends.list_of_moto_modules)
    moto_fixes.apply()
    yield


@pytest.fixture
def eager_thread_switches():
    """Threads switch every microsecond, not every 5 ms: a race shows in a second, not once a CI run."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


def _etags_read_at_once(key: FakeKey, threads: int) -> list[str]:
    start, answers = threading.Barrier(threads), []

    def read() -> None:
        start.wait()
        answers.append(key.etag.strip('"'))
    workers = [threading.Thread(target=read) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return answers + [key.etag.strip('"')]   # and the ETag the key keeps


def test_a_new_key_s_etag_asked_by_eight_threads_at_once_is_always_its_md5(mended, eager_thread_switches):
    data = os.urandom(5 * MB)
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    wrong = []
    for _ in range(30):
        key = FakeKey("k", data, account_id="123456789012", region_name="us-east-1")
        wrong += [etag for etag in _etags_read_at_once(key, 8) if etag != md5]
    assert wrong == []


def test_applying_twice_wraps_moto_s_etag_once(mended):
    once = FakeKey.__dict__["etag"]
    moto_fixes.apply()
    assert FakeKey.__dict__["etag"] is once
    key = FakeKey("k", b"abc", account_id="123456789012", region_name="us-east-1")
    assert key.etag == f'"{hashlib.md5(b"abc", usedforsecurity=False).hexdigest()}"'


def test_the_tests_server_keeps_each_part_s_etag_while_parts_are_listed_as_they_go_up(buckets):
    """Through the in-memory server the tests use: four uploads of 5 MB parts, each listed again and
    again by another thread while it goes up; every part's ETag and the object's are the MD5s."""
    s3 = boto3.client("s3")
    parts = [os.urandom(5 * MB) for _ in range(4)]

    def upload(name: str) -> str:
        done = threading.Event()
        upload_id = s3.create_multipart_upload(Bucket=buckets[0], Key=name)["UploadId"]
        lister = threading.Thread(target=_list_until, args=(s3, buckets[0], name, upload_id, done))
        lister.start()
        try:
            sent = [{"PartNumber": n, "ETag": s3.upload_part(Bucket=buckets[0], Key=name, UploadId=upload_id,
                                                             PartNumber=n, Body=body)["ETag"]}
                    for n, body in enumerate(parts, 1)]
        finally:
            done.set()
            lister.join()
        listed = s3.list_parts(Bucket=buckets[0], Key=name, UploadId=upload_id)["Parts"]
        s3.complete_multipart_upload(Bucket=buckets[0], Key=name, UploadId=upload_id,
                                     MultipartUpload={"Parts": sent})
        assert [p["ETag"].strip('"') for p in listed] == [p["ETag"].strip('"') for p in sent] == digests
        return s3.head_object(Bucket=buckets[0], Key=name)["ETag"].strip('"')

    digests = [hashlib.md5(p, usedforsecurity=False).hexdigest() for p in parts]
    whole = hashlib.md5(b"".join(bytes.fromhex(d) for d in digests), usedforsecurity=False).hexdigest()
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(upload, [f"u{n}.csv" for n in range(4)])) == [f"{whole}-4"] * 4


def _list_until(s3, bucket: str, key: str, upload_id: str, done: threading.Event) -> None:
    while not done.is_set():
        s3.list_parts(Bucket=bucket, Key=key, UploadId=upload_id)
