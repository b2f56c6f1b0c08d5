"""Operator overrides: a person's accept or reject of a committed triplet, with who, when and why.

    <workdir>/overrides/<UTC time>-<id>.json    one small immutable record per override

Committed manifests are never rewritten. An override is a new file, written atomically and never
changed; the pool (`Store.pool`) applies the records when it is built, so the next round trains
on what the operator decided. When one triplet has several overrides, the latest wins (by time,
then by file name). Only training rows can be overridden: the held-out test split is not a pool.
"""

from __future__ import annotations

import getpass
import json
import posixpath
import socket
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Iterable, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from storage.fs import Location
from storage.hashing import stable_id

ACTIONS = ("accept", "reject")
FOLDER = "overrides"


class OverrideError(ValueError):
    """An override that cannot be recorded (unknown triplet, test row, empty reason)."""


@dataclass(frozen=True)
class Override:
    triplet_id: str
    action: str  # one of ACTIONS
    reason: str
    who: str  # user@host
    when: datetime  # UTC
    round: int  # the committed round the triplet belongs to
    id: str  # the record's own id (its file name without the time prefix)

    @property
    def accepted(self) -> bool:
        return self.action == "accept"

    def to_json(self) -> dict:
        return asdict(self) | {"when": self.when.isoformat()}


class _Committed(Protocol):
    """What an override needs of a store (storage.store.Store, which imports this module)."""

    uri: str
    loc: Location

    def manifest(self) -> pa.Table: ...


def operator() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


def record_override(store: _Committed, triplet_id: str, action: str, reason: str, who: str | None = None,
                    when: datetime | None = None) -> Override:
    """Write one override record; the triplet must be a committed training row."""
    if action not in ACTIONS:
        raise OverrideError(f"action must be one of {list(ACTIONS)}, got {action!r}")
    if not reason.strip():
        raise OverrideError("an override needs a reason (--reason TEXT)")
    table = store.manifest()
    hit = table.filter(pc.equal(table["triplet_id"], triplet_id))
    if hit.num_rows == 0:
        raise OverrideError(f"unknown triplet id {triplet_id!r}: no committed round in {store.uri} has it")
    row = hit.to_pylist()[0]
    if row["split"] != "train":
        raise OverrideError(f"triplet {triplet_id} is in the {row['split']} split; only training rows can be overridden")
    when = (when or datetime.now(timezone.utc)).astimezone(timezone.utc)
    who = who or operator()
    record_id = stable_id(triplet_id, action, reason, who, when.isoformat(), length=16)
    record = Override(triplet_id, action, reason.strip(), who, when, row["round"], record_id)
    name = f"{when:%Y%m%dT%H%M%S%fZ}-{record_id}.json"
    store.loc.write_atomic(posixpath.join(store.loc.join(FOLDER), name), json.dumps(record.to_json(), indent=1).encode())
    return record


def load_overrides(loc: Location) -> list[Override]:
    """Every override record of a workdir, oldest first."""
    root = loc.join(FOLDER)
    if not loc.exists(root):
        return []
    records = []
    for path in sorted(loc.fs.ls(root, detail=False)):
        name = posixpath.basename(path)
        if name.startswith((".", "_")) or not name.endswith(".json"):
            continue  # temp files of a write in progress
        record = read_override(loc, path)
        records.append((record.when, name, record))
    return [o for _, _, o in sorted(records, key=lambda x: (x[0], x[1]))]


def read_override(loc: Location, path: str) -> Override:
    """One override record, as record_override writes it; else OverrideError naming the file (one
    line: a record edited by hand or half-copied changes the pool every later round trains on)."""
    def bad(why: str) -> OverrideError:
        return OverrideError(f"{loc.uri(path)}: not an override record ({why})")

    try:
        body = json.loads(loc.read_bytes(path))
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise bad(f"malformed JSON: {e}") from None
    fields = set(Override.__dataclass_fields__)
    if not isinstance(body, dict) or set(body) != fields:
        raise bad(f"a JSON object with exactly {', '.join(sorted(fields))} is expected")
    if not all(isinstance(body[k], str) for k in ("triplet_id", "action", "reason", "who", "when", "id")):
        raise bad("triplet_id, action, reason, who, when and id must be strings")
    if body["action"] not in ACTIONS:
        raise bad(f"action {body['action'][:40]!r} is not one of {', '.join(ACTIONS)}")
    if type(body["round"]) is not int or body["round"] < 0:
        raise bad(f"round {str(body['round'])[:40]!r} is not a round number")
    try:
        when = datetime.fromisoformat(body["when"])
    except ValueError:
        raise bad(f"when {body['when'][:40]!r} is not an ISO time") from None
    if when.tzinfo is None:
        raise bad(f"when {body['when'][:40]!r} has no time zone")
    return Override(**(body | {"when": when}))


def in_effect(overrides: Iterable[Override]) -> dict[str, Override]:
    """The override that counts for each triplet: the latest one."""
    latest: dict[str, Override] = {}
    for o in overrides:  # oldest first, so later ones replace earlier ones
        latest[o.triplet_id] = o
    return latest


def effective_accepted(table: pa.Table, effective: dict[str, Override]) -> pa.ChunkedArray | pa.Array:
    """The `accepted` column with overrides applied (the manifest's own column is left as committed)."""
    if not effective:
        return table["accepted"]
    ids = pa.array(list(effective), pa.string())
    decided = pa.array([o.accepted for o in effective.values()], pa.bool_())
    where = pc.index_in(table["triplet_id"], value_set=ids)  # column operations: 10M rows in well under 1 s
    return pc.coalesce(decided.take(where), table["accepted"])
