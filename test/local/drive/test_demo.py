"""`totesys-etl demo`, the main job: from nothing to a reconciled warehouse, twice in a row."""
import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _cli(cwd, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TOTESYS_", "AWS_"))}
    return subprocess.run([sys.executable, "-m", "totesys_etl", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_demo_reconciles_and_a_second_demo_starts_again_from_empty(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "totesys-etl"\n')  # a clone's root
    try:
        first = _cli(tmp_path, "demo", "--orders", "300")
        assert first.returncode == 0, first.stdout + first.stderr
        assert "reconcile: warehouse equals source" in first.stdout
        assert "fact_sales_order" in first.stdout and "psql" in first.stdout
        assert re.search(r"^fact_exchange_rate\s.*\sok$", first.stdout, re.M)  # up started the FX stand-in
        # believable: 300 orders (and those simulate adds) of about £125,000 each, not trillions
        assert re.search(r"^sales in GBP: £\d{2}\.\d\d million over [1-9][\d,]* of [\d,]+ orders", first.stdout, re.M)
        assert "events 600" in first.stdout and "fact_delivery" in first.stdout  # courier files (issue 29)
        report = tmp_path / ".local" / "report.html"
        assert f"report: {report}" in first.stdout and "<svg" in report.read_text()
        second = _cli(tmp_path, "demo", "--orders", "200")
        assert second.returncode == 0, second.stdout + second.stderr
        # Had the warehouse not been emptied, orders 201-300 of the first demo would remain there and
        # reconcile would report them as ids missing from the source.
        assert "reconcile: warehouse equals source" in second.stdout
    finally:
        _cli(tmp_path, "down")
        _cli_destroy(tmp_path)


def _cli_destroy(home):
    """Remove the cluster this test's `up` created (it may live outside tmp_path when run as root)."""
    import json
    import shutil
    from pathlib import Path

    state = Path(home) / ".local" / "services.json"
    if state.exists():
        data_dir = Path(json.loads(state.read_text())["postgres"]["data_dir"])
        if data_dir.parent.name.startswith("totesys-etl-pg-"):
            shutil.rmtree(data_dir.parent, ignore_errors=True)
