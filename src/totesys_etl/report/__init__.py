"""`totesys-etl report`: one self-contained HTML page from the warehouse's analytical views (contract §6).

It needs only the warehouse (contract §5: `TOTESYS_WAREHOUSE_URL`, or `TOTESYS_WAREHOUSE_SECRET`), reads
in one read-only snapshot and changes nothing. A warehouse with no views yet gives a page that says
nothing is loaded; an unreachable one fails (exit 1) naming it, never its credentials.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from totesys_etl.config import DEFAULT_WAREHOUSE_SECRET, Database
from totesys_etl.errors import ConfigurationError, EtlError


def warehouse_from_env(env: Mapping[str, str] | None = None) -> Database:
    """The warehouse as `Settings.from_env` names it, without the bucket settings a report never uses.

    Unlike the handlers, the command line insists on one of the two variables: a laptop with
    neither set has not run `totesys-etl up`, and the default secret id would only send it to AWS.
    """
    env = os.environ if env is None else env
    url, secret = env.get("TOTESYS_WAREHOUSE_URL") or None, env.get("TOTESYS_WAREHOUSE_SECRET") or None
    if not url and not secret:
        raise ConfigurationError("TOTESYS_WAREHOUSE_URL (or TOTESYS_WAREHOUSE_SECRET) not set; run "
                                 "`totesys-etl up` or set it (contract §5)")
    return Database("warehouse", url, secret or DEFAULT_WAREHOUSE_SECRET)


def write_report(database: Database, out: Path) -> Path:
    """Read the views, write the page to `out` (its folder created), and return the path."""
    try:
        import altair  # noqa: F401 - the charting libraries are command-line extras, not in the Lambda layer
        import vl_convert  # noqa: F401
    except ImportError as e:
        raise EtlError(f"the report needs {e.name}: pip install -r requirements-local.txt") from None
    from totesys_etl.adapters.postgres import DatabaseError, connect
    from totesys_etl.report.figures import read_figures
    from totesys_etl.report.page import render

    conn = connect(database, application_name="totesys-etl report")
    try:
        figures = read_figures(conn)
    except DatabaseError as e:
        detail = e.args[0] if e.args and isinstance(e.args[0], dict) else {}
        raise EtlError(f"reading the warehouse's views failed: {detail.get('M', type(e).__name__)}") from None
    finally:
        conn.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(figures), encoding="utf-8")
    return out
