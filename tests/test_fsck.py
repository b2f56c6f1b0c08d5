"""`layerboot fsck [--repair]`: every committed round's marker proven against its manifest, every
row's blobs present and hashing right; orphans, strays, temp files and unfinished commits found by
name; --repair moves to quarantine only what no manifest file in the workdir references, never an
unmarked round (a manifest whose marker was lost), and --purge deletes the quarantine."""

from __future__ import annotations

import json
import posixpath
import socket
import subprocess
from pathlib import Path

import psutil
import pytest

from typer.testing import CliRunner

from flows.cli import app
from storage import schema
from storage.fsck import fsck
from storage.lock import LOCK_KEY
from storage.store import Store, StoreError
from storage.work import RoundWork
from tests.conftest import MICRO_YAML, make_row

TEMP = ".tmp-" + "0123456789abcdef" * 2 + "-"


def commit(store: Store, r: int, rows) -> None:
    store.commit_round(r, schema.to_table(rows))


def snapshot(store: Store) -> dict[str, bytes]:
    return {posixpath.relpath(p, store.loc.root): store.loc.read_bytes(p) for p in store.loc.fs.find(store.loc.root)}


def kinds(report) -> set[tuple[str, str]]:
    return {(f.kind, f.path) for f in report.findings}


def test_a_committed_store_is_clean(store: Store):
    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    commit(store, 1, [make_row(store, 1, i, source="generated", accepted=i == 0) for i in range(2)])
    report = fsck(store)
    assert report.clean and report.rounds == [0, 1] and report.rows == 5
    assert report.blobs_checked == 15  # 5 rows x 3 distinct panels, each hashed once
    assert fsck(store, repair=True).repaired == []


def damaged(store: Store):
    """A store with one of every problem. Returns what the test needs to know about it."""
    rows = [make_row(store, 0, i) for i in range(3)]
    commit(store, 0, rows)
    missing, corrupt = rows[0]["layer1_uri"], rows[1]["layer2_uri"]
    store.loc.fs.rm_file(store.loc.join(missing))
    data = bytearray(store.loc.read_bytes(store.loc.join(corrupt)))
    data[40] ^= 0xFF
    store.loc.write_atomic(store.loc.join(corrupt), bytes(data))
    orphan, _ = store.blobs.put(b"written by a round that never committed")
    stray = "blobs/zz/notes.txt"
    store.loc.write_atomic(store.loc.join(stray), b"not a blob")
    temp = f"blobs/{orphan.split('/')[1]}/{TEMP}{orphan.split('/')[2]}"
    store.loc.write_atomic(store.loc.join(temp), b"half a png")
    # a commit of round 1 that died before publishing (staging) and a torn object-store publish of
    # round 2 (the marker is copied first, the manifest last: here the manifest never came)
    staging = "manifests/_staging/round=01.5f1e"
    store.loc.write_atomic(store.loc.join(staging, "_COMMITTED.json"), b"{}")
    torn = "manifests/round=02"
    store.loc.write_atomic(store.loc.join(torn, "_COMMITTED.json"), json.dumps({"file": "part-" + "0" * 16 + ".parquet"}).encode())
    # round 1 is in progress: its work shard references a blob no committed round does (yet)
    work_row = make_row(store, 1, 0, source="generated")
    RoundWork(store, 1).write_shard("generate", 0, schema.to_table([work_row]))
    return dict(missing=missing, corrupt=corrupt, orphan=orphan, stray=stray, temp=temp, staging=staging, torn=torn,
                kept=[work_row[f"{p}_uri"] for p in ("composite", "layer1", "layer2")], rows=rows)


def test_every_problem_is_found_by_name(store: Store):
    d = damaged(store)
    report = fsck(store)
    assert kinds(report) == {
        ("missing_blob", d["missing"]), ("corrupt_blob", d["corrupt"]), ("orphan_blob", d["orphan"]),
        ("stray_file", d["stray"]), ("temp_file", d["temp"]), ("staging", d["staging"]), ("torn_round", d["torn"]),
    }
    by_kind = {f.kind: f for f in report.findings}
    tid0 = d["rows"][0]["triplet_id"]
    assert by_kind["missing_blob"].detail == f"referenced by round 0, triplet {tid0}, layer1_uri"
    assert by_kind["corrupt_blob"].detail.startswith("hashes to ")
    assert report.kept_for_work == 3 and report.rounds == [0] and report.rows == 3
    assert [f.kind for f in report.unrepaired if not f.repairable] == ["missing_blob", "corrupt_blob"]


@pytest.mark.parametrize("body, detail", [
    (b'{"stage": "train", "sta', "malformed JSON (Unterminated string"),
    (b'["train", "running"]', "malformed work status (not a JSON object)"),
    (b'{"stage": "train", "state": "running", "pid": "12x"}', "malformed work status (pid '12x' is not a process id)"),
    (b'{"stage": "train", "state": "finished", "pid": 7}', "malformed work status (state 'finished' is not one of "
                                                            "running, failed, interrupted)"),
])
def test_fsck_covers_work_status_files(store: Store, body: bytes, detail: str):
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    RoundWork(store, 1).set_status("train", "running")
    RoundWork(store, 2).set_status("train", "failed", error="ValueError: bad")
    assert fsck(store).clean  # what a run writes passes
    status = "work/round=02/status.json"
    store.loc.write_atomic(store.loc.join(status), body)
    (finding,) = fsck(store).findings
    assert (finding.kind, finding.path, finding.repairable) == ("bad_work_file", status, False)
    assert finding.detail.startswith(f"{store.loc.uri(store.loc.join(status))}: {detail}"), finding.detail


def test_repair_moves_to_quarantine_only_what_nothing_references(store: Store):
    d = damaged(store)
    manifests_before = {k: v for k, v in snapshot(store).items() if k.startswith("manifests/round=00")}
    before = snapshot(store)
    report = fsck(store, repair=True)
    moved = sorted([d["orphan"], d["stray"], d["temp"], d["staging"], d["torn"]])
    assert sorted(report.repaired) == moved and report.quarantine.startswith("quarantine/")
    after = snapshot(store)
    for key in (d["orphan"], d["stray"], d["temp"]):
        assert key not in after and after[f"{report.quarantine}/{key}"] == before[key]  # moved, not deleted
    assert not any(k.startswith((d["staging"], d["torn"])) for k in after)
    assert f"{report.quarantine}/{d['torn']}/_COMMITTED.json" in after
    record = json.loads(after[f"{report.quarantine}.json"])
    assert sorted(i["path"] for i in record["items"]) == moved and record["command"] == "layerboot fsck --repair"
    assert {i["kind"] for i in record["items"]} == {"orphan_blob", "stray_file", "temp_file", "staging", "torn_round"}
    assert {k: v for k, v in after.items() if k.startswith("manifests/round=00")} == manifests_before
    referenced = {r[f"{p}_uri"] for r in d["rows"] for p in ("composite", "layer1", "layer2")} - {d["missing"]}
    assert referenced | set(d["kept"]) <= set(after)  # every referenced blob is still there, corrupt one too
    assert not store.loc.exists(store.loc.join("locks/run.lock"))
    again = fsck(store)
    assert kinds(again) == {("missing_blob", d["missing"]), ("corrupt_blob", d["corrupt"])}  # not repairable
    assert store.read_round(0).num_rows == 3

    from storage.fsck import purge
    assert purge(store) == [report.quarantine]
    assert not store.loc.exists(store.loc.join("quarantine")) and set(snapshot(store)) == set(after) - {
        k for k in after if k.startswith("quarantine/")}


def delete_marker(store: Store, r: int) -> None:
    from storage.store import MARKER

    store.loc.fs.rm_file(posixpath.join(store.round_dir(r), MARKER))


def test_a_round_without_its_marker_survives_repair_and_is_remarked(store: Store):
    """The issue's first example: the marker of a committed round is deleted."""
    from storage.fsck import remark
    from storage.status import round_status

    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    commit(store, 1, [make_row(store, 1, i, source="generated", accepted=i == 0) for i in range(2)])
    table_before = store.rounds_table()
    marker_before, rows_before = store.marker(1), store.read_round(1)
    delete_marker(store, 1)
    before = snapshot(store)
    assert [(r["round"], r["state"]) for r in round_status(store)] == [(0, "committed"), (1, "unmarked")]
    report = fsck(store, repair=True)
    assert kinds(report) == {("unmarked_round", "manifests/round=01")} and report.repaired == []
    assert not any(f.repairable for f in report.findings)
    assert snapshot(store) == before  # every row and blob intact: 6 + 9 blobs, both manifests
    assert len(store.blobs.keys()) == 15
    store.metrics()  # a reader that rebuilds the index must not forget the unmarked round
    assert store.recorded_metrics()["round"].to_pylist() == [0, 1]
    with pytest.raises(StoreError, match="holds a manifest without its commit marker; refusing to overwrite it"):
        store.commit_round(1, rows_before)  # a second commit of the round must not replace its manifest

    marker = remark(store, 1)
    assert {k: marker[k] for k in marker_before} == marker_before
    assert fsck(store).clean and store.read_round(1).num_rows == 2
    assert store.rounds_table().equals(table_before)


def test_remark_refuses_a_manifest_that_does_not_match_rounds_parquet(store: Store):
    from storage.fsck import FsckError, quarantine_round, remark

    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    commit(store, 1, [make_row(store, 1, i, source="generated") for i in range(2)])
    rewrite_manifest(store, 1, store.read_round(1).to_pylist()[:1])  # one row dropped, marker made to match
    delete_marker(store, 1)
    with pytest.raises(FsckError, match="round 1: manifest part-[0-9a-f]{16}.parquet does not hash to the "
                                        "manifest_sha256 rounds.parquet records"):
        remark(store, 1)
    assert store.unmarked_rounds() == [1]
    batch = quarantine_round(store, 1)
    assert store.unmarked_rounds() == [] and store.loc.exists(store.loc.join(batch, "manifests/round=01"))
    with pytest.raises(FsckError, match="round 1 is not unmarked"):
        remark(store, 1)


def test_no_blob_is_removed_while_a_committed_round_is_damaged(store: Store):
    """A manifest rewritten with fewer rows and its marker's hash made to match: the marker still
    says 3 rows, so the round is damaged; the dropped rows' blobs are not orphans to remove."""
    rows = [make_row(store, 0, i) for i in range(3)]
    commit(store, 0, rows)
    rewrite_manifest(store, 0, store.read_round(0).to_pylist()[:1], marker_rows=False)
    blobs = store.blobs.keys()
    report = fsck(store, repair=True)
    bad = [f for f in report.findings if f.kind == "bad_manifest"]
    assert len(bad) == 1 and "round 0 is damaged: its marker says 3 rows, manifest part-" in bad[0].detail
    assert report.repaired == [] and store.blobs.keys() == blobs
    assert sum(f.kind == "orphan_blob" for f in report.findings) == 6  # reported, kept


def test_no_blob_is_removed_while_a_committed_manifest_cannot_be_read(store: Store):
    commit(store, 0, [make_row(store, 0, 0)])
    orphan, _ = store.blobs.put(b"maybe referenced by the unreadable round")
    path = posixpath.join(store.round_dir(0), store.marker(0)["file"])
    store.loc.write_atomic(path, store.loc.read_bytes(path) + b"\0")  # no longer matches its marker
    blobs = store.blobs.keys()
    report = fsck(store, repair=True)
    # its references are unknown: every blob looks unreferenced, and none may be removed
    assert kinds(report) == {("bad_manifest", "manifests/round=00")} | {("orphan_blob", k) for k in blobs}
    assert report.findings[0].detail.startswith("round 0 is damaged: manifest part-")
    assert "does not match its commit marker" in report.findings[0].detail
    assert not any(f.repairable for f in report.findings)
    assert report.repaired == [] and store.blobs.keys() == blobs and orphan in blobs


def test_a_manifest_row_pointing_outside_blobs_is_a_bad_reference(tmp_path: Path):
    """A hand-edited manifest (marker hash updated to match) naming ../ and absolute paths."""
    store = Store(str(tmp_path / "w"))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    rows = sorted(store.read_round(0).to_pylist(), key=lambda r: r["triplet_id"])
    dropped = {rows[0]["layer1_uri"], rows[1]["layer2_uri"]}
    rows[0]["layer1_uri"], rows[1]["layer2_uri"] = "../../etc/passwd", "/etc/passwd"
    rewrite_manifest(store, 0, rows)
    report = fsck(store)
    bad = sorted(f.detail for f in report.findings if f.kind == "bad_reference")
    assert bad == sorted([
        f"round 0, triplet {rows[0]['triplet_id']}, layer1_uri: '../../etc/passwd' is not the blob key of sha256 "
        f"{rows[0]['layer1_sha256']!r}",
        f"round 0, triplet {rows[1]['triplet_id']}, layer2_uri: '/etc/passwd' is not the blob key of sha256 "
        f"{rows[1]['layer2_sha256']!r}",
    ])
    assert {f.path for f in report.findings if f.kind == "orphan_blob"} == dropped  # what those rows pointed at


def rewrite_manifest(store: Store, r: int, rows: list[dict], marker_rows: bool = True) -> None:
    """Tamper with a committed round the way a careful hand edit would: new rows, the marker's
    hash made to match, and (with `marker_rows`) its row count, content digest, file name and
    figures too, so that only the rows themselves can tell."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from storage.hashing import sha256_hex
    from storage.store import MARKER, content_digest, derived_figures

    marker = store.marker(r)
    old_train_accepted = derived_figures(store.read_round(r, validate=False))["train_accepted"]
    table = pa.Table.from_pylist(rows, schema=schema.MANIFEST_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store.loc.fs.rm_file(posixpath.join(store.round_dir(r), marker["file"]))
    if marker_rows:
        digest = content_digest(table)
        figures = derived_figures(table)
        marker |= {k: v for k, v in figures.items() if k in marker} | {
            "content_digest": digest, "file": f"part-{digest[:16]}.parquet",
            "pool_size": marker["pool_size"] - old_train_accepted + figures["train_accepted"]}
    store.loc.write_atomic(posixpath.join(store.round_dir(r), marker["file"]), buf.getvalue())
    marker["manifest_sha256"] = sha256_hex(buf.getvalue())
    store.loc.write_atomic(posixpath.join(store.round_dir(r), MARKER), json.dumps(marker).encode())


runner = CliRunner()


def test_cli_exit_codes_json_and_the_lock(tmp_path: Path):
    work, micro_config_path = tmp_path / "w", tmp_path / "micro.yaml"
    micro_config_path.write_text(MICRO_YAML.format(base="models/tiny_base"))  # fsck never loads the model
    store = Store(str(work))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    args = ["fsck", "-c", str(micro_config_path), "-w", str(work)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and res.stdout.strip().endswith("clean"), res.output

    orphan, _ = store.blobs.put(b"orphan")
    res = runner.invoke(app, args + ["--json"])
    assert res.exit_code == 1
    body = json.loads(res.stdout)
    assert body["counts"] == {"orphan_blob": 1} and body["findings"][0]["path"] == orphan

    res = runner.invoke(app, args)
    assert res.exit_code == 1 and f"orphan_blob      {orphan}  (referenced by no manifest in the workdir)" in res.stdout
    assert "1 removable with `layerboot fsck --repair`" in res.stdout

    run = subprocess.Popen(["sleep", "300"])  # stands for a live `layerboot run` holding the lock
    try:
        lock = {"host": socket.gethostname(), "pid": run.pid, "started_at": "2026-01-01T00:00:00+00:00",
                "command": "layerboot run", "token": "a" * 32, "pid_started": psutil.Process(run.pid).create_time()}
        store.loc.write_atomic(store.loc.join(LOCK_KEY), json.dumps(lock).encode())
        res = runner.invoke(app, args + ["--repair"])  # a run is writing: --repair must not touch anything
        assert res.exit_code == 2 and f"is locked by `layerboot run` on host {lock['host']}, pid {run.pid}" in res.stderr
        assert store.loc.exists(store.loc.join(orphan))
        res = runner.invoke(app, args)  # a plain check is read-only: allowed, and says who holds the lock
        assert res.exit_code == 1 and f"locked by `layerboot run` on host {lock['host']}, pid {run.pid}" in res.stdout
    finally:
        run.kill()
        run.wait()

    res = runner.invoke(app, args + ["--repair"])
    assert res.exit_code == 0 and f"quarantined      {orphan}" in res.stdout, res.output
    assert not store.loc.exists(store.loc.join(orphan))
    assert "moved 1 to quarantine/" in res.stdout and len(list((work / "quarantine").rglob("*.png"))) == 1
    res = runner.invoke(app, args + ["--purge"])
    assert res.exit_code == 0 and "purged 1 quarantine batch(es)" in res.stdout and not (work / "quarantine").exists()

    store.loc.fs.rm_file(store.loc.join(store.read_round(0).to_pylist()[0]["layer1_uri"]))
    res = runner.invoke(app, args + ["--repair"])
    assert res.exit_code == 1 and "1 cannot be repaired here" in res.stdout


def test_cli_remarks_then_quarantines_an_unmarked_round(tmp_path: Path):
    """The operator's two explicit actions on an unmarked round, from the command line."""
    work, cfg = tmp_path / "w", tmp_path / "micro.yaml"
    cfg.write_text(MICRO_YAML.format(base="models/tiny_base"))  # fsck never loads the model
    store = Store(str(work))
    commit(store, 0, [make_row(store, 0, i) for i in range(3)])
    commit(store, 1, [make_row(store, 1, i, source="generated") for i in range(2)])
    marker = store.marker(1)
    args = ["fsck", "-c", str(cfg), "-w", str(work)]
    delete_marker(store, 1)
    res = runner.invoke(app, args + ["--remark", "1"])
    assert res.exit_code == 0, res.output
    assert res.stdout.splitlines()[0].startswith(f"round 1: commit marker restored (2 rows, manifest {marker['file']}")
    restored = store.marker(1)
    assert {k: restored[k] for k in marker} == marker and runner.invoke(app, args).exit_code == 0  # clean again

    delete_marker(store, 1)
    res = runner.invoke(app, args + ["--quarantine-round", "1"])
    assert res.exit_code == 0, res.output
    batch = res.stdout.split("moved to ", 1)[1].split("/ ", 1)[0]
    assert store.unmarked_rounds() == [] and store.committed_rounds() == [0]
    assert store.loc.exists(store.loc.join(batch, "manifests", "round=01", marker["file"]))
    assert json.loads((work / f"{batch}.json").read_text())  # the record of why
