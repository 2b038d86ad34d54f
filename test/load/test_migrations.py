"""Migrations create SPEC §3 exactly, from the declarations, and are a no-op when run again."""
import threading

import pg8000.native

from totesys_etl.adapters.postgres import parse_url
from totesys_etl.load.migrations import MIGRATIONS, migrate
from totesys_etl.schema import STAR_TABLES, STATE_TABLES

_TYPES = {"int": ("integer", None, None, None), "serial": ("integer", None, None, None),
          "varchar": ("character varying", None, None, None), "boolean": ("boolean", None, None, None),
          "date": ("date", None, None, None), "time": ("time without time zone", None, None, None),
          "timestamp": ("timestamp without time zone", None, None, None),
          "numeric": ("numeric", None, None, None), "varchar(3)": ("character varying", 3, None, None),
          "numeric(10,2)": ("numeric", None, 10, 2)}


def _connect(url):
    return pg8000.native.Connection(**parse_url(url))


def _columns(conn, table):
    return conn.run("SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, "
                    "is_nullable, column_default FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position", t=table)


def test_migration_creates_spec_tables_exactly(warehouse_url):
    conn = _connect(warehouse_url)
    try:
        assert migrate(conn) == [1]
        for table in (*STAR_TABLES, *STATE_TABLES):
            got = _columns(conn, table.name)
            assert [r[0] for r in got] == table.column_names, table.name
            for (name, data_type, length, precision, scale, nullable, default), column in zip(got, table.columns):
                kind, want_length, want_precision, want_scale = _TYPES[column.type]
                assert data_type == kind, (table.name, name)
                assert length == want_length, (table.name, name)
                if want_precision is not None or column.type == "numeric":
                    assert (precision, scale) == (want_precision, want_scale), (table.name, name)
                assert nullable == ("YES" if column.nullable else "NO"), (table.name, name)
                assert (default or "").startswith("nextval(") == (column.type == "serial"), (table.name, name)
            keys = conn.run(
                "SELECT c.contype, array_agg(a.attname::text ORDER BY k.ord) FROM pg_constraint c "
                "CROSS JOIN LATERAL unnest(c.conkey) WITH ORDINALITY AS k(attnum, ord) "
                "JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum "
                "WHERE c.conrelid = CAST(:t AS regclass) GROUP BY c.oid, c.contype", t=table.name)
            want = {("p", tuple(table.key))} | ({("u", tuple(table.version_key))} if table.version_key else set())
            assert {(kind, tuple(cols)) for kind, cols in keys} == want, table.name
        assert conn.run("SELECT count(*) FROM information_schema.table_constraints "
                        "WHERE constraint_type = 'FOREIGN KEY' AND table_schema = 'public'") == [[0]]
        public = {r[0] for r in conn.run("SELECT table_name FROM information_schema.tables "
                                         "WHERE table_schema = 'public'")}
        star = {t.name for t in STAR_TABLES}
        assert star <= public and all(name.startswith("etl_") for name in public - star)
        names = dict(conn.run("SELECT currency_code, currency_name FROM etl_currency_name"))
        assert names["GBP"] == "Pound Sterling" and names["USD"] == "US Dollar"
        assert names["EUR"] == "Euro" and names["CHF"] == "Swiss Franc" and len(names) > 150
    finally:
        conn.close()


def test_migrating_twice_changes_nothing(warehouse_url):
    conn = _connect(warehouse_url)
    try:
        migrate(conn)
        before = conn.run("SELECT xmin::text, version, name, applied_at FROM etl_migrations")
        currencies = conn.run("SELECT xmin::text, * FROM etl_currency_name ORDER BY 2")
        assert migrate(conn) == []
        assert conn.run("SELECT xmin::text, version, name, applied_at FROM etl_migrations") == before
        assert conn.run("SELECT xmin::text, * FROM etl_currency_name ORDER BY 2") == currencies
        assert [r[1] for r in before] == [v for v, _, _ in MIGRATIONS]
    finally:
        conn.close()


def test_two_migrations_at_once_apply_once(warehouse_url):
    """Without any outer lock (a tool calling migrate), two callers still serialise."""
    results, errors = [], []

    def one():
        conn = _connect(warehouse_url)
        try:
            results.append(migrate(conn))
        except Exception as e:  # collected and asserted below
            errors.append(e)
        finally:
            conn.close()

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(results) == [[], [1]]
