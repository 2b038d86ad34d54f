"""`totesys-etl simulate --deliveries N`: courier files for the seeded orders, dropped in the landing bucket.

What a partner's couriers would leave there (contract §9), with everything the pipeline must survive:
- N valid events, unique by `event_id`: each sales order's `collected`, `in_transit`, then
  `delivered` (sometimes `failed`), at times around its `agreed_delivery_date` (about a third late),
  in the city of its agreed delivery location;
- spread over JSON arrays and JSON Lines, some gzipped, one file much larger than the others;
- a file re-sent under another name, an event repeated within a file, a few malformed events
  among good ones, and one file that is not JSON at all.

`Dropped.valid` is what the warehouse must end up with (each once): tests compare it with
`fact_delivery`.
"""
from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import boto3

from totesys_etl.errors import ConfigurationError
from totesys_etl.local.source.source_db import admin_connect, source_errors

COURIERS = ("Parcelforce", "DPD", "Evri", "Royal Mail", "UPS")
#: The large file's share of the valid events.
LARGE_SHARE = 0.4


@dataclass
class Dropped:
    """What a call dropped: keys written, the valid events (by event_id), and the bad ones."""

    files: list[str] = field(default_factory=list)
    valid: dict[str, dict] = field(default_factory=dict)
    bad_events: int = 0
    unreadable_files: int = 0
    duplicate_events: int = 0

    def summary(self) -> dict[str, int]:
        return {"files": len(self.files), "events": len(self.valid), "duplicates": self.duplicate_events,
                "malformed events": self.bad_events, "unreadable files": self.unreadable_files}


def _orders(admin_url: str, wanted: int, rng: random.Random) -> list[tuple[int, date, str]]:
    """(sales_order_id, agreed delivery date, city of the agreed delivery location) of some seeded orders."""
    conn = admin_connect(admin_url, "simulate")
    try:
        with source_errors("simulate --deliveries"):
            rows = conn.run("SELECT o.sales_order_id, o.agreed_delivery_date, a.city FROM sales_order o "
                            "JOIN address a ON a.address_id = o.agreed_delivery_location_id "
                            "ORDER BY o.sales_order_id DESC LIMIT :n", n=wanted * 4)
    finally:
        conn.close()
    orders = []
    for order_id, agreed, city in rows:
        try:
            orders.append((order_id, date.fromisoformat(agreed.strip()), city))
        except (AttributeError, ValueError):  # an agreed date the source holds in another form
            continue
    rng.shuffle(orders)
    return orders[:wanted]


def _stamp(day: date, rng: random.Random) -> str:
    moment = datetime.combine(day, time(rng.randrange(7, 20), rng.randrange(60), rng.randrange(60),
                                        rng.randrange(1_000_000) if rng.random() < 0.7 else 0))
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return f"{text}Z"


def _events(orders: list, count: int, rng: random.Random) -> list[dict]:
    """`count` events: each order's life (collected, in transit, delivered or failed) until there are enough."""
    events: list[dict] = []
    for order_id, agreed, city in orders:
        courier = rng.choice(COURIERS)
        lateness = rng.choice((-3, -2, -1, -1, 0, 0, 0, 1, 2, 5))  # days after the agreed date
        delivered = agreed + timedelta(days=lateness)
        final = "failed" if rng.random() < 0.05 else "delivered"
        for status, day in (("collected", delivered - timedelta(days=2)), ("in_transit", delivered - timedelta(days=1)),
                            (final, delivered)):
            events.append({"event_id": f"{courier[:3].upper()}-{rng.getrandbits(64):016x}",
                           "sales_order_id": order_id, "status": status, "at": _stamp(day, rng),
                           "city": city, "courier": courier})
            if len(events) == count:
                return events
    return events


def _encode(events: list, lines: bool, gz: bool) -> bytes:
    if lines:
        body = "".join(json.dumps(e, ensure_ascii=False) + "\n" for e in events).encode()
    else:
        body = json.dumps(events, ensure_ascii=False, indent=None).encode()
    return gzip.compress(body, mtime=0) if gz else body


def simulate_deliveries(admin_url: str, landing_bucket: str, events: int, seed: int | None = None) -> Dropped:
    """Drop courier files holding `events` valid events for seeded orders into `landing_bucket`."""
    if events < 1:
        raise ConfigurationError("--deliveries must be 1 or more")
    rng = random.Random(seed)  # nosec B311 - made-up test data, not security
    orders = _orders(admin_url, events // 3 + 1, rng)
    if not orders:
        raise ConfigurationError("simulate --deliveries needs seeded sales orders (run `totesys-etl seed` first)")
    valid = _events(orders, events, rng)
    if len(valid) < events:
        raise ConfigurationError(f"only {len(orders)} seeded orders: at most {len(valid)} delivery events")
    batch = f"{datetime.now().strftime('%Y%m%dT%H%M%S')}-{rng.getrandbits(32):08x}"
    large = int(len(valid) * LARGE_SHARE) if len(valid) >= 10 else 0
    rest = valid[large:]
    per = max(1, -(-len(rest) // 4))
    parts = [rest[i:i + per] for i in range(0, len(rest), per)]
    files: dict[str, bytes] = {}
    shapes = ((False, False, "json"), (True, False, "jsonl"), (False, True, "json.gz"), (True, True, "jsonl.gz"))
    dropped = Dropped(valid={e["event_id"]: e for e in valid})
    for n, part in enumerate(parts):
        lines, gz, suffix = shapes[n % len(shapes)]
        part = list(part)
        if n == 0:  # an event repeated within a file, and malformed events among good ones
            part.append(dict(part[0]))
            dropped.duplicate_events += 1
            bad = [{**part[0], "event_id": f"BAD-{batch}-1", "status": "lost_in_space"},
                   {k: v for k, v in part[0].items() if k != "courier"} | {"event_id": f"BAD-{batch}-2"},
                   {**part[0], "event_id": f"BAD-{batch}-3", "at": "last Tuesday"}]
            part[1:1] = bad
            dropped.bad_events += len(bad)
        courier = part[0]["courier"].lower().replace(" ", "-") if part else "courier"
        files[f"deliveries/{batch}/{courier}-{n:02d}.{suffix}"] = _encode(part, lines, gz)
    if large:
        files[f"history/{batch}/resend-full.jsonl.gz"] = _encode(valid[:large], True, True)
    first = next(iter(files))
    files[f"resent/{batch}/copy-of-{first.rsplit('/', 1)[-1]}"] = files[first]  # the same file, another name
    files[f"deliveries/{batch}/corrupt.json"] = b"\x00\x01 courier system error: export aborted \xff"
    dropped.unreadable_files = 1
    s3 = boto3.client("s3")
    for key, body in files.items():
        s3.put_object(Bucket=landing_bucket, Key=key, Body=body)
        dropped.files.append(key)
    return dropped
