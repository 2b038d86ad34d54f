from totesys_etl.schema import star_table
from totesys_etl.schema.ddl import create_table


def test_fact_ddl_has_primary_and_version_keys(warehouse_url, run_sql):
    run_sql(warehouse_url, create_table(star_table("fact_payment")))
    run_sql(warehouse_url, create_table(star_table("fact_payment")))  # IF NOT EXISTS: harmless twice
    constraints = run_sql(warehouse_url, "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint "
                                         "WHERE conrelid = 'fact_payment'::regclass ORDER BY contype")
    assert constraints == [["p", "PRIMARY KEY (payment_record_id)"],
                           ["u", "UNIQUE (payment_id, last_updated_date, last_updated_time)"]]
    columns = run_sql(warehouse_url, "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                                     "WHERE table_name = 'fact_payment' ORDER BY ordinal_position")
    assert columns[0] == ["payment_record_id", "integer", "NO"]
    assert ["payment_amount", "numeric", "NO"] in columns
    assert ["created_time", "time without time zone", "NO"] in columns
