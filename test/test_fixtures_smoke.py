import boto3

from totesys_etl.adapters import s3


def test_reader_role_cannot_write(source, run_sql):
    run_sql(source.admin_url, "CREATE TABLE t (x int)")
    run_sql(source.admin_url, "INSERT INTO t VALUES (1)")
    assert run_sql(source.reader_url, "SELECT x FROM t") == [[1]]
    import pg8000
    try:
        run_sql(source.reader_url, "INSERT INTO t VALUES (2)")
        raise AssertionError("reader wrote")
    except pg8000.native.DatabaseError as e:
        assert e.args[0]["C"] == "42501"


def test_create_only(buckets):
    bucket = buckets[0]
    assert s3.put_create_only(bucket, "a/b", b"1") is True
    assert s3.put_create_only(bucket, "a/b", b"2") is False
    assert boto3.client("s3").get_object(Bucket=bucket, Key="a/b")["Body"].read() == b"1"
