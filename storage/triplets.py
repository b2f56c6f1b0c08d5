"""Turning three panel images into one manifest row (blobs written, ids derived)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

from PIL import Image

from storage.hashing import stable_id
from storage.schema import PANELS
from storage.store import Store


def triplet_id(panel_shas: Sequence[str], source: str, parent_id: str | None) -> str:
    """Stable id from content and lineage: the same panels reached by another path are another row."""
    return stable_id(*panel_shas, source, parent_id)


def put_triplet(
    store: Store,
    *,
    panels: Sequence[Image.Image],
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
    """Write the panels (composite first, grid order) as blobs and return the manifest row that
    points at them."""
    if len(panels) != len(PANELS):
        raise ValueError(f"a triplet has {len(PANELS)} panels, got {len(panels)}")
    composite = panels[0]
    sizes = {p.size for p in panels} | ({footprint.size} if footprint else set())
    if len(sizes) != 1 or composite.size[0] != composite.size[1]:
        raise ValueError(f"panels must be square and of one size, got {sorted(sizes)}")
    row: dict[str, Any] = {}
    for name, image in (*zip(PANELS, panels), ("footprint", footprint)):
        key, sha = store.put_image(image) if image is not None else (None, None)
        row[f"{name}_uri"], row[f"{name}_sha256"] = key, sha
    row.update(
        triplet_id=triplet_id([row[f"{p}_sha256"] for p in PANELS], source, parent_id),
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
