"""Courier files (contract §9): the event each file holds, and the fact it becomes, declared once.

`DELIVERY_EVENT` is what the ingest writes into the ingested bucket for one landed file (a CSV like
a source table's, `at` in UTC without a zone); every event is checked against it there
(`validate_event`), a bad one held back alone. `FACT_DELIVERY` is contract §3's table: one row per
`event_id` whatever is re-sent, so its unique key is `event_id` and the loader only ever inserts
(`load/deliveries.py`). The DDL (migration 5), data dictionary, Glue tables and reconcile read
these objects.
"""
from __future__ import annotations

import re
from datetime import datetime

from totesys_etl.schema.model import NUL, Column, Table, nul_reason

#: contract §9: the statuses a courier reports.
DELIVERY_STATUSES = ("collected", "in_transit", "delivered", "failed")
#: contract §9: `YYYY-MM-DDTHH:MM:SS[.ffffff]Z`, UTC.
_AT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?Z")
#: The warehouse's `int` (a sales_order_id beyond it could not be stored).
_INT_RANGE = (-2 ** 31, 2 ** 31 - 1)
#: The longest `event_id` accepted: it is a unique key, and PostgreSQL's btree index refuses an entry
#: over ~2,700 bytes, so a longer one would fail its run's load for ever.
MAX_EVENT_ID_CHARS = 256

DELIVERY_EVENT = Table(
    name="delivery_event", kind="source", key=("event_id",),
    columns=(Column("event_id", "varchar"), Column("sales_order_id", "int"), Column("status", "varchar"),
             Column("at", "timestamp"), Column("city", "varchar"), Column("courier", "varchar")),
    description="A courier's delivery event as landed (contract §9); `at` in UTC.",
)

FACT_DELIVERY = Table(
    name="fact_delivery", kind="fact", key=("delivery_record_id",), source=DELIVERY_EVENT.name,
    columns=(Column("delivery_record_id", "serial"), Column("event_id", "varchar", source="event_id"),
             Column("sales_order_id", "int", source="sales_order_id"), Column("status", "varchar", source="status"),
             Column("event_date", "date", source="at", derive="date_of"),
             Column("event_time", "time", source="at", derive="time_of"),
             Column("city", "varchar", source="city"), Column("courier", "varchar", source="courier")),
    version_key=("event_id",),
    references=(("sales_order_id", "fact_sales_order.sales_order_id"),),
    description="One row per courier event (`event_id`), whatever file or files carried it; "
                "`event_date`, `event_time` in UTC.",
)

#: Ingested tables that come from files, not from the totesys source.
FILE_SOURCES: tuple[Table, ...] = (DELIVERY_EVENT,)
#: Facts that are insert-only by an event id (not versions of a source row).
EVENT_FACTS: tuple[Table, ...] = (FACT_DELIVERY,)


_STATUS_SET = frozenset(DELIVERY_STATUSES)


def event_row(event) -> tuple | None:
    """The fast path of `validate_event` for a good event: its row, with `at` as the CSV's text
    (`YYYY-MM-DD HH:MM:SS[.ffffff]`, UTC), or None if anything is off (then ask `validate_event` why)."""
    try:
        event_id, order, status = event["event_id"], event["sales_order_id"], event["status"]
        at, city, courier = event["at"], event["city"], event["courier"]
    except (KeyError, TypeError):
        return None
    if not (type(event_id) is str and type(status) is str and type(at) is str and type(city) is str
            and type(courier) is str and type(order) is int and status in _STATUS_SET
            and _INT_RANGE[0] <= order <= _INT_RANGE[1] and event_id.strip()
            and len(event_id) <= MAX_EVENT_ID_CHARS
            and NUL not in event_id and NUL not in city and NUL not in courier
            and parse_at(at) is not None):
        return None
    return event_id, order, status, f"{at[:10]} {at[11:-1]}", city, courier


def validate_event(event) -> tuple[tuple | None, str | None]:
    """(the event's row in DELIVERY_EVENT's column order, None) or (None, why it is bad).

    Fields beyond the declared ones are ignored (a partner may add some); a declared field must be
    present with its type: a JSON string (never empty for `event_id`, no NUL character, which
    PostgreSQL text cannot hold), an integer `sales_order_id` within `int`, a known `status`, and
    `at` in the contract's form naming a real moment.
    """
    if not isinstance(event, dict):
        return None, "the event is not a JSON object"
    problems = []
    for column in DELIVERY_EVENT.columns:
        if column.name not in event or event[column.name] is None:
            problems.append(f"{column.name} is missing")
    if problems:
        return None, "; ".join(problems)
    for name in ("event_id", "status", "city", "courier", "at"):
        value = event[name]
        if not isinstance(value, str):
            problems.append(f"{name} is not a string")
        elif NUL in value:
            problems.append(nul_reason(name))
    if isinstance(event["event_id"], str) and not event["event_id"].strip():
        problems.append("event_id is empty")
    if isinstance(event["event_id"], str) and len(event["event_id"]) > MAX_EVENT_ID_CHARS:
        problems.append(f"event_id is longer than {MAX_EVENT_ID_CHARS} characters")
    order = event["sales_order_id"]
    if not isinstance(order, int) or isinstance(order, bool):
        problems.append("sales_order_id is not an integer")
    elif not _INT_RANGE[0] <= order <= _INT_RANGE[1]:
        problems.append("sales_order_id is out of range")
    if isinstance(event["status"], str) and event["status"] not in DELIVERY_STATUSES:
        problems.append(f"status is not one of {', '.join(DELIVERY_STATUSES)}")
    at = None
    if isinstance(event["at"], str):
        at = parse_at(event["at"])
        if at is None:
            problems.append("at is not YYYY-MM-DDTHH:MM:SS[.ffffff]Z")
    if problems:
        return None, "; ".join(problems)
    return (event["event_id"], order, event["status"], at, event["city"], event["courier"]), None


def parse_at(text: str) -> datetime | None:
    """`YYYY-MM-DDTHH:MM:SS[.ffffff]Z` as a naive UTC datetime, or None if it is not one."""
    if not _AT.fullmatch(text):
        return None
    try:
        return datetime.fromisoformat(text[:-1])
    except ValueError:  # 2024-02-30, hour 25
        return None
