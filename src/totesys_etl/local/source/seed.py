"""`totesys-etl seed`: the eleven totesys tables, dropped and recreated with reproducible data.

Why the server generates the big tables: a million orders means about four million rows with
their transactions and payments, and they must load in under a minute on two cores, so
`sales_order`, `purchase_order`, `transaction` and `payment` are `INSERT … SELECT … FROM
generate_series`, never a row at a time. Every "random" value is `hashint8extended(row id, k)`,
where `k` mixes the seed and the column's name: the same seed gives the same rows on any day and
any machine, and a child row can recompute its parent's values (a payment's counterparty is its
order's) without reading the parent. The small tables (addresses, counterparties, staff …) are
made in Python from `random.Random(seed)`, because that is where the awkward text lives: quotes,
commas, newlines, non-ASCII letters, emoji, leading zeros, NULL and '' side by side.

The tables themselves (bare first, keys, indexes and grants after the load) come from
`source_db.py`, which `snapshot.py` shares.
"""
from __future__ import annotations

import random
import unicodedata
import zlib
from datetime import date, datetime, timedelta

import pycountry
from pg8000.native import identifier

from totesys_etl.adapters.postgres import Connection, copy_in, transaction
from totesys_etl.errors import ConfigurationError
from totesys_etl.logs import StageLog, Timer
from totesys_etl.local.source.source_db import (admin_connect, create_source_tables, csv_rows, finish_source_tables,
                                                prepare_session, source_errors)
from totesys_etl.schema import source_table
from totesys_etl.schema.ddl import column_list

#: Generated history ends here, a fixed instant, so a seed gives the same rows whatever the date.
REFERENCE = datetime(2025, 11, 3, 9, 30)
#: ... and starts about three years earlier.
HISTORY_START = datetime(2022, 11, 3, 14, 20, 49, 962000)

#: Rows in the small tables (sales orders are `orders`; purchase orders `orders // 3`).
ADDRESSES, COUNTERPARTIES, DESIGNS, DEPARTMENTS, STAFF = 300, 150, 400, 8, 20
CURRENCIES = ("GBP", "USD", "EUR")
PAYMENT_TYPES = ("SALES_RECEIPT", "SALES_REFUND", "PURCHASE_PAYMENT", "PURCHASE_REFUND")


# --- the small tables, in Python ---------------------------------------------------------------

_FIRST = ("Jeremie", "Deron", "Jeanette", "Ana", "Magdalena", "Korey", "Raphael", "Oswaldo", "Brody", "Jazmyn",
          "Meda", "Imani", "Stan", "Rick", "Pierre", "Zoë", "José", "Siobhán", "Øyvind", "Łukasz", "Chloé",
          "Björn", "Aoife", "Renée", "Micheal", "Lucy", "Jean", "Melba", "Mariela", "Ngozi")
_LAST = ("Franey", "Beier", "Erdman", "Glover", "Zieme", "Smith", "O'Brien", "Müller", "Nowak", "García",
         "Dubois", "Ó Súilleabháin", "Kowalczyk", "Jones", "Hahn", "D'Amore", "Lindqvist", "Åberg", "Toy",
         "Hane", "Runolfsdottir", "Sanford", "Predovic", "Morar", "Leannon", "Fahey", "Nguyễn", "Okafor")
_STREETS = ("Herzog Via", "Alexie Cliffs", "Sincere Fort", "Kattie Turnpike", "O'Connell Street",
            "Rue de l'Église", "Hauptstraße", "Calle de Alcalá", "Ulica Długa", "High Street", "Mill Lane",
            "Kiehn Meadows", "Rempel Loaf", "Via dell'Orso", "Chemin des Écoliers")
_DISTRICTS = ("Avon", "Bedfordshire", "Buckinghamshire", "Cambridgeshire", "Île-de-France", "Bayern",
              "Greater Manchester", "Yorkshire", "Mazowieckie", "Catalunya")
_CITIES = ("New Patienceburgh", "Aliso Viejo", "Lake Charles", "São Paulo", "Kraków", "Zürich", "Reykjavík",
           "München", "Ōsaka", "Québec", "Manchester", "Leeds", "Fort Shadburgh", "Bradford", "Dublin")
_MATERIALS = ("Wooden", "Bronze", "Granite", "Soft", "Steel", "Plastic", "Rubber", "Cotton", "Frozen",
              "Concrete", "Fresh", "Metal", "Bespoke", "Recycled", "Café-style", "Hand-made ✂️")
_FOLDERS = ("/usr", "/private", "/System", "/Library", "/opt/share", "C:\\Designs\\Totes", "/home/user/My Designs",
            "/usr/local/src")
_DEPARTMENTS = (("Sales", "Manchester"), ("Purchasing", "Manchester"), ("Production", "Leeds"),
                ("Dispatch", "Leds"), ("Finance", "Manchester"), ("Facilities", None), ("Communications", "Leeds"),
                ("HR", "Leeds"))
_ALPHANUMERIC = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _SmallTables:
    """Rows of the seven small tables, each table from its own `Random(f"{seed}:{table}")`."""

    def __init__(self, seed: int):
        self.seed = seed

    def _rng(self, table: str) -> random.Random:
        return random.Random(f"{self.seed}:{table}")  # nosec B311 - test data, not security

    @staticmethod
    def _stamps(rng: random.Random, index: int) -> tuple[datetime, datetime]:
        """Most rows arrive with the first import; a few later. A fifth were updated since."""
        created = HISTORY_START + timedelta(milliseconds=index * 7 + rng.randrange(5))
        if rng.random() < 0.1:
            created += timedelta(milliseconds=rng.randrange(int((REFERENCE - created).total_seconds() * 1000)))
        updated = created
        if rng.random() < 0.2:
            updated += timedelta(milliseconds=rng.randrange(int((REFERENCE - created).total_seconds() * 1000) + 1))
        return _ms(created), _ms(updated)

    def tables(self) -> dict[str, list[tuple]]:
        return {"address": self.address(), "counterparty": self.counterparty(), "currency": self.currency(),
                "department": self.department(), "design": self.design(), "staff": self.staff(),
                "payment_type": self.payment_type()}

    def address(self) -> list[tuple]:
        rng = self._rng("address")
        countries = sorted(c.name for c in pycountry.countries)
        rows = []
        for i in range(1, ADDRESSES + 1):
            line_1 = f"{rng.randrange(1, 9999)} {rng.choice(_STREETS)}"
            special = i % 50
            if special == 3:
                line_1 = f"Flat {rng.randrange(1, 40)}, {line_1}"  # a comma
            elif special == 7:
                line_1 = f"Unit {rng.randrange(1, 20)}\nThe Old Mill"  # a newline
            elif special == 11:
                line_1 = 'The "Old" Bakery, ' + line_1  # quotes and a comma
            elif special == 13:
                line_1 = "🏠 " + line_1  # emoji
            roll = rng.random()
            line_2 = None if roll < 0.55 else "" if roll < 0.6 else rng.choice(("Suite 12", "Apt. 3", "Floor 2"))
            district = None if rng.random() < 0.4 else rng.choice(_DISTRICTS)
            style = rng.randrange(4)
            postal_code = (f"0{rng.randrange(10000):04d}" if style == 0 else f"{rng.randrange(100000):05d}"
                           if style == 1 else f"{rng.randrange(100000):05d}-{rng.randrange(10000):04d}"
                           if style == 2 else f"M{rng.randrange(1, 40)} {rng.randrange(10)}AE")
            phone = f"0{rng.randrange(1000, 9999)} {rng.randrange(1000000):06d}"
            rows.append((i, line_1, line_2, district, rng.choice(_CITIES), postal_code, rng.choice(countries),
                         phone, *self._stamps(rng, i)))
        return rows

    def counterparty(self) -> list[tuple]:
        rng = self._rng("counterparty")
        rows = []
        for i in range(1, COUNTERPARTIES + 1):
            a, b, c = rng.choice(_LAST), rng.choice(_LAST), rng.choice(_LAST)
            name = rng.choice((f"{a} and Sons", f"{a}, {b} and {c}", f"{a} - {b}", f"{a} Inc", f"{a} LLC",
                               f"{a} GmbH", f"{a} & {b} Ltd"))
            if i % 40 == 5:
                name = "Café Société 🛍️ Ltd"
            elif i % 40 == 9:
                name = 'The "Tote" Emporium'
            commercial = None if rng.random() < 0.1 else f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            title = rng.choice(("", "Mrs. ", "Dr. "))
            delivery = None if rng.random() < 0.1 else f"{title}{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            if i % 40 == 17:
                delivery = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}\n(ask at reception)"
            rows.append((i, name, rng.randrange(1, ADDRESSES + 1), commercial, delivery, *self._stamps(rng, i)))
        return rows

    def currency(self) -> list[tuple]:
        created = _ms(HISTORY_START)
        return [(i, code, created, created) for i, code in enumerate(CURRENCIES, 1)]

    def payment_type(self) -> list[tuple]:
        created = _ms(HISTORY_START)
        return [(i, name, created, created) for i, name in enumerate(PAYMENT_TYPES, 1)]

    def department(self) -> list[tuple]:
        rng = self._rng("department")
        rows = []
        for i, (name, location) in enumerate(_DEPARTMENTS, 1):
            manager = None if name == "Dispatch" else f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            rows.append((i, name, location, manager, *self._stamps(rng, i)))
        return rows

    def design(self) -> list[tuple]:
        rng = self._rng("design")
        rows = []
        for i in range(1, DESIGNS + 1):
            name = rng.choice(_MATERIALS)
            slug = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().strip().lower()
            day = date(2022, 1, 1) + timedelta(days=rng.randrange(1000))
            tag = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(4))
            rows.append((i, name, rng.choice(_FOLDERS), f"{slug}-{day:%Y%m%d}-{tag}.json", *self._stamps(rng, i)))
        return rows

    def staff(self) -> list[tuple]:
        rng = self._rng("staff")
        rows = []
        for i in range(1, STAFF + 1):
            first, last = rng.choice(_FIRST), rng.choice(_LAST)
            email = ".".join(unicodedata.normalize("NFKD", n).encode("ascii", "ignore").decode().lower()
                             .replace(" ", "").replace("'", "") for n in (first, last))
            department = 1 + (i - 1) % DEPARTMENTS if i <= DEPARTMENTS else rng.randrange(1, DEPARTMENTS + 1)
            rows.append((i, first, last, department, f"{email}@terrifictotes.com", *self._stamps(rng, i)))
        return rows


# --- the big tables, in SQL ---------------------------------------------------------------------

_POSITIVE = 9223372036854775807
_DAY_MS = 86_400_000


def _timestamp(moment: datetime) -> str:
    return f"TIMESTAMP '{moment.isoformat(sep=' ', timespec='milliseconds')}'"


class _Generator:
    """SQL expressions of the big tables' columns, as functions of a row id expression.

    A column's value is a pure function of (seed, column, row id), so any table can recompute
    another's: `payment` takes its order's counterparty and currency without a join.
    """

    def __init__(self, seed: int, orders: int):
        self.seed = seed & 0x7FFFFFFF
        self.orders = orders
        self.purchases = orders // 3
        self.transactions = self.orders + self.purchases
        self.span_ms = int((REFERENCE - HISTORY_START).total_seconds() * 1000)
        self.step_ms = max(1, self.span_ms // max(1, orders))
        self.start, self.end = _timestamp(HISTORY_START), _timestamp(REFERENCE)

    def h(self, column: str, row: str) -> str:
        """A non-negative pseudo-random bigint for (seed, column, row)."""
        k = (self.seed << 32) | zlib.crc32(column.encode())
        return f"(hashint8extended({row}, {k}) & {_POSITIVE})"

    def pick(self, column: str, row: str, n: int) -> str:
        return f"(1 + {self.h(column, row)} % {n})"

    def chance(self, column: str, row: str, percent: float) -> str:
        return f"({self.h(column, row)} % 10000 < {int(percent * 100)})"

    def at(self, ms: str) -> str:
        """The timestamp `ms` milliseconds into the history, never past its end."""
        return f"least({self.end}, {self.start} + ({ms}) * INTERVAL '1 millisecond')"

    def later(self, column: str, row: str, moment: str, percent: float, max_days: int) -> str:
        """`moment`, or for `percent` of rows a later one (an update), never past the history's end."""
        step = f"{self.h(column + '.by', row)} % {max_days * _DAY_MS}"
        return (f"CASE WHEN {self.chance(column, row, percent)} THEN least({self.end}, {moment} + ({step}) "
                f"* INTERVAL '1 millisecond') ELSE {moment} END")

    def amount(self, column: str, row: str, small_digits: int) -> str:
        """Unconstrained numeric of scale 0 to 8 (mostly 2); one in 500 has 19 significant digits."""
        scale = f"(CASE WHEN {self.chance(column + '.s', row, 60)} THEN 2 ELSE {self.h(column + '.t', row)} % 9 END)"
        digits = (f"(CASE WHEN {self.h(column + '.big', row)} % 500 = 0 "
                  f"THEN 1000000000000000000 + {self.h(column + '.d', row)} % 8000000000000000000 "
                  f"ELSE 1 + {self.h(column + '.d', row)} % {10 ** small_digits} END)")
        return f"round({digits}::numeric / (10::numeric ^ {scale}), {scale}::int)"

    def date_text(self, column: str, moment: str, row: str, days: int, after: int = 0) -> str:
        return f"(({moment})::date + ({after} + {self.h(column, row)} % {days})::int)::text"

    # Sales orders: ids 1..orders in time order, created at evenly spread instants plus jitter.
    def so_created(self, i: str) -> str:
        return self.at(f"(({i}) - 1)::bigint * {self.span_ms} / {max(1, self.orders)} "
                       f"+ {self.h('so.created', i)} % {self.step_ms}")

    def so_counterparty(self, i: str) -> str:
        return self.pick("so.counterparty", i, COUNTERPARTIES)

    def so_currency(self, i: str) -> str:
        return self.pick("so.currency", i, len(CURRENCIES))

    # Purchase order j is placed just after sales order 3j.
    def po_created(self, j: str) -> str:
        return self.at(f"(3 * ({j}) - 1)::bigint * {self.span_ms} / {max(1, self.orders)} "
                       f"+ {self.h('po.created', j)} % {self.step_ms + 600_000}")

    def po_counterparty(self, j: str) -> str:
        return self.pick("po.counterparty", j, COUNTERPARTIES)

    def po_currency(self, j: str) -> str:
        return self.pick("po.currency", j, len(CURRENCIES))

    def sales_order(self) -> tuple[dict[str, str], str]:
        g = "g"
        price = (f"(CASE WHEN {self.h('so.price.big', g)} % 1000 = 0 "
                 f"THEN (1 + {self.h('so.price', g)} % 9999999999)::numeric / 100 "
                 f"ELSE (200 + {self.h('so.price', g)} % 201)::numeric / 100 END)")
        columns = {
            "sales_order_id": g, "created_at": "created",
            "last_updated": self.later("so.updated", g, "created", 15, 30),
            "design_id": self.pick("so.design", g, DESIGNS), "staff_id": self.pick("so.staff", g, STAFF),
            "counterparty_id": self.so_counterparty(g), "units_sold": f"(1000 + {self.h('so.units', g)} % 99001)",
            "unit_price": price, "currency_id": self.so_currency(g),
            "agreed_delivery_date": self.date_text("so.delivery", "created", g, 7, after=1),
            "agreed_payment_date": self.date_text("so.payment", "created", g, 7, after=1),
            "agreed_delivery_location_id": self.pick("so.location", g, ADDRESSES),
        }
        rows = (f"(SELECT g, {self.so_created('g')} AS created "  # nosec B608 - ints and constants only
                f"FROM generate_series(1, {self.orders}) AS g OFFSET 0) AS s")
        return columns, rows

    def purchase_order(self) -> tuple[dict[str, str], str]:
        g = "g"
        code = " || ".join(f"substr('{_ALPHANUMERIC}', 1 + (({self.h('po.code', g)} >> {6 * k}) % 36)::int, 1)"
                           for k in range(7))
        columns = {
            "purchase_order_id": g, "created_at": "created",
            "last_updated": self.later("po.updated", g, "created", 15, 30),
            "staff_id": self.pick("po.staff", g, STAFF), "counterparty_id": self.po_counterparty(g),
            "item_code": f"({code})", "item_quantity": f"(1 + {self.h('po.quantity', g)} % 1000)",
            "item_unit_price": self.amount("po.price", g, 6), "currency_id": self.po_currency(g),
            "agreed_delivery_date": self.date_text("po.delivery", "created", g, 10, after=1),
            "agreed_payment_date": self.date_text("po.payment", "created", g, 10, after=1),
            "agreed_delivery_location_id": self.pick("po.location", g, ADDRESSES),
        }
        rows = (f"(SELECT g, {self.po_created('g')} AS created "  # nosec B608 - ints and constants only
                f"FROM generate_series(1, {self.purchases}) AS g OFFSET 0) AS s")
        return columns, rows

    # Transactions interleave in time order: every fourth is purchase order t/4, the others are
    # sales order t - t/4 (a bijection onto 1..orders + orders // 3).
    def _order_rows(self, where: str = "") -> str:
        created = (f"CASE WHEN t % 4 = 0 THEN {self.po_created('t / 4')} "
                   f"ELSE {self.so_created('t - t / 4')} END")
        return (f"(SELECT t, t % 4 = 0 AS purchase, {created} AS created "  # nosec B608 - ints, constants
                f"FROM generate_series(1, {self.transactions}) AS t {where} OFFSET 0) AS s")

    def transaction(self) -> tuple[dict[str, str], str]:
        columns = {
            "transaction_id": "t", "created_at": "created", "last_updated": "created",
            "transaction_type": "CASE WHEN purchase THEN 'PURCHASE' ELSE 'SALE' END",
            "sales_order_id": "CASE WHEN purchase THEN NULL ELSE t - t / 4 END",
            "purchase_order_id": "CASE WHEN purchase THEN t / 4 END",
        }
        return columns, self._order_rows()

    # Every transaction but one in seven (which one depends on the seed) has a payment; payment
    # ids are consecutive: the payment of transaction t is t minus the skipped ones before it.
    def payment(self) -> tuple[dict[str, str], str]:
        skip = self.seed % 7
        created = f"least({self.end}, created + ({self.h('pay.created', 't')} % 3600000) * INTERVAL '1 millisecond')"
        refund = self.chance("pay.refund", "t", 5)
        columns = {
            "payment_id": f"t - (t + {skip}) / 7", "transaction_id": "t",
            "created_at": "paid_at", "last_updated": self.later("pay.updated", "t", "paid_at", 30, 45),
            "counterparty_id": f"CASE WHEN purchase THEN {self.po_counterparty('t / 4')} "
                               f"ELSE {self.so_counterparty('t - t / 4')} END",
            "currency_id": f"CASE WHEN purchase THEN {self.po_currency('t / 4')} "
                           f"ELSE {self.so_currency('t - t / 4')} END",
            "payment_amount": self.amount("pay.amount", "t", 8),
            "payment_type_id": f"CASE WHEN purchase THEN CASE WHEN {refund} THEN 4 ELSE 3 END "
                               f"ELSE CASE WHEN {refund} THEN 2 ELSE 1 END END",
            "paid": self.chance("pay.paid", "t", 80),
            "payment_date": self.date_text("pay.date", "paid_at", "t", 31),
            "company_ac_number": f"(10000000 + {self.h('pay.company_ac', 't')} % 90000000)",
            "counterparty_ac_number": f"(10000000 + {self.h('pay.counterparty_ac', 't')} % 90000000)",
        }
        rows = (f"(SELECT t, purchase, {created} AS paid_at "  # nosec B608 - ints and constants only
                f"FROM {self._order_rows(f'WHERE (t + {skip}) % 7 <> 0')} OFFSET 0) AS p")
        return columns, rows


def _insert_select(conn: Connection, table_name: str, columns: dict[str, str], rows: str) -> int:
    """INSERT … SELECT with one expression per declared column, in the declaration's order."""
    table = source_table(table_name)
    if set(columns) != set(table.column_names):
        raise ValueError(f"generator for {table_name} does not match its declaration")
    select = ",\n  ".join(columns[c] for c in table.column_names)
    conn.run(f"INSERT INTO {identifier(table.name)} ({column_list(table.column_names)})\n"  # nosec B608
             f"SELECT {select}\nFROM {rows}")  # expressions built from ints and declared names only
    return conn.row_count


def seed(admin_url: str, orders: int = 10_000, seed: int = 1) -> dict[str, int]:
    """Drop and recreate the eleven tables with `orders` sales orders; row count per table.

    One transaction: a reader sees the old tables or the new ones, never half of either.
    """
    if orders < 0:
        raise ConfigurationError("--orders must be 0 or more")
    conn = admin_connect(admin_url, "seed")
    try:
        with source_errors("seed"), transaction(conn):
            prepare_session(conn)
            create_source_tables(conn)
            log = StageLog("seed")
            for name, rows in _SmallTables(int(seed)).tables().items():
                copy_in(conn, name, source_table(name).column_names, [csv_rows(rows)])
            generator = _Generator(int(seed), int(orders))
            for name in ("sales_order", "purchase_order", "transaction", "payment"):
                timer = Timer()
                rows = _insert_select(conn, name, *getattr(generator, name)())
                log.info("table generated", table=name, rows=rows, seconds=timer.seconds)
            timer = Timer()
            counts = finish_source_tables(conn)
            log.info("keys, indexes and statistics built", seconds=timer.seconds)
            return counts
    finally:
        conn.close()
