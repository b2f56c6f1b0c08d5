"""Fault-injection fixtures: one uninterrupted reference run per session, which every fault test
compares its store with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

pytest.register_assert_rewrite("harness")  # its asserts show what differs

from harness import layerboot, output

from storage.store import Store

# The micro config, with a judge that accepts every candidate: rounds then also make cycle
# triplets (their own blobs) and each round trains on a pool the previous one grew.
ACCEPT_ALL = """\
judge:
  criteria:
    - {name: logo_clean, question: "Is the middle panel a clean, flat logo?", threshold: 0.0}
    - {name: object_clean, question: "Does the right panel show the object without the logo?", threshold: 0.0}
"""


@dataclass(frozen=True)
class Reference:
    store: Store
    hits: list[str]  # failpoints reached, in order
    output: str
    seconds: float


@pytest.fixture(scope="session")
def faults_config(tmp_path_factory, micro_yaml: str) -> Path:
    path = tmp_path_factory.mktemp("faults") / "micro-accept-all.yaml"
    path.write_text(micro_yaml + ACCEPT_ALL)
    return path


@pytest.fixture(scope="session")
def faults_env(prefect_api) -> dict:
    return os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="session")
def reference(tmp_path_factory, faults_config: Path, faults_env: dict) -> Reference:
    """`layerboot run --rounds 2`, uninterrupted, recording every failpoint it passes."""
    import time

    root = tmp_path_factory.mktemp("reference")
    start = time.monotonic()
    done = layerboot("run", "-c", str(faults_config), "-w", str(root / "store"), "--rounds", "2", env=faults_env,
                     log=root / "hits")
    assert done.returncode == 0, output(done)[-3000:]
    return Reference(Store(str(root / "store")), (root / "hits").read_text().split(), output(done),
                     time.monotonic() - start)
