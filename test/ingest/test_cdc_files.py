"""The CDC run's CSV fields (ingest/cdc/files.py), as PostgreSQL's COPY writes them."""
from __future__ import annotations

import pytest

from totesys_etl.ingest.cdc.files import csv_field


@pytest.mark.parametrize("value, field", [(None, ""), ("", '""'), ("plain", "plain"), ("a,b", '"a,b"'),
                                          ('say "hi"', '"say ""hi"""'), ("two\nlines", '"two\nlines"'),
                                          ("cr\r", '"cr\r"'), (" x ", " x "), ("\\.", "\\.")])
def test_csv_fields_are_written_as_copy_writes_them(value, field):
    assert csv_field(value) == field
