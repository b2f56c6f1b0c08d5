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
from tests.conftest import MICRO_YAML, make_row, solid

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


def committed_with_a_lost_and_a_flipped_blob(store: Store, n: int):
    """Round 0 of n rows committed, then row 0's layer1 blob deleted and row 1's layer2 blob with a
    flipped byte: (rows, missing key, corrupt key)."""
    rows = [make_row(store, 0, i) for i in range(n)]
    commit(store, 0, rows)
    missing, corrupt = rows[0]["layer1_uri"], rows[1]["layer2_uri"]
    store.loc.fs.rm_file(store.loc.join(missing))
    data = bytearray(store.loc.read_bytes(store.loc.join(corrupt)))
    data[40] ^= 0xFF
    store.loc.write_atomic(store.loc.join(corrupt), bytes(data))
    return rows, missing, corrupt


def damaged(store: Store):
    """A store with one of every problem. Returns what the test needs to know about it."""
    rows, missing, corrupt = committed_with_a_lost_and_a_flipped_blob(store, 3)
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
    """The first case fsck was built for: the marker of a committed round is deleted."""
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


# ---- files the run trusts beyond the manifests: adapters, the unlabeled bank, the latent cache -----

def adapter_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "adapter"
    folder.mkdir(exist_ok=True)
    (folder / "pytorch_lora_weights.safetensors").write_bytes(b"weights of round 1")
    (folder / "train_log.json").write_text("[]")
    return folder


def test_files_the_run_trusts_are_checked_a_committed_adapter_edited_is_damaged(store: Store, tmp_path: Path):
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    store.commit_round(1, schema.to_table([make_row(store, 1, 0, source="generated")]),
                       adapter_dir=str(adapter_folder(tmp_path)))
    marker = store.marker(1)
    assert marker["adapter_files"] == {  # sha256 of each file as committed
        "pytorch_lora_weights.safetensors": "161af3dcdaaf817a5968af583199bda803080e48ec65438203f3af1153ed757b",
        "train_log.json": "4f53cda18c2baa0c0354bb5f9a3ecbe5ed12ab4d8e11ba873c2f11161202b945"}
    report = fsck(store)
    assert report.clean and report.adapters_checked == 1 and report.unchecked == []
    weights = store.loc.join(store.adapter_dir(1), "pytorch_lora_weights.safetensors")
    for edit, why in [(lambda: store.loc.write_atomic(weights, b"weights of round 1, edited"),
                       "does not hash as committed (edited since)"),
                      (lambda: store.loc.fs.rm_file(weights), "is missing")]:
        edit()
        (finding,) = fsck(store).findings
        assert (finding.kind, finding.path, finding.repairable) == ("damaged_adapter", "adapters/round=01", False)
        assert finding.detail == f"round 1's adapter is damaged: {store.loc.uri(weights)} {why}; run `layerboot fsck`"
        with pytest.raises(StoreError, match="round 1's adapter is damaged"):
            store.verify_adapter(1)
        store.loc.write_atomic(weights, b"weights of round 1")
    assert fsck(store).clean
    extra = store.loc.join(store.adapter_dir(1), "notes.txt")
    store.loc.write_atomic(extra, b"x")
    (finding,) = fsck(store).findings
    assert finding.detail.endswith(f"{store.loc.uri(extra)} was not committed with the round; run `layerboot fsck`")


def test_an_adapter_committed_before_hashes_were_recorded_is_unchecked_not_damaged(tmp_path: Path):
    store = Store(str(tmp_path / "work"))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    store.commit_round(1, schema.to_table([make_row(store, 1, 0, source="generated")]),
                       adapter_dir=str(adapter_folder(tmp_path)))
    path = store.loc.join(store.round_dir(1), "_COMMITTED.json")
    marker = json.loads(store.loc.read_bytes(path))
    del marker["adapter_files"]  # as an older layerboot wrote it
    store.loc.write_atomic(path, json.dumps(marker).encode())
    report = fsck(store)
    assert report.clean and report.adapters_checked == 0
    assert report.unchecked == ["adapters/round=01: committed without file hashes (an older layerboot, or a marker "
                                "restored by --remark)"]
    res = runner.invoke(app, ["fsck", "-c", str(write_micro(tmp_path)), "-w", str(tmp_path / "work")])
    assert res.exit_code == 0 and "unchecked        adapters/round=01: committed without" in res.stdout, res.output


def write_micro(tmp_path: Path) -> Path:
    path = tmp_path / "micro.yaml"
    path.write_text(MICRO_YAML.format(base="models/tiny_base"))  # fsck never loads the model
    return path


def unlabeled_bank(store: Store, n: int = 2):
    from storage.imports import ImportedImage
    from storage.unlabeled import add_unlabeled

    add_unlabeled(store, [ImportedImage(f"photo{i}", solid((200, 10 * i, 5)), f"photo {i}") for i in range(n)])


def test_files_the_run_trusts_are_checked_the_unlabeled_bank(store: Store):
    import pyarrow.parquet as pq
    import io

    from storage.unlabeled import read_unlabeled

    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    unlabeled_bank(store)
    report = fsck(store)
    assert report.clean and report.bank_rows == 2 and report.blobs_checked == 6 + 2 and report.kept_for_work == 0
    listing = "unlabeled/images.parquet"
    rows = read_unlabeled(store)

    # its blobs are checked like a round's
    blob = rows[1]["composite_uri"]
    data = store.loc.read_bytes(store.loc.join(blob))
    store.loc.write_atomic(store.loc.join(blob), data[:-1] + bytes([data[-1] ^ 1]))
    (finding,) = fsck(store).findings
    assert (finding.kind, finding.path) == ("corrupt_blob", blob)
    assert finding.detail.endswith(f"referenced by {listing}, row 1 ('photo1')")
    store.loc.write_atomic(store.loc.join(blob), data)

    # the listing edited by hand (the prompt of one row), written back with pyarrow
    table = pq.read_table(io.BytesIO(store.loc.read_bytes(store.loc.join(listing))))
    edited = table.set_column(3, "prompt", [["photo 0", "something else"]])
    sink = io.BytesIO()
    pq.write_table(edited, sink)
    store.loc.write_atomic(store.loc.join(listing), sink.getvalue())
    orphan, _ = store.blobs.put(b"an orphan, kept while the bank cannot be trusted")
    report = fsck(store, repair=True)
    assert kinds(report) == {("bad_bank", listing), ("orphan_blob", orphan)} and report.repaired == []
    bad = next(f for f in report.findings if f.kind == "bad_bank")
    assert bad.detail == (f"{store.loc.uri(store.loc.join(listing))}: does not hash as add-unlabeled wrote it "
                          "(edited since); run `layerboot fsck`")
    with pytest.raises(StoreError, match="does not hash as add-unlabeled wrote it"):  # the cycle stage's reader
        read_unlabeled(store)


def test_an_unlabeled_listing_from_before_its_record_is_unchecked(tmp_path: Path):
    store = Store(str(tmp_path / "work"))
    unlabeled_bank(store)
    store.loc.fs.rm_file(store.loc.join("unlabeled/images.json"))
    report = fsck(store)
    assert report.clean and report.bank_rows == 2
    assert report.unchecked == ["unlabeled/images.parquet: written before its hash was recorded"]


def test_an_unlabeled_add_stopped_between_its_record_and_its_listing_reads_the_previous_listing(tmp_path: Path):
    from storage.unlabeled import read_unlabeled

    store = Store(str(tmp_path / "work"))
    unlabeled_bank(store, 1)
    before = store.loc.read_bytes(store.loc.join("unlabeled/images.parquet"))
    unlabeled_bank(store, 2)
    store.loc.write_atomic(store.loc.join("unlabeled/images.parquet"), before)  # the listing write never came
    assert [r["name"] for r in read_unlabeled(store)] == ["photo0"]
    written, _ = store.put_image(solid((200, 10, 5)))  # photo1's blob, written before the listing
    assert kinds(fsck(store)) == {("orphan_blob", written)}


def test_files_the_run_trusts_are_checked_the_latent_cache(tmp_path: Path):
    """A cache entry rewritten with zeros (or copied under another key, or written by another tool)
    does not match the key and digest it records: reported, and quarantined by --repair (reversibly;
    training encodes it again)."""
    import torch
    from safetensors.torch import save_file

    from models.iclora.encoded import LatentCache

    store = Store(str(tmp_path / "work"))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    cache = LatentCache(tmp_path / "work" / "cache" / "latents", "ab" * 32, 32)
    keys = ["c0" + "1" * 62, "d7" + "2" * 62]
    for i, key in enumerate(keys):
        cache.put(key, {"x0": torch.full((12, 256), float(i + 1)), "decompose": torch.ones(12, 256)})
    cache.put("constants", {"mask.decompose": torch.ones(12, 256)})
    report = fsck(store)
    assert report.clean and report.cache_entries == 3

    zeroed, copied = cache.path(keys[0]), cache.path(keys[1])
    save_file({"x0": torch.zeros(12, 256), "decompose": torch.zeros(12, 256)}, str(zeroed))
    copied.write_bytes(cache.path("constants").read_bytes())
    stray = cache.root / "notes.txt"
    stray.write_text("x")
    rel = lambda p: str(p.relative_to(tmp_path / "work"))  # noqa: E731
    report = fsck(store)
    assert {(f.kind, f.path): f.detail for f in report.findings} == {
        ("bad_cache_entry", rel(zeroed)): "records no content digest (written by another tool or an older "
                                          "layerboot); training encodes it again",
        ("bad_cache_entry", rel(copied)): "records key 'constants', not its own name's; training encodes it again",
        ("bad_cache_entry", rel(stray)): "not laid out like a cache entry (<vae>/<size>/<ab>/<key>.safetensors); "
                                         "training encodes it again",
    }
    assert report.cache_entries == 1
    moved = fsck(store, repair=True)
    assert sorted(moved.repaired) == sorted([rel(zeroed), rel(copied), rel(stray)])
    assert not zeroed.exists() and (tmp_path / "work" / moved.quarantine / rel(zeroed)).is_file()
    assert fsck(store).clean


def test_files_the_run_trusts_are_checked_a_warm_start_refuses_an_edited_adapter(micro_config_path: Path, tmp_path: Path):
    """The next round's training starts from the committed adapter: one edited since is refused in one
    line naming the file, before any training (it broke training half-way)."""
    from flows.cli.common import _describe
    from models.loop.stages import train_stage
    from storage.store import DamagedRound

    store = Store(str(tmp_path / "work"))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    store.commit_round(1, schema.to_table([make_row(store, 1, 0, source="generated")]),
                       adapter_dir=str(adapter_folder(tmp_path)))
    weights = store.loc.join(store.adapter_dir(1), "pytorch_lora_weights.safetensors")
    store.loc.write_atomic(weights, b"weights of round 1, edited")
    with pytest.raises(DamagedRound) as err:
        train_stage(str(micro_config_path), str(tmp_path / "work"), 2)
    assert _describe(err.value) == (f"round 1's adapter is damaged: {store.loc.uri(weights)} does not hash as committed (edited "
                                    "since); run `layerboot fsck`")
    assert not (tmp_path / "work" / "work" / "round=02" / "adapter").exists()


def test_sample_hashes_some_blobs_and_checks_every_one_is_there(store: Store):
    """--sample N re-hashes N referenced blobs chosen by a seed (reported, to repeat the run); a
    missing blob is found whatever the sample, with the triplet that references it."""
    rows, missing, corrupt = committed_with_a_lost_and_a_flipped_blob(store, 5)
    first = fsck(store, sample=3)
    assert first.blobs_checked == 3 and first.blobs_referenced == 15 and first.sample_seed is not None  # of 14 there
    assert ("missing_blob", missing) in kinds(first)
    (detail,) = [f.detail for f in first.findings if f.kind == "missing_blob"]
    assert detail == f"referenced by round 0, triplet {rows[0]['triplet_id']}, layer1_uri"
    again = fsck(store, sample=3, seed=first.sample_seed)
    assert kinds(again) == kinds(first)  # the same blobs, the same findings
    found = [seed for seed in range(40) if ("corrupt_blob", corrupt) in kinds(fsck(store, sample=3, seed=seed))]
    assert 0 < len(found) < 40  # some samples hold the corrupt blob, some do not
    assert ("corrupt_blob", corrupt) in kinds(fsck(store, sample=14))  # a sample of all is the full check
    res = runner.invoke(app, ["fsck", "-w", store.uri, "--sample", "2", "--sample-seed", "7"])
    assert res.exit_code == 1 and "15 blobs referenced (each looked for), 2 re-hashed (a sample, --sample-seed 7)" in res.stdout


def test_a_temp_file_a_killed_adapter_copy_left_is_a_temp_file_not_a_damaged_adapter(tmp_path: Path):
    """A commit killed while copying the adapter leaves a write_atomic temp file in adapters/round=NN/;
    the resumed commit records the real files. The temp file is litter (fsck --repair moves it), not a
    change to the adapter: the next round's warm start must still accept it."""
    store = Store(str(tmp_path / "work"))
    commit(store, 0, [make_row(store, 0, i) for i in range(2)])
    leftover = f"adapters/round=01/{TEMP}pytorch_lora_weights.safetensors"
    store.loc.write_atomic(store.loc.join(leftover), b"half of the weights")
    store.commit_round(1, schema.to_table([make_row(store, 1, 0, source="generated")]),
                       adapter_dir=str(adapter_folder(tmp_path)))
    assert store.verify_adapter(1) is not None
    report = fsck(store)
    assert kinds(report) == {("temp_file", leftover)} and report.adapters_checked == 1
    assert fsck(store, repair=True).repaired == [leftover] and fsck(store).clean
