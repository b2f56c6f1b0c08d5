"""SIGKILL at every stage boundary and inside every stage (the commit included), then resume: a
chain of processes, `layerboot run` killed at the first point, `layerboot resume` killed at the
next, ... and a last resume to the end (23 points, in two chains). After every kill, readers see
exactly the committed rounds; at the end the store equals the uninterrupted run's, and no
finished work ran twice."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import pytest
from harness import COMMITTED, FINISHED, assert_reader_view_is_committed_rounds, assert_same_store, layerboot, output

from storage.faults import OBJECT_STORE_ONLY, POINTS, point
from storage.status import round_status
from storage.store import Store

pytestmark = [pytest.mark.service, pytest.mark.slow]

ROUND_1 = tuple(point(p, 1) for p in POINTS if not p.startswith("seed") and p not in OBJECT_STORE_ONLY)
# In the order a run reaches them. Shard points are those of shard 0: shards of a stage run
# concurrently, so only "shard 0 of stage k+1 is not done yet" is certain after a kill in stage k.
# A round killed once it is published resumes by skipping its commit, so round 1 is killed at
# every point but "published", and round 2 there.
CHAIN = (
    "commit-r00-staged",     # round 0 staged, not published: the seeds are made again, identically
    *(p for p in ROUND_1 if p != "commit-r01-published"),
    "judge-r02-s000-done",   # a later round, warm-started from a committed adapter
    "commit-r02-published",  # the last round visible, its metrics and work folder not updated
)
# Two chains, every other point each, run side by side (each process is mostly start-up: two use
# two cores); each is in the order a run reaches its points, so every resume gets to its point.
CHAINS = (CHAIN[0::2], CHAIN[1::2])


def test_every_listed_failpoint_is_reached_by_an_uninterrupted_run(reference):
    """The list in storage/faults.py cannot rot: an uninterrupted run passes every point of it
    (the object-store-only one: tests/faults/test_s3.py), round 1 in the listed order."""
    hits = reference.hits
    local = [p for p in POINTS if p not in OBJECT_STORE_ONLY]
    assert {point(p, 1) for p in local if not p.startswith("seed")} <= set(hits)
    assert "seed-r00-rows" in hits and set(CHAIN) <= set(hits)
    shard0 = [h for h in hits if h in ROUND_1]
    assert shard0 == list(ROUND_1)
    assert len(set(CHAIN)) == len(CHAIN) == 23


def stage_of(name: str) -> str:
    return name.split("-")[0]


def round_of(name: str) -> int:
    return int(name.split("-")[1].removeprefix("r"))


def kill_chain(points: tuple[str, ...], ref: Store, cfg: str, env: dict, root: Path) -> tuple[Counter, Counter, Store]:
    """`run` killed at points[0], `resume` killed at each next point, a last `resume` to the end;
    after every kill, checks what readers and `status` see. Returns the stages/shards finished
    and the rounds committed (counted over all processes) and the store."""
    workdir = str(root / "store")
    store = Store(workdir)
    finished, committed = Counter(), Counter()
    for i, name in enumerate(points):
        command = "run" if i == 0 else "resume"
        log = root / f"hits-{i:02d}"
        proc = layerboot(command, "-c", cfg, "-w", workdir, "--rounds", "2", env=env, crash_at=name, log=log)
        out = output(proc)
        assert proc.returncode == -signal.SIGKILL, f"{command} meant to die at {name}:\n{out[-3000:]}"
        assert name in log.read_text().split()  # it died there
        finished.update(FINISHED.findall(out))
        committed.update(COMMITTED.findall(out))

        # after every kill: readers see the committed rounds whole, and nothing else
        rounds = assert_reader_view_is_committed_rounds(ref, store)
        r = round_of(name)
        status = {row["round"]: row for row in round_status(store)}
        assert "running" not in {row["state"] for row in status.values()}  # a dead process runs nothing
        if r in rounds:  # killed after its publish: the round is there, whole
            assert name.startswith("commit-") and name.endswith(("-published", "-done"))
            assert status[r]["state"] == "committed"
        elif r == 0:  # seeding has no work folder: a commit that started shows as incomplete
            assert rounds == [] and status[0]["state"] == "incomplete"
        else:
            assert (status[r]["state"], status[r]["stage"]) == ("crashed", stage_of(name)), status[r]
        if name == "judge-r02-s000-done":  # what `layerboot status` shows an operator
            shown = json.loads(layerboot("status", "-c", cfg, "-w", workdir, "--json", env=env).stdout)
            assert [(row["round"], row["state"], row["stage"]) for row in shown["rounds"]] == [
                (0, "committed", None), (1, "committed", None), (2, "crashed", "judge")]

    done = layerboot("resume", "-c", cfg, "-w", workdir, "--rounds", "2", env=env)
    out = output(done)
    assert done.returncode == 0, out[-3000:]
    # a chain whose last kill came after round 2's commit finds the run's target met (resume stops at
    # the recorded target); the other chain has work left and says what it keeps
    assert ("all 2 rounds of the target are committed: nothing to do" in out
            or "round 1: committed, skipping" in out), out[-2000:]
    assert "taking over the lock of `layerboot resume`" in out and "its process is gone" in out  # the killed holder
    finished.update(FINISHED.findall(out))
    committed.update(COMMITTED.findall(out))
    return finished, committed, store


def test_kill_at_every_point_then_resume(reference, faults_config: Path, faults_env: dict, tmp_path: Path):
    from concurrent.futures import ThreadPoolExecutor

    ref = reference.store
    with ThreadPoolExecutor(len(CHAINS)) as pool:
        futures = [pool.submit(kill_chain, points, ref, str(faults_config), faults_env, tmp_path / f"chain{i}")
                   for i, points in enumerate(CHAINS)]
        results = [f.result() for f in futures]
    once = Counter(set(FINISHED.findall(reference.output)))
    for finished, committed, store in results:
        # each chain as a whole did the work of one run: every stage and shard finished exactly once
        assert finished == Counter(FINISHED.findall(reference.output)) == once
        assert set(committed.values()) <= {1}  # no round published twice (a kill after it: no log line)
        # ... and made the same store: manifests, metrics, adapters, blobs; no duplicates, no leftovers
        assert_same_store(ref, store, [0, 1, 2])
