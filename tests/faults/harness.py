"""What the fault-injection tests share: running `layerboot` in a subprocess (which a test may
kill), and comparing a store with the uninterrupted reference run as a reader would see it."""

from __future__ import annotations

import io
import json
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from storage.store import Store

EXE = shutil.which("layerboot", path=str(Path(sys.executable).parent))
# a stage or shard whose work was computed and recorded in this process (kept ones log "kept finished")
FINISHED = re.compile(r"layerboot - finished (?:shard|stage) ([a-z]+-r\d\d(?:-s\d{3})?)")
COMMITTED = re.compile(r"layerboot - committed round (\d\d)")
# what differs between two runs that made the same data: wall-clock times, Prefect's run id, the
# hash of a Parquet file that holds created_at timestamps
VOLATILE = ("committed_at", "stage_seconds", "flow_run_id", "manifest_sha256")


def layerboot(*args: str, env: dict, crash_at: str | None = None, fail_at: str | None = None,
              log: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    extra = {"LAYERBOOT_CRASH_AT": crash_at, "LAYERBOOT_FAIL_AT": fail_at, "LAYERBOOT_FAILPOINT_LOG": str(log or "")}
    env = {k: v for k, v in env.items() if not k.startswith("LAYERBOOT_")} | {k: v for k, v in extra.items() if v}
    return subprocess.run([EXE, *args], env=env, capture_output=True, text=True, timeout=timeout, start_new_session=True)


def output(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def content(store: Store, r: int) -> list[dict]:
    """A committed round's rows as data: without created_at, in triplet_id order."""
    return store.read_round(r).drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()


def reader_rows(store: Store) -> list[dict]:
    """Every row a plain Parquet reader sees under manifests/ (pyarrow, hive partitions, its
    default rule that `_`- and `.`-prefixed paths are not data), without created_at."""
    root = store.loc.join("manifests")
    if not store.loc.exists(root):
        return []
    table = ds.dataset(root, filesystem=store.loc.fs, partitioning="hive").to_table()
    if table.num_rows == 0:
        return []
    return table.drop_columns(["created_at"]).sort_by("triplet_id").to_pylist()


def metrics_rows(store: Store) -> list[dict]:
    """metrics/rounds.parquet as written (not rebuilt), without the volatile columns; the adapter
    URI relative to the workdir."""
    path = store.metrics_path()
    if not store.loc.exists(path):
        return []
    rows = pq.read_table(io.BytesIO(store.loc.read_bytes(path))).drop_columns(list(VOLATILE)).to_pylist()
    for row in rows:
        if row["adapter_uri"]:
            row["adapter_uri"] = posixpath.relpath(row["adapter_uri"].split("://", 1)[1], store.loc.root)
    return rows


def adapter_files(store: Store, r: int) -> dict[str, object]:
    """The round's committed adapter as content: weights and training log (train_done.json holds
    a duration). A .safetensors file as its tensors' bytes and its metadata parsed: the metadata's
    key order and peft's target_modules (a set) are written in an order that changes per process."""
    root = store.adapter_dir(r)
    files = {}
    for path in sorted(store.loc.fs.find(root)):
        name, data = posixpath.relpath(path, root), store.loc.read_bytes(path)
        if name.endswith(".safetensors"):
            data = _safetensors_content(data)
        if name != "train_done.json" and not posixpath.basename(name).startswith("."):  # .tmp-: a killed write
            files[name] = data
    return files


def _safetensors_content(data: bytes) -> tuple:
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    meta = {}
    for key, value in header.pop("__metadata__", {}).items():
        try:
            value = json.loads(value)
        except ValueError:
            pass
        if isinstance(value, dict):
            value = {k: sorted(v) if isinstance(v, list) else v for k, v in value.items()}
        meta[key] = value
    return header, meta, data[8 + size:]


def leftovers(store: Store) -> list[str]:
    """Work folders and commit staging that should be gone once every round is committed."""
    found = []
    for sub in ("work", "manifests/_staging"):
        root = store.loc.join(sub)
        if store.loc.exists(root):
            found += store.loc.fs.find(root)
    return found


def assert_reader_view_is_committed_rounds(ref: Store, store: Store) -> list[int]:
    """What readers see is exactly the committed rounds, each whole and as the reference made it:
    no partial round, no staged or orphan rows, no duplicate ids; rounds.parquet lists no other
    round. Returns the committed rounds."""
    committed = store.committed_rounds()
    expected = sorted((row for r in committed for row in content(ref, r)), key=lambda row: row["triplet_id"])
    seen = reader_rows(store)
    assert len({row["triplet_id"] for row in seen}) == len(seen), "duplicate triplet_ids visible"
    assert seen == expected, f"readers see {len(seen)} rows, committed rounds {committed} hold {len(expected)}"
    ref_metrics = {m["round"]: m for m in metrics_rows(ref)}
    for m in metrics_rows(store):
        assert m["round"] in committed and m == ref_metrics[m["round"]], f"metrics row {m['round']} is not committed"
    return committed


def assert_same_store(ref: Store, store: Store, rounds: list[int]) -> None:
    """`store` holds exactly what the uninterrupted `ref` run made in `rounds`, and nothing else."""
    assert store.committed_rounds() == rounds
    for r in rounds:
        assert content(store, r) == content(ref, r), f"round {r} differs from the uninterrupted run"
        assert adapter_files(store, r) == adapter_files(ref, r), f"adapter of round {r} differs"
    assert metrics_rows(store) == [m for m in metrics_rows(ref) if m["round"] in rounds]
    assert_reader_view_is_committed_rounds(ref, store)
    ids = store.manifest()["triplet_id"].to_pylist()
    assert len(ids) == len(set(ids))
    assert leftovers(store) == []
    if rounds == ref.committed_rounds():
        assert store.blobs.keys() == ref.blobs.keys()  # every blob is referenced: none orphaned, none lost
