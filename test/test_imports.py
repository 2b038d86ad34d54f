"""What a Lambda handler loads before and while it works: a cold start pays for every module imported.

A few third-party packages dominate a stage's start-up (CPU seconds on the 2-core bench machine:
numpy with pyarrow 0.18, pandas 0.22, pg8000 0.10, boto3 over botocore 0.035). Each stage imports
only what its path needs, and these tests keep the rest out by what a fresh interpreter holds in
`sys.modules`, never by timing (the seconds are `make bench`'s `process_start_s`,
readme_files/benchmarks.md). pyarrow imports pandas by itself whenever Python values become Arrow
ones (`pa.array([...])`, `pc.greater(values, 5)`), which is why the processor's and loader's calls
are checked too.
"""
from __future__ import annotations

import json
import os
import subprocess  # nosec B404 - a fresh interpreter is the only honest place to see imports
import sys

import pytest

from totesys_etl.bench import run
from totesys_etl.local.source.snapshot import load_snapshot

#: Packages a stage's handler module must not import, and why it does not need them. No stage
#: needs boto3: the adapters build botocore's clients.
NOT_IMPORTED = {
    "ingest": {"pyarrow", "numpy", "pandas", "boto3"},  # COPY to CSV and FX JSON: no Arrow at all
    "process": {"pandas", "pg8000", "boto3"},  # Arrow only; the processor never connects to a database
    "load": {"pandas", "boto3"},  # Parquet to binary COPY through pyarrow and pgpq
}


def imported_by(module: str) -> set[str]:
    """The top-level packages a fresh interpreter holds after importing `module` (as Lambda's init does)."""
    code = ("import importlib, json, sys; importlib.import_module(sys.argv[1]); "
            "print(json.dumps(sorted({m.partition('.')[0] for m in sys.modules})))")
    done = subprocess.run([sys.executable, "-c", code, module], capture_output=True, text=True,  # nosec B603
                          env={**os.environ, "AWS_DEFAULT_REGION": "eu-west-2"}, check=True)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("stage", sorted(NOT_IMPORTED))
def test_a_handler_module_imports_only_what_its_stage_needs(stage):
    loaded = imported_by(f"totesys_etl.{stage}.handler")
    assert "totesys_etl" in loaded and "botocore" in loaded  # the import happened, S3 client included
    assert NOT_IMPORTED[stage] & loaded == set()


def test_no_stage_imports_pandas_while_it_loads_a_run(source, warehouse_url, buckets, tmp_path):
    """A first load of the real snapshot, each stage in a process of its own as in Lambda: none of
    the three calls makes pyarrow import pandas (it did twice before, 0.2 to 0.4 s a process)."""
    load_snapshot(source.admin_url)
    env = {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_WAREHOUSE_URL": warehouse_url,
           "TOTESYS_INGEST_BUCKET": buckets[0], "TOTESYS_PROCESSED_BUCKET": buckets[1],
           **{k: v for k, v in os.environ.items() if k.startswith("AWS_")}}
    cycle = run.run_cycle(env, tmp_path / "stages.log")
    assert run.stage_rows(cycle["load"]) > 0
    for stage, outcome in cycle.items():
        assert (stage, NOT_IMPORTED[stage] & set(outcome["imported_by_handler"])) == (stage, set())
