"""SIGINT/SIGTERM handling of `run`/`resume` (flows/cli/rounds.py `_stop_on_signals`) in a process that
holds the lock and has a round running, without Prefect (seconds; the end-to-end version with a
real run and resume is tests/faults/test_signals.py), and `resume`'s run target."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from configs import config_hash, load_config
from flows.cli import app
from storage import schema
from storage.lock import LOCK_KEY
from storage.store import Store
from storage.target import read_target, write_target
from storage.work import RoundWork
from tests.conftest import MICRO_YAML, make_row

BUSY = """
import subprocess, sys, threading, time
from flows.cli.common import workdir_lock
from flows.cli.rounds import _stop_on_signals
from storage.store import Store
from storage.work import RoundWork

store = Store(sys.argv[1])
held = {}
with _stop_on_signals(store, held), workdir_lock(store, "layerboot run") as held["lock"]:
    RoundWork(store, 1).set_status("generate", "running")
    child = subprocess.Popen(["sleep", "600"])  # stands for the ephemeral Prefect server
    flow = threading.Thread(target=time.sleep, args=(600,), daemon=True)  # the flow, busy in its thread
    flow.start()
    print("ready", child.pid, flush=True)
    while flow.is_alive():
        flow.join(0.25)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_a_signal_records_the_round_as_interrupted_and_exits_in_seconds(sig: signal.Signals, tmp_path: Path):
    work = tmp_path / "w"
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", BUSY, str(work)], env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready"), proc.stderr.read()
        child = int(line.split()[1])
        assert (work / LOCK_KEY).exists()
        start = time.monotonic()
        os.kill(proc.pid, sig)
        out, err = proc.communicate(timeout=30)
        elapsed = time.monotonic() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 128 + sig and elapsed < 10, (proc.returncode, elapsed, err)
    assert err.strip().splitlines()[-1] == (f"{sig.name}: stopped. round 1 recorded as interrupted; "
                                            "`layerboot resume` continues from the finished work")
    assert "Traceback" not in err
    status = json.loads((work / "work" / "round=01" / "status.json").read_text())
    assert (status["state"], status["stage"], status["error"]) == ("interrupted", "generate", f"interrupted by {sig.name}")
    assert not (work / LOCK_KEY).exists()
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


runner = CliRunner()


ORPHANED = """
import subprocess, sys
from flows.cli.common import children_die_with_this_process

children_die_with_this_process()
child = subprocess.Popen(["sleep", "600"])  # stands for the ephemeral Prefect server, a Dask worker
print("ready", child.pid, flush=True)
child.wait()
"""


def sigkill_and_collect_survivors(proc: subprocess.Popen) -> tuple[list[psutil.Process], list[psutil.Process]]:
    """SIGKILL `proc` once the watchdog has seen its descendants: (those descendants, those still
    alive 10 s later, then killed)."""
    time.sleep(1.5)  # the watchdog polls twice a second
    descendants = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(descendants, timeout=10)
    for p in alive:
        p.kill()
    return descendants, alive


def test_no_process_outlives_its_run_the_children_of_a_sigkilled_run(tmp_path: Path):
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.Popen([sys.executable, "-c", ORPHANED], env=env, text=True, stdout=subprocess.PIPE,
                            start_new_session=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("ready")
        descendants, alive = sigkill_and_collect_survivors(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert int(line.split()[1]) in [p.pid for p in descendants] and len(descendants) == 2  # the child, the watchdog
    assert alive == []


@pytest.mark.slow
def test_no_process_outlives_its_run_a_sigkilled_run_and_its_prefect_server_end_to_end(micro_config_path: Path, tmp_path: Path):
    """`layerboot run` in ephemeral Prefect mode, SIGKILLed once its Prefect server runs: nothing it
    started is left 10 s later (measured: 2 s)."""
    layerboot = str(Path(sys.executable).parent / "layerboot")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([layerboot, "run", "-c", str(micro_config_path), "-w", str(tmp_path / "w")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any("uvicorn" in " ".join(p.cmdline()) for p in psutil.Process(proc.pid).children(recursive=True)):
            assert time.monotonic() < deadline and proc.poll() is None, "the Prefect server never started"
            time.sleep(0.5)
        descendants, alive = sigkill_and_collect_survivors(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert alive == []


SIGINT_DEFAULT_EXEC = "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); os.execv(sys.argv[1], sys.argv[1:])"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_no_process_outlives_its_run_a_signal_during_seed_rolls_back_like_a_refusal(sig: signal.Signals, micro_config_path: Path, tmp_path: Path):
    work = tmp_path / "w"
    layerboot = str(Path(sys.executable).parent / "layerboot")
    # As from a terminal: SIGINT at its default. A background job of a shell without job control
    # (`make test &` in a script) starts with SIGINT ignored, children inherit that, and Python then
    # installs no KeyboardInterrupt handler, rightly: the seed would run on and this test time out.
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_DEFAULT_EXEC, layerboot, "seed", "--n", "5000",
                             "-c", str(micro_config_path), "-w", str(work)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env=os.environ | {"OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (work / "blobs").exists():  # it is writing blobs
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        time.sleep(0.5)
        os.kill(proc.pid, sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + sig, err
    assert err.strip().splitlines()[-1] == f"interrupted ({sig.name})"
    assert not work.exists() or sorted(p.relative_to(work) for p in work.rglob("*")) == []


@pytest.fixture
def two_rounds(tmp_path: Path) -> tuple[Path, Store]:
    cfg = tmp_path / "micro.yaml"
    cfg.write_text(MICRO_YAML.format(base="models/tiny_base"))  # nothing here loads the model
    store = Store(str(tmp_path / "w"))
    store.commit_round(0, schema.to_table([make_row(store, 0, i) for i in range(2)]))
    store.commit_round(1, schema.to_table([make_row(store, 1, i, source="generated") for i in range(2)]))
    return cfg, store


def test_resume_stops_at_the_run_target(two_rounds):
    """`run --rounds 1` was interrupted and its round 1 later committed: `resume` (the config says
    2 rounds) has nothing left to do, and says why; it never starts Prefect for it."""
    cfg, store = two_rounds
    write_target(store, 1, config_hash(load_config(cfg)), "threads", None, "layerboot run")
    # the run was killed right after round 1's commit: its metrics row and work folder are left over
    before = store.recorded_metrics()
    Path(store.metrics_path()).unlink()
    RoundWork(store, 1).set_status("commit", "running")
    res = runner.invoke(app, ["resume", "-c", str(cfg), "-w", store.loc.root])
    assert res.exit_code == 0, res.output
    assert store.recorded_metrics()["round"].to_pylist() == before["round"].to_pylist() == [0, 1]
    assert not (Path(store.loc.root) / "work" / "round=01").exists()
    assert res.stdout.splitlines()[0].startswith("target: 1 rounds, as `layerboot run` set at ")
    assert res.stdout.splitlines()[0].endswith("(runner threads); `layerboot resume --rounds N` extends it")
    assert res.stdout.splitlines()[1] == "all 1 rounds of the target are committed: nothing to do"
    assert not (Path(store.loc.root) / ".prefect").exists() and not (Path(store.loc.root) / LOCK_KEY).exists()
    assert read_target(store)["rounds"] == 1


def test_resume_refuses_another_config(two_rounds, tmp_path: Path):
    cfg, store = two_rounds
    write_target(store, 3, "0" * 16, "threads", None, "layerboot run")
    res = runner.invoke(app, ["resume", "-c", str(cfg), "-w", store.loc.root])
    assert res.exit_code == 2 and "not the config the run started with" in res.stderr
    assert read_target(store)["rounds"] == 3


def test_a_malformed_run_target_is_named(two_rounds):
    cfg, store = two_rounds
    Path(store.loc.root, "run_target.json").write_text('{"rounds": ')
    res = runner.invoke(app, ["resume", "-c", str(cfg), "-w", store.loc.root])
    assert res.exit_code == 2 and res.stderr.startswith(f"error: file://{store.loc.root}/run_target.json: malformed JSON")
