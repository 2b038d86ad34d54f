"""A run's sets of transaction ids, kept beside its manifest when they are large (contract §2
"Bounded bookkeeping", §4: a stage's own create-only, per-run state under `_state/`).

Why: the sets a run records (`seen`, `in_progress`, each claim's `xids` in `unread`, and the same
inside a stopped table's `since`) are exact, so their size follows how fragmented they are. A
transaction whose savepoints take ids one for one between other transactions' commits fragments
them without bound: 10,000 such interleavings are about 200 KB of range text. The manifest must
stay under 64 KB whatever happens, so past `INLINE_LIMIT` bytes of set text a run writes every set
to one object of its own, `_state/ingest_xids/<run_id>.bin`, create-only like everything it writes,
and the manifest names it (`xid_state`: key, SHA-256, bytes) and holds `{"state": i}` where each
set's text was. The lists of claims (`unread`, the run's and each stopped table's: up to 200 each,
so eleven stopped tables are 160 KB of JSON) go there too, `{"state_claims": j}` in their place.
The encoding is compact: every set's bounds delta-encoded as little-endian uint64 and compressed
with zlib; 100,000 interleavings take a few KB, random ones about two bytes per bound.

A manifest without `xid_state` (every manifest before this, and every small one now) is read as
before. A named state object that is missing, or whose bytes do not match, stops the run with one
line (`StateUnreadable`): guessing would lose or re-ship versions, and skipping the manifest for an
older one would ship again everything since. An object larger than its manifest says is refused by
its size before its body is read; a manifest naming one over MAX_BYTES is corrupt.
"""
from __future__ import annotations

import hashlib
import re
import sys
import zlib
from array import array
from itertools import accumulate, islice
from operator import sub

from totesys_etl.adapters import s3
from totesys_etl.errors import InvalidInput, LakeUnavailable, RunIdCollision, lake_errors
from totesys_etl.ingest.xids import XidSet

PREFIX = "_state/ingest_xids/"
FIELD = "xid_state"
#: Bytes of id-set text a manifest holds inline; past it every set goes to the state object, leaving
#: the manifest its files, stamps and `{"state": i}` references.
INLINE_LIMIT = 8 * 1024
_MAGIC = b"TXIDS2\n"
#: The state objects written before claims were kept there too: sets only, no count in front.
_MAGIC_SETS = b"TXIDS1\n"
#: A decoded state larger than this is corrupt (100,000 interleavings decode to ~3 MB).
_MAX_DECODED = 64 << 20
#: The most bytes a state object may hold: zlib adds at most 5 bytes per 16 KiB block (and a few in
#: all) to what it cannot compress, so a larger object cannot decode within _MAX_DECODED. A manifest
#: naming a larger one is corrupt; an object larger than its manifest says is refused by its size, its
#: body unread (a multi-GB object read whole would kill the ingest for memory, with no error line, on
#: every attempt).
MAX_BYTES = _MAX_DECODED + (_MAX_DECODED >> 10)
_SHA256 = re.compile(r"[0-9a-f]{64}")


class StateUnreadable(LakeUnavailable):
    """The state object a manifest names is missing or not what the manifest says: the run stops
    (alarmed as the lake failing) rather than guess which ids the previous run saw."""


def state_key(run_id: str) -> str:
    return f"{PREFIX}{run_id}.bin"


def encode(sets: list[XidSet], lists: list[list[tuple[int, str]]] = ()) -> bytes:
    """The sets, and the claim lists (each claim: its set's index, its `stamped_up_to` text), as
    `_MAGIC` + zlib(uint64 LE: how many numbers follow; the sets' count, each set's range count, then
    every set's bounds delta-encoded from 0; the lists' count, each list's claim count, then each
    claim's set index and stamp length; after the numbers, the stamps' ASCII text). Array operations
    throughout: 100,000 ranges cost milliseconds."""
    packed = array("Q", [len(sets), *map(len, sets)])
    for xids in sets:
        if xids.bounds:
            packed.append(xids.bounds[0])
            packed.extend(map(sub, islice(xids.bounds, 1, None), xids.bounds))
    packed.append(len(lists))
    packed.extend(map(len, lists))
    stamps = []
    for claims in lists:
        for index, stamp in claims:
            packed.extend((index, len(stamp)))
            stamps.append(stamp)
    packed.insert(0, len(packed))
    if sys.byteorder != "little":
        packed.byteswap()
    return _MAGIC + zlib.compress(packed.tobytes() + "".join(stamps).encode("ascii"), 6)


def decode(body: bytes) -> tuple[list[XidSet], list[list[tuple[int, str]]]]:
    """The sets and claim lists `encode` wrote (a state object from before claims were kept there,
    `_MAGIC_SETS`, holds sets only); ValueError for anything else (checked, never trusted)."""
    magic = next((m for m in (_MAGIC, _MAGIC_SETS) if body.startswith(m)), None)
    if magic is None:
        raise ValueError("not an ingest id state")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(body[len(magic):], _MAX_DECODED)
    except zlib.error as e:
        raise ValueError(f"not an ingest id state ({e})") from None
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise ValueError("not an ingest id state (truncated, trailing or oversized)")
    text = b""
    if magic == _MAGIC:
        count = int.from_bytes(raw[:8], "little") if len(raw) >= 8 else -1
        if not 0 <= count <= (len(raw) - 8) // 8:
            raise ValueError("not an ingest id state (no header)")
        raw, text = raw[8:8 + 8 * count], raw[8 + 8 * count:]
    if len(raw) % 8:
        raise ValueError("not an ingest id state (truncated, trailing or oversized)")
    numbers = array("Q")
    numbers.frombytes(raw)
    if sys.byteorder != "little":
        numbers.byteswap()
    sets, at = _decode_sets(numbers)
    if magic == _MAGIC_SETS:
        if at != len(numbers):
            raise ValueError("not an ingest id state (lengths disagree)")
        return sets, []
    return sets, _decode_lists(numbers[at:], text, len(sets))


def _decode_sets(numbers: array) -> tuple[list[XidSet], int]:
    if not numbers or len(numbers) < 1 + numbers[0]:
        raise ValueError("not an ingest id state (no header)")
    counts = numbers[1:1 + numbers[0]]
    at = 1 + len(counts)
    if at + 2 * sum(counts) > len(numbers):
        raise ValueError("not an ingest id state (lengths disagree)")
    sets = []
    for count in counts:
        deltas = numbers[at:at + 2 * count]
        at += 2 * count
        bounds = list(accumulate(deltas))
        # Every delta after the first positive: bounds strictly increasing, ranges neither empty nor touching.
        if bounds and (bounds[-1] >= 2 ** 63 or 0 in deltas[1:]):
            raise ValueError("not an ingest id state (ranges out of order)")
        sets.append(XidSet.of_bounds(bounds))
    return sets, at


def _decode_lists(numbers: array, text: bytes, sets: int) -> list[list[tuple[int, str]]]:
    if not numbers or len(numbers) < 1 + numbers[0]:
        raise ValueError("not an ingest id state (no claim lists)")
    counts = numbers[1:1 + numbers[0]]
    pairs = numbers[1 + len(counts):]
    if len(pairs) != 2 * sum(counts) or sum(pairs[1::2]) != len(text) or any(i >= sets for i in pairs[0::2]):
        raise ValueError("not an ingest id state (claims disagree)")
    try:
        stamps = text.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not an ingest id state (a stamp is not text)") from None
    lists, at, offset = [], 0, 0
    for count in counts:
        claims = []
        for index, length in zip(pairs[at:at + 2 * count:2], pairs[at + 1:at + 2 * count:2]):
            claims.append((index, stamps[offset:offset + length]))
            offset += length
        lists.append(claims)
        at += 2 * count
    return lists


def _places(fields: dict) -> tuple[list[tuple[dict, str]], list[dict]]:
    """Where a watermark's fields hold an id set (text, or an XidSet not yet written) and a list of
    claims: the sets as (the dict, its key), the dicts holding an `unread` list; the stopped tables'
    too."""
    sets = [(fields, name) for name in ("seen", "in_progress") if name in fields]
    lists = [fields] if isinstance(fields.get("unread"), list) else []
    for entry in (fields.get("stopped") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("since"), dict):
            more_sets, more_lists = _places(entry["since"])
            sets += more_sets
            lists += more_lists
    return sets, lists


def spill(bucket: str, run_id: str, fields: dict) -> dict:
    """`fields` (a run's watermark, its id sets as text or XidSets) as the manifest holds them: every
    set as text while the sets' text, the claims' included, stays within INLINE_LIMIT; else every
    set and every list of claims (the stopped tables' too: eleven tables of 200 claims are 160 KB of
    JSON) in this run's state object (written create-only first: a manifest never names a state
    object that is not there), and `{"state": i}` / `{"state_claims": j}` in their place."""
    places, holders = _places(fields)
    claims = [claim for holder in holders for claim in holder["unread"]]
    if _text_bytes([*(holder[name] for holder, name in places), *(c.get("xids") for c in claims)]) <= INLINE_LIMIT:
        for holder, name in places:
            holder[name] = str(holder[name])
        for claim in claims:
            claim["xids"] = str(claim["xids"])
        return fields
    sets: dict[XidSet, int] = {}
    for holder, name in places:
        holder[name] = sets.setdefault(XidSet.parse(holder[name]), len(sets))
    lists = [[(sets.setdefault(XidSet.parse(c["xids"]), len(sets)), c["stamped_up_to"]) for c in holder["unread"]]
             for holder in holders]
    body = encode(list(sets), lists)
    key = state_key(run_id)
    with lake_errors(bucket, key):
        if not s3.put_create_only(bucket, key, body) and not s3.holds(bucket, key, body=body):
            raise RunIdCollision(f"another ingest already wrote {key}: stopped without a manifest, so the next "
                                 "run reads these changes")
    for holder, name in places:
        holder[name] = {"state": holder[name]}
    for j, holder in enumerate(holders):
        holder["unread"] = {"state_claims": j}
    fields[FIELD] = {"key": key, "sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}
    return fields


#: Past this many ranges a set's text is over INLINE_LIMIT whatever its ids ("[a,b)," is 6 bytes at least).
_SURELY_LARGE = INLINE_LIMIT // 6 + 1


def _text_bytes(values) -> int:
    """The bytes of the sets' text, stopping early past INLINE_LIMIT (a large set is never turned into
    text only to be measured)."""
    total = 0
    for value in values:
        if isinstance(value, XidSet) and len(value) >= _SURELY_LARGE:
            return INLINE_LIMIT + 1
        total += len(str(value))
        if total > INLINE_LIMIT:
            break
    return total


def inline(bucket: str, manifest: dict) -> dict:
    """The manifest with every `{"state": i}` replaced by its set (an XidSet, which watermark.py takes
    as it is) read from the state object it names; unchanged without `xid_state`. Raises
    StateUnreadable (one line) when the object is missing or differs from what the manifest says,
    InvalidInput when the manifest's reference is malformed (a corrupt manifest, skipped like any
    other)."""
    ref = manifest.get(FIELD)
    if ref is None:
        return manifest
    run_id = manifest.get("run_id")
    if not (isinstance(ref, dict) and isinstance(run_id, str) and ref.get("key") == state_key(run_id)
            and isinstance(ref.get("sha256"), str) and _SHA256.fullmatch(ref["sha256"])
            and isinstance(ref.get("bytes"), int) and not isinstance(ref["bytes"], bool)):
        raise InvalidInput(f"manifest of {run_id!r}: {FIELD} is not {{key: {state_key('<run_id>')}, sha256, bytes}}")
    if not 0 <= ref["bytes"] <= MAX_BYTES:
        raise InvalidInput(f"manifest of {run_id!r}: {FIELD} names {ref['bytes']:,} bytes, more than a state object "
                           f"may be ({MAX_BYTES:,})")
    key = ref["key"]
    where = f"s3://{bucket}/{key}, the transaction ids run {run_id} saw"
    with lake_errors(bucket, key, missing_ok=True) as call:
        try:
            body = s3.get_bytes(bucket, key, max_bytes=ref["bytes"])
        except s3.TooLarge as e:
            raise StateUnreadable(f"{where}, is {e.size:,} bytes, not the {ref['bytes']:,} its manifest names "
                                  "(not read): ingest stopped rather than guess what that run read") from None
    if call.missing:
        raise StateUnreadable(f"{where}, is missing: ingest stopped rather than guess what that run read")
    if len(body) != ref["bytes"] or hashlib.sha256(body).hexdigest() != ref["sha256"]:
        raise StateUnreadable(f"{where}, does not match its manifest's checksum: ingest stopped rather than guess "
                              "what that run read")
    try:
        sets, lists = decode(body)
    except ValueError as e:
        raise StateUnreadable(f"{where}, does not decode ({e}): ingest stopped rather than guess") from None
    out = _copy(manifest)
    places, holders = _places(out)
    for holder, name in places:
        holder[name] = _indexed(holder[name], "state", sets, run_id, name)
    for holder in holders:  # a state object from before claims were kept there left them inline
        for claim in holder["unread"]:
            if isinstance(claim, dict) and "xids" in claim:
                claim["xids"] = _indexed(claim["xids"], "state", sets, run_id, "xids")
    for holder in _claim_references(out):
        claims = _indexed(holder["unread"], "state_claims", lists, run_id, "unread")
        holder["unread"] = [{"xids": sets[index], "stamped_up_to": stamp} for index, stamp in claims]
    return out


def _indexed(value, kind: str, items: list, run_id, name: str):
    """The item a `{kind: i}` reference names; any other value as it is (inline text)."""
    if not isinstance(value, dict):
        return value
    index = value.get(kind)
    if not isinstance(index, int) or not 0 <= index < len(items):
        raise InvalidInput(f"manifest of {run_id!r}: {name} names nothing of its {FIELD}")
    return items[index]


def _claim_references(fields: dict) -> list[dict]:
    """The dicts whose `unread` is a `{"state_claims": j}` reference, the stopped tables' too."""
    found = [fields] if isinstance(fields.get("unread"), dict) else []
    for entry in (fields.get("stopped") or {}).values():
        if isinstance(entry, dict) and isinstance(entry.get("since"), dict):
            found += _claim_references(entry["since"])
    return found


def _copy(document):
    """A copy of the manifest's nested dicts and lists (the caller's stays as it was)."""
    if isinstance(document, dict):
        return {k: _copy(v) for k, v in document.items()}
    if isinstance(document, list):
        return [_copy(v) for v in document]
    return document
