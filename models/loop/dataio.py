"""Reading manifest rows back as images (blobs are hash-checked on every read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from storage.schema import PANELS, panel_uris
from storage.store import Store


def read_triplets(store: Store, table: pa.Table, footprint: bool = False) -> list[dict[str, Any]]:
    """Rows -> dicts with `panels`, the three PIL panels in grid order (composite first), plus
    `prompt`, `triplet_id` and `seed` (and with `footprint`, the footprint image, mode L, or None
    for a task without one)."""
    out = []
    for row in table.to_pylist():
        item = {"panels": tuple(store.read_image(key, size=row["panel_size"]) for key in panel_uris(row))}
        if footprint:
            uri = row["footprint_uri"]
            item["footprint"] = None if uri is None else store.read_image(uri, size=row["panel_size"], mode="L")
        out.append(item | {k: row[k] for k in ("prompt", "triplet_id", "seed")})
    return out


class PoolTriplets(Sequence):
    """Manifest rows as a lazy sequence of PIL panel triplets (grid order): item i is read
    (and hash-checked) from the store when indexed, never kept. `prompts`, `triplet_ids` and
    `keys` (content keys from the rows' blob sha256s, for the latent cache) come from the table."""

    COLUMNS = (*(f"{p}_{kind}" for kind in ("uri", "sha256") for p in PANELS), "panel_size", "prompt", "triplet_id")

    def __init__(self, store: Store, table: pa.Table):
        from models.iclora.encoded import blob_triplet_key

        cols = table.select(list(self.COLUMNS)).to_pydict()
        self.store = store
        self.uris = list(zip(*(cols[f"{p}_uri"] for p in PANELS)))
        self.sizes = cols["panel_size"]
        self.prompts = cols["prompt"]
        self.triplet_ids = cols["triplet_id"]
        self.keys = [blob_triplet_key(*shas) for shas in zip(*(cols[f"{p}_sha256"] for p in PANELS))]

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return tuple(self.store.read_image(u, size=self.sizes[i]) for u in self.uris[i])
