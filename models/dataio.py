"""Reading manifest rows back as images (blobs are hash-checked on every read)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from storage.store import Store


def read_triplets(store: Store, table: pa.Table, footprint: bool = False) -> list[dict[str, Any]]:
    """Rows -> dicts with PIL `composite`, `logo`, `object` (and `footprint`, mode L), plus
    `prompt`, `triplet_id` and `seed`."""
    out = []
    for row in table.to_pylist():
        item = {p: store.read_image(row[f"{p}_uri"], size=row["panel_size"]) for p in ("composite", "logo", "object")}
        if footprint:
            if row["footprint_uri"] is None:
                raise ValueError(f"triplet {row['triplet_id']} has no footprint (only synthetic test rows do)")
            item["footprint"] = store.read_image(row["footprint_uri"], size=row["panel_size"], mode="L")
        out.append(item | {k: row[k] for k in ("prompt", "triplet_id", "seed")})
    return out
