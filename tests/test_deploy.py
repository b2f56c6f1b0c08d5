"""Scheduling: `layerboot deploy` creates a deployment of the bootstrap flow for a work pool; a
real `prefect worker` (process pool) picks the run up from a real server and runs 1 tiny round."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.store import Store

pytestmark = [pytest.mark.service, pytest.mark.slow]

BIN = Path(sys.executable).parent


@pytest.mark.parametrize("server", ["prefect_api", "prefect_api_postgres"], ids=["sqlite", "postgres"])
def test_deployment_runs_one_round_on_a_process_worker(server, request, micro_config_path: Path, tmp_path: Path):
    env = os.environ | {"PREFECT_API_URL": request.getfixturevalue(server), "PYTHONUNBUFFERED": "1"}
    prefect, layerboot = str(BIN / "prefect"), shutil.which("layerboot", path=str(BIN))
    work = tmp_path / "w"
    subprocess.run([prefect, "work-pool", "create", "test-pool", "--type", "process"], env=env, check=True,
                   capture_output=True)
    out = subprocess.run([layerboot, "deploy", "--pool", "test-pool", "-c", str(micro_config_path), "-w", str(work),
                          "--rounds", "1"], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "deployment layerboot-bootstrap/micro" in out.stdout
    worker = subprocess.Popen([prefect, "worker", "start", "--pool", "test-pool"], env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        run = subprocess.run([prefect, "deployment", "run", "layerboot-bootstrap/micro", "--watch",
                              "--watch-timeout", "300"], env=env, capture_output=True, text=True, timeout=360)
        assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    finally:  # prefect >= 3.9's worker may take longer than this to drain on SIGTERM: then it is killed
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait(timeout=30)
    store = Store(str(work))
    assert store.committed_rounds() == [0, 1]
    assert store.metrics().to_pylist()[1]["flow_run_id"]
