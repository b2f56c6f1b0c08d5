"""Composites without layers: plain photos a user imports for the cycle stage (paper stage (c)).

Each round, the cycle stage decomposes some of them with the round's adapter, re-composes the
layers, and keeps the consistent ones as new triplets. They live beside the rounds, not in them
(they have no layers yet):

    <workdir>/unlabeled/images.parquet    name, composite_uri, composite_sha256, prompt, added_at
    <workdir>/unlabeled/images.json       the listing's sha256 as add-unlabeled wrote it (and the one before)
    <workdir>/blobs/...                   the images, content-addressed like every panel

Adding is all-or-nothing: the folder is validated in full first (storage/imports.py), then the
blobs are written, then the record and the listing, each replaced atomically. An image already
listed is skipped. The record lets readers and `fsck` tell a listing edited by hand from the one
add-unlabeled wrote: it names the new listing's hash and the previous one (an add stopped between
the two writes leaves the previous listing, which is still whole). A listing written before the
record existed is read unchecked.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage.blobs import blob_key
from storage.hashing import is_sha256_hex, sha256_hex
from storage.schema import read_parquet
from storage.store import Store, StoreError, now_utc, read_json

LISTING = ("unlabeled", "images.parquet")
RECORD = ("unlabeled", "images.json")
SCHEMA = pa.schema([
    pa.field("name", pa.string(), nullable=False),
    pa.field("composite_uri", pa.string(), nullable=False),
    pa.field("composite_sha256", pa.string(), nullable=False),
    pa.field("prompt", pa.string(), nullable=False),
    pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
])


@dataclass(frozen=True)
class Added:
    added: int
    already: int
    total: int


def _record(store: Store) -> dict | None:
    path = store.loc.join(*RECORD)
    if not store.loc.exists(path):
        return None
    record = read_json(store.loc, path)
    if not (isinstance(record, dict) and is_sha256_hex(record.get("sha256"))
            and (record.get("previous") is None or is_sha256_hex(record.get("previous")))):
        raise StoreError(f"{store.loc.uri(path)}: not a listing record (a JSON object with sha256 and previous)")
    return record


def read_unlabeled(store: Store, checked: list[bool] | None = None) -> list[dict]:
    """The listed composites, oldest first (empty when none were imported). The listing must be the
    one add-unlabeled recorded (unless it predates the record: then `checked`, if given, gets False
    appended) and each row's composite_uri the blob key of its composite_sha256; else StoreError,
    one line naming the file."""
    path = store.loc.join(*LISTING)
    record = _record(store)
    if not store.loc.exists(path):
        if record is not None and record.get("previous") is not None:
            raise StoreError(f"{store.loc.uri(path)}: missing, though {'/'.join(RECORD)} records one")
        return []
    data = store.loc.read_bytes(path)
    if record is None:
        if checked is not None:
            checked.append(False)
    elif sha256_hex(data) not in (record["sha256"], record.get("previous")):
        raise StoreError(f"{store.loc.uri(path)}: does not hash as add-unlabeled wrote it (edited since); "
                         "run `layerboot fsck`")
    try:
        rows = read_parquet(data, SCHEMA).to_pylist()
    except (pa.ArrowException, ValueError) as e:
        raise StoreError(f"{store.loc.uri(path)}: cannot be read ({e})") from None
    for i, r in enumerate(rows):
        if not is_sha256_hex(r["composite_sha256"]) or r["composite_uri"] != blob_key(r["composite_sha256"]):
            raise StoreError(f"{store.loc.uri(path)}: row {i} ({str(r['name'])[:80]!r}): composite_uri "
                             f"{str(r['composite_uri'])[:80]!r} is not the blob key of its composite_sha256")
    return rows


def add_unlabeled(store: Store, images) -> Added:
    """`images`: validated `storage.imports.ImportedImage`s. Writes their blobs, then the listing."""
    images = list(images)
    listed = read_unlabeled(store)
    known = {r["composite_sha256"] for r in listed}
    new, when = [], now_utc()
    for im in images:
        key, sha = store.put_image(im.image)
        if sha not in known:
            known.add(sha)
            new.append({"name": im.name, "composite_uri": key, "composite_sha256": sha, "prompt": im.prompt,
                        "added_at": when})
    if new:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(listed + new, schema=SCHEMA), sink)
        path = store.loc.join(*LISTING)
        previous = sha256_hex(store.loc.read_bytes(path)) if store.loc.exists(path) else None
        record = {"sha256": sha256_hex(sink.getvalue()), "previous": previous, "rows": len(listed) + len(new),
                  "written_at": when.isoformat()}
        store.loc.write_atomic(store.loc.join(*RECORD), json.dumps(record, indent=1).encode())
        store.loc.write_atomic(path, sink.getvalue())
    return Added(len(new), len(images) - len(new), len(listed) + len(new))
