"""Migrations create contract §3 exactly, from the declarations, and are a no-op when run again."""
import threading

import pg8000.native

from totesys_etl.adapters.postgres import parse_url, transaction
from totesys_etl.load import migrations
from totesys_etl.load.migrations import MIGRATIONS, migrate
from totesys_etl.local.services import admin
from totesys_etl.schema import API_FACTS, EVENT_FACTS, FACTS, STAR_TABLES, STATE_TABLES
from totesys_etl.schema.rereads import REREAD_TABLES, reread_table, stored_key
from totesys_etl.schema.warehouse import OLDEST_RUN_ID, bookkeeping_columns

_TYPES = {"int": ("integer", None, None, None), "serial": ("integer", None, None, None),
          "varchar": ("character varying", None, None, None), "boolean": ("boolean", None, None, None),
          "date": ("date", None, None, None), "time": ("time without time zone", None, None, None),
          "timestamp": ("timestamp without time zone", None, None, None),
          "numeric": ("numeric", None, None, None), "varchar(3)": ("character varying", 3, None, None),
          "numeric(10,2)": ("numeric", None, 10, 2), "text": ("text", None, None, None)}


def _connect(url):
    return pg8000.native.Connection(**parse_url(url))


def _columns(conn, table):
    return conn.run("SELECT column_name, data_type, character_maximum_length, numeric_precision, numeric_scale, "
                    "is_nullable, column_default FROM information_schema.columns "
                    "WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position", t=table)


def test_migration_creates_spec_tables_exactly(warehouse_url):
    conn = _connect(warehouse_url)
    try:
        assert migrate(conn) == [v for v, _, _ in MIGRATIONS]
        for table in (*STAR_TABLES, *STATE_TABLES, *API_FACTS, *EVENT_FACTS):
            got = _columns(conn, table.name)
            columns = (*table.columns, *bookkeeping_columns(table))
            assert [r[0] for r in got] == [c.name for c in columns], table.name
            assert ("etl_run_id" in [r[0] for r in got]) == (table.kind in ("fact", "state")), table.name
            for (name, data_type, length, precision, scale, nullable, default), column in zip(got, columns):
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
        star = {t.name for t in (*STAR_TABLES, *API_FACTS, *EVENT_FACTS)}  # contract §3 names both
        assert star <= public and all(name.startswith("etl_") for name in public - star)
        names = dict(conn.run("SELECT currency_code, currency_name FROM etl_currency_name"))
        assert names["GBP"] == "Pound Sterling" and names["USD"] == "US Dollar"
        assert names["EUR"] == "Euro" and names["CHF"] == "Swiss Franc" and len(names) > 150
    finally:
        conn.close()


def test_each_re_read_ledger_is_its_facts_stored_key_and_a_run_indexed(warehouse_url):
    """schema/rereads.py: one ledger per fact whose stored rows a later run's values replace, keyed as
    the fact's rows are matched (a version, a rate's day and currency), with the run that carried the
    row again; indexed by run, which is how the loader reads and prunes it."""
    conn = _connect(warehouse_url)
    try:
        migrate(conn)
        assert sorted(REREAD_TABLES) == sorted(t.name for t in (*FACTS, *API_FACTS))
        for fact in (*FACTS, *API_FACTS):
            ledger = reread_table(fact.name)
            got = [(name, nullable) for name, _, _, _, _, nullable, _ in _columns(conn, ledger.name)]
            assert got == [(c, "NO") for c in (*stored_key(fact), "etl_run_id")], fact.name
            indexes = dict(conn.run("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = :t", t=ledger.name))
            assert sorted(indexes) == [f"{ledger.name}_pkey", f"{ledger.name}_run_idx"], fact.name
            assert indexes[f"{ledger.name}_run_idx"].endswith("(etl_run_id)"), fact.name
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
    barrier = threading.Barrier(2)

    def one():
        conn = _connect(warehouse_url)
        try:
            barrier.wait(timeout=30)      # both connected, then released together: the calls overlap
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
    assert sorted(results) == [[], [v for v, _, _ in MIGRATIONS]]


def _shape(conn) -> list:
    return conn.run("SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default "
                    "FROM information_schema.columns WHERE table_schema = 'public' ORDER BY 1, 3")


def test_a_version_1_warehouse_migrates_to_the_shape_of_a_fresh_one(postgres, warehouse_url, monkeypatch):
    """Rows loaded before etl_run_id get a run id older than any run: the next run's version wins."""
    conn = _connect(warehouse_url)
    fresh_name = f"dw_fresh_{threading.get_ident()}"
    admin.create_database(postgres, fresh_name)
    fresh = _connect(postgres.url(fresh_name))
    try:
        monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS[:1])
        assert migrate(conn) == [1]
        with transaction(conn):
            conn.run("INSERT INTO etl_src_design (design_id, design_name, file_location, file_name, created_at, "
                     "last_updated) VALUES (1, 'd', '/', 'f', now(), now())")
            conn.run("INSERT INTO fact_payment (payment_id, created_date, created_time, last_updated_date, "
                     "last_updated_time, transaction_id, counterparty_id, payment_amount, currency_id, "
                     "payment_type_id, paid, payment_date) VALUES (1, current_date, '09:00', current_date, "
                     "'09:00', 1, 1, 1, 1, 1, true, current_date)")
        monkeypatch.setattr(migrations, "MIGRATIONS", MIGRATIONS)
        assert migrate(conn) == [v for v, _, _ in MIGRATIONS[1:]]
        assert migrate(fresh) == [v for v, _, _ in MIGRATIONS]
        assert _shape(conn) == _shape(fresh)
        assert conn.run("SELECT etl_run_id FROM etl_src_design UNION ALL SELECT etl_run_id FROM fact_payment") \
            == [[OLDEST_RUN_ID], [OLDEST_RUN_ID]]
        assert OLDEST_RUN_ID < "19700101T000000000000Z"
        for table in (*STATE_TABLES, *FACTS, *EVENT_FACTS):        # no default left: every later row must name its run
            assert conn.run("SELECT column_default, is_nullable FROM information_schema.columns "
                            "WHERE table_name = :t AND column_name = 'etl_run_id'", t=table.name) == [[None, "NO"]]
    finally:
        conn.close()
        fresh.close()
