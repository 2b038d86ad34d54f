"""What the local runtime mends in moto's server before it serves: flaws of moto's that S3 does not have.

Both servers the project starts apply them: the tests' in-memory one (`python -m
totesys_etl.local.services.moto_fixes`, moto's own server otherwise) and `up`'s lake (`moto_disk.py`).

- **A key's ETag read without the key's lock.** moto computes an object's or a part's MD5 on first
  use by seeking its buffer to 0 and reading it to the end, without the lock its `value` takes. Two
  requests at once that both need a new key's ETag (an UploadPart's answer and a ListParts of the
  same upload; two HEADs just after a PUT) then move one buffer's position under each other, and
  one of them hashes the wrong bytes and may keep that MD5 as the key's ETag for good. The bytes
  stay right, so nothing looks wrong until `s3.holds` compares ETags: a create-only write that
  finds its key taken then takes its own earlier object for another writer's (a fresh-clone CI
  failed so, in `test_s3_growing`). Here the ETag is computed under the key's lock.
- **A listing of moto's own package on every request.** moto's dispatcher lists its package folder
  (a `listdir` and some 180 `stat`s) twice per request to tell a service name from a host name. The
  list cannot change while the server runs, so it is read once: about 3 ms of every request
  (profiled), more than a write's disk copy costs (ADR 4).
"""
from __future__ import annotations

#: Set on the mended property, so applying twice wraps moto's own ETag once.
_MENDED = "mended"


def apply() -> None:
    """Mend moto in this process (idempotent); call before the server handles its first request."""
    _etag_under_the_key_lock()
    _list_moto_modules_once()


def _etag_under_the_key_lock() -> None:
    from moto.s3.models import FakeKey

    if getattr(FakeKey.etag, _MENDED, False):
        return
    moto_etag = FakeKey.etag.fget

    def etag(key) -> str:
        # moto's ETag reads `_value_buffer` directly, never `value`, so taking the (non-reentrant)
        # lock around it cannot deadlock; once computed it is cached and needs no lock.
        if key._etag is not None:
            return moto_etag(key)
        with key.lock:
            return moto_etag(key)

    FakeKey.etag = _MendedProperty(etag)


class _MendedProperty(property):
    """The mended ETag, marked as such (a plain property takes no attributes)."""

    mended = True


def _list_moto_modules_once() -> None:
    import moto.backends as backends

    listed = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: listed


def main(argv: list[str] | None = None) -> None:
    """`python -m totesys_etl.local.services.moto_fixes -p PORT`: moto's in-memory server, mended."""
    from moto.server import main as moto_main

    apply()
    moto_main(argv)


if __name__ == "__main__":
    main()
