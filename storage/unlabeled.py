"""Composites without layers: plain photos a user imports for the cycle stage (paper stage (c)).

Each round, the cycle stage decomposes some of them with the round's adapter, re-composes the
layers, and keeps the consistent ones as new triplets. They live beside the rounds, not in them
(they have no layers yet):

    <workdir>/unlabeled/images.parquet    name, composite_uri, composite_sha256, prompt, added_at
    <workdir>/blobs/...                   the images, content-addressed like every panel

Adding is all-or-nothing: the folder is validated in full first (storage/imports.py), then the
blobs are written, then the listing is replaced atomically. An image already listed is skipped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from storage.schema import read_parquet
from storage.store import Store, StoreError, now_utc

LISTING = ("unlabeled", "images.parquet")
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


def read_unlabeled(store: Store) -> list[dict]:
    """The listed composites, oldest first (empty when none were imported)."""
    path = store.loc.join(*LISTING)
    if not store.loc.exists(path):
        return []
    try:
        return read_parquet(store.loc.read_bytes(path), SCHEMA).to_pylist()
    except (pa.ArrowException, ValueError) as e:
        raise StoreError(f"{store.loc.uri(path)}: cannot be read ({e})") from None


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
        store.loc.write_atomic(store.loc.join(*LISTING), sink.getvalue())
    return Added(len(new), len(images) - len(new), len(listed) + len(new))


def unlabeled_blob_keys(store: Store) -> set[str]:
    """Blob keys the listing references (fsck must keep them: no manifest does)."""
    return {r["composite_uri"] for r in read_unlabeled(store)}
