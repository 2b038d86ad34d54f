"""Real PostgreSQL and moto's server as processes of this machine: found, started, stopped.

The admin steps on them (databases, the read-only role, emptying buckets) are `admin.py`.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user; when that
user cannot reach the data folder (a clone under a private home, a 0700 temporary folder), the
data goes in a folder it owns under the system's temporary folder, recorded in `.local/`.
The project never changes the permissions of folders it does not own.
"""
from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess  # nosec B404 - starting the local servers is this module's job
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import ClassVar
from pathlib import Path

from totesys_etl.errors import LocalServicesError

RUN_AS_USER = "postgres"


def free_port(preferred: int | None = None) -> int:
    """`preferred` when nothing listens there or holds it (`up` keeps a service's port across
    restarts, so settings a shell read stay true), else one the system picks."""
    if preferred:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
            try:
                s.bind(("127.0.0.1", preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, seconds: float = 30.0, process: subprocess.Popen | None = None,
                  log_path: Path | None = None) -> None:
    """Wait until something listens on `port`; when the `process` meant to listen there ends first,
    fail at once with the last line it logged (e.g. moto_disk's "... is in use by another server")."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if process is not None and process.poll() is not None:
                said = log_path.read_text(errors="replace").strip().splitlines()[-1:] if log_path else []
                raise LocalServicesError(said[0] if said else f"the server for 127.0.0.1:{port} ended "
                                         f"(status {process.returncode}) before it listened") from None
            time.sleep(0.05)
    raise LocalServicesError(f"nothing listens on 127.0.0.1:{port} after {seconds:.0f} s")


def postgres_bindir() -> Path | None:
    """The machine's PostgreSQL server binaries (pg_config, else the newest Debian layout)."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)  # nosec B603
        candidates.append(out.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]),
                         reverse=True)
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    return None


def _run_as() -> list[str]:
    """The prefix that runs a command as the unprivileged user when we are root."""
    if os.geteuid() != 0:
        return []
    pwd.getpwnam(RUN_AS_USER)  # KeyError if the machine has no such user
    return ["runuser", "-u", RUN_AS_USER, "--"]


def _reachable_by_run_as(folder: Path) -> bool:
    prefix = _run_as()
    if not prefix:
        return True
    probe = subprocess.run(prefix + ["test", "-w", str(folder)], capture_output=True)  # nosec B603
    return probe.returncode == 0


def _temporary_folder_for_run_as() -> str:
    """A temporary folder the server's user can reach: TMPDIR may be private to us (pytest's is)."""
    for folder in (tempfile.gettempdir(), "/tmp", "/var/tmp"):  # nosec B108 - shared by design, 0700 inside
        if os.path.isdir(folder) and _reachable_by_run_as(Path(folder)):
            return folder
    raise LocalServicesError("no temporary folder the postgres user can reach for the local cluster")


@dataclass
class Postgres:
    """A PostgreSQL cluster in `data_dir`, listening on 127.0.0.1 only, password-protected."""

    data_dir: Path
    port: int
    password: str
    bindir: Path

    @classmethod
    def create(cls, home: Path, port: int | None = None) -> "Postgres":
        """initdb a new cluster under `home` (or, when the server's user cannot reach it, under a
        folder of its own in the temporary folder) and start it."""
        bindir = postgres_bindir()
        if bindir is None:
            raise LocalServicesError("no PostgreSQL server binaries found (initdb, pg_ctl): install PostgreSQL 15 "
                                     "(e.g. apt-get install postgresql-15) or put the bin folder holding its "
                                     "pg_config first on PATH")
        home.mkdir(parents=True, exist_ok=True)
        parent = home
        if os.geteuid() == 0:
            shutil.chown(home, RUN_AS_USER)
            if not _reachable_by_run_as(home):
                parent = Path(tempfile.mkdtemp(prefix="totesys-etl-pg-", dir=_temporary_folder_for_run_as()))
                shutil.chown(parent, RUN_AS_USER)
        cluster = cls(parent / "data", port or free_port(), secrets.token_urlsafe(18), bindir)
        pwfile = parent / "pwfile"
        pwfile.write_text(cluster.password)
        if os.geteuid() == 0:
            shutil.chown(pwfile, RUN_AS_USER)
        try:
            cluster._run("initdb", "-D", str(cluster.data_dir), "-U", "postgres", "-A", "scram-sha-256",
                         "--pwfile", str(pwfile), "-E", "UTF8", "--locale", "C", "--no-sync")
        finally:
            pwfile.unlink()
        cluster.start()
        return cluster

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        result = subprocess.run(_run_as() + [str(self.bindir / tool), *args],  # nosec B603
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise LocalServicesError(f"{tool} failed: {(result.stderr or result.stdout).strip()[-500:]}")
        return result

    def start(self) -> None:
        """Start the server (fsync off: a local cluster trades durability for speed). `wal_level=logical`
        lets the change data capture ingest read a slot (contract §10); it costs a little more WAL."""
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories='' "
                   f"-c wal_level=logical -c max_replication_slots=64 "
                   f"-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   f"-c timezone=UTC -c lc_messages=C")
        self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-l",
                  str(self.data_dir / "server.log"), "-o", options, "start")

    def is_running(self) -> bool:
        result = subprocess.run(_run_as() + [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir),  # nosec
                                             "status"], capture_output=True)
        return result.returncode == 0

    def stop(self) -> None:
        if self.data_dir.exists() and self.is_running():
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def url(self, database: str, user: str = "postgres", password: str | None = None) -> str:
        # The local server has no SSL: sslmode=disable saves building a TLS context per connection.
        return f"postgresql://{user}:{password or self.password}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    @property
    def folder(self) -> Path:
        """What the cluster owns on disk: the folder `create` made for it in the temporary folder, or its data."""
        return self.data_dir.parent if self.data_dir.parent.name.startswith("totesys-etl-pg-") else self.data_dir

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass
class BackgroundServer:
    """A local server in a process of its own session (it outlives the command that started it),
    found again by its port and pid. `MARKER` is what its command line holds, so a pid that another
    program has reused is never taken for it."""

    port: int
    pid: int
    MARKER: ClassVar[bytes] = b""

    @staticmethod
    def spawn(command: list[str], port: int, log_path: Path | None) -> int:
        """Start `command` (its output to `log_path`), wait until `port` answers; its pid."""
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,  # nosec B603 - our own command
                                   start_new_session=True)
        wait_for_port(port, process=process, log_path=log_path)
        return process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def is_running(self) -> bool:
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        return self.MARKER in cmdline

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after 2.5 s."""
        if self.is_running():
            os.kill(self.pid, signal.SIGTERM)
            for _ in range(50):
                if not self.is_running():
                    return
                time.sleep(0.05)
            os.kill(self.pid, signal.SIGKILL)


@dataclass
class MotoServer(BackgroundServer):
    """moto's server (S3, SQS, SNS, Secrets Manager, CloudWatch, Logs) on 127.0.0.1."""

    MARKER: ClassVar[bytes] = b"moto"

    @classmethod
    def start(cls, log_path: Path | None = None, port: int | None = None,
              data_dir: Path | None = None) -> "MotoServer":
        """In memory (the tests' throwaway server), or with S3 kept in `data_dir` (`moto_disk.py`: `up`'s lake);
        both with moto mended (`moto_fixes.py`)."""
        port = port or free_port()
        if data_dir is not None:
            command = [sys.executable, "-m", "totesys_etl.local.services.moto_disk", "--data", str(data_dir)]
        else:
            command = [sys.executable, "-m", "totesys_etl.local.services.moto_fixes"]
        return cls(port, cls.spawn(command + ["-H", "127.0.0.1", "-p", str(port)], port, log_path))

    @property
    def endpoint(self) -> str:
        return self.url
