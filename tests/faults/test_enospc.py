"""Disk full in the middle of a commit: the round stays uncommitted and invisible, the run fails
with a clear error, and once there is space again `layerboot resume` finishes the same round."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from harness import FINISHED, assert_reader_view_is_committed_rounds, assert_same_store, layerboot, output

from storage.store import Store

pytestmark = [pytest.mark.service, pytest.mark.slow]

POINT = "commit-r01-manifest"  # the manifest is staged, the commit marker is being written


def test_no_space_left_during_commit_then_resume(reference, faults_config: Path, faults_env: dict, tmp_path: Path):
    ref, cfg, workdir = reference.store, str(faults_config), str(tmp_path / "store")
    store = Store(workdir)
    hits = tmp_path / "hits"

    # the disk stays full while the run retries: ENOSPC is transient, so the commit is tried 3 times
    failed = layerboot("run", "-c", cfg, "-w", workdir, "--rounds", "1", env=faults_env,
                       fail_at=f"{POINT}:ENOSPC", log=hits)
    err = failed.stderr
    assert failed.returncode == 1, output(failed)[-3000:]
    assert "error: round 1 failed in stage commit: OSError: [Errno 28] No space left on device" in err, err[-2000:]
    assert "`layerboot resume` continues" in err
    assert hits.read_text().split().count(POINT) == 3

    status = json.loads(layerboot("status", "-c", cfg, "-w", workdir, "--json", env=faults_env).stdout)["rounds"]
    assert [(r["round"], r["state"], r["stage"]) for r in status] == [(0, "committed", None), (1, "failed", "commit")]
    assert "No space left on device" in status[1]["error"]
    assert assert_reader_view_is_committed_rounds(ref, store) == [0]  # nothing of round 1 is visible
    assert store.staged_rounds() == []  # each failed attempt freed what it had staged

    # space freed: resume keeps every finished stage and only commits
    resumed = layerboot("resume", "-c", cfg, "-w", workdir, "--rounds", "1", env=faults_env)
    out = output(resumed)
    assert resumed.returncode == 0, out[-3000:]
    assert "round 1: failed in stage commit; keeping train, evaluate and shards" in out
    assert FINISHED.findall(out) == [] and "committed round 01" in out  # nothing computed again
    assert_same_store(ref, store, [0, 1])
