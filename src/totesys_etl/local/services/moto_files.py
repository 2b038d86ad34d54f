"""moto keys whose bytes stay in the disk store's object files (`moto_disk.py`; ADR 4 says why).

moto keeps every object's bytes in a buffer of its own, so the store used to copy each one twice:
at start, every object file read back whole into moto (a 4.8 GB lake took 43 s, longer than `up`
waits), and at each CompleteMultipartUpload, where moto reads every part back, joins them in memory
three times over and writes the result to a new buffer before the store copies it to its file (a
1 GB CSV over botocore's 60 s timeout on a busy machine). Here a key's buffer can be a byte range
of its object file instead (`FileBuffer`), and a multipart upload is completed by copying its parts
once, straight into that file (`complete_on_disk`). S3 never copies an object through the caller's
CPU either; both costs were local only.
"""
from __future__ import annotations

import base64
import binascii
import codecs
import hashlib
import io
import json
import os
from typing import Callable, Iterator

#: Bytes before a completed upload's data in its object file: its header line, padded with spaces.
#: Its data is copied before moto has built its key, the header (metadata, times) is written last.
HEADER_SLOT = 64 * 1024
_CHUNK = 1 << 20


class FileBuffer:
    """The bytes of one moto key: `size` bytes from `offset` of the file at `path`, read-only.

    It stands in for the key's `SpooledTemporaryFile` (moto seeks, reads, and at dispose closes it).
    It holds no file open: a lake of many objects must not hold a descriptor each. Each read opens
    the file and checks it is still the one the key was made from (device and inode): a newer
    object that replaced the file is never served for an older key a request still holds (that
    request fails instead, and the client's retry reads the new object).
    """

    def __init__(self, path: str, offset: int, size: int, identity: tuple[int, int]):
        self.path, self.offset, self.size, self.identity = path, offset, size, identity
        self.closed = False
        self._position = 0

    @classmethod
    def of(cls, path: str, offset: int) -> "FileBuffer":
        """The bytes after `offset` of the file at `path` as it is now."""
        found = os.stat(path)
        return cls(path, offset, found.st_size - offset, (found.st_dev, found.st_ino))

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self.size}[whence]
        self._position = max(0, base + position)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        left = self.size - self._position
        wanted = left if size is None or size < 0 else min(size, left)
        if wanted <= 0:
            return b""
        with open(self.path, "rb") as f:
            found = os.fstat(f.fileno())
            if (found.st_dev, found.st_ino) != self.identity:
                raise OSError(f"{self.path} now holds a newer object")
            chunks, start = [], self.offset + self._position
            while wanted:  # one pread returns at most about 2 GB
                chunk = os.pread(f.fileno(), min(wanted, 1 << 30), start)
                if not chunk:
                    raise OSError(f"{self.path} is shorter than its object")
                chunks.append(chunk)
                start, wanted = start + len(chunk), wanted - len(chunk)
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._position += len(data)
        return data

    def write(self, data: bytes) -> int:
        raise io.UnsupportedOperation("a stored object's bytes are not changed in place")

    def truncate(self, size: int | None = None) -> int:
        raise io.UnsupportedOperation("a stored object's bytes are not changed in place")

    def close(self) -> None:
        self.closed = True


def attach(key, buffer: FileBuffer) -> None:
    """Make `buffer` the bytes of moto's `key` (made with an empty value), in place of its own buffer."""
    with key.lock:
        key._value_buffer.close()
        key._value_buffer = buffer
        key.contentsize = buffer.size


def header_line(header: dict, slot: int | None = None) -> bytes:
    """An object file's first line: its JSON header, padded with spaces to `slot` bytes when given
    (JSON allows the trailing spaces, so a reader takes either kind of line alike)."""
    line = json.dumps(header).encode()
    if slot is None:
        return line + b"\n"
    if len(line) >= slot:
        raise ValueError("header longer than its slot")
    return line + b" " * (slot - 1 - len(line)) + b"\n"


class _Crc32:
    """`binascii.crc32` fed in pieces, with hashlib's `update` and `digest`."""

    def __init__(self):
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = binascii.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def _running_digest(algorithm: str) -> Callable | None:
    """What makes a digest equal to moto's `compute_checksum(data, algorithm, encode_base64=False)` fed
    the data in pieces; None where moto would call a library that is not fed here (awscrt's
    CRC64NVME, crc32c's CRC32C): such an upload is left to moto's own complete."""
    from moto.s3 import utils

    if algorithm == "CRC64NVME":  # without awscrt moto computes a CRC32 instead
        return None if utils.HAS_CRT else _Crc32
    if algorithm == "CRC32C":
        try:
            import crc32c  # noqa: F401 - moto uses it when installed
            return None
        except ImportError:
            return _Crc32
    if algorithm == "CRC32":
        return _Crc32
    if algorithm == "SHA1":
        return lambda: hashlib.sha1(usedforsecurity=False)
    return lambda: hashlib.sha256(usedforsecurity=False)


class PartsChecksum:
    """moto's `MultipartChecksumBuilder` fed chunk by chunk: a COMPOSITE checksum is the checksum of
    the parts' checksums (`-N`), any other type one over the whole object."""

    def __init__(self, algorithm: str | None, checksum_type: str | None, new_digest: Callable):
        self.algorithm = algorithm or "CRC64NVME"
        self.type = checksum_type or ("FULL_OBJECT" if self.algorithm == "CRC64NVME" else "COMPOSITE")
        self._new, self._whole, self._parts, self.count = new_digest, new_digest(), bytearray(), 0

    def part(self):
        """The digest the next part's bytes go into."""
        return self._new() if self.type == "COMPOSITE" else self._whole

    def end_part(self, digest) -> None:
        if self.type == "COMPOSITE":
            self._parts.extend(digest.digest())
        self.count += 1

    def details(self) -> tuple[str, str, int]:
        """(type, base64 value, parts), as the builder's `build()` gives them."""
        from moto.s3.utils import compute_checksum

        if self.type == "COMPOSITE":
            return self.type, compute_checksum(bytes(self._parts), self.algorithm).decode(), self.count
        return self.type, base64.b64encode(self._whole.digest()).decode(), 1


def complete_on_disk(backend, bucket_name: str, multipart_id: str, body: Iterator[tuple[int, str]],
                     write_parts: Callable, commit: Callable, moto_complete: Callable):
    """`S3Backend.complete_multipart_upload`, with the parts copied once into the key's object file.

    Every step but the copy is moto's, in moto's order, with moto's exceptions (so its answers, the
    errors included, are moto's): the upload looked up, each named part checked against its ETag and
    every part but the last against S3's 5 MB minimum, the ETag `md5(part md5s)-N`, the key put (its
    notifications), its metadata, tags, ACL and checksum, the CompleteMultipartUpload notification.
    A checksum that moto computes with a library (awscrt's CRC64NVME, crc32c's CRC32C) is left to
    `moto_complete` whole. `write_parts(bucket, key, parts, checksum)` copies the parts after a
    header slot and gives the file's path; `commit(key, path)` writes the header and puts the file
    in place.
    """
    from moto.s3 import models, notifications
    from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML

    bucket = backend.get_bucket(bucket_name)
    multipart = bucket.multiparts[multipart_id]
    algorithm = multipart.metadata.get("x-amz-checksum-algorithm")
    new_digest = _running_digest(algorithm or "CRC64NVME")
    if new_digest is None:
        return moto_complete(backend, bucket_name, multipart_id, body)
    checksum = PartsChecksum(algorithm, multipart.metadata.get("x-amz-checksum-type"), new_digest)
    decode_hex = codecs.getdecoder("hex_codec")
    parts, md5s, last = [], bytearray(), None
    for number, etag in body:
        part = multipart.parts.get(number)
        if part is None or part.etag.replace('"', "") != etag.replace('"', ""):
            raise InvalidPart()
        if last is not None and last.contentsize < models.S3_UPLOAD_PART_MIN_SIZE:
            raise EntityTooSmall()
        md5s.extend(decode_hex(part.etag.replace('"', ""))[0])
        parts.append(part)
        last = part
    if not parts:
        raise MalformedXML
    etag = f"{hashlib.md5(bytes(md5s), usedforsecurity=False).hexdigest()}-{len(parts)}"
    written = write_parts(bucket_name, multipart.key_name, parts, checksum)
    try:
        del bucket.multiparts[multipart_id]
        key = backend.put_object(bucket_name, multipart.key_name, b"", storage=multipart.storage, etag=etag,
                                 multipart=multipart, encryption=multipart.sse_encryption,
                                 kms_key_id=multipart.kms_key_id, disable_notification=True)
        attach(key, FileBuffer.of(written, HEADER_SLOT))
        # moto's put_object announces the key as `ObjectCreated:Put` too: sent here, once it has its bytes.
        notifications.send_event(backend.account_id, notifications.S3NotificationEvent.OBJECT_CREATED_PUT_EVENT,
                                 bucket, key)
        key.set_metadata(multipart.metadata)
        key.checksum_algorithm = algorithm
        key.checksum_type, key.checksum_value, key.checksum_parts = checksum.details()
        backend.put_object_tagging(key, multipart.tags)
        backend.put_object_acl(bucket_name=bucket_name, key_name=key.name, acl=multipart.acl,
                               disable_notification=True)
    except BaseException:
        _unlink(written)
        raise
    commit(key, written)
    notifications.send_event(backend.account_id,
                             notifications.S3NotificationEvent.OBJECT_CREATED_COMPLETE_MULTIPART_UPLOAD_EVENT,
                             bucket, bucket.keys.get(multipart.key_name))
    return key


def write_parts(temporary: str, parts: list, checksum: PartsChecksum) -> str:
    """Copy `parts` (moto's part keys, in order) into a new file at `temporary` after a blank header
    slot, reading each in 1 MB chunks under its lock and feeding `checksum`: one pass over the bytes,
    nothing held whole. The file's path."""
    try:
        with open(temporary, "wb") as f:
            f.write(b" " * (HEADER_SLOT - 1) + b"\n")
            for part in parts:
                digest = checksum.part()
                with part.lock:
                    part._value_buffer.seek(0)
                    while chunk := part._value_buffer.read(_CHUNK):
                        digest.update(chunk)
                        f.write(chunk)
                checksum.end_part(digest)
    except BaseException:
        _unlink(temporary)
        raise
    return temporary


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
