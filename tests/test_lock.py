"""The workdir lock: one writer per workdir; a second `run`/`resume` is refused naming the holder;
the lock of a killed process is taken over, once, safely."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from storage.fs import Location
from storage.lock import LOCK_KEY, Holder, LockHeld, WorkdirLock, stale_reason
from storage.store import Store, StoreError
from tests.conftest import MICRO_YAML

EXE = shutil.which("layerboot", path=str(Path(sys.executable).parent))
HOST = socket.gethostname()


def dead_pid() -> int:
    """The pid of a process that has certainly exited (and been reaped)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    assert not psutil.pid_exists(proc.pid)
    return proc.pid


def write_lock(store: Store, **fields) -> None:
    body = {"host": HOST, "pid": os.getpid(), "started_at": "2026-01-01T00:00:00+00:00", "command": "layerboot run",
            "token": "f" * 32, "pid_started": None} | fields
    store.loc.write_atomic(store.loc.join(LOCK_KEY), json.dumps(body).encode())


@pytest.fixture
def live_pid():
    """Another process that is alive for the whole test."""
    proc = subprocess.Popen(["sleep", "300"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_acquire_writes_the_holder_and_release_removes_it_nested_acquire_is_a_noop(store: Store):
    with WorkdirLock(store.loc, "layerboot run") as outer:
        body = json.loads(store.loc.read_bytes(store.loc.join(LOCK_KEY)))
        assert (body["host"], body["pid"], body["command"]) == (HOST, os.getpid(), "layerboot run")
        assert body["pid_started"] == psutil.Process().create_time() and body["token"] == outer.me.token
        with WorkdirLock(store.loc, "layerboot-bootstrap flow"):  # the CLI calling the flow in-process
            pass
        assert WorkdirLock(store.loc, "x").holder().token == outer.me.token  # still held by the outer one
    assert not store.loc.exists(store.loc.join(LOCK_KEY))


def test_lock_of_another_live_process_is_refused_naming_it(store: Store, live_pid: int):
    write_lock(store, pid=live_pid, pid_started=psutil.Process(live_pid).create_time())
    with pytest.raises(LockHeld) as err:
        WorkdirLock(store.loc, "layerboot resume").acquire()
    assert isinstance(err.value, StoreError)  # a user error: one line, exit 2
    workdir = store.loc.root if store.loc.is_local else store.uri
    assert str(err.value) == (f"{workdir} is locked by `layerboot run` on host {HOST}, pid {live_pid}, started "
                              f"2026-01-01T00:00:00+00:00; wait for it to finish, or if that process is gone, "
                              f"delete {workdir}/{LOCK_KEY}")
    assert json.loads(store.loc.read_bytes(store.loc.join(LOCK_KEY)))["pid"] == live_pid  # untouched


def test_lock_of_a_dead_process_is_taken_over(store: Store):
    pid = dead_pid()
    write_lock(store, pid=pid)
    seen = []
    with WorkdirLock(store.loc, "layerboot resume", on_takeover=lambda h, why: seen.append((h.pid, why))) as lock:
        assert seen == [(pid, "its process is gone")]
        assert lock.holder().pid == os.getpid() and lock.holder().token == lock.me.token


def test_reused_pid_is_stale_but_a_live_holder_is_not():
    me = Holder.me("layerboot run")
    assert stale_reason(me) is None
    older = Holder(HOST, os.getpid(), me.started_at, "layerboot run", "t", pid_started=me.pid_started - 3600)
    assert stale_reason(older) == "its pid now belongs to another process"
    assert stale_reason(Holder(HOST, dead_pid(), me.started_at, "x", "t")) == "its process is gone"
    assert stale_reason(Holder("another-host", 1, me.started_at, "x", "t")) is None  # cannot tell from here


def test_lock_of_another_host_is_never_taken_over(store: Store):
    write_lock(store, host="gpu-box-7", pid=dead_pid())
    with pytest.raises(LockHeld, match="on host gpu-box-7"):
        WorkdirLock(store.loc, "layerboot run").acquire()


def test_unreadable_lock_is_respected_while_fresh_and_taken_over_when_old(tmp_path: Path):
    store = Store(str(tmp_path / "w"))
    path = Path(store.loc.join(LOCK_KEY))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"{half a json")
    with pytest.raises(LockHeld, match="a process that is still writing its lock file"):
        WorkdirLock(store.loc, "layerboot run").acquire()
    old = time.time() - 3600
    os.utime(path, (old, old))
    with WorkdirLock(store.loc, "layerboot run") as lock:
        assert lock.holder().pid == os.getpid()


def test_release_leaves_a_lock_that_is_no_longer_ours(store: Store):
    lock = WorkdirLock(store.loc, "layerboot run")
    lock.acquire()
    write_lock(store, token="e" * 32)  # someone else's now
    lock.release()
    assert json.loads(store.loc.read_bytes(store.loc.join(LOCK_KEY)))["token"] == "e" * 32


def test_racing_takeovers_of_one_stale_lock_have_one_winner(tmp_path: Path):
    # Eight processes, not threads: threads share a pid, and a lock of this very process is the
    # nested case (`acquire` returns at once), so a thread that came late would count as a winner.
    # Each contender stays alive until all have tried: a winner that exited would leave a stale lock.
    store = Store(str(tmp_path / "w"))
    write_lock(store, pid=dead_pid())
    ctx = multiprocessing.get_context("fork")
    start, tried, outcomes = ctx.Barrier(8), ctx.Barrier(8), ctx.Queue()

    def contend(i: int) -> None:
        lock = WorkdirLock(Location.parse(str(tmp_path / "w")), f"contender {i}")
        start.wait()
        try:
            lock.acquire()
            outcomes.put(("won", i))
        except LockHeld:
            outcomes.put(("refused", i))
        tried.wait()

    procs = [ctx.Process(target=contend, args=(i,)) for i in range(8)]
    for p in procs:
        p.start()
    results = [outcomes.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    won = [i for what, i in results if what == "won"]
    assert len(won) == 1 and len(results) == 8
    assert WorkdirLock(store.loc, "x").holder().command == f"contender {won[0]}"
    assert not list((tmp_path / "w" / "locks").glob("*.takeover")) and not list((tmp_path / "w" / "locks").glob(".tmp-*"))


HOLD = textwrap.dedent("""
    import sys, time
    from storage.fs import Location
    from storage.lock import WorkdirLock
    WorkdirLock(Location.parse(sys.argv[1]), "layerboot run").acquire()
    print("held", flush=True)
    time.sleep(600)
""")


@pytest.mark.slow
def test_cli_run_and_resume_are_refused_while_another_process_holds_the_lock(tmp_path: Path):
    """A real holder process; `run` and `resume` refuse before Prefect starts (no .prefect folder is
    made); once the holder is SIGKILLed, `fsck --repair` takes its lock over and gives it back."""
    work = tmp_path / "w"
    micro_config_path = tmp_path / "micro.yaml"
    micro_config_path.write_text(MICRO_YAML.format(base="models/tiny_base"))  # no model is loaded before the refusal
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1])}
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(work)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = json.loads((work / LOCK_KEY).read_text())["started_at"]
        for command in ("run", "resume"):
            res = subprocess.run([EXE, command, "-c", str(micro_config_path), "-w", str(work)], env=env,
                                 capture_output=True, text=True, timeout=120)
            assert res.returncode == 2, res.stderr
            lines = res.stderr.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in res.stderr
            assert lines[0] == (f"error: {work} is locked by `layerboot run` on host {HOST}, pid {holder.pid}, "
                                f"started {started}; wait for it to finish, or if that process is gone, "
                                f"delete {work}/{LOCK_KEY}")
            assert not (work / ".prefect").exists()  # refused before the flow (and Prefect) started
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    res = subprocess.run([EXE, "fsck", "--repair", "-c", str(micro_config_path), "-w", str(work)], env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"taking over the lock of `layerboot run` on host {HOST}, pid {holder.pid}" in res.stderr
    assert "its process is gone" in res.stderr
    assert not (work / LOCK_KEY).exists()  # released after the repair
