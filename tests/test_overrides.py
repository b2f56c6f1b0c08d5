"""Operator overrides: immutable records with who/when/why that the pool honours; manifests untouched."""

from __future__ import annotations

import json
import posixpath
from datetime import datetime, timedelta, timezone

import pytest

from storage import schema
from storage.overrides import OverrideError, load_overrides, operator, record_override
from storage.store import Store
from tests.conftest import make_row

T = datetime(2026, 3, 1, 9, 30, tzinfo=timezone.utc)


def two_rounds(store: Store) -> dict[str, dict]:
    """Round 0: 4 train seeds + 2 test rows. Round 1: 3 candidates (1 accepted) + the accepted
    one's cycle triplet + a rejected cycle triplet of it. Pool after round 1: 4 + 1 + 1 = 6."""
    seeds = [make_row(store, 0, i) for i in range(4)] + [make_row(store, 0, 10 + i, split="test") for i in range(2)]
    store.commit_round(0, schema.to_table(seeds))
    good = make_row(store, 1, 0, source="generated")
    bad = [make_row(store, 1, i, source="generated", accepted=False, reject_reason="logo_clean: blurred") for i in (1, 2)]
    cyc = make_row(store, 1, 3, source="cycle", parent_id=good["triplet_id"])
    cyc_bad = make_row(store, 1, 4, source="cycle", parent_id=good["triplet_id"], accepted=False, reject_reason="cycle disagrees")
    store.commit_round(1, schema.to_table([good, *bad, cyc, cyc_bad]))
    return {"seed": seeds[0], "test": seeds[4], "good": good, "bad": bad[0], "cyc_bad": cyc_bad}


def test_overrides_change_the_pool_latest_wins_and_manifests_stay(store: Store):
    rows = two_rounds(store)
    markers = [store.marker(r) for r in (0, 1)]
    assert (store.pool(0).num_rows, store.pool(1).num_rows) == (4, 6)

    record_override(store, rows["seed"]["triplet_id"], "reject", "logo cut off", who="ana@box", when=T)
    assert (store.pool(0).num_rows, store.pool(1).num_rows) == (3, 5)
    record_override(store, rows["bad"]["triplet_id"], "accept", "judge too strict", who="ana@box", when=T + timedelta(minutes=1))
    record_override(store, rows["cyc_bad"]["triplet_id"], "accept", "fine by eye", who="bo@box", when=T + timedelta(minutes=2))
    assert (store.pool(0).num_rows, store.pool(1).num_rows) == (3, 7)
    pool = set(store.pool(1)["triplet_id"].to_pylist())
    assert rows["seed"]["triplet_id"] not in pool and {rows["bad"]["triplet_id"], rows["cyc_bad"]["triplet_id"]} <= pool
    # a later override of the same triplet wins: the seed comes back
    record_override(store, rows["seed"]["triplet_id"], "accept", "checked again: fine", who="bo@box", when=T + timedelta(hours=1))
    assert store.pool(1).num_rows == 8

    records = load_overrides(store.loc)
    assert [(o.triplet_id, o.action, o.who, o.round) for o in records] == [
        (rows["seed"]["triplet_id"], "reject", "ana@box", 0),
        (rows["bad"]["triplet_id"], "accept", "ana@box", 1),
        (rows["cyc_bad"]["triplet_id"], "accept", "bo@box", 1),
        (rows["seed"]["triplet_id"], "accept", "bo@box", 0),
    ]
    assert records[0].when == T and records[0].reason == "logo cut off"
    files = sorted(store.loc.fs.ls(store.loc.join("overrides"), detail=False))
    assert len(files) == 4 and posixpath.basename(files[0]).startswith("20260301T093000000000Z-")
    assert json.loads(store.loc.read_bytes(files[0]))["reason"] == "logo cut off"
    # committed rounds are untouched: same markers, rows still carry the judge's verdict
    assert [store.marker(r) for r in (0, 1)] == markers
    assert store.read_round(1).to_pylist()[1]["accepted"] is False

    # the next commit counts the overridden pool: 8 + 1 accepted training row of round 2
    store.commit_round(2, schema.to_table([make_row(store, 2, 0, source="generated"),
                                           make_row(store, 2, 1, source="generated", accepted=False)]))
    assert store.marker(2)["pool_size"] == store.pool(2).num_rows == 9


def test_bad_overrides_are_refused_and_write_nothing(store: Store):
    rows = two_rounds(store)
    with pytest.raises(OverrideError, match="unknown triplet id 'feedbeef'"):
        record_override(store, "feedbeef", "reject", "why not")
    with pytest.raises(OverrideError, match="in the test split"):
        record_override(store, rows["test"]["triplet_id"], "reject", "held out")
    with pytest.raises(OverrideError, match="needs a reason"):
        record_override(store, rows["seed"]["triplet_id"], "reject", "  ")
    with pytest.raises(OverrideError, match="action must be one of"):
        record_override(store, rows["seed"]["triplet_id"], "delete", "gone")
    assert load_overrides(store.loc) == [] and store.pool(1).num_rows == 6


def test_default_who_is_user_at_host_and_when_is_now(store: Store):
    rows = two_rounds(store)
    before = datetime.now(timezone.utc)
    o = record_override(store, rows["good"]["triplet_id"], "reject", "duplicate of a seed")
    assert o.who == operator() and "@" in o.who and o.round == 1
    assert before <= o.when <= datetime.now(timezone.utc)
    assert load_overrides(store.loc) == [o] and store.pool(1).num_rows == 5
