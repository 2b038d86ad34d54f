"""`totesys-etl up` / `down`: the local services of one clone, recorded under `.local/`.

`up` starts (or finds running) a PostgreSQL cluster with the source and warehouse databases and
the read-only role, moto's server with the buckets (its S3 kept under `.local/s3/`,
`moto_disk.py`), and the FX rates stand-in (fx_api.py); it writes their contract §5 settings to
`.local/env`. Each service gets the port it had last time when that port is free, so a shell that
read `.local/env` keeps working after `down`/`up`. `down` stops exactly what `up` recorded; every
byte stays under `.local/`. The servers themselves are `servers.py`.
"""
from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from totesys_etl.errors import LocalServicesError
from totesys_etl.local.services.fx_api import FxApiProcess
from totesys_etl.ingest.cdc.settings import source_mode
from totesys_etl.local.services.admin import (READER_ROLE, admin_connection, create_buckets, create_database,
                                              grant_reader, s3_client)
from totesys_etl.local.source.cdc import CDC_ROLE, prepare_local
from totesys_etl.local.services.servers import MotoServer, Postgres, free_port


SOURCE_DB, WAREHOUSE_DB = "totesys", "warehouse"
LOCAL_BUCKETS = ("totesys-etl-local-ingested", "totesys-etl-local-processed")
#: Where `simulate --deliveries` drops courier files (contract §5 TOTESYS_LANDING_BUCKET, §9).
LANDING_BUCKET = "totesys-etl-local-landing"
LOCAL_REGION = "eu-west-2"
#: Under `.local/`: the S3 API's buckets and objects (`moto_disk.py`), kept across `down`/`up`.
LAKE_FOLDER = "s3"


def _port(state: dict, service: str) -> int | None:
    """The port `service` had last time: `up` takes it again when it is free."""
    return (state.get(service) or {}).get("port")


def _state_path(home: Path) -> Path:
    return home / "services.json"


def _load_state(home: Path) -> dict:
    path = _state_path(home)
    return json.loads(path.read_text()) if path.exists() else {}


def _save_state(home: Path, state: dict) -> None:
    home.mkdir(parents=True, exist_ok=True)
    _state_path(home).write_text(json.dumps(state, indent=1))
    os.chmod(_state_path(home), 0o600)


def _cluster_from(state: dict) -> Postgres | None:
    pg = state.get("postgres")
    if not pg:
        return None
    return Postgres(Path(pg["data_dir"]), pg["port"], pg["password"], Path(pg["bindir"]))


def recorded_cluster(home: Path) -> Postgres:
    """The cluster `up` recorded under `home` (the demo and the bench work on its databases)."""
    recorded = _cluster_from(_load_state(home))
    if recorded is None:
        raise LocalServicesError(f"no local services recorded under {home}; run `totesys-etl up`")
    return recorded


def settings(state: dict) -> dict[str, str]:
    """The contract §5 variables for the services in `state`: what `.local/env` holds."""
    cluster = _cluster_from(state)
    return {
        "TOTESYS_SOURCE_URL": cluster.url(SOURCE_DB, READER_ROLE, state["reader_password"]),
        "TOTESYS_SOURCE_ADMIN_URL": cluster.url(SOURCE_DB),
        "TOTESYS_WAREHOUSE_URL": cluster.url(WAREHOUSE_DB),
        "TOTESYS_INGEST_BUCKET": LOCAL_BUCKETS[0],
        "TOTESYS_PROCESSED_BUCKET": LOCAL_BUCKETS[1],
        "TOTESYS_LANDING_BUCKET": LANDING_BUCKET,
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{state['moto']['port']}",
        "AWS_DEFAULT_REGION": LOCAL_REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",  # nosec B105 - moto's server takes any key
        **({"TOTESYS_FX_API_URL": FxApiProcess(**state["fx_api"]).url} if state.get("fx_api") else {}),
        **({"TOTESYS_SOURCE_MODE": "cdc", "TOTESYS_SOURCE_URL": cluster.url(SOURCE_DB, CDC_ROLE, state["cdc_password"])}
           if state.get("source_mode") == "cdc" else {}),
    }


def _prepare_cdc(cluster: Postgres, state: dict) -> None:
    """With `TOTESYS_SOURCE_MODE=cdc` in `up`'s environment (contract §10): a server with
    `wal_level=logical` (one started before that setting is restarted), the replication role, the
    publication and the slot, and `.local/env` naming that role. Without it, no slot: an unread
    slot would keep WAL for ever."""
    state.pop("source_mode", None)
    if source_mode() != "cdc":
        return
    conn = admin_connection(cluster, SOURCE_DB)
    try:
        logical = conn.run("SHOW wal_level")[0][0] == "logical"
    finally:
        conn.close()
    if not logical:
        cluster.stop()
        cluster.start()
    state.setdefault("cdc_password", secrets.token_urlsafe(18))
    conn = admin_connection(cluster, SOURCE_DB)
    try:
        prepare_local(conn, SOURCE_DB, state["cdc_password"])
    finally:
        conn.close()
    state["source_mode"] = "cdc"


def up(home: Path) -> dict[str, str]:
    """Start (or find running) the local PostgreSQL and moto server; write `home/env`.

    Idempotent: what runs is kept, what stopped is started again, the buckets exist afterwards.
    """
    state = _load_state(home)
    cluster = _cluster_from(state)
    if cluster is None or not cluster.data_dir.exists():
        cluster = Postgres.create(home.resolve() / "pg")  # absolute: commands may run from elsewhere
        # Keep the rest of the state: a moto server that still runs must stay known to `down`.
        state = {**state, "postgres": {"data_dir": str(cluster.data_dir), "port": cluster.port,
                                       "password": cluster.password, "bindir": str(cluster.bindir)},
                 "reader_password": secrets.token_urlsafe(18)}
        _save_state(home, state)
    elif not cluster.is_running():
        cluster.port = state["postgres"]["port"] = free_port(cluster.port)
        try:
            cluster.start()
        except LocalServicesError:  # the port was taken between the check and the start
            cluster.port = state["postgres"]["port"] = free_port()
            cluster.start()
    for database in (SOURCE_DB, WAREHOUSE_DB):
        create_database(cluster, database)
    grant_reader(cluster, SOURCE_DB, state["reader_password"])
    _prepare_cdc(cluster, state)

    moto = MotoServer(**state["moto"]) if state.get("moto") else None
    if moto is None or not moto.is_running():
        moto = MotoServer.start(home / "moto.log", port=free_port(_port(state, "moto")),
                                data_dir=home.resolve() / LAKE_FOLDER)
        state["moto"] = {"port": moto.port, "pid": moto.pid}
    fx_api = FxApiProcess(**state["fx_api"]) if state.get("fx_api") else None
    if fx_api is None or not fx_api.is_running():  # the FX rates stand-in (contract §5 TOTESYS_FX_API_URL)
        fx_api = FxApiProcess.start(free_port(_port(state, "fx_api")), home / "fx_api.log")
        state["fx_api"] = {"port": fx_api.port, "pid": fx_api.pid}
    _save_state(home, state)

    env = settings(state)
    create_buckets(s3_client(env), (*LOCAL_BUCKETS, LANDING_BUCKET))
    env_path = home / "env"
    env_path.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    os.chmod(env_path, 0o600)
    return env


def down(home: Path) -> list[str]:
    """Stop what `up` started (and nothing else); the data stays under `home`."""
    state = _load_state(home)
    stopped = []
    cluster = _cluster_from(state)
    if cluster and cluster.data_dir.exists() and cluster.is_running():
        cluster.stop()
        stopped.append(f"PostgreSQL on port {cluster.port}")
    if state.get("moto"):
        moto = MotoServer(**state["moto"])
        if moto.is_running():
            moto.stop()
            stopped.append(f"moto server on port {moto.port}")
    if state.get("fx_api"):
        fx_api = FxApiProcess(**state["fx_api"])
        if fx_api.is_running():
            fx_api.stop()
            stopped.append(f"FX rates stand-in on port {fx_api.port}")
    return stopped


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines as a dict (the format `set -a; . .local/env` reads)."""
    env = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip()
    return env
