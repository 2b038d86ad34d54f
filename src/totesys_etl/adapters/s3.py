"""S3 access: create-only writes, reads, listings. Keys are only ever S3 keys, never paths.

Objects in the lake are immutable (contract §4): every write is conditional (`IfNoneMatch='*'`), and
a key that already exists is left as it is; the caller learns which happened.

S3 answers a conditional write in two ways that must not be confused: 412 `PreconditionFailed`
means the key exists; 409 `ConditionalRequestConflict` means another write of the same key is
still in flight, and that write may yet fail, so the key may never exist. A 409 is therefore
retried with backoff, and after the last retry a HEAD decides: the key exists (another writer
finished it: "already exists") or the write fails. Reading a 409 as "already exists" would let a
manifest name a file that is not there.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import Callable, Iterator

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import IncompleteReadError, ReadTimeoutError, ResponseStreamingError

from totesys_etl.errors import LakeUnavailable, is_missing

#: Above this size a file goes up in parts, so neither it nor its upload sits in memory whole.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
PART_SIZE = 16 * 1024 * 1024

_EXISTS = ("PreconditionFailed", "412")
_CONFLICT = ("ConditionalRequestConflict", "409")
#: Seconds to wait before each new attempt after a 409 (about 6 s in all, then HEAD decides).
CONFLICT_DELAYS = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
_LOG = logging.getLogger("totesys_etl.s3")


@lru_cache(maxsize=4)
def _client(endpoint: str | None):
    # botocore's client, not boto3's: boto3 adds its session layer and s3transfer to every cold start
    # (0.035 s of CPU a stage), for nothing but `download_file`, which `download` does itself.
    return botocore.session.get_session().create_client(
        "s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def client():
    """One client per endpoint and process (Lambda containers reuse it across invocations)."""
    return _client(os.environ.get("AWS_ENDPOINT_URL"))


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code"))


def _create_only(bucket: str, key: str, write: Callable[[], None]) -> bool:
    """Run one conditional `write` of `key`: True when it wrote, False when the key exists.

    A 409 (another write of the key in flight) is retried after each of CONFLICT_DELAYS; if the
    conflict outlasts them, HEAD decides: present is "already exists", absent raises the 409.
    """
    for delay in (*CONFLICT_DELAYS, None):
        try:
            write()
            return True
        except ClientError as e:
            if _code(e) in _EXISTS:
                return False
            if _code(e) not in _CONFLICT:
                raise
            conflict = e
        if delay is not None:
            _LOG.info(f"another write of {key} is in flight (409); retrying in {delay} s",
                      extra={"fields": {"stage": None, "run_id": None, "key": key}})
            time.sleep(delay)
    if exists(bucket, key):
        return False
    raise conflict


def put_create_only(bucket: str, key: str, body: bytes, content_type: str = "application/octet-stream") -> bool:
    """Write `key` unless it exists. True when this call wrote it."""
    def put() -> None:
        client().put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type, IfNoneMatch="*")
    return _create_only(bucket, key, put)


def json_body(document: dict) -> bytes:
    """The exact bytes `put_json_create_only` writes for `document` (keys sorted: deterministic)."""
    return json.dumps(document, indent=1, sort_keys=True, default=str).encode()


def put_json_create_only(bucket: str, key: str, document: dict) -> bool:
    return put_create_only(bucket, key, json_body(document), "application/json")


def holds(bucket: str, key: str, path: str | None = None, body: bytes | None = None) -> bool:
    """True if `key` holds exactly the bytes of the local file `path` (or `body`).

    A create-only write that finds its key taken uses this to tell its own earlier attempt (S3
    completed it, the answer was lost, the SDK retried) from another writer's object. The check
    is the ETag S3 computes: the MD5 of the bytes, or for a multipart upload the MD5 of the parts'
    MD5s with the part count, parts of PART_SIZE as `upload_file_create_only` sends them.
    """
    data = body
    size = len(data) if data is not None else os.path.getsize(path)
    head = client().head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] != size:
        return False
    digests = []
    if data is not None:
        digests.append(hashlib.md5(data, usedforsecurity=False).digest())
    else:
        with open(path, "rb") as f:
            chunk = PART_SIZE if size > MULTIPART_THRESHOLD else max(size, 1)
            for part in iter(lambda: f.read(chunk), b""):
                digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    if data is None and size > MULTIPART_THRESHOLD:
        etag = f"{hashlib.md5(b''.join(digests), usedforsecurity=False).hexdigest()}-{len(digests)}"
    else:
        etag = (digests[0] if digests else hashlib.md5(b"", usedforsecurity=False).digest()).hex()
    return head["ETag"].strip('"') == etag


def upload_file_create_only(bucket: str, key: str, path: str) -> bool:
    """Upload a local file to `key` unless it exists; large files go up in 16 MB parts."""
    size = os.path.getsize(path)
    if size <= MULTIPART_THRESHOLD:
        with open(path, "rb") as f:
            return put_create_only(bucket, key, f.read())
    # After a 409 S3 wants the whole upload again (a new upload id and every part), so each
    # attempt is a complete multipart upload.
    return _create_only(bucket, key, lambda: _multipart_upload(bucket, key, path))


def _multipart_upload(bucket: str, key: str, path: str) -> None:
    """One multipart upload of a finished file: a GrowingUpload told the whole size at once."""
    upload = GrowingUpload(bucket, key, path)
    try:
        upload.complete()
    finally:
        upload.close()


class GrowingUpload:
    """A create-only upload of a local file that starts while the file is still being written.

    The ingest's COPY writes a big table's CSV for seconds; uploading it only afterwards left the
    last table's whole upload after the last COPY (1.4 s of a 5.5 s ingest at 1,000,000 orders).
    Once the file passes MULTIPART_THRESHOLD, each PART_SIZE part goes up, in order, in a worker
    thread as soon as the writer reports it written (`grown`); `finish` sends the rest and
    completes. The object is what `upload_file_create_only` makes of the finished file (the
    same parts, so the same ETag for `holds`), and it is conditional in the same way
    (`_create_only`): a key that exists is False; after a 409 on completion the upload is aborted
    and, after the backoff, done again whole from the file. A part is read back from the file, so
    memory holds one part at a time.
    """

    def __init__(self, bucket: str, key: str, path: str):
        self.bucket, self.key, self.path = bucket, key, path
        self._worker: ThreadPoolExecutor | None = None
        self._parts: list[Future] = []
        self._upload_id: str | None = None
        self._sent = 0  # bytes of the file handed to part uploads

    def grown(self, size: int) -> None:
        """The file holds `size` bytes, flushed: queue every whole part not queued yet."""
        if self._worker is None:
            if size <= MULTIPART_THRESHOLD:
                return
            self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="part-upload")
        while size - self._sent >= PART_SIZE:
            self._queue_part(self._sent, PART_SIZE)

    def finish(self) -> bool:
        """Upload what is left and complete: True when this wrote the key, False when it exists.

        Conditional as `upload_file_create_only` is (`_create_only`): after a 409 the upload is
        aborted and, after the backoff, done again whole from the file."""
        if self._worker is None:
            return upload_file_create_only(self.bucket, self.key, self.path)
        attempts = iter([self.complete])

        def write() -> None:
            next(attempts, lambda: _multipart_upload(self.bucket, self.key, self.path))()
        try:
            return _create_only(self.bucket, self.key, write)
        finally:
            self.close()

    def complete(self) -> None:
        """Send the parts not sent yet and complete the upload (the file is finished); on any
        failure the upload is aborted and the failure raised."""
        try:
            size = os.path.getsize(self.path)
            self.grown(size)
            if size > self._sent:
                self._queue_part(self._sent, size - self._sent)
            parts = [{"ETag": part.result(), "PartNumber": number} for number, part in enumerate(self._parts, 1)]
            client().complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                               MultipartUpload={"Parts": parts}, IfNoneMatch="*")
        except BaseException:
            self.abandon()
            raise

    def close(self) -> None:
        """Let the part worker end, once the parts queued are sent."""
        if self._worker is not None:
            self._worker.shutdown()

    def abandon(self) -> None:
        """Stop: the parts already queued finish, then the upload is aborted (best effort)."""
        self.close()
        if self._upload_id is not None:
            _abort(client(), self.bucket, self.key, self._upload_id)
            self._upload_id = None

    def _queue_part(self, offset: int, length: int) -> None:
        self._parts.append(self._worker.submit(self._send_part, len(self._parts) + 1, offset, length))
        self._sent = offset + length

    def _send_part(self, number: int, offset: int, length: int) -> str:
        """Upload one part read from the file (the first one opens the upload); its ETag."""
        if self._upload_id is None:
            self._upload_id = client().create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        with open(self.path, "rb") as f:
            f.seek(offset)
            body = f.read(length)
        return client().upload_part(Bucket=self.bucket, Key=self.key, UploadId=self._upload_id,
                                    PartNumber=number, Body=body)["ETag"]


def _abort(s3, bucket: str, key: str, upload_id: str) -> None:
    """Abort an upload that failed, best effort: the caller's answer is the upload's own outcome.

    A refused abort (a role without s3:AbortMultipartUpload, an outage) must not turn "the key
    already exists" into a failure that every rerun repeats, nor hide the error that ended the
    upload. The parts it leaves are removed by the buckets' lifecycle rule after a day (tf/s3.tf).
    """
    try:
        s3.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
    except (ClientError, BotoCoreError) as e:
        reason = e.response.get("Error", {}).get("Code") if isinstance(e, ClientError) else type(e).__name__
        _LOG.warning(f"could not abort the multipart upload of {key} ({reason}); the lifecycle rule removes its parts",
                     extra={"fields": {"stage": None, "run_id": None, "key": key, "error_code": reason}})


class TooLarge(Exception):
    """An object larger than its reader reads whole (`get_bytes`'s `max_bytes`): its body was never read."""

    def __init__(self, bucket: str, key: str, size: int, max_bytes: int):
        super().__init__(f"s3://{bucket}/{key} is {size:,} bytes, more than the {max_bytes:,} read whole")
        self.size, self.max_bytes = size, max_bytes


def get_bytes(bucket: str, key: str, max_bytes: int | None = None) -> bytes:
    """The object's bytes, whole in memory. With `max_bytes`, a larger object is TooLarge, told by the
    GET's Content-Length before any of its body is read (the connection is closed, not drained), so
    a multi-GB object where a small one belongs costs one request, never the process's memory."""
    response = client().get_object(Bucket=bucket, Key=key)
    if max_bytes is not None and response["ContentLength"] > max_bytes:
        response["Body"].close()
        raise TooLarge(bucket, key, response["ContentLength"], max_bytes)
    return response["Body"].read()


#: Bytes per GET of a download: the whole of a smaller object, a range of a larger one.
RANGE_BYTES = 8 * 1024 * 1024
#: Ranges of one large download read at once (s3transfer's own default concurrency).
RANGE_WORKERS = 10
#: Attempts at one range whose body broke off mid-stream (botocore retries only the request itself);
#: s3transfer's own default.
RANGE_ATTEMPTS = 5
_CHUNK_BYTES = 1024 * 1024
_BROKEN_STREAM = (IncompleteReadError, ReadTimeoutError, ResponseStreamingError, BotoConnectionError)


def download(bucket: str, key: str, path: str) -> None:
    """Stream an object to a local file (in 1 MB chunks, never whole in memory).

    The first GET asks for the first RANGE_BYTES bytes: the whole of a small object, in one request
    (no HEAD: against the local S3 API one GET is about half the time of HEAD and GET). A larger
    object's size comes back with it, and its other ranges are read in parallel while the first is
    written, each asking for the first one's ETag (`IfMatch`), so an object replaced meanwhile fails
    the download instead of mixing two versions. Nothing read is read twice: the processor once
    dropped that first range unread and handed the object to s3transfer (a HEAD, the ranges again,
    ten threads and its import), about 0.1 s of CPU for its three 10 MB CSVs at 100,000 orders.
    A first GET for a range, never the object, also keeps a server from reading a big object whole
    for one range's sake. An empty object has no byte to give (S3 answers 416 InvalidRange): a plain
    GET reads it. On a failure no file is left at `path`.
    """
    try:
        response = client().get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{RANGE_BYTES - 1}")
    except ClientError as e:
        if _code(e) not in ("InvalidRange", "416"):
            raise
        response = client().get_object(Bucket=bucket, Key=key)
    # "bytes 0-99/12345": the object's size after the slash; no Content-Range: the whole object
    size = int(response["ContentRange"].rpartition("/")[2]) if response.get("ContentRange") \
        else response["ContentLength"]
    first, etag = response["ContentLength"], response["ETag"]
    ranges = [(start, min(start + RANGE_BYTES, size) - 1) for start in range(first, size, RANGE_BYTES)]
    try:
        with open(path, "wb", buffering=0) as f:
            workers = ThreadPoolExecutor(min(RANGE_WORKERS, len(ranges)), "range") if ranges else None
            try:
                rest = [workers.submit(_get_range, bucket, key, start, end, etag, f.fileno()) for start, end in ranges]
                try:
                    _write_body(response["Body"], f.fileno(), 0)
                except _BROKEN_STREAM:
                    _get_range(bucket, key, 0, first - 1, etag, f.fileno())
                for part in rest:
                    part.result()
            finally:
                if workers is not None:  # every range has stopped writing before the file closes
                    workers.shutdown(cancel_futures=True)
    except BaseException:
        if os.path.exists(path):
            os.remove(path)
        raise
    finally:
        response["Body"].close()


def _get_range(bucket: str, key: str, start: int, end: int, etag: str, fd: int) -> None:
    """Bytes `start` to `end` of the object whose ETag is `etag`, written at their place in `fd`; a
    body that breaks off is asked for again, up to RANGE_ATTEMPTS times."""
    for attempt in range(1, RANGE_ATTEMPTS + 1):
        body = client().get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end}", IfMatch=etag)["Body"]
        try:
            _write_body(body, fd, start)
            return
        except _BROKEN_STREAM:
            if attempt == RANGE_ATTEMPTS:
                raise
        finally:
            body.close()


def _write_body(body, fd: int, offset: int) -> None:
    """Write a response body into `fd` from `offset` on, a chunk at a time (`os.pwrite`: ranges of one
    file are written by several threads at once)."""
    for chunk in body.iter_chunks(_CHUNK_BYTES):
        while chunk:
            written = os.pwrite(fd, chunk, offset)
            chunk, offset = chunk[written:], offset + written


def exists(bucket: str, key: str) -> bool:
    try:
        client().head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as e:
        if is_missing(e):
            return False
        raise


def list_keys(bucket: str, prefix: str, start_after: str | None = None, limit: int | None = None
              ) -> Iterator[str]:
    """Keys under `prefix` in S3's (lexicographic) order, after `start_after`, at most `limit`."""
    kwargs = {"Bucket": bucket, "Prefix": prefix}
    if start_after:
        kwargs["StartAfter"] = start_after
    if limit:
        kwargs["PaginationConfig"] = {"MaxItems": limit, "PageSize": min(limit, 1000)}
    for page in client().get_paginator("list_objects_v2").paginate(**kwargs):
        for item in page.get("Contents", []):
            yield item["Key"]


#: The largest object one CopyObject copies (S3 refuses a larger source); above it `copy_create_only`
#: copies in parts (UploadPartCopy). A quarantined courier file may be far larger (contract §9).
COPY_THRESHOLD = 5 * 1024 ** 3
#: Bytes per part of such a copy (S3 takes 5 MiB to 5 GiB), larger when the object needs more than
#: MAX_COPY_PARTS of them (S3's limit); each part is copied inside S3, none passes through here.
COPY_PART_SIZE = 512 * 1024 * 1024
MAX_COPY_PARTS = 10_000
#: Parts copied at once: S3 copies each at some tens of MB/s, so a 100 GB object takes minutes, not
#: the half hour one part at a time would (Lambda stops at 15).
COPY_WORKERS = 8


def copy_create_only(src_bucket: str, src_key: str, bucket: str, key: str) -> bool:
    """Server-side copy to `key` unless it exists (the original stays where it is).

    moto ignores `IfNoneMatch` on CopyObject, so the key is checked first as well; two racing
    copies of the same original write the same bytes, which keeps the object immutable in effect.
    An original over COPY_THRESHOLD, which CopyObject refuses, is copied in parts
    (`_multipart_copy`), as conditional as the rest. S3's errors are raised as they are (a missing
    original: 404 from its HEAD).
    """
    if exists(bucket, key):
        return False
    source = client().head_object(Bucket=src_bucket, Key=src_key)
    if source["ContentLength"] > COPY_THRESHOLD:
        return _create_only(bucket, key, lambda: _multipart_copy(src_bucket, src_key, source["ETag"],
                                                                 source["ContentLength"], bucket, key))

    def copy() -> None:
        client().copy_object(Bucket=bucket, Key=key, CopySource={"Bucket": src_bucket, "Key": src_key},
                             IfNoneMatch="*")
    return _create_only(bucket, key, copy)


def _multipart_copy(src_bucket: str, src_key: str, etag: str, size: int, bucket: str, key: str) -> None:
    """One multipart copy of the `size` bytes of the original whose ETag is `etag`: CreateMultipartUpload,
    an UploadPartCopy per range (COPY_WORKERS at a time), then a complete with `IfNoneMatch` (a key that
    exists: 412, which `_create_only` reads as "already exists"). Each range is asked for with
    `CopySourceIfMatch`, so an original replaced meanwhile fails the copy (LakeUnavailable: a later
    attempt copies what is there then) instead of mixing two versions; a 412 there is the original's,
    never the key's. On any failure the upload is aborted and the failure raised."""
    s3 = client()
    part_size = max(COPY_PART_SIZE, -(-size // MAX_COPY_PARTS))
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

    def copy_part(number: int, start: int) -> dict:
        try:
            answer = s3.upload_part_copy(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                         CopySource={"Bucket": src_bucket, "Key": src_key}, CopySourceIfMatch=etag,
                                         CopySourceRange=f"bytes={start}-{min(start + part_size, size) - 1}")
        except ClientError as e:
            if _code(e) in _EXISTS:
                raise LakeUnavailable(f"s3://{src_bucket}/{src_key} changed while it was copied to {key}; "
                                      "not copied") from None
            raise
        return {"ETag": answer["CopyPartResult"]["ETag"], "PartNumber": number}
    starts = range(0, size, part_size)
    workers = ThreadPoolExecutor(min(COPY_WORKERS, len(starts)), "part-copy")
    try:
        copies = [workers.submit(copy_part, number, start) for number, start in enumerate(starts, 1)]
        parts = [part.result() for part in copies]
        s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts},
                                     IfNoneMatch="*")
    except BaseException:
        workers.shutdown(cancel_futures=True)  # the parts not started yet never start; then abort
        _abort(s3, bucket, key, upload_id)
        raise
    finally:
        workers.shutdown()


def head(bucket: str, key: str) -> dict | None:
    """`{"etag", "size", "last_modified"}` of an object, or None if it does not exist."""
    try:
        answer = client().head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if is_missing(e):
            return None
        raise
    return {"etag": answer["ETag"].strip('"'), "size": answer["ContentLength"], "last_modified": answer["LastModified"]}


def list_objects(bucket: str, prefix: str = "") -> Iterator[dict]:
    """`{"key", "etag", "size", "last_modified"}` of every object under `prefix`, in key order."""
    for page in client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            yield {"key": item["Key"], "etag": item["ETag"].strip('"'), "size": item["Size"],
                   "last_modified": item["LastModified"]}


def open_stream(bucket: str, key: str, etag: str):
    """The body of exactly the version of `key` whose ETag is `etag`, as a stream read in chunks.

    Raises S3's ClientError when the key is gone (NoSuchKey) or now holds other bytes
    (PreconditionFailed): the caller decides what that means.
    """
    return client().get_object(Bucket=bucket, Key=key, IfMatch=f'"{etag}"')["Body"]
