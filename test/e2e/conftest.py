"""Helpers for the exactly-once suite (issue 17): pipelines side by side, warehouses compared, a tally.

A *pipeline* is one warehouse database and one bucket pair reading a shared source through the
read-only role, driven only through `totesys-etl tick` (or a handler) in a subprocess with the
contract §5 variables. A faulted pipeline and a clean one read the same source at the same moments,
so they must end with the same star rows: compared table by table as multisets of rows without
the surrogate `*_record_id` keys. Every comparison, fault and row count goes into a session tally
written to `.local/exactly-once.json` (the numbers readme_files/exactly-once.md reports).
"""
from __future__ import annotations

import fcntl
import http.client
import importlib.util
import itertools
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import boto3
import pg8000.native
import pytest

from totesys_etl import lake
from totesys_etl.adapters.postgres import parse_url
from totesys_etl.load.merge import SEED_YEARS
from totesys_etl.local.services import admin
from totesys_etl.local.source.seed import seed
from totesys_etl.process.run import MARK_PREFIX
from totesys_etl.schema import DIM_DATE, STAR_TABLES

REGION = "eu-west-2"
TALLY_PATH = Path(__file__).resolve().parents[2] / ".local" / "exactly-once.json"
#: TOTESYS_SETTLE_SECONDS for every pipeline here: short enough that the sweeps' low-water marks
#: move while a test runs (contract §5), so the crash, replay and concurrency cases run with marks
#: that have advanced, not only with every run still inside the settle window.
SETTLE_SECONDS = 2.0
_names = itertools.count()


def _load_oracle():
    """test/oracle.py, imported by path (pytest's importlib mode gives tests no shared package)."""
    spec = importlib.util.spec_from_file_location("totesys_test_oracle", Path(__file__).parents[1] / "oracle.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


oracle = _load_oracle()


def sql(url: str, statement: str, **params):
    conn = pg8000.native.Connection(**parse_url(url))
    try:
        return conn.run(statement, **params)
    finally:
        conn.close()


def _off_the_seed_edges(day) -> bool:
    """False for a day within a few days of either end of the calendar a first load seeds (SEED_YEARS
    around the day it runs): two warehouses first loaded on either side of midnight UTC differ there
    by a row at each end, though both are right. Every other day is compared (the oracle checks that
    every day a fact refers to is there, with the right columns)."""
    years = abs((day - datetime.now(timezone.utc).date()).days) / 365.25
    return abs(years - SEED_YEARS) > 4 / 365.25


def star_rows(url: str) -> dict[str, Counter]:
    """Each star table as a multiset of rows, every column but the surrogate `serial` key (`dim_date`
    off its seed's edges), for comparing one warehouse with another."""
    rows = {}
    for table in STAR_TABLES:
        columns = ", ".join(pg8000.native.identifier(c.name) for c in table.data_columns)
        found = sql(url, f"SELECT {columns} FROM {table.name}")
        if table is DIM_DATE:
            found = [r for r in found if _off_the_seed_edges(r[0])]
        rows[table.name] = Counter(tuple(r) for r in found)
    return rows


def star_digest(url: str) -> dict[str, list]:
    """Every star table's rows, surrogate keys included, as (count, md5) per table."""
    return {t.name: sql(url, f"SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {t.name} x")[0]
            for t in STAR_TABLES}


@dataclass
class Difference:
    """How a faulted warehouse's table differs from the clean one's, row by row (multisets)."""

    table: str
    compared: int
    lost: int          # rows the clean warehouse holds more often than the faulted one
    duplicated: int    # extra copies of rows the clean warehouse holds
    unexpected: int    # rows the clean warehouse does not hold at all (e.g. a stale dimension)
    examples: list

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)


def differences(faulted: dict[str, Counter], clean: dict[str, Counter]) -> list[Difference]:
    out = []
    for table, want in clean.items():
        got = faulted[table]
        lost = want - got
        surplus = got - want
        duplicated = sum(n for row, n in surplus.items() if row in want)
        unexpected = sum(n for row, n in surplus.items() if row not in want)
        examples = [("lost", r) for r in list(lost)[:2]] + [("extra", r) for r in list(surplus)[:2]]
        out.append(Difference(table, sum(want.values()), sum(lost.values()), duplicated, unexpected, examples))
    return out


class Tally:
    """What the suite did, counted as it happens, written once at the end of the session."""

    def __init__(self):
        self.faults = Counter()
        self.cases = Counter()
        self.kills = Counter()
        self.runs_compared = 0
        self.tables_compared = 0
        self.rows_compared = 0
        self.rows_lost = 0
        self.rows_duplicated = 0
        self.rows_unexpected = 0
        self.rows_quarantined = 0
        self.oracle_checks = 0
        self.oracle_rows = 0
        self.marks_moved = Counter()
        self.lock = threading.Lock()

    def fault(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self.faults[kind] += n

    def record(self, case: str, diffs: list[Difference]) -> None:
        with self.lock:
            self.cases[case] += 1
            self.runs_compared += 1
            self.tables_compared += len(diffs)
            for d in diffs:
                self.rows_compared += d.compared
                self.rows_lost += d.lost
                self.rows_duplicated += d.duplicated
                self.rows_unexpected += d.unexpected

    def oracle(self, verdict) -> None:
        with self.lock:
            self.oracle_checks += 1
            self.oracle_rows += verdict.rows_checked

    def as_dict(self) -> dict:
        return {"faults_injected": sum(self.faults.values()), "faults": dict(sorted(self.faults.items())),
                "sigkill_landed_in": dict(sorted(self.kills.items())),
                "warehouse_comparisons": self.runs_compared, "comparisons_by_case": dict(sorted(self.cases.items())),
                "tables_compared": self.tables_compared, "rows_compared": self.rows_compared,
                "rows_lost": self.rows_lost, "rows_duplicated": self.rows_duplicated,
                "rows_unexpected": self.rows_unexpected, "rows_quarantined_accounted_for": self.rows_quarantined,
                "oracle_checks": self.oracle_checks, "oracle_rows_checked": self.oracle_rows,
                "marks_seen_moving": dict(sorted(self.marks_moved.items()))}


def _added(mine, theirs):
    """Two tallies' `as_dict()` added up, number by number (nested counts by name)."""
    if isinstance(mine, dict) or isinstance(theirs, dict):
        mine, theirs = mine or {}, theirs or {}
        return {k: _added(mine.get(k, 0), theirs.get(k, 0)) for k in sorted({*mine, *theirs})}
    return mine + theirs


@pytest.fixture(scope="session")
def tally():
    """The session's counts, written to TALLY_PATH at its end. Under pytest-xdist each worker holds
    its own share: each adds it to what the other workers of the same run (`PYTEST_XDIST_TESTRUNUID`)
    wrote, under a lock, so the file holds the whole run's counts, never the last worker's alone."""
    counts = Tally()
    yield counts
    if not (counts.runs_compared or counts.faults or counts.oracle_checks):
        return
    TALLY_PATH.parent.mkdir(parents=True, exist_ok=True)
    testrun = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    with open(TALLY_PATH.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mine = counts.as_dict()
        try:
            earlier = json.loads(TALLY_PATH.read_text())
        except (OSError, ValueError):
            earlier = {}
        if testrun and earlier.pop("testrun", None) == testrun:
            mine = _added(mine, earlier)
        TALLY_PATH.write_text(json.dumps({**mine, "testrun": testrun} if testrun else mine, indent=1) + "\n")


#: What a gated child runs before its work: say it is ready, then wait for the line that releases it.
_GATE = "print('ready', flush=True)\nsys.stdin.readline()\n"


def release(*processes: subprocess.Popen) -> None:
    """A barrier for processes: wait until every one is ready at its gate, then open all the gates
    together, so the work starts at once however long each took to start up."""
    for process in processes:
        assert process.stdout.readline().strip() == "ready", f"a gated process did not start: {process.args}"
    for process in processes:
        process.stdin.write("\n")
        process.stdin.flush()


@pytest.fixture(scope="session")
def open_gates():
    """`open_gates(*processes)`: see `release`."""
    return release


@dataclass
class Pipeline:
    """One warehouse + bucket pair over the shared source, driven as other tools drive it."""

    name: str
    env: dict
    warehouse_url: str
    ingest_bucket: str
    processed_bucket: str
    source_url: str = ""
    ticks: list = field(default_factory=list)

    def command(self, *args, extra=None, timeout=600, cwd=None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "totesys_etl", *args], env=self._env(extra),
                              capture_output=True, text=True, timeout=timeout, cwd=cwd)

    def tick(self, extra=None, expect=0, cwd=None) -> subprocess.CompletedProcess:
        result = self.command("tick", extra=extra, cwd=cwd)
        self.ticks.append(result.stdout.strip())
        assert result.returncode == expect, f"{self.name} tick exit {result.returncode}: {result.stderr[-2000:]}"
        assert self.leaks(result) == [], f"{self.name} tick showed credentials"
        return result

    def leaks(self, result) -> list[str]:
        """Which of this pipeline's credentials appear in a command's stdout or stderr (logs)."""
        return [name for name, value in self.secrets().items() if value in result.stdout + result.stderr]

    def start(self, *args, stderr=None, extra=None) -> subprocess.Popen:
        """`totesys-etl <args>` started in the background (stderr to a file, to read it while it runs)."""
        return subprocess.Popen([sys.executable, "-m", "totesys_etl", *args], env=self._env(extra),
                                stdout=subprocess.DEVNULL, stderr=stderr or subprocess.DEVNULL)

    def start_handler(self, stage: str, event: dict) -> subprocess.Popen:
        """A stage's Lambda handler in its own process, as a second Lambda container would run it.

        The process imports everything, prints "ready" and waits at a gate (a line on its stdin)
        before it calls the handler: `release()` opens the gates of several at once."""
        code = ("import json, sys\n"
                f"from totesys_etl.{stage}.handler import lambda_handler\n"
                + _GATE +
                "print(json.dumps(lambda_handler(json.loads(sys.argv[1]), None), default=str))\n")
        return subprocess.Popen([sys.executable, "-c", code, json.dumps(event)], env=self._env(None),
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def start_gated(self, *args, stderr, extra=None) -> subprocess.Popen:
        """`totesys-etl <args>` imported and waiting at a gate (see `start_handler`); stdout is the gate's."""
        code = "import sys\nfrom totesys_etl.cli import main\n" + _GATE + "sys.exit(main(sys.argv[1:]))\n"
        return subprocess.Popen([sys.executable, "-c", code, *args], env=self._env(extra), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=stderr, text=True)

    def _env(self, extra) -> dict:
        inherited = {k: os.environ[k] for k in ("PYTHONPATH",) if k in os.environ}  # a checkout under test
        return {**self.env, **(extra or {}), **inherited, "PATH": "", "TMPDIR": os.environ["TMPDIR"]}

    def rows(self) -> dict[str, Counter]:
        return star_rows(self.warehouse_url)

    def digest(self) -> dict:
        return star_digest(self.warehouse_url)

    def keys(self, bucket: str, prefix: str = "") -> set[str]:
        s3 = boto3.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return {o["Key"] for page in pages for o in page.get("Contents", [])}

    def manifests(self, bucket: str) -> list[str]:
        return sorted(k for k in self.keys(bucket, "_runs/") if re.fullmatch(r"_runs/\d{8}T\d{12}Z\.json", k))

    def run_ids(self, bucket: str | None = None) -> list[str]:
        return [lake.run_id_of_manifest(k) for k in self.manifests(bucket or self.ingest_bucket)]

    def marks(self) -> tuple[str | None, str | None]:
        """(the processor's low-water mark in the processed bucket, the loader's in `etl_load_mark`)."""
        loader = sql(self.warehouse_url, "SELECT run_id FROM etl_load_mark")
        return lake.read_mark(self.processed_bucket, MARK_PREFIX), loader[0][0] if loader else None

    def secrets(self) -> dict[str, str]:
        """Every credential this pipeline is given: none may appear in its output or logs."""
        out = {"AWS secret key": self.env["AWS_SECRET_ACCESS_KEY"]}
        for name in ("TOTESYS_SOURCE_URL", "TOTESYS_SOURCE_ADMIN_URL", "TOTESYS_WAREHOUSE_URL"):
            out[name + " password"] = parse_url(self.env[name])["password"]
        return out


@pytest.fixture
def seeded(source):
    """The shared source: a small reproducible totesys, read by every pipeline of the test."""
    # the extremes, end to end; history pinned to end 2025-11-03, so the FX tests' fixed dates fall inside it
    seed(source.admin_url, orders=200, seed=17, awkward=True, today=date(2025, 11, 3))
    return source


@pytest.fixture
def new_pipeline(postgres, source, aws):
    """`new_pipeline(name)`: a fresh warehouse database and bucket pair over the test's source."""
    s3 = boto3.client("s3")

    def make(name: str) -> Pipeline:
        tag = f"{os.getpid()}e{next(_names)}"
        database = f"dw{name}{tag}"
        admin.create_database(postgres, database)
        buckets = (f"ingested-{name}-{tag}", f"processed-{name}-{tag}")
        for bucket in buckets:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        env = {"TOTESYS_SOURCE_URL": source.reader_url, "TOTESYS_SOURCE_ADMIN_URL": source.admin_url,
               "TOTESYS_WAREHOUSE_URL": postgres.url(database), "TOTESYS_INGEST_BUCKET": buckets[0],
               "TOTESYS_PROCESSED_BUCKET": buckets[1], "AWS_ENDPOINT_URL": aws.endpoint,
               "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": f"aws-{secrets.token_urlsafe(12)}",  # moto takes any; a leak is findable
               "TOTESYS_SETTLE_SECONDS": str(SETTLE_SECONDS)}
        return Pipeline(name, env, postgres.url(database), *buckets, source_url=source.admin_url)

    return make


def check_oracle(case: str, pipeline: Pipeline, tally: Tally, held_back=None, skip_keys=()):
    """Assert the warehouse is what test/oracle.py computes from the source and the lake's CSVs."""
    verdict = oracle.check(pipeline.source_url, pipeline.warehouse_url, pipeline.ingest_bucket,
                           held_back=held_back, skip_keys=skip_keys)
    tally.oracle(verdict)
    assert not verdict.problems, f"{case}: the oracle disagrees: " + "; ".join(verdict.problems)
    return verdict


@pytest.fixture(scope="session")
def oracle_module():
    """test/oracle.py itself, for tests that call `oracle.check` on a warehouse they damage."""
    return oracle


@pytest.fixture
def against_oracle(tally):
    """`against_oracle(case, pipeline, held_back=None, skip_keys=())`: see `check_oracle`."""
    return lambda case, pipeline, **kw: check_oracle(case, pipeline, tally, **kw)


@pytest.fixture
def compare(tally):
    """`compare(case, faulted, clean)`: assert the warehouses hold the same rows, and the faulted
    one holds what the independent oracle computes from the source; count it all.

    `held_back` / `skip_keys` go to the oracle (versions quarantined on purpose, damaged CSVs)."""

    def check(case: str, faulted: Pipeline, clean: Pipeline, faulted_rows=None, clean_rows=None,
              held_back=None, skip_keys=()) -> list:
        got = faulted.rows() if faulted_rows is None else faulted_rows
        want = clean.rows() if clean_rows is None else clean_rows
        empty = [t.name for t in STAR_TABLES if not want[t.name]]
        assert not empty, f"the clean warehouse must hold rows in every table, not {empty}: ticks {clean.ticks}"
        diffs = differences(got, want)
        tally.record(case, diffs)
        bad = [d for d in diffs if not d.ok]
        assert not bad, f"{case}: " + "; ".join(
            f"{d.table}: {d.lost} lost, {d.duplicated} duplicated, {d.unexpected} unexpected, e.g. {d.examples}"
            for d in bad)
        check_oracle(case, faulted, tally, held_back=held_back, skip_keys=skip_keys)
        return diffs

    return check


@pytest.fixture
def marks_move(tally):
    """`marks_move(case, pipeline)`: once the settle period has passed, a quiet tick moves both
    low-water marks up to at least the newest run before it, never back, and changes no star row.

    It asserts what the suite never saw before issue 26: marks that advance end to end."""

    def check(case: str, pipeline: Pipeline) -> tuple:
        def newest() -> str:  # a manifest planted in the future (bad input) is no run that happened
            now = lake.run_id_at(datetime.now(timezone.utc))
            return max(r for r in pipeline.run_ids() if r <= now)

        before_marks, before_rows, newest_before = pipeline.marks(), pipeline.digest(), newest()
        time.sleep(SETTLE_SECONDS + 0.2)
        pipeline.tick()
        after = pipeline.marks()
        newest_after = newest()
        for stage, old, new in zip(("process", "load"), before_marks, after):
            assert new is not None and newest_before <= new <= newest_after, \
                f"{case}: {stage} mark {new}, newest run {newest_before}"
            assert old is None or new >= old, f"{case}: the {stage} mark went back from {old} to {new}"
            with tally.lock:
                tally.marks_moved[stage] += new != old
        assert pipeline.digest() == before_rows, f"{case}: a quiet tick changed star rows"
        return after

    return check


def error_lines(stderr: str) -> list[dict]:
    """The JSON log lines of a command run with TOTESYS_LOG_LEVEL=ERROR (every line must parse)."""
    lines = []
    for line in stderr.splitlines():
        if line.strip():
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="session")
def json_errors():
    return error_lines


@pytest.fixture(scope="session")
def admin_sql(postgres):
    """`admin_sql(statement)` on the cluster's `postgres` database (ALTER DATABASE and the like)."""
    return lambda statement: sql(postgres.url("postgres"), statement)


# --- an S3 API that fails on cue -------------------------------------------------------------

@dataclass
class Rule:
    """Fail the next `times` requests whose method is `method` and whose decoded path matches."""

    method: str
    path: re.Pattern
    times: int
    #: "403": AccessDenied (not retried); "drop": the connection closed, the request never sent on;
    #: "lose": the request done upstream, then the connection closed before the answer
    mode: str = "403"
    failed: int = 0


class FlakyProxy(ThreadingHTTPServer):
    """A plain HTTP proxy in front of moto's server that fails chosen requests, then passes all.

    The pipeline under test points AWS_ENDPOINT_URL here; everything else (SQS, other S3 calls)
    goes through untouched, so the fault is one real failed request on the wire.
    """

    daemon_threads = True

    def __init__(self, upstream: str):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.rules: list[Rule] = []
        self.failures: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def fail(self, method: str, path: str, times: int = 1, mode: str = "403") -> Rule:
        rule = Rule(method, re.compile(path), times, mode)
        with self.lock:
            self.rules.append(rule)
        return rule

    def verdict(self, method: str, path: str) -> str | None:
        with self.lock:
            for rule in self.rules:
                if rule.failed < rule.times and rule.method == method and rule.path.search(unquote(path)):
                    rule.failed += 1
                    self.failures.append((method, unquote(path)))
                    return rule.mode
        return None


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "expect",
               "proxy-connection", "content-length"}


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet: pytest shows failures, not traffic
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if not size:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _forward(self):
        body = self._body()
        verdict = self.server.verdict(self.command, self.path)
        if verdict == "drop":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        if verdict == "403":
            payload = b"<Error><Code>AccessDenied</Code><Message>injected by the test</Message></Error>"
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            return
        upstream = http.client.HTTPConnection(*self.server.upstream, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body, headers)
            response = upstream.getresponse()
            data = response.read()
        finally:
            upstream.close()
        if verdict == "lose":
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.send_response(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in _HOP_BY_HOP or (key.lower() == "content-length" and self.command == "HEAD"):
                self.send_header(key, value)
        if self.command != "HEAD":
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward


@pytest.fixture
def flaky_s3(aws):
    proxy = FlakyProxy(aws.endpoint)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


def wait_for_line(path: Path, needle: str, process: subprocess.Popen, seconds: float = 60) -> bool:
    """Wait until the file holds a line containing `needle` (False if the process ended first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and needle in path.read_text(errors="replace"):
            return True
        if process.poll() is not None:
            return needle in path.read_text(errors="replace") if path.exists() else False
        time.sleep(0.02)
    return False


def together(*calls):
    """Run the calls (each mostly a subprocess) at the same time; their results, in order.

    Pipelines that share nothing but the source may tick side by side: it halves the suite's time
    on two cores and changes nothing they read (they read the same source state either way).
    """
    with ThreadPoolExecutor(max_workers=3) as pool:
        return [f.result() for f in [pool.submit(call) for call in calls]]


@pytest.fixture(scope="session")
def at_once():
    """`at_once(*calls)`: see `together`."""
    return together


@pytest.fixture(scope="session")
def wait_line():
    """`wait_line(path, needle, process)`: see `wait_for_line`."""
    return wait_for_line
