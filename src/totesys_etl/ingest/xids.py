"""Sets of transaction ids as sorted ranges, and their text in the manifest (PostgreSQL's canonical
`int8multirange` form): what a run counted as in progress or seen (readme_files/adr/0001-late-commits.md).

Kept apart from the watermark that records them, since the run's state object (`xid_state.py`) and the
extract's plans build on them too.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import chain, compress, islice
from operator import ge, sub


#: How many ids one epoch of 32-bit transaction ids holds: a raw `xmin` repeats every XID_SPAN ids.
XID_SPAN = 1 << 32


def xid8_of_raw(raw: int, xmax: int) -> int:
    """A row's raw 32-bit `xmin` made 64-bit as a run whose snapshot's xmax was `xmax` made it: the same
    arithmetic as the SQL of the ingest's `extract.xid8_of_xmin` (a test holds the two equal)."""
    base = xmax >> 32 << 32
    if base == 0:
        return raw
    return (base - XID_SPAN if base + raw >= xmax else base) + raw


#: PostgreSQL's text form of a (canonical) `int8multirange`: `{}` or `{[a,b),[c,d)}`.
_XID_RANGES = re.compile(r"\{(?:\[\d{1,20},\d{1,20}\)(?:,\[\d{1,20},\d{1,20}\))*)?\}")
NO_XIDS = "{}"


def xid_ranges(text) -> str:
    """Validated `int8multirange` text of transaction ids (it becomes a SQL literal only after this)."""
    if not isinstance(text, str) or (text not in _MADE and not _XID_RANGES.fullmatch(text)):
        raise ValueError("not a set of transaction id ranges ('{[a,b),...}')")
    return text


#: A set with at most this many ranges takes the short cuts of XidSet's operations.
_FEW = 64
#: The texts `XidSet.__str__` made of its last few large sets, each with its set (`XidSet.parse`).
_MADE: dict[str, "XidSet"] = {}
_MADE_KEPT = 4  # a run makes two (seen, in_progress) and reads two back
_PAIR = "%d,%d".__mod__
_ONE_MORE = (1).__add__


class XidSet:
    """A set of 64-bit transaction ids as sorted, disjoint half-open ranges: the Python side of an
    `int8multirange` (same text form), for the few set operations a run's bookkeeping needs. Its
    size follows how fragmented the set is, not how many ids it holds.

    Held as one flat tuple of bounds, `lo0 < hi0 < lo1 < hi1 < ...` (ranges that touch are merged),
    because savepoints interleaved with commits make sets of 100,000 ranges, and on a flat tuple
    the common steps are C loops: an id is inside iff `bisect_right(bounds, id)` is odd, cutting
    a few ranges in or out is a bisection and a slice, and two sets that share most of their
    ranges (the ids in progress at two runs) compare their common prefix as slices. Only what
    differs is walked in Python."""

    __slots__ = ("bounds", "_text", "_ranges")

    def __init__(self, ranges=()):
        bounds: list[int] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in ranges if int(a) < int(b)):
            if bounds and lo <= bounds[-1]:
                bounds[-1] = max(bounds[-1], hi)
            else:
                bounds += (lo, hi)
        self.bounds, self._text, self._ranges = tuple(bounds), None, None

    @classmethod
    def of_bounds(cls, bounds) -> "XidSet":
        """From flat bounds already strictly increasing (`lo0 < hi0 < lo1 ...`; a decoded state object,
        checked by its decoder, or an operation's result): no sort, no merge."""
        xids = cls.__new__(cls)
        xids.bounds, xids._text, xids._ranges = tuple(bounds), None, None
        return xids

    @classmethod
    def trusted(cls, ranges) -> "XidSet":
        """From (lo, hi) ranges already sorted, disjoint and not touching."""
        return cls.of_bounds(chain.from_iterable(ranges))

    @classmethod
    def parse(cls, text) -> "XidSet":
        """From `int8multirange` text, validated. PostgreSQL's text and `str()`'s are canonical (sorted,
        not touching) and read in one pass; anything else valid is sorted and merged. A text that
        `str()` made lately gives back its set at once, and so does a set itself (xid_state.inline
        gives sets, never text)."""
        if isinstance(text, XidSet):
            return text
        known = _MADE.get(text) if isinstance(text, str) else None
        if known is not None:
            return known
        body = xid_ranges(text)[2:-2]
        if not body:
            return cls()
        bounds = list(map(int, body.replace("),[", ",").split(",")))
        if _increasing(bounds):
            return cls.of_bounds(bounds)
        return cls(zip(bounds[0::2], bounds[1::2]))

    @classmethod
    def of_ids(cls, ids) -> "XidSet":
        """From ids in ascending order (repeats allowed): consecutive ones make one range."""
        ids = ids if isinstance(ids, list) else list(ids)
        if not ids:
            return cls()
        after = islice(ids, 1, None)
        gaps = list(compress(range(len(ids) - 1), map((1).__lt__, map(sub, after, ids))))  # ids[i + 1] > ids[i] + 1
        bounds = [0] * (2 * len(gaps) + 2)
        bounds[0], bounds[-1] = ids[0], ids[-1] + 1
        if gaps:
            bounds[1:-1:2] = map(_ONE_MORE, map(ids.__getitem__, gaps))
            bounds[2:-1:2] = map(ids.__getitem__, map(_ONE_MORE, gaps))
        return cls.of_bounds(bounds)

    @classmethod
    def span(cls, lo: int, hi: int) -> "XidSet":
        return cls.of_bounds((int(lo), int(hi)) if lo < hi else ())

    @property
    def ranges(self) -> tuple[tuple[int, int], ...]:
        """The (lo, hi) ranges, made on first use (the operations work on `bounds`)."""
        if self._ranges is None:
            self._ranges = tuple(zip(self.bounds[0::2], self.bounds[1::2]))
        return self._ranges

    def __len__(self) -> int:
        """The number of ranges (not of ids: see `count`)."""
        return len(self.bounds) // 2

    def __str__(self) -> str:
        if self._text is None:
            b = self.bounds
            self._text = "{[" + "),[".join(map(_PAIR, zip(b[0::2], b[1::2]))) + ")}" if b else "{}"
            if len(b) > 2 * _FEW:
                _MADE[self._text] = self
                while len(_MADE) > _MADE_KEPT:
                    del _MADE[next(iter(_MADE))]
        return self._text

    def split(self, longest: int) -> tuple["XidSet", "XidSet"]:
        """The ranges at most `longest` long, and the others: a statement asks about the first as ids (an
        id array costs less than a range each) and about the others as bounds (less than their ids)."""
        los, his = self.bounds[0::2], self.bounds[1::2]
        if not los or max(map(sub, his, los)) <= longest:  # e.g. single ids (savepoints interleaved with commits)
            return self, XidSet()
        short: list[int] = []
        long: list[int] = []
        for lo, hi in zip(los, his):
            (short if hi - lo <= longest else long).extend((lo, hi))
        return XidSet.of_bounds(short), XidSet.of_bounds(long)

    def ids(self) -> list[int]:
        """Every id, in order (for sets of few ids: a range each is expanded)."""
        los, his = self.bounds[0::2], self.bounds[1::2]
        longer = list(compress(range(len(los)), map((1).__lt__, map(sub, his, los))))  # the ranges of 2 ids or more
        if len(longer) > _FEW:
            return [x for lo, hi in zip(los, his) for x in range(lo, hi)]
        ids = list(los)
        for i in reversed(longer):  # a few slices into the single ids (savepoints interleaved with commits)
            ids[i:i + 1] = range(los[i], his[i])
        return ids

    def __bool__(self) -> bool:
        return bool(self.bounds)

    def __eq__(self, other) -> bool:
        return isinstance(other, XidSet) and self.bounds == other.bounds

    def __hash__(self) -> int:
        return hash(self.bounds)

    def __repr__(self) -> str:
        return f"XidSet({self})"

    def __or__(self, other: "XidSet") -> "XidSet":
        big, small = sorted((self, other), key=len, reverse=True)
        if len(small) > _FEW:
            return _combine(self.bounds, other.bounds, _UNION)
        bounds = list(big.bounds)
        for lo, hi in small.ranges:
            i, j = bisect_left(bounds, lo), bisect_right(bounds, hi)
            bounds[i:j] = ([lo] if i % 2 == 0 else []) + ([hi] if j % 2 == 0 else [])  # inside a range: merged
        return XidSet.of_bounds(bounds)

    def __sub__(self, other: "XidSet") -> "XidSet":
        if not self.bounds or not other.bounds:
            return self
        if len(other) <= _FEW:
            bounds = list(self.bounds)
            for lo, hi in other.ranges:
                i, j = bisect_left(bounds, lo), bisect_right(bounds, hi)
                bounds[i:j] = ([lo] if i % 2 else []) + ([hi] if j % 2 else [])  # a range cut keeps its ends
            return XidSet.of_bounds(bounds)
        if len(self) <= _FEW:
            bounds = []
            for lo, hi in self.ranges:
                bounds += _complement_within(other.bounds, lo, hi)
            return XidSet.of_bounds(bounds)
        return _combine(self.bounds, other.bounds, _DIFFERENCE)

    def __and__(self, other: "XidSet") -> "XidSet":
        big, small = sorted((self, other), key=len, reverse=True)
        if len(small) > _FEW:
            return _combine(self.bounds, other.bounds, _INTERSECTION)
        bounds = []
        for lo, hi in small.ranges:
            bounds += _within(big.bounds, lo, hi)
        return XidSet.of_bounds(bounds)

    def __contains__(self, xid: int) -> bool:
        return bisect_right(self.bounds, xid) % 2 == 1

    def count(self) -> int:
        return sum(self.bounds[1::2]) - sum(self.bounds[0::2])


def _increasing(bounds) -> bool:
    return not any(map(ge, bounds, islice(bounds, 1, None)))


def _within(bounds, lo: int, hi: int) -> list[int]:
    """The flat bounds of the set `bounds` cut to [lo, hi)."""
    i, j = bisect_right(bounds, lo), bisect_left(bounds, hi)
    return ([lo] if i % 2 else []) + list(bounds[i:j]) + ([hi] if j % 2 else [])


def _complement_within(bounds, lo: int, hi: int) -> list[int]:
    """The flat bounds of [lo, hi) less the set `bounds`: the gaps of the set there."""
    i, j = bisect_right(bounds, lo), bisect_left(bounds, hi)
    return ([] if i % 2 else [lo]) + list(bounds[i:j]) + ([] if j % 2 else [hi])


_UNION, _DIFFERENCE, _INTERSECTION = 0, 1, 2


def _combine(a: tuple, b: tuple, op: int) -> XidSet:
    """`a op b` for two large sets. Their common leading ranges (the usual case: the ids in progress
    at two runs) are found by comparing slices, a C loop, and settled at once; only the rest is
    swept, bound by bound."""
    k = _common_prefix(a, b)
    head = () if op == _DIFFERENCE else a[:k]
    return XidSet.of_bounds(head + tuple(_sweep(a[k:], b[k:], op)))


def _common_prefix(a: tuple, b: tuple) -> int:
    """The largest even k with a[:k] == b[:k] (whole ranges), by halving: O(len) compares in C."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        if a[lo:hi] == b[lo:hi]:
            lo = hi
            break
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo - lo % 2


def _sweep(a, b, op: int) -> list[int]:
    out: list[int] = []
    i = j = 0
    in_a = in_b = inside = False
    end = 1 << 64
    while i < len(a) or j < len(b):
        x = a[i] if i < len(a) else end
        y = b[j] if j < len(b) else end
        at = min(x, y)
        if x == at:
            in_a, i = not in_a, i + 1
        if y == at:
            in_b, j = not in_b, j + 1
        now = (in_a or in_b) if op == _UNION else (in_a and not in_b) if op == _DIFFERENCE else (in_a and in_b)
        if now != inside:
            out.append(at)
            inside = now
    return out
