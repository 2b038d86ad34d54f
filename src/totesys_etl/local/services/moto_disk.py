"""moto's server with its S3 buckets and objects kept on disk: the local lake survives `down`/`up`,
a reboot and a `kill -9` (contract §6; readme_files/adr/0004-a-lake-on-disk.md says why this design).

moto keeps S3 in memory. This runs moto's own WSGI application in-process and, after every S3
request that changed something and before its response leaves, writes the state it left to disk:
- an object: one file holding a JSON header line (key, ETag, last-modified, metadata) and the bytes,
  written to a temporary name and renamed over the old one, so a killed process leaves either
  the old object or the new one, never half of one; a deleted object's file is removed;
- a bucket: its name, region and the body of its last notification configuration.
A completed multipart upload is written once, its parts copied straight into its object file, and
moto's key reads its bytes from there (`moto_files.py`). At start every object goes back into
moto's backend with its own ETag (a multipart object keeps its `<md5>-<parts>` ETag: courier marks
are keyed by it), last-modified time and metadata, without notifications, its bytes left in its
file until a request reads them: start-up reads headers, not the lake. The notification
configurations are replayed through the application. One server per folder: a second one stops
at once, saying so (`server.lock`).

Not kept: uploads in progress (an upload is acknowledged only when completed), SQS queues and
their messages (the local runtime recreates the queues each tick, and the sweeps find whatever a
lost notification announced), and every other moto service. Writes are not fsynced: a killed
process loses nothing (the kernel holds what was written), a power cut may, as the local
PostgreSQL runs with fsync off. Path-style requests only, which boto3 sends to an IP endpoint,
and a bucket's current objects only (no versioning: the pipeline uses none).
"""
from __future__ import annotations

import argparse
import fcntl
import hashlib
import io
import json
import os
import re
import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable
from urllib.parse import parse_qs, unquote

from totesys_etl.local.services import moto_fixes
from totesys_etl.local.services.moto_files import (
    HEADER_SLOT, FileBuffer, PartsChecksum, attach, complete_on_disk, header_line, write_parts)

#: Requests that may change S3's state; GET and HEAD never do.
_WRITES = {"PUT", "POST", "DELETE"}
_STRIPES = 64


@dataclass(frozen=True)
class S3Write:
    """What an S3 request named: a bucket, maybe a key, and its query (e.g. `notification`, `delete`)."""

    bucket: str
    key: str | None
    query: dict[str, list[str]]


def s3_write(environ: dict) -> S3Write | None:
    """The bucket and key a state-changing S3 request names; None for reads and other services.

    The service is the signing scope of the request's credential (`.../<region>/s3/aws4_request`),
    as moto's dispatcher reads it; an unsigned request counts as S3, moto's default.
    """
    if environ.get("REQUEST_METHOD") not in _WRITES:
        return None
    return _named(environ)


def _named(environ: dict) -> S3Write | None:
    """The bucket, key and query an S3 request names (any method); None for moto's API and other services."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or ""
    path, _, query_text = raw.partition("?")
    if not raw:
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        query_text = environ.get("QUERY_STRING", "")
    else:
        path = unquote(path)
    if path.startswith("/moto-api"):
        return None
    query = parse_qs(query_text, keep_blank_values=True)
    credential = environ.get("HTTP_AUTHORIZATION", "").partition("Credential=")[2] or \
        (query.get("X-Amz-Credential") or [""])[0]
    scope = credential.split(",")[0].split("/")
    if len(scope) >= 5 and scope[3] != "s3":
        return None
    bucket, _, key = path.lstrip("/").partition("/")
    if not bucket:
        return None
    return S3Write(bucket, key or None, query)


class FolderInUse(Exception):
    """Another server holds the folder: two would each keep their own state and overwrite the other's files."""


def _lock(folder: Path):
    """An exclusive lock on `folder/server.lock`, held for the life of the process (the kernel frees it
    when the process ends, `kill -9` included); the file says which process holds it."""
    held = open(folder / "server.lock", "a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "unknown"
        held.close()
        raise FolderInUse(f"moto_disk: {folder} is in use by another moto_disk server (pid {holder}); "
                          f"stop it first (totesys-etl down)") from None
    held.seek(0)
    held.truncate()
    held.write(f"{os.getpid()}\n")
    held.flush()
    return held


class DiskStore:
    """The S3 state of one moto process, mirrored in `folder` (`buckets.json` and `objects/`)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.objects = folder / "objects"
        self.objects.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(folder)
        self._objects, self._folders = str(self.objects), set()
        self._buckets_path = folder / "buckets.json"
        self.buckets: dict[str, dict] = (json.loads(self._buckets_path.read_text())
                                         if self._buckets_path.exists() else {})
        #: (bucket, key) -> the ETag and last-modified on disk: what a sync compares with, no disk read.
        self.index: dict[tuple[str, str], tuple[str, str]] = {}
        self._buckets_lock = threading.Lock()
        self._stripes = [threading.Lock() for _ in range(_STRIPES)]

    # ---- paths
    def _object_path(self, bucket: str, key: str) -> str:
        """`objects/<2 hex>/<sha256 of bucket and key>`: any key (1,024 bytes, `..`, newlines) is a safe name."""
        digest = hashlib.sha256(f"{bucket}\0{key}".encode()).hexdigest()
        folder = os.path.join(self._objects, digest[:2])
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        return os.path.join(folder, digest)

    def _stripe(self, bucket: str, key: str) -> threading.Lock:
        return self._stripes[hash((bucket, key)) % _STRIPES]

    # ---- writes: called after a request, before its response leaves
    def sync(self, write: S3Write, body: bytes) -> None:
        """Make the disk hold what moto now holds for the bucket or key `write` named."""
        from moto.s3.models import s3_backends

        located = s3_backends.bucket_accounts.get(write.bucket)
        bucket = s3_backends[located[1]][located[0]].buckets.get(write.bucket) if located else None
        if bucket is None:
            self._forget_bucket(write.bucket)
            return
        if write.key is not None:
            self._sync_key(bucket, write.key)
            return
        self._remember_bucket(bucket, located[1], body if "notification" in write.query else None)
        if "delete" in write.query:  # DeleteObjects: every key the bucket no longer holds goes
            for _, key in [k for k in list(self.index) if k[0] == write.bucket]:  # a copy: other threads write
                self._sync_key(bucket, key)

    def _sync_key(self, bucket, key_name: str) -> None:
        with self._stripe(bucket.name, key_name):
            key = bucket.keys.get(key_name)
            path = self._object_path(bucket.name, key_name)
            if key is None:
                if self.index.pop((bucket.name, key_name), None) is not None:
                    _unlink(path)
                return
            stamp, header = _header(bucket.name, key_name, key)
            if self.index.get((bucket.name, key_name)) == stamp:
                return
            temporary = f"{path}.{threading.get_ident()}.tmp"
            line = header_line(header)
            with open(temporary, "wb") as f:
                f.write(line)
                with key.lock:
                    key._value_buffer.seek(0)
                    while chunk := key._value_buffer.read(1 << 20):
                        f.write(chunk)
            with key.lock:  # a key read from its file now reads the new one (the old one is unlinked)
                os.replace(temporary, path)
                if isinstance(key._value_buffer, FileBuffer):
                    key._value_buffer = FileBuffer.of(path, len(line))
            self.index[(bucket.name, key_name)] = stamp

    # ---- CompleteMultipartUpload (moto_files.complete_on_disk): the parts copied once, into the key's file
    def write_parts(self, bucket_name: str, key_name: str, parts: list, checksum: PartsChecksum) -> str:
        """The parts copied in order into a temporary file beside the key's own, after a blank header slot
        (a name of its own: `_sync_key`'s temporary file in the same thread must not be this one)."""
        return write_parts(f"{self._object_path(bucket_name, key_name)}.{threading.get_ident()}.parts.tmp", parts,
                           checksum)

    def commit(self, key, written: str) -> None:
        """Write the completed key's header into its file's slot and put the file in the key's place,
        unless another write of the same key has replaced it in moto meanwhile (then that one is on disk)."""
        bucket = _bucket(key.bucket_name)
        stamp, header = _header(key.bucket_name, key.name, key)
        try:
            line = header_line(header, HEADER_SLOT)
        except ValueError:  # a header over 64 kB (S3 allows 2 kB of metadata; moto more): the general way
            if bucket is not None:
                self._sync_key(bucket, key.name)
            _unlink(written)
            return
        with self._stripe(key.bucket_name, key.name):
            if bucket is None or bucket.keys.get(key.name) is not key:
                _unlink(written)
                return
            with open(written, "r+b") as f:
                f.write(line)
            with key.lock:
                os.replace(written, self._object_path(key.bucket_name, key.name))
                key._value_buffer.path = self._object_path(key.bucket_name, key.name)
            self.index[(key.bucket_name, key.name)] = stamp

    def _remember_bucket(self, bucket, account_id: str, notification: bytes | None) -> None:
        with self._buckets_lock:
            entry = self.buckets.get(bucket.name, {})
            wanted = {"region": bucket.region_name, "account_id": account_id, "partition": bucket.partition,
                      "notification": notification.decode() if notification is not None
                      else entry.get("notification")}
            if entry != wanted:
                self.buckets[bucket.name] = wanted
                self._save_buckets()

    def _forget_bucket(self, name: str) -> None:
        with self._buckets_lock:
            if self.buckets.pop(name, None) is not None:
                self._save_buckets()
        for bucket, key in [k for k in list(self.index) if k[0] == name]:
            _unlink(self._object_path(bucket, key))
            self.index.pop((bucket, key), None)

    def _save_buckets(self) -> None:
        temporary = self._buckets_path.with_suffix(".tmp")
        temporary.write_text(json.dumps(self.buckets, indent=1))
        os.replace(temporary, self._buckets_path)

    # ---- start
    def restore(self, app: Callable) -> int:
        """Put every bucket and object on disk back into moto (no notifications); the objects restored."""
        from moto.s3.models import s3_backends

        for name, entry in self.buckets.items():
            backend = s3_backends[entry["account_id"]][entry.get("partition", "aws")]
            if name not in backend.buckets:
                backend.create_bucket(name, entry["region"])
        restored = 0
        for path in self.objects.glob("*/*"):
            if path.name.endswith(".tmp"):  # a write the process was killed in: never acknowledged
                path.unlink(missing_ok=True)
                continue
            try:
                with open(path, "rb") as f:
                    line = f.readline(1 << 20)
                    header = json.loads(line) if line.endswith(b"\n") else {}
                    found = os.fstat(f.fileno())
                entry = self.buckets.get(header["bucket"])
            except (OSError, ValueError, KeyError, TypeError) as e:  # not one of ours: said, and left where it is
                print(f"moto_disk: {path} is not a stored object ({type(e).__name__}); skipped", flush=True)
                continue
            if entry is None:
                path.unlink()
                continue
            backend = s3_backends[entry["account_id"]][entry.get("partition", "aws")]
            key = backend.put_object(header["bucket"], header["key"], b"", etag=header["etag"],
                                     disable_notification=True)
            # The bytes stay in the file until read: start-up costs the number of objects, not their bytes.
            attach(key, FileBuffer(str(path), len(line), found.st_size - len(line), (found.st_dev, found.st_ino)))
            key.set_metadata(header["metadata"])  # over the defaults put_object set (Content-Type)
            key.last_modified = datetime.fromisoformat(header["last_modified"])  # naive UTC, as moto keeps it
            self.index[(header["bucket"], header["key"])] = (header["etag"], header["last_modified"])
            restored += 1
        for name, entry in self.buckets.items():
            if entry.get("notification"):
                _replay(app, "PUT", f"/{name}?notification", entry["notification"].encode(), entry["region"])
        return restored


def _header(bucket_name: str, key_name: str, key) -> tuple[tuple[str, str], dict]:
    """What the disk holds of a key besides its bytes, and the stamp (ETag, last-modified) a sync compares."""
    stamp = (key.etag.strip('"'), key.last_modified.isoformat())
    return stamp, {"bucket": bucket_name, "key": key_name, "etag": stamp[0], "last_modified": stamp[1],
                   "metadata": dict(key.metadata)}


def _bucket(name: str):
    """moto's bucket of that name, or None."""
    from moto.s3.models import s3_backends

    located = s3_backends.bucket_accounts.get(name)
    return s3_backends[located[1]][located[0]].buckets.get(name) if located else None


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _replay(app: Callable, method: str, path: str, body: bytes, region: str) -> None:
    """One S3 request through the application, as a client would send it (moto checks no signature)."""
    from werkzeug.test import EnvironBuilder

    environ = EnvironBuilder(method=method, path=path, data=body, headers={
        "Authorization": f"AWS4-HMAC-SHA256 Credential=local/20000101/{region}/s3/aws4_request, "
                         f"SignedHeaders=host, Signature=0"}).get_environ()
    response = app(environ, lambda status, headers, exc_info=None: None)
    b"".join(response)


class PersistingApp:
    """moto's WSGI application, with each state-changing S3 request's result on disk before it is answered."""

    def __init__(self, app: Callable, store: DiskStore):
        self.app, self.store = app, store

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        write = s3_write(environ)
        if write is None:
            ranged = _ranged_get(self.app, environ, start_response)
            return self.app(environ, start_response) if ranged is None else ranged
        body = b""
        if write.key is None and "notification" in write.query:  # kept to replay at start
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
        status = []

        def recording_start_response(code, headers, exc_info=None):
            status.append(code)
            return start_response(code, headers, exc_info)

        # moto builds its whole response here; the server sends nothing until it is iterated.
        response = self.app(environ, recording_start_response)
        if status and status[0].startswith("2"):
            self.store.sync(write, body)
        return response


_BYTE_RANGE = re.compile(r"bytes=(\d+)-(\d+)")


def _ranged_get(app: Callable, environ: dict, start_response: Callable) -> list[bytes] | None:
    """Answer a GET of one object's byte range `bytes=a-b` by reading only that range; None to leave
    the request to moto.

    moto answers a ranged GET by reading the whole object out of its buffer and slicing it, so
    s3transfer's ranged download (8 MB ranges) of an N-byte object made the server read N²/8 MB
    bytes: a 512 MB object took 26 s of the server's CPU to download, a 128 MB one 2.7 s. S3 itself
    reads a range. moto still decides everything but the bytes: the same request as a HEAD (moto
    applies the range, conditions and headers to a HEAD as to a GET) gives the status and headers;
    only a 206 whose ETag is the stored key's is answered here, the range read under the key's lock.
    Anything else (a suffix or open range, a version, an error, a condition that fails) goes to moto.
    """
    if environ.get("REQUEST_METHOD") != "GET" or environ.get("QUERY_STRING") or \
            not _BYTE_RANGE.fullmatch(environ.get("HTTP_RANGE", "")):
        return None
    named = _named(environ)
    if named is None or named.key is None:
        return None
    answered: list = []
    b"".join(app(dict(environ, REQUEST_METHOD="HEAD"), lambda status, headers, exc_info=None:
                 answered.extend((status, headers))))
    if not answered or not answered[0].startswith("206"):
        return None
    status, headers = answered
    found = {name.lower(): value for name, value in headers}
    start, end = (int(n) for n in found["content-range"].split()[1].split("/")[0].split("-"))
    key = _stored_key(named.bucket, named.key)
    if key is None or key.etag.strip('"') != found.get("etag", "").strip('"'):
        return None
    with key.lock:
        if key.disposed:
            return None
        key._value_buffer.seek(start)
        body = key._value_buffer.read(end - start + 1)
    if len(body) != end - start + 1:
        return None
    start_response(status, headers)
    return [body]


def _stored_key(bucket_name: str, key_name: str):
    """moto's current key object for a bucket and key, or None."""
    bucket = _bucket(bucket_name)
    return None if bucket is None else bucket.keys.get(key_name)


def _complete_uploads_on_disk(store: DiskStore) -> None:
    """moto's CompleteMultipartUpload, with the parts copied once into the key's object file
    (`moto_files.complete_on_disk`): moto's own read each part back and joined them in memory, about
    seven passes over the bytes, a 1 GB CSV over botocore's 60 s timeout on a busy machine."""
    from moto.s3.models import S3Backend

    moto_complete = S3Backend.complete_multipart_upload

    def complete(backend, bucket_name: str, multipart_id: str, body):
        return complete_on_disk(backend, bucket_name, multipart_id, body, store.write_parts, store.commit,
                                moto_complete)

    S3Backend.complete_multipart_upload = complete


def main(argv: list[str] | None = None) -> None:
    """`python -m totesys_etl.local.services.moto_disk -p PORT --data FOLDER`: moto's server, S3 on disk."""
    import signal
    import sys

    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True, help="the folder S3's buckets and objects live in")
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds queue URLs from it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    moto_fixes.apply()
    app = DomainDispatcherApplication(create_backend_app)
    try:
        store = DiskStore(args.data)
    except FolderInUse as e:
        sys.exit(str(e))  # one line on stderr, exit status 1
    _complete_uploads_on_disk(store)
    restored = store.restore(app)
    print(f"moto_disk: {restored} object(s) in {len(store.buckets)} bucket(s) restored from {args.data}", flush=True)
    run_simple(args.host, args.port, PersistingApp(app, store), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
