from __future__ import annotations

import pytest

from storage import schema
from storage.store import Store
from storage.work import RoundWork, tidy_committed
from tests.conftest import make_row


def test_shards_are_their_own_completion_markers(store: Store):
    work = RoundWork(store, 1)
    assert work.done_shards("generate") == []
    rows = [make_row(store, 1, i, source="generated", accepted=False) for i in range(4)]
    work.write_shard("generate", 2, schema.to_table(rows[2:]))
    work.write_shard("generate", 0, schema.to_table(rows[:2]))
    assert work.done_shards("generate") == [0, 2]
    with pytest.raises(FileNotFoundError, match=r"missing shard\(s\) \[1\]"):
        work.read_stage("generate", [0, 1, 2])
    table = work.read_stage("generate", [0, 2])
    assert table["triplet_id"].to_pylist() == [r["triplet_id"] for r in rows[:2] + rows[2:]]
    # nothing of it is visible to manifest readers
    assert store.committed_rounds() == [] and store.manifest().num_rows == 0


def test_stage_results_and_clear(store: Store):
    work = RoundWork(store, 3)
    assert work.read_result("evaluate") is None
    work.write_result("evaluate", {"logo_psnr": 12.5})
    assert work.read_result("evaluate") == {"logo_psnr": 12.5}
    work.clear()
    assert work.read_result("evaluate") is None
    with pytest.raises(ValueError, match="bad stage name"):
        work.shard_path("../x", 0)


def test_tidy_committed_finishes_what_a_kill_after_a_commit_left(store: Store):
    store.commit_round(0, schema.to_table([make_row(store, 0, 0)]))
    RoundWork(store, 0).write_result("train", {"steps": 1})  # killed after the commit, before its cleanup
    RoundWork(store, 1).write_result("train", {"steps": 1})  # a round in progress: kept
    store.loc.fs.rm(store.metrics_path())  # ... and before the metrics refresh
    tidy_committed(store)
    assert RoundWork(store, 0).read_result("train") is None and RoundWork(store, 1).read_result("train") == {"steps": 1}
    assert store.loc.exists(store.metrics_path()) and store.metrics()["round"].to_pylist() == [0]
