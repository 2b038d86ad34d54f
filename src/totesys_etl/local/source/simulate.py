"""`totesys-etl simulate`: OLTP activity on the source, as the live totesys application makes it.

New sales orders (each with its transaction and payment), new purchase orders (with their
transaction), payments for existing transactions, payments marked paid, and updates to orders,
addresses (a counterparty's legal address among them), counterparties, staff and departments.

Exactly `changes` rows are written (an insert or an update each), spread over a few
transactions. Every row a transaction writes gets that transaction's time, truncated to the
millisecond like the live source, as `last_updated` (and `created_at` when new): never a time
from the client, so the pipeline's late-commit handling sees what a real application does.
Rows never change twice in one call, so the rows whose `last_updated` moved number `changes`.
"""
from __future__ import annotations

import math
import random
import string
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal

from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection, transaction
from totesys_etl.errors import ConfigurationError
from totesys_etl.local.source.source_db import admin_connect, source_errors
from totesys_etl.schema import SOURCE_TABLES, source_table
from totesys_etl.schema.ddl import column_list

NOW = "date_trunc('milliseconds', LOCALTIMESTAMP)"
TRANSACTIONS = 3  # "a few": enough that one call is not one snapshot-sized blob


@dataclass(frozen=True)
class Kind:
    """A kind of change: how many rows one event writes, and how often it happens."""

    name: str
    rows: int
    weight: int


KINDS = (
    Kind("new_sales_orders", 3, 24), Kind("new_purchase_orders", 2, 8), Kind("new_payments", 1, 4),
    Kind("paid_payments", 1, 6), Kind("updated_sales_orders", 1, 10), Kind("updated_purchase_orders", 1, 4),
    Kind("updated_addresses", 1, 4), Kind("new_addresses", 1, 2), Kind("moved_counterparties", 1, 1),
    Kind("updated_staff", 1, 2), Kind("updated_departments", 1, 1),
)
_BY_NAME = {k.name: k for k in KINDS}
#: The kind that needs nothing to exist: it absorbs any shortfall, so the total stays exact.
FILLER = "new_addresses"


def _key(table: str) -> str:
    return source_table(table).key[0]


class _Source:
    """What the plan needs to know about the source, read once before any change."""

    def __init__(self, conn: Connection, rng: random.Random):
        self.conn, self.rng = conn, rng
        self.ids = {t: self._all_ids(t) for t in ("address", "counterparty", "currency", "department", "design",
                                                  "staff")}
        self.payment_types = dict(conn.run("SELECT payment_type_name, payment_type_id FROM payment_type"))
        self.today: date = conn.run("SELECT LOCALTIMESTAMP::date")[0][0]

    def _all_ids(self, table: str) -> list[int]:
        key = identifier(_key(table))
        return [r[0] for r in self.conn.run(f"SELECT {key} FROM {identifier(table)} ORDER BY 1")]  # nosec B608

    def sample(self, table: str, k: int, where: str = "TRUE") -> list[int]:
        """Up to `k` distinct ids of `table` (matching the constant condition `where`).

        Small tables are read whole; big ones are probed with random ids from their id range,
        so a million-row table costs a few index lookups, not a scan.
        """
        if k <= 0:
            return []
        name, key = identifier(table), identifier(_key(table))
        lo, hi, n = self.conn.run(f"SELECT min({key}), max({key}), count(*) FROM {name} WHERE {where}"  # nosec
                                  )[0]
        if n <= 20_000 or 4 * k >= n:
            ids = [r[0] for r in self.conn.run(f"SELECT {key} FROM {name} WHERE {where} ORDER BY 1")]  # nosec
            return self.rng.sample(ids, min(k, n))
        density, found = n / (hi - lo + 1), set()
        for _ in range(20):
            want = min(hi - lo + 1, math.ceil((k - len(found)) / density * 1.5) + 10)
            probe = self.rng.sample(range(lo, hi + 1), want)
            rows = self.conn.run(f"SELECT {key} FROM {name} WHERE {key} = ANY(CAST(:ids AS int[])) "  # nosec B608
                                 f"AND {where} ORDER BY 1", ids=probe)
            found.update(r[0] for r in rows)
            if len(found) >= k:
                break
        return self.rng.sample(sorted(found), min(k, len(found)))

    def pick(self, table: str) -> int:
        return self.rng.choice(self.ids[table])

    def other(self, table: str, current: int) -> int:
        """Another id of `table` than `current` (itself if the table has one row)."""
        choices = [i for i in self.ids[table] if i != current] or [current]
        return self.rng.choice(choices)


def _plan(changes: int, rng: random.Random, possible: set[str]) -> dict[str, int]:
    """Events per kind whose rows add up to exactly `changes`: one of each first, then by weight."""
    counts = {k.name: 0 for k in KINDS}
    left = changes
    for kind in KINDS:
        if kind.name in possible and kind.rows <= left:
            counts[kind.name] += 1
            left -= kind.rows
    while left > 0:
        fits = [k for k in KINDS if k.name in possible and k.rows <= left]
        kind = rng.choices(fits, weights=[k.weight for k in fits])[0]
        counts[kind.name] += 1
        left -= kind.rows
    return counts


def _array_type(table: str, column: str) -> str:
    base = source_table(table).column(column).type.split("(")[0]
    return {"varchar": "varchar[]", "int": "int[]", "numeric": "numeric[]", "boolean": "boolean[]"}[base]


def _unnest(table: str, columns: list[str]) -> str:
    return ", ".join(f"CAST(:{c} AS {_array_type(table, c)})" for c in columns)


def _new_ids(conn: Connection, table: str, n: int) -> list[int]:
    return [r[0] for r in conn.run("SELECT nextval(pg_get_serial_sequence(:t, :c)) FROM generate_series(1, :n)",
                                   t=identifier(table), c=_key(table), n=n)]


def _insert(conn: Connection, table: str, rows: list[dict]) -> int:
    """Insert rows (every declared column but the timestamps), stamped with the transaction's time."""
    if not rows:
        return 0
    columns = [c for c in source_table(table).column_names if c not in ("created_at", "last_updated")]
    conn.run(f"INSERT INTO {identifier(table)} ({column_list(columns)}, created_at, last_updated) "  # nosec B608
             f"SELECT *, {NOW}, {NOW} FROM unnest({_unnest(table, columns)})",
             **{c: [row[c] for row in rows] for c in columns})
    return conn.row_count


def _update(conn: Connection, table: str, rows: list[dict]) -> int:
    """Set the given columns of rows (by id) and `last_updated` to the transaction's time."""
    if not rows:
        return 0
    key = _key(table)
    columns = [c for c in rows[0] if c != key]
    assignments = ", ".join(f"{identifier(c)} = v.{identifier(c)}" for c in columns)
    conn.run(f"UPDATE {identifier(table)} AS t SET {assignments}, last_updated = {NOW} "  # nosec B608
             f"FROM unnest({_unnest(table, [key] + columns)}) AS v({column_list([key] + columns)}) "
             f"WHERE t.{identifier(key)} = v.{identifier(key)}",
             **{c: [row[c] for row in rows] for c in [key] + columns})
    return conn.row_count


class _Activity:
    """The rows of each kind of event, drawn from the seeded random generator."""

    def __init__(self, source: _Source):
        self.src, self.rng = source, source.rng

    def _date(self, low: int, high: int) -> str:
        return (self.src.today + timedelta(days=self.rng.randint(low, high))).isoformat()

    def _money(self, low: int, high: int) -> Decimal:
        """Pence from `low` to `high` pounds, as the real snapshot's prices are (2 places; the
        extremes are `seed --awkward`'s job, not the live application's)."""
        return Decimal(self.rng.randint(low * 100, high * 100)).scaleb(-2)

    def _payment(self, transaction_id: int, counterparty: int, currency: int, amount: Decimal, kind: str) -> dict:
        types = self.src.payment_types
        return {"payment_id": None, "transaction_id": transaction_id, "counterparty_id": counterparty,
                "payment_amount": amount, "currency_id": currency,
                "payment_type_id": types.get(kind) or self.rng.choice(list(types.values())),
                "paid": False, "payment_date": self._date(0, 6),
                "company_ac_number": self.rng.randrange(10_000_000, 100_000_000),
                "counterparty_ac_number": self.rng.randrange(10_000_000, 100_000_000)}

    def new_sales_orders(self, conn: Connection, n: int) -> int:
        ids, tx_ids, pay_ids = (_new_ids(conn, t, n) for t in ("sales_order", "transaction", "payment"))
        orders, transactions, payments = [], [], []
        for order_id, tx_id, pay_id in zip(ids, tx_ids, pay_ids):
            order = {"sales_order_id": order_id, "design_id": self.src.pick("design"),
                     "staff_id": self.src.pick("staff"), "counterparty_id": self.src.pick("counterparty"),
                     "units_sold": self.rng.randint(1000, 100_000),
                     "unit_price": Decimal(self.rng.randint(200, 400)) / 100,
                     "currency_id": self.src.pick("currency"), "agreed_delivery_date": self._date(2, 7),
                     "agreed_payment_date": self._date(1, 7), "agreed_delivery_location_id": self.src.pick("address")}
            orders.append(order)
            transactions.append({"transaction_id": tx_id, "transaction_type": "SALE", "sales_order_id": order_id,
                                 "purchase_order_id": None})
            payment = self._payment(tx_id, order["counterparty_id"], order["currency_id"],
                                    order["units_sold"] * order["unit_price"], "SALES_RECEIPT")
            payments.append({**payment, "payment_id": pay_id, "payment_date": order["agreed_payment_date"]})
        return (_insert(conn, "sales_order", orders) + _insert(conn, "transaction", transactions)
                + _insert(conn, "payment", payments))

    def new_purchase_orders(self, conn: Connection, n: int) -> int:
        ids, tx_ids = (_new_ids(conn, t, n) for t in ("purchase_order", "transaction"))
        orders = [{"purchase_order_id": order_id, "staff_id": self.src.pick("staff"),
                   "counterparty_id": self.src.pick("counterparty"),
                   "item_code": "".join(self.rng.choice(string.ascii_uppercase + string.digits) for _ in range(7)),
                   "item_quantity": self.rng.randint(1, 1000), "item_unit_price": self._money(1, 1000),
                   "currency_id": self.src.pick("currency"), "agreed_delivery_date": self._date(2, 10),
                   "agreed_payment_date": self._date(1, 10), "agreed_delivery_location_id": self.src.pick("address")}
                  for order_id in ids]
        transactions = [{"transaction_id": tx_id, "transaction_type": "PURCHASE", "sales_order_id": None,
                         "purchase_order_id": order_id} for order_id, tx_id in zip(ids, tx_ids)]
        return _insert(conn, "purchase_order", orders) + _insert(conn, "transaction", transactions)

    def new_payments(self, conn: Connection, transaction_ids: list[int]) -> int:
        """Refunds against existing transactions (a second payment for the same order)."""
        kinds = dict(conn.run("SELECT transaction_id, transaction_type FROM transaction "
                              "WHERE transaction_id = ANY(CAST(:ids AS int[]))", ids=transaction_ids))
        ids = _new_ids(conn, "payment", len(transaction_ids))
        refund = {tx: "SALES_REFUND" if kinds.get(tx) == "SALE" else "PURCHASE_REFUND" for tx in transaction_ids}
        payments = [{**self._payment(tx, self.src.pick("counterparty"), self.src.pick("currency"),
                                     self._money(100, 20_000), refund[tx]),
                     "payment_id": pay_id} for pay_id, tx in zip(ids, transaction_ids)]
        return _insert(conn, "payment", payments)

    def paid_payments(self, conn: Connection, ids: list[int]) -> int:
        return _update(conn, "payment", [{"payment_id": i, "paid": True} for i in ids])

    def updated_sales_orders(self, conn: Connection, ids: list[int]) -> int:
        return _update(conn, "sales_order", [{"sales_order_id": i, "units_sold": self.rng.randint(1000, 100_000),
                                              "agreed_delivery_date": self._date(1, 14)} for i in ids])

    def updated_purchase_orders(self, conn: Connection, ids: list[int]) -> int:
        return _update(conn, "purchase_order", [{"purchase_order_id": i, "item_quantity": self.rng.randint(1, 1000),
                                                 "agreed_payment_date": self._date(1, 14)} for i in ids])

    def updated_addresses(self, conn: Connection, ids: list[int]) -> int:
        rows = [{"address_id": i, "address_line_2": self.rng.choice((None, "", "Suite 9", "Étage 2, bâtiment B")),
                 "phone": f"0{self.rng.randrange(1000, 9999)} {self.rng.randrange(1_000_000):06d}"} for i in ids]
        return _update(conn, "address", rows)

    def new_addresses(self, conn: Connection, n: int) -> int:
        ids = _new_ids(conn, "address", n)
        rows = [{"address_id": i, "address_line_1": f"{self.rng.randrange(1, 999)} Simulated Row, Unit \"{i}\"",
                 "address_line_2": None, "district": self.rng.choice((None, "Yorkshire", "Île-de-France")),
                 "city": self.rng.choice(("Leeds", "Kraków", "São Paulo")),
                 "postal_code": f"0{self.rng.randrange(10_000):04d}", "country": "United Kingdom",
                 "phone": f"0{self.rng.randrange(1000, 9999)} {self.rng.randrange(1_000_000):06d}"} for i in ids]
        return _insert(conn, "address", rows)

    def moved_counterparties(self, conn: Connection, ids: list[int]) -> int:
        rows = [{"counterparty_id": i, "legal_address_id": self.src.pick("address")} for i in ids]
        return _update(conn, "counterparty", rows)

    def updated_staff(self, conn: Connection, ids: list[int]) -> int:
        current = dict(conn.run("SELECT staff_id, department_id FROM staff WHERE staff_id = ANY(CAST(:ids AS int[]))",
                                ids=ids))
        rows = [{"staff_id": i, "department_id": self.src.other("department", current.get(i, 0))} for i in ids]
        return _update(conn, "staff", rows)

    def updated_departments(self, conn: Connection, ids: list[int]) -> int:
        rows = [{"department_id": i, "location": self.rng.choice((None, "Leeds", "Manchester", "Zürich")),
                 "manager": f"{self.rng.choice(('Ana', 'José', 'Siobhán'))} {self.rng.choice(('Smith', 'Nowak'))}"}
                for i in ids]
        return _update(conn, "department", rows)


#: Update kinds: the table whose existing rows they change, and which rows qualify.
_TARGETS = {"new_payments": ("transaction", "TRUE"), "paid_payments": ("payment", "NOT paid"),
            "updated_sales_orders": ("sales_order", "TRUE"), "updated_purchase_orders": ("purchase_order", "TRUE"),
            "updated_addresses": ("address", "TRUE"), "moved_counterparties": ("counterparty", "TRUE"),
            "updated_staff": ("staff", "TRUE"), "updated_departments": ("department", "TRUE")}


def simulate(admin_url: str, changes: int = 100, seed: int | None = None) -> dict[str, int]:
    """Write exactly `changes` rows of OLTP activity; rows written per kind of change.

    `seed` makes the choices repeatable against the same source (the timestamps are the
    server's, so never the rows' times); None draws a new one.
    """
    if changes < 0:
        raise ConfigurationError("--changes must be 0 or more")
    rng = random.Random(seed)  # nosec B311 - simulated activity, not security
    conn = admin_connect(admin_url, "simulate")
    try:
        if len(conn.run("SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY(:names)",
                        names=[t.name for t in SOURCE_TABLES])) < len(SOURCE_TABLES):
            raise ConfigurationError("the source lacks some of the eleven totesys tables; run `totesys-etl seed`")
        with source_errors("simulate"):
            return _simulate(conn, rng, changes)
    finally:
        conn.close()


def _simulate(conn: Connection, rng: random.Random, changes: int) -> dict[str, int]:
    src = _Source(conn, rng)
    makers = ("design", "staff", "counterparty", "currency", "address")
    possible = {k.name for k in KINDS if k.rows == 1} | ({"new_sales_orders", "new_purchase_orders"}
                                                         if all(src.ids[t] for t in makers) else set())
    if not src.payment_types:
        possible -= {"new_sales_orders", "new_payments"}
    plan = _plan(changes, rng, possible)
    events: list[tuple[str, object]] = []  # (kind, id of the row it changes, or None for new rows)
    for name, count in plan.items():
        if name in _TARGETS:
            ids = _pick_targets(src, name, count)
            plan[FILLER] += count - len(ids)
            events += [(name, i) for i in ids]
    events += [(name, None) for name in _BY_NAME if name not in _TARGETS for _ in range(plan[name])]
    rng.shuffle(events)
    activity = _Activity(src)
    written = {k.name: 0 for k in KINDS}
    batches = max(1, min(TRANSACTIONS, len(events)))
    for b in range(batches):
        batch = events[b::batches]
        with transaction(conn):
            for kind in KINDS:
                targets = [i for name, i in batch if name == kind.name]
                if not targets:
                    continue
                method = getattr(activity, kind.name)
                written[kind.name] += method(conn, targets if kind.name in _TARGETS else len(targets))
    return {name: n for name, n in written.items() if n}


def _pick_targets(src: _Source, kind: str, count: int) -> list[int]:
    """Distinct rows for an update kind; the first address changed is a counterparty's legal one."""
    table, where = _TARGETS[kind]
    ids = src.sample(table, count, where)
    if kind == "updated_addresses" and ids:
        legal = src.conn.run("SELECT DISTINCT legal_address_id FROM counterparty ORDER BY 1")
        if legal and not set(ids) & {r[0] for r in legal}:
            ids[0] = src.rng.choice(legal)[0]
    return ids
