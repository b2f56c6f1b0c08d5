"""Banks of images a user imports beside the rounds: composites without layers, and loose layers.

Two kinds, one piece of code (a `Bank` names its files, its image column and the command that
writes it):

- the unlabeled bank (`add-unlabeled`): plain photos for the cycle stage (paper stage (c)). Each
  round, the cycle stage decomposes some of them with the round's adapter, re-composes the layers,
  and keeps the consistent ones as new triplets.
- the layer banks (`add-layers`): layer-1 images (logos) and layer-2 images (objects) for the
  compose source (`bootstrap.compose_candidates`), which pairs one of each per candidate, composes
  them with the round's adapter, and judges the triplet.

They live beside the rounds, not in them (they are not triplets yet):

    <workdir>/unlabeled/images.parquet    name, composite_uri, composite_sha256, prompt, added_at
    <workdir>/unlabeled/images.json       the listing's sha256 as add-unlabeled wrote it (and the one before)
    <workdir>/layers/layer1.parquet       name, image_uri, image_sha256, prompt, added_at
    <workdir>/layers/layer1.json          the listing's sha256 as add-layers wrote it (and the one before)
    <workdir>/layers/layer2.parquet       (the same, for layer 2)
    <workdir>/layers/layer2.json
    <workdir>/blobs/...                   the images, content-addressed like every panel

Adding is all-or-nothing: the folders are validated in full first (storage/imports.py), then the
blobs are written, then each bank's record and listing, each replaced atomically. An image already
in the bank is skipped. The record lets readers and `fsck` tell a listing edited by hand from the
one the command wrote: it names the new listing's hash and the previous one (an add stopped between
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


@dataclass(frozen=True)
class Bank:
    folder: str  # under the workdir
    file: str  # <folder>/<file>.parquet is the listing, <folder>/<file>.json its record
    column: str  # the image columns are <column>_uri and <column>_sha256
    command: str  # the command that writes it (named when the listing was edited since)

    @property
    def listing(self) -> tuple[str, str]:
        return (self.folder, f"{self.file}.parquet")

    @property
    def record(self) -> tuple[str, str]:
        return (self.folder, f"{self.file}.json")

    @property
    def uri(self) -> str:
        return f"{self.column}_uri"

    @property
    def sha(self) -> str:
        return f"{self.column}_sha256"

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([
            pa.field("name", pa.string(), nullable=False),
            pa.field(self.uri, pa.string(), nullable=False),
            pa.field(self.sha, pa.string(), nullable=False),
            pa.field("prompt", pa.string(), nullable=False),
            pa.field("added_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ])


UNLABELED = Bank("unlabeled", "images", "composite", "add-unlabeled")
LAYER_BANKS = {"layer1": Bank("layers", "layer1", "image", "add-layers"),
               "layer2": Bank("layers", "layer2", "image", "add-layers")}
BANKS = (UNLABELED, *LAYER_BANKS.values())  # every bank `fsck` checks


@dataclass(frozen=True)
class Added:
    added: int
    already: int
    total: int


def _record(store: Store, bank: Bank) -> dict | None:
    path = store.loc.join(*bank.record)
    if not store.loc.exists(path):
        return None
    record = read_json(store.loc, path)
    if not (isinstance(record, dict) and is_sha256_hex(record.get("sha256"))
            and (record.get("previous") is None or is_sha256_hex(record.get("previous")))):
        raise StoreError(f"{store.loc.uri(path)}: not a listing record (a JSON object with sha256 and previous)")
    return record


def read_bank(store: Store, bank: Bank, checked: list[bool] | None = None) -> list[dict]:
    """The bank's rows, oldest first (empty when none were added). The listing must be the one its
    command recorded (unless it predates the record: then `checked`, if given, gets False appended)
    and each row's <column>_uri the blob key of its <column>_sha256; else StoreError, one line
    naming the file."""
    path = store.loc.join(*bank.listing)
    record = _record(store, bank)
    if not store.loc.exists(path):
        if record is not None and record.get("previous") is not None:
            raise StoreError(f"{store.loc.uri(path)}: missing, though {'/'.join(bank.record)} records one")
        return []
    data = store.loc.read_bytes(path)
    if record is None:
        if checked is not None:
            checked.append(False)
    elif sha256_hex(data) not in (record["sha256"], record.get("previous")):
        raise StoreError(f"{store.loc.uri(path)}: does not hash as {bank.command} wrote it (edited since); "
                         "run `layerboot fsck`")
    try:
        rows = read_parquet(data, bank.schema).to_pylist()
    except (pa.ArrowException, ValueError) as e:
        raise StoreError(f"{store.loc.uri(path)}: cannot be read ({e})") from None
    for i, r in enumerate(rows):
        if not is_sha256_hex(r[bank.sha]) or r[bank.uri] != blob_key(r[bank.sha]):
            raise StoreError(f"{store.loc.uri(path)}: row {i} ({str(r['name'])[:80]!r}): {bank.uri} "
                             f"{str(r[bank.uri])[:80]!r} is not the blob key of its {bank.sha}")
    return rows


def _stage(store: Store, bank: Bank, listed: list[dict], images: list, when) -> list[dict]:
    """Write the images' blobs; returns the rows of those not in the bank yet (not listed yet)."""
    known = {r[bank.sha] for r in listed}
    new = []
    for im in images:
        key, sha = store.put_image(im.image)
        if sha not in known:
            known.add(sha)
            new.append({"name": im.name, bank.uri: key, bank.sha: sha, "prompt": im.prompt, "added_at": when})
    return new


def _list(store: Store, bank: Bank, listed: list[dict], new: list[dict], when) -> None:
    """Write the bank's record, then its listing (each atomically); nothing when nothing is new."""
    if not new:
        return
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(listed + new, schema=bank.schema), sink)
    path = store.loc.join(*bank.listing)
    previous = sha256_hex(store.loc.read_bytes(path)) if store.loc.exists(path) else None
    record = {"sha256": sha256_hex(sink.getvalue()), "previous": previous, "rows": len(listed) + len(new),
              "written_at": when.isoformat()}
    store.loc.write_atomic(store.loc.join(*bank.record), json.dumps(record, indent=1).encode())
    store.loc.write_atomic(path, sink.getvalue())


def _add(store: Store, batches: dict[Bank, list]) -> dict[Bank, Added]:
    """Add each bank its images: every bank is read first (a bad one refuses all), then every blob
    is written, then each bank's record and listing."""
    when = now_utc()
    listed = {bank: read_bank(store, bank) for bank in batches}
    new = {bank: _stage(store, bank, listed[bank], images, when) for bank, images in batches.items()}
    for bank in batches:
        _list(store, bank, listed[bank], new[bank], when)
    return {bank: Added(len(new[bank]), len(images) - len(new[bank]), len(listed[bank]) + len(new[bank]))
            for bank, images in batches.items()}


def read_unlabeled(store: Store, checked: list[bool] | None = None) -> list[dict]:
    """The unlabeled bank's composites (read_bank)."""
    return read_bank(store, UNLABELED, checked)


def add_unlabeled(store: Store, images) -> Added:
    """`images`: validated `storage.imports.ImportedImage`s. Writes their blobs, then the listing."""
    return _add(store, {UNLABELED: list(images)})[UNLABELED]


def _layer_bank(panel: str) -> Bank:
    if panel not in LAYER_BANKS:
        raise ValueError(f"no layer bank {panel!r} (known: {', '.join(LAYER_BANKS)})")
    return LAYER_BANKS[panel]


def read_layer_bank(store: Store, panel: str) -> list[dict]:
    """The layer bank of `panel` ("layer1" or "layer2"): rows name, image_uri, image_sha256, prompt,
    added_at, oldest first (read_bank)."""
    return read_bank(store, _layer_bank(panel))


def add_layers(store: Store, layer1_images, layer2_images) -> dict[str, Added]:
    """Validated `storage.imports.ImportedImage`s into the two layer banks: every blob first, then
    each bank's record and listing. Returns what was added, by panel."""
    added = _add(store, {LAYER_BANKS["layer1"]: list(layer1_images), LAYER_BANKS["layer2"]: list(layer2_images)})
    return {panel: added[bank] for panel, bank in LAYER_BANKS.items()}
