"""Reading what the ingestor wrote: manifests' entries and PostgreSQL COPY CSVs, checked exactly."""
from datetime import datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from totesys_etl.errors import InvalidInput
from totesys_etl.process import read
from totesys_etl.schema import source_table

RUN = "20221103T142052186000Z"
STAMP = "2022-11-03 14:20:52.186"


def address(address_id, **values):
    row = {"address_id": address_id, "address_line_1": "1 Road", "address_line_2": None, "district": None,
           "city": "Leeds", "postal_code": "LS1", "country": "UK", "phone": "0113", "created_at": STAMP,
           "last_updated": STAMP}
    return {**row, **values}


def purchase(purchase_order_id, price):
    return {"purchase_order_id": purchase_order_id, "staff_id": 1, "counterparty_id": 1, "item_code": "X",
            "item_quantity": 1, "item_unit_price": price, "currency_id": 1,
            "agreed_delivery_date": "2022-11-05",
            "agreed_payment_date": "2022-11-06", "agreed_delivery_location_id": 1, "created_at": STAMP,
            "last_updated": STAMP}


def read_all(tmp_path, body: bytes, table: str, rows: int) -> pa.Table:
    """The fast path: typed batches, clean, with the manifest's row count."""
    path = tmp_path / "in.csv"
    path.write_bytes(body)
    declared = source_table(table)
    read.check_header(str(path), declared)
    batches = list(read.typed_batches(str(path), declared))
    if any(read.column_problems(declared, b) for b in batches):
        raise read.NotClean()  # as the processor's fast path does
    read.check_count(declared, sum(b.num_rows for b in batches), rows)
    return pa.Table.from_batches(batches, schema=read.table_schema(declared))


def read_carefully(tmp_path, body: bytes, table: str, rows: int) -> tuple[pa.Table, list[list[str]]]:
    """The careful path: the typed rows (NULL where a value did not convert) and each row's problems."""
    path = tmp_path / "in.csv"
    path.write_bytes(body)
    declared = source_table(table)
    read.check_header(str(path), declared)
    typed, reasons = [], []
    for text in read.text_batches(str(path), declared):
        batch, problems = read.from_text(declared, text)
        typed.append(batch)
        reasons += [[p.reason for p in problems if p.rows[i].as_py()] for i in range(text.num_rows)]
    read.check_count(declared, len(reasons), rows)
    return pa.Table.from_batches(typed, schema=read.table_schema(declared)), reasons


def test_decimals_are_exact_at_every_scale(tmp_path, copy_csv):
    prices = ["1234567890.123456789", "12345678901234567.89", "0", "0.1", "-0.12", "123.456", "1.2345",
              "99999.99999", "0.123456", "1234567.1234567", "0.00000001", "100.000"]
    body = copy_csv("purchase_order", [purchase(i + 1, p) for i, p in enumerate(prices)])
    table = read_all(tmp_path, body, "purchase_order", len(prices))
    assert table.column("item_unit_price").type == pa.decimal128(38, 10)
    assert table.column("item_unit_price").to_pylist() == [Decimal(p) for p in prices]
    assert table.column("created_at").to_pylist()[0] == datetime(2022, 11, 3, 14, 20, 52, 186000)


def test_text_is_kept_exactly(tmp_path, copy_csv):
    texts = ['"quoted", with comma', "multi\nline\r\nvalue", "emoji 🚀 ünïcödé", "0044 leading zeros",
             "  spaces kept  ", "NULL", "\\N", "", ","]
    rows = [address(i + 1, address_line_1=t, address_line_2=t if i % 2 else None, district="")
            for i, t in enumerate(texts)]
    table = read_all(tmp_path, copy_csv("address", rows), "address", len(rows))
    assert table.column("address_line_1").to_pylist() == texts
    assert table.column("address_line_2").to_pylist() == [t if i % 2 else None for i, t in enumerate(texts)]
    assert table.column("district").to_pylist() == [""] * len(texts)


def test_booleans_and_money_of_the_source_types(tmp_path, copy_csv):
    rows = [{"payment_id": i, "transaction_id": 1, "counterparty_id": 1, "payment_amount": amount,
             "currency_id": 1, "payment_type_id": 1, "paid": paid, "payment_date": "2022-11-03",
             "company_ac_number": 1, "counterparty_ac_number": 2, "created_at": STAMP, "last_updated": STAMP}
            for i, (amount, paid) in enumerate([("5", True), ("0.00000001", False)], start=1)]
    table = read_all(tmp_path, copy_csv("payment", rows), "payment", 2)
    assert table.column("paid").to_pylist() == [True, False]
    assert table.column("payment_amount").to_pylist() == [Decimal("5"), Decimal("0.00000001")]


def test_a_file_bigger_than_a_block_is_read_in_several_batches(tmp_path, monkeypatch):
    monkeypatch.setattr(read, "CSV_BLOCK_BYTES", 64 * 1024)
    header = "currency_id,currency_code,created_at,last_updated\n"
    body = header + "".join(f"{i},GBP,{STAMP},{STAMP}\n" for i in range(1, 20001))
    path = tmp_path / "big.csv"
    path.write_text(body)
    batches = list(read.typed_batches(str(path), source_table("currency")))
    assert len(batches) > 5
    assert sum(b.num_rows for b in batches) == 20000


HEADER = "currency_id,currency_code,created_at,last_updated\n"
GOOD = f"1,GBP,{STAMP},{STAMP}\n"


@pytest.mark.parametrize("body, rows, reason", [
    (HEADER + GOOD + '2,"US', 2, "does not parse"),                                   # truncated in a quote
    (HEADER + GOOD + f"2,USD,{STAMP}", 2, "does not parse"),                            # truncated in a row
    (HEADER + GOOD, 2, "has 1 rows"),                                                   # truncated at a row
    (HEADER + GOOD + f"2,USD,{STAMP},{STAMP},extra\n", 2, "does not parse"),            # extra column
    ("currency_id,currency_code,created_at\n1,GBP,2022-11-03\n", 1, "header"),          # missing column
    (HEADER.strip() + ",extra\n" + GOOD.strip() + ",x\n", 1, "header"),                 # extra header
    (f"currency_code,currency_id,created_at,last_updated\nGBP,1,{STAMP},{STAMP}\n", 1, "header"),  # order
    (HEADER + GOOD + "\n", 1, "has 2 rows"),                                            # stray empty line
    (HEADER.encode().decode() + "1,\xff,x,y\n", 1, "does not parse"),                   # not UTF-8
    ("", 0, "header"),                                                                  # empty file
    ("\ufeff" + HEADER + GOOD, 1, "header"),                                              # byte order mark
])
def test_a_file_that_cannot_be_read_at_all_is_invalid(tmp_path, body, rows, reason):
    data = body.encode("latin-1") if "\xff" in body else body.encode()
    with pytest.raises(InvalidInput, match=reason):
        read_carefully(tmp_path, data, "currency", rows)


@pytest.mark.parametrize("line, reason", [
    (f"one,GBP,{STAMP},{STAMP}", "currency_id does not read as int"),                   # wrong type
    (f"1,GBP,03/11/2022,{STAMP}", "created_at does not read as timestamp"),            # bad timestamp
    (f"1,,{STAMP},{STAMP}", "currency_code is NULL"),                                  # NULL, NOT NULL
    (f"1,GBP,,{STAMP}", "created_at is NULL"),                                         # NULL stamp
    (f"99999999999,GBP,{STAMP},{STAMP}", "currency_id does not read as int"),          # int32 overflow
    (f"1,GBPX,{STAMP},{STAMP}", "currency_code is longer than varchar(3)"),            # too long
    (f"1,\"\",{STAMP},{STAMP}", None),                                                 # '' is not NULL
    (f"1,G\x00B,{STAMP},{STAMP}", "currency_code holds a NUL character"),              # PostgreSQL refuses
    (f"1\x00,GBP,{STAMP},{STAMP}", "currency_id does not read as int"),                # not text: no NUL rule
])
def test_a_row_that_does_not_fit_is_a_problem_of_that_row_alone(tmp_path, line, reason):
    body = (HEADER + GOOD + line + "\n" + GOOD.replace("1,", "3,", 1)).encode()
    if reason:
        with pytest.raises(read.NotClean):
            read_all(tmp_path, body, "currency", 3)
    else:
        assert read_all(tmp_path, body, "currency", 3).column("currency_code").to_pylist() == ["GBP", "", "GBP"]
    typed, reasons = read_carefully(tmp_path, body, "currency", 3)
    assert reasons == [[], [reason] if reason else [], []]
    assert typed.column("currency_id").to_pylist()[::2] == [1, 3]


def test_a_nul_character_is_a_problem_of_its_rows_in_the_declared_text_columns():
    """PostgreSQL's text cannot hold NUL: the rows that have one anywhere in a text value, NULLs
    and other rows untouched; the same check for a typed (fast path) or text (careful path) batch."""
    declared = source_table("department")
    text = pa.RecordBatch.from_pydict({
        "department_id": ["1", "2", "3", "4"], "department_name": ["Sales", "Sa\x00les", "HR", "\x00"],
        "location": [None, "Leeds", "Leeds\x00", None], "manager": ["M", "M", "M", "M"],
        "created_at": [STAMP] * 4, "last_updated": [STAMP] * 4})
    typed, _ = read.from_text(declared, text)
    for batch in (text, typed):
        assert {p.reason: p.rows.to_pylist() for p in read.column_problems(declared, batch)} == {
            "department_name holds a NUL character": [False, True, False, True],
            "location holds a NUL character": [None, False, True, None]}
    assert {p.reason: p.rows.to_pylist() for p in read.column_problems(declared, text.slice(2))} == {
        "department_name holds a NUL character": [False, True], "location holds a NUL character": [True, None]}
    assert read.column_problems(declared, text.slice(0, 1)) == []   # a slice: only its own bytes count
    clean = text.set_column(1, "department_name", pa.array(["a", "b", "c", "d"]))
    assert read.column_problems(declared, clean.set_column(2, "location", pa.array([None, "x", "", None],
                                                                                   pa.string()))) == []


@pytest.mark.parametrize("table, column, value", [
    ("purchase_order", "item_unit_price", "0.12345678901"),                # 11 places: would round
    ("purchase_order", "item_unit_price", "123456789012345678901234567890"),  # beyond decimal128(38, 10)
    ("purchase_order", "item_unit_price", "NaN"),
    ("sales_order", "unit_price", "123456789.00"),                         # beyond numeric(10,2)
    ("sales_order", "unit_price", "1.005"),                                # 3 places: would round
    ("payment", "paid", "true"),                                           # COPY writes t/f
])
def test_a_value_out_of_its_declared_range_is_a_bad_row_never_rounded(tmp_path, table, column, value):
    columns = source_table(table).column_names
    sample = {"int": "1", "numeric": "1", "numeric(10,2)": "1.00", "boolean": "t", "timestamp": STAMP,
              "varchar": "2022-11-03"}
    values = [value if c.name == column else sample[c.type] for c in source_table(table).columns]
    body = ",".join(columns) + "\n" + ",".join(values) + "\n"
    with pytest.raises(read.NotClean):
        read_all(tmp_path, body.encode(), table, 1)
    typed, reasons = read_carefully(tmp_path, body.encode(), table, 1)
    assert reasons == [[f"{column} does not read as {source_table(table).column(column).type}"]]
    assert typed.column(column).to_pylist() == [None]
