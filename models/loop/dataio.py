"""Reading manifest rows back as images (blobs are hash-checked on every read)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from storage.schema import PANELS, panel_uris
from storage.store import Store


def read_triplets(store: Store, table: pa.Table, footprint: bool = False) -> list[dict[str, Any]]:
    """Rows -> dicts with PIL `composite`, `logo`, `object` (and `footprint`, mode L), plus
    `prompt`, `triplet_id` and `seed`."""
    out = []
    for row in table.to_pylist():
        item = {p: store.read_image(key, size=row["panel_size"]) for p, key in zip(PANELS, panel_uris(row))}
        if footprint:
            if row["footprint_uri"] is None:
                raise ValueError(f"triplet {row['triplet_id']} has no footprint (only synthetic test rows do)")
            item["footprint"] = store.read_image(row["footprint_uri"], size=row["panel_size"], mode="L")
        out.append(item | {k: row[k] for k in ("prompt", "triplet_id", "seed")})
    return out


class PoolTriplets(Sequence):
    """Manifest rows as a lazy sequence of (composite, logo, object) PIL panels: item i is read
    (and hash-checked) from the store when indexed, never kept. `prompts`, `triplet_ids` and
    `keys` (content keys from the rows' blob sha256s, for the latent cache) come from the table."""

    def __init__(self, store: Store, table: pa.Table):
        from models.iclora.encoded import blob_triplet_key

        cols = table.select(["composite_uri", "logo_uri", "object_uri", "composite_sha256", "logo_sha256",
                             "object_sha256", "panel_size", "prompt", "triplet_id"]).to_pydict()
        self.store = store
        self.uris = list(zip(cols["composite_uri"], cols["logo_uri"], cols["object_uri"]))
        self.sizes = cols["panel_size"]
        self.prompts = cols["prompt"]
        self.triplet_ids = cols["triplet_id"]
        self.keys = [blob_triplet_key(c, l, o) for c, l, o in
                     zip(cols["composite_sha256"], cols["logo_sha256"], cols["object_sha256"])]

    def __len__(self) -> int:
        return len(self.uris)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        return tuple(self.store.read_image(u, size=self.sizes[i]) for u in self.uris[i])
