"""Shared fixtures: a micro config (32-px panels, a handful of triplets) so every test runs in seconds."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

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
    from models.backbone import TinySpec, build_tiny, save_backbone

    path = tmp_path_factory.mktemp("tiny_base_random")
    save_backbone(build_tiny(TinySpec(), seed=0), path)
    return path


@pytest.fixture
def micro_config_path(tmp_path: Path, random_tiny_base: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(MICRO_YAML.format(base=random_tiny_base))
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
        composite=solid((r * 40 % 256, i * 7 % 256, 1)),
        logo=solid((r * 40 % 256, i * 7 % 256, 2)),
        object=solid((r * 40 % 256, i * 7 % 256, 3)),
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
def prefect_api(tmp_path_factory):
    """A standing `prefect server` on 127.0.0.1 for tests that run layerboot in subprocesses (and
    kill them): a killed process in ephemeral mode would orphan its own server."""
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tmp_path_factory.mktemp("prefect_home")
    env = os.environ | {"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    exe = str(Path(sys.executable).parent / "prefect")
    proc = subprocess.Popen([exe, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.time() > deadline or proc.poll() is not None:
                    raise RuntimeError("prefect server did not start")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
