"""Shared fixtures: a micro config (32-px panels, a handful of triplets) so every test runs in seconds."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from configs import Config, load_config
from storage.store import Store
from storage.triplets import put_triplet

MICRO_YAML = """\
# micro profile for tests: seconds per round
profile: tiny
run:
  name: micro
  seed: 7
data:
  panel_size: 32
  n_seeds: 8
  n_test: 4
model:
  base: {base}
  device: cpu
lora:
  rank: 4
  alpha: 4
  extra_trainable: [x_embedder, proj_out]
train:
  steps: 6
  batch_size: 2
  checkpoint_every: 3
  cycle: {{weight: 0.5, warmup_steps: 2, ramp_steps: 2, every: 2, sample_steps: 2}}
sample:
  steps: 2
  batch_size: 4
bootstrap:
  rounds: 2
  candidates: 4
  shard_size: 2
  warm_steps: 3
  cycle_min_psnr: 0.0
  eval_n: 2
"""

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="session")
def random_tiny_base(tmp_path_factory) -> Path:
    """A tiny base with random weights in diffusers' layout: mechanics tests need no pretraining."""
    from models.iclora.backbone import save_backbone
    from models.iclora.tiny import TinySpec, build_tiny

    path = tmp_path_factory.mktemp("tiny_base_random")
    save_backbone(build_tiny(TinySpec(), seed=0), path)
    return path


@pytest.fixture(scope="session")
def micro_yaml(random_tiny_base: Path) -> str:
    """The micro config's text, for session-scoped fixtures that write a config of their own."""
    return MICRO_YAML.format(base=random_tiny_base)


@pytest.fixture
def micro_config_path(tmp_path: Path, micro_yaml: str) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(micro_yaml)
    return path


@pytest.fixture
def micro_config(micro_config_path: Path) -> Config:
    return load_config(micro_config_path)


@pytest.fixture(params=["local", "memory"])
def store(request, tmp_path: Path) -> Store:
    """The same tests run on a local folder and on an in-memory fsspec filesystem (no rename)."""
    if request.param == "local":
        return Store(str(tmp_path / "work"))
    return Store(f"memory://layerboot-tests/{uuid.uuid4().hex}")


def solid(rgb: tuple[int, int, int], size: int = 32) -> Image.Image:
    return Image.new("RGB", (size, size), rgb)


def make_row(store: Store, r: int, i: int, source: str = "seed", split: str = "train", accepted: bool = True, **kw):
    """A real row with real blobs; colours derived from (round, index) so every row is distinct."""
    return put_triplet(
        store,
        panels=[solid((r * 40 % 256, i * 7 % 256, k)) for k in (1, 2, 3)],
        run_id="micro",
        round=r,
        source=source,
        split=split,
        prompt=f"row {r}/{i}",
        seed=1000 * r + i,
        created_at=T0,
        accepted=accepted,
        **kw,
    )


@pytest.fixture(scope="session")
def prefect_server():
    """One ephemeral Prefect server (temporary SQLite) for the whole session: starting one costs
    ~15-25 s on 2 cores, so never one per test."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free TCP port on 127.0.0.1 (for services a test starts)."""
    return _free_port


@contextmanager
def moto_server(port: int, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`moto_server` (the S3 emulator) on 127.0.0.1:port in its own process group; yields its URL
    once it answers (any HTTP status: with IAM auth on, an unsigned request gets 403)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    exe = str(Path(sys.executable).parent / "moto_server")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                                env=os.environ | (env or {}), start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except urllib.error.HTTPError:
                    break
                except OSError:
                    if time.time() > deadline or proc.poll() is not None:
                        raise RuntimeError("moto_server did not start")
                    time.sleep(0.2)
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3 emulator (moto) in this process, open to any credentials: its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def _standing_prefect_server(home: Path, extra_env: dict[str, str]):
    """Start `prefect server start` on 127.0.0.1 in its own process group; returns (process, api url)."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    port = _free_port()
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"} | extra_env
    env.pop("PREFECT_API_URL", None)
    exe = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.Popen([exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)
            return proc, url
        except OSError:
            if time.time() > deadline or proc.poll() is not None:
                _stop(proc)
                raise RuntimeError("prefect server did not start")
            time.sleep(0.5)


def _stop(proc) -> None:
    import os
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A standing `prefect server` (SQLite) on 127.0.0.1 for tests that run layerboot in
    subprocesses (and kill them): a killed process in ephemeral mode would orphan its own server."""
    proc, url = _standing_prefect_server(tmp_path_factory.mktemp("prefect_home"), {})
    try:
        yield url
    finally:
        _stop(proc)


@pytest.fixture(scope="session")
def prefect_api_postgres(tmp_path_factory):
    """A `prefect server` on PostgreSQL, as deployments run in production. Needs PostgreSQL's server
    binaries (Debian: apt-get install postgresql); skipped without them."""
    import os
    import shutil
    import subprocess

    import glob

    # Debian keeps the server binaries off PATH, in /usr/lib/postgresql/<version>/bin
    path = os.pathsep.join([os.environ.get("PATH", ""), *sorted(glob.glob("/usr/lib/postgresql/*/bin"))])
    initdb, pg_ctl = shutil.which("initdb", path=path), shutil.which("pg_ctl", path=path)
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    import tempfile

    # root may not run PostgreSQL: as root, run it as the `postgres` user, in a folder it can reach
    # (pytest's own tmp folders are private to root)
    data = Path(tempfile.mkdtemp(prefix="layerboot-pg-"))
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_postgres:
        shutil.chown(data, "postgres")
    port = _free_port()

    def run(*cmd: str) -> None:  # output to /dev/null: a started postgres would hold captured pipes open
        subprocess.run([*as_postgres, *cmd], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=120)

    run(initdb, "-D", str(data / "db"), "-U", "prefect", "--auth=trust")
    run(pg_ctl, "-D", str(data / "db"), "-l", str(data / "postgres.log"),
        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "-w", "start")
    try:
        run(shutil.which("createdb", path=path) or "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "prefect", "prefect")
        db = f"postgresql+asyncpg://prefect@127.0.0.1:{port}/prefect"
        proc, url = _standing_prefect_server(tmp_path_factory.mktemp("prefect_home_pg"),
                                             {"PREFECT_API_DATABASE_CONNECTION_URL": db})
        try:
            yield url
        finally:
            _stop(proc)
    finally:
        run(pg_ctl, "-D", str(data / "db"), "-m", "fast", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)
