from __future__ import annotations

import io
import json
import posixpath
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from storage import schema
from storage.blobs import BlobError, blob_key, parse_blob_key
from storage.hashing import derive_seed, sha256_hex, stable_id
from storage.status import round_status
from storage.digest import DigestError, version_of
from storage.store import MARKER, RoundAlreadyCommitted, Store, StoreError, content_digest
from tests.conftest import make_row, solid


# ---- hashing: pinned, because resume identity depends on these never drifting ------------
def test_hashes_are_pinned():
    assert sha256_hex(b"layerboot") == "9db2f496db285aaa66a62b4c209acff4fb4f3a1b2324d96ff8109ec35f7c97db"
    assert stable_id("a", "bc") == "624ce4e22aa197da43bff3bcb4717e5b"
    assert stable_id("a", "bc") != stable_id("ab", "c")
    assert derive_seed("run", 1, "shard", 3) == 7636103468834438540
    assert derive_seed("run", 1, "shard", 3) != derive_seed("run", 1, "shard", 4)


# ---- blobs ------------------------------------------------------------------------------------
def test_blob_roundtrip_is_write_once(store: Store):
    key, sha = store.blobs.put(b"hello")
    assert key == blob_key(sha) == f"blobs/{sha[:2]}/{sha}.png"
    assert store.blobs.put(b"hello") == (key, sha)
    assert store.blobs.get(key) == b"hello"
    assert store.blobs.keys() == [key]


def test_flipped_byte_is_detected(store: Store):
    key, _ = store.put_image(solid((10, 20, 30)))
    path = store.blobs.path(key)
    data = bytearray(store.loc.read_bytes(path))
    data[len(data) // 2] ^= 0x01
    store.loc.fs.pipe_file(path, bytes(data))
    with pytest.raises(BlobError, match="corrupt blob"):
        store.blobs.get(key)


def test_missing_blob_and_bad_keys(store: Store):
    with pytest.raises(BlobError, match="missing blob"):
        store.blobs.get(blob_key("0" * 64))
    for bad in ["../etc/passwd", "/abs/blobs/00/x.png", "blobs/ab/" + "cd" * 32 + ".png", "blobs/00/../../x.png"]:
        with pytest.raises(BlobError, match="not a blob key"):
            parse_blob_key(bad)


@pytest.mark.parametrize("list_from", [1000, 1])  # an existence check each; a listing of each folder
def test_missing_blobs_by_listing_or_one_check_each(store: Store, monkeypatch, list_from):
    from storage import blobs

    monkeypatch.setattr(blobs, "LIST_FROM", list_from)
    present = [store.blobs.put(bytes([i]))[0] for i in range(40)]
    gone = [blob_key(sha256_hex(f"gone {i}".encode())) for i in range(5)]
    lost = present.pop(7)
    store.loc.fs.rm_file(store.blobs.path(lost))
    folder = posixpath.dirname(store.blobs.path(gone[0]))  # a killed write's temp file is not the blob
    store.loc.fs.makedirs(folder, exist_ok=True)
    store.loc.fs.pipe_file(posixpath.join(folder, ".tmp-" + posixpath.basename(gone[0])), b"x")
    checks = []
    monkeypatch.setattr(type(store.blobs), "exists", lambda self, key: checks.append(key) or store.loc.exists(
        store.blobs.path(key)))
    assert store.blobs.missing(present + gone + [lost] + present[:3]) == sorted(gone + [lost])
    folders = {k[6:8] for k in present + gone + [lost]}
    per_folder = {f: sum(k[6:8] == f for k in set(present + gone + [lost])) for f in folders}
    assert len(checks) == sum(n for n in per_folder.values() if n < list_from)
    assert store.blobs.missing([]) == []
    with pytest.raises(BlobError, match="not a blob key"):
        store.blobs.missing(["../etc/passwd"])


def test_image_roundtrip_exact(store: Store):
    img = solid((1, 2, 3))
    key, sha = store.put_image(img)
    assert store.read_image(key, size=32).tobytes() == img.tobytes()
    assert store.put_image(solid((1, 2, 3)))[1] == sha  # deterministic PNG bytes


# ---- schema -----------------------------------------------------------------------------------
def test_schema_roundtrip_through_parquet(store: Store):
    rows = [make_row(store, 0, i, judge_scores={"clean_logo": 0.9}, judge_reasons={"clean_logo": "ok"}) for i in range(3)]
    table = schema.to_table(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    back = pq.read_table(io.BytesIO(buf.getvalue()))
    assert back.equals(table)
    assert schema.schema_version_of(back.schema) == schema.SCHEMA_VERSION == 2
    assert back["judge_scores"][0].as_py() == [("clean_logo", 0.9)]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"bogus": 1}, r"unknown column\(s\) \['bogus'\]"),
        ({"source": "scraped"}, "column 'source' has value"),
        ({"split": "val"}, "column 'split' has value"),
        ({"layer1_sha256": "xyz"}, "malformed sha256"),
        ({"prompt": None}, "column 'prompt' is required"),
        ({"round": "one"}, "do not fit the schema"),
    ],
)
def test_schema_refuses_bad_rows(store: Store, change, message):
    row = make_row(store, 0, 0) | change
    with pytest.raises(schema.SchemaError, match=message):
        schema.to_table([row])


def test_schema_refuses_duplicate_ids(store: Store):
    row = make_row(store, 0, 0)
    with pytest.raises(schema.SchemaError, match="duplicates"):
        schema.to_table([row, row])


# ---- commits ----------------------------------------------------------------------------------
def commit(store: Store, r: int, rows) -> None:
    store.commit_round(r, schema.to_table(rows))


def test_commit_makes_round_visible_and_readable_without_layerboot(store: Store):
    rows = [make_row(store, 0, i) for i in range(5)]
    info = store.commit_round(0, schema.to_table(rows))
    assert (info.rows, info.noop) == (5, False)
    assert store.committed_rounds() == [0]
    assert sorted(store.read_round(0)["triplet_id"].to_pylist()) == sorted(r["triplet_id"] for r in rows)
    # a dashboard reads the hive-partitioned folder with plain pyarrow
    dataset = ds.dataset(store.loc.join("manifests"), filesystem=store.loc.fs, partitioning="hive")
    table = dataset.to_table()
    assert table.num_rows == 5 and set(table["round"].to_pylist()) == {0}
    row = store.metrics().to_pylist()[0]
    assert {k: row[k] for k in ("round", "run_id", "rows", "candidates", "accepted", "selection_rate", "cycle_added",
                                "seeds_added", "test_rows", "pool_size", "adapter_uri")} == {
        "round": 0, "run_id": "micro", "rows": 5, "candidates": 0, "accepted": 0, "selection_rate": None,
        "cycle_added": 0, "seeds_added": 5, "test_rows": 0, "pool_size": 5, "adapter_uri": None,
    }
    assert all(row[k] is None for k in schema.ROUND_EXTRA_FIELDS)


def test_recommit_identical_is_noop_and_different_is_refused(store: Store):
    rows = [make_row(store, 0, i) for i in range(3)]
    commit(store, 0, rows)
    marker = store.marker(0)
    again = store.commit_round(0, schema.to_table(list(reversed(rows))))  # order does not matter
    assert again.noop and store.marker(0) == marker
    with pytest.raises(RoundAlreadyCommitted, match="round 0 is already committed"):
        commit(store, 0, rows[:2])


def test_content_digest_ignores_layout_and_timestamps_not_order(store: Store):
    rows = [make_row(store, 0, i, reject_reason=None if i % 2 else "blurry") for i in range(6)]
    table = schema.to_table(rows)
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=2)  # read back as 3 chunks
    variants = [
        table,
        pq.read_table(io.BytesIO(buf.getvalue())).cast(schema.MANIFEST_SCHEMA),
        pa.concat_tables([table.slice(0, 1), table.slice(1)]),
        table.set_column(table.schema.get_field_index("created_at"), "created_at",
                         pc.add(table["created_at"], pa.scalar(5, pa.duration("us")))),
    ]
    assert {content_digest(t) for t in variants} == {content_digest(table)}
    changed = table.set_column(table.schema.get_field_index("reject_reason"), schema.MANIFEST_SCHEMA.field("reject_reason"),
                               pa.array([None] * 6, pa.string()))
    assert content_digest(changed) != content_digest(table)
    # definition 2 follows the rows' order; definition 1 (rounds committed before it) sorted them
    reversed_rows = schema.to_table(list(reversed(rows)))
    assert content_digest(reversed_rows) != content_digest(table)
    assert content_digest(reversed_rows, 1) == content_digest(table, 1)


def pinned_rows() -> pa.Table:
    """Two manifest rows from literal values (no PNG encoder in the way): one with every optional
    column null, one with maps, a footprint and a reason."""
    sha = [sha256_hex(bytes([k])) for k in range(4)]
    common = dict(run_id="pin", round=1, split="train", panel_size=64,
                  created_at=datetime(2026, 12, 6, tzinfo=timezone.utc))
    images = lambda k: {f"{p}_{kind}": (blob_key(sha[k + j]) if kind == "uri" else sha[k + j])  # noqa: E731
                        for j, p in enumerate(schema.PANELS) for kind in ("uri", "sha256")}
    return pa.Table.from_pylist([
        dict(triplet_id="a" * 32, source="seed", prompt="a red mug", accepted=True, seed=7, **images(0), **common),
        dict(triplet_id="b" * 32, source="generated", prompt="", accepted=False, seed=-1, **images(1), **common,
             footprint_uri=blob_key(sha[0]), footprint_sha256=sha[0], judge_scores={"clean": 0.25, "fit": 1.0},
             judge_reasons={"clean": "smudge"}, reject_reason="clean", parent_id="a" * 32, adapter_version="r00"),
    ], schema=schema.MANIFEST_SCHEMA)


def test_content_digests_are_pinned():
    """Both definitions never drift: a committed round's file name and marker depend on them."""
    table = pinned_rows()
    assert content_digest(table) == "139899284024365bcd51fe15aead8b4c"
    # as the code before 2026-12-06 computed it
    assert content_digest(table, 1) == "6c886efeeed280e679cddcf5d5c2ce7acc9f37409b5c60ebee1b969a107c3fe2"
    assert (version_of(content_digest(table)), version_of(content_digest(table, 1))) == (2, 1)
    with pytest.raises(DigestError, match="not a digest of definition 2"):
        version_of(content_digest(table, 1), 2)  # a marker that names the wrong definition
    with pytest.raises(DigestError, match="not a digest of definition 1 or 2"):
        version_of("0" * 40)


def test_content_digest_reads_no_bytes_under_a_null():
    """What lies under a null (a string's bytes, an int's value, a map's items) is not content: a
    table built with garbage there digests like the one pyarrow builds."""
    canonical = pa.table({
        "s": pa.array(["ab", None, "c"]), "i": pa.array([1, None, 3], pa.int64()),
        "m": pa.array([[("k", 1.0)], None, []], pa.map_(pa.string(), pa.float64())),
        "b": pa.array([True, None, False])})
    nulls = pa.py_buffer(bytes([0b101]))
    s = pa.StringArray.from_buffers(3, pa.py_buffer(np.array([0, 2, 5, 6], np.int32).tobytes()),
                                    pa.py_buffer(b"abxyzc"), nulls)
    i = pa.Array.from_buffers(pa.int64(), 3, [nulls, pa.py_buffer(np.array([1, 99, 3], np.int64).tobytes())])
    items = pa.array([("k", 1.0), ("junk", 2.0)], pa.struct([pa.field("key", pa.string(), nullable=False),
                                                             pa.field("value", pa.float64())]))
    offsets = pa.py_buffer(np.array([0, 1, 2, 2], np.int32).tobytes())  # the null backed by ("junk", 2.0)
    m = pa.Array.from_buffers(canonical["m"].type, 3, [nulls, offsets], children=[items])
    b = pa.Array.from_buffers(pa.bool_(), 3, [nulls, pa.py_buffer(bytes([0b011]))])
    garbage = pa.table({"s": s, "i": i, "m": m, "b": b})
    assert garbage.equals(canonical) and content_digest(garbage) == content_digest(canonical)
    chunked = pa.concat_tables([garbage.slice(1, 1), garbage.slice(2)])
    assert content_digest(canonical.slice(1)) == content_digest(chunked)
    no_chunks = pa.table({c: pa.chunked_array([], t) for c, t in zip(canonical.column_names, canonical.schema.types)})
    assert content_digest(canonical.slice(0, 0)) == content_digest(no_chunks)


def test_rounds_of_the_first_digest_definition_still_verify(store: Store):
    """A round an older layerboot committed (digest by definition 1, no version in its marker)
    reads and passes fsck; its marker made to name definition 2, or a digest that does not follow
    from its rows, is a damaged round, never a round accepted under the other definition."""
    from storage import store as store_module

    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    old = store.marker(0)
    path = posixpath.join(store.round_dir(0), old["file"])
    data = store.loc.read_bytes(path)
    v1 = content_digest(store.read_round(0), 1)

    def remark(**changes) -> Store:
        marker = {k: v for k, v in old.items() if k != "content_digest_version"} | {
            "content_digest": v1, "file": f"part-{v1[:16]}.parquet"} | changes
        store.loc.remove_tree(store.round_dir(0))
        store.loc.write_atomic(posixpath.join(store.round_dir(0), marker["file"]), data)
        store.loc.write_atomic(posixpath.join(store.round_dir(0), MARKER), json.dumps(marker).encode())
        store_module._PROVEN.clear()
        return Store(store.uri)

    fresh = remark()
    assert fresh.read_round(0).num_rows == 3 and fresh.verify_round(0, level="full")[0]["content_digest"] == v1
    fresh = remark(content_digest_version=2)
    with pytest.raises(StoreError, match="not a digest of definition 2"):
        fresh.verify_round(0, level="full")
    other = content_digest(store.read_round(0).slice(1), 1)
    fresh = remark(content_digest=other, file=f"part-{other[:16]}.parquet")
    with pytest.raises(StoreError, match="content of manifest .* does not match its commit marker"):
        fresh.verify_round(0, level="full")
    fresh = remark()
    assert store.commit_round(0, schema.to_table([make_row(store, 0, i) for i in (2, 0, 1)])).noop


def test_commit_refuses_gaps_missing_blobs_and_wrong_round(store: Store):
    with pytest.raises(StoreError, match=r"round\(s\) \[0\] are not committed"):
        commit(store, 1, [make_row(store, 1, 0)])
    row = make_row(store, 0, 0)
    store.loc.fs.rm(store.blobs.path(row["layer1_uri"]))
    with pytest.raises(StoreError, match="points at a missing blob"):
        commit(store, 0, [row])
    with pytest.raises(StoreError, match=r"rows carry round\(s\) \[3\]"):
        commit(store, 0, [make_row(store, 3, 0)])
    assert store.committed_rounds() == []


def test_crash_before_marker_leaves_nothing_visible(store: Store, monkeypatch):
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    rows = [make_row(store, 1, i, source="generated", accepted=i % 2 == 0) for i in range(4)]

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")  # not an Exception: nothing may catch it

    monkeypatch.setattr(type(store.loc), "publish_dir", crash)
    with pytest.raises(KeyboardInterrupt):
        commit(store, 1, rows)
    monkeypatch.undo()
    assert store.committed_rounds() == [0]
    assert store.pool(1).num_rows == 2
    assert [r["state"] for r in round_status(store)] == ["committed", "incomplete"]
    raw = ds.dataset(store.loc.join("manifests"), filesystem=store.loc.fs, partitioning="hive").to_table()
    assert set(raw["round"].to_pylist()) == {0}  # the staged round is invisible to raw readers too
    commit(store, 1, rows)  # resuming the commit works
    assert store.committed_rounds() == [0, 1]
    assert store.marker(1)["selection_rate"] == 0.5


def test_torn_object_store_publish_is_invisible_and_repaired(tmp_path):
    """Object stores have no rename: a crash while copying leaves some files in round=NN/. The
    manifest is copied last, so until it lands neither layerboot nor a raw Parquet reader sees the round."""
    import uuid

    store = Store(f"memory://layerboot-tests/{uuid.uuid4().hex}")
    rows = [make_row(store, 0, i) for i in range(3)]
    real_copy = store.loc.fs.copy

    def copy_until_manifest(src, dst, **kw):
        if src.endswith(".parquet"):
            raise ConnectionError("503 Slow Down")
        return real_copy(src, dst, **kw)

    store.loc.fs.copy = copy_until_manifest
    try:
        with pytest.raises(ConnectionError):
            commit(store, 0, rows)
    finally:
        del store.loc.fs.copy
    torn = store.loc.fs.find(store.round_dir(0))
    assert [posixpath.basename(p) for p in torn] == [MARKER]  # the marker got there ...
    assert store.committed_rounds() == [] and store.marker(0) is None  # ... but without its manifest no round
    raw = ds.dataset(store.loc.join("manifests"), filesystem=store.loc.fs, partitioning="hive").to_table()
    assert raw.num_rows == 0
    assert store.staged_rounds() == []  # the failed attempt removed its staging folder
    commit(store, 0, rows)
    assert store.committed_rounds() == [0] and store.read_round(0).num_rows == 3


def test_failed_commit_frees_its_staging_and_a_later_commit_clears_killed_ones(store: Store, monkeypatch):
    """A commit that fails (disk full, injected at a failpoint) removes what it staged; staging
    left by a killed commit is removed once the round commits."""
    commit(store, 0, [make_row(store, 0, 0)])
    rows = [make_row(store, 1, i, source="generated") for i in range(2)]
    killed = store.loc.join("manifests", "_staging", "round=01.killed")
    store.loc.write_atomic(posixpath.join(killed, "part-x.parquet"), b"half")
    monkeypatch.setenv("LAYERBOOT_FAIL_AT", "commit-r01-manifest:ENOSPC")
    with pytest.raises(OSError, match=r"No space left on device \(injected at failpoint commit-r01-manifest\)"):
        commit(store, 1, rows)
    monkeypatch.delenv("LAYERBOOT_FAIL_AT")
    staging = store.loc.fs.ls(store.loc.join("manifests", "_staging"), detail=False)
    assert [posixpath.basename(p.rstrip("/")) for p in staging] == ["round=01.killed"]
    assert store.committed_rounds() == [0]
    commit(store, 1, rows)
    assert store.committed_rounds() == [0, 1] and store.staged_rounds() == []


def test_staging_of_a_commit_killed_before_one_killed_after_publishing_is_tidied_on_resume(store: Store):
    """Found by tests/test_store_state_machine.py: a commit killed while staging, then its resume
    killed just after publishing, left the first attempt's staging folder forever (the round is
    committed, so no commit of it runs again to clear it): fsck reported it after a clean finish.
    The flow's tidy-up on resume (tidy_committed) now removes it."""
    from storage.fsck import fsck
    from storage.work import tidy_committed

    commit(store, 0, [make_row(store, 0, 0)])
    killed = store.loc.join("manifests", "_staging", "round=00.0f3c")  # what the first, killed attempt left
    store.loc.write_atomic(posixpath.join(killed, "part-x.parquet"), b"half")
    assert [(f.kind, f.path) for f in fsck(store).findings] == [("staging", "manifests/_staging/round=00.0f3c")]
    tidy_committed(store)
    assert fsck(store).clean and store.staged_rounds() == []


def test_manifest_tampering_is_detected(store: Store):
    commit(store, 0, [make_row(store, 0, 0)])
    path = posixpath.join(store.round_dir(0), store.marker(0)["file"])
    store.loc.fs.pipe_file(path, store.loc.read_bytes(path) + b"\0")
    with pytest.raises(StoreError, match="does not match its commit marker"):
        store.read_round(0)


# ---- pool -------------------------------------------------------------------------------------
def test_pool_after_round(store: Store):
    commit(store, 0, [make_row(store, 0, i) for i in range(4)] + [make_row(store, 0, 9, split="test")])
    gen1 = [make_row(store, 1, i, source="generated", accepted=i < 2) for i in range(5)]
    cyc1 = [make_row(store, 1, 10 + i, source="cycle", accepted=i == 0, parent_id=gen1[0]["triplet_id"]) for i in range(2)]
    commit(store, 1, gen1 + cyc1)
    commit(store, 2, [make_row(store, 2, i, source="generated", accepted=True) for i in range(3)])

    sizes = [store.pool(r).num_rows for r in range(3)]
    assert sizes == [4, 4 + 2 + 1, 4 + 2 + 1 + 3]
    pool1 = store.pool(1)
    assert set(pool1["source"].to_pylist()) == {"seed", "generated", "cycle"}
    assert all(pool1["accepted"].to_pylist()) and set(pool1["split"].to_pylist()) == {"train"}
    assert store.test_split().num_rows == 1
    m = {r["round"]: r for r in store.metrics().to_pylist()}
    assert [m[r]["pool_size"] for r in range(3)] == sizes
    assert (m[1]["candidates"], m[1]["accepted"], m[1]["selection_rate"], m[1]["cycle_added"]) == (5, 2, 0.4, 1)


def test_metrics_index_rebuilt_when_lost(store: Store):
    commit(store, 0, [make_row(store, 0, 0)])
    store.loc.fs.rm(store.metrics_path())
    assert store.metrics()["round"].to_pylist() == [0]
    assert store.loc.exists(store.metrics_path())


def test_commit_records_orchestrator_metrics(store: Store):
    commit(store, 0, [make_row(store, 0, 0)])
    rows = [make_row(store, 1, i, source="generated", accepted=i == 0) for i in range(2)]
    extra = {"rec_loss": 0.25, "stage_seconds": {"train": 3.5, "judge": 0.5}, "criterion_pass_rates": {"clean_logo": 0.5}}
    store.commit_round(1, schema.to_table(rows), metrics=extra)
    row = store.metrics().to_pylist()[1]
    assert (row["rec_loss"], row["selection_rate"]) == (0.25, 0.5)
    assert dict(row["stage_seconds"]) == {"train": 3.5, "judge": 0.5}
    with pytest.raises(StoreError, match=r"unknown metric\(s\) \['bogus'\]"):
        store.commit_round(2, schema.to_table([make_row(store, 2, 0)]), metrics={"bogus": 1})


# ---- checks at scale: the fast paths and the levels of verify_round -----------------------------
@pytest.mark.parametrize("column, value, message", [
    ("layer1_sha256", "A" * 64, "malformed sha256"),  # upper-case hex: 64 bytes, not lower-case hex
    ("layer1_uri", "blobs/00/" + "0" * 64 + ".png", "not the blob key"),  # a key, of another hash
    ("composite_uri", "blobs/../" + "0" * 64 + ".png", "not the blob key"),
    ("footprint_sha256", None, "not the blob key"),  # uri without its hash
])
def test_fast_checks_refuse_what_the_exact_ones_refuse(store: Store, column, value, message):
    """Among rows that pass (footprints null and set), one bad value is still found and named."""
    rows = [make_row(store, 0, i) for i in range(6)]
    footprint = rows[0]["layer1_sha256"]
    for row in rows[:3]:
        row["footprint_uri"], row["footprint_sha256"] = blob_key(footprint), footprint
    schema.to_table(rows)  # fine as they are
    rows[4] = rows[4] | {column: value}
    if column.startswith("footprint"):
        rows[4]["footprint_uri"] = blob_key(footprint)
    with pytest.raises(schema.SchemaError, match=message):
        schema.to_table(rows)


def test_status_glances_and_readers_prove(store: Store):
    """A new process's status reads a manifest's size and footer, not its bytes; a reader still
    hashes them; fsck re-derives the content digest, which readers skip."""
    from storage import store as store_module

    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    marker = store.marker(0)
    assert marker["manifest_bytes"] == (store.loc.fs.info(posixpath.join(store.round_dir(0), marker["file"]))["size"])
    path = posixpath.join(store.round_dir(0), marker["file"])
    data = bytearray(store.loc.read_bytes(path))
    data[len(data) // 2] ^= 1  # same size, same footer: only the bytes' hash can tell
    store.loc.fs.pipe_file(path, bytes(data))
    store_module._PROVEN.clear()  # as a new process
    fresh = Store(store.uri)
    assert [r["state"] for r in round_status(fresh)] == ["committed"]
    with pytest.raises(StoreError, match="does not match its commit marker"):
        fresh.read_round(0)
    store.loc.fs.pipe_file(path, bytes(data) + b"\0")  # another size: status sees it too
    store_module._PROVEN.clear()
    (row,) = round_status(Store(store.uri))
    assert row["state"] == "damaged" and "does not match its commit marker" in row["error"]


def test_pool_and_reads_of_some_columns_match_the_whole_rows(store: Store):
    """Store.pool(columns=...) and read_round(columns=...) decode only those columns; the rows are
    the same as the whole rows' (overrides applied alike)."""
    from storage.overrides import record_override

    commit(store, 0, [make_row(store, 0, i) for i in range(3)] + [make_row(store, 0, 9, split="test")])
    commit(store, 1, [make_row(store, 1, i, source="generated", accepted=i < 2) for i in range(4)])
    rejected = store.read_round(1).filter(pc.invert(store.read_round(1)["accepted"]))["triplet_id"][0].as_py()
    record_override(store, rejected, "accept", "looks right to me", who="ana@box")
    cols = ["triplet_id", "composite_uri", "prompt"]
    assert store.pool(1, columns=cols).equals(store.pool(1).select(cols))
    assert store.pool(1, columns=cols).num_rows == 3 + 2 + 1
    assert store.read_round(1, columns=["prompt"]).column_names == ["prompt"]
    assert store.read_round(1, columns=["layer1_uri"]).equals(store.read_round(1).select(["layer1_uri"]))
