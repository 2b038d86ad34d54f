"""S3 failures as LakeUnavailable: one line naming the bucket, the key and S3's error code."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from botocore.exceptions import BotoCoreError, ClientError

from totesys_etl import lake
from totesys_etl.errors import LakeUnavailable


@dataclass
class Call:
    """What a guarded call learned: `missing` is True when the object did not exist (missing_ok)."""

    missing: bool = False


@contextmanager
def lake_call(bucket: str, key: str, missing_ok: bool = False) -> Iterator[Call]:
    """Turn botocore's errors inside the block into LakeUnavailable (error_kind lake_unavailable).

    With `missing_ok`, a missing object is not an error: the block ends and `call.missing` is set.
    """
    call = Call()
    try:
        yield call
    except ClientError as e:
        if missing_ok and lake.is_missing(e):
            call.missing = True
            return
        code = e.response.get("Error", {}).get("Code", "error")
        raise LakeUnavailable(f"s3://{bucket}/{key}: {code}") from None
    except BotoCoreError as e:
        raise LakeUnavailable(f"s3://{bucket}/{key}: {type(e).__name__}") from None
