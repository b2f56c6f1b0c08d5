"""Round 0: the seed triplets (synthetic, or a user's own folder) and the held-out test split."""

from __future__ import annotations

from typing import Any, Iterator

from tqdm.auto import tqdm

from configs import Config
from models.domains.registry import domain_of
from storage.faults import failpoint
from storage.hashing import derive_seed
from storage.imports import read_triplet_dir
from storage.schema import to_table
from storage.store import CommitInfo, Store, now_utc
from storage.triplets import put_triplet


def commit_seeds(store: Store, config: Config, n_seeds: int, n_test: int, from_dir: str | None = None) -> CommitInfo:
    """Round 0, written and committed: what the flow's seed stage and `layerboot seed` both run."""
    rows = seed_rows(store, config, n_seeds, n_test, from_dir)
    failpoint("seed-r00-rows")
    return store.commit_round(0, to_table(rows), panels=domain_of(config).panels)


def seed_rows(
    store: Store, config: Config, n_seeds: int, n_test: int, from_dir: str | None = None
) -> list[dict[str, Any]]:
    """Write round 0's blobs and return its manifest rows (not yet committed).

    Train rows come from `from_dir` (source=user) when given, else from the layer task's procedural
    world (source=seed). The test split is always procedural: it needs exact ground truth. Seeds are
    derived from (run seed, split, index), so the same config always yields the same bytes.
    """
    size = config.data.panel_size
    imported = read_triplet_dir(from_dir, size, domain_of(config).panels) if from_dir else []  # validate all before writing
    common = dict(run_id=config.run_id, round=0, created_at=now_utc(), accepted=True)
    rows = []
    for t in tqdm(imported, desc="import", unit="triplet", disable=not imported or None):
        seed = derive_seed(config.run.seed, "user", t.name)
        rows.append(put_triplet(store, panels=t.panels, source="user",
                                split="train", prompt=t.prompt, seed=seed, **common))
    plan = [("train", i) for i in range(0 if from_dir else n_seeds)] + [("test", i) for i in range(n_test)]
    for split, i, seed, t in tqdm(_synthetic(config, plan), total=len(plan), desc="seed", unit="triplet", disable=None):
        rows.append(put_triplet(store, panels=t.panels, footprint=t.footprint,
                                source="seed", split=split, prompt=t.prompt, seed=seed, **common))
    return rows


def _synthetic(config: Config, plan: list[tuple[str, int]]) -> Iterator:
    make = domain_of(config).make
    for split, i in plan:
        seed = derive_seed(config.run.seed, "synthetic", split, i)
        yield split, i, seed, make(seed, config.data.panel_size)
