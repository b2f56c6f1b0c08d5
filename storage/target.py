"""The target of the run a workdir is in: what `layerboot run` was asked to reach, recorded when it
starts, so that `layerboot resume` after a crash or an interruption finishes *that* run (not the
config's default number of rounds), and extends it only when told to (`resume --rounds N`).

    <workdir>/run_target.json   {"rounds", "config_hash", "runner", "dask_address", "command", "started_at"}
"""

from __future__ import annotations

from typing import Any

from storage.store import Store, StoreError, now_utc, read_json

TARGET = "run_target.json"


def target_path(store: Store) -> str:
    return store.loc.join(TARGET)


def write_target(store: Store, rounds: int, config_hash: str, runner: str, dask_address: str | None,
                 command: str) -> dict[str, Any]:
    import json

    body = {"rounds": rounds, "config_hash": config_hash, "runner": runner, "dask_address": dask_address,
            "command": command, "started_at": now_utc().isoformat(timespec="seconds")}
    store.loc.write_atomic(target_path(store), json.dumps(body, indent=1).encode())
    return body


def read_target(store: Store) -> dict[str, Any] | None:
    """The recorded target, or None when no run recorded one (a workdir of an older layerboot, or
    one only seeded)."""
    path = target_path(store)
    if not store.loc.exists(path):
        return None
    body = read_json(store.loc, path)
    if not isinstance(body, dict) or not isinstance(body.get("rounds"), int) or body["rounds"] < 1:
        raise StoreError(f"{store.loc.uri(path)}: malformed run target (expected a JSON object with rounds >= 1)")
    return body
