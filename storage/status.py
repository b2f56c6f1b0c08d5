"""What `layerboot status` shows, read from the store alone (never from Prefect: a killed process
leaves its Prefect run RUNNING forever, while the store knows what was finished)."""

from __future__ import annotations

import os
import posixpath
import re
import socket
from typing import Any

from storage.store import Store
from storage.work import RoundWork

_FIELDS = ("rows", "candidates", "accepted", "selection_rate", "selection_rate_by_source", "cycle_added", "pool_size",
           "committed_at")
_WORK_DIR = re.compile(r"^round=(\d+)$")


def _alive(host: str, pid: int) -> bool | None:
    """Whether the process that last wrote a status still runs (None: another host, can't tell)."""
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def work_rounds(store: Store) -> list[int]:
    root = store.loc.join("work")
    if not store.loc.exists(root):
        return []
    names = (posixpath.basename(p.rstrip("/")) for p in store.loc.fs.ls(root, detail=False))
    return sorted(int(m.group(1)) for n in names if (m := _WORK_DIR.match(n)))


def round_status(store: Store) -> list[dict[str, Any]]:
    """One dict per round: committed rounds from their markers, each checked against its manifest
    at a glance (Store.verify_round, level "glance": the folder, the file's size, its Parquet footer's
    row count; the bytes are hashed by `fsck` and by every reader of rows), "damaged", with why and
    no figures, when it does not check out; rounds in progress from their work
    folder ("running", "failed" with the stage and error, "interrupted" by a signal, or "crashed"
    when the process that ran them is gone); "incomplete" when a commit started and never
    finished; "unmarked" when a round folder holds a manifest but lost its commit marker."""
    from storage.store import StoreError

    rows = []
    committed = store.committed_rounds()
    for r in committed:
        try:
            marker = store.verify_round(r, level="glance")[0]
        except StoreError as e:
            rows.append({"round": r, "state": "damaged", "stage": None, "error": str(e), **{k: None for k in _FIELDS}})
            continue
        rows.append({"round": r, "state": "committed", "stage": None, "error": None, **{k: marker.get(k) for k in _FIELDS}})
    for r in store.unmarked_rounds():
        rows.append({"round": r, "state": "unmarked", "stage": None, "error": "its manifest has no commit marker: see "
                     f"`layerboot fsck` (--remark {r} restores it after checking)", **{k: None for k in _FIELDS}})
    committed = committed + store.unmarked_rounds()
    for r in work_rounds(store):
        if r in committed:
            continue
        status = RoundWork(store, r).status() or {}
        state = status.get("state", "pending")
        if state == "running" and _alive(status.get("host", ""), int(status.get("pid", 0))) is False:
            state = "crashed"
        rows.append({"round": r, "state": state, "stage": status.get("stage"), "error": status.get("error"),
                     **{k: None for k in _FIELDS}})
    for r in store.staged_rounds():
        if r not in committed and r not in {row["round"] for row in rows}:
            rows.append({"round": r, "state": "incomplete", "stage": "commit", "error": None, **{k: None for k in _FIELDS}})
    return sorted(rows, key=lambda row: row["round"])
