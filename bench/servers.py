"""Prefect servers on 127.0.0.1 for the service tests (tests/conftest.py) and bench/server_load.py:
a standing `prefect server start` on SQLite or on PostgreSQL, and a throwaway PostgreSQL cluster."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group `proc` leads (started with start_new_session), then wait."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@contextmanager
def prefect_server(home: Path, database_url: str | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`prefect server start` in its own process group, SQLite under `home` unless `database_url`
    (e.g. postgresql_database's): yields (API URL, process) once /health answers."""
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    if database_url:
        env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
    env.pop("PREFECT_API_URL", None)
    port = free_port()
    proc = subprocess.Popen([str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("prefect server did not start") from None
                time.sleep(0.5)
        yield url, proc
    finally:
        stop(proc)


def postgresql_binaries() -> dict[str, str] | None:
    """initdb, pg_ctl and createdb (Debian keeps them off PATH, in /usr/lib/postgresql/<version>/bin),
    or None when PostgreSQL's server is not installed."""
    path = os.pathsep.join([os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"))])
    found = {name: shutil.which(name, path=path) for name in ("initdb", "pg_ctl", "createdb")}
    return found if all(found.values()) else None


@contextmanager
def postgresql_database() -> Iterator[str]:
    """A PostgreSQL cluster in a temp folder with one database `prefect`: yields its asyncpg URL.
    As root, runs as the `postgres` user (PostgreSQL refuses root), in a folder that user can reach."""
    binaries = postgresql_binaries()
    if binaries is None:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    data = Path(tempfile.mkdtemp(prefix="layerboot-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    port = free_port()

    def run(*cmd: str) -> None:  # output to /dev/null: a started postgres would hold captured pipes open
        subprocess.run([*as_postgres, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    run(binaries["initdb"], "-D", str(data / "db"), "-U", "prefect", "--auth=trust")
    run(binaries["pg_ctl"], "-D", str(data / "db"), "-l", str(data / "postgres.log"),
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-w", "start")
    try:
        run(binaries["createdb"], "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
        yield f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
    finally:
        run(binaries["pg_ctl"], "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)
