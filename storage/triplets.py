"""Turning three panel images into one manifest row (blobs written, ids derived)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from PIL import Image

from storage.hashing import stable_id
from storage.store import Store


def triplet_id(composite_sha: str, logo_sha: str, object_sha: str, source: str, parent_id: str | None) -> str:
    """Stable id from content and lineage: the same panels reached by another path are another row."""
    return stable_id(composite_sha, logo_sha, object_sha, source, parent_id)


def put_triplet(
    store: Store,
    *,
    composite: Image.Image,
    logo: Image.Image,
    object: Image.Image,
    footprint: Image.Image | None = None,
    run_id: str,
    round: int,
    source: str,
    split: str,
    prompt: str,
    seed: int,
    created_at: datetime,
    accepted: bool = True,
    parent_id: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Write the panels as blobs and return the manifest row that points at them."""
    sizes = {composite.size, logo.size, object.size} | ({footprint.size} if footprint else set())
    if len(sizes) != 1 or composite.size[0] != composite.size[1]:
        raise ValueError(f"panels must be square and of one size, got {sorted(sizes)}")
    row: dict[str, Any] = {}
    for name, image in (("composite", composite), ("logo", logo), ("object", object), ("footprint", footprint)):
        key, sha = store.put_image(image) if image is not None else (None, None)
        row[f"{name}_uri"], row[f"{name}_sha256"] = key, sha
    row.update(
        triplet_id=triplet_id(row["composite_sha256"], row["logo_sha256"], row["object_sha256"], source, parent_id),
        run_id=run_id,
        round=round,
        source=source,
        split=split,
        prompt=prompt,
        panel_size=composite.size[0],
        accepted=accepted,
        parent_id=parent_id,
        seed=seed,
        created_at=created_at,
        **extra,
    )
    return row
