"""Shared fixtures: a micro config (32-px panels, a handful of triplets) so every test runs in seconds."""

from __future__ import annotations

import uuid
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import pytest
from PIL import Image

from bench import servers
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


@pytest.fixture(scope="session")
def free_port():
    """A function returning a free TCP port on 127.0.0.1 (for services a test starts)."""
    return servers.free_port


@contextmanager
def moto_server(port: int, log_path: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """`moto_server` (the S3 emulator) on 127.0.0.1:port in its own process group; yields its URL
    once it answers (any HTTP status: with IAM auth on, an unsigned request gets 403)."""
    import os
    import subprocess
    import time
    import urllib.error
    import urllib.request

    exe = str(servers.BIN / "moto_server")
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
            servers.stop(proc)


@pytest.fixture(scope="module")
def s3_endpoint():
    """An S3 emulator (moto) in this process, open to any credentials: its URL."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A standing `prefect server` (SQLite) on 127.0.0.1 for tests that run layerboot in
    subprocesses (and kill them): a killed process in ephemeral mode would orphan its own server."""
    with servers.prefect_server(tmp_path_factory.mktemp("prefect_home")) as (url, _):
        yield url


@pytest.fixture(scope="session")
def prefect_api_postgres(tmp_path_factory):
    """A `prefect server` on PostgreSQL, as deployments run in production. Needs PostgreSQL's server
    binaries (Debian: apt-get install postgresql); skipped without them."""
    if servers.postgresql_binaries() is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not installed")
    with servers.postgresql_database() as db, \
            servers.prefect_server(tmp_path_factory.mktemp("prefect_home_pg"), db) as (url, _):
        yield url
