"""Work in progress of an uncommitted round: finished shards of each stage, recorded in the store.

    <workdir>/work/round=NN/<stage>/shard-00003.parquet   rows a finished shard produced
    <workdir>/work/round=NN/<stage>.json                  a finished whole-round stage's result
    <workdir>/work/round=NN/adapter/                      the adapter being trained

Each shard file is written atomically, so its existence *is* its completion marker: a resumed
round skips every shard whose file exists and recomputes only the rest. Deterministic ids and
seeds make a recomputed shard byte-identical in content to the one that was lost. Nothing here is
visible to manifest readers; the round's commit publishes it, then the work folder is removed.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import reprlib
import socket
import threading
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from storage import schema
from storage.lock import is_pid
from storage.store import Store, StoreError, read_json

# The stages of a round, in order: flows/bootstrap.py runs them; resume and the report read them.
STAGES = ("train", "generate", "judge", "cycle", "evaluate", "commit")
SHARDED = ("generate", "judge", "cycle")
STATES = ("running", "failed", "interrupted")  # what status.json records (set_status)
STATUS_FILE = "status.json"  # mapped over the round's shards (models.loop.bootstrap.plan_shards)
_SHARD = re.compile(r"^shard-(\d{5})\.parquet$")
# Set once this process was told to stop (SIGINT/SIGTERM): from then on only "interrupted" is
# recorded, so a stage failing as the process goes down cannot overwrite why it stopped.
INTERRUPTED = threading.Event()


class RoundWork:
    def __init__(self, store: Store, round: int):
        self.store, self.round = store, round
        self.root = store.loc.join("work", f"round={round:02d}")

    def _stage_dir(self, stage: str) -> str:
        if not re.fullmatch(r"[a-z_]+", stage):
            raise ValueError(f"bad stage name {stage!r}")
        return posixpath.join(self.root, stage)

    def shard_path(self, stage: str, shard: int) -> str:
        return posixpath.join(self._stage_dir(stage), f"shard-{shard:05d}.parquet")

    def done_shards(self, stage: str) -> list[int]:
        d = self._stage_dir(stage)
        if not self.store.loc.exists(d):
            return []
        names = (posixpath.basename(p) for p in self.store.loc.fs.ls(d, detail=False))
        return sorted(int(m.group(1)) for n in names if (m := _SHARD.match(n)))

    def write_shard(self, stage: str, shard: int, table: pa.Table) -> None:
        table = table.cast(schema.MANIFEST_SCHEMA)
        schema.validate(table)
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.store.loc.write_atomic(self.shard_path(stage, shard), buf.getvalue())

    def read_shard(self, stage: str, shard: int) -> pa.Table:
        return schema.load_manifest(self.store.loc.read_bytes(self.shard_path(stage, shard)))[1]

    def read_stage(self, stage: str, shards: list[int]) -> pa.Table:
        """All rows of a stage, in shard order; every listed shard must be finished."""
        missing = sorted(set(shards) - set(self.done_shards(stage)))
        if missing:
            raise FileNotFoundError(f"round {self.round}: stage {stage!r} is missing shard(s) {missing}")
        tables = [self.read_shard(stage, s) for s in shards]
        return pa.concat_tables(tables) if tables else schema.empty()

    def result_path(self, stage: str) -> str:
        return self._stage_dir(stage) + ".json"

    def write_result(self, stage: str, result: dict[str, Any]) -> None:
        self.store.loc.write_atomic(self.result_path(stage), json.dumps(result, indent=1, sort_keys=True).encode())

    def read_result(self, stage: str) -> dict[str, Any] | None:
        path = self.result_path(stage)
        return read_json(self.store.loc, path) if self.store.loc.exists(path) else None

    def set_status(self, stage: str, state: str, error: str | None = None) -> None:
        """Where the round is: the stage running, or the stage that failed and why (for `status`)."""
        from storage.store import now_utc

        if INTERRUPTED.is_set() and state != "interrupted":
            return
        body = {"stage": stage, "state": state, "error": error, "host": socket.gethostname(), "pid": os.getpid(),
                "at": now_utc().isoformat()}
        self.store.loc.write_atomic(posixpath.join(self.root, STATUS_FILE), json.dumps(body).encode())

    def status(self) -> dict[str, Any] | None:
        """What status.json says, checked (`status` and `fsck` read it): StoreError naming the file."""
        path = posixpath.join(self.root, STATUS_FILE)
        if not self.store.loc.exists(path):
            return None
        body = read_json(self.store.loc, path)
        problem = None
        if not isinstance(body, dict):
            problem = "not a JSON object"
        elif "pid" in body and not is_pid(body["pid"]):
            problem = f"pid {reprlib.repr(body['pid'])} is not a process id"
        elif body.get("state") not in STATES:
            problem = f"state {reprlib.repr(body.get('state'))} is not one of {', '.join(STATES)}"
        if problem:
            raise StoreError(f"{self.store.loc.uri(path)}: malformed work status ({problem})")
        return body

    @property
    def adapter_dir(self) -> str:
        return posixpath.join(self.root, "adapter")

    def clear(self) -> None:
        self.store.loc.remove_tree(self.root)


def mark_interrupted(store: Store, why: str) -> list[int]:
    """Record every round this process is running as "interrupted" (by `why`, e.g. SIGINT), in
    the stage it was in; later status writes of this process are ignored. Returns those rounds."""
    INTERRUPTED.set()
    marked = []
    root = store.loc.join("work")
    names = [posixpath.basename(p.rstrip("/")) for p in store.loc.fs.ls(root, detail=False)] if store.loc.exists(root) else []
    for name in sorted(names):
        if (m := re.match(r"^round=(\d+)$", name)) is None:
            continue
        work = RoundWork(store, int(m.group(1)))
        try:
            status = work.status() or {}
        except StoreError:  # malformed: not one this process wrote (fsck names it), and a signal is no time to fail
            continue
        if status.get("state") == "running" and status.get("pid") == os.getpid():
            work.set_status(status.get("stage") or "-", "interrupted", error=why)
            marked.append(work.round)
    return marked


def tidy_committed(store: Store) -> None:
    """Finish what a kill right after a commit left undone: the work folders of committed rounds,
    staging folders of their earlier, killed commits (a commit removes those only once it has
    published; one killed just after publishing is never run again), and a metrics index that lags
    behind the committed rounds."""
    for r in store.committed_rounds():
        RoundWork(store, r).clear()
        store._remove_staging(r)
    store.metrics()
