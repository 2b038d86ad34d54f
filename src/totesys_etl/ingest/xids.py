"""Sets of transaction ids as sorted ranges, and their text in the manifest (PostgreSQL's canonical
`int8multirange` form): what a run counted as in progress or seen (readme_files/adr/0001-late-commits.md).

Kept apart from the watermark that records them, since the run's state object (`xid_state.py`) and the
extract's plans build on them too.
"""
from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from itertools import islice
from operator import itemgetter


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
_LO, _HI = itemgetter(0), itemgetter(1)


def _overlapping(ranges, lo: int, hi: int) -> tuple[int, int]:
    """The slice `ranges[i:j]` (sorted, disjoint) of the ranges that share an id with [lo, hi)."""
    return bisect_right(ranges, lo, key=_HI), bisect_left(ranges, hi, key=_LO)


class XidSet:
    """A set of 64-bit transaction ids as sorted, disjoint half-open ranges: the Python side of an
    `int8multirange` (same text form), for the few set operations a run's bookkeeping needs. Its
    size follows how fragmented the set is, not how many ids it holds."""

    __slots__ = ("ranges", "_text")

    def __init__(self, ranges=()):
        merged: list[tuple[int, int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in ranges if int(a) < int(b)):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ranges = tuple(merged)
        self._text = None

    @classmethod
    def trusted(cls, ranges) -> "XidSet":
        """From ranges already sorted, disjoint and not touching (a decoded state object, checked by its
        decoder): no sort, no merge, so 100,000 ranges cost what reading them costs."""
        xids = cls.__new__(cls)
        xids.ranges, xids._text = tuple(ranges), None
        return xids

    @classmethod
    def parse(cls, text) -> "XidSet":
        """From `int8multirange` text, validated. PostgreSQL's text and `str()`'s are canonical (sorted,
        not touching) and read in one pass; anything else valid is sorted and merged. A text that
        `str()` made lately gives back its set at once: a run turns its large sets into manifest text
        and back (xid_state.py) and need not read 100,000 ranges each time."""
        if isinstance(text, XidSet):
            return text  # a set a state object gave back (xid_state.inline): already exact
        known = _MADE.get(text) if isinstance(text, str) else None
        if known is not None:
            return known
        body = xid_ranges(text)[2:-2]
        if not body:
            return cls()
        bounds = list(map(int, body.replace("),[", ",").split(",")))
        if all(a < b for a, b in zip(bounds, islice(bounds, 1, None))):
            return cls.trusted(zip(bounds[0::2], bounds[1::2]))
        return cls(zip(bounds[0::2], bounds[1::2]))

    @classmethod
    def of_ids(cls, ids) -> "XidSet":
        """From ids in ascending order (repeats allowed): consecutive ones make one range."""
        ids = list(ids)
        if not ids:
            return cls()
        gaps = [(a + 1, b) for a, b in zip(ids, islice(ids, 1, None)) if b > a + 1]
        return cls.trusted(zip([ids[0], *(b for _, b in gaps)], [*(a for a, _ in gaps), ids[-1] + 1]))

    @classmethod
    def span(cls, lo: int, hi: int) -> "XidSet":
        return cls([(lo, hi)])

    def __str__(self) -> str:
        if self._text is None:
            self._text = "{[" + "),[".join(map("%d,%d".__mod__, self.ranges)) + ")}" if self.ranges else "{}"
            if len(self.ranges) > _FEW:
                _MADE[self._text] = self
                while len(_MADE) > _MADE_KEPT:
                    del _MADE[next(iter(_MADE))]
        return self._text

    def split_short(self, longest: int) -> tuple[list[int], list[int], list[int]]:
        """The ids of the ranges at most `longest` long, and the bounds (lows, highs) of the others: how
        a statement asks about them (an id array costs less than a range each, a long range less than
        its ids)."""
        ids: list[int] = []
        los: list[int] = []
        his: list[int] = []
        for lo, hi in self.ranges:
            if hi - lo <= longest:
                ids += range(lo, hi)
            else:
                los.append(lo)
                his.append(hi)
        return ids, los, his

    def __bool__(self) -> bool:
        return bool(self.ranges)

    def __eq__(self, other) -> bool:
        return isinstance(other, XidSet) and self.ranges == other.ranges

    def __hash__(self) -> int:
        return hash(self.ranges)

    def __repr__(self) -> str:
        return f"XidSet({self})"

    # The operations below take a short cut when one side has few ranges (the usual case: a span, a
    # claim, the ids that ended): bisection and slices, so a set of 100,000 ranges costs a copy, not
    # a loop in Python.

    def __or__(self, other: "XidSet") -> "XidSet":
        big, small = sorted((self.ranges, other.ranges), key=len, reverse=True)
        if len(small) > _FEW:
            return XidSet(big + small)
        ranges = list(big)
        for lo, hi in small:
            i = bisect_left(ranges, lo, key=_HI)  # the first range that ends at or after lo
            j = bisect_right(ranges, hi, key=_LO)  # the first that starts after hi
            if i < j:
                lo, hi = min(lo, ranges[i][0]), max(hi, ranges[j - 1][1])
            ranges[i:j] = [(lo, hi)]
        return XidSet.trusted(ranges)

    def __sub__(self, other: "XidSet") -> "XidSet":
        mine, cuts = self.ranges, other.ranges
        if not mine or not cuts:
            return self
        if len(mine) > _FEW and len(cuts) > _FEW:
            # A range found as it stands in `other` goes whole (the usual case: the ids in progress
            # at the previous run and now); only the rest needs cutting.
            present = set(cuts)
            mine = tuple(r for r in mine if r not in present)
            if not mine:
                return XidSet()
        if len(cuts) <= _FEW:
            ranges = list(mine)
            for lo, hi in cuts:
                i, j = _overlapping(ranges, lo, hi)
                if i < j:
                    ranges[i:j] = ([(ranges[i][0], lo)] if ranges[i][0] < lo else []) + (
                        [(hi, ranges[j - 1][1])] if ranges[j - 1][1] > hi else [])
            return XidSet.trusted(ranges)
        if len(mine) <= _FEW:
            out: list[tuple[int, int]] = []
            for lo, hi in mine:
                i, j = _overlapping(cuts, lo, hi)
                inside = cuts[i:j]
                if not inside:
                    out.append((lo, hi))
                    continue
                if inside[0][0] > lo:
                    out.append((lo, inside[0][0]))
                out += zip([r[1] for r in inside[:-1]], [r[0] for r in inside[1:]])  # the gaps between them
                if inside[-1][1] < hi:
                    out.append((inside[-1][1], hi))
            return XidSet.trusted(out)
        out, i = [], 0
        for lo, hi in mine:
            while i < len(cuts) and cuts[i][1] <= lo:
                i += 1
            j, start = i, lo
            while j < len(cuts) and cuts[j][0] < hi:
                if cuts[j][0] > start:
                    out.append((start, cuts[j][0]))
                start = max(start, cuts[j][1])
                j += 1
            if start < hi:
                out.append((start, hi))
        return XidSet.trusted(out)

    def __and__(self, other: "XidSet") -> "XidSet":
        small, big = sorted((self.ranges, other.ranges), key=len)
        if len(small) > _FEW:
            return self - (self - other)
        out: list[tuple[int, int]] = []
        for lo, hi in small:
            i, j = _overlapping(big, lo, hi)
            inside = list(big[i:j])
            if inside:
                inside[0] = (max(lo, inside[0][0]), inside[0][1])
                inside[-1] = (inside[-1][0], min(hi, inside[-1][1]))
                out += inside
        return XidSet.trusted(out)

    def __contains__(self, xid: int) -> bool:
        i, j = _overlapping(self.ranges, xid, xid + 1)
        return i < j

    def count(self) -> int:
        return sum(hi - lo for lo, hi in self.ranges)
