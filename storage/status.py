"""What `layerboot status` shows, read from the store alone (never from Prefect)."""

from __future__ import annotations

from typing import Any

from storage.store import Store

_FIELDS = ("rows", "candidates", "accepted", "selection_rate", "cycle_added", "pool_size", "committed_at")


def round_status(store: Store) -> list[dict[str, Any]]:
    """One dict per round: committed rounds from their markers, plus rounds whose commit started
    and never finished ("incomplete": a crash mid-commit; nothing of it is visible)."""
    rows = []
    committed = store.committed_rounds()
    for r in committed:
        marker = store.marker(r) or {}
        rows.append({"round": r, "state": "committed", **{k: marker.get(k) for k in _FIELDS}})
    for r in store.staged_rounds():
        if r not in committed:
            rows.append({"round": r, "state": "incomplete", **{k: None for k in _FIELDS}})
    return sorted(rows, key=lambda row: row["round"])
