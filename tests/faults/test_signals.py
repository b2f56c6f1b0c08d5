"""Ctrl-C (SIGINT to the whole foreground process group, as a terminal sends it) and SIGTERM (to
the process alone, as a supervisor sends it) stop `layerboot run` within 10 s: the round in
progress is recorded as "interrupted" (not as a failure or a connection error), nothing logs
against a dead Prefect API, no child process is left, the lock is released; `resume` then stops
at the interrupted run's target (its --rounds), extends it only when told, and reaches the same
store as the uninterrupted reference run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness import EXE, assert_same_store, layerboot, output

from storage.lock import LOCK_KEY
from storage.store import Store
from storage.work import RoundWork

pytestmark = [pytest.mark.service, pytest.mark.slow]


def wait_until_running(store: Store, r: int, proc: subprocess.Popen, timeout: float = 600) -> str:
    """Block until round r is running in `proc`; returns its stage."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        try:
            status = RoundWork(store, r).status() or {}
        except Exception:  # noqa: BLE001 - being written right now
            status = {}
        if status.get("state") == "running" and status.get("pid") == proc.pid:
            return status["stage"]
        time.sleep(0.1)
    raise AssertionError(f"round {r} never started running")


def group_is_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("sig, command", [(signal.SIGINT, "run"), (signal.SIGTERM, "run"), (signal.SIGTERM, "resume")],
                         ids=["sigint-ephemeral-prefect", "sigterm", "sigterm-to-resume"])
def test_a_signal_stops_the_run_and_resume_finishes_it(sig: signal.Signals, command: str, reference,
                                                       faults_config: Path, faults_env: dict, tmp_path: Path):
    cfg, workdir = str(faults_config), str(tmp_path / "store")
    store = Store(workdir)
    # Ctrl-C case: the ephemeral Prefect server this process starts gets the SIGINT too (and dies first)
    env = {k: v for k, v in faults_env.items() if k != "PREFECT_API_URL"} if sig == signal.SIGINT else faults_env
    env = {k: v for k, v in env.items() if not k.startswith("LAYERBOOT_")} | {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # (its telemetry logs SQLite-busy tracebacks on a busy machine)
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600"}
    rounds = "1" if sig == signal.SIGINT else "2"
    proc = subprocess.Popen([EXE, "run", "-c", cfg, "-w", workdir, "--rounds", rounds], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    if command == "resume":  # a crash first (SIGKILL); then the scheduler's SIGTERM reaches the resume
        wait_until_running(store, 1, proc)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc = subprocess.Popen([EXE, "resume", "-c", cfg, "-w", workdir], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until_running(store, 1, proc)
        start = time.monotonic()
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
        out = proc.communicate(timeout=60)[0]
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert elapsed < 10, f"took {elapsed:.1f} s to stop:\n{out[-3000:]}"
    assert proc.returncode == 128 + sig, out[-3000:]
    assert out.rstrip().splitlines()[-1] == (f"{sig.name}: stopped. round 1 recorded as interrupted; "
                                             "`layerboot resume` continues from the finished work"), out[-3000:]
    assert "Error logging to API" not in out and "ConnectError" not in out, out[-3000:]
    deadline = time.monotonic() + 5
    while not group_is_gone(proc.pid) and time.monotonic() < deadline:  # children (Prefect server) stopped too
        time.sleep(0.1)
    assert group_is_gone(proc.pid)
    assert not Path(workdir, LOCK_KEY).exists()

    status = layerboot("status", "-c", cfg, "-w", workdir, "--json", env=env)
    rows = {r["round"]: r for r in json.loads(status.stdout)["rounds"]}
    assert rows[0]["state"] == "committed"
    assert (rows[1]["state"], rows[1]["error"]) == ("interrupted", f"interrupted by {sig.name}")
    assert rows[1]["stage"] in ("train", "generate", "judge", "cycle", "evaluate", "commit")

    resumed = layerboot("resume", "-c", cfg, "-w", workdir, env=env)
    assert resumed.returncode == 0, output(resumed)[-3000:]
    assert f"target: {rounds} rounds, as `layerboot run` set at" in resumed.stdout
    assert "round 1: interrupted in stage" in resumed.stdout
    if sig == signal.SIGINT:  # the run's target was 1 round (the config says 2): resume stops there
        assert store.committed_rounds() == [0, 1]
        again = layerboot("resume", "-c", cfg, "-w", workdir, env=env)
        assert again.returncode == 0 and "all 1 rounds of the target are committed: nothing to do" in again.stdout
        extended = layerboot("resume", "-c", cfg, "-w", workdir, "--rounds", "2", env=env)
        assert extended.returncode == 0, output(extended)[-3000:]
        assert "target: 2 rounds (--rounds; the run started with 1)" in extended.stdout
    assert_same_store(reference.store, store, [0, 1, 2])
