"""SIGKILL in the middle of a round, then `layerboot resume`: the store ends identical to an
uninterrupted run, and no shard that had finished before the kill ran again."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from storage.store import Store

pytestmark = [pytest.mark.service, pytest.mark.slow]

EXE = shutil.which("layerboot", path=str(Path(sys.executable).parent))
FINISHED = re.compile(r"layerboot - finished (?:shard|stage) ([a-z]+-r\d\d(?:-s\d{3})?)")  # computed, not kept


def layerboot(*args: str, env: dict, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = env | ({"LAYERBOOT_CRASH_AT": crash_at} if crash_at else {})
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=600, start_new_session=True)


def content(store: Store, r: int) -> list[dict]:
    return store.read_round(r).drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()


def test_sigkill_during_judge_then_resume(prefect_api, micro_config_path: Path, tmp_path: Path):
    env = os.environ | {"PREFECT_API_URL": prefect_api, "PYTHONUNBUFFERED": "1"}
    cfg = str(micro_config_path)
    ref, crashed = str(tmp_path / "ref"), str(tmp_path / "crashed")

    # reference: uninterrupted. Then a run killed right after judge shard 0 of round 2 is written.
    done = layerboot("run", "-c", cfg, "-w", ref, "--rounds", "2", env=env)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = layerboot("run", "-c", cfg, "-w", crashed, "--rounds", "2", env=env, crash_at="judge-r02-s000-done")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    status = json.loads(layerboot("status", "-c", cfg, "-w", crashed, "--json", env=env).stdout)
    assert [(r["round"], r["state"], r["stage"]) for r in status["rounds"]][-1] == (2, "crashed", "judge")

    resumed = layerboot("resume", "-c", cfg, "-w", crashed, "--rounds", "2", env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    out = resumed.stdout + resumed.stderr
    assert "round 1: committed, skipping" in out and "kept finished shard judge-r02-s000" in out
    assert "taking over the lock of `layerboot run`" in resumed.stderr and "its process is gone" in resumed.stderr

    before, after = set(FINISHED.findall(killed.stdout + killed.stderr)), set(FINISHED.findall(out))
    assert {"train-r02", "generate-r02-s000", "generate-r02-s001", "judge-r02-s000"} <= before
    assert before.isdisjoint(after)  # nothing that had finished ran twice
    assert {"cycle-r02-s000", "cycle-r02-s001", "evaluate-r02"} <= after
    assert "judge-r02-s001" in before | after  # the other judge shard ran before the kill or after it, once

    a, b = Store(ref), Store(crashed)
    assert a.committed_rounds() == b.committed_rounds() == [0, 1, 2]
    for r in (0, 1, 2):
        assert content(a, r) == content(b, r)
    ids = b.manifest()["triplet_id"].to_pylist()
    assert len(ids) == len(set(ids))  # no duplicates
